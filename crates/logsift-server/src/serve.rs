//! The HTTP accept loop: a bounded number of connections, HTTP/1.1 with a header read
//! timeout (slowloris clients and idle keep-alive connections are closed) or HTTP/2 for gRPC,
//! optional TLS, and graceful shutdown that lets requests in flight finish.
//!
//! `axum::serve` offers none of these limits, so this drives hyper directly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::ServerMetrics;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use logsift_ingest::accept::{Accept, AcceptCounters, Connection};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone)]
pub struct HttpLimits {
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// The `max_connections` places, shared by every listener given the same limits: an open
    /// connection (HTTP/1.1 or HTTP/2) takes one, and so does each HTTP/2 stream while its
    /// request runs — a gRPC client may multiplex many requests over one connection.
    pub slots: Arc<Semaphore>,
    /// From the start of waiting for a request's head (on a new or idle connection) to its
    /// last header byte; also bounds a TLS handshake.
    pub header_read_timeout: Duration,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub protocol: Protocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 only (prior knowledge, or ALPN h2 over TLS): what gRPC clients speak.
    Http2,
}

/// Streams one HTTP/2 connection may run at once; an OTLP exporter uses a handful.
const MAX_H2_STREAMS: u32 = 64;

#[derive(Clone)]
enum Builder {
    Http1(hyper::server::conn::http1::Builder),
    Http2(hyper::server::conn::http2::Builder<TokioExecutor>),
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits for the open
/// connections to finish their requests.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: Arc<ServerMetrics>,
    shutdown: CancellationToken,
) {
    let slots = limits.slots.clone();
    let graceful = GracefulShutdown::new();
    let builder = match limits.protocol {
        Protocol::Http1 => {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            Builder::Http1(b)
        }
        Protocol::Http2 => {
            // HTTP/2 has no header read timeout; pings find dead peers instead, and
            // max_connections bounds the live idle ones.
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .keep_alive_interval(Some(limits.header_read_timeout))
                .keep_alive_timeout(Duration::from_secs(20))
                .max_concurrent_streams(MAX_H2_STREAMS);
            Builder::Http2(b)
        }
    };
    let accept = Accept {
        name: "http",
        slots: slots.clone(),
        bound_by: "http.max_connections",
        tls: limits.tls.clone(),
        // A handshake is part of waiting for the first request's head.
        handshake_timeout: limits.header_read_timeout,
        nodelay: true,
        counters: AcceptCounters {
            accepted: None,
            refused: metrics.http_connections_refused.clone(),
            handshake_failures: metrics.tls_handshake_failures.clone(),
            handshake_timeouts: Some(metrics.http_timeouts.clone()),
        },
    };
    // Taken at shutdown; a connection whose handshake ends after that is dropped.
    let graceful = Arc::new(parking_lot::Mutex::new(Some(graceful)));
    let watching = graceful.clone();
    let serve = move |conn: Connection, peer: SocketAddr| {
        let watcher = watching.lock().as_ref().map(GracefulShutdown::watcher);
        let (builder, router, metrics, streams) = (
            builder.clone(),
            router.clone(),
            metrics.clone(),
            slots.clone(),
        );
        async move {
            if let Some(watcher) = watcher {
                connection(builder, conn, peer, router, metrics, watcher, streams).await
            }
        }
    };
    // Connections are waited for through `graceful`, not through these tasks.
    accept
        .run(listener, shutdown, TaskTracker::new(), serve)
        .await;
    let graceful = graceful.lock().take();
    if let Some(graceful) = graceful {
        graceful.shutdown().await;
    }
}

async fn connection<I>(
    builder: Builder,
    io: I,
    peer: SocketAddr,
    router: Router,
    metrics: Arc<ServerMetrics>,
    watcher: hyper_util::server::graceful::Watcher,
    streams: Arc<Semaphore>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let multiplexed = matches!(builder, Builder::Http2(_));
    let stream_metrics = metrics.clone();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut router = router.clone();
            let place = multiplexed.then(|| streams.clone().try_acquire_owned());
            let metrics = stream_metrics.clone();
            async move {
                let _place = match place {
                    Some(Err(_)) => {
                        metrics.http_connections_refused.inc();
                        return Ok(grpc_unavailable());
                    }
                    other => other,
                };
                // Router is always ready, so calling it without poll_ready is allowed.
                tower_service::Service::call(&mut router, req.map(axum::body::Body::new)).await
            }
        });
    let served = match builder {
        Builder::Http1(b) => {
            watcher
                .watch(b.serve_connection(TokioIo::new(io), service))
                .await
        }
        Builder::Http2(b) => {
            watcher
                .watch(b.serve_connection(TokioIo::new(io), service))
                .await
        }
    };
    if let Err(e) = served {
        if e.is_timeout() {
            metrics.http_timeouts.inc();
            tracing::debug!(%peer, "HTTP connection closed: header read timeout");
        } else {
            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
        }
    }
}

/// The answer to an HTTP/2 stream over the connection budget: gRPC `UNAVAILABLE`, which OTLP
/// exporters retry with backoff.
fn grpc_unavailable() -> axum::response::Response {
    let mut response = axum::response::Response::new(axum::body::Body::empty());
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-type", "application/grpc"),
        ("grpc-status", "14"),
        (
            "grpc-message",
            "http.max_connections%20connections%20and%20streams%20are%20open;%20retry%20later",
        ),
    ] {
        headers.insert(name, axum::http::HeaderValue::from_static(value));
    }
    response
}
