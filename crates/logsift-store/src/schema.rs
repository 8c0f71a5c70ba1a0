use tantivy::schema::{
    BytesOptions, Field, IndexRecordOption, JsonObjectOptions, Schema, TextFieldIndexing,
    TextOptions, FAST, INDEXED, STORED,
};
use tantivy::tokenizer::{LowerCaser, RawTokenizer, TextAnalyzer, TokenizerManager};

/// Keyword fields (host, app, ...) match whole values, case-insensitively.
pub const KEYWORD_TOKENIZER: &str = "keyword";

/// The (host, app) column. v1 sorted sealed segments by it; v2 keeps arrival order, which
/// reads records in time order from few blocks, and keeps the column so the schema is one.
pub const STREAM_FIELD: &str = "stream";

/// The pattern id column; segments written before patterns were mined lack it.
pub const PATTERN_FIELD: &str = "pattern";

/// The sort key of a record: its (host, app) pair folded to 16 bits, so the column costs two
/// bytes per record. Collisions only put two streams side by side.
pub fn stream_key(host: Option<&str>, app: Option<&str>) -> u64 {
    // FNV-1a: stable across versions and platforms, unlike the std hasher.
    let mut h: u32 = 0x811c_9dc5;
    for part in [host.unwrap_or(""), "\0", app.unwrap_or("")] {
        for b in part.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    u64::from((h >> 16) ^ (h & 0xffff))
}

/// Field handles of the record schema. Built once; identical for every index.
#[derive(Clone)]
pub struct LogSchema {
    pub schema: Schema,
    /// ns since the epoch, from the message or else the receive time.
    pub timestamp: Field,
    pub received_at: Field,
    /// The record id: the WAL LSN, unique per server and increasing in receive order.
    pub id: Field,
    /// A 16-bit hash of (host, app) (see [`STREAM_FIELD`]).
    pub stream: Field,
    pub severity: Field,
    pub severity_code: Field,
    pub facility: Field,
    pub host: Field,
    pub app: Field,
    pub procid: Field,
    pub msgid: Field,
    pub message: Field,
    pub fields: Field,
    pub source: Field,
    pub parse_error: Field,
    pub format: Field,
    pub raw: Field,
    /// The record's log pattern id (`crate::patterns`; none for built-in indexes): a column
    /// only, which counts matches by pattern, answers `pattern:<id>` (a scan of the column)
    /// and gives hits their id. An inverted index of it cost about 0.4 µs per record at ingest
    /// (`benches/index_cost.rs`) for queries that scan a bit-packed column fast anyway.
    pub pattern: Field,
}

impl LogSchema {
    pub fn new() -> Self {
        let mut b = Schema::builder();
        // Time and id are only ever filtered by range or read per hit: a fast column answers
        // both (tantivy runs range queries on fast fields), and an inverted index of nearly
        // unique numbers would cost more bytes than the raw lines' compressed text.
        let timestamp = b.add_i64_field("timestamp", FAST);
        let received_at = b.add_i64_field("received_at", STORED);
        let id = b.add_u64_field("id", FAST);
        let stream = b.add_u64_field(STREAM_FIELD, FAST);
        // Hits are ordered by time, never scored: no field needs norms.
        let keyword = TextOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(KEYWORD_TOKENIZER)
                    .set_index_option(IndexRecordOption::Basic)
                    .set_fieldnorms(false),
            )
            .set_fast("raw");
        let severity = b.add_text_field("severity", keyword.clone());
        let severity_code = b.add_u64_field("severity_code", INDEXED | FAST);
        let facility = b.add_text_field("facility", keyword.clone());
        let host = b.add_text_field("host", keyword.clone());
        let app = b.add_text_field("app", keyword.clone());
        let procid = b.add_text_field("procid", keyword.clone());
        let msgid = b.add_text_field("msgid", keyword.clone());
        let message = b.add_text_field(
            "message",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(crate::tokens::TEXT_TOKENIZER)
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions)
                    .set_fieldnorms(false),
            ),
        );
        let fields = b.add_json_field(
            "fields",
            JsonObjectOptions::default()
                .set_expand_dots_enabled()
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer(crate::tokens::TEXT_TOKENIZER)
                        .set_index_option(IndexRecordOption::WithFreqsAndPositions)
                        .set_fieldnorms(false),
                ),
        );
        let source = b.add_text_field(
            "source",
            TextOptions::default()
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("raw")
                        .set_index_option(IndexRecordOption::Basic)
                        .set_fieldnorms(false),
                )
                .set_stored(),
        );
        let parse_error = b.add_text_field("parse_error", keyword);
        let format = b.add_u64_field("format", STORED);
        let raw = b.add_bytes_field("raw", BytesOptions::default().set_stored());
        let pattern = b.add_u64_field(PATTERN_FIELD, FAST);
        LogSchema {
            schema: b.build(),
            timestamp,
            received_at,
            id,
            stream,
            severity,
            severity_code,
            facility,
            host,
            app,
            procid,
            msgid,
            message,
            fields,
            source,
            parse_error,
            format,
            raw,
            pattern,
        }
    }

    /// Which fields segments of `schema` have, for merging like with like (tantivy merges
    /// only segments of one schema): 0 before ids were folded, 1 folded ids, 2 pattern ids.
    pub fn generation(schema: &Schema) -> u8 {
        if !Self::folds_ids(schema) {
            0
        } else if schema.get_field(PATTERN_FIELD).is_err() {
            1
        } else {
            2
        }
    }

    /// Whether segments of `schema` index the message and `fields` with folded ids
    /// ([`crate::tokens`]); those written before folding index every word whole.
    pub fn folds_ids(schema: &Schema) -> bool {
        schema
            .get_field("message")
            .ok()
            .map(|f| schema.get_field_entry(f).field_type())
            .and_then(|t| match t {
                tantivy::schema::FieldType::Str(o) => o.get_indexing_options(),
                _ => None,
            })
            .is_some_and(|i| i.tokenizer() == crate::tokens::TEXT_TOKENIZER)
    }

    /// Registers the tokenizers the schema names; tantivy does not persist them with the index.
    pub fn register_tokenizers(tokenizers: &TokenizerManager) {
        tokenizers.register(
            KEYWORD_TOKENIZER,
            TextAnalyzer::builder(RawTokenizer::default())
                .filter(LowerCaser)
                .build(),
        );
        tokenizers.register(
            crate::tokens::TEXT_TOKENIZER,
            crate::tokens::text_analyzer(),
        );
    }
}

impl Default for LogSchema {
    fn default() -> Self {
        Self::new()
    }
}
