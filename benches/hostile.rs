//! The hostile soak: `cargo bench --bench hostile -- --secs 60`.
//!
//! Starts the release `logsift serve` (tokens on, `ingest.inflight_bytes` = 64 MiB) on
//! loopback and, for `--secs`, lets legitimate senders ship NDJSON at a steady rate while
//! attackers run at once:
//!
//! - **bombs**: gzip bodies of 64 MiB of one-byte lines (about 64 KB on the wire);
//! - **label bombs**: Loki JSON pushes of about 3 MB whose 1 MB label is copied into each of
//!   200 k entries (200 GB if decoded whole);
//! - **chunked**: uploads of 64 MiB sent chunked, without a Content-Length;
//! - **audit flood**: searches without a token carrying a 60 KB query (401, audited);
//! - **tails**: up to 1000 tail streams held open, reopened when refused;
//! - **slowloris**: 200 connections sending a header byte every two seconds;
//! - **huge queries**: searches of 256 OR-ed clauses, back to back;
//! - **index flood**: ingest into a new index name per request.
//!
//! It reports the server's peak RSS against `inflight_bytes` + `writer_memory_bytes` +
//! 256 MiB, the legitimate senders' acknowledgement latency (p50/p99, from the first attempt
//! of a batch to its 200, retries after 429/503 included), what each attack got back, and —
//! from an export of the legitimate index after the attack — acknowledged records lost or
//! duplicated (both must be zero). `target/bench/hostile.md` gets the tables.
//!
//! Flags (after `--`): `--secs N` (default 60), `--rate N` (legitimate batches per second per
//! sender, default 5; 2 senders, 200 records a batch), `--tails N` (default 1000), `--skip
//! LIST` (attacks to leave out:
//! `bombs,labels,chunked,audit,tails,slowloris,queries,indexes`).
//! `LOGSIFT_E2E_BINARY=PATH` measures another build. Run without `--bench` (as `cargo test
//! --benches` does) it only prints how to run it.

#[allow(dead_code)]
#[path = "e2e/server.rs"]
mod server;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const INFLIGHT_BYTES: u64 = 64 << 20;
/// `index.writer_memory_bytes`, the embedded default.
const WRITER_BYTES: u64 = 64 << 20;
const SENDERS: usize = 2;
const BATCH: usize = 200;

struct Args {
    bench: bool,
    secs: u64,
    rate: f64,
    tails: usize,
    /// Attacks left out (`--skip bombs,tails`), to see what each one costs.
    skip: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        bench: false,
        secs: 60,
        rate: 5.0,
        tails: 1000,
        skip: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--bench" => a.bench = true,
            "--secs" => a.secs = value()?.parse().map_err(|_| "bad --secs")?,
            "--rate" => a.rate = value()?.parse().map_err(|_| "bad --rate")?,
            "--tails" => a.tails = value()?.parse().map_err(|_| "bad --tails")?,
            "--skip" => a.skip = value()?.split(',').map(str::to_string).collect(),
            // Flags cargo passes to every bench target.
            _ => {}
        }
    }
    Ok(a)
}

/// What one attack (or the legitimate senders) got back: answers by status, and errors.
#[derive(Default)]
struct Outcomes(Mutex<BTreeMap<String, BTreeMap<String, u64>>>);

impl Outcomes {
    fn add(&self, who: &str, what: impl Into<String>) {
        let mut map = self.0.lock().unwrap();
        *map.entry(who.to_string())
            .or_default()
            .entry(what.into())
            .or_default() += 1;
    }

    fn status(&self, who: &str, r: &reqwest::Result<reqwest::blocking::Response>) {
        match r {
            Ok(resp) => self.add(who, resp.status().as_u16().to_string()),
            Err(e) if e.is_timeout() => self.add(who, "timeout"),
            Err(_) => self.add(who, "connection error"),
        }
    }
}

struct Ctx {
    http: String,
    addr: String,
    stop: AtomicBool,
    outcomes: Outcomes,
    ingest: String,
    search: String,
    client: reqwest::blocking::Client,
}

fn create_token(data_dir: &Path, role: &str) -> Result<String, String> {
    let out = Command::new(server::bin())
        .args(["tokens", "create", "--role", role, "--data-dir"])
        .arg(data_dir)
        .output()
        .map_err(|e| format!("logsift tokens create: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Legitimate sender `k`: batches of NDJSON at `rate` per second, each retried until it is
/// acknowledged. Returns the acknowledged sequence numbers and each batch's latency.
fn legit(ctx: &Ctx, k: usize, rate: f64) -> (Vec<u64>, Vec<Duration>) {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.01));
    let mut acked = Vec::new();
    let mut latencies = Vec::new();
    let mut seq = 0u64;
    let mut next = Instant::now();
    while !ctx.stop.load(Ordering::Relaxed) {
        let first = seq;
        let body: String = (0..BATCH)
            .map(|i| {
                format!(
                    "{{\"host\":\"legit-{k}\",\"message\":\"legit s{k} n{}\"}}\n",
                    first + i as u64
                )
            })
            .collect();
        let started = Instant::now();
        loop {
            let r = ctx
                .client
                .post(format!("{}/api/v1/legit/ingest", ctx.http))
                .bearer_auth(&ctx.ingest)
                .header("content-type", "application/x-ndjson")
                .body(body.clone())
                .send();
            ctx.outcomes.status("legitimate senders", &r);
            match r {
                Ok(resp) if resp.status().is_success() => {
                    latencies.push(started.elapsed());
                    acked.extend(first..first + BATCH as u64);
                    break;
                }
                // Refused (429/503/507) or not answered: the same batch again, as shippers do.
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        seq += BATCH as u64;
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    (acked, latencies)
}

/// Posts `body` to `path` (with `headers`, as the ingest token) until the attack ends,
/// counting the answers as `who`'s.
fn post_repeatedly(ctx: &Ctx, who: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
    while !ctx.stop.load(Ordering::Relaxed) {
        let mut request = ctx
            .client
            .post(format!("{}{path}", ctx.http))
            .bearer_auth(&ctx.ingest);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let r = request.body(body.to_vec()).send();
        ctx.outcomes.status(who, &r);
    }
}

/// `lines` copies of `line`, read without holding them.
struct Repeat {
    line: &'static [u8],
    lines: usize,
    at: usize,
}

impl std::io::Read for Repeat {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && self.lines > 0 {
            let take = (self.line.len() - self.at).min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&self.line[self.at..self.at + take]);
            n += take;
            self.at += take;
            if self.at == self.line.len() {
                self.at = 0;
                self.lines -= 1;
            }
        }
        Ok(n)
    }
}

fn chunked(ctx: &Ctx) {
    const LINE: &[u8] = b"{\"msg\":\"chunked upload, sent without a Content-Length\"}\n";
    while !ctx.stop.load(Ordering::Relaxed) {
        let body = Repeat {
            line: LINE,
            lines: (64 << 20) / LINE.len(),
            at: 0,
        };
        let r = ctx
            .client
            .post(format!("{}/api/v1/bomb/ingest", ctx.http))
            .bearer_auth(&ctx.ingest)
            .header("content-type", "application/x-ndjson")
            .body(reqwest::blocking::Body::new(body))
            .send();
        ctx.outcomes.status("chunked", &r);
    }
}

/// A Loki JSON push of about 3 MB: one 1 MB label over 200 k entries.
fn label_bomb() -> Vec<u8> {
    let values: Vec<_> = (0..200_000u64)
        .map(|i| serde_json::json!([format!("{}", 1_700_000_000_000_000_000u64 + i), "x"]))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "streams": [{"stream": {"host": "h", "big": "x".repeat(1 << 20)}, "values": values}]
    }))
    .expect("json")
}

fn audit_flood(ctx: &Ctx) {
    let q = "x".repeat(60_000);
    while !ctx.stop.load(Ordering::Relaxed) {
        let r = ctx
            .client
            .get(format!("{}/api/v1/search", ctx.http))
            .query(&[("q", q.as_str())])
            .send();
        ctx.outcomes.status("audit flood (no token, 60 KB q)", &r);
    }
}

fn huge_queries(ctx: &Ctx) {
    let q: Vec<String> = (0..256).map(|i| format!("word{i}")).collect();
    let q = q.join(" OR ");
    while !ctx.stop.load(Ordering::Relaxed) {
        let r = ctx
            .client
            .get(format!("{}/api/v1/search", ctx.http))
            .bearer_auth(&ctx.search)
            .query(&[("q", q.as_str()), ("limit", "1000")])
            .send();
        ctx.outcomes.status("huge queries (256 clauses)", &r);
    }
}

fn index_flood(ctx: &Ctx) {
    let mut n = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        n += 1;
        let r = ctx
            .client
            .post(format!("{}/api/v1/flood-{n}/ingest", ctx.http))
            .bearer_auth(&ctx.ingest)
            .header("content-type", "application/x-ndjson")
            .body("{\"message\":\"flood\"}\n")
            .send();
        ctx.outcomes.status("index flood", &r);
    }
}

/// Opens a tail stream; `Some` while the server keeps it open.
fn open_tail(ctx: &Ctx) -> Option<TcpStream> {
    let mut s = TcpStream::connect(&ctx.addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let sent = write!(
        s,
        "GET /api/v1/tail?q=legit HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        ctx.addr, ctx.search
    );
    if sent.is_err() {
        ctx.outcomes.add("tails", "connection error");
        return None;
    }
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).is_err() {
        ctx.outcomes.add("tails", "closed at once");
        return None;
    }
    let status = String::from_utf8_lossy(&head[9..12]).to_string();
    ctx.outcomes.add("tails", status.clone());
    (status == "200").then(|| {
        let _ = s.set_nonblocking(true);
        s
    })
}

fn tails(ctx: &Ctx, want: usize) {
    let mut open: Vec<TcpStream> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !ctx.stop.load(Ordering::Relaxed) {
        // Read what arrived, so that only the server's own limits drop a stream.
        open.retain_mut(|s| loop {
            match s.read(&mut buf) {
                Ok(0) => break false,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
                Err(_) => break false,
            }
        });
        let mut refused = false;
        while open.len() < want && !refused && !ctx.stop.load(Ordering::Relaxed) {
            match open_tail(ctx) {
                Some(s) => open.push(s),
                None => refused = true,
            }
        }
        std::thread::sleep(Duration::from_millis(if refused { 1000 } else { 100 }));
    }
}

fn slowloris(ctx: &Ctx) {
    const CONNECTIONS: usize = 200;
    let mut conns: Vec<TcpStream> = Vec::new();
    while !ctx.stop.load(Ordering::Relaxed) {
        while conns.len() < CONNECTIONS {
            match TcpStream::connect(&ctx.addr) {
                Ok(mut s) => {
                    let _ = s.write_all(b"GET /api/v1/search?q=a HTTP/1.1\r\nHost: 127.0.0.1\r\n");
                    conns.push(s);
                }
                Err(_) => {
                    ctx.outcomes.add("slowloris", "connect refused");
                    break;
                }
            }
        }
        conns.retain_mut(|s| {
            let alive = s.write_all(b"X-a: b\r\n").is_ok();
            if !alive {
                ctx.outcomes.add("slowloris", "closed by the server");
            }
            alive
        });
        for _ in 0..20 {
            if ctx.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn gzip_bomb() -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = "a\n".repeat(1 << 20);
    for _ in 0..32 {
        enc.write_all(chunk.as_bytes()).expect("gzip");
    }
    enc.finish().expect("gzip")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn run(args: &Args) -> Result<String, String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let ingest = create_token(&data, "ingest")?;
    let search = create_token(&data, "search")?;
    let export = create_token(&data, "export")?;
    let overlay = format!("[ingest]\ninflight_bytes = {INFLIGHT_BYTES}\n");
    let mut srv = server::Server::start(tmp.path(), &overlay)?;
    let rss = server::RssSampler::start(srv.pid);
    let ctx = Arc::new(Ctx {
        addr: srv.http.trim_start_matches("http://").to_string(),
        http: srv.http.clone(),
        stop: AtomicBool::new(false),
        outcomes: Outcomes::default(),
        ingest,
        search,
        client: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?,
    });
    let bomb = Arc::new(gzip_bomb());
    eprintln!(
        "hostile: server up; {} s of attacks (bomb {} KB on the wire)",
        args.secs,
        bomb.len() / 1000
    );
    let senders: Vec<_> = (0..SENDERS)
        .map(|k| {
            let (ctx, rate) = (ctx.clone(), args.rate);
            std::thread::spawn(move || legit(&ctx, k, rate))
        })
        .collect();
    // The legitimate index exists before the index flood starts.
    std::thread::sleep(Duration::from_secs(1));
    let mut attackers = Vec::new();
    let on = |name: &str| !args.skip.iter().any(|s| s == name);
    if on("bombs") {
        for _ in 0..2 {
            let (ctx, bomb) = (ctx.clone(), bomb.clone());
            attackers.push(std::thread::spawn(move || {
                let headers = [
                    ("content-type", "application/x-ndjson"),
                    ("content-encoding", "gzip"),
                ];
                post_repeatedly(&ctx, "bombs", "/api/v1/bomb/ingest", &headers, &bomb)
            }));
        }
    }
    if on("labels") {
        let body = Arc::new(label_bomb());
        for _ in 0..2 {
            let (ctx, body) = (ctx.clone(), body.clone());
            attackers.push(std::thread::spawn(move || {
                let headers = [
                    ("content-type", "application/json"),
                    ("x-logsift-index", "bomb"),
                ];
                post_repeatedly(&ctx, "label bombs", "/loki/api/v1/push", &headers, &body)
            }));
        }
    }
    if on("chunked") {
        for _ in 0..4 {
            let ctx = ctx.clone();
            attackers.push(std::thread::spawn(move || chunked(&ctx)));
        }
    }
    if on("queries") {
        for _ in 0..2 {
            let c = ctx.clone();
            attackers.push(std::thread::spawn(move || huge_queries(&c)));
        }
    }
    if on("audit") {
        let c = ctx.clone();
        attackers.push(std::thread::spawn(move || audit_flood(&c)));
    }
    if on("indexes") {
        let c = ctx.clone();
        attackers.push(std::thread::spawn(move || index_flood(&c)));
    }
    if on("tails") {
        let (c, want) = (ctx.clone(), args.tails);
        attackers.push(std::thread::spawn(move || tails(&c, want)));
    }
    if on("slowloris") {
        let c = ctx.clone();
        attackers.push(std::thread::spawn(move || slowloris(&c)));
    }

    let started = Instant::now();
    let peak_during = Arc::new(AtomicU64::new(0));
    while started.elapsed() < Duration::from_secs(args.secs) {
        std::thread::sleep(Duration::from_millis(500));
        if !srv.is_running() {
            return Err(format!("the server died:\n{}", srv.log_tail()));
        }
        peak_during.fetch_max(rss.peak(), Ordering::Relaxed);
    }
    ctx.stop.store(true, Ordering::Relaxed);
    let mut acked: Vec<HashSet<u64>> = Vec::new();
    let mut latencies = Vec::new();
    for s in senders {
        let (a, l) = s.join().map_err(|_| "a sender panicked")?;
        acked.push(a.into_iter().collect());
        latencies.extend(l);
    }
    for a in attackers {
        a.join().map_err(|_| "an attacker panicked")?;
    }
    let peak = rss.peak();
    latencies.sort();

    // Everything acknowledged must come back exactly once.
    let total_acked: usize = acked.iter().map(HashSet::len).sum();
    let deadline = Instant::now() + Duration::from_secs(120);
    let count = || -> Option<u64> {
        let v: serde_json::Value = ctx
            .client
            .get(format!("{}/api/v1/search", ctx.http))
            .bearer_auth(&ctx.search)
            .query(&[("q", "*"), ("index", "legit"), ("limit", "0")])
            .send()
            .ok()?
            .json()
            .ok()?;
        v["total"].as_u64()
    };
    while count().unwrap_or(0) < total_acked as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let body = ctx
        .client
        .post(format!("{}/api/v1/export", ctx.http))
        .bearer_auth(&export)
        .header("content-type", "application/json")
        .body(r#"{"q":"*","index":"legit"}"#)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .map_err(|e| format!("export of the legitimate index: {e}"))?;
    let mut seen: Vec<HashSet<u64>> = vec![HashSet::new(); SENDERS];
    let (mut duplicated, mut unacked, mut lines) = (0u64, 0u64, 0u64);
    for line in body.lines() {
        lines += 1;
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let msg = v["message"].as_str().unwrap_or_default();
        let parsed = msg.strip_prefix("legit s").and_then(|rest| {
            let (k, n) = rest.split_once(" n")?;
            Some((k.parse::<usize>().ok()?, n.parse::<u64>().ok()?))
        });
        let Some((k, n)) = parsed.filter(|(k, _)| *k < SENDERS) else {
            continue;
        };
        if !seen[k].insert(n) {
            duplicated += 1;
        } else if !acked[k].contains(&n) {
            unacked += 1;
        }
    }
    let lost: usize = (0..SENDERS)
        .map(|k| acked[k].difference(&seen[k]).count())
        .sum();
    let stopped = srv.stop(Duration::from_secs(60));
    drop(rss);

    let budget = INFLIGHT_BYTES + WRITER_BYTES + (256 << 20);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut md = String::new();
    md.push_str(&format!(
        "# Hostile soak ({} s{})\n\n| measure | value | target |\n|---|---|---|\n",
        args.secs,
        if args.skip.is_empty() {
            String::new()
        } else {
            format!(", without {}", args.skip.join(", "))
        }
    ));
    md.push_str(&format!(
        "| server peak RSS | {:.0} MiB | ≤ {:.0} MiB (inflight_bytes {:.0} + writer memory {:.0} + 256): **{}** |\n",
        mib(peak),
        mib(budget),
        mib(INFLIGHT_BYTES),
        mib(WRITER_BYTES),
        if peak <= budget { "meets" } else { "misses" }
    ));
    md.push_str(&format!(
        "| legitimate batches acknowledged ({} records each) | {} ({} records) | |\n",
        BATCH,
        latencies.len(),
        total_acked
    ));
    md.push_str(&format!(
        "| acknowledgement latency p50 / p99 / max | {:.1} / {:.1} / {:.1} ms | |\n",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    ));
    md.push_str(&format!(
        "| acknowledged records lost / duplicated | {lost} / {duplicated} | 0 / 0: **{}** |\n",
        if lost == 0 && duplicated == 0 {
            "meets"
        } else {
            "misses"
        }
    ));
    md.push_str(&format!(
        "| records stored without an acknowledgement (a retried batch) | {unacked} | |\n| records exported from the legitimate index | {lines} | |\n"
    ));
    md.push_str(&format!(
        "| graceful stop after the attack | {} | |\n",
        match stopped {
            Ok(d) => format!("{:.1} s", d.as_secs_f64()),
            Err(e) => format!("failed: {e}"),
        }
    ));
    md.push_str("\n| client | answers |\n|---|---|\n");
    for (who, answers) in ctx.outcomes.0.lock().unwrap().iter() {
        let list: Vec<String> = answers.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        md.push_str(&format!("| {who} | {} |\n", list.join(", ")));
    }
    Ok(md)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hostile: {e}");
            std::process::exit(2);
        }
    };
    if !args.bench {
        println!("hostile: run it with `cargo bench --bench hostile -- --secs 60`; skipped");
        return;
    }
    match run(&args) {
        Ok(md) => {
            println!("{md}");
            let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
            let _ = std::fs::create_dir_all(&out);
            let _ = std::fs::write(out.join("hostile.md"), &md);
        }
        Err(e) => {
            eprintln!("hostile: {e}");
            std::process::exit(1);
        }
    }
}
