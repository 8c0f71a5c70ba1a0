//! Block segments: the layout of `docs/block-index.md` (#16), where records are kept in blocks
//! of up to [`BLOCK_RECORDS`] records of one stream (host, app) and tantivy indexes blocks, not
//! records.
//!
//! A block segment is a directory of three parts:
//! - a tantivy index with one document per block: each distinct word of the block's records
//!   once per record that holds it (so a word's term frequency is the number of the block's
//!   records holding it, and a single word's total needs no record), and fast columns for the
//!   block's time range, ids, stream and where its body and filter are;
//! - `body.dat`: each block's records, one zstd frame per block;
//! - `filters.dat`: bloom filters of the high-entropy tokens (ids, hashes, long numbers;
//!   [`crate::tokens::is_high_entropy`]), one for the whole segment and one per block. Ids
//!   are nearly unique, so indexing them as words would make a term per record: they are the
//!   cost the block layout exists to avoid.
//!
//! Words are the word analyzer's tokens of the message; keyword values (`\u{2}name\0value`,
//! lowercased); the words of `fields.<key>` string values (`\u{3}key\0word`); typed field values
//! (`\u{4}key\0i:500`, `f:0.25`, `b:true`); and field key presence (`\u{5}key`, for each dotted
//! prefix). A query plans over these words and then checks each record of the candidate blocks.
//!
//! Not wired into the server yet: `benches/index_cost.rs` builds and queries block segments
//! side by side with the record-per-document index (step 1 of the plan).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use logsift_core::{FieldValue, Format, Record};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST};
use tantivy::tokenizer::{PreTokenizedString, TextAnalyzer, Token};
use tantivy::{Index, IndexWriter, TantivyDocument};

use crate::tokens;

/// Records per block. Small enough that a needle reads little, large enough that a word is
/// written once for many records.
pub const BLOCK_RECORDS: usize = 128;

/// The version of the block segment layout, in `filters.dat`'s header.
pub const BLOCKS_VERSION: u32 = 1;
const FILTERS_MAGIC: &[u8; 8] = b"LSBLKF01";
const BODY_FILE: &str = "body.dat";
const FILTERS_FILE: &str = "filters.dat";
const INDEX_DIR: &str = "index";

/// Bloom filter sizing: bits per token and probes. The segment filter lets a needle skip
/// whole segments; the block filters then name its blocks with about 0.3 % false positives
/// (each is a block read and checked for nothing).
const SEGMENT_BITS_PER_ID: usize = 10;
const SEGMENT_PROBES: u64 = 7;
const BLOCK_BITS_PER_ID: usize = 12;
const BLOCK_PROBES: u64 = 8;

pub const KEYWORD_MARK: char = '\u{2}';
pub const FIELD_WORD_MARK: char = '\u{3}';
pub const FIELD_TYPED_MARK: char = '\u{4}';
pub const FIELD_KEY_MARK: char = '\u{5}';

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block segment {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("block segment index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("block segment {path}: {why}")]
    Damaged { path: PathBuf, why: String },
}

/// What a block keeps of one record: enough to parse it again and to answer with it.
#[derive(Debug, Clone, Copy)]
pub struct BlockRecord<'a> {
    pub id: u64,
    pub timestamp: i64,
    pub received_at: i64,
    pub format: Format,
    pub source: &'a str,
    pub raw: &'a [u8],
}

/// The block-level fields of the tantivy index.
#[derive(Clone)]
pub struct BlockSchema {
    pub schema: Schema,
    pub words: Field,
    pub ts_min: Field,
    pub ts_max: Field,
    pub first_id: Field,
    pub last_id: Field,
    pub records: Field,
    pub stream: Field,
    pub body_offset: Field,
    pub body_len: Field,
    pub filter_offset: Field,
    pub filter_len: Field,
}

impl BlockSchema {
    pub fn new() -> Self {
        let mut b = Schema::builder();
        // Frequencies count the block's records holding a word; positions are never needed.
        let words = b.add_text_field(
            "words",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("raw")
                    .set_index_option(IndexRecordOption::WithFreqs)
                    .set_fieldnorms(false),
            ),
        );
        let ts_min = b.add_i64_field("ts_min", FAST);
        let ts_max = b.add_i64_field("ts_max", FAST);
        let first_id = b.add_u64_field("first_id", FAST);
        let last_id = b.add_u64_field("last_id", FAST);
        let records = b.add_u64_field("records", FAST);
        let stream = b.add_u64_field("stream", FAST);
        let body_offset = b.add_u64_field("body_offset", FAST);
        let body_len = b.add_u64_field("body_len", FAST);
        let filter_offset = b.add_u64_field("filter_offset", FAST);
        let filter_len = b.add_u64_field("filter_len", FAST);
        BlockSchema {
            schema: b.build(),
            words,
            ts_min,
            ts_max,
            first_id,
            last_id,
            records,
            stream,
            body_offset,
            body_len,
            filter_offset,
            filter_len,
        }
    }
}

impl Default for BlockSchema {
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a, 64 bits: stable across builds (filters written today are read by later builds) and
/// cheaper than SipHash for short words.
pub fn hash_word(word: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in word {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A bloom filter over 64-bit hashes, probed by double hashing.
#[derive(Debug, Clone, Copy)]
pub struct Bloom<'a> {
    words: &'a [u8],
    probes: u64,
}

impl<'a> Bloom<'a> {
    pub fn may_hold(&self, hash: u64) -> bool {
        let bits = (self.words.len() * 8) as u64;
        if bits == 0 {
            return false;
        }
        let (h1, h2) = (hash, hash.rotate_left(32) | 1);
        (0..self.probes).all(|i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % bits;
            self.words[(bit / 8) as usize] & (1 << (bit % 8)) != 0
        })
    }
}

fn bloom_bytes(hashes: &[u64], bits_per: usize, probes: u64) -> Vec<u8> {
    if hashes.is_empty() {
        return Vec::new();
    }
    let bytes = (hashes.len() * bits_per).div_ceil(8).max(8);
    let bits = (bytes * 8) as u64;
    let mut out = vec![0u8; bytes];
    for h in hashes {
        let (h1, h2) = (*h, h.rotate_left(32) | 1);
        for i in 0..probes {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % bits;
            out[(bit / 8) as usize] |= 1 << (bit % 8);
        }
    }
    out
}

/// One open block: its records' bytes and its words, each with the number of records that
/// hold it.
#[derive(Default)]
struct OpenBlock {
    /// Word hash → (position in `words`, last record that counted it).
    seen: HashMap<u64, (u32, u32)>,
    words: Vec<(String, u32)>,
    ids: Vec<u64>,
    sources: Vec<String>,
    body: Vec<u8>,
    ts_min: i64,
    ts_max: i64,
    first_id: u64,
    last_id: u64,
    records: u32,
    /// The first record's timestamp and id: the body stores the others as deltas from them.
    base_ts: i64,
    base_id: u64,
}

impl OpenBlock {
    fn word(&mut self, word: &str) {
        let h = hash_word(word.as_bytes());
        let record = self.records;
        match self.seen.get_mut(&h) {
            Some((pos, last)) => {
                if *last != record {
                    *last = record;
                    self.words[*pos as usize].1 += 1;
                }
            }
            None => {
                self.seen.insert(h, (self.words.len() as u32, record));
                self.words.push((word.to_string(), 1));
            }
        }
    }

    fn id(&mut self, token: &str) {
        self.ids.push(hash_word(token.as_bytes()));
    }
}

/// Builds one block segment from records in any order: each stream's records fill its open
/// block, which closes at [`BLOCK_RECORDS`].
pub struct BlockWriter {
    schema: BlockSchema,
    analyzer: TextAnalyzer,
    open: HashMap<u64, OpenBlock>,
    closed: Vec<TantivyDocument>,
    body: Vec<u8>,
    filters: Vec<u8>,
    segment_ids: Vec<u64>,
    scratch: String,
    level: i32,
}

impl BlockWriter {
    /// `zstd_level` compresses each block's body.
    pub fn new(zstd_level: i32) -> Self {
        BlockWriter {
            schema: BlockSchema::new(),
            analyzer: tokens::word_analyzer(),
            open: HashMap::new(),
            closed: Vec::new(),
            body: Vec::new(),
            filters: Vec::new(),
            segment_ids: Vec::new(),
            scratch: String::new(),
            level: zstd_level,
        }
    }

    /// Adds a record; `parsed` is `rec.raw` parsed with the index's options.
    pub fn add(&mut self, rec: &BlockRecord<'_>, parsed: &Record<'_>) {
        let key = crate::schema::stream_key(parsed.host.as_deref(), parsed.app.as_deref());
        let mut blk = self.open.remove(&key).unwrap_or_default();
        if blk.records == 0 {
            blk.ts_min = rec.timestamp;
            blk.ts_max = rec.timestamp;
            blk.first_id = rec.id;
            blk.last_id = rec.id;
            blk.base_ts = rec.timestamp;
            blk.base_id = rec.id;
        }
        blk.ts_min = blk.ts_min.min(rec.timestamp);
        blk.ts_max = blk.ts_max.max(rec.timestamp);
        blk.first_id = blk.first_id.min(rec.id);
        blk.last_id = blk.last_id.max(rec.id);
        self.words_of(&mut blk, parsed, rec.source);
        encode_record(&mut blk, rec);
        blk.records += 1;
        if blk.records as usize == BLOCK_RECORDS {
            self.close(key, blk);
        } else {
            self.open.insert(key, blk);
        }
    }

    fn words_of(&mut self, blk: &mut OpenBlock, parsed: &Record<'_>, source: &str) {
        let analyzer = &mut self.analyzer;
        let mut stream = analyzer.token_stream(&parsed.message);
        while stream.advance() {
            let t = &stream.token().text;
            if tokens::is_high_entropy(t) {
                blk.id(t);
            } else {
                blk.word(t);
            }
        }
        drop(stream);
        let word = &mut self.scratch;
        let mut keyword = |blk: &mut OpenBlock, name: &str, value: &str, lower: bool| {
            word.clear();
            word.push(KEYWORD_MARK);
            word.push_str(name);
            word.push('\0');
            if lower {
                word.push_str(&value.to_lowercase());
            } else {
                word.push_str(value);
            }
            blk.word(word);
        };
        for (name, value) in [
            ("host", &parsed.host),
            ("app", &parsed.app),
            ("procid", &parsed.procid),
            ("msgid", &parsed.msgid),
        ] {
            if let Some(v) = value {
                keyword(blk, name, v, true);
            }
        }
        if let Some(f) = parsed.facility {
            keyword(blk, "facility", f.name(), true);
        }
        if let Some(s) = parsed.severity {
            keyword(blk, "severity", &s.code().to_string(), false);
        }
        if let Some(e) = &parsed.parse_error {
            keyword(blk, "parse_error", e, true);
        }
        keyword(blk, "source", source, false);
        for (name, value) in parsed.fields() {
            // Key presence, for `fields.a:*` and `fields.a.b:*` alike.
            for (i, _) in name.match_indices('.').chain([(name.len(), "")]) {
                word.clear();
                word.push(FIELD_KEY_MARK);
                word.push_str(&name[..i]);
                blk.word(word);
            }
            let text = match value {
                FieldValue::Str(s) => s.as_ref(),
                FieldValue::Json(t) => t,
                FieldValue::Number(n) => {
                    let typed = if let Ok(i) = n.parse::<i64>() {
                        format!("i:{i}")
                    } else if let Ok(u) = n.parse::<u64>() {
                        format!("u:{u}")
                    } else if let Ok(f) = n.parse::<f64>() {
                        format!("f:{f}")
                    } else {
                        continue;
                    };
                    word.clear();
                    word.push(FIELD_TYPED_MARK);
                    word.push_str(name);
                    word.push('\0');
                    word.push_str(&typed);
                    blk.word(word);
                    continue;
                }
                FieldValue::Bool(b) => {
                    word.clear();
                    word.push(FIELD_TYPED_MARK);
                    word.push_str(name);
                    word.push_str(if *b { "\0b:true" } else { "\0b:false" });
                    blk.word(word);
                    continue;
                }
                FieldValue::Null => continue,
            };
            let mut stream = self.analyzer.token_stream(text);
            while stream.advance() {
                let t = &stream.token().text;
                if tokens::is_high_entropy(t) {
                    blk.id(t);
                } else {
                    word.clear();
                    word.push(FIELD_WORD_MARK);
                    word.push_str(name);
                    word.push('\0');
                    word.push_str(t);
                    blk.word(word);
                }
            }
        }
    }

    fn close(&mut self, key: u64, blk: OpenBlock) {
        let s = &self.schema;
        let mut doc = TantivyDocument::new();
        doc.add_i64(s.ts_min, blk.ts_min);
        doc.add_i64(s.ts_max, blk.ts_max);
        doc.add_u64(s.first_id, blk.first_id);
        doc.add_u64(s.last_id, blk.last_id);
        doc.add_u64(s.records, u64::from(blk.records));
        doc.add_u64(s.stream, key);
        // Header: the sources the records name, then the records.
        let mut plain = Vec::with_capacity(blk.body.len() + 64);
        put_varint(&mut plain, blk.sources.len() as u64);
        for src in &blk.sources {
            put_varint(&mut plain, src.len() as u64);
            plain.extend_from_slice(src.as_bytes());
        }
        put_varint(&mut plain, u64::from(blk.records));
        put_varint(&mut plain, blk.base_id);
        plain.extend_from_slice(&blk.base_ts.to_le_bytes());
        plain.extend_from_slice(&blk.body);
        let frame = zstd::bulk::compress(&plain, self.level).unwrap_or_else(|_| {
            // zstd fails only on invalid parameters; level 0 (its default) always works.
            zstd::bulk::compress(&plain, 0).expect("zstd at its default level")
        });
        doc.add_u64(s.body_offset, self.body.len() as u64);
        doc.add_u64(s.body_len, frame.len() as u64);
        self.body.extend_from_slice(&frame);
        let mut ids = blk.ids;
        ids.sort_unstable();
        ids.dedup();
        let filter = bloom_bytes(&ids, BLOCK_BITS_PER_ID, BLOCK_PROBES);
        doc.add_u64(s.filter_offset, self.filters.len() as u64);
        doc.add_u64(s.filter_len, filter.len() as u64);
        self.filters.extend_from_slice(&filter);
        self.segment_ids.extend_from_slice(&ids);
        let tokens = blk
            .words
            .into_iter()
            .flat_map(|(text, count)| std::iter::repeat_n(text, count as usize))
            .enumerate()
            .map(|(position, text)| Token {
                offset_from: 0,
                offset_to: 0,
                position,
                position_length: 1,
                text,
            })
            .collect();
        doc.add_pre_tokenized_text(
            s.words,
            PreTokenizedString {
                text: String::new(),
                tokens,
            },
        );
        self.closed.push(doc);
    }

    /// Closes every open block and writes the segment into `dir` (which must not exist).
    pub fn finish(mut self, dir: &Path) -> Result<BlockSegment, BlockError> {
        let mut open: Vec<(u64, OpenBlock)> = self.open.drain().collect();
        open.sort_by_key(|(_, b)| b.first_id);
        for (key, blk) in open {
            self.close(key, blk);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BlockError::Io { path, source }
        };
        let index_dir = dir.join(INDEX_DIR);
        std::fs::create_dir_all(&index_dir).map_err(io(&index_dir))?;
        let index = Index::create_in_dir(&index_dir, self.schema.schema.clone())?;
        {
            // One thread and room for every block in memory: one tantivy segment, so that
            // block ordinals are document ids.
            let mut writer: IndexWriter = index.writer_with_num_threads(1, 512 << 20)?;
            for doc in self.closed.drain(..) {
                writer.add_document(doc)?;
            }
            writer.commit()?;
        }
        let body_path = dir.join(BODY_FILE);
        std::fs::write(&body_path, &self.body).map_err(io(&body_path))?;
        self.segment_ids.sort_unstable();
        self.segment_ids.dedup();
        let segment_filter = bloom_bytes(&self.segment_ids, SEGMENT_BITS_PER_ID, SEGMENT_PROBES);
        let filters_path = dir.join(FILTERS_FILE);
        let mut f = std::fs::File::create(&filters_path).map_err(io(&filters_path))?;
        f.write_all(FILTERS_MAGIC)
            .and_then(|_| f.write_all(&BLOCKS_VERSION.to_le_bytes()))
            .and_then(|_| f.write_all(&(segment_filter.len() as u64).to_le_bytes()))
            .and_then(|_| f.write_all(&segment_filter))
            .and_then(|_| f.write_all(&self.filters))
            .and_then(|_| f.sync_all())
            .map_err(io(&filters_path))?;
        BlockSegment::open(dir)
    }
}

fn encode_record(blk: &mut OpenBlock, rec: &BlockRecord<'_>) {
    let source = match blk.sources.iter().position(|s| s == rec.source) {
        Some(i) => i,
        None => {
            blk.sources.push(rec.source.to_string());
            blk.sources.len() - 1
        }
    };
    // Deltas against the block's first record keep each header to a few bytes; zigzag, as
    // neither timestamps nor ids need arrive in order.
    let b = &mut blk.body;
    put_varint(b, zigzag(rec.timestamp.wrapping_sub(blk.base_ts)));
    put_varint(b, zigzag(rec.id.wrapping_sub(blk.base_id) as i64));
    put_varint(b, zigzag(rec.received_at.wrapping_sub(rec.timestamp)));
    b.push(rec.format.code());
    put_varint(b, source as u64);
    put_varint(b, rec.raw.len() as u64);
    b.extend_from_slice(rec.raw);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// One record of a decoded block; `raw` and `source` index into the block's buffers.
#[derive(Debug, Clone)]
pub struct RecordMeta {
    pub id: u64,
    pub timestamp: i64,
    pub received_at: i64,
    pub format: Format,
    pub source: usize,
    pub raw: std::ops::Range<usize>,
}

/// A block's records, decompressed.
#[derive(Debug, Default)]
pub struct DecodedBlock {
    pub sources: Vec<String>,
    pub records: Vec<RecordMeta>,
    pub data: Vec<u8>,
}

impl DecodedBlock {
    pub fn raw(&self, r: &RecordMeta) -> &[u8] {
        &self.data[r.raw.clone()]
    }
    pub fn source(&self, r: &RecordMeta) -> &str {
        self.sources.get(r.source).map_or("", String::as_str)
    }
}

/// An open block segment: the block index searcher, the bodies (mapped) and the filters.
pub struct BlockSegment {
    pub dir: PathBuf,
    pub schema: BlockSchema,
    pub index: Index,
    pub searcher: tantivy::Searcher,
    body: memmap2::Mmap,
    filters: Vec<u8>,
    segment_filter: std::ops::Range<usize>,
    /// Per block: (ts_min, ts_max, records, body range, filter range), by block ordinal.
    pub blocks: Vec<BlockInfo>,
}

#[derive(Debug, Clone)]
pub struct BlockInfo {
    pub ts_min: i64,
    pub ts_max: i64,
    pub first_id: u64,
    pub last_id: u64,
    pub records: u32,
    pub stream: u64,
    body: std::ops::Range<usize>,
    filter: std::ops::Range<usize>,
}

impl BlockSegment {
    pub fn open(dir: &Path) -> Result<BlockSegment, BlockError> {
        let damaged = |why: String| BlockError::Damaged {
            path: dir.to_path_buf(),
            why,
        };
        let index = Index::open_in_dir(dir.join(INDEX_DIR))?;
        let schema = BlockSchema::new();
        let reader = index
            .reader_builder()
            .reload_policy(tantivy::ReloadPolicy::Manual)
            .try_into()?;
        let searcher = reader.searcher();
        if searcher.segment_readers().len() > 1 {
            return Err(damaged("the block index has more than one segment".into()));
        }
        let body_path = dir.join(BODY_FILE);
        let file = std::fs::File::open(&body_path).map_err(|source| BlockError::Io {
            path: body_path.clone(),
            source,
        })?;
        // SAFETY: segment files are immutable once written; nothing truncates them while open.
        let body = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| BlockError::Io {
            path: body_path,
            source,
        })?;
        let filters_path = dir.join(FILTERS_FILE);
        let filters = std::fs::read(&filters_path).map_err(|source| BlockError::Io {
            path: filters_path,
            source,
        })?;
        if filters.len() < 20 || &filters[..8] != FILTERS_MAGIC {
            return Err(damaged("filters.dat does not start with its magic".into()));
        }
        let version = u32::from_le_bytes(filters[8..12].try_into().unwrap_or_default());
        if version != BLOCKS_VERSION {
            return Err(damaged(format!(
                "block layout version {version}, this build reads {BLOCKS_VERSION}"
            )));
        }
        let seg_len = u64::from_le_bytes(filters[12..20].try_into().unwrap_or_default()) as usize;
        let base = 20usize
            .checked_add(seg_len)
            .filter(|end| *end <= filters.len())
            .ok_or_else(|| damaged("segment filter runs past the file".into()))?;
        let mut blocks = Vec::new();
        if let Some(seg) = searcher.segment_readers().first() {
            let ff = seg.fast_fields();
            let col_i = |name: &str| ff.i64(name);
            let col_u = |name: &str| ff.u64(name);
            let (ts_min, ts_max) = (col_i("ts_min")?, col_i("ts_max")?);
            let (first_id, last_id) = (col_u("first_id")?, col_u("last_id")?);
            let (records, stream) = (col_u("records")?, col_u("stream")?);
            let (bo, bl) = (col_u("body_offset")?, col_u("body_len")?);
            let (fo, fl) = (col_u("filter_offset")?, col_u("filter_len")?);
            for doc in 0..seg.max_doc() {
                let get_u = |c: &tantivy::columnar::Column<u64>| c.first(doc).unwrap_or(0);
                let get_i = |c: &tantivy::columnar::Column<i64>| c.first(doc).unwrap_or(0);
                let body = get_u(&bo) as usize..(get_u(&bo) + get_u(&bl)) as usize;
                let filter = base + get_u(&fo) as usize..base + (get_u(&fo) + get_u(&fl)) as usize;
                blocks.push(BlockInfo {
                    ts_min: get_i(&ts_min),
                    ts_max: get_i(&ts_max),
                    first_id: get_u(&first_id),
                    last_id: get_u(&last_id),
                    records: get_u(&records) as u32,
                    stream: get_u(&stream),
                    body,
                    filter,
                });
            }
        }
        for (ord, b) in blocks.iter().enumerate() {
            if b.body.end > body.len() || b.filter.end > filters.len() {
                return Err(damaged(format!("block {ord} points past its files")));
            }
        }
        Ok(BlockSegment {
            dir: dir.to_path_buf(),
            schema,
            index,
            searcher,
            body,
            filters,
            segment_filter: 20..base,
            blocks,
        })
    }

    pub fn num_records(&self) -> u64 {
        self.blocks.iter().map(|b| u64::from(b.records)).sum()
    }

    /// Whether any record of the segment may hold the high-entropy token hashed as `hash`.
    pub fn may_hold_id(&self, hash: u64) -> bool {
        Bloom {
            words: &self.filters[self.segment_filter.clone()],
            probes: SEGMENT_PROBES,
        }
        .may_hold(hash)
    }

    /// Whether block `ord` may hold the high-entropy token hashed as `hash`.
    pub fn block_may_hold_id(&self, ord: usize, hash: u64) -> bool {
        self.blocks.get(ord).is_some_and(|b| {
            Bloom {
                words: &self.filters[b.filter.clone()],
                probes: BLOCK_PROBES,
            }
            .may_hold(hash)
        })
    }

    /// Decompresses block `ord` into `out` (reusing its buffers).
    pub fn read_block(&self, ord: usize, out: &mut DecodedBlock) -> Result<(), BlockError> {
        let damaged = |why: String| BlockError::Damaged {
            path: self.dir.join(BODY_FILE),
            why: format!("block {ord}: {why}"),
        };
        let info = self
            .blocks
            .get(ord)
            .ok_or_else(|| damaged("no such block".into()))?;
        let frame = &self.body[info.body.clone()];
        out.data.clear();
        out.records.clear();
        out.sources.clear();
        let mut decoder =
            zstd::stream::read::Decoder::new(frame).map_err(|e| damaged(format!("zstd: {e}")))?;
        std::io::Read::read_to_end(&mut decoder, &mut out.data)
            .map_err(|e| damaged(format!("zstd: {e}")))?;
        let data = &out.data;
        let mut at = 0usize;
        let short = || damaged("truncated".into());
        let n_sources = get_varint(data, &mut at).ok_or_else(short)?;
        for _ in 0..n_sources {
            let len = get_varint(data, &mut at).ok_or_else(short)? as usize;
            let s = data.get(at..at + len).ok_or_else(short)?;
            out.sources.push(String::from_utf8_lossy(s).into_owned());
            at += len;
        }
        let n = get_varint(data, &mut at).ok_or_else(short)?;
        let base_id = get_varint(data, &mut at).ok_or_else(short)?;
        let base_ts = i64::from_le_bytes(
            data.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(short)?,
        );
        at += 8;
        for _ in 0..n {
            let ts = base_ts.wrapping_add(unzigzag(get_varint(data, &mut at).ok_or_else(short)?));
            let id =
                base_id.wrapping_add(unzigzag(get_varint(data, &mut at).ok_or_else(short)?) as u64);
            let recv = ts.wrapping_add(unzigzag(get_varint(data, &mut at).ok_or_else(short)?));
            let format = data
                .get(at)
                .and_then(|c| Format::from_code(*c))
                .ok_or_else(|| damaged("unknown record format".into()))?;
            at += 1;
            let source = get_varint(data, &mut at).ok_or_else(short)? as usize;
            let len = get_varint(data, &mut at).ok_or_else(short)? as usize;
            if at + len > data.len() {
                return Err(short());
            }
            out.records.push(RecordMeta {
                id,
                timestamp: ts,
                received_at: recv,
                format,
                source,
                raw: at..at + len,
            });
            at += len;
        }
        Ok(())
    }

    /// Bytes of each part: (index, body, filters).
    pub fn sizes(&self) -> (u64, u64, u64) {
        let index_bytes = dir_bytes(&self.dir.join(INDEX_DIR));
        (
            index_bytes,
            self.body.len() as u64,
            self.filters.len() as u64,
        )
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(dir: &Path) -> BlockSegment {
        let opts = logsift_parse::ParseOptions::default();
        let mut writer = BlockWriter::new(3);
        for i in 0..900u64 {
            let raw = format!(
                "<13>1 2026-12-02T12:00:{:02}Z host{} app - - - request {i:08} done",
                i % 60,
                i % 3
            );
            let record = logsift_parse::parse(Format::Syslog, raw.as_bytes(), &opts);
            writer.add(
                &BlockRecord {
                    id: 1000 + i,
                    timestamp: record.timestamp.unwrap_or(0),
                    received_at: 7,
                    format: Format::Syslog,
                    source: if i % 2 == 0 { "tcp a" } else { "tcp b" },
                    raw: raw.as_bytes(),
                },
                &record,
            );
        }
        writer.finish(dir).unwrap()
    }

    #[test]
    fn records_come_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment(&dir.path().join("s"));
        assert_eq!(seg.num_records(), 900);
        // 900 records of 3 streams: two full blocks and a partial one each.
        assert_eq!(seg.blocks.len(), 9);
        let mut ids = Vec::new();
        let mut block = DecodedBlock::default();
        for ord in 0..seg.blocks.len() {
            seg.read_block(ord, &mut block).unwrap();
            assert_eq!(block.records.len() as u32, seg.blocks[ord].records);
            for r in &block.records {
                let i = r.id - 1000;
                let raw = String::from_utf8_lossy(block.raw(r)).into_owned();
                assert!(raw.ends_with(&format!("request {i:08} done")), "{raw}");
                assert_eq!(block.source(r), if i % 2 == 0 { "tcp a" } else { "tcp b" });
                assert_eq!(r.received_at, 7);
                assert!(r.timestamp >= seg.blocks[ord].ts_min);
                assert!(r.timestamp <= seg.blocks[ord].ts_max);
                ids.push(r.id);
            }
        }
        ids.sort_unstable();
        assert_eq!(ids, (1000..1900).collect::<Vec<_>>());
        // Every id is found by the filters of its own block.
        for ord in 0..seg.blocks.len() {
            seg.read_block(ord, &mut block).unwrap();
            for r in &block.records {
                let id = format!("{:08}", r.id - 1000);
                let h = hash_word(id.as_bytes());
                assert!(seg.may_hold_id(h) && seg.block_may_hold_id(ord, h), "{id}");
            }
        }
    }

    #[test]
    fn damaged_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let seg = segment(&path);
        let blocks = seg.blocks.len();
        drop(seg);
        // A flipped byte inside a block's zstd frame: that block fails, with its name.
        let body = path.join(BODY_FILE);
        let mut bytes = std::fs::read(&body).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0xff;
        bytes[at + 1] ^= 0xff;
        std::fs::write(&body, &bytes).unwrap();
        let seg = BlockSegment::open(&path).unwrap();
        let mut block = DecodedBlock::default();
        let failed = (0..blocks)
            .filter(|&o| seg.read_block(o, &mut block).is_err())
            .count();
        assert!(failed >= 1);
        // A truncated body: blocks point past it.
        std::fs::write(&body, &bytes[..bytes.len() / 3]).unwrap();
        let err = BlockSegment::open(&path).err().unwrap().to_string();
        assert!(err.contains("points past"), "{err}");
        // Another version, or not a filters file at all.
        let filters = path.join(FILTERS_FILE);
        let mut f = std::fs::read(&filters).unwrap();
        f[8] = 9;
        std::fs::write(&filters, &f).unwrap();
        let err = BlockSegment::open(&path).err().unwrap().to_string();
        assert!(err.contains("version 9"), "{err}");
        std::fs::write(&filters, b"nope").unwrap();
        assert!(BlockSegment::open(&path).is_err());
    }
}
