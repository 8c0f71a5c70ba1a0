//! Syslog TCP/UDP and JSON lines TCP listeners. Each turns received bytes into WAL entries;
//! they never parse (the indexer does, once), so a listener's cost is framing and copying.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use logsift_core::entry::Entry;
use logsift_core::time::now_ns;
use logsift_core::{Format, IndexName};
use logsift_parse::framing::{Framer, Step};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Ack, Admission, Metrics, PipelineHandle};

/// After shutdown starts, a connection keeps reading only while data keeps coming this fast:
/// what a sender wrote before the signal is in the socket buffer and is read and stored; an
/// idle or trickling connection does not hold shutdown up.
const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_millis(200);

/// How listeners stop: `shutdown` is cancelled to stop accepting and drain, and `tasks`
/// tracks every listener and connection task so the caller can wait for all of them.
#[derive(Clone, Default)]
pub struct Lifecycle {
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

/// What a stream listener receives and where it sends it.
#[derive(Debug, Clone)]
pub struct StreamListenerConfig {
    /// `syslog-tcp` or `json-tcp`: names the listener in `source` and logs.
    pub name: &'static str,
    pub format: Format,
    pub index: IndexName,
    pub max_line_bytes: usize,
}

/// Binds a TCP listener and serves it until `life.shutdown` is cancelled; then every
/// connection drains what its peer already sent and ends.
pub async fn spawn_tcp(
    addr: SocketAddr,
    cfg: StreamListenerConfig,
    pipeline: PipelineHandle,
    life: Lifecycle,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(listener = cfg.name, addr = %local, "listening");
    let cfg = Arc::new(cfg);
    let tasks = life.tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = life.shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    Metrics::add(&pipeline.metrics().tcp_connections, 1);
                    let cfg = cfg.clone();
                    let pipeline = pipeline.clone();
                    let shutdown = life.shutdown.clone();
                    life.tasks.spawn(async move {
                        if let Err(e) = serve_stream(stream, peer, &cfg, &pipeline, &shutdown).await {
                            tracing::debug!(listener = cfg.name, %peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(listener = cfg.name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(local)
}

/// Reads more bytes; `Ok(None)` when the connection should end (draining and idle).
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    shutdown: &CancellationToken,
) -> std::io::Result<Option<usize>> {
    if !shutdown.is_cancelled() {
        tokio::select! {
            read = stream.read_buf(buf) => return read.map(Some),
            _ = shutdown.cancelled() => {}
        }
    }
    match tokio::time::timeout(DRAIN_IDLE, stream.read_buf(buf)).await {
        Ok(read) => read.map(Some),
        Err(_) => Ok(None),
    }
}

fn counters<'m>(metrics: &'m Metrics, name: &str) -> (&'m AtomicU64, &'m AtomicU64) {
    if name == "json-tcp" {
        (&metrics.json_tcp_lines, &metrics.json_tcp_bytes)
    } else {
        (&metrics.syslog_tcp_lines, &metrics.syslog_tcp_bytes)
    }
}

async fn serve_stream(
    mut stream: TcpStream,
    peer: SocketAddr,
    cfg: &StreamListenerConfig,
    pipeline: &PipelineHandle,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let metrics = pipeline.metrics().clone();
    let (lines_counter, bytes_counter) = counters(&metrics, cfg.name);
    let source = format!("{} {}", cfg.name, peer);
    let mut framer = Framer::new(cfg.max_line_bytes);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let n = read_more(&mut stream, &mut buf, shutdown)
            .await?
            .unwrap_or(0);
        let eof = n == 0;
        Metrics::add(bytes_counter, n as u64);
        let received_at = now_ns();
        let mut entries = Vec::new();
        loop {
            match framer.next(&buf) {
                Step::Frame {
                    start,
                    end,
                    consumed,
                } => {
                    entries.push(encode(cfg, &source, received_at, &buf[start..end]));
                    buf.advance(consumed);
                }
                Step::Error { error, consumed } => {
                    Metrics::add(&metrics.frame_errors, 1);
                    tracing::warn!(listener = cfg.name, %peer, %error, "bad frame");
                    buf.advance(consumed);
                }
                Step::NeedMore { consumed } => {
                    buf.advance(consumed);
                    break;
                }
            }
        }
        if eof {
            if let Some(range) = framer.finish(&buf) {
                entries.push(encode(cfg, &source, received_at, &buf[range]));
            }
        }
        let lines = entries.len() as u64;
        Metrics::add(lines_counter, lines);
        // Waiting here is the backpressure: while the pipeline is full we stop reading, the
        // kernel's buffers fill, and TCP slows the sender down.
        match pipeline
            .append(entries, Ack::Received, Admission::Wait)
            .await
        {
            Ok(()) => {}
            Err(crate::AppendError::Closed) => return Ok(()),
            // Counted by the WAL writer; the connection stays up and ingest resumes by itself.
            Err(_) => {}
        }
        if eof {
            return Ok(());
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
    }
}

fn encode(cfg: &StreamListenerConfig, source: &str, received_at: i64, raw: &[u8]) -> Vec<u8> {
    Entry {
        format: cfg.format,
        received_at,
        index: cfg.index.as_str(),
        source,
        raw,
    }
    .encode()
}

/// Binds a UDP socket: one datagram is one message.
pub async fn spawn_udp(
    addr: SocketAddr,
    index: IndexName,
    max_line_bytes: usize,
    pipeline: PipelineHandle,
    life: Lifecycle,
) -> std::io::Result<SocketAddr> {
    let socket = UdpSocket::bind(addr).await?;
    let local = socket.local_addr()?;
    tracing::info!(listener = "syslog-udp", addr = %local, "listening");
    life.tasks.spawn(async move {
        let metrics = pipeline.metrics().clone();
        // The largest UDP payload; anything above max_line_bytes is counted and dropped.
        let mut buf = vec![0u8; 65_536];
        loop {
            let received = tokio::select! {
                _ = life.shutdown.cancelled() => return,
                r = socket.recv_from(&mut buf) => r,
            };
            let (n, peer) = match received {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "UDP receive failed");
                    continue;
                }
            };
            Metrics::add(&metrics.syslog_udp_bytes, n as u64);
            let mut datagram = &buf[..n];
            while let [rest @ .., b'\n' | b'\r' | 0] = datagram {
                datagram = rest;
            }
            if datagram.is_empty() {
                continue;
            }
            if datagram.len() > max_line_bytes {
                Metrics::add(&metrics.frame_errors, 1);
                continue;
            }
            Metrics::add(&metrics.syslog_udp_lines, 1);
            let source = format!("syslog-udp {peer}");
            let entry = Entry {
                format: Format::Syslog,
                received_at: now_ns(),
                index: index.as_str(),
                source: &source,
                raw: datagram,
            }
            .encode();
            // UDP cannot push back on its sender: over budget or refusing, drop and count.
            if pipeline.is_refusing()
                || pipeline
                    .append(vec![entry], Ack::Received, Admission::Try)
                    .await
                    .is_err()
            {
                Metrics::add(&metrics.syslog_udp_dropped, 1);
            }
        }
    });
    Ok(local)
}
