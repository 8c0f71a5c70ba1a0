//! `logsift import FILE...`: the logs a team already has (rotated `/var/log` files, `.gz` and
//! `.zst` archives, NDJSON exports of other systems) sent to a running server through its
//! HTTP ingest, in bodies of a few MiB, durably acknowledged.
//!
//! Each file's format is detected from its first line (`{` means JSON lines, else syslog,
//! RFC 5424 or 3164 told apart per line by the server), and its modification time is sent as
//! the lines' receive time, so RFC 3164 timestamps (which carry no year) land in the year the
//! file was written rather than the year of the import. Lines the server rejects or stores
//! with a parse error are summed up by reason at the end, with a few examples each.

use crate::client::ServerArgs;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;

use crate::progress::Meter;

/// Bytes of lines per request: large enough to amortize the fsync, small enough to stay far
/// below the server's body limit and in-flight budget.
const BATCH_BYTES: usize = 4 << 20;
/// Examples kept per rejection reason in the summary.
const EXAMPLES: usize = 3;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Files to import: plain, .gz or .zst (detected from their first bytes).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    conn: ServerArgs,
    /// Index the records go to.
    #[arg(long, default_value = "logs")]
    index: String,
    /// Format of every file instead of detecting it per file: json or syslog.
    #[arg(long)]
    format: Option<String>,
}

/// Counts the compressed bytes read, for progress over files of known size.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn open(path: &Path, read: Arc<AtomicU64>) -> anyhow::Result<Box<dyn BufRead>> {
    let mut file = File::open(path).with_context(|| path.display().to_string())?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let raw = Counting {
        inner: head.chain(file),
        read,
    };
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(raw))),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(BufReader::new(
            zstd::stream::read::Decoder::new(raw).context("zstd")?,
        )),
        _ => Box::new(BufReader::with_capacity(1 << 20, raw)),
    })
}

/// What the server said about the lines it did not take as they were.
#[derive(Default)]
struct Summary {
    accepted: u64,
    rejected: u64,
    parse_errors: u64,
    /// reason (numbers folded to N) → (count, examples "file:line: error").
    reasons: BTreeMap<String, (u64, Vec<String>)>,
}

fn fold_numbers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_number = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

struct Sender {
    http: reqwest::blocking::Client,
    url: String,
    token: Option<String>,
}

impl Sender {
    /// Posts one body, waiting out 429s; returns the server's answer.
    fn send(&self, body: Vec<u8>, format: &str, received_at: &str) -> anyhow::Result<Value> {
        let body = bytes::Bytes::from(body);
        for attempt in 0.. {
            let mut request = self.http.post(&self.url);
            if let Some(t) = &self.token {
                request = request.bearer_auth(t);
            }
            let response = request
                .query(&[("format", format), ("received_at", received_at)])
                .header("content-type", "text/plain")
                .body(body.clone())
                .send()
                .with_context(|| {
                    format!("cannot reach {}; is `logsift serve` running?", self.url)
                })?;
            let status = response.status();
            if status.as_u16() == 429 && attempt < 600 {
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                std::thread::sleep(Duration::from_secs(wait.min(10)));
                continue;
            }
            let answer: Value = response.json().unwrap_or(Value::Null);
            if status.is_success() || status.as_u16() == 400 && answer["accepted"].is_u64() {
                return Ok(answer);
            }
            let message = answer["error"]["message"].as_str().unwrap_or("no message");
            bail!("the server refused the import ({status}): {message}");
        }
        bail!("the server stayed too busy (429) for ten minutes")
    }
}

fn detect_format(first_line: &[u8]) -> &'static str {
    if first_line.trim_ascii_start().first() == Some(&b'{') {
        "json"
    } else {
        "syslog"
    }
}

pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    if let Some(f) = args.format.as_deref() {
        if f != "json" && f != "syslog" {
            bail!("--format must be json or syslog, not {f:?}");
        }
    }
    let total: u64 = args
        .files
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .map(|m| m.len())
                .with_context(|| p.display().to_string())
        })
        .sum::<anyhow::Result<u64>>()?;
    let sender = Sender {
        http: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()?,
        url: format!(
            "{}/api/v1/{}/ingest",
            args.conn.server.trim_end_matches('/'),
            args.index
        ),
        token: args.conn.token.clone(),
    };
    let read = Arc::new(AtomicU64::new(0));
    let mut meter = Meter::new("bytes", total, 0);
    let mut summary = Summary::default();
    let started = Instant::now();
    let mut raw_bytes = 0u64;
    for path in &args.files {
        let modified = std::fs::metadata(path)?
            .modified()
            .unwrap_or_else(|_| SystemTime::now());
        let mtime_ns = modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let received_at = logsift_core::time::format_rfc3339(mtime_ns);
        let mut reader = open(path, read.clone())?;
        let mut format: Option<&str> = args.format.as_deref();
        let mut batch: Vec<u8> = Vec::with_capacity(BATCH_BYTES + 64 * 1024);
        let mut batch_first_line = 1usize;
        let mut line_no = 0usize;
        let mut line = Vec::new();
        let flush = |batch: &mut Vec<u8>,
                     first_line: usize,
                     format: &str,
                     summary: &mut Summary|
         -> anyhow::Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            let answer = sender.send(std::mem::take(batch), format, &received_at)?;
            summary.accepted += answer["accepted"].as_u64().unwrap_or(0);
            summary.rejected += answer["rejected"].as_u64().unwrap_or(0);
            for e in answer["errors"].as_array().into_iter().flatten() {
                let stored = e["stored"].as_bool().unwrap_or(false);
                if stored {
                    summary.parse_errors += 1;
                }
                let error = e["error"].as_str().unwrap_or("?");
                let key = format!(
                    "{}{}",
                    if stored {
                        "stored with a parse error: "
                    } else {
                        "rejected: "
                    },
                    fold_numbers(error)
                );
                let at = first_line + e["line"].as_u64().unwrap_or(1) as usize - 1;
                let slot = summary.reasons.entry(key).or_default();
                slot.0 += 1;
                if slot.1.len() < EXAMPLES {
                    slot.1.push(format!("{}:{at}: {error}", path.display()));
                }
            }
            Ok(())
        };
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            raw_bytes += n as u64;
            if format.is_none() && !line.trim_ascii().is_empty() {
                format = Some(detect_format(&line));
            }
            batch.extend_from_slice(&line);
            if !line.ends_with(b"\n") {
                batch.push(b'\n');
            }
            if batch.len() >= BATCH_BYTES {
                flush(
                    &mut batch,
                    batch_first_line,
                    format.unwrap_or("syslog"),
                    &mut summary,
                )?;
                batch_first_line = line_no + 1;
                meter.update(read.load(Ordering::Relaxed), summary.accepted);
            }
        }
        flush(
            &mut batch,
            batch_first_line,
            format.unwrap_or("syslog"),
            &mut summary,
        )?;
        meter.update(read.load(Ordering::Relaxed), summary.accepted);
    }
    meter.finish(read.load(Ordering::Relaxed), summary.accepted);
    let secs = started.elapsed().as_secs_f64().max(0.001);
    eprintln!(
        "imported {} records from {} files ({:.1} MB of lines in {secs:.1} s: {:.1} MB/s, {:.0} records/s); {} rejected, {} stored with a parse error",
        summary.accepted,
        args.files.len(),
        raw_bytes as f64 / 1e6,
        raw_bytes as f64 / 1e6 / secs,
        summary.accepted as f64 / secs,
        summary.rejected,
        summary.parse_errors,
    );
    for (reason, (count, examples)) in &summary.reasons {
        eprintln!("  {count} × {reason}");
        for e in examples {
            eprintln!("      {e}");
        }
    }
    Ok(if summary.rejected > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_group_across_numbers_and_formats_are_detected() {
        assert_eq!(
            fold_numbers("line of 300000 bytes exceeds max_line_bytes 262144"),
            "line of N bytes exceeds max_line_bytes N"
        );
        assert_eq!(detect_format(b"  {\"a\":1}"), "json");
        assert_eq!(detect_format(b"<13>Jan  1 00:00:00 h app: x"), "syslog");
        assert_eq!(detect_format(b"Jan  1 00:00:00 h app: x"), "syslog");
    }
}
