//! The end-to-end load benchmark: `cargo bench --bench e2e -- --size 1GB`.
//!
//! 1. Generates a deterministic corpus of mixed RFC 5424 / RFC 3164 / JSON traffic (see
//!    `e2e/gen.rs` for the families and proportions) into a temporary directory, one file per
//!    channel, with planted needles whose answers are known.
//! 2. Measures the baselines on the raw files: `zstd -3` (bytes) and ripgrep (search).
//! 3. Starts the release `logsift serve` (the binary `cargo bench` built) on loopback port 0 in
//!    a fresh data directory, ships the corpus with concurrent senders over syslog TCP, JSON
//!    lines TCP and HTTP NDJSON, and polls until every record is searchable: that is the ingest
//!    time. It polls the cheap document count of `GET /api/v1/indexes` every 250 ms (50 ms once
//!    all bytes are sent) and confirms with the exact `GET /api/v1/search?q=*&limit=0` total
//!    (also every 20th poll), because a `q=*` count visits every document and polling it
//!    would slow the server it measures.
//! 4. Lets the server settle, reads its idle RSS and the bytes of its whole data directory
//!    (the disk while running), runs the query suite (whole corpus and a
//!    1-minute window, `--reps` timed repetitions after one first call), then stops it with
//!    SIGTERM and measures the data directory (`indexes/` + `wal/`).
//! 5. Writes `target/bench/report.json` and `target/bench/report.md` and prints the table.
//!
//! Flags (after `--`): `--size 100MB|1GB|10GB` (decimal units; MiB/GiB binary), `--seed N`,
//! `--base-date YYYY-MM-DD` (the corpus covers the 24 h before its midnight UTC; default
//! today, so RFC 3164 lines without a year land in the right one), `--senders S,J,H` (syslog
//! TCP, JSON TCP, HTTP; default 4,2,2), `--reps N` (default 20), `--rg-reps N` (default 5),
//! `--settle-secs N` (default 10), `--timeout-secs N`, `--tmp DIR`, `--out DIR`, `--keep` (keep
//! the temporary directory), `--gen-only DIR` (write the corpus to DIR, print its expected
//! answers, and stop), `--import` (then also time `logsift import` of the same files into a
//! second fresh server, against the listeners' figure of the same run), `--server-config FILE`
//! (TOML appended to the server's configuration, to compare settings), `--object-store` (keep
//! segments in an S3-protocol server, `s3s-fs` from `tests/run-all.sh`, then report upload
//! times, the store's bytes, and a cold start without the segment cache followed by the query
//! suite again), `--searchers N` (with `--object-store`: then the catalog moved into a
//! PostgreSQL the bench starts, N searchers beside the server, and the query suite through the
//! server sharing its queries with them, against one searcher alone). `LOGSIFT_E2E_BINARY=PATH`
//! measures another `logsift` build (an older version) instead of the one just built.
//!
//! Run without `--bench` (as `cargo test --benches` does) it only prints how to run it.

#[path = "e2e/gen.rs"]
mod gen;
#[path = "e2e/queries.rs"]
mod queries;
#[path = "e2e/report.rs"]
mod report;
#[path = "e2e/server.rs"]
mod server;
#[path = "e2e/ship.rs"]
mod ship;
// The S3-protocol server the object storage tests start (s3s-fs); only std inside.
#[allow(dead_code)]
#[path = "../tests/common/s3.rs"]
mod s3;
// The PostgreSQL the metastore tests start (initdb in a temporary directory); only std inside.
#[allow(dead_code)]
#[path = "../tests/common/pg.rs"]
mod pg;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use gen::{Channel, CHANNELS};
use report::{CaseResult, Results};

pub struct Args {
    bench: bool,
    size: u64,
    size_label: String,
    seed: u64,
    base_day: i64,
    senders: [usize; 3],
    reps: usize,
    rg_reps: usize,
    settle: Duration,
    timeout: Option<Duration>,
    tmp: Option<PathBuf>,
    out: PathBuf,
    keep: bool,
    gen_only: Option<PathBuf>,
    import: bool,
    /// Keep segments in an S3-protocol server (s3s-fs) and measure publishing and a cold start.
    object_store: bool,
    /// With `object_store`: searchers to start beside the server, sharing its queries.
    searchers: usize,
    /// TOML appended to the server's configuration.
    server_config: String,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        u => return Err(format!("unknown size unit {u:?} in {s:?}")),
    };
    let bytes = (n * mult) as u64;
    if bytes < 1_000_000 {
        return Err(format!("size {s:?} is below 1MB"));
    }
    Ok(bytes)
}

fn parse_date(s: &str) -> Result<i64, String> {
    let parts: Vec<&str> = s.split('-').collect();
    let bad = || format!("bad date {s:?} (want YYYY-MM-DD)");
    if parts.len() != 3 {
        return Err(bad());
    }
    let y: i64 = parts[0].parse().map_err(|_| bad())?;
    let m: u32 = parts[1].parse().map_err(|_| bad())?;
    let d: u32 = parts[2].parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    Ok(gen::days_from_civil(y, m, d))
}

fn today_days() -> i64 {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (secs / 86_400) as i64
}

fn parse_args() -> Result<Args, String> {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let mut a = Args {
        bench: false,
        size: 100_000_000,
        size_label: "100MB".into(),
        seed: 42,
        base_day: today_days(),
        senders: [4, 2, 2],
        reps: 20,
        rg_reps: 5,
        settle: Duration::from_secs(10),
        timeout: None,
        tmp: None,
        out: target_dir.join("bench"),
        keep: false,
        gen_only: None,
        import: false,
        object_store: false,
        searchers: 0,
        server_config: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let num = |v: String| -> Result<u64, String> {
            v.parse::<u64>().map_err(|_| format!("bad number {v:?}"))
        };
        match flag.as_str() {
            "--bench" => a.bench = true,
            "--size" => {
                let v = value()?;
                a.size = parse_size(&v)?;
                a.size_label = v;
            }
            "--seed" => a.seed = num(value()?)?,
            "--base-date" => a.base_day = parse_date(&value()?)?,
            "--senders" => {
                let v = value()?;
                let n: Vec<usize> = v
                    .split(',')
                    .map(|x| x.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("bad --senders {v:?}"))?;
                if n.len() != 3 || n.iter().any(|&x| x == 0 || x > 64) {
                    return Err(format!("--senders wants three counts 1..64, got {v:?}"));
                }
                a.senders = [n[0], n[1], n[2]];
            }
            "--reps" => a.reps = num(value()?)?.clamp(1, 10_000) as usize,
            "--rg-reps" => a.rg_reps = num(value()?)?.clamp(1, 100) as usize,
            "--settle-secs" => a.settle = Duration::from_secs(num(value()?)?),
            "--timeout-secs" => a.timeout = Some(Duration::from_secs(num(value()?)?)),
            "--tmp" => a.tmp = Some(PathBuf::from(value()?)),
            "--out" => a.out = PathBuf::from(value()?),
            "--keep" => a.keep = true,
            "--import" => a.import = true,
            "--object-store" => a.object_store = true,
            "--searchers" => a.searchers = num(value()?)?.clamp(1, 8) as usize,
            "--server-config" => {
                let path = value()?;
                a.server_config = std::fs::read_to_string(&path)
                    .map_err(|e| format!("--server-config {path}: {e}"))?;
            }
            "--gen-only" => a.gen_only = Some(PathBuf::from(value()?)),
            // libtest-style flags that `cargo bench`/`cargo test` may pass: ignore.
            "--nocapture" | "--quiet" | "--exact" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("e2e: {e}");
            std::process::exit(2);
        }
    };
    if let Some(dir) = &args.gen_only {
        // Only write the corpus (for inspection or other tools) and describe it.
        let result = std::fs::create_dir_all(dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                gen::generate(dir, args.size, args.seed, args.base_day).map_err(|e| e.to_string())
            });
        match result {
            Ok(c) => println!(
                "{:#?}\nneedle {} top host {} window {} .. {}",
                c.expected,
                c.needle,
                c.top_host,
                gen::rfc3339_string(c.window_start_ns),
                gen::rfc3339_string(c.window_end_ns)
            ),
            Err(e) => {
                eprintln!("e2e: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if !args.bench {
        println!(
            "e2e: the load benchmark runs under `cargo bench --bench e2e -- --size 100MB`; skipped"
        );
        return;
    }
    // Everything that needs cleaning up (server, temp dir) lives inside `run` and is dropped
    // before we exit, on success and on failure.
    if let Err(e) = run(&args) {
        eprintln!("\ne2e benchmark FAILED: {e}");
        std::process::exit(1);
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn run(args: &Args) -> Result<(), String> {
    let started_at = SystemTime::now();
    let mut tmp_builder = tempfile::Builder::new();
    tmp_builder.prefix("logsift-e2e-");
    let tmp = match &args.tmp {
        Some(d) => tmp_builder.tempdir_in(d),
        None => tmp_builder.tempdir(),
    }
    .map_err(|e| format!("temp dir: {e}"))?;
    let root = tmp.path().to_path_buf();
    let result = run_in(args, &root, started_at);
    if result.is_err() {
        // Keep the server's log for the post-mortem; the temp dir goes away below.
        let log = root.join("server").join("server.log");
        let kept = args.out.join("server-failed.log");
        if log.exists()
            && std::fs::create_dir_all(&args.out).is_ok()
            && std::fs::copy(&log, &kept).is_ok()
        {
            eprintln!("e2e: server log copied to {}", kept.display());
        }
    }
    if args.keep {
        let kept = tmp.keep();
        eprintln!("e2e: kept {}", kept.display());
    } else {
        drop(tmp);
    }
    result
}

fn run_in(args: &Args, root: &std::path::Path, started_at: SystemTime) -> Result<(), String> {
    let corpus_dir = root.join("corpus");
    std::fs::create_dir_all(&corpus_dir).map_err(|e| e.to_string())?;

    // 1. The corpus.
    eprintln!(
        "e2e: generating {} ({} bytes, seed {}) in {}",
        args.size_label,
        args.size,
        args.seed,
        corpus_dir.display()
    );
    let t = Instant::now();
    let corpus = gen::generate(&corpus_dir, args.size, args.seed, args.base_day)
        .map_err(|e| format!("generating the corpus: {e}"))?;
    let gen_secs = t.elapsed().as_secs_f64();
    let exp = corpus.expected.clone();
    eprintln!(
        "e2e: {} records, {:.1} MB in {:.1} s (syslog-tcp {:.1} MB, json-tcp {:.1} MB, http {:.1} MB)",
        exp.records,
        mb(exp.bytes),
        gen_secs,
        mb(exp.channel_bytes[0]),
        mb(exp.channel_bytes[1]),
        mb(exp.channel_bytes[2])
    );
    let files: Vec<PathBuf> = corpus.files.to_vec();

    // 2. Baselines, on an otherwise idle machine (the server is not running yet).
    let zstd_version = queries::tool_version("zstd");
    let zstd = if zstd_version.is_some() {
        eprintln!("e2e: zstd -3 baseline");
        Some(queries::zstd3(&files)?)
    } else {
        None
    };
    let rg_version = queries::tool_version("rg");
    let cases = queries::suite(&corpus);
    let mut rg_results = Vec::new();
    for case in &cases {
        let r = match (&case.rg, &rg_version) {
            (Some(p), Some(_)) => {
                eprintln!("e2e: ripgrep baseline for {:?}", p);
                Some(queries::ripgrep(p, &files, args.rg_reps))
            }
            (Some(_), None) => Some(queries::RgTiming {
                status: "n/a (rg not installed: apt-get install ripgrep)".into(),
                ..Default::default()
            }),
            _ => None,
        };
        rg_results.push(r);
    }

    // 3. Ingest.
    let server_dir = root.join("server");
    std::fs::create_dir_all(&server_dir).map_err(|e| e.to_string())?;
    let s3 = args
        .object_store
        .then(|| s3::S3::start(&root.join("s3"), OBJECT_BUCKET));
    let overlay = match &s3 {
        Some(s3) => format!(
            "{}\n{}",
            args.server_config,
            s3.storage_config(OBJECT_BUCKET, "bench")
        ),
        None => args.server_config.clone(),
    };
    let mut srv = server::Server::start(&server_dir, &overlay)?;
    eprintln!(
        "e2e: logsift pid {} http {} syslog-tcp {} json-tcp {}",
        srv.pid, srv.http, srv.syslog_tcp, srv.json_tcp
    );
    let rss_at_start = server::rss(srv.pid).map(|r| r.0).unwrap_or(0);
    let sampler = server::RssSampler::start(srv.pid);
    let thread_sampler = server::ThreadCpuSampler::start(srv.pid);
    let pid = srv.pid.to_string();
    let (server_before, self_before, machine_before) = (
        server::process_cpu(&pid),
        server::process_cpu("self"),
        server::machine_cpu(),
    );
    let mut ingest = ship_corpus(args, &corpus, &mut srv, Shipping::Listeners)?;
    let cpu_used = thread_sampler.finish();
    let machine_after = server::machine_cpu();
    let ticks = server::clock_ticks();
    let wall = ingest.searchable_after.as_secs_f64();
    ingest.server_cores = (server::process_cpu(&pid) - server_before) as f64 / ticks / wall;
    ingest.bench_cores = (server::process_cpu("self") - self_before) as f64 / ticks / wall;
    let busy = machine_after.0.saturating_sub(machine_before.0) as f64;
    let total = machine_after.1.saturating_sub(machine_before.1).max(1) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    ingest.machine_busy_cores = busy / total * cores;
    ingest.other_cores =
        (ingest.machine_busy_cores - ingest.server_cores - ingest.bench_cores).max(0.0);
    eprintln!(
        "e2e: ingest done: {} records, {:.1} MB in {:.2} s: {:.1} MB/s, {:.0} records/s; server {:.2} cores, {:.2} µs CPU per record",
        exp.records,
        mb(exp.bytes),
        wall,
        mb(exp.bytes) / wall,
        exp.records as f64 / wall,
        ingest.server_cores,
        ingest.server_cores * wall * 1e6 / exp.records.max(1) as f64
    );
    let peak_ingest = sampler.peak();
    let mut threads: Vec<(String, f64)> = cpu_used
        .iter()
        .map(|(name, &used)| {
            (
                name.clone(),
                used as f64 / ticks / ingest.searchable_after.as_secs_f64(),
            )
        })
        .filter(|(_, cores)| *cores > 0.0)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    let metrics_text = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .ok()
        .and_then(|c| c.get(format!("{}/metrics", srv.http)).send().ok())
        .and_then(|r| r.text().ok())
        .unwrap_or_default();

    // 4. Idle, then queries.
    eprintln!("e2e: settling {:?} before reading idle RSS", args.settle);
    std::thread::sleep(args.settle);
    let idle_rss = server::rss(srv.pid).map(|r| r.0).unwrap_or(0);
    // The disk while running: everything under the data directory (WAL, hot tiers, catalog)
    // at least `settle` after the last record, before the stop seals and truncates.
    let running_disk_bytes = server::dir_bytes(&srv.data_dir);
    let idle_parts = server::rss_parts(srv.pid);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let mut case_results = Vec::new();
    for (case, rg) in cases.iter().zip(rg_results) {
        for scope in [queries::Scope::Whole, queries::Scope::Window] {
            let t = queries::run_case(&client, &srv.http, case, scope, &corpus, args.reps);
            eprintln!(
                "e2e: {:<32} {:<16} {:>10} p50 {:>8.2} ms p99 {:>8.2} ms  {}",
                case.name,
                scope.name(),
                t.total.map(|n| n.to_string()).unwrap_or_default(),
                t.p50_ms,
                t.p99_ms,
                t.status
            );
            case_results.push(CaseResult {
                name: case.name,
                q: case.q.clone(),
                limit: case.limit,
                kind: case.kind,
                scope,
                timing: t,
                rg: if scope == queries::Scope::Whole {
                    rg.clone()
                } else {
                    None
                },
            });
        }
    }
    let rss_after_queries = server::rss(srv.pid).map(|r| r.0).unwrap_or(0);
    let peak_total = sampler.peak();
    drop(sampler);

    // 4b. The auditors' path: export every record, streamed, in constant memory.
    eprintln!("e2e: exporting every record");
    let export = queries::export_all(&client, &srv.http, srv.pid)?;
    if export.records != exp.records {
        return Err(format!(
            "the export held {} records, the corpus {}",
            export.records, exp.records
        ));
    }

    // 5. Stop (SIGTERM: queued records are flushed and committed), then measure the disk.
    eprintln!("e2e: stopping logsift (SIGTERM)");
    let stop_time = srv.stop(Duration::from_secs(300))?;
    let indexes_bytes = server::dir_bytes(&srv.data_dir.join("indexes"));
    let wal_bytes = server::dir_bytes(&srv.data_dir.join("wal"));
    let index_files = server::bytes_by_extension(&srv.data_dir.join("indexes"));
    let sealed = server::sealed_space(&srv.data_dir.join("indexes"));
    let object_report = match &s3 {
        Some(s3) => Some(object_store_report(
            args,
            &corpus,
            &cases,
            &server_dir,
            &overlay,
            s3,
        )?),
        None => None,
    };
    let searchers_report = match &s3 {
        Some(_) if args.searchers > 0 => Some(searchers_report(
            args,
            &corpus,
            &cases,
            root,
            &server_dir,
            &overlay,
        )?),
        _ => None,
    };

    // 6. Optionally, the same files through `logsift import` into a fresh server.
    let import = if args.import {
        let dir = root.join("import-server");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut srv = server::Server::start(&dir, &args.server_config)?;
        eprintln!("e2e: logsift import of the corpus into a fresh server");
        let pid = srv.pid.to_string();
        let before = server::process_cpu(&pid);
        let mut result = ship_corpus(args, &corpus, &mut srv, Shipping::Import)?;
        result.server_cores = (server::process_cpu(&pid) - before) as f64
            / server::clock_ticks()
            / result.searchable_after.as_secs_f64();
        srv.stop(Duration::from_secs(300))?;
        Some(result)
    } else {
        None
    };

    let results = Results {
        started_at,
        args_size_label: args.size_label.clone(),
        seed: args.seed,
        base_date: gen::rfc3339_string(args.base_day * 86_400 * gen::NS),
        senders: args.senders,
        reps: args.reps,
        rg_reps: args.rg_reps,
        settle_secs: args.settle.as_secs(),
        gen_secs,
        expected: exp,
        needle: corpus.needle.clone(),
        top_host: corpus.top_host.clone(),
        window: (
            gen::rfc3339_string(corpus.window_start_ns),
            gen::rfc3339_string(corpus.window_end_ns),
        ),
        ingest,
        import,
        threads,
        rss_at_start,
        peak_ingest,
        idle_rss,
        idle_parts,
        running_disk_bytes,
        rss_after_queries,
        peak_total,
        indexes_bytes,
        wal_bytes,
        sealed,
        export,
        index_files,
        stop_secs: stop_time.as_secs_f64(),
        zstd,
        zstd_version,
        rg_version,
        cases: case_results,
        metrics_text,
        machine: report::machine(),
    };
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let json = report::json(&results);
    let md = report::markdown(&results);
    let json_path = args.out.join("report.json");
    let md_path = args.out.join("report.md");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", json_path.display()))?;
    let md = md
        + object_report.as_deref().unwrap_or_default()
        + searchers_report.as_deref().unwrap_or_default();
    std::fs::write(&md_path, &md).map_err(|e| format!("{}: {e}", md_path.display()))?;
    println!("\n{md}");
    eprintln!(
        "e2e: wrote {} and {}",
        json_path.display(),
        md_path.display()
    );
    Ok(())
}

const OBJECT_BUCKET: &str = "logsift-bench";

/// With `--object-store`, after the stopped run: how long uploads took (from the server's
/// `uploaded segment` log lines), how many bytes the store holds, and a cold start: the
/// segment cache removed, the server started again on the same data directory (it downloads
/// every catalogued segment before it is ready) and the query suite run once more.
fn object_store_report(
    args: &Args,
    corpus: &gen::Corpus,
    cases: &[queries::Case],
    server_dir: &std::path::Path,
    overlay: &str,
    s3: &s3::S3,
) -> Result<String, String> {
    let log = std::fs::read_to_string(server_dir.join("server.log")).unwrap_or_default();
    let field = |line: &str, key: &str| -> Option<f64> {
        let at = line.find(&format!("{key}="))? + key.len() + 1;
        line[at..]
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()?
            .parse()
            .ok()
    };
    let mut uploads: Vec<(f64, f64)> = log
        .lines()
        .filter(|l| l.contains("uploaded segment"))
        .filter_map(|l| Some((field(l, "upload_ms")?, field(l, "bytes")?)))
        .collect();
    uploads.sort_by(|a, b| a.0.total_cmp(&b.0));
    let ms: Vec<f64> = uploads.iter().map(|u| u.0).collect();
    let uploaded: f64 = uploads.iter().map(|u| u.1).sum();
    let upload_secs: f64 = ms.iter().sum::<f64>() / 1e3;
    let stored = server::dir_bytes(&s3.root);

    let cache = server_dir.join("data/segment-cache");
    let _ = std::fs::remove_dir_all(&cache);
    eprintln!("e2e: cold start from the object store (segment cache removed)");
    let started = Instant::now();
    let mut srv = server::Server::start(server_dir, overlay)?;
    let ready = started.elapsed();
    let downloaded = server::dir_bytes(&cache);
    let fetched = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .map(|index| {
            std::fs::read_dir(index.path())
                .into_iter()
                .flatten()
                .count()
        })
        .sum::<usize>();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows = String::new();
    for case in cases {
        for scope in [queries::Scope::Whole, queries::Scope::Window] {
            let t = queries::run_case(&client, &srv.http, case, scope, corpus, args.reps);
            rows += &format!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {} |\n",
                case.name,
                scope.name(),
                t.first_ms,
                t.p50_ms,
                t.p99_ms,
                t.status
            );
        }
    }
    srv.stop(Duration::from_secs(300))?;
    let pct = |p: f64| queries::percentile(&ms, p);
    Ok(format!(
        "\n## Segments on object storage (s3s-fs on loopback)\n\n\
         | measure | value |\n|---|---:|\n\
         | segments uploaded | {} ({:.1} MB) |\n\
         | upload time per segment p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |\n\
         | upload throughput | {:.1} MB/s |\n\
         | bytes in the object store (the local disk then holds the catalog and WAL) | {:.1} MB, {:.3} per raw byte |\n\
         | cold start: ready after | {:.2} s, {} segments ({:.1} MB) downloaded |\n\n\
         After the cold start (every segment cached again), ms:\n\n\
         | query | scope | first | p50 | p99 | status |\n|---|---|---:|---:|---:|---|\n{rows}",
        ms.len(),
        mb(uploaded as u64),
        pct(0.5),
        pct(0.99),
        ms.last().copied().unwrap_or(f64::NAN),
        mb(uploaded as u64) / upload_secs.max(1e-9),
        mb(stored),
        stored as f64 / corpus.expected.bytes.max(1) as f64,
        ready.as_secs_f64(),
        fetched,
        mb(downloaded),
    ))
}

/// With `--searchers N`, after the object store report: a PostgreSQL started here takes the
/// server's catalog (imported as the server opens), N searchers start beside it on empty
/// directories and download what it lists, and the query suite runs through the server
/// (its searches, histograms and terms shared with the searchers) and through one searcher
/// alone, which serves everything sealed from its own cache.
fn searchers_report(
    args: &Args,
    corpus: &gen::Corpus,
    cases: &[queries::Case],
    root: &std::path::Path,
    server_dir: &std::path::Path,
    overlay: &str,
) -> Result<String, String> {
    let pg = pg::Pg::start(&root.join("pg"));
    let shared = format!("{overlay}\n[metastore]\nurl = \"{}\"\n", pg.url());
    eprintln!("e2e: {} searchers beside the server", args.searchers);
    let started = Instant::now();
    let mut searchers = Vec::new();
    for i in 0..args.searchers {
        let dir = root.join(format!("searcher-{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let config = format!("{shared}[node]\nrole = \"searcher\"\nrefresh_ms = 500\n");
        searchers.push(server::Server::start(&dir, &config)?);
    }
    let urls: Vec<String> = searchers.iter().map(|s| format!("{:?}", s.http)).collect();
    let root_config = format!("{shared}[node]\nsearchers = [{}]\n", urls.join(", "));
    let mut srv = server::Server::start(server_dir, &root_config)?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let total = |http: &str| -> Option<u64> {
        let v: serde_json::Value = client
            .get(format!("{http}/api/v1/search?q=*&limit=0"))
            .send()
            .ok()?
            .json()
            .ok()?;
        v["total"].as_u64()
    };
    let want = corpus.expected.records;
    let deadline = Instant::now() + Duration::from_secs(600);
    for s in &searchers {
        while total(&s.http) != Some(want) {
            if Instant::now() > deadline {
                return Err(format!("a searcher never served the {want} records"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let caught_up = started.elapsed();
    let mut rows = String::new();
    for case in cases {
        for scope in [queries::Scope::Whole, queries::Scope::Window] {
            let shared = queries::run_case(&client, &srv.http, case, scope, corpus, args.reps);
            let alone =
                queries::run_case(&client, &searchers[0].http, case, scope, corpus, args.reps);
            rows += &format!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
                case.name,
                scope.name(),
                shared.p50_ms,
                shared.p99_ms,
                alone.p50_ms,
                alone.p99_ms,
                shared.status
            );
        }
    }
    srv.stop(Duration::from_secs(300))?;
    for mut s in searchers {
        s.stop(Duration::from_secs(60))?;
    }
    Ok(format!(
        "\n## Queries shared with {n} searchers (PostgreSQL catalog, s3s-fs, one machine)\n\n\
         Searchers started on empty directories served every record after {:.2} s (catalog \
         imported into PostgreSQL by the server, every segment downloaded by each searcher).\n\n\
         | query | scope | shared p50 | shared p99 | one searcher p50 | one searcher p99 | status (shared) |\n\
         |---|---|---:|---:|---:|---:|---|\n{rows}",
        caught_up.as_secs_f64(),
        n = args.searchers,
    ))
}

#[derive(Debug, Clone, Default)]
pub struct Ingest {
    /// First byte sent → `q=*` total equals the records sent.
    pub searchable_after: Duration,
    /// First byte sent → the last sender finished.
    pub sent_after: Duration,
    /// Per channel: bytes and when its last sender finished.
    pub channel_done: [Duration; 3],
    pub channel_bytes: [u64; 3],
    pub http_requests: u64,
    pub http_retries: u64,
    pub http_transport_retries: u64,
    pub http_accepted: u64,
    pub http_rejected: u64,
    pub polls: u64,
    /// Per 10-s window of ingest, as the progress lines print it: its end (seconds after the
    /// first byte), records made searchable per second, and server CPU per record (µs),
    /// which shows whether ingest gets dearer per record as data grows.
    pub windows: Vec<(f64, f64, f64)>,
    /// Average cores used during ingest: by the server process (all its threads, including
    /// exited ones), by this benchmark process (senders, polling), by the whole machine, and
    /// by everything else on the machine (other users' work skews the result).
    pub server_cores: f64,
    pub bench_cores: f64,
    pub machine_busy_cores: f64,
    pub other_cores: f64,
}

/// How the corpus reaches the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shipping {
    /// Concurrent senders over syslog TCP, JSON lines TCP and HTTP NDJSON.
    Listeners,
    /// One `logsift import` of the three files (formats detected per file).
    Import,
}

fn ship_corpus(
    args: &Args,
    corpus: &gen::Corpus,
    srv: &mut server::Server,
    shipping: Shipping,
) -> Result<Ingest, String> {
    let exp = &corpus.expected;
    // A generous bound: 2 minutes plus 2 s per MB (0.5 MB/s would be far below any target).
    let timeout = args
        .timeout
        .unwrap_or(Duration::from_secs(120 + 2 * exp.bytes / 1_000_000));
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let count_url = format!("{}/api/v1/search", srv.http);
    let indexes_url = format!("{}/api/v1/indexes", srv.http);
    let index_docs = |client: &reqwest::blocking::Client| -> Option<u64> {
        let v: serde_json::Value = client.get(&indexes_url).send().ok()?.json().ok()?;
        Some(
            v["indexes"]
                .as_array()?
                .iter()
                .filter_map(|i| i["docs"].as_u64())
                .sum(),
        )
    };
    let count = |client: &reqwest::blocking::Client| -> Option<u64> {
        let r = client
            .get(&count_url)
            .query(&[("q", "*"), ("limit", "0")])
            .send()
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json::<serde_json::Value>().ok()?["total"].as_u64()
    };
    if let Some(n) = count(&client).filter(|&n| n != 0) {
        return Err(format!("a fresh server already holds {n} records"));
    }

    let t0 = Instant::now();
    let mut handles = Vec::new();
    if shipping == Shipping::Import {
        let http = srv.http.clone();
        let files = corpus.files.clone();
        let bytes = exp.bytes;
        handles.push((
            Channel::Http,
            std::thread::Builder::new()
                .name("import".into())
                .spawn(move || ship::import(&http, &files, bytes, t0))
                .map_err(|e| e.to_string())?,
        ));
    }
    for ch in CHANNELS
        .into_iter()
        .filter(|_| shipping == Shipping::Listeners)
    {
        let n = args.senders[ch as usize];
        let path = corpus.files[ch as usize].clone();
        let ranges =
            ship::split_at_lines(&path, n).map_err(|e| format!("{}: {e}", path.display()))?;
        for (i, range) in ranges.into_iter().enumerate() {
            let path = path.clone();
            let http = srv.http.clone();
            let (syslog, json) = (srv.syslog_tcp, srv.json_tcp);
            let seed = args.seed ^ (i as u64 + 1);
            handles.push((
                ch,
                std::thread::Builder::new()
                    .name(format!("send-{}-{i}", ch.name()))
                    .spawn(move || match ch {
                        Channel::SyslogTcp => ship::send_tcp(syslog, &path, range, t0),
                        Channel::JsonTcp => ship::send_tcp(json, &path, range, t0),
                        Channel::Http => ship::send_http(&http, &path, range, seed, t0),
                    })
                    .map_err(|e| e.to_string())?,
            ));
        }
    }

    let mut res = Ingest::default();
    let mut results: Vec<Option<(Channel, ship::SendResult)>> = Vec::new();
    let mut last_total = 0u64;
    let mut last_change = Instant::now();
    let mut last_print = Instant::now();
    let server_pid = srv.pid.to_string();
    let ticks = server::clock_ticks();
    let mut window_start = (0.0f64, 0u64, server::process_cpu(&server_pid));
    let mut sent_done = false;
    loop {
        // Collect finished senders.
        if !sent_done && handles.iter().all(|(_, h)| h.is_finished()) {
            for (ch, h) in handles.drain(..) {
                match h.join() {
                    Ok(Ok(r)) => results.push(Some((ch, r))),
                    Ok(Err(e)) => return Err(format!("{} sender: {e}", ch.name())),
                    Err(_) => return Err(format!("{} sender panicked", ch.name())),
                }
            }
            sent_done = true;
            res.sent_after = t0.elapsed();
            last_change = Instant::now();
            eprintln!(
                "e2e: all bytes sent after {:.1} s; waiting until searchable",
                res.sent_after.as_secs_f64()
            );
        }
        if !srv.is_running() {
            return Err(format!("logsift exited during ingest:\n{}", srv.log_tail()));
        }
        res.polls += 1;
        // `q=*` counts by visiting every document, which costs the server CPU in proportion
        // to what it holds; poll the cheap document count of `/api/v1/indexes` instead and
        // confirm with the search count once that reaches the goal.
        let docs = index_docs(&client).unwrap_or(0);
        let total = if docs >= exp.records || res.polls % 20 == 0 {
            count(&client).unwrap_or(last_total)
        } else {
            docs
        };
        if total == exp.records && sent_done {
            res.searchable_after = t0.elapsed();
            break;
        }
        if total > exp.records {
            return Err(format!(
                "{total} records searchable but only {} were sent (duplicates)",
                exp.records
            ));
        }
        if total != last_total {
            last_total = total;
            last_change = Instant::now();
        }
        if sent_done && last_change.elapsed() > Duration::from_secs(180) {
            return Err(format!(
                "stalled: {total} of {} records searchable, no progress for 180 s\n{}",
                exp.records,
                srv.log_tail()
            ));
        }
        if t0.elapsed() > timeout {
            return Err(format!(
                "timeout after {timeout:?}: {total} of {} records searchable (raise --timeout-secs)",
                exp.records
            ));
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            last_print = Instant::now();
            let secs = t0.elapsed().as_secs_f64();
            let cpu = server::process_cpu(&server_pid);
            let (w_secs, w_total, w_cpu) = window_start;
            let records = total.saturating_sub(w_total) as f64;
            let per_sec = records / (secs - w_secs).max(1e-3);
            let us_per_record = if records > 0.0 {
                cpu.saturating_sub(w_cpu) as f64 / ticks / records * 1e6
            } else {
                0.0
            };
            window_start = (secs, total, cpu);
            res.windows.push((secs, per_sec, us_per_record));
            eprintln!(
                "e2e: {:>5.1} s  {:>10} / {} searchable ({:.0}%), {:.1} MB/s so far; last window {:.0} records/s, server CPU {:.2} µs per record",
                secs,
                total,
                exp.records,
                100.0 * total as f64 / exp.records as f64,
                mb(exp.bytes) * (total as f64 / exp.records as f64) / secs,
                per_sec,
                us_per_record
            );
        }
        std::thread::sleep(if sent_done {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(250)
        });
    }
    for (ch, r) in results.into_iter().flatten() {
        let c = ch as usize;
        res.channel_bytes[c] += r.bytes;
        res.channel_done[c] = res.channel_done[c].max(r.done_after);
        res.http_requests += r.http_requests;
        res.http_retries += r.http_retries;
        res.http_transport_retries += r.transport_retries;
        res.http_accepted += r.http_accepted;
        res.http_rejected += r.http_rejected;
    }
    Ok(res)
}
