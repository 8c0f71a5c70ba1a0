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
//! Variants: `current` (the server's schema, ids folded into bucket terms; records without a
//! pattern id), `patterns mined` (the same with each message's pattern mined at parse time and
//! stored, as the server does by default: #19), `words whole` (ids
//! indexed as words, as before folding), `no positions` (message and fields without
//! frequencies and positions), `fields not indexed` (the JSON `fields` object not indexed),
//! `no keyword columns` (host, app, ... without their fast columns), `lean` (all three).
//!
//! Then a block segment (`logsift_store::blocks`, see `docs/block-index.md`): one document
//! per block of up to 128 records of one stream, each distinct word once per record holding
//! it, ids in bloom filters. Its bytes per raw byte, and the e2e benchmark's queries on it and
//! on the `current` index side by side (`logsift_query::blocks::search`: total and the 100
//! newest hits with their lines; warm, in this process).
//! With `--terms` it also prints, for the `current` variant, the unique terms and postings per
//! field and JSON path, and how many terms occur in one record only (ids, numbers). With
//! `--pairs` it only prints the (block, word) pairs of a block segment by kind of word.
//!
//! Flags (after `--`): `--size 100MB` (default; decimal units), `--commit N` (default 15000:
//! what a 500 ms hot-tier commit holds at about 30 k records/s), `--only NAME` (variants
//! whose name contains NAME), `--terms`, `--space` (bytes per raw byte of each file kind and
//! field of the merged segment, for the `current` variant or the `--only` one).
//! The block segment's shape comes from the environment: `BLOCK_RECORDS` (records per block),
//! `BLOCK_ZSTD_LEVEL` (default 3) and `BLOCK_SPAN_SECS` (most time a block's records span).
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
    pairs: bool,
    space: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        bench: false,
        size: 100_000_000,
        commit: 15_000,
        only: None,
        terms: false,
        pairs: false,
        space: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--bench" => a.bench = true,
            "--terms" => a.terms = true,
            "--pairs" => a.pairs = true,
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
    let pattern = b.add_u64_field("pattern", FAST);
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
    // Then in time order, as concurrent senders of live logs deliver them (the channels mixed
    // within a moment), so that a block's time range is as narrow as in the server.
    let opts = logsift_parse::ParseOptions::default();
    let mut keyed: Vec<(i64, (Format, Vec<u8>))> = lines
        .into_iter()
        .map(|(f, l)| {
            let ts = logsift_parse::parse(f, &l, &opts).timestamp.unwrap_or(0);
            (ts, (f, l))
        })
        .collect();
    keyed.sort_by_key(|(ts, _)| *ts);
    keyed.into_iter().map(|(_, line)| line).collect()
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
        ("patterns mined", variant(true, true, true, TEXT_TOKENIZER)),
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
    if args.pairs {
        block_word_pairs(&lines, &opts);
        return;
    }
    let mut terms_of = None;
    let mut current = None;
    for (name, schema) in variants {
        // `--only blocks` keeps `current` as the baseline of the block segment's queries.
        if args
            .only
            .as_deref()
            .is_some_and(|o| !(name.contains(o) || name == "current" && "blocks".contains(o)))
        {
            continue;
        }
        let mut miner = (name == "patterns mined").then(|| {
            logsift_patterns::Miner::new(logsift_patterns::MinerConfig::default())
                .expect("default config")
        });
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
                let pattern = miner.as_mut().map_or(0, |m| m.ingest(&record.message));
                build_document(&schema, lsn as u64, &entry, &record, pattern)
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
        if miner.is_some() {
            mining_alone(&lines, &opts, records);
        }
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
            terms_of = Some((index.clone(), schema.clone()));
        }
        if name == "current" {
            current = Some((index, schema));
        }
    }
    if args.only.as_deref().is_none_or(|o| "blocks".contains(o)) {
        real_blocks(&lines, &opts, bytes as f64, current.as_ref());
    }
    if let Some((index, schema)) = terms_of {
        print_terms(&index, &schema);
    }
}

/// CPU per record of mining patterns alone (the messages parsed beforehand), best of three
/// passes with a fresh miner each (learning included), which the noise of a shared machine
/// only ever adds to.
fn mining_alone(lines: &[(Format, Vec<u8>)], opts: &logsift_parse::ParseOptions, records: f64) {
    let messages: Vec<String> = lines
        .iter()
        .map(|(format, raw)| {
            logsift_parse::parse(*format, raw, opts)
                .message
                .into_owned()
        })
        .collect();
    let mut best = f64::MAX;
    let mut patterns = 0;
    let mut fast = 0;
    for _ in 0..3 {
        let mut miner = logsift_patterns::Miner::new(logsift_patterns::MinerConfig::default())
            .expect("default config");
        let started = cpu_seconds();
        for m in &messages {
            std::hint::black_box(miner.ingest(m));
        }
        best = best.min(cpu_seconds() - started);
        patterns = miner.len();
        fast = miner.fast_taken();
    }
    println!(
        "\npattern mining alone: {:.2} µs/rec, best of 3 ({patterns} patterns, {:.1} % of \
         messages matched from their raw tokens)\n",
        best / records * 1e6,
        fast as f64 * 100.0 / records
    );
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

/// A block segment built by `logsift_store::blocks` from the same lines, timed as the
/// variants are: `parse+doc` is parsing and collecting each block's words and bytes, `index`
/// is closing the blocks (zstd) and writing the block index. Then its bytes per raw byte, and
/// the query suite on it and on the `current` index (if built in this run).
fn real_blocks(
    lines: &[(Format, Vec<u8>)],
    opts: &logsift_parse::ParseOptions,
    bytes: f64,
    current: Option<&(Index, LogSchema)>,
) {
    use logsift_store::blocks::{BlockRecord, BlockSegment, BlockWriter};
    let dir = tempfile::tempdir().expect("temp dir");
    let records = lines.len() as f64;
    let started = cpu_seconds();
    let block_records: usize = std::env::var("BLOCK_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(logsift_store::blocks::BLOCK_RECORDS);
    let level: i32 = std::env::var("BLOCK_ZSTD_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let span_secs: i64 = std::env::var("BLOCK_SPAN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(logsift_store::blocks::MAX_BLOCK_SPAN_NS / 1_000_000_000);
    let mut writer = BlockWriter::new(&dir.path().join("blocks"), level)
        .expect("block writer")
        .with_block_records(block_records)
        .with_max_span(span_secs.saturating_mul(1_000_000_000));
    for (lsn, (format, raw)) in lines.iter().enumerate() {
        let record = logsift_parse::parse(*format, raw, opts);
        let rec = BlockRecord {
            id: lsn as u64,
            timestamp: record.timestamp.unwrap_or(0),
            received_at: 0,
            format: *format,
            source: "syslog-tcp 127.0.0.1:40112",
            raw,
            pattern: 0,
        };
        writer.add(&rec, &record);
    }
    let added = cpu_seconds();
    writer.finish().expect("block segment");
    let segment = BlockSegment::open(&dir.path().join("blocks")).expect("block segment");
    let finished = cpu_seconds();
    let per = |a: f64, b: f64| (b - a) / records * 1e6;
    println!(
        "| blocks of {} (`logsift_store::blocks`) | {:.2} | {:.2} | 0 | {:.2} | {:.1} MB/s |",
        block_records,
        per(started, added),
        per(added, finished),
        per(started, finished),
        bytes / (finished - started) / 1e6,
    );
    let (index_b, body_b, filters_b) = segment.sizes();
    println!(
        "\nblock segment: {} blocks; bytes per raw byte: index {:.4}, bodies {:.4}, filters {:.4}, total {:.4}",
        segment.blocks.len(),
        index_b as f64 / bytes,
        body_b as f64 / bytes,
        filters_b as f64 / bytes,
        (index_b + body_b + filters_b) as f64 / bytes
    );
    // The baseline of the issue: zstd -3 of the lines in arrival order, as one stream.
    let mut all = Vec::with_capacity(bytes as usize);
    for (_, raw) in lines {
        all.extend_from_slice(raw);
        all.push(b'\n');
    }
    let whole = zstd::bulk::compress(&all, 3).map_or(0, |c| c.len());
    println!(
        "baseline: `zstd -3` of the lines as one stream: {:.4} bytes per raw byte",
        whole as f64 / bytes
    );
    query_suite(lines, opts, &segment, current);
}

/// Latency of the e2e benchmark's queries (total and the 100 newest hits with their lines) on
/// the block segment and on the record-per-document index, in this process, warm.
fn query_suite(
    lines: &[(Format, Vec<u8>)],
    opts: &logsift_parse::ParseOptions,
    segment: &logsift_store::blocks::BlockSegment,
    current: Option<&(Index, LogSchema)>,
) {
    use tantivy::collector::{Count, TopDocs};
    use tantivy::Order;
    let mut analyzer = logsift_store::tokens::word_analyzer();
    // Needles: the first id-like token of every 4999th record.
    let mut needles = Vec::new();
    for (format, raw) in lines.iter().step_by(4999) {
        let record = logsift_parse::parse(*format, raw, opts);
        let mut stream = analyzer.token_stream(&record.message);
        while stream.advance() {
            let t = &stream.token().text;
            if logsift_store::tokens::is_high_entropy(t) && t.len() >= 12 {
                needles.push(t.clone());
                break;
            }
        }
    }
    // What a block read costs: decompressing every block, then lowercasing its bytes for the
    // prefilter, averaged over the segment.
    {
        let mut block = logsift_store::blocks::DecodedBlock::default();
        let started = std::time::Instant::now();
        let mut bytes = 0usize;
        for ord in 0..segment.blocks.len() {
            segment.read_block(ord, &mut block).expect("block");
            bytes += block.data.len();
        }
        let read = started.elapsed().as_secs_f64();
        let started = std::time::Instant::now();
        let mut lower = Vec::new();
        for ord in 0..segment.blocks.len() {
            segment.read_block(ord, &mut block).expect("block");
            lower.clear();
            lower.extend(block.data.iter().map(u8::to_ascii_lowercase));
            std::hint::black_box(memchr::memmem::find(&lower, b"upstream timed out"));
        }
        let both = started.elapsed().as_secs_f64();
        // The same blocks under LZ4: bigger, but how much faster to read?
        let mut frames = Vec::with_capacity(segment.blocks.len());
        for ord in 0..segment.blocks.len() {
            segment.read_block(ord, &mut block).expect("block");
            frames.push(lz4_flex::compress_prepend_size(&block.data));
        }
        let started = std::time::Instant::now();
        for f in &frames {
            std::hint::black_box(lz4_flex::decompress_size_prepended(f).expect("lz4").len());
        }
        let lz4_read = started.elapsed().as_secs_f64();
        let lz4_bytes: usize = frames.iter().map(Vec::len).sum();
        let n = segment.blocks.len().max(1) as f64;
        println!(
            "same blocks in LZ4: {:.4} bytes per raw byte of lines, {:.1} µs to decompress a block",
            lz4_bytes as f64 / lines.iter().map(|(_, l)| l.len() + 1).sum::<usize>() as f64,
            lz4_read / n * 1e6
        );
        println!(
            "block reads: {:.1} µs to decompress a block ({:.0} KB plain, {:.0} MB/s), {:.1} µs more to lowercase and search it",
            read / n * 1e6,
            bytes as f64 / n / 1e3,
            bytes as f64 / read / 1e6,
            (both - read) / n * 1e6
        );
    }
    let searcher = current.map(|(index, _)| index.reader().expect("reader").searcher());
    let run_records = |q: &str| -> Option<(u64, f64)> {
        let (index, schema) = current?;
        let searcher = searcher.as_ref()?;
        let ast = logsift_query::parse_query(q).ok()?;
        let started = std::time::Instant::now();
        let query: Box<dyn tantivy::query::Query> = if ast == logsift_query::lang::Ast::All {
            Box::new(tantivy::query::AllQuery)
        } else {
            logsift_query::compile_for_index(schema, index, &ast, *opts).ok()?
        };
        let top = TopDocs::with_limit(100).order_by_fast_field::<i64>("timestamp", Order::Desc);
        let (total, hits) = searcher.search(&query, &(Count, top)).ok()?;
        for (_, addr) in hits {
            let doc: tantivy::TantivyDocument = searcher.doc(addr).ok()?;
            std::hint::black_box(logsift_store::Stored::of(schema, &doc).raw.len());
        }
        Some((total as u64, started.elapsed().as_secs_f64() * 1e3))
    };
    let run_blocks = |q: &str| -> (u64, usize, f64) {
        let ast = logsift_query::parse_query(q).expect("query");
        let started = std::time::Instant::now();
        let page = logsift_query::blocks::Page {
            limit: 100,
            ..Default::default()
        };
        let found = logsift_query::blocks::search(segment, &ast, opts, &page).expect("search");
        (
            found.total,
            found.blocks_read,
            started.elapsed().as_secs_f64() * 1e3,
        )
    };
    let p = |mut v: Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!("\n| query | total (records / blocks) | blocks read | records p50 ms | blocks p50 ms | blocks p99 ms |");
    println!("|---|---|---:|---:|---:|---:|");
    let mut rows: Vec<(String, Vec<String>)> = vec![(
        format!("needle ({} ids, one run each)", needles.len()),
        needles.clone(),
    )];
    for q in [
        "segfault",
        "GET",
        "\"upstream timed out\"",
        "host:web-01",
        "severity:error",
        "*",
    ] {
        rows.push((format!("`{q}`"), vec![q.to_string(); 15]));
    }
    for (label, queries) in rows {
        let (mut rec_ms, mut blk_ms, mut reads) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rec_total, mut blk_total) = (0u64, 0u64);
        // One call each first, so both run warm.
        run_blocks(&queries[0]);
        run_records(&queries[0]);
        for q in &queries {
            let (t, r, ms) = run_blocks(q);
            blk_total = t;
            reads.push(r as f64);
            blk_ms.push(ms);
            if let Some((t, ms)) = run_records(q) {
                rec_total = t;
                rec_ms.push(ms);
            }
        }
        if queries.len() > 1 && queries[0] != queries[1] {
            // Needles: the slowest one, to see why.
            let slowest = queries
                .iter()
                .map(|q| (run_blocks(q), q))
                .max_by(|a, b| a.0 .2.total_cmp(&b.0 .2));
            if let Some(((total, read, ms), q)) = slowest {
                eprintln!("slowest needle {q}: {total} records, {read} blocks read, {ms:.2} ms");
            }
        }
        let agree = if current.is_none() {
            format!("– / {blk_total}")
        } else {
            format!("{rec_total} / {blk_total}")
        };
        println!(
            "| {label} | {agree} | {:.0} | {:.2} | {:.2} | {:.2} |",
            p(reads, 0.5),
            p(rec_ms, 0.5),
            p(blk_ms.clone(), 0.5),
            p(blk_ms, 0.99)
        );
    }
}

/// `--pairs`: the (block, distinct word) pairs the block index takes, by kind of word. The
/// block index writer's work is a hash lookup per pair, so these are what its cost follows.
/// Blocks are cut as the writer cuts them: per stream and warning-or-worse, at 128 records
/// or [`logsift_store::blocks::MAX_BLOCK_SPAN_NS`].
fn block_word_pairs(lines: &[(Format, Vec<u8>)], opts: &logsift_parse::ParseOptions) {
    use std::collections::{HashMap, HashSet};
    let kind = |w: &str| -> String {
        let digits = |t: &str| {
            if t.bytes().all(|b| b.is_ascii_digit()) {
                format!("number of {} digits", t.len().min(6))
            } else if t.bytes().any(|b| b.is_ascii_digit()) {
                "letters and digits".to_string()
            } else {
                "letters".to_string()
            }
        };
        match w.chars().next() {
            Some('\u{2}') => format!("keyword {}", w[1..].split('\0').next().unwrap_or("")),
            Some('\u{3}') => format!("field word, {}", digits(w.split('\0').nth(1).unwrap_or(""))),
            Some('\u{4}') => format!(
                "typed field value {}",
                w.split('\0').nth(1).unwrap_or("").get(..2).unwrap_or("")
            ),
            Some('\u{5}') => "field key".to_string(),
            _ => format!("message word, {}", digits(w)),
        }
    };
    struct Open {
        records: usize,
        ts_min: i64,
        words: HashSet<String>,
    }
    let mut analyzer = logsift_store::analyze::Analyzer::default();
    let mut analyzed = logsift_store::analyze::Analyzed::default();
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut pairs: HashMap<String, u64> = HashMap::new();
    let mut occurrences: HashMap<String, u64> = HashMap::new();
    let mut blocks = 0u64;
    let close = |b: Open, pairs: &mut HashMap<String, u64>| {
        for w in b.words {
            *pairs.entry(kind(&w)).or_default() += 1;
        }
    };
    for (format, raw) in lines {
        let record = logsift_parse::parse(*format, raw, opts);
        analyzed.clear();
        analyzer.analyze(&record, "syslog-tcp 127.0.0.1:40112", &mut analyzed);
        let a = analyzed.get(0);
        let alarming = a.severity.is_some_and(|s| s.code() <= 4);
        let key = logsift_store::stream_key(a.host, a.app) | (u64::from(alarming) << 32);
        let ts = record.timestamp.unwrap_or(0);
        if let Some(b) = open.get(&key) {
            if (ts - b.ts_min).abs() > logsift_store::blocks::MAX_BLOCK_SPAN_NS {
                if let Some(b) = open.remove(&key) {
                    blocks += 1;
                    close(b, &mut pairs);
                }
            }
        }
        let b = open.entry(key).or_insert_with(|| Open {
            records: 0,
            ts_min: ts,
            words: HashSet::new(),
        });
        for (_, w) in a.words() {
            *occurrences.entry(kind(w)).or_default() += 1;
            b.words.insert(w.to_string());
        }
        b.records += 1;
        if b.records >= logsift_store::blocks::BLOCK_RECORDS {
            if let Some(b) = open.remove(&key) {
                blocks += 1;
                close(b, &mut pairs);
            }
        }
    }
    for (_, b) in open.drain() {
        blocks += 1;
        close(b, &mut pairs);
    }
    let total: u64 = pairs.values().sum();
    println!(
        "\n{} blocks, {total} (block, word) pairs, {:.2} per record\n",
        blocks,
        total as f64 / lines.len() as f64
    );
    println!("| kind of word | pairs | share | occurrences | occurrences per pair |");
    println!("|---|---:|---:|---:|---:|");
    let mut rows: Vec<(String, u64)> = pairs.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    for (k, n) in rows {
        let occ = occurrences.get(&k).copied().unwrap_or(0);
        println!(
            "| {k} | {n} | {:.1} % | {occ} | {:.1} |",
            n as f64 * 100.0 / total as f64,
            occ as f64 / n as f64
        );
    }
}
