//! Parser throughput per format, in bytes per second on one core, against the usual baselines
//! in the same run: `syslog_loose` (the parser Vector uses) for syslog and
//! `serde_json::from_slice::<serde_json::Value>` for JSON lines.
//!
//! `cargo bench --bench parse -- --warm-up-time 1 --measurement-time 3`
//!
//! Inputs come from the shared corpus (`../shared/corpus` next to the checkout):
//! - rfc5424: the RFC and go-syslog valid RFC 5424 examples, plus Loghub's Linux_2k lines
//!   re-sent as RFC 5424 (their real host, app, pid and message; every other line carries a
//!   `timeQuality` / `origin` structured-data element as rsyslog and logger send it), since the
//!   examples alone are too few and too short to be a realistic mix;
//! - rfc3164: Loghub's Linux_2k.log (BSD syslog lines without PRI, as in /var/log/messages);
//! - json: every line of every `json/*.jsonl` file.
//!
//! Without the corpus the benchmark prints a message and does nothing.

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use logsift_parse::{parse_json, parse_syslog, ParseOptions};

fn corpus_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "parse bench: corpus folder {} is absent; skipping",
            dir.display()
        );
        None
    }
}

const OPTS: ParseOptions = ParseOptions {
    // 2019-02-08T09:37:49Z, after every corpus date.
    received_at_ns: 1_549_618_669_000_000_000,
    default_offset_secs: 0,
    logfmt: false,
};

/// Undoes the corpus TSV cell escaping (`\\ \t \n \r \xHH`); see the corpus README.
fn unescape(cell: &str) -> Vec<u8> {
    let b = cell.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let (byte, len) = match b[i + 1] {
                b't' => (b'\t', 2),
                b'n' => (b'\n', 2),
                b'r' => (b'\r', 2),
                b'x' => {
                    let hex = cell.get(i + 2..i + 4).unwrap_or("3f");
                    (u8::from_str_radix(hex, 16).unwrap_or(b'?'), 4)
                }
                other => (other, 2),
            };
            out.push(byte);
            i += len;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn lines_of(path: &Path) -> Vec<Vec<u8>> {
    let data = fs::read(path).unwrap_or_default();
    data.split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .filter(|l| !l.is_empty())
        .collect()
}

fn rfc5424_lines(dir: &Path, linux: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for file in [
        "rfc5424_rfc3164_examples.tsv",
        "go-syslog_machine_tests.tsv",
    ] {
        let text = fs::read_to_string(dir.join("syslog").join(file)).unwrap_or_default();
        for row in text.lines().skip(1) {
            let cells: Vec<&str> = row.split('\t').collect();
            if cells.get(1) == Some(&"rfc5424") && cells.get(2) == Some(&"true") {
                out.push(unescape(cells[0]));
            }
        }
    }
    for (i, line) in linux.iter().enumerate() {
        let r = parse_syslog(line, &OPTS);
        let ts = r.timestamp.unwrap_or(0);
        let (secs, nanos) = (ts.div_euclid(1_000_000_000), ts.rem_euclid(1_000_000_000));
        let time = chrono_free_rfc3339(secs, nanos / 1000);
        let sd = match i % 4 {
            0 => r#"[timeQuality tzKnown="1" isSynced="1" syncAccuracy="436500"]"#.to_string(),
            2 => format!(
                r#"[origin ip="10.0.{}.{}" software="rsyslogd" swVersion="8.2102.0"][meta sequenceId="{i}"]"#,
                i % 250,
                i % 200
            ),
            _ => "-".to_string(),
        };
        let nil = |v: &Option<std::borrow::Cow<'_, str>>| v.as_deref().unwrap_or("-").to_string();
        out.push(
            format!(
                "<{}>1 {time} {} {} {} - {sd} {}",
                30 + i % 8,
                nil(&r.host),
                nil(&r.app),
                nil(&r.procid),
                r.message
            )
            .into_bytes(),
        );
    }
    out
}

/// `YYYY-MM-DDThh:mm:ss.uuuuuuZ` without a date library (civil-from-days, Howard Hinnant).
fn chrono_free_rfc3339(secs: i64, micros: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = logsift_core::time::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn json_lines(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("json"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .flat_map(|p| lines_of(p))
        .collect()
}

fn total(lines: &[Vec<u8>]) -> u64 {
    lines.iter().map(|l| l.len() as u64).sum()
}

fn bench_syslog(c: &mut Criterion, name: &str, lines: &[Vec<u8>]) {
    // syslog_loose takes &str: convert once, outside the measurement.
    let strings: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(total(lines)));
    group.bench_function("logsift", |b| {
        b.iter(|| {
            for line in lines {
                black_box(parse_syslog(black_box(line), &OPTS));
            }
        })
    });
    group.bench_function("syslog_loose", |b| {
        b.iter(|| {
            for line in &strings {
                // A fixed year: `parse_message` would read the clock and the local zone for
                // every line, which is not what a server does.
                black_box(syslog_loose::parse_message_with_year(
                    black_box(line),
                    |_| 2019,
                    syslog_loose::Variant::Either,
                ));
            }
        })
    });
    group.finish();
}

fn bench_json(c: &mut Criterion, lines: &[Vec<u8>]) {
    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Bytes(total(lines)));
    group.bench_function("logsift", |b| {
        b.iter(|| {
            for line in lines {
                black_box(parse_json(black_box(line), &OPTS));
            }
        })
    });
    group.bench_function("serde_json_value", |b| {
        b.iter(|| {
            for line in lines {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(line)).ok());
            }
        })
    });
    group.finish();
}

fn parsers(c: &mut Criterion) {
    let Some(dir) = corpus_dir() else {
        return;
    };
    let linux = lines_of(&dir.join("loghub/Linux/Linux_2k.log"));
    let rfc5424 = rfc5424_lines(&dir, &linux);
    let json = json_lines(&dir);
    eprintln!(
        "parse bench inputs: rfc5424 {} lines / {} B, rfc3164 {} lines / {} B, json {} lines / {} B",
        rfc5424.len(),
        total(&rfc5424),
        linux.len(),
        total(&linux),
        json.len(),
        total(&json)
    );
    bench_syslog(c, "rfc5424", &rfc5424);
    bench_syslog(c, "rfc3164", &linux);
    bench_json(c, &json);
}

criterion_group!(benches, parsers);
criterion_main!(benches);
