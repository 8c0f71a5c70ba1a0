//! Shipping the corpus: several concurrent senders per channel, each with a contiguous slice of
//! that channel's file cut at line boundaries. TCP senders stream newline-framed lines on one
//! connection each; HTTP senders POST NDJSON bodies of 1–4 MB to `/api/v1/logs/ingest`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::gen::Rng;

/// Byte ranges `[start, end)` splitting `path` into `parts` slices that end at newlines.
pub fn split_at_lines(path: &Path, parts: usize) -> std::io::Result<Vec<(u64, u64)>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut cuts = vec![0u64];
    let mut buf = vec![0u8; 64 * 1024];
    for k in 1..parts as u64 {
        let mut pos = (len * k / parts as u64).max(*cuts.last().unwrap_or(&0));
        // Advance to just past the next newline.
        'find: loop {
            if pos >= len {
                pos = len;
                break;
            }
            f.seek(SeekFrom::Start(pos))?;
            let n = f.read(&mut buf)?;
            if n == 0 {
                pos = len;
                break;
            }
            if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
                pos += i as u64 + 1;
                break 'find;
            }
            pos += n as u64;
        }
        cuts.push(pos);
    }
    cuts.push(len);
    Ok(cuts.windows(2).map(|w| (w[0], w[1])).collect())
}

#[derive(Debug, Clone, Default)]
pub struct SendResult {
    pub bytes: u64,
    /// From the shared start instant to the last byte written (TCP) or answered (HTTP).
    pub done_after: Duration,
    pub http_requests: u64,
    pub http_retries: u64,
    pub http_accepted: u64,
    pub http_rejected: u64,
    pub transport_retries: u64,
}

/// Streams `[start, end)` of `path` over one TCP connection, then half-closes and waits for the
/// server to close its side (so that everything was read).
pub fn send_tcp(
    addr: SocketAddr,
    path: &Path,
    (start, end): (u64, u64),
    t0: Instant,
) -> Result<SendResult, String> {
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_write_timeout(Some(Duration::from_secs(300)))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(300)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = end - start;
    let mut sent = 0u64;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = f.read(&mut buf[..want]).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n])
            .map_err(|e| format!("write to {addr} after {sent} bytes: {e}"))?;
        sent += n as u64;
        left -= n as u64;
    }
    let done_after = t0.elapsed();
    let _ = s.shutdown(Shutdown::Write);
    let mut sink = [0u8; 1024];
    loop {
        match s.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(SendResult {
        bytes: sent,
        done_after,
        ..Default::default()
    })
}

/// POSTs `[start, end)` of `path` as NDJSON bodies of 1–4 MB (sizes from `seed`), retrying on
/// 429/503 after the server's Retry-After (seconds, clamped to 1–10) and after a connection the
/// server closed mid-upload (1 s); at most 600 attempts per body.
pub fn send_http(
    base: &str,
    path: &PathBuf,
    (start, end): (u64, u64),
    seed: u64,
    t0: Instant,
) -> Result<SendResult, String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{base}/api/v1/logs/ingest");
    let mut rng = Rng::new(seed);
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
    let mut res = SendResult::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut left = end - start;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let target = rng.range(1 << 20, 4 << 20) as usize;
        while pending.len() < target && left > 0 {
            let want = chunk.len().min(left as usize);
            let n = f.read(&mut chunk[..want]).map_err(|e| e.to_string())?;
            if n == 0 {
                left = 0;
                break;
            }
            pending.extend_from_slice(&chunk[..n]);
            left -= n as u64;
        }
        if pending.is_empty() {
            break;
        }
        // The body ends at the last newline (everything at the end of the range).
        let cut = if left == 0 {
            pending.len()
        } else {
            match pending.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => pending.len(),
            }
        };
        let body: Vec<u8> = pending[..cut].to_vec();
        pending.drain(..cut);
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > 600 {
                return Err(format!("{url}: gave up after {attempts} attempts"));
            }
            let resp = match client
                .post(&url)
                .header("content-type", "application/x-ndjson")
                .body(body.clone())
                .send()
            {
                Ok(r) => r,
                // The server refused the upload by closing the connection before reading the
                // whole body (overload shedding), or closed a pooled keep-alive connection as
                // we reused it. Nothing was accepted: back off as for a 429 and send again
                // (a duplicate would show up as a wrong total).
                Err(e) if (e.is_request() || e.is_connect()) && !e.is_timeout() => {
                    res.transport_retries += 1;
                    if res.transport_retries <= 3 {
                        eprintln!("e2e: POST {url}: {} (retrying)", error_chain(&e));
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                Err(e) => return Err(format!("POST {url}: {}", error_chain(&e))),
            };
            res.http_requests += 1;
            let status = resp.status().as_u16();
            if status == 429 || status == 503 {
                res.http_retries += 1;
                let wait = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1)
                    .clamp(1, 10);
                std::thread::sleep(Duration::from_secs(wait));
                continue;
            }
            let text = resp.text().unwrap_or_default();
            if !(200..300).contains(&status) {
                return Err(format!("POST {url}: {status} {text}"));
            }
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            res.http_accepted += v["accepted"].as_u64().unwrap_or(0);
            res.http_rejected += v["rejected"].as_u64().unwrap_or(0);
            break;
        }
        res.bytes += body.len() as u64;
    }
    res.done_after = t0.elapsed();
    Ok(res)
}

/// An error and its sources, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    let mut depth = 0;
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
        depth += 1;
        if depth > 8 {
            break;
        }
    }
    out
}

/// Runs `logsift import` (the release binary under test) on `files` against `http`.
pub fn import(
    http: &str,
    files: &[std::path::PathBuf],
    bytes: u64,
    t0: Instant,
) -> Result<SendResult, String> {
    let out = std::process::Command::new(crate::server::bin())
        .arg("import")
        .args(["--server", http])
        .args(files)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("starting logsift import: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "logsift import failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(SendResult {
        bytes,
        done_after: t0.elapsed(),
        ..Default::default()
    })
}
