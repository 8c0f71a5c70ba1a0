//! Block segments: the layout of `docs/block-index.md` (#16), where records are kept in blocks
//! of up to [`BLOCK_RECORDS`] records of one stream (host, app) and tantivy indexes blocks, not
//! records.
//!
//! A block segment is a directory of three parts, side by side (so that a segment bundle
//! holds them as one flat list of files, and a reader opens them through any tantivy
//! `Directory`):
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
//! prefix). Ids are filtered as the words they would be (a field's under its key). A query
//! plans over these words and then checks each record of the candidate blocks.
//!
//! The seal writes block segments when `store.layout = "blocks"` (see
//! `docs/block-index.md`); `benches/index_cost.rs` prices them beside the record index.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use logsift_core::{Format, Record};
use tantivy::directory::OwnedBytes;
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST};
use tantivy::{Directory, Index, IndexWriter, TantivyDocument};

use crate::analyze::{Analysis, Analyzed, Analyzer};

/// Records per block. Small enough that a needle reads little, large enough that a word is
/// written once for many records.
pub const BLOCK_RECORDS: usize = 128;

/// The version of the block segment layout, in `filters.dat`'s header. Version 2 (2026-12-04)
/// sizes block filters at 16 bits and 11 probes per id; version 1's, 12 bits and 8 probes,
/// are read as written.
pub const BLOCKS_VERSION: u32 = 5;
const FILTERS_MAGIC: &[u8; 8] = b"LSBLKF01";
/// `filters.dat` starts with the magic, the version (u32) and the lengths (u64) of the segment
/// filter and of the zstd dictionary.
const HEADER: usize = 28;
/// A block's plain size is bounded by its records (128 lines of at most a few MiB each); a
/// larger figure is damage, not a reason to allocate.
const MAX_PLAIN: usize = 1 << 30;
/// Names of the body and filter files: a directory holding [`BODY_FILE`] is a block segment.
pub const BODY_FILE: &str = "body.dat";
pub const FILTERS_FILE: &str = "filters.dat";

/// Bloom filter sizing: bits per token and probes. The segment filter lets a needle skip
/// whole segments; the block filters then name its blocks with about 0.05 % false positives,
/// each a block read and checked for nothing: at 12 bits and 8 probes (0.3 %) a needle read
/// 39 blocks of a 100 MB segment's 15,463 to find its one (`index_cost`), for 0.006 bytes
/// per raw byte less.
const SEGMENT_BITS_PER_ID: usize = 10;
const SEGMENT_PROBES: u64 = 7;
const BLOCK_BITS_PER_ID: usize = 16;
const BLOCK_PROBES: u64 = 11;
/// The block filters' probes of a layout version (`None`: a version this build cannot read).
fn block_probes(version: u32) -> Option<u64> {
    match version {
        1 => Some(8),
        // Version 3 only adds the timestamp columns of block headers (`timetext`), which
        // version 2 headers do not have; version 4 the block index's `most` field, version 5
        // its `high` field.
        2..=BLOCKS_VERSION => Some(BLOCK_PROBES),
        _ => None,
    }
}
/// Most time the records of one block span (see [`BlockWriter::add`]).
pub const MAX_BLOCK_SPAN_NS: i64 = 60 * 60 * 1_000_000_000;
/// The block index writer's memory: what a seal holds for it at most, whatever the segment's
/// size.
const BLOCK_INDEX_ARENA: usize = 48 << 20;
/// The severity column's value for a record without one (codes are 0–7).
pub const NO_SEVERITY: u8 = 8;

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
    /// Its pattern id (`crate::patterns`); 0: none.
    pub pattern: u32,
}

/// The block index word of pattern id `id`: `pattern:<id>` is answered like a keyword.
pub fn pattern_word(id: u32) -> String {
    let mut word = String::with_capacity(PATTERN_WORD_BYTES);
    push_pattern_word(&mut word, id);
    word
}

/// Longest [`pattern_word`]: the mark, `pattern`, NUL and ten digits.
const PATTERN_WORD_BYTES: usize = 1 + 7 + 1 + 10;

/// Appends [`pattern_word`]`(id)` to `out`.
fn push_pattern_word(out: &mut String, id: u32) {
    use std::fmt::Write as _;
    out.push(KEYWORD_MARK);
    out.push_str("pattern\0");
    let _ = write!(out, "{id}");
}

/// The tokenizer of the `words` and `most` fields: each word followed by a number (in
/// decimal), each ended by [`WORD_SEP`]. It yields the word that many times, so that its
/// frequency in the block is that number: in `words` the number of the block's records holding
/// it, in `most` (a word more than half of them hold) one more than the number of those that
/// do not (see [`word_field`]). One string per block, split in place, instead of a
/// `String` per posting; the number, not the word repeated, as writing the repeats was 7 % of
/// the indexer thread's time (perf of the e2e ingest). Only indexing reads this text: it is
/// not stored, and queries look terms up whole.
pub const WORDS_TOKENIZER: &str = "blockwords";
/// Ends each word in a block's word text; words containing it are not indexed (a query for
/// one plans to every block, and the record check decides).
pub const WORD_SEP: char = '\u{1f}';

#[derive(Clone, Default)]
struct WordsTokenizer {
    token: tantivy::tokenizer::Token,
}

struct WordsStream<'a> {
    rest: &'a str,
    offset: usize,
    /// Times the current token is yet to be yielded again.
    repeat: u32,
    token: &'a mut tantivy::tokenizer::Token,
}

impl tantivy::tokenizer::Tokenizer for WordsTokenizer {
    type TokenStream<'a> = WordsStream<'a>;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordsStream<'a> {
        self.token.reset();
        WordsStream {
            rest: text,
            offset: 0,
            repeat: 0,
            token: &mut self.token,
        }
    }
}

impl tantivy::tokenizer::TokenStream for WordsStream<'_> {
    fn advance(&mut self) -> bool {
        if self.repeat > 0 {
            self.repeat -= 1;
            self.token.position = self.token.position.wrapping_add(1);
            return true;
        }
        let mut next = || {
            let end = self.rest.find(WORD_SEP)?;
            let part = (self.offset, &self.rest[..end]);
            let step = end + WORD_SEP.len_utf8();
            self.rest = &self.rest[step..];
            self.offset += step;
            Some(part)
        };
        let Some((offset, word)) = next() else {
            return false;
        };
        // Only `block_parts` writes this text; a count that does not parse counts once.
        let count = next().and_then(|(_, n)| n.parse::<u32>().ok()).unwrap_or(1);
        self.token.text.clear();
        self.token.text.push_str(word);
        self.token.offset_from = offset;
        self.token.offset_to = offset + word.len();
        self.token.position = self.token.position.wrapping_add(1);
        self.repeat = count.saturating_sub(1);
        true
    }
    fn token(&self) -> &tantivy::tokenizer::Token {
        self.token
    }
    fn token_mut(&mut self) -> &mut tantivy::tokenizer::Token {
        self.token
    }
}

fn register_words_tokenizer(index: &Index) {
    index
        .tokenizers()
        .register(WORDS_TOKENIZER, WordsTokenizer::default());
}

/// The block-level fields of the tantivy index.
#[derive(Clone)]
pub struct BlockSchema {
    pub schema: Schema,
    pub words: Field,
    /// Since layout version 4: the words most of a block's records hold, counted by the
    /// records that do not (see [`word_field`]).
    pub most: Field,
    /// Since layout version 5: the high digit of a word's frequency (see [`split_count`]).
    pub high: Field,
    pub ts_min: Field,
    pub ts_max: Field,
    pub first_id: Field,
    pub last_id: Field,
    pub records: Field,
    pub stream: Field,
    pub body_offset: Field,
    pub body_len: Field,
    pub plain_len: Field,
    pub header_len: Field,
    pub header_plain_len: Field,
    pub filter_offset: Field,
    pub filter_len: Field,
}

impl BlockSchema {
    pub fn new() -> Self {
        let mut b = Schema::builder();
        // Frequencies count the block's records holding a word (or lacking it, in `most`);
        // positions are never needed.
        let counted = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(WORDS_TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqs)
                .set_fieldnorms(false),
        );
        let words = b.add_text_field("words", counted.clone());
        let ts_min = b.add_i64_field("ts_min", FAST);
        let ts_max = b.add_i64_field("ts_max", FAST);
        let first_id = b.add_u64_field("first_id", FAST);
        let last_id = b.add_u64_field("last_id", FAST);
        let records = b.add_u64_field("records", FAST);
        let stream = b.add_u64_field("stream", FAST);
        let body_offset = b.add_u64_field("body_offset", FAST);
        let body_len = b.add_u64_field("body_len", FAST);
        let plain_len = b.add_u64_field("plain_len", FAST);
        let header_len = b.add_u64_field("header_len", FAST);
        let header_plain_len = b.add_u64_field("header_plain_len", FAST);
        let filter_offset = b.add_u64_field("filter_offset", FAST);
        let filter_len = b.add_u64_field("filter_len", FAST);
        // Last, so that the fields before it keep the ids they have in earlier segments.
        let most = b.add_text_field("most", counted.clone());
        let high = b.add_text_field("high", counted);
        BlockSchema {
            schema: b.build(),
            words,
            most,
            high,
            ts_min,
            ts_max,
            first_id,
            last_id,
            records,
            stream,
            body_offset,
            body_len,
            plain_len,
            header_len,
            header_plain_len,
            filter_offset,
            filter_len,
        }
    }
}

impl BlockSchema {
    /// Records in a block's document where its frames lie in the body (header frame at
    /// `offset`, lines frame right after) and their plain sizes.
    fn place_body(
        &self,
        doc: &mut TantivyDocument,
        offset: u64,
        head_frame: &[u8],
        lines_frame: &[u8],
        head: &[u8],
        lines: &[u8],
    ) {
        doc.add_u64(self.body_offset, offset);
        doc.add_u64(self.body_len, (head_frame.len() + lines_frame.len()) as u64);
        doc.add_u64(self.plain_len, lines.len() as u64);
        doc.add_u64(self.header_len, head_frame.len() as u64);
        doc.add_u64(self.header_plain_len, head.len() as u64);
    }
}

impl Default for BlockSchema {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a block's document indexes a word `count` of its `records` hold, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WordField {
    Words(u32),
    Most(u32),
}

/// Each time a word is yielded to tantivy costs a hash lookup, so a word most of the block's
/// records hold (its host and app, a JSON stream's keys) is counted by the records that lack
/// it, plus one so that a word all of them hold still appears: yielding every word as often
/// as records hold it was nine tenths of the block index's indexing time (perf of the e2e
/// ingest). Either way a word is yielded at most about half the block's records times.
fn word_field(count: u32, records: u32) -> WordField {
    if u64::from(count) * 2 > u64::from(records) + 1 {
        WordField::Most(records - count + 1)
    } else {
        WordField::Words(count)
    }
}

/// Which digit of a word's frequency a field of the block index holds.
#[derive(Clone, Copy)]
enum Digit {
    Low,
    LowOfMost,
    High,
}

/// The number of a block's `records` holding a word indexed in `most` with frequency `freq`.
fn count_from_most(freq: u32, records: u32) -> u32 {
    (records + 1).saturating_sub(freq)
}

/// The base of the two digits a frequency is split into.
const COUNT_BASE: u32 = 8;

/// Splits a frequency `n` ≥ 1 into a low digit in 1..=[`COUNT_BASE`], yielded in `words` or
/// `most` (so that a word is there in every block that has it), and a high digit yielded in
/// `high` when not 0, with `n = low + COUNT_BASE · high`. Yielding a word `n` times was still
/// nine tenths of the block index thread's time (a fifth of the server's CPU) with `most`: a
/// block's words had frequency 4.8 on average and now cost 2.3 yields.
fn split_count(n: u32) -> (u32, u32) {
    let m = n.max(1) - 1;
    (1 + m % COUNT_BASE, m / COUNT_BASE)
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
    /// How a probe maps to a bit (by layout version).
    map: ProbeMap,
}

/// Where probe `i` of a hash lands in a filter of `bits` bits. Version 1 took `h1 + i·h2`
/// (the word hash and its rotation, wrapping) modulo `bits`: for some hashes the probes fall
/// on a few bits, and with 16 bits and 11 probes per id one needle of the e2e corpus met 428
/// false blocks of 15,463 where about 7 were expected. Version 2 draws each probe from
/// splitmix64's sequence seeded by the hash, scaled to the filter (Lemire's multiply-shift):
/// independent probes whatever the hash or the filter's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeMap {
    Modulo,
    Scaled,
}

impl ProbeMap {
    fn of(version: u32) -> ProbeMap {
        if version == 1 {
            ProbeMap::Modulo
        } else {
            ProbeMap::Scaled
        }
    }

    /// What the probes of `hash` are drawn from.
    fn start(self, hash: u64) -> (u64, u64) {
        match self {
            ProbeMap::Modulo => (hash, hash.rotate_left(32) | 1),
            ProbeMap::Scaled => (mix(hash), 0),
        }
    }

    /// The bit of probe `i`.
    fn bit(self, (h1, h2): (u64, u64), i: u64, bits: u64) -> u64 {
        match self {
            ProbeMap::Modulo => h1.wrapping_add(i.wrapping_mul(h2)) % bits,
            ProbeMap::Scaled => {
                let x = mix(h1.wrapping_add((i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
                ((u128::from(x) * u128::from(bits)) >> 64) as u64
            }
        }
    }
}

/// splitmix64's finalizer: every bit of `x` moves every bit of the result.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl<'a> Bloom<'a> {
    pub fn may_hold(&self, hash: u64) -> bool {
        let bits = (self.words.len() * 8) as u64;
        if bits == 0 {
            return false;
        }
        let start = self.map.start(hash);
        (0..self.probes).all(|i| {
            let bit = self.map.bit(start, i, bits);
            self.words[(bit / 8) as usize] & (1 << (bit % 8)) != 0
        })
    }
}

/// A filter of `hashes` as this build writes them ([`BLOCKS_VERSION`]).
fn bloom_bytes(hashes: &[u64], bits_per: usize, probes: u64) -> Vec<u8> {
    if hashes.is_empty() {
        return Vec::new();
    }
    let bytes = (hashes.len() * bits_per).div_ceil(8).max(8);
    let bits = (bytes * 8) as u64;
    let map = ProbeMap::of(BLOCKS_VERSION);
    let mut out = vec![0u8; bytes];
    for h in hashes {
        let start = map.start(*h);
        for i in 0..probes {
            let bit = map.bit(start, i, bits);
            out[(bit / 8) as usize] |= 1 << (bit % 8);
        }
    }
    out
}

/// One open block: its records' bytes and its words, each with the number of records that
/// hold it.
#[derive(Default)]
struct OpenBlock {
    /// Word hash → where the word is in `word_text` and how many records hold it. Streams
    /// interleave, so a block's map is mostly out of cache when its next record comes: the
    /// count lives in the map's own slot, one cache miss per word instead of two (the second,
    /// into a separate list of counts, was a quarter of the indexer's word counting).
    seen: HashMap<u64, WordSlot, std::hash::BuildHasherDefault<Prehashed>>,
    /// The words' text: one buffer for all of them, not a `String` each (allocations were a
    /// fifth of the indexer thread's time).
    word_text: String,
    ids: Vec<u64>,
    sources: Vec<String>,
    body: Vec<u8>,
    ts_min: i64,
    ts_max: i64,
    first_id: u64,
    last_id: u64,
    records: u32,
    /// The writer's count of records joined when the last of its own joined it.
    joined: u64,
    /// The first record's timestamp and id: the body stores the others as deltas from them.
    base_ts: i64,
    base_id: u64,
    base_recv: i64,
    /// Per-record columns, each a delta from the record before (see [`encode_record`]).
    prev: (i64, u64, i64),
    ts_deltas: Vec<i64>,
    id_col: Vec<u8>,
    recv_deltas: Vec<i64>,
    meta_col: Vec<u8>,
    /// Severity code per record, [`NO_SEVERITY`] for none.
    sev_col: Vec<u8>,
    len_col: Vec<u8>,
    /// Pattern id per record (varints, 0 for none); written only if one has an id (or the
    /// timestamp columns follow).
    pattern_col: Vec<u8>,
    patterned: bool,
    /// Where each record's line spelled its timestamp and in what style (varints; style 0:
    /// it did not, see `timetext`), written only if one did: `body` holds the lines without it.
    spelled_at_col: Vec<u8>,
    spelled_style_col: Vec<u8>,
    spelled: bool,
    /// The stream's host and app (every record of the block has them).
    host: Option<String>,
    app: Option<String>,
    /// What the last snapshot read of it, while no record has joined it since.
    frozen: Option<std::sync::Arc<FrozenBlock>>,
}

/// A word of an open block: its text (`start..end` in the block's `word_text`), the last
/// record that counted it, and the records holding it.
#[derive(Clone, Copy)]
struct WordSlot {
    start: u32,
    end: u32,
    last: u32,
    count: u32,
}

/// A block of a hot tier as snapshots read it until its document is in the block index:
/// plain header and lines, and its words and ids as lookups. A snapshot used to index and
/// compress these blocks afresh at every commit (twice a second): a fifth of the server's
/// CPU while ingesting (perf of the e2e ingest), for blocks that mostly had not changed.
struct FrozenBlock {
    /// Its header range is all of `head`, its body range all of `lines`.
    info: BlockInfo,
    head: Vec<u8>,
    lines: Vec<u8>,
    /// (word hash, records holding it), by hash; empty outside a hot tier.
    words: Vec<(u64, u32)>,
    /// Hashes of its high-entropy tokens, sorted and distinct (exact, not a filter).
    ids: Vec<u64>,
}

/// Hashes a key that is already a hash ([`hash_word`]) as itself: SipHash over it took a
/// third of the time of adding a record's words to its block (perf of the e2e ingest).
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are u64); fold anything else in anyway.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Closed blocks kept, emptied, for their buffers (see [`BlockWriter::close`]).
const SPARE_BLOCKS: usize = 64;

impl OpenBlock {
    /// Empties the block, keeping its buffers' capacity. The other fields are set again by
    /// the block's first record (`records == 0`, see [`BlockWriter::add_analyzed`]).
    fn clear(&mut self) {
        self.seen.clear();
        self.word_text.clear();
        self.ids.clear();
        self.sources.clear();
        self.body.clear();
        self.ts_deltas.clear();
        self.id_col.clear();
        self.recv_deltas.clear();
        self.meta_col.clear();
        self.sev_col.clear();
        self.len_col.clear();
        self.pattern_col.clear();
        self.patterned = false;
        self.spelled_at_col.clear();
        self.spelled_style_col.clear();
        self.spelled = false;
        self.records = 0;
        self.frozen = None;
    }

    /// Counts `word` (hashed to `h`) for the record being added, once however often it holds it.
    fn word(&mut self, h: u64, word: &str) {
        let record = self.records;
        match self.seen.entry(h) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let slot = e.get_mut();
                if slot.last != record {
                    slot.last = record;
                    slot.count += 1;
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                let start = self.word_text.len() as u32;
                self.word_text.push_str(word);
                e.insert(WordSlot {
                    start,
                    end: self.word_text.len() as u32,
                    last: record,
                    count: 1,
                });
            }
        }
    }
}

/// Plain bytes of closed blocks gathered before the segment's zstd dictionary is trained on
/// them. Blocks of 128 records are small frames, which compress poorly alone; a dictionary
/// learnt from the segment's own first blocks recovers most of what one large frame gets,
/// and a block still reads alone.
const DICT_TRAIN_BYTES: usize = 2 << 20;
/// At least this much to train on at all (a small segment compresses its blocks plainly).
const DICT_MIN_BYTES: usize = 128 << 10;
const DICT_MAX_BYTES: usize = 64 << 10;

/// The stream part of an open block's key: [`crate::schema::stream_key`] is 16 bits wide.
const STREAM_BITS: u64 = 0xffff_ffff;

/// The key of the open block a record joins: its stream, and whether it is a warning or worse.
/// A stream's warnings and errors fill blocks of their own: they are a few in a hundred of
/// its records and what an incident searches for, and spread among its other records every
/// search for them (a phrase, a word common to both) decompressed and checked blocks that
/// held one or two each.
///
/// And the span of time the record falls in (`timestamp` divided by the blocks' longest span):
/// a stream whose records arrive out of time order keeps a block per span instead of closing
/// one at every jump. The e2e senders each replay a slice of the corpus, so every stream's
/// records came hours apart in turn; closing the open block at each jump cut them into blocks
/// of 5 records on average (5 GB: 180,000 blocks per million records, 20 MiB of block list
/// per segment resident for good, and a tantivy document, a header and a zstd frame each).
fn open_key(stream: u64, severity: Option<u8>, timestamp: i64, span_ns: i64) -> u64 {
    let alarming = severity.is_some_and(|code| code <= WARNING_CODE);
    let span = (timestamp.div_euclid(span_ns.max(1)) as u64) & SPAN_KEY_MASK;
    stream | (u64::from(alarming) << 32) | (span << 33)
}

/// The bits of a block's time span that its open key keeps (above the stream and the
/// severity bit); spans that differ only above them share a key, which only closes a block
/// early.
const SPAN_KEY_MASK: u64 = (1 << 31) - 1;

/// Most blocks open at once. Past it the least recently joined quarter of them is closed:
/// streams jumping in time would otherwise keep a block open per span they ever touched
/// until the seal (a block is a few KiB to tens of KiB of buffers).
const MAX_OPEN_BLOCKS: usize = 4_096;

/// Syslog severity 4: warnings and worse have the lower codes.
const WARNING_CODE: u8 = 4;

/// Builds one block segment from records in any order: each stream's records fill its open
/// block, which closes at [`BLOCK_RECORDS`].
///
/// Two uses: a seal feeds it a whole tier and calls [`BlockWriter::finish`]; the hot tier of
/// the `blocks` layout feeds it records as they arrive and calls [`BlockWriter::snapshot`] at
/// every commit, so that what it holds so far is searchable, then `finish` at the seal (the
/// segment is already written by then: closed blocks went to `body.dat` as they closed).
pub struct BlockWriter {
    schema: BlockSchema,
    /// A record's pattern word, written here rather than allocated per record.
    pattern_word: String,
    /// A closing block's word texts (`words`, `most`, `high`), kept from block to block: the
    /// document copies them, and allocating them anew was 2 % of the indexer thread's time.
    doc_text: [String; 3],
    /// Analyses the records that [`BlockWriter::add`] is given parsed.
    analyzer: Analyzer,
    open: HashMap<u64, OpenBlock>,
    /// Closed blocks until the dictionary exists.
    pending: Vec<PlainBlock>,
    pending_bytes: usize,
    /// Whether the dictionary is decided (trained, or none): closed blocks then go straight
    /// to the compression thread.
    trained: bool,
    dictionary: Vec<u8>,
    /// `dictionary` digested for the snapshots' readers, once it is decided.
    ddict: SharedDict,
    /// Where the segment is written and its block index.
    dir: PathBuf,
    index: Index,
    /// The compression thread, which owns `body.dat` and the block index's writer. Closed
    /// blocks are compressed and indexed there, beside the thread that adds records (zstd
    /// was 45 % of that thread's time with both on one), and each block's document is
    /// indexed as it is compressed, so the seal never holds every block's words at once
    /// (110 MB at 300 MB of e2e, left resident after the seal). Taken by `finish`.
    worker: Option<Worker>,
    /// What [`BlockWriter::snapshot`] reads the block index through.
    reader: Option<tantivy::IndexReader>,
    /// Whether snapshots are taken (a hot tier): closed blocks are then kept in `closed`
    /// until the block index holds them.
    hot: bool,
    /// Closed blocks, in the order they closed (which is the order their documents reach the
    /// block index), from the first one the block index may not hold yet.
    closed: std::collections::VecDeque<std::sync::Arc<FrozenBlock>>,
    /// Closed blocks dropped from the front of `closed`: the block index held them.
    dropped: u64,
    /// The last snapshot's segment of the block index and `body.dat`, with the number of
    /// blocks it holds: the next snapshot reuses it when the index has not committed since.
    written: Option<(u64, std::sync::Arc<BlockSegment>)>,
    /// The first error of the compression thread, which reports nothing otherwise.
    thread_failed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// The first error (reported by `snapshot` and `finish`).
    failed: Option<BlockError>,
    filters: Vec<u8>,
    segment_ids: Vec<u64>,
    scratch: Analyzed,
    /// Emptied blocks, reused for their buffers' capacity.
    spare: Vec<OpenBlock>,
    level: i32,
    block_records: usize,
    /// Plain bytes of blocks the dictionary is trained on, and its most bytes.
    dict_train_bytes: usize,
    dict_max_bytes: usize,
    /// Most time a block's records span: each block holds one span of this length, aligned
    /// on multiples of it.
    max_span_ns: i64,
    /// Records joined to blocks so far (which open blocks were joined least recently).
    joined: u64,
}

/// Blocks the compression thread may have queued, and their plain bytes: bound the memory
/// they hold when it falls behind (the thread adding records then waits). By count alone, 64
/// blocks of long lines could hold hundreds of MiB. Room for 512 blocks and 32 MiB was tried:
/// the indexer then no longer stopped at the block index's commits (the server used 1.75 of
/// its 2 cores while ingesting instead of 1.66–1.69), but CPU per record rose as much, ingest
/// was no faster, and the hostile soak's peak RSS went from 333 to 365 MiB (bound 384).
const QUEUED_BLOCKS: usize = 64;
const QUEUED_BYTES: usize = 8 << 20;

/// Bytes queued for a thread: plain blocks for the compression thread, block documents for
/// the block index's.
#[derive(Default)]
struct Queued {
    bytes: std::sync::Mutex<usize>,
    room: std::sync::Condvar,
}

impl Queued {
    /// Waits until `n` more bytes fit (a block larger than the bound goes alone), unless
    /// `gone` says the thread taking them has stopped.
    fn take(&self, n: usize, gone: impl Fn() -> bool) {
        let mut bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        while *bytes > 0 && *bytes + n > QUEUED_BYTES && !gone() {
            bytes = self
                .room
                .wait_timeout(bytes, std::time::Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *bytes += n;
    }

    fn give(&self, n: usize) {
        let mut bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        *bytes = bytes.saturating_sub(n);
        self.room.notify_all();
    }
}

/// Blocks a hot tier's block index takes between commits: each commit is an index segment
/// that snapshots read, and until it the blocks stay in memory, plain (tens of MiB). A hot
/// index is not merged before its seal: merging segments of a few hundred blocks as they
/// came was a tenth of the server's CPU while ingesting. Since the seal keeps them too
/// (layout version 5), fewer and larger: each is looked up by every one-word query.
const HOT_BLOCKS_PER_COMMIT: usize = 8192;
/// Plain bytes (headers and lines) a hot tier's block index takes between commits, whichever
/// comes first with [`HOT_BLOCKS_PER_COMMIT`]: blocks of a hundred records each would
/// otherwise keep hundreds of MiB plain in memory until the next commit.
const HOT_PLAIN_BYTES_PER_COMMIT: usize = 64 << 20;

/// Segments of a hot tier's block index its seal keeps as they are (since layout version 5);
/// a tier with more is merged into one. Merging them into one at every seal was a tenth of
/// the server's CPU while ingesting (a `perf record` of the e2e ingest; 7.5 → 7.0 µs of CPU
/// per record without it), for a one-word query that now looks its word up in each of a
/// sealed segment's (about 4 for a million records of 200 bytes; each also costs a segment
/// reader's memory while served: at 5 GB with twice as many, idle RSS was 157 MiB against
/// 133 merged). A segment rewritten when quiet has one again.
const HOT_INDEX_SEGMENTS_KEPT: usize = 32;

/// What a [`BlockWriter`]'s compression thread is asked to do.
enum Work {
    /// Compress with this from now on (sent once, when the dictionary is decided).
    Compressor(zstd::bulk::Compressor<'static>),
    /// Compress a closed block, append it to `body.dat` and index its document.
    Block(PlainBlock),
}

struct Worker {
    tx: std::sync::mpsc::SyncSender<Work>,
    thread: std::thread::JoinHandle<Compressing>,
    queued: std::sync::Arc<Queued>,
}

/// What the compression thread owns; handed back when the writer finishes.
struct Compressing {
    queued: std::sync::Arc<Queued>,
    schema: BlockSchema,
    dir: PathBuf,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    /// The block index's writer, on a thread of its own while blocks come (see
    /// [`BlockIndexing`]); back here once the thread has ended.
    indexing: Indexer,
    /// `body.dat`, written as blocks are compressed: a seal of a large tier does not hold its
    /// bodies in memory, and a hot tier's snapshots read them from the file.
    body: std::io::BufWriter<std::fs::File>,
    body_len: u64,
    indexed: usize,
    /// Blocks indexed between commits of the block index (each commit a segment, merged
    /// into one at the end): bounds the writer's memory along with its arena.
    blocks_per_commit: usize,
    /// Plain bytes between commits (a hot tier keeps its uncommitted blocks in memory), and
    /// those indexed since the last commit.
    bytes_per_commit: usize,
    bytes_since_commit: usize,
    /// The first error, kept: everything after it is suspect.
    failed: Option<String>,
    /// Where the writer's snapshots see that error.
    shared_failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

/// Where the block index's writer is: on its indexing thread, or back.
enum Indexer {
    Running {
        tx: std::sync::mpsc::SyncSender<IndexWork>,
        thread: std::thread::JoinHandle<BlockIndexing>,
        /// Bytes of the documents queued for it.
        queued: std::sync::Arc<Queued>,
    },
    Done(Box<IndexWriter>),
    Gone,
}

/// What the block index's thread is asked to do.
enum IndexWork {
    /// Add a block's document (whose text holds this many bytes).
    Document(TantivyDocument, usize),
    /// Commit what was added: the bodies of every block before it are in `body.dat`.
    Commit,
}

/// The block index's writer on a thread of its own, fed by the compression thread. Its
/// commits wait for tantivy's indexing thread to write a segment; done by the compression
/// thread, they stopped it, its queue filled, and the indexer thread waited in turn: then
/// one core idled, a third of all the time the server left a core idle while ingesting
/// (`perf record -e sched:sched_switch -a` of the e2e ingest, threads' states at each idle).
struct BlockIndexing {
    writer: IndexWriter,
    queued: std::sync::Arc<Queued>,
    failed: Option<String>,
    shared_failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl BlockIndexing {
    fn run(mut self, rx: std::sync::mpsc::Receiver<IndexWork>) -> Self {
        for work in rx {
            let result = match work {
                IndexWork::Document(doc, bytes) => {
                    let added = match self.failed {
                        None => self.writer.add_document(doc).map(drop),
                        Some(_) => Ok(()),
                    };
                    self.queued.give(bytes);
                    added
                }
                IndexWork::Commit if self.failed.is_none() => self.writer.commit().map(drop),
                IndexWork::Commit => Ok(()),
            };
            if let Err(e) = result {
                let why = e.to_string();
                if let Ok(mut shared) = self.shared_failure.lock() {
                    shared.get_or_insert_with(|| why.clone());
                }
                self.failed.get_or_insert(why);
            }
        }
        self
    }
}

impl Compressing {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Work>) -> Self {
        for work in rx {
            match work {
                Work::Compressor(c) => self.compressor = Some(c),
                Work::Block((doc, doc_bytes, block)) => {
                    let result = self.block(doc, doc_bytes, &block.head, &block.lines);
                    self.queued.give(block.head.len() + block.lines.len());
                    if let Err(e) = result {
                        self.fail(e.to_string());
                    }
                }
            }
        }
        // The indexing thread ends with its queue; its writer comes back for the last commit.
        match std::mem::replace(&mut self.indexing, Indexer::Gone) {
            Indexer::Running { tx, thread, .. } => {
                drop(tx);
                match thread.join() {
                    Ok(indexing) => {
                        if let Some(why) = indexing.failed {
                            self.failed.get_or_insert(why);
                        }
                        self.indexing = Indexer::Done(Box::new(indexing.writer));
                    }
                    Err(_) => self.fail("the block index thread panicked".into()),
                }
            }
            other => self.indexing = other,
        }
        self
    }

    fn fail(&mut self, why: String) {
        if let Ok(mut shared) = self.shared_failure.lock() {
            shared.get_or_insert_with(|| why.clone());
        }
        self.failed.get_or_insert(why);
    }

    /// Hands `work` to the block index's thread.
    fn index(&mut self, work: IndexWork) -> Result<(), BlockError> {
        let gone = || BlockError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other("the block index thread stopped"),
        };
        let Indexer::Running { tx, thread, queued } = &self.indexing else {
            return Err(gone());
        };
        if let IndexWork::Document(_, bytes) = &work {
            queued.take(*bytes, || thread.is_finished());
        }
        tx.send(work).map_err(|_| gone())
    }

    fn error(&self) -> Option<BlockError> {
        self.failed.as_ref().map(|why| BlockError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other(why.clone()),
        })
    }

    fn block(
        &mut self,
        mut doc: TantivyDocument,
        doc_bytes: usize,
        head: &[u8],
        lines: &[u8],
    ) -> Result<(), BlockError> {
        if self.failed.is_some() {
            return Ok(());
        }
        let mut frame = |plain: &[u8]| match self.compressor.as_mut().map(|c| c.compress(plain)) {
            Some(Ok(frame)) => frame,
            // zstd fails only on invalid parameters; a fresh default context always works.
            _ => zstd::bulk::compress(plain, 0).expect("zstd at its default level"),
        };
        let (head_frame, lines_frame) = (frame(head), frame(lines));
        self.schema.place_body(
            &mut doc,
            self.body_len,
            &head_frame,
            &lines_frame,
            head,
            lines,
        );
        self.body
            .write_all(&head_frame)
            .and_then(|()| self.body.write_all(&lines_frame))
            .map_err(|source| BlockError::Io {
                path: self.dir.join(BODY_FILE),
                source,
            })?;
        self.body_len += (head_frame.len() + lines_frame.len()) as u64;
        self.indexed += 1;
        self.bytes_since_commit += head.len() + lines.len();
        self.index(IndexWork::Document(doc, doc_bytes))?;
        if self.indexed.is_multiple_of(self.blocks_per_commit)
            || self.bytes_since_commit >= self.bytes_per_commit
        {
            self.bytes_since_commit = 0;
            // Bodies first: a snapshot maps `body.dat` as long as it is once it sees a
            // commit, and every block of that commit must lie within.
            self.body.flush().map_err(|source| BlockError::Io {
                path: self.dir.join(BODY_FILE),
                source,
            })?;
            self.index(IndexWork::Commit)?;
        }
        Ok(())
    }
}

/// Whether a search keeps a record, shown the block's lines as stored and the record's range
/// in them (see [`BlockSegment::read_lines_where`]).
type KeepLine<'a> = dyn FnMut(&[u8], std::ops::Range<usize>) -> bool + 'a;

/// A decompression dictionary, digested once and shared by every snapshot made with it.
type SharedDict = Option<std::sync::Arc<zstd::zstd_safe::DDict<'static>>>;

/// The digested form of `dictionary` (`None` when it is empty).
fn digest(dictionary: &[u8]) -> Result<SharedDict, String> {
    if dictionary.is_empty() {
        return Ok(None);
    }
    zstd::zstd_safe::DDict::try_create(dictionary)
        .map(|d| Some(std::sync::Arc::new(d)))
        .ok_or_else(|| "the zstd dictionary does not load".to_string())
}

/// A closed block before compression: its index document (without the body's place), the
/// bytes of that document's text (what it holds while queued for the block index), and the
/// block.
type PlainBlock = (TantivyDocument, usize, std::sync::Arc<FrozenBlock>);

impl BlockWriter {
    /// A writer whose blocks close at `block_records` records instead of [`BLOCK_RECORDS`]
    /// (the benchmark weighs block sizes with it).
    pub fn with_block_records(self, block_records: usize) -> Self {
        BlockWriter {
            block_records: block_records.clamp(1, 1 << 16),
            ..self
        }
    }

    /// A writer whose dictionary holds up to `max_bytes`, trained on the first `train_bytes` of
    /// plain blocks (held in memory until then) instead of 64 KiB on 2 MiB.
    pub fn with_dictionary(self, train_bytes: usize, max_bytes: usize) -> Self {
        BlockWriter {
            dict_train_bytes: train_bytes.max(DICT_MIN_BYTES),
            dict_max_bytes: max_bytes.max(1024),
            ..self
        }
    }

    /// A writer whose blocks span at most `ns` nanoseconds instead of [`MAX_BLOCK_SPAN_NS`]
    /// (the benchmark weighs spans with it).
    pub fn with_max_span(self, ns: i64) -> Self {
        BlockWriter {
            max_span_ns: ns.max(1),
            ..self
        }
    }

    /// A writer of the block segment in `dir` (created; it must not hold one already);
    /// `zstd_level` compresses each block's frames.
    pub fn new(dir: &Path, zstd_level: i32) -> Result<Self, BlockError> {
        Self::create(dir, zstd_level, false, 4096)
    }

    /// A writer for a hot tier, read through [`BlockWriter::snapshot`]s.
    pub fn hot(dir: &Path, zstd_level: i32) -> Result<Self, BlockError> {
        Self::create(dir, zstd_level, true, HOT_BLOCKS_PER_COMMIT)
    }

    /// A writer that commits its block index every `blocks` blocks (tests of the merge that
    /// follows).
    #[doc(hidden)]
    pub fn committing_every(
        dir: &Path,
        zstd_level: i32,
        hot: bool,
        blocks: usize,
    ) -> Result<Self, BlockError> {
        Self::create(dir, zstd_level, hot, blocks.max(1))
    }

    fn create(
        dir: &Path,
        zstd_level: i32,
        hot: bool,
        blocks_per_commit: usize,
    ) -> Result<Self, BlockError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BlockError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let schema = BlockSchema::new();
        let index = Index::create_in_dir(dir, schema.schema.clone())?;
        register_words_tokenizer(&index);
        // One thread and a bounded arena, committed every `blocks_per_commit` blocks (and at
        // each snapshot); the segments are merged into one at the end unless a hot tier's are
        // few enough to keep (a block's ordinal is its segment's base plus its document id;
        // its offsets are its own document's fields, so their order does not matter).
        let writer: IndexWriter = index.writer_with_num_threads(1, BLOCK_INDEX_ARENA)?;
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        let body_path = dir.join(BODY_FILE);
        let body = std::fs::File::create(&body_path).map_err(io(&body_path))?;
        let queued = std::sync::Arc::new(Queued::default());
        let thread_failed = std::sync::Arc::new(std::sync::Mutex::new(None));
        // Documents hold a block's words (a few KiB); while a commit stops the thread for a
        // fraction of a second, blocks keep coming. Bounded like the plain blocks.
        let documents = std::sync::Arc::new(Queued::default());
        let indexing = BlockIndexing {
            writer,
            queued: documents.clone(),
            failed: None,
            shared_failure: thread_failed.clone(),
        };
        // By bytes (`documents`); the count only keeps tiny documents from piling up.
        let (index_tx, index_rx) = std::sync::mpsc::sync_channel(4 * QUEUED_BLOCKS);
        let index_thread = std::thread::Builder::new()
            .name("logsift-bindex".into())
            .spawn(move || indexing.run(index_rx))
            .map_err(io(dir))?;
        let mut state = Compressing {
            queued: queued.clone(),
            schema: schema.clone(),
            dir: dir.to_path_buf(),
            compressor: None,
            indexing: Indexer::Running {
                tx: index_tx,
                thread: index_thread,
                queued: documents,
            },
            body: std::io::BufWriter::with_capacity(1 << 20, body),
            body_len: 0,
            indexed: 0,
            blocks_per_commit,
            bytes_per_commit: if hot {
                HOT_PLAIN_BYTES_PER_COMMIT
            } else {
                usize::MAX
            },
            bytes_since_commit: 0,
            failed: None,
            shared_failure: Default::default(),
        };
        state.shared_failure = thread_failed.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUED_BLOCKS);
        let thread = std::thread::Builder::new()
            .name("logsift-blocks".into())
            .spawn(move || state.run(rx))
            .map_err(io(dir))?;
        Ok(BlockWriter {
            pattern_word: String::with_capacity(PATTERN_WORD_BYTES),
            dir: dir.to_path_buf(),
            index,
            worker: Some(Worker { tx, thread, queued }),
            reader: None,
            hot,
            closed: Default::default(),
            dropped: 0,
            written: None,
            thread_failed,
            failed: None,
            schema,
            analyzer: Analyzer::default(),
            open: HashMap::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            trained: false,
            dictionary: Vec::new(),
            ddict: None,
            filters: Vec::new(),
            segment_ids: Vec::new(),
            scratch: Analyzed::default(),
            spare: Vec::new(),
            doc_text: Default::default(),
            level: zstd_level,
            block_records: BLOCK_RECORDS,
            dict_train_bytes: DICT_TRAIN_BYTES,
            dict_max_bytes: DICT_MAX_BYTES,
            max_span_ns: MAX_BLOCK_SPAN_NS,
            joined: 0,
        })
    }

    /// Where the segment is being written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a record; `parsed` is `rec.raw` parsed with the index's options.
    pub fn add(&mut self, rec: &BlockRecord<'_>, parsed: &Record<'_>) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        self.analyzer.analyze(parsed, rec.source, &mut scratch);
        self.add_analyzed(rec, &scratch.get(0));
        self.scratch = scratch;
    }

    /// Adds a record; `a` is the analysis of `rec.raw` parsed with the index's options.
    pub fn add_analyzed(&mut self, rec: &BlockRecord<'_>, a: &Analysis<'_>) {
        // Keyed by the span of time too: a block of a quiet stream would otherwise span
        // hours, and every short time window would have to open it.
        let key = open_key(
            crate::schema::stream_key(a.host, a.app),
            a.severity.map(|s| s.code()),
            rec.timestamp,
            self.max_span_ns,
        );
        if self.open.len() >= MAX_OPEN_BLOCKS && !self.open.contains_key(&key) {
            self.close_least_recent(MAX_OPEN_BLOCKS / 4);
        }
        self.joined += 1;
        // In place: a block is a few hundred bytes of fields, moved twice per record when it
        // was taken out of the map and put back.
        let blk = match self.open.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(self.spare.pop().unwrap_or_default())
            }
        };
        if blk.records == 0 {
            blk.ts_min = rec.timestamp;
            blk.ts_max = rec.timestamp;
            blk.first_id = rec.id;
            blk.last_id = rec.id;
            blk.base_ts = rec.timestamp;
            blk.base_id = rec.id;
            blk.base_recv = rec.received_at;
            blk.prev = (rec.timestamp, rec.id, rec.received_at);
            blk.host = a.host.map(str::to_string);
            blk.app = a.app.map(str::to_string);
        }
        blk.sev_col
            .push(a.severity.map_or(NO_SEVERITY, |s| s.code()));
        blk.ts_min = blk.ts_min.min(rec.timestamp);
        blk.ts_max = blk.ts_max.max(rec.timestamp);
        blk.joined = self.joined;
        blk.first_id = blk.first_id.min(rec.id);
        blk.last_id = blk.last_id.max(rec.id);
        blk.frozen = None;
        for (h, word) in a.words() {
            blk.word(h, word);
        }
        blk.ids.extend_from_slice(a.ids);
        if rec.pattern != 0 {
            // In a buffer kept from record to record: glibc's realloc (which `format!` ends
            // with) always takes its arena's lock, and the indexer slept on that lock more
            // than on anything else (`perf record -e sched:sched_switch` of the e2e ingest).
            let word = &mut self.pattern_word;
            word.clear();
            push_pattern_word(word, rec.pattern);
            blk.word(hash_word(word.as_bytes()), word);
        }
        encode_record(blk, rec);
        blk.records += 1;
        if blk.records as usize >= self.block_records {
            if let Some(blk) = self.open.remove(&key) {
                self.close(key, blk);
            }
        }
    }

    /// Closes the `n` open blocks that were joined least recently.
    fn close_least_recent(&mut self, n: usize) {
        let mut by_age: Vec<(u64, u64)> = self.open.iter().map(|(k, b)| (b.joined, *k)).collect();
        let n = n.min(by_age.len());
        by_age.select_nth_unstable(n.saturating_sub(1));
        let mut keys: Vec<(u64, u64)> = by_age[..n].to_vec();
        // In the order they were opened, as the seal closes them.
        keys.sort_unstable_by_key(|&(_, k)| self.open.get(&k).map_or(0, |b| b.first_id));
        for (_, key) in keys {
            if let Some(blk) = self.open.remove(&key) {
                self.close(key, blk);
            }
        }
    }

    /// The document of a block (without the body's place or the filter's), and the bytes of
    /// its text.
    fn document(&mut self, key: u64, blk: &OpenBlock) -> (TantivyDocument, usize) {
        let s = &self.schema;
        let mut doc = TantivyDocument::new();
        doc.add_i64(s.ts_min, blk.ts_min);
        doc.add_i64(s.ts_max, blk.ts_max);
        doc.add_u64(s.first_id, blk.first_id);
        doc.add_u64(s.last_id, blk.last_id);
        doc.add_u64(s.records, u64::from(blk.records));
        doc.add_u64(s.stream, key & STREAM_BITS);
        let [words, most, high] = &mut self.doc_text;
        for text in [&mut *words, &mut *most, &mut *high] {
            text.clear();
        }
        words.reserve(blk.word_text.len() + 6 * blk.seen.len());
        fn push(text: &mut String, word: &str, n: u32) {
            text.push_str(word);
            text.push(WORD_SEP);
            // A digit is 1 to 8 with blocks of 128 records: no formatter for it.
            if n < 10 {
                text.push(char::from(b'0' + n as u8));
            } else {
                use std::fmt::Write as _;
                let _ = write!(text, "{n}");
            }
            text.push(WORD_SEP);
        }
        for slot in blk.seen.values() {
            let (word, count) = (
                &blk.word_text[slot.start as usize..slot.end as usize],
                slot.count,
            );
            let (text, n) = match word_field(count, blk.records) {
                WordField::Words(n) => (&mut *words, n),
                WordField::Most(n) => (&mut *most, n),
            };
            let (low, hi) = split_count(n);
            push(text, word, low);
            if hi > 0 {
                push(high, word, hi);
            }
        }
        let mut bytes = 0;
        for (field, text) in [(s.words, &*words), (s.most, &*most), (s.high, &*high)] {
            if !text.is_empty() {
                doc.add_text(field, text);
                bytes += text.len();
            }
        }
        (doc, bytes)
    }

    fn close(&mut self, key: u64, mut blk: OpenBlock) {
        let (mut doc, doc_bytes) = self.document(key, &blk);
        let head = block_header(&blk);
        // Sized like this block's, with an eighth to spare: a block that outgrew its buffer by
        // a byte was copied whole by realloc (a tenth of the indexer thread's time, perf of
        // the e2e ingest, as one in two blocks is longer than its stream's block before).
        let sized = Vec::with_capacity(blk.ids.len() + blk.ids.len() / 8);
        let mut ids = std::mem::replace(&mut blk.ids, sized);
        ids.sort_unstable();
        ids.dedup();
        let filter = bloom_bytes(&ids, BLOCK_BITS_PER_ID, BLOCK_PROBES);
        doc.add_u64(self.schema.filter_offset, self.filters.len() as u64);
        doc.add_u64(self.schema.filter_len, filter.len() as u64);
        self.filters.extend_from_slice(&filter);
        self.segment_ids.extend_from_slice(&ids);
        // The lines (and ids) leave with the block; the next block's are sized like them.
        let sized = Vec::with_capacity(blk.body.len() + blk.body.len() / 8);
        let lines = std::mem::replace(&mut blk.body, sized);
        let (plain_bytes, hot) = (head.len() + lines.len(), self.hot);
        let ids = if hot { ids } else { Vec::new() };
        let block = std::sync::Arc::new(freeze(key, &blk, head, lines, ids, hot));
        if self.spare.len() < SPARE_BLOCKS {
            // Its maps and columns keep their capacity for the next block: a new block's grew
            // from nothing, rehashing its word map over and over.
            blk.clear();
            self.spare.push(blk);
        }
        if hot {
            self.closed.push_back(block.clone());
        }
        if self.trained {
            self.send(Work::Block((doc, doc_bytes, block)));
        } else {
            self.pending_bytes += plain_bytes;
            self.pending.push((doc, doc_bytes, block));
            if self.pending_bytes >= self.dict_train_bytes {
                self.train();
            }
        }
    }

    /// Hands `work` to the compression thread (noting it if that thread is gone).
    fn send(&mut self, work: Work) {
        let sent = self.worker.as_ref().map(|w| {
            if let Work::Block((_, _, block)) = &work {
                let n = block.head.len() + block.lines.len();
                w.queued.take(n, || w.thread.is_finished());
            }
            w.tx.send(work)
        });
        if !matches!(sent, Some(Ok(()))) && self.failed.is_none() {
            self.failed = Some(BlockError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other("the block compression thread stopped"),
            });
        }
    }

    /// A writer that compresses with `dictionary` (one an earlier segment of the same data
    /// trained) from its first block, instead of training its own.
    pub fn with_trained_dictionary(mut self, dictionary: Vec<u8>) -> Self {
        if !self.trained && self.pending.is_empty() {
            self.dictionary = dictionary;
            self.decide_dictionary();
        }
        self
    }

    /// The dictionary this writer compresses with, once decided (empty before, or if none).
    pub fn dictionary(&self) -> &[u8] {
        if self.trained {
            &self.dictionary
        } else {
            &[]
        }
    }

    /// Trains the segment's dictionary on the pending blocks (when there are enough of them)
    /// and sends them to be compressed.
    fn train(&mut self) {
        if self.pending_bytes >= DICT_MIN_BYTES && self.pending.len() >= 8 {
            let samples: Vec<&[u8]> = self
                .pending
                .iter()
                .flat_map(|(_, _, b)| [b.head.as_slice(), b.lines.as_slice()])
                .collect();
            // Training can fail on samples it finds too uniform; blocks then go without.
            match zstd::dict::from_samples(&samples, self.dict_max_bytes) {
                Ok(dict) => self.dictionary = dict,
                Err(e) => {
                    tracing::info!(dir = %self.dir.display(), error = %e, "no zstd dictionary for a block segment: training failed")
                }
            }
        }
        tracing::debug!(dir = %self.dir.display(), blocks = self.pending.len(), bytes = self.pending_bytes, dictionary = self.dictionary.len(), "block segment dictionary");
        self.decide_dictionary();
    }

    /// Compresses with `self.dictionary` from now on: the compression thread gets its
    /// compressor, snapshots its digest, and the pending blocks go.
    fn decide_dictionary(&mut self) {
        let context = |level: i32, dictionary: &[u8]| {
            zstd::bulk::Compressor::with_dictionary(level, dictionary)
                .or_else(|_| zstd::bulk::Compressor::with_dictionary(0, dictionary))
        };
        match context(self.level, &self.dictionary) {
            Ok(compressor) => match digest(&self.dictionary) {
                Ok(ddict) => {
                    self.ddict = ddict;
                    self.send(Work::Compressor(compressor));
                }
                Err(why) => {
                    self.failed.get_or_insert(BlockError::Damaged {
                        path: self.dir.clone(),
                        why,
                    });
                }
            },
            Err(source) => {
                self.failed.get_or_insert(BlockError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        }
        self.trained = true;
        for block in std::mem::take(&mut self.pending) {
            self.send(Work::Block(block));
        }
        self.pending_bytes = 0;
    }

    /// Makes every record added so far readable, the writer going on: the blocks the block
    /// index has committed as one segment read from this writer's files, and the others
    /// (closed blocks on their way there, and the open ones, which still grow) as a second
    /// one, in memory, if there are any. Waits for nothing: the compression thread commits
    /// on its own (every [`HOT_BLOCKS_PER_COMMIT`] blocks), and an open block that took no
    /// record since the last snapshot is not copied again.
    pub fn snapshot(&mut self) -> Result<Vec<std::sync::Arc<BlockSegment>>, BlockError> {
        let thread_failed = self.thread_failed.lock().ok().and_then(|f| f.clone());
        if let Some(why) = thread_failed {
            self.failed.get_or_insert(BlockError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other(why),
            });
        }
        if let Some(e) = &self.failed {
            // Kept: blocks may be missing from here on, so no later snapshot may pass either.
            return Err(BlockError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            });
        }
        let reader = match &self.reader {
            Some(r) => {
                r.reload()?;
                r.clone()
            }
            None => {
                let r: tantivy::IndexReader = self
                    .index
                    .reader_builder()
                    .reload_policy(tantivy::ReloadPolicy::Manual)
                    .try_into()?;
                self.reader = Some(r.clone());
                r
            }
        };
        let searcher = reader.searcher();
        // Documents reach the index in the order their blocks closed, and a commit makes
        // all of those before it visible: the index holds the first `indexed` closed blocks.
        let indexed = searcher.num_docs();
        let written = match &self.written {
            Some((n, segment)) if *n == indexed => segment.clone(),
            _ => {
                let segment = std::sync::Arc::new(self.written_segment(searcher)?);
                self.written = Some((indexed, segment.clone()));
                segment
            }
        };
        while self.dropped < indexed && self.closed.pop_front().is_some() {
            self.dropped += 1;
        }
        let mut open: Vec<(u64, &mut OpenBlock)> =
            self.open.iter_mut().map(|(k, b)| (*k, b)).collect();
        open.sort_by_key(|(_, b)| b.first_id);
        let mut blocks: Vec<std::sync::Arc<FrozenBlock>> = self.closed.iter().cloned().collect();
        for (key, blk) in open {
            let frozen = match &blk.frozen {
                Some(f) => f.clone(),
                None => {
                    let mut ids = blk.ids.clone();
                    ids.sort_unstable();
                    ids.dedup();
                    let head = block_header(blk);
                    let f =
                        std::sync::Arc::new(freeze(key, blk, head, blk.body.clone(), ids, true));
                    blk.frozen = Some(f.clone());
                    f
                }
            };
            blocks.push(frozen);
        }
        let mut out = vec![written];
        if !blocks.is_empty() {
            out.push(std::sync::Arc::new(BlockSegment::in_memory(
                &self.dir.join("unwritten"),
                blocks,
            )));
        }
        Ok(out)
    }

    /// What `searcher` sees of the block index, with the bodies of its blocks.
    fn written_segment(&self, searcher: tantivy::Searcher) -> Result<BlockSegment, BlockError> {
        let body_path = self.dir.join(BODY_FILE);
        let io = |source| BlockError::Io {
            path: body_path.clone(),
            source,
        };
        let file = std::fs::File::open(&body_path).map_err(io)?;
        // Taken after the index was read: the compression thread flushes a commit's bodies
        // before it commits, so the file is at least as long as they need.
        let len = file.metadata().map_err(io)?.len();
        let body = if len == 0 {
            OwnedBytes::empty()
        } else {
            // SAFETY: `body.dat` is this writer's own scratch file: it only grows (the map
            // covers what was flushed before the commit read) and is never truncated or
            // rewritten while a snapshot may read it; removing it leaves the mapping valid.
            let map =
                unsafe { memmap2::MmapOptions::new().len(len as usize).map(&file) }.map_err(io)?;
            OwnedBytes::new(map)
        };
        BlockSegment::assemble(
            &self.dir,
            searcher,
            body,
            OwnedBytes::new(self.filters.clone()),
            None,
            0,
            self.ddict.clone(),
        )
    }

    /// Closes every open block and completes the segment in its directory, without fsync
    /// (what is durable is the bundle made of it); returns its block index (open the segment
    /// with [`BlockSegment::open`]).
    pub fn finish(mut self) -> Result<Index, BlockError> {
        let mut open: Vec<(u64, OpenBlock)> = self.open.drain().collect();
        open.sort_by_key(|(_, b)| b.first_id);
        for (key, blk) in open {
            self.close(key, blk);
        }
        if !self.trained {
            self.train();
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BlockError::Io { path, source }
        };
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let dir = self.dir.clone();
        let dir = dir.as_path();
        let worker = self
            .worker
            .take()
            .ok_or_else(|| tantivy::TantivyError::InternalError("finished twice".into()))?;
        drop(worker.tx);
        let mut state = worker.thread.join().map_err(|_| BlockError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other("the block compression thread panicked"),
        })?;
        if let Some(e) = state.error() {
            return Err(e);
        }
        let Indexer::Done(writer) = std::mem::replace(&mut state.indexing, Indexer::Gone) else {
            return Err(BlockError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other(
                    "the block index thread did not hand its writer back",
                ),
            });
        };
        let mut writer = *writer;
        // Merges a hot writer started end first; none starts after this commit.
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        writer.commit()?;
        writer.wait_merging_threads()?;
        let ids = self.index.searchable_segment_ids()?;
        let keep = if self.hot { HOT_INDEX_SEGMENTS_KEPT } else { 1 };
        if ids.len() > keep {
            let mut merger: IndexWriter =
                self.index.writer_with_num_threads(1, BLOCK_INDEX_ARENA)?;
            merger.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
            merger.merge(&ids).wait()?;
            merger.wait_merging_threads()?;
        }
        let body_path = dir.join(BODY_FILE);
        state.body.flush().map_err(io(&body_path))?;
        self.segment_ids.sort_unstable();
        self.segment_ids.dedup();
        let segment_filter = bloom_bytes(&self.segment_ids, SEGMENT_BITS_PER_ID, SEGMENT_PROBES);
        let filters_path = dir.join(FILTERS_FILE);
        let mut f = std::fs::File::create(&filters_path).map_err(io(&filters_path))?;
        f.write_all(FILTERS_MAGIC)
            .and_then(|_| f.write_all(&BLOCKS_VERSION.to_le_bytes()))
            .and_then(|_| f.write_all(&(segment_filter.len() as u64).to_le_bytes()))
            .and_then(|_| f.write_all(&(self.dictionary.len() as u64).to_le_bytes()))
            .and_then(|_| f.write_all(&segment_filter))
            .and_then(|_| f.write_all(&self.dictionary))
            .and_then(|_| f.write_all(&self.filters))
            .map_err(io(&filters_path))?;
        // Not fsynced here: a seal bundles these files into the segment file, which is what
        // is fsynced and catalogued; the directory is scratch, removed after (or at the next
        // start, if the process dies first).
        Ok(self.index)
    }
}

/// A block's plain header: the sources its records name, the stream, then the records'
/// columns. The lines go in a frame of their own, so that a time range, a count or a severity
/// is answered from the (small) header alone.
fn block_header(blk: &OpenBlock) -> Vec<u8> {
    let (ts_col, ts_unit) = scaled_column(&blk.ts_deltas);
    let (recv_col, recv_unit) = scaled_column(&blk.recv_deltas);
    let columns = [
        &ts_col,
        &blk.id_col,
        &recv_col,
        &blk.meta_col,
        &blk.sev_col,
        &blk.len_col,
    ];
    let mut plain = Vec::with_capacity(columns.iter().map(|c| c.len()).sum::<usize>() + 64);
    put_varint(&mut plain, blk.sources.len() as u64);
    for src in &blk.sources {
        put_varint(&mut plain, src.len() as u64);
        plain.extend_from_slice(src.as_bytes());
    }
    for name in [&blk.host, &blk.app] {
        // Length + 1; 0 for none.
        match name {
            Some(n) => {
                put_varint(&mut plain, n.len() as u64 + 1);
                plain.extend_from_slice(n.as_bytes());
            }
            None => put_varint(&mut plain, 0),
        }
    }
    put_varint(&mut plain, u64::from(blk.records));
    put_varint(&mut plain, blk.base_id);
    plain.extend_from_slice(&blk.base_ts.to_le_bytes());
    plain.extend_from_slice(&blk.base_recv.to_le_bytes());
    plain.push(ts_unit);
    plain.push(recv_unit);
    for column in columns {
        plain.extend_from_slice(column);
    }
    // Last and optional: headers written before pattern ids end with the lengths, those
    // written before layout version 3 with the patterns.
    if blk.patterned || blk.spelled {
        plain.extend_from_slice(&blk.pattern_col);
    }
    if blk.spelled {
        plain.extend_from_slice(&blk.spelled_at_col);
        plain.extend_from_slice(&blk.spelled_style_col);
    }
    plain
}

/// How a snapshot reads block `blk` (of open-block key `key`) with its header and lines;
/// `ids` are its high-entropy tokens, sorted and distinct.
/// Without `words`, its words are left out (nothing will read them).
fn freeze(
    key: u64,
    blk: &OpenBlock,
    head: Vec<u8>,
    lines: Vec<u8>,
    ids: Vec<u64>,
    words: bool,
) -> FrozenBlock {
    let mut words: Vec<(u64, u32)> = if words {
        blk.seen.iter().map(|(h, slot)| (*h, slot.count)).collect()
    } else {
        Vec::new()
    };
    words.sort_unstable_by_key(|w| w.0);
    FrozenBlock {
        info: BlockInfo {
            ts_min: blk.ts_min,
            ts_max: blk.ts_max,
            first_id: blk.first_id,
            last_id: blk.last_id,
            records: blk.records,
            stream: key & STREAM_BITS,
            plain_len: lines.len(),
            header_plain: head.len(),
            header: 0..head.len(),
            body: 0..lines.len(),
            filter: 0..0,
        },
        head,
        lines,
        words,
        ids,
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
    // Column by column, each value a delta from the record before: arrival order keeps
    // receive times and ids close, a stream's timestamps mostly rise, and zstd finds the
    // repeats of a column far better than in headers interleaved with lines. Zigzag, as no
    // value need arrive in order.
    let (ts, id, recv) = blk.prev;
    blk.ts_deltas.push(rec.timestamp.wrapping_sub(ts));
    put_varint(&mut blk.id_col, zigzag(rec.id.wrapping_sub(id) as i64));
    blk.recv_deltas.push(rec.received_at.wrapping_sub(recv));
    blk.prev = (rec.timestamp, rec.id, rec.received_at);
    blk.meta_col.push(rec.format.code());
    put_varint(&mut blk.meta_col, source as u64);
    put_varint(&mut blk.len_col, rec.raw.len() as u64);
    put_varint(&mut blk.pattern_col, u64::from(rec.pattern));
    blk.patterned |= rec.pattern != 0;
    match crate::timetext::find(rec.raw, rec.timestamp) {
        Some(t) => {
            blk.body.extend_from_slice(&rec.raw[..t.at]);
            blk.body.extend_from_slice(&rec.raw[t.at + t.len..]);
            put_varint(&mut blk.spelled_at_col, t.at as u64);
            put_varint(&mut blk.spelled_style_col, t.style);
            blk.spelled = true;
        }
        None => {
            blk.body.extend_from_slice(rec.raw);
            put_varint(&mut blk.spelled_at_col, 0);
            put_varint(&mut blk.spelled_style_col, 0);
        }
    }
}

/// A column of time deltas as varints in the largest power of ten that divides them all (its
/// exponent is returned): timestamps written in ms or µs are ns counts ending in zeros, which
/// varints would otherwise spend two or three bytes on, per record.
fn scaled_column(deltas: &[i64]) -> (Vec<u8>, u8) {
    let mut exp = 0u8;
    let mut unit = 1i64;
    while exp < 18 && deltas.iter().all(|d| d % (unit * 10) == 0) {
        unit *= 10;
        exp += 1;
    }
    let mut out = Vec::with_capacity(deltas.len() * 2);
    for d in deltas {
        put_varint(&mut out, zigzag(d / unit));
    }
    (out, exp)
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
    // Most values of a header's columns (deltas, lengths of a few hundred bytes at most
    // twice) fit one byte.
    let first = *data.get(*at)?;
    if first < 0x80 {
        *at += 1;
        return Some(u64::from(first));
    }
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
    /// Severity code 0–7 as the record parses.
    pub severity: Option<u8>,
    pub source: usize,
    pub raw: std::ops::Range<usize>,
    /// Its pattern id; 0: none (or a block written before pattern ids).
    pub pattern: u32,
}

/// A block's records, decompressed; reused from block to block (with its zstd context). The
/// header (records' columns, the stream) and the lines are read apart: `data` holds the lines
/// only after [`BlockSegment::read_lines`].
#[derive(Default)]
pub struct DecodedBlock {
    pub sources: Vec<String>,
    /// The stream's host and app, as its records parse.
    pub host: Option<String>,
    pub app: Option<String>,
    pub records: Vec<RecordMeta>,
    pub data: Vec<u8>,
    head: Vec<u8>,
    /// Per record, where its line spelled its timestamp and the style (0: it did not);
    /// empty when no line of the block did. `data` holds the lines with it put back.
    spelled: Vec<(usize, u64)>,
    /// The lines as stored, without the timestamps (only for blocks with `spelled`).
    packed: Vec<u8>,
    /// The header's columns decoded, one after another; and the source names of blocks
    /// before, for their buffers. A query reads thousands of headers, and a dozen allocations
    /// for each were a fifth of reading one (perf of the phrase query).
    columns: Vec<u64>,
    spare_names: Vec<String>,
    /// Which block's header and lines the buffers hold: (segment, ordinal), the segment named
    /// by where its body is mapped, so that a buffer reused across segments is never stale.
    header_of: Option<(usize, usize)>,
    lines_of: Option<(usize, usize)>,
    dctx: Option<zstd::zstd_safe::DCtx<'static>>,
}

impl DecodedBlock {
    pub fn raw(&self, r: &RecordMeta) -> &[u8] {
        &self.data[r.raw.clone()]
    }
    pub fn source(&self, r: &RecordMeta) -> &str {
        self.sources.get(r.source).map_or("", String::as_str)
    }
}

/// An open block segment: the block index searcher, the bodies (mapped) and the filters; or
/// a hot tier's blocks not written yet.
pub struct BlockSegment {
    /// Where it was opened from, for messages.
    pub dir: PathBuf,
    pub schema: BlockSchema,
    parts: Parts,
    /// Per block: (ts_min, ts_max, records, body range, filter range), by block ordinal.
    pub blocks: Vec<BlockInfo>,
    /// The smallest and largest timestamps of its records (`None`: no records), for pruning
    /// without a pass over the blocks.
    pub time_range: Option<(i64, i64)>,
    /// Records in all its blocks: counted once, since index listings and progress polls ask
    /// for it over every block of every segment.
    records: u64,
    /// The probes of its block filters and how they map to bits (by layout version; a
    /// snapshot's are this build's).
    block_probes: u64,
    probe_map: ProbeMap,
}

/// Where a block segment's words, bodies and filters are.
enum Parts {
    Written {
        searcher: tantivy::Searcher,
        body: OwnedBytes,
        filters: OwnedBytes,
        /// Where the whole segment's filter lies in `filters`; `None` for a hot tier's
        /// snapshot, which has none (it could hold any id).
        segment_filter: Option<std::ops::Range<usize>>,
        /// The dictionary the bodies were compressed with, if any.
        ddict: SharedDict,
        /// The ordinal of the first block of each index segment, in the searcher's order (a
        /// sealed segment's index has one; a hot tier's snapshot several).
        bases: Vec<usize>,
    },
    /// A hot tier's blocks that its block index does not hold yet, plain, by ordinal.
    Memory(Vec<std::sync::Arc<FrozenBlock>>),
}

#[derive(Debug, Clone)]
pub struct BlockInfo {
    pub ts_min: i64,
    pub ts_max: i64,
    pub first_id: u64,
    pub last_id: u64,
    pub records: u32,
    pub stream: u64,
    plain_len: usize,
    header_plain: usize,
    /// The header frame, then the lines frame.
    header: std::ops::Range<usize>,
    body: std::ops::Range<usize>,
    filter: std::ops::Range<usize>,
}

impl BlockSegment {
    /// Opens the block segment in the directory `dir`.
    pub fn open(dir: &Path) -> Result<BlockSegment, BlockError> {
        let directory =
            tantivy::directory::MmapDirectory::open(dir).map_err(|e| BlockError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?;
        Self::open_in(directory, dir)
    }

    /// Opens the block segment whose files `directory` holds (a directory, or a sealed
    /// segment's bundle); `label` names it in errors.
    pub fn open_in<D: Directory>(directory: D, label: &Path) -> Result<BlockSegment, BlockError> {
        let dir = label;
        let damaged = |why: String| BlockError::Damaged {
            path: dir.to_path_buf(),
            why,
        };
        let read = |name: &str| -> Result<OwnedBytes, BlockError> {
            let io = |source| BlockError::Io {
                path: dir.join(name),
                source,
            };
            directory
                .open_read(Path::new(name))
                .map_err(|e| io(std::io::Error::other(e.to_string())))?
                .read_bytes()
                .map_err(io)
        };
        let body = read(BODY_FILE)?;
        let filters = read(FILTERS_FILE)?;
        let index = Index::open(directory)?;
        register_words_tokenizer(&index);
        let reader: tantivy::IndexReader = index
            .reader_builder()
            .reload_policy(tantivy::ReloadPolicy::Manual)
            .try_into()?;
        let searcher = reader.searcher();
        if filters.len() < HEADER || &filters[..8] != FILTERS_MAGIC {
            return Err(damaged("filters.dat does not start with its magic".into()));
        }
        let version = u32::from_le_bytes(filters[8..12].try_into().unwrap_or_default());
        let probes = block_probes(version).ok_or_else(|| {
            damaged(format!(
                "block layout version {version}, this build reads 1 to {BLOCKS_VERSION}"
            ))
        })?;
        if version < 5 && searcher.segment_readers().len() > 1 {
            return Err(damaged(format!(
                "the block index has more than one segment (layout version {version})"
            )));
        }
        let len_at = |at: usize| {
            u64::from_le_bytes(filters[at..at + 8].try_into().unwrap_or_default()) as usize
        };
        let (seg_len, dict_len) = (len_at(12), len_at(20));
        let dict_at = HEADER
            .checked_add(seg_len)
            .filter(|end| *end <= filters.len())
            .ok_or_else(|| damaged("segment filter runs past the file".into()))?;
        let base = dict_at
            .checked_add(dict_len)
            .filter(|end| *end <= filters.len())
            .ok_or_else(|| damaged("dictionary runs past the file".into()))?;
        let ddict = digest(&filters[dict_at..base]).map_err(damaged)?;
        let mut segment = Self::assemble(
            dir,
            searcher,
            body,
            filters.clone(),
            Some(HEADER..dict_at),
            base,
            ddict,
        )?;
        segment.block_probes = probes;
        segment.probe_map = ProbeMap::of(version);
        Ok(segment)
    }

    /// A block segment of parts already at hand: `filters` holds the block filters from
    /// `filter_base` on, and the segment's filter at `segment_filter` if it has one.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        dir: &Path,
        searcher: tantivy::Searcher,
        body: OwnedBytes,
        filters: OwnedBytes,
        segment_filter: Option<std::ops::Range<usize>>,
        filter_base: usize,
        ddict: SharedDict,
    ) -> Result<BlockSegment, BlockError> {
        let damaged = |why: String| BlockError::Damaged {
            path: dir.to_path_buf(),
            why,
        };
        let base = filter_base;
        let mut blocks = Vec::new();
        let mut bases = Vec::new();
        for seg in searcher.segment_readers() {
            bases.push(blocks.len());
            let ff = seg.fast_fields();
            let col_i = |name: &str| ff.i64(name);
            let col_u = |name: &str| ff.u64(name);
            let (ts_min, ts_max) = (col_i("ts_min")?, col_i("ts_max")?);
            let (first_id, last_id) = (col_u("first_id")?, col_u("last_id")?);
            let (records, stream) = (col_u("records")?, col_u("stream")?);
            let (bo, bl) = (col_u("body_offset")?, col_u("body_len")?);
            let plain_len = col_u("plain_len")?;
            let (hl, hp) = (col_u("header_len")?, col_u("header_plain_len")?);
            let (fo, fl) = (col_u("filter_offset")?, col_u("filter_len")?);
            for doc in 0..seg.max_doc() {
                let get_u = |c: &tantivy::columnar::Column<u64>| c.first(doc).unwrap_or(0);
                let get_i = |c: &tantivy::columnar::Column<i64>| c.first(doc).unwrap_or(0);
                let start = get_u(&bo) as usize;
                let head_end = start.saturating_add(get_u(&hl) as usize);
                let body = head_end..start.saturating_add(get_u(&bl) as usize);
                let filter = base + get_u(&fo) as usize..base + (get_u(&fo) + get_u(&fl)) as usize;
                blocks.push(BlockInfo {
                    ts_min: get_i(&ts_min),
                    ts_max: get_i(&ts_max),
                    first_id: get_u(&first_id),
                    last_id: get_u(&last_id),
                    records: get_u(&records) as u32,
                    stream: get_u(&stream),
                    plain_len: get_u(&plain_len) as usize,
                    header_plain: get_u(&hp) as usize,
                    header: start..head_end,
                    body,
                    filter,
                });
            }
        }
        for (ord, b) in blocks.iter().enumerate() {
            if b.body.end > body.len()
                || b.body.start < b.header.end
                || b.filter.end > filters.len()
                || b.plain_len > MAX_PLAIN
                || b.header_plain > MAX_PLAIN
            {
                return Err(damaged(format!("block {ord} points past its files")));
            }
        }
        Ok(BlockSegment {
            time_range: time_range_of(&blocks),
            records: blocks.iter().map(|b| u64::from(b.records)).sum(),
            block_probes: BLOCK_PROBES,
            probe_map: ProbeMap::of(BLOCKS_VERSION),
            dir: dir.to_path_buf(),
            schema: BlockSchema::new(),
            parts: Parts::Written {
                searcher,
                body,
                filters,
                segment_filter,
                ddict,
                bases,
            },
            blocks,
        })
    }

    /// A segment of a hot tier's blocks not written yet (see [`BlockWriter::snapshot`]).
    fn in_memory(dir: &Path, frozen: Vec<std::sync::Arc<FrozenBlock>>) -> BlockSegment {
        let blocks: Vec<BlockInfo> = frozen.iter().map(|b| b.info.clone()).collect();
        BlockSegment {
            time_range: time_range_of(&blocks),
            records: blocks.iter().map(|b| u64::from(b.records)).sum(),
            block_probes: BLOCK_PROBES,
            probe_map: ProbeMap::of(BLOCKS_VERSION),
            dir: dir.to_path_buf(),
            schema: BlockSchema::new(),
            parts: Parts::Memory(frozen),
            blocks,
        }
    }

    /// The block index, for a written segment.
    pub fn searcher(&self) -> Option<&tantivy::Searcher> {
        match &self.parts {
            Parts::Written { searcher, .. } => Some(searcher),
            Parts::Memory(_) => None,
        }
    }

    /// Per block ordinal, the number of its records holding `word` (as the block index
    /// spells it).
    pub fn word_freqs(&self, word: &str) -> Result<Vec<u32>, BlockError> {
        let mut out = vec![0u32; self.blocks.len()];
        match &self.parts {
            Parts::Written { searcher, .. } => {
                // Segments of layout versions before 4 have no `most` field, before 5 no
                // `high`. The high digit is added before `most`'s complement is taken.
                let schema = searcher.schema();
                let has = |name| schema.get_field(name).is_ok();
                let mut from_most = vec![false; self.blocks.len()];
                let fields = [
                    (self.schema.words, Digit::Low),
                    (self.schema.most, Digit::LowOfMost),
                    (self.schema.high, Digit::High),
                ];
                let present = [true, has("most"), has("high")];
                for (field, digit) in fields
                    .into_iter()
                    .zip(present)
                    .filter_map(|(f, p)| p.then_some(f))
                {
                    let term = tantivy::Term::from_field_text(field, word);
                    for (seg_ord, reader) in searcher.segment_readers().iter().enumerate() {
                        let inverted = reader.inverted_index(field)?;
                        let Some(mut postings) = inverted
                            .read_postings(&term, IndexRecordOption::WithFreqs)
                            .map_err(|e| BlockError::from(tantivy::TantivyError::from(e)))?
                        else {
                            continue;
                        };
                        use tantivy::postings::Postings as _;
                        use tantivy::DocSet as _;
                        let mut doc = postings.doc();
                        while doc != tantivy::TERMINATED {
                            let ord = self.ordinal(seg_ord, doc);
                            if let Some(slot) = out.get_mut(ord) {
                                let freq = postings.term_freq();
                                match digit {
                                    Digit::Low => *slot += freq,
                                    Digit::LowOfMost => {
                                        *slot += freq;
                                        from_most[ord] = true;
                                    }
                                    Digit::High => *slot += COUNT_BASE * freq,
                                }
                            }
                            doc = postings.advance();
                        }
                    }
                }
                for ((slot, b), most) in out.iter_mut().zip(&self.blocks).zip(from_most) {
                    if most {
                        *slot = count_from_most(*slot, b.records);
                    }
                }
            }
            Parts::Memory(frozen) => {
                let h = hash_word(word.as_bytes());
                for (slot, b) in out.iter_mut().zip(frozen) {
                    if let Ok(i) = b.words.binary_search_by_key(&h, |w| w.0) {
                        *slot = b.words[i].1;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The block ordinal of document `doc` of the block index's segment `segment_ord` (as the
    /// searcher orders its segment readers).
    pub fn ordinal(&self, segment_ord: usize, doc: tantivy::DocId) -> usize {
        let base = match &self.parts {
            Parts::Written { bases, .. } => bases.get(segment_ord).copied().unwrap_or(0),
            Parts::Memory(_) => 0,
        };
        base + doc as usize
    }

    pub fn num_records(&self) -> u64 {
        self.records
    }

    /// Whether any record of the segment may hold the high-entropy token hashed as `hash`.
    pub fn may_hold_id(&self, hash: u64) -> bool {
        match &self.parts {
            Parts::Written {
                filters,
                segment_filter,
                ..
            } => segment_filter.as_ref().is_none_or(|at| {
                Bloom {
                    words: &filters[at.clone()],
                    probes: SEGMENT_PROBES,
                    map: self.probe_map,
                }
                .may_hold(hash)
            }),
            Parts::Memory(frozen) => frozen.iter().any(|b| b.ids.binary_search(&hash).is_ok()),
        }
    }

    /// Whether block `ord` may hold the high-entropy token hashed as `hash`.
    pub fn block_may_hold_id(&self, ord: usize, hash: u64) -> bool {
        match &self.parts {
            Parts::Written { filters, .. } => self.blocks.get(ord).is_some_and(|b| {
                Bloom {
                    words: &filters[b.filter.clone()],
                    probes: self.block_probes,
                    map: self.probe_map,
                }
                .may_hold(hash)
            }),
            Parts::Memory(frozen) => frozen
                .get(ord)
                .is_some_and(|b| b.ids.binary_search(&hash).is_ok()),
        }
    }

    /// Decompresses block `ord` into `out`, header and lines (reusing its buffers).
    pub fn read_block(&self, ord: usize, out: &mut DecodedBlock) -> Result<(), BlockError> {
        self.read_header(ord, out)?;
        self.read_lines(ord, out)
    }

    /// Names this segment while it is open (see [`DecodedBlock`]).
    fn key(&self) -> usize {
        match &self.parts {
            Parts::Written { body, .. } => body.as_ptr() as usize,
            Parts::Memory(frozen) => frozen.as_ptr() as usize,
        }
    }

    fn damaged(&self, ord: usize, why: String) -> BlockError {
        BlockError::Damaged {
            path: self.dir.join(BODY_FILE),
            why: format!("block {ord}: {why}"),
        }
    }

    fn info(&self, ord: usize) -> Result<&BlockInfo, BlockError> {
        self.blocks
            .get(ord)
            .ok_or_else(|| self.damaged(ord, "no such block".into()))
    }

    /// Decompresses block `ord`'s header (or its lines) into `into`.
    fn inflate(
        &self,
        ord: usize,
        header: bool,
        into: &mut Vec<u8>,
        dctx: &mut Option<zstd::zstd_safe::DCtx<'static>>,
    ) -> Result<(), BlockError> {
        let info = self.info(ord)?;
        let (range, plain_len) = if header {
            (info.header.clone(), info.header_plain)
        } else {
            (info.body.clone(), info.plain_len)
        };
        into.clear();
        let (body, ddict) = match &self.parts {
            Parts::Written { body, ddict, .. } => (body, ddict),
            Parts::Memory(frozen) => {
                let block = frozen
                    .get(ord)
                    .ok_or_else(|| self.damaged(ord, "no such block".into()))?;
                into.extend_from_slice(if header { &block.head } else { &block.lines });
                return Ok(());
            }
        };
        let frame = &body[range];
        into.reserve(plain_len);
        let dctx = dctx.get_or_insert_with(zstd::zstd_safe::DCtx::create);
        let done = match ddict {
            Some(ddict) => dctx.decompress_using_ddict(into, frame, ddict.as_ref()),
            None => dctx.decompress(into, frame),
        };
        match done {
            Ok(n) if n == plain_len => Ok(()),
            Ok(n) => {
                Err(self.damaged(ord, format!("{n} bytes decompressed, {plain_len} expected")))
            }
            Err(code) => Err(self.damaged(
                ord,
                format!("zstd: {}", zstd::zstd_safe::get_error_name(code)),
            )),
        }
    }

    /// Decompresses block `ord`'s lines into `out`, whose header must be that block's.
    pub fn read_lines(&self, ord: usize, out: &mut DecodedBlock) -> Result<(), BlockError> {
        let key = Some((self.key(), ord));
        if out.header_of != key {
            self.read_header(ord, out)?;
        }
        if out.lines_of == key {
            return Ok(());
        }
        out.lines_of = None;
        if out.spelled.is_empty() {
            self.inflate(ord, false, &mut out.data, &mut out.dctx)?;
        } else {
            let mut packed = std::mem::take(&mut out.packed);
            let inflated = self.inflate(ord, false, &mut packed, &mut out.dctx);
            let spelled = inflated.and_then(|()| self.spell_out(ord, &packed, out, None));
            out.packed = packed;
            spelled?;
        }
        let end = out.records.last().map_or(0, |r| r.raw.end);
        if end != out.data.len() {
            return Err(self.damaged(
                ord,
                format!("{} bytes of lines, the header says {end}", out.data.len()),
            ));
        }
        out.lines_of = key;
        Ok(())
    }

    /// Decompresses block `ord`'s lines into `out` (whose header must be that block's) like
    /// [`Self::read_lines`], but puts back the timestamps their lines spelled (see
    /// `timetext`) only in the records that `keep` keeps, and leaves the other records'
    /// bytes in `out.data` unspecified. `keep` is called once per record, in order, with the
    /// block's lines as stored (without such timestamps) and the record's range in them. For a
    /// search that skips most records of the blocks it reads, and whose words cannot be in a
    /// spelled timestamp (`word_may_be_in_spelling`), so that the stored line can decide.
    pub fn read_lines_where(
        &self,
        ord: usize,
        out: &mut DecodedBlock,
        mut keep: impl FnMut(&[u8], std::ops::Range<usize>) -> bool,
    ) -> Result<(), BlockError> {
        let key = Some((self.key(), ord));
        if out.header_of != key {
            self.read_header(ord, out)?;
        }
        if out.lines_of == key || out.spelled.is_empty() {
            self.read_lines(ord, out)?;
            for r in &out.records {
                keep(&out.data, r.raw.clone());
            }
            return Ok(());
        }
        out.lines_of = None;
        let mut packed = std::mem::take(&mut out.packed);
        let inflated = self.inflate(ord, false, &mut packed, &mut out.dctx);
        let spelled = inflated.and_then(|()| self.spell_out(ord, &packed, out, Some(&mut keep)));
        out.packed = packed;
        spelled
    }

    /// Puts each record's timestamp back into its line: `packed` (the lines as stored) into
    /// `out.data`; with `keep`, only in the lines it keeps (see [`Self::read_lines_where`]).
    fn spell_out(
        &self,
        ord: usize,
        packed: &[u8],
        out: &mut DecodedBlock,
        mut keep: Option<&mut KeepLine<'_>>,
    ) -> Result<(), BlockError> {
        let end = out.records.last().map_or(0, |r| r.raw.end);
        if keep.is_some() {
            // Only kept lines are written, each in its place: what the others hold does not
            // matter, so a buffer left longer by the block before is not cleared.
            if out.data.len() < end {
                out.data.resize(end, 0);
            }
            out.data.truncate(end);
        } else {
            out.data.clear();
            out.data.reserve(end);
        }
        let mut p = 0usize;
        let short = || self.damaged(ord, format!("{} bytes of lines are too few", packed.len()));
        for (rec, &(at, style)) in out.records.iter().zip(&out.spelled) {
            let len = rec.raw.len();
            // parse_header checked that the style renders and fits in the line.
            let kept = match style {
                0 => len,
                _ => len - crate::timetext::rendered_len(style).unwrap_or(0),
            };
            let range = p..p + kept;
            let line = packed.get(range.clone()).ok_or_else(short)?;
            p += kept;
            if let Some(keep) = keep.as_mut() {
                if !keep(packed, range) {
                    continue;
                }
            }
            if style == 0 {
                match keep {
                    Some(_) => out.data[rec.raw.clone()].copy_from_slice(line),
                    None => out.data.extend_from_slice(line),
                }
                continue;
            }
            let spelling = crate::timetext::spell(rec.timestamp, style).ok_or_else(|| {
                self.damaged(
                    ord,
                    format!(
                        "record {}: its time cannot be spelled in style {style}",
                        rec.id
                    ),
                )
            })?;
            let spelling = spelling.as_bytes();
            if spelling.len() != len - kept {
                return Err(self.damaged(
                    ord,
                    format!(
                        "record {}: its time spelled in {} bytes, not {}",
                        rec.id,
                        spelling.len(),
                        len - kept
                    ),
                ));
            }
            let at = at.min(kept);
            let parts = [&line[..at], spelling, &line[at..]];
            match keep {
                Some(_) => {
                    let mut to = rec.raw.start;
                    for part in parts {
                        out.data[to..to + part.len()].copy_from_slice(part);
                        to += part.len();
                    }
                }
                None => {
                    for part in parts {
                        out.data.extend_from_slice(part);
                    }
                }
            }
        }
        if p != packed.len() {
            return Err(self.damaged(
                ord,
                format!("{} bytes of lines, the header says {p}", packed.len()),
            ));
        }
        Ok(())
    }

    /// Decompresses block `ord`'s header into `out`: its records' ids, times, formats,
    /// severities and sources, and the stream, without the lines.
    pub fn read_header(&self, ord: usize, out: &mut DecodedBlock) -> Result<(), BlockError> {
        let key = Some((self.key(), ord));
        if out.header_of == key {
            return Ok(());
        }
        out.header_of = None;
        out.lines_of = None;
        out.records.clear();
        let names = std::mem::take(&mut out.sources);
        out.spare_names.extend(names);
        out.spelled.clear();
        let mut head = std::mem::take(&mut out.head);
        let inflated = self.inflate(ord, true, &mut head, &mut out.dctx);
        let parsed = inflated.and_then(|()| self.parse_header(ord, &head, out));
        out.head = head;
        parsed?;
        out.header_of = key;
        Ok(())
    }

    fn parse_header(
        &self,
        ord: usize,
        data: &[u8],
        out: &mut DecodedBlock,
    ) -> Result<(), BlockError> {
        let damaged = |why: String| self.damaged(ord, why);
        let mut at = 0usize;
        let short = || damaged("truncated".into());
        // A name into a buffer of an earlier block's (invalid UTF-8 replaced, as stored text
        // is shown).
        fn named(spare: &mut Vec<String>, bytes: &[u8]) -> String {
            let mut name = spare.pop().unwrap_or_default();
            name.clear();
            name.push_str(&String::from_utf8_lossy(bytes));
            name
        }
        let n_sources = get_varint(data, &mut at).ok_or_else(short)?;
        for _ in 0..n_sources {
            let len = get_varint(data, &mut at).ok_or_else(short)? as usize;
            let s = data.get(at..at.saturating_add(len)).ok_or_else(short)?;
            let name = named(&mut out.spare_names, s);
            out.sources.push(name);
            at += len;
        }
        let name = |at: &mut usize,
                    slot: &mut Option<String>,
                    spare: &mut Vec<String>|
         -> Result<(), BlockError> {
            if let Some(old) = slot.take() {
                spare.push(old);
            }
            match get_varint(data, at).ok_or_else(short)? as usize {
                0 => {}
                n => {
                    let s = data.get(*at..at.saturating_add(n - 1)).ok_or_else(short)?;
                    *at += n - 1;
                    *slot = Some(named(spare, s));
                }
            }
            Ok(())
        };
        name(&mut at, &mut out.host, &mut out.spare_names)?;
        name(&mut at, &mut out.app, &mut out.spare_names)?;
        let n = get_varint(data, &mut at).ok_or_else(short)? as usize;
        if n > 1 << 20 {
            return Err(damaged(format!("{n} records")));
        }
        let base_id = get_varint(data, &mut at).ok_or_else(short)?;
        let mut fixed = || -> Result<i64, BlockError> {
            let v = data
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(i64::from_le_bytes)
                .ok_or_else(short)?;
            at += 8;
            Ok(v)
        };
        let (base_ts, base_recv) = (fixed()?, fixed()?);
        let unit = |at: &mut usize| -> Result<i64, BlockError> {
            let exp = *data.get(*at).ok_or_else(short)?;
            *at += 1;
            10i64
                .checked_pow(u32::from(exp))
                .ok_or_else(|| damaged(format!("time unit 10^{exp}")))
        };
        let ts_unit = unit(&mut at)?;
        let recv_unit = unit(&mut at)?;
        let mut cols = std::mem::take(&mut out.columns);
        cols.clear();
        let column = |at: &mut usize, cols: &mut Vec<u64>| -> Result<usize, BlockError> {
            let start = cols.len();
            cols.reserve(n);
            for _ in 0..n {
                cols.push(get_varint(data, at).ok_or_else(short)?);
            }
            Ok(start)
        };
        let decoded = (|| -> Result<(), BlockError> {
            let ts = column(&mut at, &mut cols)?;
            let ids = column(&mut at, &mut cols)?;
            let recvs = column(&mut at, &mut cols)?;
            // Each record's format code and source number, in pairs as stored.
            let meta = cols.len();
            for _ in 0..n {
                let code = *data.get(at).ok_or_else(short)?;
                at += 1;
                cols.push(u64::from(code));
                cols.push(get_varint(data, &mut at).ok_or_else(short)?);
            }
            let sevs = data.get(at..at + n).ok_or_else(short)?;
            at += n;
            let lens = column(&mut at, &mut cols)?;
            let patterns = if at < data.len() {
                Some(column(&mut at, &mut cols)?)
            } else {
                None
            };
            let spelled = if at < data.len() {
                Some((column(&mut at, &mut cols)?, column(&mut at, &mut cols)?))
            } else {
                None
            };
            let (mut t, mut i, mut r) = (base_ts, base_id, base_recv);
            let mut end = 0usize;
            for k in 0..n {
                t = t.wrapping_add(unzigzag(cols[ts + k]).wrapping_mul(ts_unit));
                i = i.wrapping_add(unzigzag(cols[ids + k]) as u64);
                r = r.wrapping_add(unzigzag(cols[recvs + k]).wrapping_mul(recv_unit));
                let len = cols[lens + k];
                let start = end;
                end = start
                    .checked_add(len as usize)
                    .filter(|e| *e <= MAX_PLAIN)
                    .ok_or_else(short)?;
                if let Some((at_col, style_col)) = spelled {
                    let (spelled_at, style) = (cols[at_col + k], cols[style_col + k]);
                    let fits = style == 0
                        || crate::timetext::rendered_len(style)
                            .and_then(|n| (len as usize).checked_sub(n))
                            .is_some_and(|kept| spelled_at as usize <= kept);
                    if !fits {
                        return Err(damaged(format!(
                            "record {k}: timestamp style {style} at {spelled_at} does not fit its line"
                        )));
                    }
                    out.spelled.push((spelled_at as usize, style));
                }
                out.records.push(RecordMeta {
                    id: i,
                    timestamp: t,
                    received_at: r,
                    format: Format::from_code(cols[meta + 2 * k] as u8)
                        .ok_or_else(|| damaged("unknown record format".into()))?,
                    severity: (sevs[k] < NO_SEVERITY).then_some(sevs[k]),
                    source: cols[meta + 2 * k + 1] as usize,
                    raw: start..end,
                    pattern: patterns.map_or(0, |p| cols[p + k].min(u64::from(u32::MAX)) as u32),
                });
            }
            Ok(())
        })();
        out.columns = cols;
        decoded
    }

    /// Bytes of the blocks' frames: (headers compressed, headers plain, lines compressed,
    /// lines plain as stored).
    pub fn frame_bytes(&self) -> (u64, u64, u64, u64) {
        self.blocks
            .iter()
            .fold((0, 0, 0, 0), |(hz, hp, lz, lp), b| {
                (
                    hz + b.header.len() as u64,
                    hp + b.header_plain as u64,
                    lz + b.body.len() as u64,
                    lp + b.plain_len as u64,
                )
            })
    }

    /// Bytes of each part: (index, body, filters).
    pub fn sizes(&self) -> (u64, u64, u64) {
        match &self.parts {
            Parts::Written {
                searcher,
                body,
                filters,
                ..
            } => (
                searcher.space_usage().map_or(0, |u| u.total().get_bytes()),
                body.len() as u64,
                filters.len() as u64,
            ),
            Parts::Memory(frozen) => (
                0,
                frozen
                    .iter()
                    .map(|b| (b.head.len() + b.lines.len()) as u64)
                    .sum(),
                0,
            ),
        }
    }
}

/// The smallest and largest timestamps of `blocks` (`None`: no blocks).
fn time_range_of(blocks: &[BlockInfo]) -> Option<(i64, i64)> {
    blocks.iter().fold(None, |acc: Option<(i64, i64)>, b| {
        Some(acc.map_or((b.ts_min, b.ts_max), |(lo, hi)| {
            (lo.min(b.ts_min), hi.max(b.ts_max))
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_count_of_a_word_in_a_block_reads_back_and_costs_few_yields() {
        for records in 1..=300u32 {
            for count in 1..=records {
                let (got, n) = match word_field(count, records) {
                    WordField::Words(n) => (n, n),
                    WordField::Most(n) => (count_from_most(n, records), n),
                };
                assert_eq!(got, count, "{count} of {records}");
                assert!(n >= 1 && n <= records / 2 + 1, "{count} of {records}");
                let (low, high) = split_count(n);
                assert_eq!(low + COUNT_BASE * high, n, "{n}");
                assert!((1..=COUNT_BASE).contains(&low), "{n}");
                // Two digits for the default block size: a word costs at most 16 yields.
                if records <= BLOCK_RECORDS as u32 {
                    assert!(low + high <= 2 * COUNT_BASE, "{count} of {records}");
                }
            }
        }
    }

    /// Block filters keep their design's false positives for ids like the corpus's (FNV
    /// hashes of hex strings, which version 1's probing let cluster), at every filter size.
    #[test]
    fn block_filters_keep_their_false_positive_rate_for_hex_ids() {
        let mut x: u64 = 42;
        let mut next_id = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            hash_word(format!("{:016x}", x >> 1).as_bytes())
        };
        for n in [1usize, 3, 17, 64, 128, 400] {
            let ids: Vec<u64> = (0..n).map(|_| next_id()).collect();
            let bytes = bloom_bytes(&ids, BLOCK_BITS_PER_ID, BLOCK_PROBES);
            let filter = Bloom {
                words: &bytes,
                probes: BLOCK_PROBES,
                map: ProbeMap::of(BLOCKS_VERSION),
            };
            assert!(
                ids.iter().all(|h| filter.may_hold(*h)),
                "no false negatives"
            );
            let tries = 200_000;
            let false_hits = (0..tries).filter(|_| filter.may_hold(next_id())).count();
            let bits = (bytes.len() * 8) as f64;
            let k = BLOCK_PROBES as f64;
            let expected = (1.0 - (-k * n as f64 / bits).exp()).powf(k);
            let rate = false_hits as f64 / tries as f64;
            assert!(
                rate <= 3.0 * expected + 5.0 / tries as f64,
                "{n} ids: {rate} false positives, {expected} expected"
            );
        }
    }

    /// Record `i` of [`segment`]: its line spells its timestamp, except every fifth, whose
    /// timestamp is a millisecond off (so the line is kept whole).
    fn segment_line(i: u64) -> String {
        format!(
            "<13>1 2026-12-02T12:00:{:02}.{:03}Z host{} app - - - request {i:08} done",
            i % 60,
            i % 7,
            i % 3
        )
    }

    fn segment(dir: &Path) -> BlockSegment {
        let opts = logsift_parse::ParseOptions::default();
        // Several block index segments, merged into one at the end.
        let mut writer = BlockWriter::committing_every(dir, 3, false, 2).unwrap();
        for i in 0..900u64 {
            let raw = segment_line(i);
            let record = logsift_parse::parse(Format::Syslog, raw.as_bytes(), &opts);
            writer.add(
                &BlockRecord {
                    id: 1000 + i,
                    timestamp: record.timestamp.unwrap_or(0)
                        + 1_000_000 * i64::from(i.is_multiple_of(5)),
                    received_at: 7,
                    format: Format::Syslog,
                    source: if i % 2 == 0 { "tcp a" } else { "tcp b" },
                    raw: raw.as_bytes(),
                    pattern: 0,
                },
                &record,
            );
        }
        writer.finish().unwrap();
        BlockSegment::open(dir).unwrap()
    }

    #[test]
    fn a_dictionary_trained_for_one_segment_compresses_the_next_from_its_first_block() {
        let opts = logsift_parse::ParseOptions::default();
        let write = |dir: &Path, dictionary: Option<Vec<u8>>| -> Vec<u8> {
            // Trained on the first 200 KB of blocks (of about 450 KB).
            let mut writer = BlockWriter::new(dir, 3)
                .unwrap()
                .with_dictionary(200 << 10, 16 << 10);
            if let Some(d) = dictionary {
                writer = writer.with_trained_dictionary(d);
                assert!(!writer.dictionary().is_empty(), "decided at once");
            }
            let mut trained = Vec::new();
            for i in 0..6000u64 {
                let raw = segment_line(i);
                let record = logsift_parse::parse(Format::Syslog, raw.as_bytes(), &opts);
                let rec = BlockRecord {
                    id: 1000 + i,
                    timestamp: record.timestamp.unwrap_or(0),
                    received_at: 7,
                    format: Format::Syslog,
                    source: "tcp a",
                    raw: raw.as_bytes(),
                    pattern: 0,
                };
                writer.add(&rec, &record);
                if trained.is_empty() {
                    trained = writer.dictionary().to_vec();
                }
            }
            writer.finish().unwrap();
            trained
        };
        let dir = tempfile::tempdir().unwrap();
        let trained = write(&dir.path().join("a"), None);
        assert!(!trained.is_empty(), "the first segment trains a dictionary");
        let reused = write(&dir.path().join("b"), Some(trained.clone()));
        assert_eq!(reused, trained);
        let filters = std::fs::read(dir.path().join("b").join(FILTERS_FILE)).unwrap();
        let dict_len = u64::from_le_bytes(filters[20..28].try_into().unwrap()) as usize;
        assert_eq!(
            dict_len,
            trained.len(),
            "the segment carries the dictionary it used"
        );
        let seg = BlockSegment::open(&dir.path().join("b")).unwrap();
        let mut block = DecodedBlock::default();
        let mut n = 0;
        for ord in 0..seg.blocks.len() {
            seg.read_block(ord, &mut block).unwrap();
            for r in &block.records {
                assert_eq!(block.raw(r), segment_line(r.id - 1000).as_bytes());
                n += 1;
            }
        }
        assert_eq!(n, 6000);
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
                assert_eq!(raw, segment_line(i));
                assert_eq!(block.source(r), if i % 2 == 0 { "tcp a" } else { "tcp b" });
                assert_eq!(r.received_at, 7);
                assert!(r.timestamp >= seg.blocks[ord].ts_min);
                assert!(r.timestamp <= seg.blocks[ord].ts_max);
                ids.push(r.id);
            }
        }
        ids.sort_unstable();
        assert_eq!(ids, (1000..1900).collect::<Vec<_>>());
        // The lines are stored without the 24 bytes of the timestamps they spell.
        let stored: usize = seg.blocks.iter().map(|b| b.plain_len).sum();
        let raw: usize = (0..900).map(|i| segment_line(i).len()).sum();
        assert_eq!(stored, raw - 720 * 24);
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

    /// Each record's format, source, severity and pattern read back from its block's header,
    /// with headers of different shapes read one after another into one buffer.
    #[test]
    fn every_column_of_a_header_comes_back_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let opts = logsift_parse::ParseOptions::default();
        let formats = [Format::Syslog, Format::Auto, Format::Json];
        let sources = ["udp x", "tcp a", "http 127.0.0.1:9"];
        let mut writer = BlockWriter::new(dir.path(), 3).unwrap();
        let mut written = std::collections::HashMap::new();
        for i in 0..700u64 {
            // Three streams; the third has one source only.
            let raw = segment_line(i);
            let record = logsift_parse::parse(Format::Syslog, raw.as_bytes(), &opts);
            let (format, source) = match i % 3 {
                2 => (Format::Syslog, sources[0]),
                _ => (formats[(i / 3 % 3) as usize], sources[(i / 7 % 3) as usize]),
            };
            let pattern = (i % 5) as u32 * 1000;
            writer.add(
                &BlockRecord {
                    id: 1000 + i,
                    timestamp: record.timestamp.unwrap_or(0),
                    received_at: 7 + i as i64 * 300,
                    format,
                    source,
                    raw: raw.as_bytes(),
                    pattern,
                },
                &record,
            );
            written.insert(1000 + i, (format, source, pattern, record.severity));
        }
        writer.finish().unwrap();
        let seg = BlockSegment::open(dir.path()).unwrap();
        let mut block = DecodedBlock::default();
        let mut seen = 0;
        for ord in (0..seg.blocks.len()).rev().chain(0..seg.blocks.len()) {
            seg.read_block(ord, &mut block).unwrap();
            for r in &block.records {
                let (format, source, pattern, severity) = written[&r.id];
                assert_eq!(r.format, format, "record {}", r.id);
                assert_eq!(block.source(r), source, "record {}", r.id);
                assert_eq!(r.pattern, pattern, "record {}", r.id);
                assert_eq!(r.severity, severity.map(|s| s.code()), "record {}", r.id);
                assert_eq!(r.received_at, 7 + (r.id - 1000) as i64 * 300);
                assert_eq!(block.raw(r), segment_line(r.id - 1000).as_bytes());
                seen += 1;
            }
        }
        assert_eq!(seen, 1400);
    }

    /// The ids a set of segments holds, sorted, each read from its block.
    fn ids_in<S: std::ops::Deref<Target = BlockSegment>>(segments: &[S]) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut block = DecodedBlock::default();
        for seg in segments {
            for ord in 0..seg.blocks.len() {
                seg.read_block(ord, &mut block).unwrap();
                ids.extend(block.records.iter().map(|r| r.id));
            }
        }
        ids.sort_unstable();
        ids
    }

    /// A hot tier's writer: every snapshot holds exactly the records added so far (closed
    /// blocks from its files, open ones in memory), the writer going on after each; the
    /// segment it then finishes holds them all, and its dictionary serves the next writer.
    #[test]
    fn snapshots_hold_what_was_added_and_finish_completes_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let opts = logsift_parse::ParseOptions::default();
        let mut writer =
            BlockWriter::committing_every(&dir.path().join("hot"), 3, true, 3).unwrap();
        let line = |i: u64| {
            format!(
                "<13>1 2026-12-02T12:{:02}:{:02}Z host{} app - - - request {i:08} done {}",
                i / 60 % 60,
                i % 60,
                i % 5,
                if i.is_multiple_of(3) {
                    "third"
                } else {
                    "other"
                }
            )
        };
        let add = |writer: &mut BlockWriter, i: u64| {
            let raw = line(i);
            let record = logsift_parse::parse(Format::Syslog, raw.as_bytes(), &opts);
            writer.add(
                &BlockRecord {
                    id: i,
                    timestamp: record.timestamp.unwrap_or(0),
                    received_at: 7,
                    format: Format::Syslog,
                    source: "tcp a",
                    raw: raw.as_bytes(),
                    pattern: 0,
                },
                &record,
            );
        };
        let mut next = 1u64;
        for batch in [1u64, 40, 700, 3, 1500, 0, 260] {
            for _ in 0..batch {
                add(&mut writer, next);
                next += 1;
            }
            let snap = writer.snapshot().unwrap();
            assert_eq!(ids_in(&snap), (1..next).collect::<Vec<_>>(), "after {next}");
            let records: u64 = snap.iter().map(|s| s.num_records()).sum();
            assert_eq!(records, next - 1);
            // Words are counted through every index segment of the closed blocks, and in
            // the blocks not written yet; every id is found by its own block.
            let mut counted = 0u64;
            let mut block = DecodedBlock::default();
            for seg in &snap {
                let freqs = seg.word_freqs("request").unwrap();
                for (ord, f) in freqs.iter().enumerate() {
                    assert_eq!(
                        *f,
                        seg.blocks[ord].records,
                        "block {ord} of {}",
                        seg.dir.display()
                    );
                    counted += u64::from(*f);
                    seg.read_block(ord, &mut block).unwrap();
                    for r in &block.records {
                        assert_eq!(block.raw(r), line(r.id).as_bytes());
                        let h = hash_word(format!("{:08}", r.id).as_bytes());
                        assert!(seg.may_hold_id(h) && seg.block_may_hold_id(ord, h));
                    }
                }
                assert!(seg.word_freqs("absent").unwrap().iter().all(|f| *f == 0));
            }
            assert_eq!(counted, next - 1);
            // A word in some of a block's records is counted exactly too.
            let total = |word: &str| -> u64 {
                snap.iter()
                    .flat_map(|seg| seg.word_freqs(word).unwrap())
                    .map(u64::from)
                    .sum()
            };
            assert_eq!(total("third"), (next - 1) / 3);
            assert_eq!(total("other"), next - 1 - (next - 1) / 3);
            assert!(snap.len() <= 2);
        }
        writer.finish().unwrap();
        let seg = BlockSegment::open(&dir.path().join("hot")).unwrap();
        assert_eq!(ids_in(&[&seg]), (1..next).collect::<Vec<_>>());
        // A hot tier's index segments are kept as committed, and counted through.
        let kept = seg.searcher().map_or(0, |s| s.segment_readers().len());
        assert!(
            kept > 1 && kept <= HOT_INDEX_SEGMENTS_KEPT,
            "{kept} segments"
        );
        let total = |word: &str| -> u64 {
            seg.word_freqs(word)
                .unwrap()
                .iter()
                .map(|&f| u64::from(f))
                .sum()
        };
        assert_eq!(total("request"), next - 1);
        assert_eq!(total("third"), (next - 1) / 3);
        assert_eq!(total("other"), next - 1 - (next - 1) / 3);
        assert!(
            matches!(&seg.parts, Parts::Written { ddict: Some(_), .. }),
            "the dictionary is trained on the tier's first blocks"
        );
    }

    /// Adds one syslog line at `timestamp` (also its receive time) as record `id`.
    fn add_syslog(writer: &mut BlockWriter, id: u64, timestamp: i64, raw: &str) {
        let opts = logsift_parse::ParseOptions::default();
        let record = logsift_parse::parse(Format::Syslog, raw.as_bytes(), &opts);
        writer.add(
            &BlockRecord {
                id,
                timestamp,
                received_at: timestamp,
                format: Format::Syslog,
                source: "test",
                raw: raw.as_bytes(),
                pattern: 0,
            },
            &record,
        );
    }

    /// One stream's records arriving from two places hours apart in turn (two senders
    /// replaying different hours, or a backlog shipped beside live records) fill one block per
    /// hour, not a block per jump.
    #[test]
    fn a_stream_jumping_back_and_forth_in_time_fills_a_block_per_hour() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = BlockWriter::new(&dir.path().join("s"), 3).unwrap();
        let (minute, hour) = (60_000_000_000i64, 3_600_000_000_000i64);
        for i in 0..100i64 {
            // Minute i/2 of hour 0 or of hour 6, alternately.
            let t = (i % 2) * 6 * hour + (i / 2) * minute / 2;
            add_syslog(
                &mut writer,
                i as u64 + 1,
                t,
                &format!("<13>1 - web nginx - - - request {i}"),
            );
        }
        writer.finish().unwrap();
        let seg = BlockSegment::open(&dir.path().join("s")).unwrap();
        assert_eq!(seg.num_records(), 100);
        assert_eq!(seg.blocks.len(), 2, "{:?}", seg.blocks);
        assert_eq!(ids_in(&[&seg]), (1..=100).collect::<Vec<_>>());
        for b in &seg.blocks {
            assert!(b.ts_max - b.ts_min < hour, "{b:?}");
        }
    }

    /// Past the most blocks open at once, the least recently joined close: memory stays
    /// bounded and every record is kept.
    #[test]
    fn blocks_queued_for_compression_are_bounded_by_bytes() {
        let q = std::sync::Arc::new(Queued::default());
        // A block larger than the bound goes alone.
        q.take(QUEUED_BYTES * 2, || false);
        let waiter = {
            let q = q.clone();
            std::thread::spawn(move || q.take(10, || false))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(
            *q.bytes.lock().unwrap(),
            QUEUED_BYTES * 2,
            "the next one waits"
        );
        q.give(QUEUED_BYTES * 2);
        waiter.join().unwrap();
        assert_eq!(*q.bytes.lock().unwrap(), 10);
        // A stopped compression thread never leaves the sender waiting.
        q.take(QUEUED_BYTES, || true);
        assert_eq!(*q.bytes.lock().unwrap(), QUEUED_BYTES + 10);
    }

    #[test]
    fn open_blocks_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = BlockWriter::new(&dir.path().join("s"), 3).unwrap();
        let hour = 3_600_000_000_000i64;
        let n = MAX_OPEN_BLOCKS as i64 + 10;
        for i in 0..n {
            // Every record in an hour of its own: each opens a block.
            add_syslog(
                &mut writer,
                i as u64 + 1,
                i * hour,
                &format!("<13>1 - web nginx - - - request {i}"),
            );
            assert!(writer.open.len() <= MAX_OPEN_BLOCKS);
        }
        writer.finish().unwrap();
        let seg = BlockSegment::open(&dir.path().join("s")).unwrap();
        assert_eq!(seg.num_records(), n as u64);
        assert_eq!(ids_in(&[&seg]), (1..=n as u64).collect::<Vec<_>>());
    }

    /// A quiet stream's records far apart in time go to different blocks, so that a short
    /// time window opens only blocks near it.
    #[test]
    fn a_block_spans_at_most_its_time_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = BlockWriter::new(&dir.path().join("s"), 3).unwrap();
        let minute = 60_000_000_000i64;
        // One record every 7 minutes for 10 hours: 86 records, one stream.
        for i in 0..86i64 {
            add_syslog(
                &mut writer,
                i as u64 + 1,
                i * 7 * minute,
                &format!("<13>1 - quiet app - - - tick {i}"),
            );
        }
        writer.finish().unwrap();
        let seg = BlockSegment::open(&dir.path().join("s")).unwrap();
        assert_eq!(seg.num_records(), 86);
        assert!(seg.blocks.len() >= 10, "{} blocks", seg.blocks.len());
        for b in &seg.blocks {
            assert!(b.ts_max - b.ts_min <= MAX_BLOCK_SPAN_NS, "{b:?}");
        }
    }

    #[test]
    fn damaged_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let seg = segment(&path);
        let blocks = seg.blocks.len();
        let middle = seg.blocks[blocks / 2].body.clone();
        drop(seg);
        // A flipped byte inside a block's zstd frame: that block fails, with its name.
        let body = path.join(BODY_FILE);
        let mut bytes = std::fs::read(&body).unwrap();
        // Its frame's magic number: zstd frames carry no checksum (one cost a phrase search
        // 4 % of its CPU), so a flip elsewhere may decompress; `verify` and the rehash at open
        // find those.
        let at = middle.start;
        bytes[at] ^= 0xff;
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
