//! Starts the real `logsift` binary on loopback ports in a temporary data directory and talks
//! to it the way users do: sockets, HTTP, `logger`, `nc`, the `logsift` CLI.
#![allow(dead_code)]

pub mod pg;
pub mod pki;
pub mod s3;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_logsift");

/// Small budgets so that many servers can run side by side in one test run.
const TEST_CONFIG: &str = r#"
[index]
commit_interval_ms = 200
writer_memory_bytes = 15000000
# Tests that count or name segments must not see them rewritten when a test pauses;
# tests/merge.rs turns it on.
idle_recompress_ms = 0
"#;

pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub http: String,
    pub syslog_tcp: SocketAddr,
    pub syslog_udp: SocketAddr,
    pub json_tcp: SocketAddr,
    /// When the config sets `[syslog] tls`.
    pub syslog_tls: Option<SocketAddr>,
    /// The OTLP/gRPC listener (HTTP/2).
    pub otlp_grpc: SocketAddr,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// A server in a fresh temporary directory.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut s = Server::start_in(tmp.path(), "");
        s._tmp = Some(tmp);
        s
    }

    /// A server on `dir` (kept after the server stops, to restart on it), with `extra_config`
    /// overlaid on the test configuration.
    pub fn start_in(dir: &Path, extra_config: &str) -> Server {
        Server::start_with(dir, &dir.join("data"), extra_config)
    }

    /// Like [`Server::start_in`], with the data directory elsewhere (on a small file system,
    /// say) while the config and log stay in `dir`.
    pub fn start_with(dir: &Path, data_dir: &Path, extra_config: &str) -> Server {
        let data_dir = data_dir.to_path_buf();
        let config = dir.join("test-config.toml");
        let mut merged: toml::Table = TEST_CONFIG.parse().expect("test config");
        let extra: toml::Table = extra_config.parse().expect("extra config");
        for (section, table) in extra {
            match (merged.get_mut(&section), table) {
                (Some(toml::Value::Table(base)), toml::Value::Table(over)) => base.extend(over),
                (_, value) => {
                    merged.insert(section, value);
                }
            }
        }
        std::fs::write(&config, merged.to_string()).expect("write config");
        let log = dir.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--http",
                "127.0.0.1:0",
                "--syslog-tcp",
                "127.0.0.1:0",
                "--syslog-udp",
                "127.0.0.1:0",
                "--json-tcp",
                "127.0.0.1:0",
                "--otlp-grpc",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "info,tantivy=warn")
            // Not set: the log is a file, so it must come out without colour codes anyway.
            .env_remove("NO_COLOR")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start logsift");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("logsift ready ") {
                    let _ = tx.send(line);
                }
            }
        });
        let ready = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "logsift did not become ready; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let find = |key: &str| -> Option<String> {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .map(String::from)
        };
        let addr = |key: &str| -> String {
            find(key).unwrap_or_else(|| panic!("{key} missing from {ready:?}"))
        };
        let http = match find("https") {
            Some(a) => format!("https://{a}"),
            None => format!("http://{}", addr("http")),
        };
        // A searcher binds no ingest listener: its addresses stay unspecified (port 0).
        let searcher = extra_config.contains("role = \"searcher\"");
        let listener = |key: &str| -> SocketAddr {
            match find(key) {
                None if searcher => SocketAddr::from(([0, 0, 0, 0], 0)),
                _ => addr(key).parse().unwrap(),
            }
        };
        Server {
            http,
            syslog_tls: find("syslog-tls").map(|a| a.parse().unwrap()),
            otlp_grpc: listener("otlp-grpc"),
            syslog_tcp: listener("syslog-tcp"),
            syslog_udp: listener("syslog-udp"),
            json_tcp: listener("json-tcp"),
            child: Some(child),
            data_dir,
            log,
            _tmp: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A kB value from /proc/PID/status, e.g. `VmHWM` (peak RSS) or `VmRSS`.
    pub fn proc_status_kb(&self, key: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} missing from /proc status"))
    }

    /// One sample of an unlabelled metric from `/metrics`.
    /// The `/metrics` text, with `token` as Bearer when given (it needs admin once tokens
    /// exist).
    pub fn metrics_text(&self, token: Option<&str>) -> String {
        let mut request = client().get(format!("{}/metrics", self.http));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request.send().expect("metrics").text().expect("text")
    }

    pub fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text(None);
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Waits (up to 10 s) until metric `name` reads `value`, for gauges that settle after the
    /// answer (a batch gives its in-flight bytes back once the indexer has dropped it).
    pub fn wait_metric(&self, name: &str, value: f64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = self.metric(name);
            if now == value {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} stayed at {now}, not {value}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path_and_query: &str) -> (u16, Value) {
        let resp = client()
            .get(format!("{}{}", self.http, path_and_query))
            .send()
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// `GET /api/v1/search` with `q` and extra `(key, value)` parameters.
    pub fn search(&self, q: &str, params: &[(&str, &str)]) -> (u16, Value) {
        self.search_with(None, q, params)
    }

    /// [`Server::search`] with a Bearer token.
    pub fn search_as(&self, token: &str, q: &str, params: &[(&str, &str)]) -> (u16, Value) {
        self.search_with(Some(token), q, params)
    }

    fn search_with(&self, token: Option<&str>, q: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let mut query = vec![("q", q)];
        query.extend_from_slice(params);
        let mut req = client()
            .get(format!("{}/api/v1/search", self.http))
            .query(&query);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("search");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// Polls until `q` has exactly `total` matches (records are searchable within a commit
    /// interval, not instantly) and returns that answer; panics with the last answer.
    pub fn wait_total(&self, q: &str, params: &[(&str, &str)], total: u64) -> Value {
        self.wait_total_with(None, q, params, total)
    }

    pub fn wait_total_as(
        &self,
        token: &str,
        q: &str,
        params: &[(&str, &str)],
        total: u64,
    ) -> Value {
        self.wait_total_with(Some(token), q, params, total)
    }

    fn wait_total_with(
        &self,
        token: Option<&str>,
        q: &str,
        params: &[(&str, &str)],
        total: u64,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.search_with(token, q, params);
            if status == 200 && body["total"].as_u64() == Some(total) {
                return body;
            }
            if Instant::now() > deadline {
                panic!("query {q:?} {params:?}: wanted total {total}, last answer {status} {body}\nserver log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn ingest(
        &self,
        index: &str,
        body: impl Into<reqwest::blocking::Body>,
        content_type: &str,
    ) -> (u16, Value) {
        self.ingest_with(None, index, body, content_type)
    }

    pub fn ingest_as(
        &self,
        token: &str,
        index: &str,
        body: impl Into<reqwest::blocking::Body>,
        content_type: &str,
    ) -> (u16, Value) {
        self.ingest_with(Some(token), index, body, content_type)
    }

    fn ingest_with(
        &self,
        token: Option<&str>,
        index: &str,
        body: impl Into<reqwest::blocking::Body>,
        content_type: &str,
    ) -> (u16, Value) {
        let mut req = client()
            .post(format!("{}/api/v1/{index}/ingest", self.http))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("ingest");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// Records in the sealed segments of `index`.
    pub fn sealed_docs(&self, index: &str) -> u64 {
        let (_, body) = self.get("/api/v1/segments");
        body["indexes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["index"] == index)
            .flat_map(|i| i["segments"].as_array().cloned().unwrap_or_default())
            .map(|e| e["docs"].as_u64().unwrap_or(0))
            .sum()
    }

    /// Waits up to a minute until `index`'s sealed segments hold `records` records.
    pub fn wait_sealed(&self, index: &str, records: u64) {
        wait_until(60, || {
            let got = self.sealed_docs(index);
            (got != records).then(|| format!("{got} of {records} records of {index} sealed"))
        });
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(&child, "TERM");
        wait_timeout(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "logsift did not exit within 30 s of SIGTERM; log:\n{}",
                self.log()
            )
        })
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Creates an API token with `logsift tokens create` in `data_dir` (which need not exist yet)
/// and returns it.
pub fn create_token(data_dir: &Path, roles: &[&str], indexes: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["tokens", "create", "--data-dir"]).arg(data_dir);
    for r in roles {
        cmd.args(["--role", r]);
    }
    for i in indexes {
        cmd.args(["--index", i]);
    }
    let out = cmd.output().expect("logsift tokens create");
    assert!(
        out.status.success(),
        "tokens create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("lsft_"), "{token:?}");
    token
}

/// Writes `bytes` to a new TCP connection and closes it.
pub fn send_tcp(addr: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(bytes).expect("write");
    s.shutdown(std::net::Shutdown::Write).ok();
    // Wait for the server to close its side, so that everything was read before we go on.
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut sink);
}

pub fn send_udp(addr: SocketAddr, datagram: &[u8]) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.send_to(datagram, addr).expect("send");
}

/// Runs a command that the test needs from the system, failing with a clear message when the
/// tool is missing (`.ci/run` installs it).
pub fn run_tool(program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); `.ci/run` installs it (apt-get install bsdutils netcat-openbsd)"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The messages of a search answer's hits, in answer order.
pub fn messages(body: &Value) -> Vec<String> {
    body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["message"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Every hit of `q`, page by page: (message → how many times it was found). For checks that
/// each record is found exactly once.
pub fn all_messages(s: &Server, q: &str) -> std::collections::HashMap<String, u32> {
    let mut counts = std::collections::HashMap::new();
    for hit in all_hits(s, q, &[("limit", "10000")]) {
        let m = hit["message"].as_str().unwrap_or("").to_string();
        *counts.entry(m).or_insert(0) += 1;
    }
    counts
}

/// Every hit of `q`, following `next_cursor` page by page with `params` (`limit`, `sort`);
/// each page must be whole (not `partial`).
pub fn all_hits(s: &Server, q: &str, params: &[(&str, &str)]) -> Vec<Value> {
    let mut hits = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut page = params.to_vec();
        if let Some(c) = &cursor {
            page.push(("cursor", c.as_str()));
        }
        let (status, body) = s.search(q, &page);
        assert_eq!(status, 200, "{body}");
        assert_ne!(body["partial"], true, "{body}");
        hits.extend(body["hits"].as_array().expect("hits").iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return hits,
        }
    }
}

/// POSTs `body` as JSON to `path`: the status and the JSON answer (null if none).
pub fn post_json(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(format!("{}{path}", s.http))
        .json(&body)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// `logsift segments verify --data-dir DATA`: whether it passed, and what it printed.
pub fn segments_verify(data: &Path) -> (bool, String) {
    segments_verify_with(&[], data)
}

/// `logsift segments verify --config DIR/test-config.toml --data-dir DIR/data`, for a server
/// started with [`Server::start_in`] on DIR (its segments or catalogs may live elsewhere).
pub fn segments_verify_config(dir: &Path) -> (bool, String) {
    let config = dir.join("test-config.toml");
    segments_verify_with(&["--config", config.to_str().unwrap()], &dir.join("data"))
}

fn segments_verify_with(args: &[&str], data: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["segments", "verify"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

pub const PIP_HINT: &str = "run `bash tests/run-all.sh` (it creates ~/.cache/logsift-venv with `python3 -m venv ~/.cache/logsift-venv && ~/.cache/logsift-venv/bin/pip install 'elasticsearch>=8.12,<9' opentelemetry-sdk opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-grpc`) or point LOGSIFT_PYTHON at a python that has those packages";

/// The Python with the shipper clients: `LOGSIFT_PYTHON`, else the venv run-all.sh makes.
pub fn python() -> PathBuf {
    let path = std::env::var_os("LOGSIFT_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/logsift-venv/bin/python"))
        })
        .filter(|p| p.exists())
        .unwrap_or_else(|| panic!("no Python with the shipper clients; {PIP_HINT}"));
    path
}

/// Runs a Python script with the shipper clients and returns its stdout.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python ({e}); {PIP_HINT}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "a shipper client is missing: {stderr}\n{PIP_HINT}"
    );
    assert!(out.status.success(), "python failed: {stderr}");
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Calls `check` every 200 ms until it returns `None` (the awaited state came), and fails with
/// the last thing it returned once `secs` seconds have passed.
pub fn wait_until(secs: u64, mut check: impl FnMut() -> Option<String>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match check() {
            None => return,
            Some(why) => assert!(std::time::Instant::now() < deadline, "{why}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
