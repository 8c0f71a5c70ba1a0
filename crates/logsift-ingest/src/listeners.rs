//! Syslog TCP/UDP and JSON lines TCP listeners. Each turns received bytes into WAL entries;
//! they never parse (the indexer does, once), so a listener's cost is framing and copying.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use logsift_core::entry::{Entries, Entry};
use logsift_core::time::now_ns;
use logsift_core::{Format, IndexName};
use logsift_parse::framing::{Framer, Step};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::{Accept, AcceptCounters, Connection};
use crate::{Ack, Admission, IngestMetrics, PipelineHandle};

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
    /// `syslog-tcp`, `syslog-tls` or `json-tcp`: names the listener in `source` and logs.
    pub name: &'static str,
    pub format: Format,
    pub index: IndexName,
    pub max_line_bytes: usize,
    /// Connections open at once; more are closed as soon as they are accepted (and counted),
    /// so that a flood of connections cannot take the memory and file descriptors that the
    /// connections already open need.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed: a peer that vanished without
    /// a FIN (or never meant to send) does not hold a slot for ever.
    pub idle_timeout: Duration,
    /// TLS (RFC 5425 when syslog: octet-counted frames, which the framer detects).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The longest a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    let metrics = pipeline.metrics().clone();
    let accept = Accept {
        name: cfg.name,
        slots: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
        bound_by: "ingest.max_connections_per_listener",
        tls: cfg.tls.clone(),
        handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
        nodelay: false,
        counters: AcceptCounters {
            accepted: Some(metrics.tcp_connections.clone()),
            refused: metrics.tcp_connections_refused.clone(),
            handshake_failures: metrics.tls_handshake_failures.clone(),
            handshake_timeouts: None,
        },
    };
    let cfg = Arc::new(cfg);
    let shutdown = life.shutdown.clone();
    let serve = move |mut conn: Connection, peer: SocketAddr| {
        let (cfg, pipeline, shutdown) = (cfg.clone(), pipeline.clone(), shutdown.clone());
        async move {
            let served = serve_stream(&mut conn, peer, &cfg, &pipeline, &shutdown).await;
            // A clean end: close_notify over TLS, so the sender knows nothing was cut.
            let _ = tokio::time::timeout(DRAIN_IDLE, conn.shutdown()).await;
            if let Err(e) = served {
                tracing::debug!(listener = cfg.name, %peer, error = %e, "connection ended with an error");
            }
        }
    };
    life.tasks
        .spawn(accept.run(listener, life.shutdown.clone(), life.tasks.clone(), serve));
    Ok(local)
}

/// Reads more bytes; `Ok(None)` when the connection should end (draining and idle, or idle
/// for `idle_timeout`).
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    shutdown: &CancellationToken,
    idle_timeout: Duration,
    metrics: &IngestMetrics,
) -> std::io::Result<Option<usize>> {
    if !shutdown.is_cancelled() {
        tokio::select! {
            read = tokio::time::timeout(idle_timeout, stream.read_buf(buf)) => {
                return match read {
                    Ok(read) => eof_ok(read).map(Some),
                    Err(_) => {
                        metrics.tcp_idle_closed.inc();
                        Ok(None)
                    }
                };
            }
            _ = shutdown.cancelled() => {}
        }
    }
    match tokio::time::timeout(DRAIN_IDLE, stream.read_buf(buf)).await {
        Ok(read) => eof_ok(read).map(Some),
        Err(_) => Ok(None),
    }
}

/// Many TLS senders close the TCP connection without a TLS close_notify; what they sent
/// before is still good, so that is an end of stream, not an error.
fn eof_ok(read: std::io::Result<usize>) -> std::io::Result<usize> {
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        other => other,
    }
}

/// The lines and bytes counters of a stream listener; syslog over TLS counts as syslog TCP.
fn counters(metrics: &IngestMetrics, format: Format) -> (&Counter, &Counter) {
    match format {
        Format::Json => (&metrics.json_tcp_lines, &metrics.json_tcp_bytes),
        Format::Syslog | Format::Auto => (&metrics.syslog_tcp_lines, &metrics.syslog_tcp_bytes),
    }
}

async fn serve_stream<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    cfg: &StreamListenerConfig,
    pipeline: &PipelineHandle,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let metrics = pipeline.metrics().clone();
    let (lines_counter, bytes_counter) = counters(&metrics, cfg.format);
    let source = format!("{} {}", cfg.name, peer);
    let mut framer = Framer::new(cfg.max_line_bytes);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let n = read_more(stream, &mut buf, shutdown, cfg.idle_timeout, &metrics)
            .await?
            .unwrap_or(0);
        let eof = n == 0;
        bytes_counter.inc_by(n as u64);
        let received_at = now_ns();
        let mut entries = Entries::new();
        loop {
            match framer.next(&buf) {
                Step::Frame {
                    start,
                    end,
                    consumed,
                } => {
                    entries.push(&entry(cfg, &source, received_at, &buf[start..end]));
                    buf.advance(consumed);
                }
                Step::Error { error, consumed } => {
                    metrics.frame_errors.inc();
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
                entries.push(&entry(cfg, &source, received_at, &buf[range]));
            }
        }
        let lines = entries.len() as u64;
        lines_counter.inc_by(lines);
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

fn entry<'a>(
    cfg: &'a StreamListenerConfig,
    source: &'a str,
    received_at: i64,
    raw: &'a [u8],
) -> Entry<'a> {
    Entry {
        format: cfg.format,
        received_at,
        index: cfg.index.as_str(),
        source,
        raw,
    }
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
            metrics.syslog_udp_bytes.inc_by(n as u64);
            let mut datagram = &buf[..n];
            while let [rest @ .., b'\n' | b'\r' | 0] = datagram {
                datagram = rest;
            }
            if datagram.is_empty() {
                continue;
            }
            if datagram.len() > max_line_bytes {
                metrics.frame_errors.inc();
                continue;
            }
            metrics.syslog_udp_lines.inc();
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
                metrics.syslog_udp_dropped.inc();
            }
        }
    });
    Ok(local)
}
