use tantivy::schema::{
    BytesOptions, Field, IndexRecordOption, JsonObjectOptions, NumericOptions, Schema,
    TextFieldIndexing, TextOptions, FAST, INDEXED, STORED, STRING,
};
use tantivy::tokenizer::{LowerCaser, RawTokenizer, TextAnalyzer, TokenizerManager};

/// Keyword fields (host, app, ...) match whole values, case-insensitively.
pub const KEYWORD_TOKENIZER: &str = "keyword";

/// Field handles of the record schema. Built once; identical for every index.
#[derive(Clone)]
pub struct LogSchema {
    pub schema: Schema,
    /// ns since the epoch, from the message or else the receive time.
    pub timestamp: Field,
    pub received_at: Field,
    /// The record id: the WAL LSN, unique per server and increasing in receive order.
    pub id: Field,
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
}

impl LogSchema {
    pub fn new() -> Self {
        let mut b = Schema::builder();
        let ts_opts = NumericOptions::default().set_indexed().set_fast();
        let timestamp = b.add_i64_field("timestamp", ts_opts.clone());
        let received_at = b.add_i64_field(
            "received_at",
            NumericOptions::default().set_fast().set_stored(),
        );
        let id = b.add_u64_field("id", INDEXED | FAST);
        let keyword = TextOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(KEYWORD_TOKENIZER)
                    .set_index_option(IndexRecordOption::Basic),
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
                    .set_tokenizer("default")
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            ),
        );
        let fields = b.add_json_field(
            "fields",
            JsonObjectOptions::default()
                .set_expand_dots_enabled()
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("default")
                        .set_index_option(IndexRecordOption::WithFreqsAndPositions),
                ),
        );
        let source = b.add_text_field("source", STRING | STORED);
        let parse_error = b.add_text_field("parse_error", keyword);
        let format = b.add_u64_field("format", STORED);
        let raw = b.add_bytes_field("raw", BytesOptions::default().set_stored());
        LogSchema {
            schema: b.build(),
            timestamp,
            received_at,
            id,
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
        }
    }

    /// Registers the tokenizers the schema names; tantivy does not persist them with the index.
    pub fn register_tokenizers(tokenizers: &TokenizerManager) {
        tokenizers.register(
            KEYWORD_TOKENIZER,
            TextAnalyzer::builder(RawTokenizer::default())
                .filter(LowerCaser)
                .build(),
        );
    }
}

impl Default for LogSchema {
    fn default() -> Self {
        Self::new()
    }
}
