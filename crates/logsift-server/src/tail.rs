//! `GET /api/v1/tail?q=&index=`: server-sent events of new matching records.
//!
//! A task per client polls for records above the client's cursor and pushes them into a
//! bounded channel that the response streams from. The poll is paced by the client: when the
//! channel is full the client is too slow, so it gets a `dropped` event and the stream ends;
//! nothing is ever buffered beyond the channel and ingest never waits for a client.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use logsift_query::tail::{self, TailCursor};
use logsift_query::Budget;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::search::{index_list, query_error};
use crate::{ApiError, AppState};

/// Records (events) buffered per client before it counts as too slow.
const TAIL_BUFFER: usize = 1024;
/// Most records fetched per poll; the rest come with the next poll.
const POLL_LIMIT: usize = 500;
/// Between polls when nothing was new. New records are committed every
/// `index.commit_interval_ms` (500 ms by default), so this keeps delivery well within 1 s.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// One poll's time limit.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
pub struct TailParams {
    q: Option<String>,
    index: Option<String>,
}

pub async fn tail(
    State(state): State<AppState>,
    p: Result<Query<TailParams>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(p) = p.map_err(|e| ApiError::bad_request("bad_parameter", e.body_text()))?;
    let ast = logsift_query::parse_query(p.q.as_deref().unwrap_or("")).map_err(query_error)?;
    let indexes = index_list(p.index);
    let store = state.store.clone();
    let cursor = {
        let (store, indexes) = (store.clone(), indexes.clone());
        tokio::task::spawn_blocking(move || TailCursor::now(&store, &indexes))
            .await
            .map_err(|e| ApiError::internal(format!("tail task failed: {e}")))?
            .map_err(query_error)?
    };
    let (tx, rx) = mpsc::channel::<Event>(TAIL_BUFFER);
    let dropped = Arc::new(AtomicBool::new(false));
    let shutdown = state.cfg.shutdown.clone();
    let producer_dropped = dropped.clone();
    tokio::spawn(async move {
        let mut cursor = cursor;
        let ast = Arc::new(ast);
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            // Keep polling without a pause while there is a backlog.
            loop {
                let (store, ast, indexes) = (store.clone(), ast.clone(), indexes.clone());
                let polled = tokio::task::spawn_blocking(move || {
                    let budget = Budget::with_deadline(Instant::now() + POLL_TIMEOUT);
                    let hits = tail::poll(&store, &ast, &indexes, &mut cursor, POLL_LIMIT, &budget);
                    (cursor, hits)
                })
                .await;
                let hits = match polled {
                    Ok((c, Ok(hits))) => {
                        cursor = c;
                        hits
                    }
                    Ok((_, Err(e))) => {
                        let _ = tx.try_send(Event::default().event("error").data(e.to_string()));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.try_send(Event::default().event("error").data(e.to_string()));
                        return;
                    }
                };
                let full_batch = hits.len() == POLL_LIMIT;
                for hit in hits {
                    let event = Event::default()
                        .event("record")
                        .json_data(&hit)
                        .unwrap_or_else(|_| Event::default().event("record").data("{}"));
                    match tx.try_send(event) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            producer_dropped.store(true, Ordering::Relaxed);
                            return;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
                if !full_batch {
                    break;
                }
            }
        }
    });
    // The stream drains the channel; once the producer is gone it says why if the client was
    // too slow, then ends.
    let events = stream::unfold((rx, dropped, false), |(mut rx, dropped, told)| async move {
        match rx.recv().await {
            Some(event) => Some((Ok(event), (rx, dropped, told))),
            None if dropped.load(Ordering::Relaxed) && !told => {
                let notice = Event::default().event("dropped").data(format!(
                    "this client fell {TAIL_BUFFER} records behind and was disconnected; \
                     reconnect to follow again"
                ));
                Some((Ok(notice), (rx, dropped, true)))
            }
            None => None,
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
