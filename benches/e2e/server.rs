//! The release `logsift serve` under test: started on loopback port 0 in a temporary data
//! directory, watched through `/proc`, stopped with SIGTERM (or killed when dropped).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const BUILT_BIN: &str = env!("CARGO_BIN_EXE_logsift");

/// The `logsift` binary to measure: the one `cargo bench` built, or `LOGSIFT_E2E_BINARY` (an
/// older build, to compare versions in one sitting on the same corpus).
pub fn bin() -> String {
    std::env::var("LOGSIFT_E2E_BINARY").unwrap_or_else(|_| BUILT_BIN.to_string())
}

/// The configuration overlay: the embedded defaults, with the durability level spelled out.
pub const CONFIG: &str = r#"# logsift e2e benchmark overlay: defaults except where named.
[wal]
fsync = "batch"
"#;

pub struct Server {
    child: Option<Child>,
    pub pid: u32,
    pub data_dir: PathBuf,
    pub http: String,
    pub syslog_tcp: SocketAddr,
    pub json_tcp: SocketAddr,
    pub log: PathBuf,
}

impl Server {
    /// `overlay`: TOML appended to the benchmark's configuration (`--server-config`).
    pub fn start(dir: &Path, overlay: &str) -> Result<Server, String> {
        let config = dir.join("bench-config.toml");
        std::fs::write(&config, format!("{CONFIG}\n{overlay}"))
            .map_err(|e| format!("writing config: {e}"))?;
        let data_dir = dir.join("data");
        let log = dir.join("server.log");
        let log_file = std::fs::File::create(&log).map_err(|e| format!("log file: {e}"))?;
        let bin = bin();
        let mut child = Command::new(&bin)
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
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting {bin}: {e}"))?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("logsift ready ") {
                    let _ = tx.send(line);
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            pid,
            data_dir,
            http: String::new(),
            syslog_tcp: "127.0.0.1:0".parse().unwrap(),
            json_tcp: "127.0.0.1:0".parse().unwrap(),
            log,
        };
        // From here on, dropping `server` kills the child.
        let ready = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| format!("logsift did not become ready:\n{}", server.log_tail()))?;
        let addr = |key: &str| -> Result<String, String> {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .map(str::to_string)
                .ok_or_else(|| format!("{key} missing from {ready:?}"))
        };
        let parse = |s: String| -> Result<SocketAddr, String> {
            s.parse().map_err(|e| format!("bad address {s}: {e}"))
        };
        server.http = format!("http://{}", addr("http")?);
        // A searcher binds no listener but HTTP: its addresses stay port 0.
        if !overlay.contains("role = \"searcher\"") {
            server.syslog_tcp = parse(addr("syslog-tcp")?)?;
            server.json_tcp = parse(addr("json-tcp")?)?;
        }
        Ok(server)
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM and wait for the exit (SIGKILL after `timeout`). Returns how long it took.
    pub fn stop(&mut self, timeout: Duration) -> Result<Duration, String> {
        let Some(mut child) = self.child.take() else {
            return Err("not running".into());
        };
        let started = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        while started.elapsed() < timeout {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(started.elapsed()),
                Ok(Some(status)) => return Err(format!("logsift exited with {status}")),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("waiting for logsift: {e}")),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "logsift did not exit within {timeout:?} of SIGTERM"
        ))
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

/// `(VmRSS, VmHWM)` of a process in bytes.
pub fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// `(RssAnon, RssFile)` in bytes: heap versus file pages mapped in (tantivy mmaps segments).
pub fn rss_parts(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("RssAnon:"), field("RssFile:") + field("RssShmem:"))
}

/// Samples RSS every 100 ms in a thread; `peak` is the largest VmRSS or VmHWM seen.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    pub peak: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some((rss, hwm)) = rss(pid) {
                    p.fetch_max(rss.max(hwm), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RssSampler {
            stop,
            peak,
            handle: Some(handle),
        }
    }
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Per-thread CPU of a process over a stretch of time, by thread name, including threads that
/// start and exit meanwhile (tantivy starts indexing workers at every commit): `/proc` is read
/// every 50 ms and each thread's last reading counts, so a thread that exits loses at most its
/// last 50 ms. Without this, two snapshots missed most of the server's CPU.
pub struct ThreadCpuSampler {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<HashMap<String, u64>>>,
}

impl ThreadCpuSampler {
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            // tid → (name, ticks when first seen (0 for threads born meanwhile), last ticks)
            let mut seen: HashMap<u64, (String, u64, u64)> = thread_ticks(pid)
                .into_iter()
                .map(|(tid, name, ticks)| (tid, (name, ticks, ticks)))
                .collect();
            loop {
                let last = flag.load(Ordering::Relaxed);
                for (tid, name, ticks) in thread_ticks(pid) {
                    let e = seen.entry(tid).or_insert((name, 0, 0));
                    e.2 = e.2.max(ticks);
                }
                if last {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut out = HashMap::new();
            for (name, first, last) in seen.into_values() {
                *out.entry(name).or_insert(0) += last.saturating_sub(first);
            }
            out
        });
        ThreadCpuSampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling; CPU ticks used during the sampling, by thread name.
    pub fn finish(mut self) -> HashMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// CPU time (user + system, in clock ticks) of every live thread of a process: (tid, name,
/// ticks).
fn thread_ticks(pid: u32) -> Vec<(u64, String, u64)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... field 14 utime, 15 stime (1-based); comm may hold spaces.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // rest[0] is field 3 (state): utime is field 14 → rest[11], stime → rest[12].
        let ticks = rest
            .get(11)
            .and_then(|u| u.parse::<u64>().ok())
            .unwrap_or(0)
            + rest
                .get(12)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
        out.push((tid, comm, ticks));
    }
    out
}

/// CPU time (user + system, clock ticks) of a whole process, including threads that exited
/// (`/proc/PID/stat` fields 14 and 15). `pid` may be `"self"`.
pub fn process_cpu(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0;
    };
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let field = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// Busy and total clock ticks of the whole machine (`/proc/stat`, all CPUs).
pub fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// Clock ticks per second for `/proc` times (USER_HZ; 100 on Linux unless `getconf` says else).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// Sum of file sizes under `dir` (0 when it does not exist).
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    let mut guard = 0;
    while let Some(d) = stack.pop() {
        guard += 1;
        if guard > 1_000_000 {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// What the sealed segments under `indexes` hold: raw bytes of their records, bytes of their
/// files, and those bytes by tantivy file kind inside the bundles, largest first.
pub fn sealed_space(indexes: &Path) -> (u64, u64, Vec<(String, u64)>) {
    let (mut raw, mut file) = (0, 0);
    let mut by: HashMap<String, u64> = HashMap::new();
    for index in std::fs::read_dir(indexes).into_iter().flatten().flatten() {
        let Ok(entries) =
            logsift_store::list_segments(&index.path(), &logsift_store::Metastore::Files)
        else {
            continue;
        };
        for e in entries {
            raw += e.raw_bytes;
            file += e.file_bytes;
            let files = logsift_store::LocalSegments::at(&index.path().join("segments"));
            if let Ok(bundle) = logsift_store::SegmentFiles::open(&files, &e.segment) {
                for (name, bytes) in bundle.file_sizes() {
                    let ext = name.rsplit_once('.').map_or("", |(_, e)| e).to_string();
                    *by.entry(ext).or_default() += bytes;
                }
            }
        }
    }
    let mut kinds: Vec<(String, u64)> = by.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    (raw, file, kinds)
}

/// Bytes of the files under `dir` by extension (tantivy: `idx` postings, `pos` positions,
/// `term` dictionary, `store` documents, `fast` fast fields, ...), largest first.
pub fn bytes_by_extension(dir: &Path) -> Vec<(String, u64)> {
    let mut by: HashMap<String, u64> = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut guard = 0;
    while let Some(d) = stack.pop() {
        guard += 1;
        if guard > 1_000_000 {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => {
                    let ext = e.path().extension().map_or_else(
                        || "(none)".to_string(),
                        |x| x.to_string_lossy().into_owned(),
                    );
                    *by.entry(ext).or_insert(0) += m.len();
                }
                Err(_) => {}
            }
        }
    }
    let mut v: Vec<(String, u64)> = by.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v
}
