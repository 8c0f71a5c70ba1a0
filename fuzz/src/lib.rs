//! The checks behind each fuzz target, shared by the libFuzzer targets (`fuzz_targets/`) and
//! the bounded random-input loop (`src/random_loop.rs`). Each panics on a broken invariant;
//! parsing itself must never panic.

use logsift_core::{FieldValue, Format, Record};
use logsift_parse::framing::{Framer, Step};
use logsift_parse::{
    parse, parse_error_reason, parse_json, parse_json_reference, parse_syslog, ParseOptions,
    PARSE_ERROR_REASONS,
};

/// Options taken from the input's first byte, so that the fuzzer explores them too.
fn options(data: &[u8]) -> (ParseOptions, &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return (ParseOptions::default(), data);
    };
    let opts = ParseOptions {
        received_at_ns: 1_700_000_000_000_000_000 + i64::from(first) * 86_400_000_000_000,
        default_offset_secs: (i32::from(first % 29) - 14) * 3600,
        logfmt: first & 1 == 1,
    };
    (opts, rest)
}

fn trimmed(line: &[u8]) -> &[u8] {
    let keep = line
        .iter()
        .rposition(|&c| !matches!(c, b'\r' | b'\n' | 0))
        .map_or(0, |i| i + 1);
    &line[..keep]
}

/// Invariants every record has, whatever the input.
fn check_record(line: &[u8], r: &Record<'_>) {
    if let Some(err) = &r.parse_error {
        assert!(PARSE_ERROR_REASONS.contains(&parse_error_reason(err)));
        assert_ne!(
            parse_error_reason(err),
            "other",
            "unclassified error {err:?}"
        );
        // The whole line is kept, give or take whitespace before a `<PRI>`.
        let whole = String::from_utf8_lossy(trimmed(line));
        assert_eq!(r.message.trim_start(), whole.trim_start());
        assert!(r.fields.is_empty());
    }
    for (name, value) in r.fields() {
        assert!(!name.is_empty() || r.parse_error.is_none());
        if let FieldValue::Json(j) | FieldValue::Number(j) = value {
            assert!(!j.is_empty());
        }
    }
}

pub fn syslog(data: &[u8]) {
    let (opts, line) = options(data);
    let r = parse_syslog(line, &opts);
    check_record(line, &r);
    if opts.logfmt {
        // logfmt only adds fields, after the ones the syslog grammar gave.
        let plain = parse_syslog(
            line,
            &ParseOptions {
                logfmt: false,
                ..opts
            },
        );
        assert_eq!(r.message, plain.message);
        assert_eq!(r.host, plain.host);
        assert!(r.fields.len() >= plain.fields.len());
    }
}

pub fn json(data: &[u8]) {
    let (opts, line) = options(data);
    let r = parse_json(line, &opts);
    check_record(line, &r);
    // The single-pass fast path and the serde_json path give the same record, always.
    let reference = parse_json_reference(line, &opts);
    assert_eq!(r, reference, "{:?}", String::from_utf8_lossy(line));
    // The error check that scans instead of parsing gives the parse's verdict.
    assert_eq!(
        logsift_parse::parse_error(Format::Json, line, &opts),
        r.parse_error,
        "{:?}",
        String::from_utf8_lossy(line)
    );
    // What we accept is JSON.
    if r.parse_error.is_none() {
        let raw = std::str::from_utf8(trimmed(line))
            .ok()
            .and_then(|t| serde_json::from_str::<&serde_json::value::RawValue>(t).ok());
        assert!(
            raw.is_some_and(|v| v.get().starts_with('{')),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

pub fn auto(data: &[u8]) {
    let (opts, line) = options(data);
    let r = parse(Format::Auto, line, &opts);
    check_record(line, &r);
    let first = line.iter().find(|c| !c.is_ascii_whitespace());
    let direct = if first == Some(&b'{') {
        parse_json(line, &opts)
    } else {
        parse_syslog(line, &opts)
    };
    assert_eq!(r, direct);
}

/// Frames and errors of a whole stream fed in chunks of the given sizes (cycled).
fn frames(stream: &[u8], max: usize, chunks: &[usize]) -> (Vec<Vec<u8>>, usize) {
    let mut framer = Framer::new(max);
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut errors = 0;
    let mut fed = 0;
    let mut i = 0;
    while fed < stream.len() {
        let n = chunks[i % chunks.len()].clamp(1, stream.len() - fed);
        i += 1;
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            match framer.next(&buf) {
                Step::Frame {
                    start,
                    end,
                    consumed,
                } => {
                    assert!(start <= end && end <= consumed && consumed <= buf.len());
                    assert!(end - start <= max, "frame over the limit");
                    out.push(buf[start..end].to_vec());
                    buf.drain(..consumed);
                }
                Step::Error { consumed, .. } => {
                    assert!(consumed <= buf.len());
                    errors += 1;
                    buf.drain(..consumed);
                }
                Step::NeedMore { consumed } => {
                    assert!(consumed <= buf.len());
                    buf.drain(..consumed);
                    break;
                }
            }
        }
        // The framer keeps no buffer of its own, and must not make the caller keep more than
        // one frame's worth (plus a length header).
        assert!(buf.len() <= max + 16 + n, "buffered {} bytes", buf.len());
    }
    if let Some(range) = framer.finish(&buf) {
        out.push(buf[range].to_vec());
    }
    (out, errors)
}

/// First byte: frame limit; next 4 bytes: chunk sizes; the rest: the stream. The frames must
/// not depend on how the stream was cut into reads.
pub fn framing(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let max = 1 + usize::from(data[0]);
    let chunks: Vec<usize> = data[1..5]
        .iter()
        .map(|&c| 1 + usize::from(c % 64))
        .collect();
    let stream = &data[5..];
    let whole = frames(stream, max, &[stream.len().max(1)]);
    let cut = frames(stream, max, &chunks);
    assert_eq!(whole, cut, "chunks {chunks:?}");
    for frame in &whole.0 {
        let r = parse_syslog(frame, &ParseOptions::default());
        check_record(frame, &r);
    }
}

/// Every record a shipper decoder produces is a JSON object the JSON line parser reads
/// without error: the server stores them as JSON lines.
fn check_compat_records(records: &[Vec<u8>]) {
    for line in records {
        let r = parse_json(line, &ParseOptions::default());
        assert_eq!(r.parse_error, None, "{:?}", String::from_utf8_lossy(line));
    }
}

/// Elasticsearch `_bulk` bodies: actions come out in body order, documents are whole lines of
/// the body, and index names map without panicking.
pub fn es_bulk(data: &[u8]) {
    use logsift_compat::es::{check_document, index_name, parse_bulk, OpType};
    let Ok(items) = parse_bulk(data) else {
        return;
    };
    assert!(!items.is_empty());
    for item in &items {
        match (item.op, item.doc) {
            (OpType::Delete, doc) => assert!(doc.is_none()),
            (_, Some(doc)) => {
                assert!(!doc.contains(&b'\n'));
                if check_document(doc).is_ok() {
                    let r = parse_json(doc, &ParseOptions::default());
                    assert!(r.parse_error.is_none());
                }
            }
            (_, None) => panic!("{:?} without a document", item.op),
        }
        if let Some(name) = &item.index {
            if let Ok(index) = index_name(name) {
                assert!(!index.as_str().contains('.'));
            }
        }
    }
}

/// A decoder offers every record it keeps to its admission, one by one, in order, and stops
/// at the first refusal: decoding again with a budget one byte short of what `all` holds
/// fails after offering exactly the records that fit, plus the one that did not.
fn check_admission(
    all: &[Vec<u8>],
    decode: impl Fn(
        logsift_compat::Admit<'_, logsift_compat::DecodeError>,
    ) -> Result<Vec<Vec<u8>>, logsift_compat::DecodeError>,
) {
    let total: usize = all.iter().map(Vec::len).sum();
    if total == 0 {
        return;
    }
    let mut offered = Vec::new();
    let mut admit = |len: usize| {
        offered.push(len);
        if offered.iter().sum::<usize>() >= total {
            return Err(logsift_compat::DecodeError::Invalid("over".into()));
        }
        Ok(())
    };
    assert!(decode(&mut admit).is_err());
    let lens: Vec<usize> = all.iter().map(Vec::len).collect();
    assert_eq!(offered[..], lens[..offered.len()]);
}

/// Loki pushes: JSON, snappy as sent (random bytes), and the input as a protobuf inside valid
/// snappy; also the label set parser on the input as text.
pub fn loki(data: &[u8]) {
    use logsift_compat::admit_all;
    use logsift_compat::loki::{decode_json, decode_protobuf};
    const LIMIT: usize = 1 << 20;
    if let Ok(records) = decode_json(data, &mut admit_all) {
        check_compat_records(&records);
        check_admission(&records, |admit| decode_json(data, admit));
    }
    if let Ok(records) = decode_protobuf(data, LIMIT, &mut admit_all) {
        check_compat_records(&records);
    }
    if let Ok(snappy) = snap::raw::Encoder::new().compress_vec(data) {
        if let Ok(records) = decode_protobuf(&snappy, LIMIT, &mut admit_all) {
            check_compat_records(&records);
            check_admission(&records, |admit| decode_protobuf(&snappy, LIMIT, admit));
        }
        // The decompressed size is checked before anything is decompressed.
        if !data.is_empty() {
            assert!(decode_protobuf(&snappy, data.len() - 1, &mut admit_all).is_err());
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(labels) = logsift_compat::parse_labels(text) {
            for (name, _) in labels {
                assert!(!name.is_empty());
            }
        }
    }
}

/// OTLP export requests in protobuf and JSON: records parse, and what decodes re-encodes
/// to bytes that decode to the same request (compared as bytes, since NaN != NaN). The same
/// bytes as a gRPC body unframe within the decompression limit or fail with a message.
pub fn otlp(data: &[u8]) {
    use logsift_compat::admit_all;
    use logsift_compat::otlp::{decode_json, decode_protobuf, records, unframe_grpc, GrpcEncoding};
    use prost::Message;
    if let Ok(request) = decode_protobuf(data) {
        let all = records(&request, &mut admit_all).expect("admit_all admits every record");
        check_compat_records(&all);
        check_admission(&all, |admit| records(&request, admit));
        let once = request.encode_to_vec();
        let again = decode_protobuf(&once).expect("re-encoded request decodes");
        assert_eq!(again.encode_to_vec(), once);
    }
    if let Ok(request) = decode_json(data) {
        check_compat_records(&records(&request, &mut admit_all).expect("admit_all admits"));
    }
    // The same bytes as an OTLP/gRPC request body, in each message encoding.
    for encoding in [
        GrpcEncoding::Identity,
        GrpcEncoding::Gzip,
        GrpcEncoding::Zstd,
    ] {
        match unframe_grpc(data, encoding, 1 << 20) {
            Ok(message) => {
                assert!(message.len() <= 1 << 20);
                if let Ok(request) = decode_protobuf(&message) {
                    check_compat_records(&records(&request, &mut admit_all).expect("admit_all admits"));
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

/// The query language: any text parses or fails with an error that says where, never panics,
/// and the parser's own limits (length, nesting, clauses) hold. Also the time expressions
/// that `start` and `end` take.
pub fn query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = logsift_query::parse_query(text) {
        assert!(!e.to_string().is_empty());
    }
    let now = 1_700_000_000_000_000_000;
    let _ = logsift_core::time::parse_time_expr(text, now);
}

/// WAL payloads: what decodes re-encodes to the same bytes (the encoding is canonical, so
/// replay reproduces exactly what was appended).
pub fn entry(data: &[u8]) {
    if let Ok(e) = logsift_core::entry::Entry::decode(data) {
        assert_eq!(e.encode(), data);
    }
}

/// First byte even: the rest is a WAL file's body after a valid header (hostile entries).
/// Odd: the rest, split at newlines, is appended through the WAL, then one byte of the file
/// is flipped. Either way replay must not panic, must yield LSNs in increasing order, must
/// yield (in the second case) only entries that were appended, each under its own LSN (a
/// damaged entry is skipped, never altered or invented), and the WAL must take appends after
/// it and replay them next time.
pub fn wal(data: &[u8]) {
    use logsift_wal::{Wal, WalOptions};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir_in(scratch_dir()).expect("temp dir");
    let opts = WalOptions {
        dir: dir.path().to_path_buf(),
        max_file_bytes: 1 << 20,
    };
    let collect = |opts: &WalOptions| {
        let mut seen = Vec::new();
        let opened = Wal::open(opts, 1, |lsn, p| seen.push((lsn, p.to_vec())));
        opened.map(|(wal, _)| (wal, seen))
    };
    let appended: Vec<Vec<u8>>;
    {
        let (mut wal, _) = collect(&opts).expect("an empty WAL opens");
        if mode % 2 == 0 {
            appended = Vec::new();
            drop(wal);
        } else {
            appended = rest.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            for p in &appended {
                wal.append(p).expect("append");
            }
            wal.sync().expect("sync");
            drop(wal);
        }
    }
    let file = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a WAL file");
    let mut bytes = std::fs::read(&file).expect("read");
    if mode % 2 == 0 {
        bytes.extend_from_slice(rest);
    } else if !bytes.is_empty() {
        let at = (rest.len() * 7919 + usize::from(mode)) % bytes.len();
        bytes[at] ^= 1 << (mode % 8);
    }
    std::fs::write(&file, &bytes).expect("write");
    let Ok((mut wal, seen)) = collect(&opts) else {
        return; // A damaged header may be reported as an error: fine.
    };
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "LSNs out of order"
    );
    if mode % 2 == 1 {
        assert!(seen.len() <= appended.len());
        for (lsn, got) in &seen {
            let want = usize::try_from(*lsn)
                .ok()
                .and_then(|l| l.checked_sub(1))
                .and_then(|i| appended.get(i));
            assert_eq!(
                Some(got),
                want,
                "replay returned LSN {lsn} with a payload that was not appended under it"
            );
        }
    }
    let lsn = wal.append(b"after replay").expect("append after replay");
    wal.sync().expect("sync");
    drop(wal);
    let (_, again) = collect(&opts).expect("reopen");
    assert_eq!(again.last(), Some(&(lsn, b"after replay".to_vec())));
    assert_eq!(&again[..again.len() - 1], &seen[..]);
}

/// Sealed segment files. First byte even: the rest is the whole file. Odd: the next two
/// bytes give a body length, then the body, then the bundle directory; the footer (offset,
/// length, CRC32C, version, magic) is made valid here, so that the directory parser itself
/// is what gets explored. Opening must fail cleanly or list only files inside the segment.
pub fn segment(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 0 || rest.len() < 2 {
        rest.to_vec()
    } else {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (body, directory) = rest[2..].split_at(n);
        let mut out = body.to_vec();
        out.extend_from_slice(directory);
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&(directory.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(directory).to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(b"LSFTSEG\0");
        out
    };
    let mut file = tempfile::NamedTempFile::new_in(scratch_dir()).expect("temp file");
    std::io::Write::write_all(&mut file, &bytes).expect("write");
    if let Ok(dir) = logsift_store::segment::BundleDirectory::open(file.path()) {
        for (_, size) in dir.file_sizes() {
            assert!(size as usize <= bytes.len());
        }
        let _ = dir.verify_files();
    }
}

/// tmpfs when there is one: the WAL target fsyncs, and fsync on a disk would make each run
/// take milliseconds.
fn scratch_dir() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
