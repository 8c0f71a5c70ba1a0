//! The report: `report.json` (every number) and `report.md` (the tables for the README).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::gen::{Expected, CHANNELS};
use crate::queries::{Kind, RgTiming, Scope, Timing};
use crate::Ingest;

const MIB: f64 = 1024.0 * 1024.0;

pub struct CaseResult {
    pub name: &'static str,
    pub q: String,
    pub limit: usize,
    pub kind: Kind,
    pub scope: Scope,
    pub timing: Timing,
    pub rg: Option<RgTiming>,
}

pub struct Results {
    pub started_at: SystemTime,
    pub args_size_label: String,
    pub seed: u64,
    pub base_date: String,
    pub senders: [usize; 3],
    pub reps: usize,
    pub rg_reps: usize,
    pub settle_secs: u64,
    pub gen_secs: f64,
    pub expected: Expected,
    pub needle: String,
    pub top_host: String,
    pub window: (String, String),
    pub ingest: Ingest,
    /// `--import`: the same files through `logsift import` into a second fresh server.
    pub import: Option<Ingest>,
    /// (thread name, cores used on average during ingest)
    pub threads: Vec<(String, f64)>,
    pub rss_at_start: u64,
    pub peak_ingest: u64,
    pub idle_rss: u64,
    /// (anonymous, file-backed) parts of the idle RSS.
    pub idle_parts: (u64, u64),
    /// The whole data directory, `settle` after ingest ended, the server still running.
    pub running_disk_bytes: u64,
    pub rss_after_queries: u64,
    pub peak_total: u64,
    pub indexes_bytes: u64,
    pub wal_bytes: u64,
    /// Index bytes by file extension, largest first.
    pub index_files: Vec<(String, u64)>,
    /// Sealed segments: (raw bytes they hold, their file bytes, file bytes by tantivy kind).
    pub sealed: (u64, u64, Vec<(String, u64)>),
    pub export: crate::queries::ExportRun,
    pub stop_secs: f64,
    pub zstd: Option<(u64, Duration)>,
    pub zstd_version: Option<String>,
    pub rg_version: Option<String>,
    pub cases: Vec<CaseResult>,
    pub metrics_text: String,
    pub machine: Value,
}

pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    json!({
        "cpu": model,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_bytes": mem_kb * 1024,
        "kernel": kernel,
    })
}

fn date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    crate::gen::rfc3339_string(secs * crate::gen::NS)
}

fn rate(bytes: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        bytes as f64 / 1e6 / d.as_secs_f64()
    }
}

fn num_or_null(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

pub fn json(r: &Results) -> Value {
    let e = &r.expected;
    let i = &r.ingest;
    let secs = i.searchable_after.as_secs_f64();
    let raw = e.bytes as f64;
    let cases: Vec<Value> = r
        .cases
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "kind": format!("{:?}", c.kind).to_lowercase(),
                "q": c.q,
                "limit": c.limit,
                "scope": c.scope.name(),
                "status": c.timing.status,
                "total": c.timing.total,
                "expected_total": c.timing.expected,
                "first_ms": num_or_null(c.timing.first_ms),
                "p50_ms": num_or_null(c.timing.p50_ms),
                "p99_ms": num_or_null(c.timing.p99_ms),
                "server_took_p50_ms": num_or_null(c.timing.server_took_p50_ms),
                "samples": c.timing.samples,
                "ripgrep": c.rg.as_ref().map(|g| json!({
                    "status": g.status,
                    "lines": g.lines,
                    "p50_ms": num_or_null(g.p50_ms),
                    "samples": g.samples,
                })),
            })
        })
        .collect();
    let channels: Vec<Value> = CHANNELS
        .iter()
        .map(|&ch| {
            let c = ch as usize;
            json!({
                "channel": ch.name(),
                "senders": r.senders[c],
                "records": e.channel_records[c],
                "bytes": e.channel_bytes[c],
                "bytes_sent": i.channel_bytes[c],
                "last_sender_done_s": i.channel_done[c].as_secs_f64(),
                "send_mb_per_s": rate(i.channel_bytes[c], i.channel_done[c]),
            })
        })
        .collect();
    json!({
        "benchmark": "logsift e2e",
        "date": date(r.started_at),
        "command": format!("cargo bench --bench e2e -- --size {}", r.args_size_label),
        "machine": r.machine,
        "corpus": {
            "size_arg": r.args_size_label,
            "seed": r.seed,
            "base_date": r.base_date,
            "records": e.records,
            "bytes": e.bytes,
            "rfc5424_records": e.rfc5424,
            "rfc3164_records": e.rfc3164,
            "json_records": e.json,
            "generation_s": r.gen_secs,
            "needle": r.needle,
            "top_host": r.top_host,
            "window": {"start": r.window.0, "end": r.window.1, "records": e.all_window},
        },
        "ingest": {
            "searchable_after_s": secs,
            "mb_per_s": rate(e.bytes, i.searchable_after),
            "records_per_s": e.records as f64 / secs,
            "all_sent_after_s": i.sent_after.as_secs_f64(),
            "indexing_lag_s": (i.searchable_after.saturating_sub(i.sent_after)).as_secs_f64(),
            "channels": channels,
            "http_requests": i.http_requests,
            "http_retries_429_503": i.http_retries,
            "http_transport_retries": i.http_transport_retries,
            "http_accepted": i.http_accepted,
            "http_rejected": i.http_rejected,
            "count_polls": i.polls,
            "windows": i.windows.iter().map(|w| json!({"end_secs": w.0, "records_per_sec": w.1, "server_cpu_us_per_record": w.2})).collect::<Vec<_>>(),
            "server_cpu_cores": i.server_cores,
            "bench_process_cpu_cores": i.bench_cores,
            "machine_busy_cores": i.machine_busy_cores,
            "other_processes_cpu_cores": i.other_cores,
            "threads_cores": r.threads.iter().map(|(n, c)| json!({"thread": n, "cores": c})).collect::<Vec<_>>(),
        },
        "import": r.import.as_ref().map(|m| {
            let secs = m.searchable_after.as_secs_f64();
            json!({
                "searchable_after_s": secs,
                "mb_per_s": rate(e.bytes, m.searchable_after),
                "records_per_s": e.records as f64 / secs,
                "import_exited_after_s": m.sent_after.as_secs_f64(),
                "server_cpu_cores": m.server_cores,
            })
        }),
        "memory": {
            "rss_at_start_bytes": r.rss_at_start,
            "peak_rss_ingest_bytes": r.peak_ingest,
            "idle_rss_bytes": r.idle_rss,
            "idle_rss_anon_bytes": r.idle_parts.0,
            "idle_rss_file_bytes": r.idle_parts.1,
            "rss_after_queries_bytes": r.rss_after_queries,
            "peak_rss_overall_bytes": r.peak_total,
        },
        "disk": {
            "indexes_bytes": r.indexes_bytes,
            "wal_bytes": r.wal_bytes,
            "index_bytes_by_extension": r.index_files.iter().map(|(e, b)| json!({"ext": e, "bytes": b})).collect::<Vec<_>>(),
            "export": {"records": r.export.records, "bytes": r.export.bytes, "secs": r.export.secs, "server_anon_before_bytes": r.export.anon_before, "server_anon_peak_bytes": r.export.anon_peak},
            "sealed_raw_bytes": r.sealed.0,
            "sealed_file_bytes": r.sealed.1,
            "sealed_bytes_by_kind": r.sealed.2.iter().map(|(e, b)| json!({"ext": e, "bytes": b})).collect::<Vec<_>>(),
            "bytes_per_raw_byte": (r.indexes_bytes + r.wal_bytes) as f64 / raw,
            "running_bytes": r.running_disk_bytes,
            "running_bytes_per_raw_byte": r.running_disk_bytes as f64 / raw,
            "measured": "after SIGTERM (the server flushes, commits and exits); queries ran before the stop",
            "stop_s": r.stop_secs,
        },
        "baselines": {
            "zstd_version": r.zstd_version,
            "zstd3_bytes": r.zstd.map(|z| z.0),
            "zstd3_bytes_per_raw_byte": r.zstd.map(|z| z.0 as f64 / raw),
            "zstd3_s": r.zstd.map(|z| z.1.as_secs_f64()),
            "ripgrep_version": r.rg_version,
        },
        "queries": cases,
        "server_metrics": r.metrics_text,
    })
}

fn status(ok: bool) -> &'static str {
    if ok {
        "meets"
    } else {
        "**misses**"
    }
}

fn ms(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let groups: Vec<&str> = s
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or(""))
        .collect();
    groups.join(",")
}

pub fn markdown(r: &Results) -> String {
    let e = &r.expected;
    let i = &r.ingest;
    let raw = e.bytes as f64;
    let secs = i.searchable_after.as_secs_f64();
    let mbps = rate(e.bytes, i.searchable_after);
    let pct = |n: u64| 100.0 * n as f64 / e.records.max(1) as f64;
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### logsift e2e benchmark: {} corpus, {}\n",
        r.args_size_label,
        date(r.started_at)
    );
    let _ = writeln!(
        s,
        "Command: `cargo bench --bench e2e -- --size {}` (seed {}, senders syslog-tcp/json-tcp/http = {}/{}/{}, {} timed repetitions per query after one first call, ripgrep {} runs).  ",
        r.args_size_label, r.seed, r.senders[0], r.senders[1], r.senders[2], r.reps, r.rg_reps
    );
    let _ = writeln!(
        s,
        "Machine: {} cores ({}), {:.1} GiB RAM, Linux {}; the senders, ripgrep and zstd run on the same machine as the server.  ",
        m["cores"],
        m["cpu"].as_str().unwrap_or("?"),
        m["mem_bytes"].as_u64().unwrap_or(0) as f64 / MIB / 1024.0,
        m["kernel"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        s,
        "Corpus: {:.1} MB, {} records (RFC 5424 {:.0} %, RFC 3164 {:.0} %, JSON {:.0} %) over 24 h before {}; syslog TCP {:.1} MB, JSON TCP {:.1} MB, HTTP NDJSON {:.1} MB (1–4 MB bodies).\n",
        raw / 1e6,
        thousands(e.records),
        pct(e.rfc5424),
        pct(e.rfc3164),
        pct(e.json),
        r.base_date,
        e.channel_bytes[0] as f64 / 1e6,
        e.channel_bytes[1] as f64 / 1e6,
        e.channel_bytes[2] as f64 / 1e6,
    );

    // Targets.
    let needle_p50 = r
        .cases
        .iter()
        .find(|c| c.name.starts_with("needle") && c.scope == Scope::Whole)
        .map(|c| c.timing.p50_ms)
        .unwrap_or(f64::NAN);
    let disk_ratio = (r.indexes_bytes + r.wal_bytes) as f64 / raw;
    let syslog_rate = rate(i.channel_bytes[0], i.channel_done[0]);
    let _ = writeln!(s, "| target (issue #3) | measured | status |");
    let _ = writeln!(s, "|---|---|---|");
    let _ = writeln!(
        s,
        "| ingest ≥ 60 MB/s end to end over syslog TCP | {mbps:.1} MB/s end to end, all channels (syslog TCP share accepted at {syslog_rate:.1} MB/s) | {} |",
        status(mbps >= 60.0)
    );
    let _ = writeln!(
        s,
        "| needle query p50 ≤ 20 ms on 1 GB | {} ms on {} | {} |",
        ms(needle_p50),
        r.args_size_label,
        status(needle_p50 <= 20.0)
    );
    let _ = writeln!(
        s,
        "| disk ≤ 0.20 bytes per raw byte | {disk_ratio:.3} in all (sealed segments alone: {}) | {} |",
        if r.sealed.0 > 0 {
            format!("{:.3}", r.sealed.1 as f64 / r.sealed.0 as f64)
        } else {
            "none sealed".to_string()
        },
        status(disk_ratio <= 0.20)
    );
    let running_ratio = r.running_disk_bytes as f64 / raw;
    let _ = writeln!(
        s,
        "| disk ≤ 0.25 bytes per raw byte while running (issue #16), {} s after ingest ended | {running_ratio:.3} (the whole data directory: WAL, hot tiers, catalog) | {} |",
        r.settle_secs,
        status(running_ratio <= 0.25)
    );
    let _ = writeln!(
        s,
        "| peak RSS ≤ 1 GiB while ingesting | {:.0} MiB | {} |",
        r.peak_ingest as f64 / MIB,
        status(r.peak_ingest as f64 <= 1024.0 * MIB)
    );
    let _ = writeln!(
        s,
        "| idle RSS ≤ 150 MiB | {:.0} MiB | {} |\n",
        r.idle_rss as f64 / MIB,
        status(r.idle_rss as f64 <= 150.0 * MIB)
    );

    // Ingest.
    let _ = writeln!(s, "| ingest | value |");
    let _ = writeln!(s, "|---|---|");
    let _ = writeln!(
        s,
        "| first byte → all {} records searchable | {secs:.1} s: **{mbps:.1} MB/s, {} records/s** |",
        thousands(e.records),
        thousands((e.records as f64 / secs) as u64)
    );
    for ch in CHANNELS {
        let c = ch as usize;
        let extra = if c == 2 {
            format!(
                ", {} requests, {} retried after 429/503, {} after a closed connection",
                i.http_requests, i.http_retries, i.http_transport_retries
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| {} ({} senders): {:.1} MB accepted by | {:.1} s ({:.1} MB/s{extra}) |",
            ch.name(),
            r.senders[c],
            i.channel_bytes[c] as f64 / 1e6,
            i.channel_done[c].as_secs_f64(),
            rate(i.channel_bytes[c], i.channel_done[c])
        );
    }
    let _ = writeln!(
        s,
        "| last byte sent → all searchable | {:.1} s |",
        i.searchable_after
            .saturating_sub(i.sent_after)
            .as_secs_f64()
    );
    if !i.windows.is_empty() {
        let per_record: Vec<String> = i.windows.iter().map(|w| format!("{:.1}", w.2)).collect();
        let per_sec: Vec<String> = i
            .windows
            .iter()
            .map(|w| format!("{:.0}k", w.1 / 1000.0))
            .collect();
        let _ = writeln!(
            s,
            "| by 10-s window of ingest: server CPU per record, µs (records/s) | {} ({}) |",
            per_record.join(", "),
            per_sec.join(", ")
        );
    }
    let live: f64 = r.threads.iter().map(|t| t.1).sum();
    let mut busiest: Vec<String> = r
        .threads
        .iter()
        .take(8)
        .map(|(n, c)| format!("`{n}` {c:.2}"))
        .collect();
    busiest.push(format!(
        "unattributed (threads that exited between two 50 ms samples, such as tantivy's indexing threads) {:.2}",
        (i.server_cores - live).max(0.0)
    ));
    let _ = writeln!(
        s,
        "| server CPU during ingest, cores (by thread) | {:.2}: {} |",
        i.server_cores,
        busiest.join(", ")
    );
    let _ = writeln!(
        s,
        "| machine CPU during ingest, cores | {:.2} busy: server {:.2}, benchmark client {:.2}, other processes {:.2} |",
        i.machine_busy_cores, i.server_cores, i.bench_cores, i.other_cores
    );
    if let Some(m) = &r.import {
        let isecs = m.searchable_after.as_secs_f64();
        let _ = writeln!(
            s,
            "| `logsift import` of the same three files into a fresh server (one process, formats detected per file) → all searchable | {isecs:.1} s: **{:.1} MB/s, {} records/s** ({:.2}× the listeners; import exited after {:.1} s; server {:.2} cores) |",
            rate(e.bytes, m.searchable_after),
            thousands((e.records as f64 / isecs) as u64),
            secs / isecs,
            m.sent_after.as_secs_f64(),
            m.server_cores
        );
    }
    s.push('\n');

    // Queries.
    let _ = writeln!(
        s,
        "| query | `q` | scope | total (expected) | first ms | p50 ms | p99 ms | rg p50 ms (lines) | logsift ÷ rg |"
    );
    let _ = writeln!(s, "|---|---|---|---|---:|---:|---:|---:|---:|");
    for c in &r.cases {
        let t = &c.timing;
        let q = match c.kind {
            Kind::Search if c.limit != 100 => format!("`{}` limit={}", c.q, c.limit),
            Kind::Search => format!("`{}`", c.q),
            Kind::Histogram => "`/api/v1/histogram`".into(),
            Kind::Terms => "`/api/v1/terms?field=host`".into(),
            Kind::Patterns => "`/api/v1/patterns?size=20`".into(),
            Kind::Compare => "`/api/v1/compare` (incident; 1st minute)".into(),
        };
        if t.status != "ok" && !t.status.starts_with("WRONG TOTAL") {
            let _ = writeln!(
                s,
                "| {} | {q} | {} | {} | | | | | |",
                c.name,
                c.scope.name(),
                t.status
            );
            continue;
        }
        let total = match (t.total, t.expected) {
            (Some(g), Some(w)) if g == w => thousands(g),
            (Some(g), Some(w)) => format!("**{} (expected {})**", thousands(g), thousands(w)),
            (Some(g), None) => thousands(g),
            _ => "–".into(),
        };
        let (rg, ratio) = match &c.rg {
            Some(g) if g.status == "ok" => (
                format!("{} ({})", ms(g.p50_ms), thousands(g.lines)),
                format!("{:.3}×", t.p50_ms / g.p50_ms),
            ),
            Some(g) => (g.status.clone(), String::new()),
            None => (String::new(), String::new()),
        };
        let _ = writeln!(
            s,
            "| {} | {q} | {} | {total} | {} | {} | {} | {rg} | {ratio} |",
            c.name,
            c.scope.name(),
            ms(t.first_ms),
            ms(t.p50_ms),
            ms(t.p99_ms)
        );
    }
    let _ = writeln!(
        s,
        "\nWindow: {} to {} ({} records). Latency is wall time of the HTTP round trip (client side); p99 of {} samples is their maximum but one rank.\n",
        r.window.0,
        r.window.1,
        thousands(e.all_window),
        r.reps
    );

    // Disk and memory.
    let _ = writeln!(s, "| disk and memory | logsift | baseline |");
    let _ = writeln!(s, "|---|---|---|");
    let zstd = match r.zstd {
        Some((b, d)) => format!(
            "`zstd -3` of the raw files: {:.3} ({:.1} MB, {:.1} MB/s); logsift uses {:.1}× that",
            b as f64 / raw,
            b as f64 / 1e6,
            raw / 1e6 / d.as_secs_f64(),
            (r.indexes_bytes + r.wal_bytes) as f64 / b as f64
        ),
        None => "n/a (zstd not installed)".into(),
    };
    let _ = writeln!(
        s,
        "| bytes on disk per raw byte (after SIGTERM) | {disk_ratio:.3} (indexes {:.1} MB, WAL {:.1} MB) | {zstd} |",
        r.indexes_bytes as f64 / 1e6,
        r.wal_bytes as f64 / 1e6
    );
    let _ = writeln!(
        s,
        "| RSS: at start / peak while ingesting / idle after settling / after the queries | {:.0} / {:.0} / {:.0} / {:.0} MiB | |",
        r.rss_at_start as f64 / MIB,
        r.peak_ingest as f64 / MIB,
        r.idle_rss as f64 / MIB,
        r.rss_after_queries as f64 / MIB
    );
    let files: Vec<String> = r
        .index_files
        .iter()
        .take(8)
        .map(|(e, b)| format!("`.{e}` {:.3}", *b as f64 / raw))
        .collect();
    let _ = writeln!(
        s,
        "| index bytes per raw byte, by file kind | {} | |",
        files.join(", ")
    );
    if r.sealed.0 > 0 {
        let sealed_raw = r.sealed.0 as f64;
        let kinds: Vec<String> = r
            .sealed
            .2
            .iter()
            .take(8)
            .map(|(e, b)| format!("`.{e}` {:.3}", *b as f64 / sealed_raw))
            .collect();
        let _ = writeln!(
            s,
            "| sealed segments only: file bytes per raw byte they hold ({:.1} MB raw) | {:.3}: {} | |",
            sealed_raw / 1e6,
            r.sealed.1 as f64 / sealed_raw,
            kinds.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "| idle RSS by kind: anonymous (heap) / file-backed (mapped segment files) | {:.0} / {:.0} MiB | |",
        r.idle_parts.0 as f64 / MIB,
        r.idle_parts.1 as f64 / MIB
    );
    let _ = writeln!(
        s,
        "| export of every record (NDJSON over HTTP) | {} records, {:.0} MB in {:.1} s: {:.1} MB/s, {:.0} records/s; server heap {:.0} MiB before, {:.0} MiB at most during it | |",
        r.export.records,
        r.export.bytes as f64 / 1e6,
        r.export.secs,
        r.export.bytes as f64 / 1e6 / r.export.secs.max(1e-9),
        r.export.records as f64 / r.export.secs.max(1e-9),
        r.export.anon_before as f64 / MIB,
        r.export.anon_peak as f64 / MIB
    );
    let _ = writeln!(s, "| SIGTERM → exit | {:.1} s | |", r.stop_secs);
    s
}
