//! What each part of the index schema costs per record: `cargo bench --bench index_cost`.
//!
//! Storage v2 (#16) needs about 5–7 µs of CPU per record for 60 MB/s on two cores. This
//! benchmark prices the parts of today's schema on the e2e corpus so that the next cut is
//! chosen by measurement: it parses the lines and builds their documents once per variant
//! (`parse+doc`), adds them to an in-RAM tantivy index with one indexing thread, committing
//! every `--commit` records as the hot tier does (`index`), then merges the segments into one
//! as a seal does (`merge`). Each figure is process CPU time (user + system) per record, so
//! it holds up on a shared machine better than wall time; compare variants of one run.
//!
//! Variants: `current` (the server's schema, ids folded into bucket terms), `words whole` (ids
//! indexed as words, as before folding), `no positions` (message and fields without
//! frequencies and positions), `fields not indexed` (the JSON `fields` object not indexed),
//! `no keyword columns` (host, app, ... without their fast columns), `lean` (all three).
//!
//! Then the `blocks` prototypes (see `docs/block-index.md`): one document per block of up to
//! 128 records of one stream, indexing each distinct word of the block once, with ids folded
//! into bucket terms, or kept out of the index in a per-block bloom filter (with or without
//! coarse bucket terms). They price the index side of a block index; nothing queries them.
//! With `--terms` it also prints, for the `current` variant, the unique terms and postings per
//! field and JSON path, and how many terms occur in one record only (ids, numbers).
//!
//! Flags (after `--`): `--size 100MB` (default; decimal units), `--commit N` (default 15000:
//! what a 500 ms hot-tier commit holds at about 30 k records/s), `--only NAME` (variants
//! whose name contains NAME), `--terms`, `--space` (bytes per raw byte of each file kind and
//! field of the merged segment, for the `current` variant or the `--only` one).
//!
//! Run without `--bench` (as `cargo test --benches` does) it only prints how to run it.

#[allow(dead_code)]
#[path = "e2e/gen.rs"]
mod gen;

use std::collections::BTreeMap;

use logsift_core::entry::Entry;
use logsift_core::Format;
use logsift_store::tokens::TEXT_TOKENIZER;
use logsift_store::{build_document, LogSchema, KEYWORD_TOKENIZER};
use tantivy::indexer::NoMergePolicy;
use tantivy::schema::{
    BytesOptions, IndexRecordOption, JsonObjectOptions, Schema, TextFieldIndexing, TextOptions,
    FAST, INDEXED, STORED,
};
use tantivy::{Index, IndexWriter};

struct Args {
    bench: bool,
    size: u64,
    commit: usize,
    only: Option<String>,
    terms: bool,
    space: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        bench: false,
        size: 100_000_000,
        commit: 15_000,
        only: None,
        terms: false,
        space: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--bench" => a.bench = true,
            "--terms" => a.terms = true,
            "--space" => a.space = true,
            "--size" => {
                let v = value()?;
                let (digits, unit) =
                    v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
                let n: u64 = digits.parse().map_err(|_| format!("bad --size {v}"))?;
                a.size = n * match unit {
                    "" | "B" => 1,
                    "KB" => 1_000,
                    "MB" => 1_000_000,
                    "GB" => 1_000_000_000,
                    _ => return Err(format!("bad --size unit in {v}")),
                };
            }
            "--commit" => {
                a.commit = value()?.parse().map_err(|_| "bad --commit".to_string())?;
                a.commit = a.commit.max(1);
            }
            "--only" => a.only = Some(value()?),
            // Flags cargo passes to every bench target.
            _ if flag.starts_with("--") => {}
            _ => {}
        }
    }
    Ok(a)
}

/// Process CPU time (user + system) in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given and nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The server's schema ([`LogSchema::new`]) with parts switched off. Field names and types
/// stay, so [`build_document`] fills every variant alike.
fn variant(
    positions: bool,
    index_fields: bool,
    keyword_columns: bool,
    text_tokenizer: &str,
) -> LogSchema {
    let text_option = if positions {
        IndexRecordOption::WithFreqsAndPositions
    } else {
        IndexRecordOption::Basic
    };
    let mut b = Schema::builder();
    let timestamp = b.add_i64_field("timestamp", FAST);
    let received_at = b.add_i64_field("received_at", STORED);
    let id = b.add_u64_field("id", FAST);
    let stream = b.add_u64_field("stream", FAST);
    let mut keyword = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(KEYWORD_TOKENIZER)
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    );
    if keyword_columns {
        keyword = keyword.set_fast("raw");
    }
    let severity = b.add_text_field("severity", keyword.clone());
    let severity_code = b.add_u64_field("severity_code", INDEXED | FAST);
    let facility = b.add_text_field("facility", keyword.clone());
    let host = b.add_text_field("host", keyword.clone());
    let app = b.add_text_field("app", keyword.clone());
    let procid = b.add_text_field("procid", keyword.clone());
    let msgid = b.add_text_field("msgid", keyword.clone());
    let text = TextFieldIndexing::default()
        .set_tokenizer(text_tokenizer)
        .set_index_option(text_option)
        .set_fieldnorms(false);
    let message = b.add_text_field(
        "message",
        TextOptions::default().set_indexing_options(text.clone()),
    );
    let mut fields_options = JsonObjectOptions::default().set_expand_dots_enabled();
    if index_fields {
        fields_options = fields_options.set_indexing_options(text);
    }
    let fields = b.add_json_field("fields", fields_options);
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
    }
}

/// The generated corpus as (format, line), channels interleaved as concurrent senders mix them.
fn corpus(size: u64) -> Vec<(Format, Vec<u8>)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let day = now_ns / gen::NS / 86_400;
    let generated = gen::generate(dir.path(), size, 7, day).expect("generate corpus");
    let mut lines = Vec::new();
    for (path, ch) in generated.files.iter().zip(gen::CHANNELS) {
        let format = match ch {
            gen::Channel::SyslogTcp => Format::Syslog,
            _ => Format::Json,
        };
        let text = std::fs::read(path).expect("read corpus");
        lines.extend(
            text.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| (format, l.to_vec())),
        );
    }
    let mut rng = gen::Rng::new(11);
    for i in (1..lines.len()).rev() {
        lines.swap(i, rng.below(i as u64 + 1) as usize);
    }
    lines
}

/// Adds `docs`, committing every `every` documents as the hot tier does, then merges the
/// segments into one as a seal does. Returns the process CPU seconds after each step.
fn index_then_merge(
    index: &Index,
    writer: &mut IndexWriter,
    docs: Vec<tantivy::TantivyDocument>,
    every: usize,
) -> (f64, f64) {
    for (i, doc) in docs.into_iter().enumerate() {
        writer.add_document(doc).expect("add");
        if (i + 1) % every == 0 {
            writer.commit().expect("commit");
        }
    }
    writer.commit().expect("commit");
    let indexed = cpu_seconds();
    let segments = index.searchable_segment_ids().expect("segments");
    writer.merge(&segments).wait().expect("merge");
    (indexed, cpu_seconds())
}

/// Unique terms, postings and single-record terms per field (per JSON path and value type
/// for `fields`), largest first.
fn print_terms(index: &Index, schema: &LogSchema) {
    let searcher = index.reader().expect("reader").searcher();
    let mut per: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for segment in searcher.segment_readers() {
        for (name, field) in [
            ("message", schema.message),
            ("fields", schema.fields),
            ("host", schema.host),
            ("app", schema.app),
            ("procid", schema.procid),
            ("msgid", schema.msgid),
        ] {
            let inverted = segment.inverted_index(field).expect("inverted index");
            let mut terms = inverted.terms().stream().expect("term stream");
            while terms.advance() {
                let key = terms.key();
                let label = if name == "fields" {
                    // A JSON term is path (segments joined by 0x01), 0x00, a type byte, value.
                    let end = key.iter().position(|&b| b == 0).unwrap_or(key.len());
                    let ty = key.get(end + 1).map_or('?', |&b| b as char);
                    let path = String::from_utf8_lossy(&key[..end]).replace('\u{1}', ".");
                    format!("fields.{path} ({ty})")
                } else {
                    name.to_string()
                };
                let doc_freq = u64::from(terms.value().doc_freq);
                let e = per.entry(label).or_default();
                e.0 += 1;
                e.1 += doc_freq;
                e.2 += u64::from(doc_freq == 1);
            }
        }
    }
    let mut rows: Vec<_> = per.into_iter().collect();
    rows.sort_by_key(|(_, (terms, _, _))| std::cmp::Reverse(*terms));
    println!("\n| field | unique terms | postings | terms in one record |");
    println!("|---|---:|---:|---:|");
    for (label, (terms, postings, single)) in rows.iter().take(20) {
        println!("| {label} | {terms} | {postings} | {single} |");
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("index_cost: {e}");
            std::process::exit(2);
        }
    };
    if !args.bench {
        println!(
            "index_cost: run it with `cargo bench --bench index_cost -- --size 100MB`; skipped"
        );
        return;
    }
    let lines = corpus(args.size);
    let bytes: usize = lines.iter().map(|(_, l)| l.len() + 1).sum();
    let records = lines.len() as f64;
    println!(
        "index_cost: {} records, {:.1} MB, commit every {} records",
        lines.len(),
        bytes as f64 / 1e6,
        args.commit
    );
    println!("\n| variant | parse+doc µs/rec | index µs/rec | merge µs/rec | total µs/rec | one core at this cost |");
    println!("|---|---:|---:|---:|---:|---:|");
    let variants = [
        ("current", variant(true, true, true, TEXT_TOKENIZER)),
        ("words whole", variant(true, true, true, "default")),
        ("no positions", variant(false, true, true, TEXT_TOKENIZER)),
        (
            "fields not indexed",
            variant(true, false, true, TEXT_TOKENIZER),
        ),
        (
            "no keyword columns",
            variant(true, true, false, TEXT_TOKENIZER),
        ),
        ("lean", variant(false, false, false, TEXT_TOKENIZER)),
    ];
    let opts = logsift_parse::ParseOptions {
        received_at_ns: 0,
        default_offset_secs: 0,
        logfmt: true,
    };
    let mut terms_of = None;
    for (name, schema) in variants {
        if args.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let started = cpu_seconds();
        let docs: Vec<_> = lines
            .iter()
            .enumerate()
            .map(|(lsn, (format, raw))| {
                let entry = Entry {
                    format: *format,
                    received_at: 0,
                    index: "logs",
                    source: "syslog-tcp 127.0.0.1:40112",
                    raw,
                };
                let record = logsift_parse::parse(*format, raw, &opts);
                build_document(&schema, lsn as u64, &entry, &record)
            })
            .collect();
        let parsed = cpu_seconds();
        let index = Index::create_in_ram(schema.schema.clone());
        LogSchema::register_tokenizers(index.tokenizers());
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 256 << 20).expect("writer");
        writer.set_merge_policy(Box::new(NoMergePolicy));
        let (indexed, merged) = index_then_merge(&index, &mut writer, docs, args.commit);
        let per = |a: f64, b: f64| (b - a) / records * 1e6;
        let total = per(started, merged);
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} MB/s |",
            per(started, parsed),
            per(parsed, indexed),
            per(indexed, merged),
            total,
            bytes as f64 / (merged - started) / 1e6,
        );
        let chosen = args
            .only
            .as_deref()
            .map_or(name == "current", |o| name.contains(o));
        if args.space && chosen {
            print_space(&index, bytes as f64);
        }
        if args.terms
            && args
                .only
                .as_deref()
                .map_or(name == "current", |o| name.contains(o))
        {
            terms_of = Some((index, schema));
        }
    }
    if args.only.as_deref().is_none_or(|o| "blocks".contains(o)) {
        for (bloom, coarse) in [(false, None), (true, None), (true, Some(14))] {
            let (parse, index_s, merge, index) = blocks(&lines, &opts, args.commit, bloom, coarse);
            let per = |s: f64| s / records * 1e6;
            let ids = match (bloom, coarse) {
                (false, _) => "ids folded".to_string(),
                (true, None) => "ids in a bloom filter".to_string(),
                (true, Some(b)) => format!("ids in a bloom filter and 2^{b} bucket terms"),
            };
            println!(
            "| blocks of {BLOCK_RECORDS}, {ids} (prototype) | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} MB/s |",
            per(parse),
            per(index_s),
            per(merge),
            per(parse + index_s + merge),
            bytes as f64 / (parse + index_s + merge) / 1e6,
        );
            if args.space && args.only.is_some() {
                print_space(&index, bytes as f64);
            }
        }
    }
    if let Some((index, schema)) = terms_of {
        print_terms(&index, &schema);
    }
}

/// Bytes per raw byte of each file kind of the merged segment, and of each field in it.
fn print_space(index: &Index, raw: f64) {
    let searcher = index.reader().expect("reader").searcher();
    let usage = searcher.space_usage().expect("space usage");
    println!("\n| part | field | bytes per raw byte |\n|---|---|---:|");
    for segment in usage.segments() {
        let kinds = [
            ("term dictionary", segment.termdict()),
            ("postings", segment.postings()),
            ("positions", segment.positions()),
            ("fast fields", segment.fast_fields()),
            ("field norms", segment.fieldnorms()),
        ];
        for (kind, per_field) in kinds {
            println!(
                "| {kind} | (all) | {:.4} |",
                per_field.total().get_bytes() as f64 / raw
            );
            let mut fields: Vec<_> = per_field.fields().collect();
            fields.sort_by_key(|f| std::cmp::Reverse(f.total().get_bytes()));
            for f in fields.iter().take(8) {
                println!(
                    "| {kind} | {} | {:.4} |",
                    f.field_name(),
                    f.total().get_bytes() as f64 / raw
                );
            }
        }
        println!(
            "| doc store (tantivy default compressor) | (all) | {:.4} |",
            segment.store().total().get_bytes() as f64 / raw
        );
    }
}

/// How a needle query would find its blocks in the bloom prototype: every block's filter is
/// checked for the id (3 probes), in memory, one thread. Prints the time per filter and the
/// candidate blocks per needle, true ones included; ids come from every 997th record.
fn probe_filters(
    filters: &[(Vec<u64>, Vec<u64>)],
    lines: &[(Format, Vec<u8>)],
    opts: &logsift_parse::ParseOptions,
    analyzer: &mut tantivy::tokenizer::TextAnalyzer,
) {
    let mut needles = Vec::new();
    for (format, raw) in lines.iter().step_by(997) {
        let record = logsift_parse::parse(*format, raw, opts);
        let mut stream = analyzer.token_stream(&record.message);
        while stream.advance() {
            let t = &stream.token().text;
            if logsift_store::tokens::is_high_entropy(t) {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in t.bytes() {
                    h ^= u64::from(b);
                    h = h.wrapping_mul(0x0100_0000_01b3);
                }
                needles.push(h);
                break;
            }
        }
    }
    let started = std::time::Instant::now();
    let mut candidates = 0usize;
    for h in &needles {
        let (h1, h2) = (*h, h.rotate_left(32) | 1);
        for (filter, _) in filters {
            let bits = filter.len() as u64 * 64;
            candidates += (0..3u64).all(|i| {
                let bit = (h1.wrapping_add(i.wrapping_mul(h2)) % bits) as usize;
                filter[bit / 64] & (1 << (bit % 64)) != 0
            }) as usize;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let truly: usize = needles
        .iter()
        .map(|h| {
            filters
                .iter()
                .filter(|(_, ids)| ids.binary_search(h).is_ok())
                .count()
        })
        .sum();
    let checks = (needles.len() * filters.len()).max(1) as f64;
    eprintln!(
        "blocks: needle scan of {} filters: {:.1} ns per filter ({:.3} ms per needle), {:.2} candidate blocks per needle, {:.2} of them holding it ({} needles)",
        filters.len(),
        elapsed / checks * 1e9,
        elapsed / needles.len().max(1) as f64 * 1e3,
        candidates as f64 / needles.len().max(1) as f64,
        truly as f64 / needles.len().max(1) as f64,
        needles.len()
    );
}

/// Records per block in the `blocks` prototype.
const BLOCK_RECORDS: usize = 128;

/// The `blocks` prototype: one tantivy document per block of up to [`BLOCK_RECORDS`] records of
/// one stream (host, app), as VictoriaLogs keeps per-block token filters. Each block indexes the
/// set of its records' words once (message words, `key=word` for fields and keyword fields),
/// without frequencies or positions; its stored value is the raw lines with their timestamps.
/// A query would read candidate blocks and check each record against the query, so this prices
/// the index side of that design on the same records and analyzer as the server's.
///
/// Returns (parse+doc, index, merge) CPU seconds and the index.
fn blocks(
    lines: &[(Format, Vec<u8>)],
    opts: &logsift_parse::ParseOptions,
    commit_records: usize,
    bloom: bool,
    coarse_bits: Option<u32>,
) -> (f64, f64, f64, Index) {
    use std::collections::{HashMap, HashSet};
    use tantivy::tokenizer::{PreTokenizedString, Token};
    let mut b = Schema::builder();
    let ts_min = b.add_i64_field("ts_min", FAST);
    let ts_max = b.add_i64_field("ts_max", FAST);
    let first_id = b.add_u64_field("first_id", FAST);
    let stream = b.add_u64_field("stream", FAST);
    let words = b.add_text_field(
        "words",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("raw")
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        ),
    );
    let body = b.add_bytes_field("body", BytesOptions::default().set_stored());
    let bloom_field = b.add_bytes_field("bloom", BytesOptions::default().set_stored());
    let schema = b.build();

    /// A block's words: each kept once, deduplicated by a 64-bit hash (a collision would
    /// only drop a word from the prototype's index, not change its cost).
    #[derive(Default)]
    struct Block {
        seen: HashSet<u64>,
        words: Vec<String>,
        /// Hashes of high-entropy tokens, for the block's bloom filter.
        ids: Vec<u64>,
        body: Vec<u8>,
        ts_min: i64,
        ts_max: i64,
        first_id: u64,
        records: usize,
    }
    // FNV-1a: the std hasher (SipHash) would cost more than the rest of the word.
    fn fnv(word: &str) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in word.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
    impl Block {
        fn add(&mut self, word: &str) {
            if self.seen.insert(fnv(word)) {
                self.words.push(word.to_string());
            }
        }
        fn add_id(&mut self, word: &str, coarse_bits: Option<u32>) {
            let h = fnv(word);
            if self.seen.insert(h) {
                self.ids.push(h);
                if let Some(bits) = coarse_bits {
                    let bucket = format!("\u{1}{:x}", h >> (64 - bits));
                    self.add(&bucket);
                }
            }
        }
    }
    let filters: std::cell::RefCell<Vec<(Vec<u64>, Vec<u64>)>> = Default::default();
    let emit = |key: u64, blk: Block| {
        let mut doc = tantivy::TantivyDocument::new();
        doc.add_i64(ts_min, blk.ts_min);
        doc.add_i64(ts_max, blk.ts_max);
        doc.add_u64(first_id, blk.first_id);
        doc.add_u64(stream, key);
        let tokens = blk
            .words
            .into_iter()
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
            words,
            PreTokenizedString {
                text: String::new(),
                tokens,
            },
        );
        doc.add_bytes(body, &blk.body);
        if !blk.ids.is_empty() {
            // 10 bits per token and 3 probes: about 1 % false positives.
            let bits = (blk.ids.len() * 10).next_multiple_of(64);
            let mut filter = vec![0u64; bits / 64];
            for h in &blk.ids {
                let (h1, h2) = (*h, h.rotate_left(32) | 1);
                for i in 0..3u64 {
                    let bit = (h1.wrapping_add(i.wrapping_mul(h2)) % bits as u64) as usize;
                    filter[bit / 64] |= 1 << (bit % 64);
                }
            }
            let bytes: Vec<u8> = filter.iter().flat_map(|w| w.to_le_bytes()).collect();
            doc.add_bytes(bloom_field, &bytes);
            let mut ids = blk.ids.clone();
            ids.sort_unstable();
            filters.borrow_mut().push((filter, ids));
        }
        doc
    };

    let started = cpu_seconds();
    let mut analyzer = if bloom {
        logsift_store::tokens::word_analyzer()
    } else {
        logsift_store::tokens::text_analyzer()
    };
    let entropy = |t: &str| bloom && logsift_store::tokens::is_high_entropy(t);
    let mut open: HashMap<u64, Block> = HashMap::new();
    let mut docs = Vec::new();
    let mut word = String::new();
    for (lsn, (format, raw)) in lines.iter().enumerate() {
        let record = logsift_parse::parse(*format, raw, opts);
        let key = logsift_store::stream_key(record.host.as_deref(), record.app.as_deref());
        let blk = open.entry(key).or_default();
        let ts = record.timestamp.unwrap_or(0);
        if blk.records == 0 {
            blk.first_id = lsn as u64;
            blk.ts_min = ts;
            blk.ts_max = ts;
        }
        blk.ts_min = blk.ts_min.min(ts);
        blk.ts_max = blk.ts_max.max(ts);
        blk.records += 1;
        blk.body
            .extend_from_slice(&((ts - blk.ts_min) as u32).to_le_bytes());
        blk.body
            .extend_from_slice(&(raw.len() as u32).to_le_bytes());
        blk.body.extend_from_slice(raw);
        {
            let mut stream = analyzer.token_stream(&record.message);
            while stream.advance() {
                let t = &stream.token().text;
                if entropy(t) {
                    blk.add_id(t, coarse_bits);
                } else {
                    blk.add(t);
                }
            }
        }
        let mut keyed = |blk: &mut Block, key: &str, value: &str| {
            if entropy(value) {
                // Found by value alone; the query checks the key against the record.
                blk.add_id(value, coarse_bits);
                return;
            }
            word.clear();
            word.push_str(key);
            word.push('\u{0}');
            word.push_str(value);
            blk.add(&word);
        };
        for (name, value) in [
            ("h", &record.host),
            ("a", &record.app),
            ("p", &record.procid),
            ("m", &record.msgid),
        ] {
            if let Some(v) = value {
                keyed(blk, name, &v.to_lowercase());
            }
        }
        if let Some(s) = record.severity {
            keyed(blk, "s", s.name());
        }
        for (k, v) in &record.fields {
            let text = match v {
                logsift_core::FieldValue::Str(s) => s.as_ref(),
                logsift_core::FieldValue::Number(n) | logsift_core::FieldValue::Json(n) => n,
                _ => continue,
            };
            let mut stream = analyzer.token_stream(text);
            while stream.advance() {
                keyed(blk, k, &stream.token().text);
            }
        }
        if blk.records == BLOCK_RECORDS {
            let full = std::mem::take(blk);
            docs.push(emit(key, full));
        }
    }
    for (key, blk) in open.drain() {
        if blk.records > 0 {
            docs.push(emit(key, blk));
        }
    }
    let parsed = cpu_seconds();
    let blocks = docs.len();
    let words_total: usize = docs
        .iter()
        .map(|d: &tantivy::TantivyDocument| {
            d.get_all(words)
                .filter_map(|v| {
                    use tantivy::schema::Value;
                    v.as_pre_tokenized_text().map(|p| p.tokens.len())
                })
                .sum::<usize>()
        })
        .sum();
    eprintln!(
        "blocks: {blocks} blocks, {:.1} records and {:.1} words per block, {:.2} words per record",
        lines.len() as f64 / blocks as f64,
        words_total as f64 / blocks as f64,
        words_total as f64 / lines.len() as f64
    );
    // Stored as sealed segments are (zstd in 256 KiB blocks) rather than tantivy's default
    // LZ4, so that its doc store compares with the server's sealed `.store`.
    let settings = tantivy::IndexSettings {
        docstore_compression: tantivy::store::Compressor::Zstd(tantivy::store::ZstdCompressor {
            compression_level: Some(3),
        }),
        docstore_blocksize: 256 << 10,
        ..Default::default()
    };
    let index = Index::builder()
        .schema(schema)
        .settings(settings)
        .create_in_ram()
        .expect("index");
    let mut writer: IndexWriter = index.writer_with_num_threads(1, 256 << 20).expect("writer");
    writer.set_merge_policy(Box::new(NoMergePolicy));
    // Commit as often (in records) as the per-record variants do.
    let per_commit = (commit_records / BLOCK_RECORDS).max(1);
    let (indexed, merged) = index_then_merge(&index, &mut writer, docs, per_commit);
    if bloom {
        probe_filters(&filters.into_inner(), lines, opts, &mut analyzer);
    }
    (parsed - started, indexed - parsed, merged - indexed, index)
}
