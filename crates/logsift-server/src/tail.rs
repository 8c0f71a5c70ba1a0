//! `GET /api/v1/tail?q=&index=`: server-sent events of new matching records.
//!
//! Streams with the same `q` over the same indexes (after the caller's read scope) share one
//! poller, a hub: a task that polls for records above its cursor, renders each record once
//! and offers it to every subscriber's bounded outbox, from which that client's response
//! streams. Before hubs, each stream polled and rendered on its own: in the hostile soak, 64
//! tails of one query rendered every record 64 times, and legitimate ingest acknowledgements
//! waited 1.5 s at p99 behind them (issue #17).
//!
//! Neither ingest nor the other subscribers ever wait for a client. An outbox that stays over
//! [`TAIL_BUFFER`] events for [`SLOW_CLIENT_WAIT`], or reaches twice that, belongs to a client
//! too slow to follow: it is emptied at once (a stalled client holds no records), the client
//! gets a `dropped` event as soon as its connection takes data again, and the stream ends.
//!
//! Tails are queries like any other: at most `query.max_tail_clients` streams are open (429
//! beyond), and each poll takes one of the `query.max_concurrent_queries` slots while it runs
//! — or, when none is free, waits for its next turn (the cursor loses nothing) — under the
//! query time limit, and stops as soon as the hub's last client goes.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::ServerMetrics;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures_util::stream::{self, Stream};
use logsift_query::lang::Ast;
use logsift_query::tail::{self, TailCursor};
use logsift_query::Budget;
use logsift_store::Store;
use serde::Deserialize;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::search::{query_error, read_scope, QueryLimits};
use crate::{ApiError, AppState, Principal};

/// Events buffered per client before it may count as too slow.
const TAIL_BUFFER: usize = 1024;
/// How long an outbox may stay over [`TAIL_BUFFER`] before its client is dropped.
const SLOW_CLIENT_WAIT: Duration = Duration::from_secs(2);
/// Most records fetched per poll; the rest come with the next poll.
const POLL_LIMIT: usize = 500;
/// Between polls when nothing was new. New records are committed every
/// `index.commit_interval_ms` (500 ms by default), so this keeps delivery well within 1 s.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// One poll's time limit (or `query.query_timeout_ms` if that is shorter).
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Queue {
    events: VecDeque<Event>,
    /// Since when the queue has held more than [`TAIL_BUFFER`] events.
    over_since: Option<Instant>,
}

/// Events between a hub and one client's response stream.
#[derive(Default)]
struct Outbox {
    queue: Mutex<Queue>,
    /// The client fell behind: nothing more is queued.
    dropped: AtomicBool,
    /// The hub has ended (shutdown or an error, already queued as an event).
    finished: AtomicBool,
    /// Something was queued, or the hub ended, or the client was dropped.
    filled: Notify,
}

/// What became of an offered event.
#[derive(PartialEq)]
enum Offered {
    Queued,
    /// The client was found too slow just now (and dropped).
    TooSlow,
    /// The client had been dropped before.
    Gone,
}

impl Outbox {
    fn lock(&self) -> parking_lot::MutexGuard<'_, Queue> {
        self.queue.lock()
    }

    /// Queues `event` without waiting.
    fn offer(&self, event: Event) -> Offered {
        let mut queue = self.lock();
        if self.dropped.load(Ordering::Relaxed) {
            return Offered::Gone;
        }
        queue.events.push_back(event);
        let slow = self.too_slow(&mut queue, Instant::now());
        drop(queue);
        self.filled.notify_one();
        if slow {
            Offered::TooSlow
        } else {
            Offered::Queued
        }
    }

    /// Whether the client has become too slow by `now`, with no event offered (a stalled
    /// client is dropped even when nothing new comes).
    fn check(&self, now: Instant) -> bool {
        let mut queue = self.lock();
        if self.dropped.load(Ordering::Relaxed) {
            return false;
        }
        let slow = self.too_slow(&mut queue, now);
        drop(queue);
        if slow {
            self.filled.notify_one();
        }
        slow
    }

    /// Marks the client dropped and empties its queue if it stayed over the buffer too long
    /// or reached twice it.
    fn too_slow(&self, queue: &mut Queue, now: Instant) -> bool {
        if queue.events.len() <= TAIL_BUFFER {
            queue.over_since = None;
            return false;
        }
        let since = *queue.over_since.get_or_insert(now);
        if queue.events.len() >= 2 * TAIL_BUFFER || now.duration_since(since) >= SLOW_CLIENT_WAIT {
            self.dropped.store(true, Ordering::Relaxed);
            queue.events.clear();
            return true;
        }
        false
    }

    fn finish(&self, last: Option<Event>) {
        if let Some(event) = last {
            // Past the bound by one at most: the hub ends right after.
            self.lock().events.push_back(event);
        }
        self.finished.store(true, Ordering::Relaxed);
        self.filled.notify_one();
    }
}

/// The query text and the indexes a hub serves.
type HubKey = (String, Vec<String>);

/// The running hubs, by what they serve.
#[derive(Default)]
pub(crate) struct TailHubs {
    hubs: Mutex<HashMap<HubKey, Arc<Hub>>>,
}

struct Hub {
    key: HubKey,
    subscribers: Mutex<Vec<Arc<Outbox>>>,
    /// Cancelled when the hub leaves the map (its last client went): its task stops.
    retired: CancellationToken,
}

impl Hub {
    fn subscribers(&self) -> parking_lot::MutexGuard<'_, Vec<Arc<Outbox>>> {
        self.subscribers.lock()
    }
}

impl TailHubs {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<HubKey, Arc<Hub>>> {
        self.hubs.lock()
    }

    /// Adds `outbox` to the hub serving `key`; creates the hub (and returns it as new) when
    /// none runs.
    fn join(&self, key: &HubKey, outbox: Arc<Outbox>) -> (Arc<Hub>, bool) {
        let mut hubs = self.lock();
        if let Some(hub) = hubs.get(key) {
            hub.subscribers().push(outbox);
            return (hub.clone(), false);
        }
        let hub = Arc::new(Hub {
            key: key.clone(),
            subscribers: Mutex::new(vec![outbox]),
            retired: CancellationToken::new(),
        });
        hubs.insert(key.clone(), hub.clone());
        (hub, true)
    }

    /// Keeps the clients of `hub` that `keep` wants; the hub is retired when none is left
    /// (a client leaving, or the last ones dropped as too slow whose streams have not ended
    /// yet). Under the map's lock, so that a client joining at the same time finds either
    /// this hub with a client or no hub (and starts one).
    fn unsubscribe(&self, hub: &Arc<Hub>, keep: impl Fn(&Arc<Outbox>) -> bool) {
        let mut hubs = self.lock();
        let mut subscribers = hub.subscribers();
        subscribers.retain(keep);
        if subscribers.is_empty() {
            drop(subscribers);
            retire(&mut hubs, hub);
        }
    }

    /// Ends `hub` for good (its poll failed or the server stops): a client arriving next
    /// starts a new one.
    fn remove(&self, hub: &Arc<Hub>) {
        retire(&mut self.lock(), hub);
    }
}

fn retire(hubs: &mut HashMap<HubKey, Arc<Hub>>, hub: &Arc<Hub>) {
    if hubs.get(&hub.key).is_some_and(|h| Arc::ptr_eq(h, hub)) {
        hubs.remove(&hub.key);
    }
    hub.retired.cancel();
}

/// The response stream's state; dropping it (client gone) takes the client off its hub.
struct Client {
    outbox: Arc<Outbox>,
    hub: Arc<Hub>,
    hubs: Arc<TailHubs>,
    told: bool,
    metrics: Arc<ServerMetrics>,
    /// One of `query.max_tail_clients`, held while the stream is open.
    _permit: OwnedSemaphorePermit,
}

impl Drop for Client {
    fn drop(&mut self) {
        let outbox = &self.outbox;
        self.hubs
            .unsubscribe(&self.hub, |o| !Arc::ptr_eq(o, outbox));
        self.metrics.tail_clients.dec();
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
    let q = p.q.unwrap_or_default();
    let ast = logsift_query::parse_query(&q).map_err(query_error)?;
    let mut indexes = read_scope(&state, &principal, p.index)?;
    indexes.sort();
    indexes.dedup();
    let permit = limits.tail_permit()?;
    let store = state.store.clone();
    // Taken before joining: a new hub starts from here; an existing one is at most one poll
    // interval behind it.
    let cursor = {
        let (store, indexes) = (store.clone(), indexes.clone());
        tokio::task::spawn_blocking(move || TailCursor::now(&store, &indexes))
            .await
            .map_err(|e| ApiError::internal(format!("tail task failed: {e}")))?
            .map_err(query_error)?
    };
    let outbox = Arc::new(Outbox::default());
    let metrics = state.metrics.clone();
    metrics.tail_clients.inc();
    let hubs = limits.tail_hubs.clone();
    let key: HubKey = (q.trim().to_string(), indexes.clone());
    let (hub, new) = hubs.join(&key, outbox.clone());
    let client = Client {
        outbox,
        hub: hub.clone(),
        hubs: hubs.clone(),
        told: false,
        metrics: metrics.clone(),
        _permit: permit,
    };
    if new {
        let poller = Poller {
            hub,
            hubs,
            store,
            ast: Arc::new(ast),
            indexes,
            limits,
            shutdown: state.cfg.shutdown.clone(),
            metrics,
        };
        tokio::spawn(poller.run(cursor));
    }
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
                let next = outbox.lock().events.pop_front();
                if let Some(event) = next {
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

/// The task of one hub.
struct Poller {
    hub: Arc<Hub>,
    hubs: Arc<TailHubs>,
    store: Arc<Store>,
    ast: Arc<Ast>,
    indexes: Vec<String>,
    limits: QueryLimits,
    shutdown: CancellationToken,
    metrics: Arc<ServerMetrics>,
}

impl Poller {
    async fn run(self, mut cursor: TailCursor) {
        self.metrics.tail_pollers.inc();
        let last = self.follow(&mut cursor).await;
        self.hubs.remove(&self.hub);
        if let Some(last) = last {
            for outbox in self.hub.subscribers().iter() {
                outbox.finish(last.clone());
            }
        }
        self.metrics.tail_pollers.dec();
    }

    /// Polls until the hub is retired (`None`: its clients are gone) or must end its streams
    /// (`Some`, with the event to end them with, if any).
    async fn follow(&self, cursor: &mut TailCursor) -> Option<Option<Event>> {
        let poll_timeout = POLL_TIMEOUT.min(self.limits.timeout());
        loop {
            tokio::select! {
                _ = self.hub.retired.cancelled() => return None,
                _ = self.shutdown.cancelled() => return Some(None),
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            self.drop_slow_clients(Instant::now());
            // Keep polling without a pause while there is a backlog.
            loop {
                let Some(slot) = self.limits.try_slot() else {
                    self.metrics.tail_polls_deferred.inc();
                    break;
                };
                let (store, ast, indexes) =
                    (self.store.clone(), self.ast.clone(), self.indexes.clone());
                let budget = Budget::with_deadline(Instant::now() + poll_timeout);
                let cancel = budget.cancel.clone();
                let mut next = cursor.clone();
                let task = tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    let hits = tail::poll(&store, &ast, &indexes, &mut next, POLL_LIMIT, &budget);
                    (next, hits)
                });
                let polled = tokio::select! {
                    polled = task => polled,
                    _ = self.hub.retired.cancelled() => {
                        // The poll sees the flag between segments and gives its slot back.
                        cancel.store(true, Ordering::Relaxed);
                        return None;
                    }
                };
                let failed = |e: &dyn std::fmt::Display| {
                    Some(Some(Event::default().event("error").data(e.to_string())))
                };
                let hits = match polled {
                    Ok((next, Ok(hits))) => {
                        *cursor = next;
                        hits
                    }
                    Ok((_, Err(e))) => return failed(&e),
                    Err(e) => return failed(&e),
                };
                let full_batch = hits.len() == POLL_LIMIT;
                // Rendered once for every client of the hub.
                let events: Vec<Event> = hits
                    .iter()
                    .map(|hit| {
                        Event::default()
                            .event("record")
                            .json_data(hit)
                            .unwrap_or_else(|_| Event::default().event("record").data("{}"))
                    })
                    .collect();
                self.deliver(&events);
                if !full_batch {
                    break;
                }
            }
        }
    }

    fn deliver(&self, events: &[Event]) {
        self.each_client(|outbox| {
            for event in events {
                match outbox.offer(event.clone()) {
                    Offered::Queued => {}
                    Offered::TooSlow => return true,
                    Offered::Gone => return false,
                }
            }
            false
        });
    }

    fn drop_slow_clients(&self, now: Instant) {
        self.each_client(|outbox| outbox.check(now));
    }

    /// Runs `found_too_slow` on each client, counts those it dropped, and lets every dropped
    /// client go: it gets no more events, and its stream ends on its own.
    fn each_client(&self, found_too_slow: impl Fn(&Outbox) -> bool) {
        let subscribers: Vec<Arc<Outbox>> = self.hub.subscribers().clone();
        let mut any_dropped = false;
        for outbox in &subscribers {
            if found_too_slow(outbox) {
                self.metrics.tail_dropped.inc();
            }
            any_dropped |= outbox.dropped.load(Ordering::Relaxed);
        }
        if any_dropped {
            self.hubs
                .unsubscribe(&self.hub, |o| !o.dropped.load(Ordering::Relaxed));
        }
    }
}
