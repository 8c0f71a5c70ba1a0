//! The fixed query suite (timed over HTTP as a client sees it) and the ripgrep baseline.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::gen::{rfc3339_string, Corpus, Count, COMMON_TERM, INCIDENT_TEXT, RARE_TERM};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Whole,
    Window,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Whole => "whole corpus",
            Scope::Window => "1-minute window",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Search,
    Histogram,
    Terms,
    /// `/api/v1/patterns`, top 20.
    Patterns,
    /// `/api/v1/compare` over the incident (whole scope: all of it; window scope: its first
    /// minute), each against the same length before it: the incident's pattern must come
    /// first, new, with its exact count.
    Compare,
}

pub struct Case {
    pub name: &'static str,
    pub kind: Kind,
    pub q: String,
    pub limit: usize,
    pub expected: Option<Count>,
    /// The fixed string ripgrep looks for (whole corpus only).
    pub rg: Option<String>,
}

pub fn suite(c: &Corpus) -> Vec<Case> {
    let e = &c.expected;
    let search = |name, q: String, limit, expected: Count, rg: Option<String>| Case {
        name,
        kind: Kind::Search,
        q,
        limit,
        expected: Some(expected),
        rg,
    };
    vec![
        search(
            "needle (unique request id)",
            c.needle.clone(),
            100,
            e.needle,
            Some(c.needle.clone()),
        ),
        search(
            "rare term",
            RARE_TERM.to_string(),
            100,
            e.rare,
            Some(RARE_TERM.to_string()),
        ),
        search(
            "common term, 100 newest",
            COMMON_TERM.to_uppercase(),
            100,
            e.common,
            None,
        ),
        search(
            "phrase",
            "\"upstream timed out\"".to_string(),
            100,
            e.phrase,
            Some("upstream timed out".to_string()),
        ),
        search(
            "field filter: top host",
            format!("host:{}", c.top_host),
            100,
            e.host,
            None,
        ),
        search(
            "field filter: severity",
            "severity:error".to_string(),
            100,
            e.error,
            None,
        ),
        search(
            "count all",
            "*".to_string(),
            0,
            Count {
                total: e.records,
                window: e.all_window,
            },
            None,
        ),
        Case {
            name: "histogram (1-minute buckets)",
            kind: Kind::Histogram,
            q: "*".to_string(),
            limit: 0,
            expected: None,
            rg: None,
        },
        Case {
            name: "patterns: top 20",
            kind: Kind::Patterns,
            q: "*".to_string(),
            limit: 20,
            expected: Some(Count {
                total: e.records,
                window: e.all_window,
            }),
            rg: None,
        },
        Case {
            name: "compare: the incident first",
            kind: Kind::Compare,
            q: "*".to_string(),
            limit: 10,
            expected: Some(e.incident),
            rg: None,
        },
        Case {
            name: "terms: top 10 hosts",
            kind: Kind::Terms,
            q: "*".to_string(),
            limit: 10,
            expected: None,
            rg: None,
        },
    ]
}

#[derive(Debug, Clone, Default)]
pub struct Timing {
    pub status: String,
    pub total: Option<u64>,
    pub expected: Option<u64>,
    pub first_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub server_took_p50_ms: f64,
    pub samples: usize,
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn run_case(
    client: &reqwest::blocking::Client,
    base: &str,
    case: &Case,
    scope: Scope,
    c: &Corpus,
    reps: usize,
) -> Timing {
    let (path, mut params): (&str, Vec<(&str, String)>) = match case.kind {
        Kind::Search => (
            "/api/v1/search",
            vec![("q", case.q.clone()), ("limit", case.limit.to_string())],
        ),
        Kind::Histogram => (
            "/api/v1/histogram",
            vec![("q", case.q.clone()), ("interval", "1m".to_string())],
        ),
        Kind::Terms => (
            "/api/v1/terms",
            vec![
                ("q", case.q.clone()),
                ("field", "host".to_string()),
                ("size", case.limit.to_string()),
            ],
        ),
        Kind::Patterns => (
            "/api/v1/patterns",
            vec![("q", case.q.clone()), ("size", case.limit.to_string())],
        ),
        Kind::Compare => {
            let end = match scope {
                Scope::Whole => c.incident_end_ns,
                Scope::Window => c.incident_start_ns + (c.window_end_ns - c.window_start_ns),
            };
            (
                "/api/v1/compare",
                vec![
                    ("q", case.q.clone()),
                    ("size", case.limit.to_string()),
                    ("start", rfc3339_string(c.incident_start_ns)),
                    ("end", rfc3339_string(end)),
                ],
            )
        }
    };
    if scope == Scope::Window && case.kind != Kind::Compare {
        params.push(("start", rfc3339_string(c.window_start_ns)));
        params.push(("end", rfc3339_string(c.window_end_ns)));
    }
    let url = format!("{base}{path}");
    let expected = case.expected.map(|e| match scope {
        Scope::Whole => e.total,
        Scope::Window => e.window,
    });
    let mut t = Timing {
        expected,
        ..Default::default()
    };
    let mut lat = Vec::with_capacity(reps + 1);
    let mut took = Vec::with_capacity(reps + 1);
    // One untimed-for-percentiles first call (reported as `first_ms`), then `reps` timed ones.
    for i in 0..=reps {
        let started = Instant::now();
        let resp = client.get(&url).query(&params).send();
        let (status, body) = match resp {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().unwrap_or_default();
                (status, text)
            }
            Err(e) => {
                t.status = format!("error: {e}");
                return t;
            }
        };
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if status == 404 && case.kind != Kind::Search {
            t.status = "n/a (endpoint missing)".to_string();
            return t;
        }
        if status != 200 {
            t.status = format!(
                "error: HTTP {status}: {}",
                body.chars().take(200).collect::<String>()
            );
            return t;
        }
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if i == 0 {
            t.first_ms = ms;
            t.total = v["total"].as_u64();
            if case.kind == Kind::Compare {
                // The count of the first answer, if it is the incident's pattern, new.
                let first = &v["patterns"][0];
                let is_incident = first["kind"] == "new"
                    && first["value"]
                        .as_str()
                        .is_some_and(|t| t.contains(INCIDENT_TEXT));
                if !is_incident {
                    t.status = format!(
                        "WRONG FIRST ANSWER: {}",
                        first.to_string().chars().take(200).collect::<String>()
                    );
                    return t;
                }
                t.total = first["count"].as_u64();
            }
        } else {
            lat.push(ms);
            if let Some(ms) = v["took_ms"].as_f64() {
                took.push(ms);
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    took.sort_by(f64::total_cmp);
    t.p50_ms = percentile(&lat, 50.0);
    t.p99_ms = percentile(&lat, 99.0);
    t.server_took_p50_ms = percentile(&took, 50.0);
    t.samples = lat.len();
    t.status = match (t.total, t.expected) {
        (Some(got), Some(want)) if got != want => format!("WRONG TOTAL (expected {want})"),
        _ => "ok".to_string(),
    };
    t
}

#[derive(Debug, Clone, Default)]
pub struct RgTiming {
    pub status: String,
    pub lines: u64,
    pub p50_ms: f64,
    pub samples: usize,
}

pub fn tool_version(tool: &str) -> Option<String> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    })
}

/// `rg -c -F PATTERN files...`, `reps` times; p50 wall time and the matching line count.
pub fn ripgrep(pattern: &str, files: &[PathBuf], reps: usize) -> RgTiming {
    let mut t = RgTiming::default();
    let mut lat = Vec::new();
    for _ in 0..reps.max(1) {
        let started = Instant::now();
        let out = Command::new("rg")
            .args(["-c", "-F", "--no-config", "--with-filename", "--", pattern])
            .args(files)
            .output();
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                t.status = format!("n/a (rg: {e})");
                return t;
            }
        };
        // 0 = matches, 1 = no match; anything else is an error.
        if !matches!(out.status.code(), Some(0 | 1)) {
            t.status = format!("error: rg {}", String::from_utf8_lossy(&out.stderr));
            return t;
        }
        t.lines = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.rsplit(':').next()?.parse::<u64>().ok())
            .sum();
        lat.push(ms);
    }
    lat.sort_by(f64::total_cmp);
    t.p50_ms = percentile(&lat, 50.0);
    t.samples = lat.len();
    t.status = "ok".to_string();
    t
}

/// `zstd -3` over every corpus file: compressed bytes (counted from its stdout, not stored) and
/// wall time.
pub fn zstd3(files: &[PathBuf]) -> Result<(u64, Duration), String> {
    use std::io::Read;
    let started = Instant::now();
    let mut total = 0u64;
    for f in files {
        let mut child = Command::new("zstd")
            .args(["-3", "-q", "-c", "--"])
            .arg(f)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("zstd: {e}"))?;
        let mut out = child.stdout.take().ok_or("zstd: no stdout")?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("reading zstd output: {e}"));
                }
            }
        }
        let status = child.wait().map_err(|e| format!("zstd: {e}"))?;
        if !status.success() {
            return Err(format!("zstd -3 {} failed: {status}", f.display()));
        }
    }
    Ok((total, started.elapsed()))
}

/// What exporting every record cost.
#[derive(Debug, Clone, Default)]
pub struct ExportRun {
    pub records: u64,
    pub bytes: u64,
    pub secs: f64,
    /// Server RSS (anonymous, i.e. heap) just before, and its peak while exporting.
    pub anon_before: u64,
    pub anon_peak: u64,
}

/// Exports every record (`q=*`, NDJSON) over HTTP the way `logsift export` does, counting
/// lines and bytes, while sampling the server's heap: an export must stream in constant memory.
pub fn export_all(
    client: &reqwest::blocking::Client,
    base: &str,
    pid: u32,
) -> Result<ExportRun, String> {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let anon_before = crate::server::rss_parts(pid).0;
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(anon_before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(crate::server::rss_parts(pid).0, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();
    let result = (|| {
        let mut response = client
            .post(format!("{base}/api/v1/export"))
            .json(&serde_json::json!({"q": "*"}))
            .timeout(Duration::from_secs(3600))
            .send()
            .map_err(|e| format!("export: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("export answered {}", response.status()));
        }
        let mut buf = vec![0u8; 1 << 20];
        let (mut records, mut bytes) = (0u64, 0u64);
        loop {
            let n = response
                .read(&mut buf)
                .map_err(|e| format!("export stream: {e}"))?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            records += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        Ok((records, bytes))
    })();
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let (records, bytes) = result?;
    Ok(ExportRun {
        records,
        bytes,
        secs,
        anon_before,
        anon_peak: peak.load(Ordering::Relaxed),
    })
}
