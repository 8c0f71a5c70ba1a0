//! The one way logsift accepts TCP connections, for the stream listeners (syslog, JSON lines)
//! and for HTTP alike: a bounded number open at once (the others closed as soon as they are
//! accepted, and counted), TLS handshakes bounded in time, a back-off when `accept` fails, and
//! each connection served on a task of its own until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// An accepted connection: plain TCP, or TLS over it once the handshake is done.
pub type Connection = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

/// Most connections a listener accepts after shutdown starts (those already waiting in its
/// backlog), so that a flood of new ones cannot hold shutdown up.
const MAX_ACCEPTED_AFTER_SIGNAL: usize = 1024;

/// How a listener accepts connections.
pub struct Accept {
    /// Names the listener in logs (`syslog-tcp`, `http`).
    pub name: &'static str,
    /// The places for open connections; a connection holds one until it ends. Listeners given
    /// the same semaphore share their bound.
    pub slots: Arc<Semaphore>,
    /// The setting that bounds them, for the log line of a refusal.
    pub bound_by: &'static str,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub handshake_timeout: Duration,
    /// Set `TCP_NODELAY` (request/response protocols; listeners that only read need not).
    pub nodelay: bool,
    pub counters: AcceptCounters,
}

/// What [`Accept`] counts.
#[derive(Clone, Default)]
pub struct AcceptCounters {
    /// Connections accepted and served.
    pub accepted: Option<Counter>,
    /// Connections closed at once because every slot was taken.
    pub refused: Counter,
    /// TLS handshakes that failed or timed out.
    pub handshake_failures: Counter,
    /// TLS handshakes that timed out (counted in `handshake_failures` too).
    pub handshake_timeouts: Option<Counter>,
}

impl Accept {
    /// Accepts connections on `listener` until `shutdown` is cancelled, and hands each to
    /// `serve` on a task of `tasks`, with the slot it holds until `serve` returns.
    pub async fn run<S, F>(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
        tasks: TaskTracker,
        serve: S,
    ) where
        S: Fn(Connection, SocketAddr) -> F + Clone + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let name = self.name;
        let acceptor = self.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        // After the signal, connections the kernel already completed are still accepted and
        // drained: their peers may have sent data into them, which closing the listener would
        // throw away (a sender that wrote its lines and then saw the server stop lost a whole
        // connection's worth, now and then, in `tests/durability.rs`). None is waited for.
        let mut after_signal: Option<usize> = None;
        loop {
            let accepted = match after_signal {
                Some(n) if n >= MAX_ACCEPTED_AFTER_SIGNAL => return,
                Some(n) => {
                    after_signal = Some(n + 1);
                    match tokio::time::timeout(Duration::ZERO, listener.accept()).await {
                        Ok(accepted) => accepted,
                        Err(_) => return,
                    }
                }
                None => tokio::select! {
                    _ = shutdown.cancelled() => {
                        after_signal = Some(0);
                        continue;
                    }
                    accepted = listener.accept() => accepted,
                },
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(_) if after_signal.is_some() => return,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                self.counters.refused.inc();
                tracing::warn!(listener = name, %peer, bound_by = self.bound_by,
                    "connection refused: as many connections are open as the setting allows");
                continue;
            };
            if let Some(c) = &self.counters.accepted {
                c.inc();
            }
            if self.nodelay {
                let _ = stream.set_nodelay(true);
            }
            let (serve, acceptor, counters) =
                (serve.clone(), acceptor.clone(), self.counters.clone());
            let timeout = self.handshake_timeout;
            tasks.spawn(async move {
                let _permit = permit;
                let Some(acceptor) = acceptor else {
                    return serve(Either::Left(stream), peer).await;
                };
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve(Either::Right(tls), peer).await,
                    Ok(Err(e)) => {
                        counters.handshake_failures.inc();
                        tracing::info!(listener = name, %peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        counters.handshake_failures.inc();
                        if let Some(c) = &counters.handshake_timeouts {
                            c.inc();
                        }
                        tracing::info!(listener = name, %peer, "TLS handshake timed out");
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One slot: the first connection is served while it stays open, the second is closed at
    /// once and counted as refused; cancelling stops the loop.
    #[test]
    fn a_full_listener_refuses_and_counts_and_shutdown_stops_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let counters = AcceptCounters {
                accepted: Some(Counter::default()),
                ..AcceptCounters::default()
            };
            let accept = Accept {
                name: "test",
                slots: Arc::new(Semaphore::new(1)),
                bound_by: "test.max_connections",
                tls: None,
                handshake_timeout: Duration::from_secs(1),
                nodelay: true,
                counters: counters.clone(),
            };
            // Echoes one byte back, then holds the connection until the peer closes it.
            let serve = |mut conn: Connection, _peer: SocketAddr| async move {
                let mut byte = [0u8; 1];
                while let Ok(1) = conn.read(&mut byte).await {
                    let _ = conn.write_all(&byte).await;
                }
            };
            let shutdown = CancellationToken::new();
            let tasks = TaskTracker::new();
            let looping =
                tokio::spawn(accept.run(listener, shutdown.clone(), tasks.clone(), serve));

            let mut first = TcpStream::connect(addr).await.unwrap();
            first.write_all(b"x").await.unwrap();
            let mut echo = [0u8; 1];
            first.read_exact(&mut echo).await.unwrap();
            assert_eq!(&echo, b"x");

            let mut second = TcpStream::connect(addr).await.unwrap();
            let mut rest = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut rest));
            // Closed by the server without a byte (a reset counts as closed too).
            assert!(matches!(read.await, Ok(Ok(0)) | Ok(Err(_))));
            assert_eq!(counters.refused.get(), 1);
            assert_eq!(counters.accepted.as_ref().unwrap().get(), 1);

            // The slot comes back when the first connection ends.
            drop(first);
            tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let mut third = TcpStream::connect(addr).await.unwrap();
                    third.write_all(b"y").await.unwrap();
                    if third.read_exact(&mut echo).await.is_ok() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .expect("a connection is served once the slot is free");

            shutdown.cancel();
            tokio::time::timeout(Duration::from_secs(5), looping)
                .await
                .expect("the loop stops when cancelled")
                .unwrap();
        });
    }
}
