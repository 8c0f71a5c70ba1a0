//! `GET /api/v1/tail?q=&index=`: server-sent events of new matching records.
//!
//! A task per client polls for records above the client's cursor and puts them in a bounded
//! outbox that the response streams from. The poll is paced by the client: when the outbox
//! is full the task waits for room, and if none comes within [`SLOW_CLIENT_WAIT`] the client
//! is too slow: the outbox is emptied at once (so a stalled client holds no records), the
//! client gets a `dropped` event as soon as its connection takes data again, and the stream
//! ends. Ingest never waits for a client.
//!
//! Tails are queries like any other: at most `query.max_tail_clients` streams are open (429
//! beyond), and each poll takes one of the `query.max_concurrent_queries` slots while it runs
//! — or, when none is free, waits for its next turn (the cursor loses nothing) — under the
//! query time limit, and stops as soon as its client goes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures_util::stream::{self, Stream};
use logsift_ingest::Metrics;
use logsift_query::tail::{self, TailCursor};
use logsift_query::Budget;
use serde::Deserialize;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::search::{query_error, read_scope, QueryLimits};
use crate::{ApiError, AppState, Principal};

/// Records (events) buffered per client before it counts as too slow.
const TAIL_BUFFER: usize = 1024;
/// How long a full outbox may stay full before its client is dropped.
const SLOW_CLIENT_WAIT: Duration = Duration::from_secs(2);
/// Most records fetched per poll; the rest come with the next poll.
const POLL_LIMIT: usize = 500;
/// Between polls when nothing was new. New records are committed every
/// `index.commit_interval_ms` (500 ms by default), so this keeps delivery well within 1 s.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// One poll's time limit (or `query.query_timeout_ms` if that is shorter).
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// Events between the polling task and the response stream.
#[derive(Default)]
struct Outbox {
    queue: Mutex<VecDeque<Event>>,
    /// The client fell behind: nothing more is queued.
    dropped: AtomicBool,
    /// The polling task has ended (shutdown or an error, already queued as an event).
    finished: AtomicBool,
    /// Something was queued, or the task ended.
    filled: Notify,
    /// Something was taken out.
    drained: Notify,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Event>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `event`, waiting up to [`SLOW_CLIENT_WAIT`] for room. False when the client
    /// is gone or too slow (then it is marked dropped and its queue emptied).
    async fn push(&self, event: Event, gone: &CancellationToken) -> bool {
        let deadline = tokio::time::Instant::now() + SLOW_CLIENT_WAIT;
        loop {
            // Registered before looking, so that a drain in between is not missed.
            let drained = self.drained.notified();
            {
                let mut queue = self.lock();
                if queue.len() < TAIL_BUFFER {
                    queue.push_back(event);
                    drop(queue);
                    self.filled.notify_one();
                    return true;
                }
            }
            tokio::select! {
                _ = drained => {}
                _ = gone.cancelled() => return false,
                _ = tokio::time::sleep_until(deadline) => {
                    self.dropped.store(true, Ordering::Relaxed);
                    self.lock().clear();
                    self.filled.notify_one();
                    return false;
                }
            }
        }
    }

    fn finish(&self, last: Option<Event>) {
        if let Some(event) = last {
            // Past the bound by one at most: the task ends right after.
            self.lock().push_back(event);
        }
        self.finished.store(true, Ordering::Relaxed);
        self.filled.notify_one();
    }
}

/// The response stream's state; dropping it (client gone) stops the polling task.
struct Client {
    outbox: Arc<Outbox>,
    gone: CancellationToken,
    told: bool,
    metrics: Arc<Metrics>,
    /// One of `query.max_tail_clients`, held while the stream is open.
    _permit: OwnedSemaphorePermit,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.gone.cancel();
        self.metrics.tail_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Deserialize)]
pub struct TailParams {
    q: Option<String>,
    index: Option<String>,
}

pub async fn tail(
    State(state): State<AppState>,
    Extension(limits): Extension<QueryLimits>,
    Extension(principal): Extension<Principal>,
    p: Result<Query<TailParams>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(p) = p.map_err(|e| ApiError::bad_request("bad_parameter", e.body_text()))?;
    let ast = logsift_query::parse_query(p.q.as_deref().unwrap_or("")).map_err(query_error)?;
    let indexes = read_scope(&state, &principal, p.index)?;
    let permit = limits.tail_permit()?;
    let store = state.store.clone();
    let cursor = {
        let (store, indexes) = (store.clone(), indexes.clone());
        tokio::task::spawn_blocking(move || TailCursor::now(&store, &indexes))
            .await
            .map_err(|e| ApiError::internal(format!("tail task failed: {e}")))?
            .map_err(query_error)?
    };
    let outbox = Arc::new(Outbox::default());
    let gone = CancellationToken::new();
    let shutdown = state.cfg.shutdown.clone();
    let metrics = state.metrics.clone();
    metrics.tail_clients.fetch_add(1, Ordering::Relaxed);
    let client = Client {
        outbox: outbox.clone(),
        gone: gone.clone(),
        told: false,
        metrics: metrics.clone(),
        _permit: permit,
    };
    let poll_timeout = POLL_TIMEOUT.min(limits.timeout());
    tokio::spawn(async move {
        let mut cursor = cursor;
        let ast = Arc::new(ast);
        loop {
            tokio::select! {
                _ = gone.cancelled() => return,
                _ = shutdown.cancelled() => return outbox.finish(None),
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            // Keep polling without a pause while there is a backlog.
            loop {
                let Some(slot) = limits.try_slot() else {
                    Metrics::add(&metrics.tail_polls_deferred, 1);
                    break;
                };
                let (store, ast, indexes) = (store.clone(), ast.clone(), indexes.clone());
                let budget = Budget::with_deadline(Instant::now() + poll_timeout);
                let cancel = budget.cancel.clone();
                let task = tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    let hits = tail::poll(&store, &ast, &indexes, &mut cursor, POLL_LIMIT, &budget);
                    (cursor, hits)
                });
                let polled = tokio::select! {
                    polled = task => polled,
                    _ = gone.cancelled() => {
                        // The poll sees the flag between segments and gives its slot back.
                        cancel.store(true, Ordering::Relaxed);
                        return;
                    }
                };
                let hits = match polled {
                    Ok((c, Ok(hits))) => {
                        cursor = c;
                        hits
                    }
                    Ok((_, Err(e))) => {
                        return outbox
                            .finish(Some(Event::default().event("error").data(e.to_string())))
                    }
                    Err(e) => {
                        return outbox
                            .finish(Some(Event::default().event("error").data(e.to_string())))
                    }
                };
                let full_batch = hits.len() == POLL_LIMIT;
                for hit in hits {
                    let event = Event::default()
                        .event("record")
                        .json_data(&hit)
                        .unwrap_or_else(|_| Event::default().event("record").data("{}"));
                    if !outbox.push(event, &gone).await {
                        if outbox.dropped.load(Ordering::Relaxed) {
                            Metrics::add(&metrics.tail_dropped, 1);
                        }
                        return;
                    }
                }
                if !full_batch {
                    break;
                }
            }
        }
    });
    // The stream drains the outbox; a dropped client gets the notice next, then the end.
    let events = stream::unfold(client, |mut client| async move {
        let outbox = client.outbox.clone();
        loop {
            let filled = outbox.filled.notified();
            {
                if outbox.dropped.load(Ordering::Relaxed) {
                    if client.told {
                        return None;
                    }
                    client.told = true;
                    let notice = Event::default().event("dropped").data(format!(
                        "this client fell {TAIL_BUFFER} records behind and was disconnected; \
                         records in between were skipped; reconnect to follow again"
                    ));
                    return Some((Ok(notice), client));
                }
                let next = outbox.lock().pop_front();
                if let Some(event) = next {
                    outbox.drained.notify_one();
                    return Some((Ok(event), client));
                }
                if outbox.finished.load(Ordering::Relaxed) {
                    return None;
                }
            }
            filled.await;
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
