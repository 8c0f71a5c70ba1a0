use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::ServerMetrics;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use logsift_core::time::{now_ns, parse_time_expr};
use logsift_query::{Budget, QueryError, SearchRequest, SearchResponse, SortOrder};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{ApiError, AppState, Principal, ServerConfig};

/// What every query endpoint shares: a bounded number of queries running at once and a time
/// limit for each.
#[derive(Clone)]
pub(crate) struct QueryLimits {
    slots: Arc<Semaphore>,
    max: usize,
    timeout: Duration,
    pub(crate) terms_max_values: usize,
    metrics: Arc<ServerMetrics>,
    /// Open tail streams (each also takes a query slot while it polls).
    tails: Arc<Semaphore>,
    max_tails: usize,
    /// Exports streaming (each took a query slot for its estimate).
    exports: Arc<Semaphore>,
    max_exports: usize,
    /// Tails with the same query over the same indexes, polled once for all of them.
    pub(crate) tail_hubs: Arc<crate::tail::TailHubs>,
}

impl QueryLimits {
    pub(crate) fn new(cfg: &ServerConfig, metrics: Arc<ServerMetrics>) -> Self {
        let max = cfg.max_concurrent_queries.max(1);
        QueryLimits {
            slots: Arc::new(Semaphore::new(max)),
            max,
            timeout: Duration::from_millis(cfg.query_timeout_ms.max(1)),
            terms_max_values: cfg.terms_max_values.max(1),
            metrics,
            tails: Arc::new(Semaphore::new(cfg.max_tail_clients.max(1))),
            max_tails: cfg.max_tail_clients.max(1),
            exports: Arc::new(Semaphore::new(cfg.max_concurrent_exports.max(1))),
            max_exports: cfg.max_concurrent_exports.max(1),
            tail_hubs: Arc::default(),
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A query slot for work no request waits on (a tail's poll), held until the returned
    /// guard drops; `None` when every slot is taken (the work waits for its next turn, and
    /// searches keep their chance at a slot).
    pub(crate) fn try_slot(&self) -> Option<Running> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        self.metrics.queries_running.inc();
        Some(Running {
            _permit: permit,
            metrics: self.metrics.clone(),
        })
    }

    /// The right to keep a tail stream open, for as long as the permit lives.
    pub(crate) fn tail_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.tails.clone().try_acquire_owned().map_err(|_| {
            self.metrics.tail_rejected.inc();
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_tails",
                format!(
                    "{} tail streams are already open (query.max_tail_clients); retry later",
                    self.max_tails
                ),
            )
            .retry_after(5)
        })
    }

    /// The right to stream an export, for as long as the permit lives.
    pub(crate) fn export_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.exports.clone().try_acquire_owned().map_err(|_| {
            self.metrics.export_rejected.inc();
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_exports",
                format!(
                    "{} exports are already streaming (query.max_concurrent_exports); retry \
                     when one has finished",
                    self.max_exports
                ),
            )
            .retry_after(10)
        })
    }
}

/// After the time limit, the longest a query may take to read the documents of its hits
/// (bounded by `limit`) before the answer gives up with 408 and the work is cancelled.
const ANSWER_GRACE: Duration = Duration::from_secs(10);

/// Whether an answer is missing part of what was asked (counted in the metrics).
pub(crate) trait Answer {
    fn partial(&self) -> bool;
}

impl Answer for SearchResponse {
    fn partial(&self) -> bool {
        self.partial
    }
}

/// Sets the cancel flag when the request future is dropped: when the client disconnects, the
/// blocking search notices and stops, and its query slot is freed.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Holds a query slot and the `queries_running` gauge until the work itself ends.
pub(crate) struct Running {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<ServerMetrics>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.metrics.queries_running.dec();
    }
}

/// Runs `work` on the blocking pool within the limits: 429 when every slot is taken. The work
/// stops searching at the time limit and answers what it covered (a partial answer), or
/// fails with [`QueryError::Timeout`] (408) if it covered nothing.
pub(crate) async fn run_query<T: Answer + Send + 'static>(
    limits: &QueryLimits,
    work: impl FnOnce(Budget) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, ApiError> {
    let metrics = limits.metrics.clone();
    let permit = limits.slots.clone().try_acquire_owned().map_err(|_| {
        metrics.query_rejected.inc();
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_queries",
            format!(
                "{} queries are already running (query.max_concurrent_queries); retry shortly",
                limits.max
            ),
        )
        .retry_after(1)
    })?;
    metrics.queries_running.inc();
    let running = Running {
        _permit: permit,
        metrics: metrics.clone(),
    };
    let budget = Budget::with_deadline(Instant::now() + limits.timeout);
    let _cancel = CancelOnDrop(budget.cancel.clone());
    let task = tokio::task::spawn_blocking(move || {
        // The slot is held until the work really ends, not just until the answer is sent.
        let _running = running;
        let result = work(budget);
        // Counted here: when the client has gone, nothing after the `await` below runs.
        match &result {
            Ok(answer) if answer.partial() => {
                metrics.query_partial.inc();
            }
            Err(QueryError::Timeout) => {
                metrics.query_timeouts.inc();
            }
            Err(QueryError::Cancelled) => {
                metrics.query_cancelled.inc();
            }
            _ => {}
        }
        result
    });
    match tokio::time::timeout(limits.timeout + ANSWER_GRACE, task).await {
        Err(_) => Err(timeout_error(limits)),
        Ok(Err(e)) => Err(ApiError::internal(format!("query task failed: {e}"))),
        Ok(Ok(Err(QueryError::Timeout))) => Err(timeout_error(limits)),
        Ok(Ok(result)) => result.map_err(query_error),
    }
}

fn timeout_error(limits: &QueryLimits) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "query_timeout",
        format!(
            "the query did not search any time range completely within {} ms \
             (query.query_timeout_ms) and was stopped; narrow the time range or the query",
            limits.timeout.as_millis()
        ),
    )
}

/// Comma-separated index names.
pub(crate) fn index_list(param: Option<String>) -> Vec<String> {
    param
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The indexes a read covers: the `index` parameter within the principal's scope.
pub(crate) fn read_scope(
    state: &AppState,
    principal: &Principal,
    param: Option<String>,
) -> Result<Vec<String>, ApiError> {
    let names = index_list(param);
    for n in &names {
        logsift_core::IndexName::new_builtin(n)
            .map_err(|e| ApiError::bad_request("bad_index", e.to_string()))?;
    }
    Ok(principal.read_scope(names, |n| state.store.get(n).is_some())?)
}

const DEFAULT_LIMIT: usize = 100;

#[derive(Debug, Deserialize)]
pub struct SearchParams {
    q: Option<String>,
    /// Comma-separated index names.
    index: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
    sort: Option<String>,
    cursor: Option<String>,
}

pub(crate) fn time_param(
    name: &str,
    value: Option<&str>,
    now: i64,
) -> Result<Option<i64>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            parse_time_expr(v, now)
                .map_err(|e| ApiError::bad_request("bad_time", format!("{name}: {e}")))
        })
        .transpose()
}

pub async fn search(
    State(state): State<AppState>,
    Extension(limits): Extension<QueryLimits>,
    Extension(principal): Extension<Principal>,
    headers: axum::http::HeaderMap,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let req = search_request(&state, &principal, params)?;
    state.metrics.search_requests.inc();
    let answer = if state.cfg.searchers.is_empty() {
        let store = state.store.clone();
        run_query(&limits, move |budget| {
            logsift_query::search(&store, &SearchRequest { budget, ..req })
        })
        .await?
    } else {
        crate::fanout::search(&state, &limits, &headers, req).await?
    };
    let total = answer.total;
    Ok(crate::audit::audited(Json(answer), total))
}

/// A root's share for this process (`POST /api/v1/search/part`, see [`crate::fanout`]): the
/// search's parameters as `/api/v1/search` takes them, the sealed segments to read in the
/// body. The answer carries its hits' sort keys and the segments not served here.
pub async fn search_part(
    State(state): State<AppState>,
    Extension(limits): Extension<QueryLimits>,
    Extension(principal): Extension<Principal>,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
    body: Result<Json<crate::fanout::PartBody>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::response::Response, ApiError> {
    let req = search_request(&state, &principal, params)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request("bad_body", e.body_text()))?;
    let req = SearchRequest {
        segments: body.only(),
        ..req
    };
    let store = state.store.clone();
    let answer = run_query(&limits, move |budget| {
        logsift_query::search(&store, &SearchRequest { budget, ..req })
    })
    .await?;
    let total = answer.total;
    Ok(crate::audit::audited(Json(answer), total))
}

fn search_request(
    state: &AppState,
    principal: &Principal,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<SearchRequest, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("bad_parameter", e.body_text()))?;
    let now = now_ns();
    let req = SearchRequest {
        query: p.q.unwrap_or_default(),
        indexes: read_scope(state, principal, p.index)?,
        start: time_param("start", p.start.as_deref(), now)?,
        end: time_param("end", p.end.as_deref(), now)?,
        limit: p.limit.unwrap_or(DEFAULT_LIMIT),
        order: p
            .sort
            .as_deref()
            .map(SortOrder::parse)
            .transpose()
            .map_err(query_error)?
            .unwrap_or_default(),
        cursor: p.cursor.filter(|c| !c.is_empty()),
        budget: Budget::default(),
        segments: logsift_query::Segments::All,
    };
    Ok(req)
}

pub(crate) fn query_error(e: QueryError) -> ApiError {
    match e {
        QueryError::BadQuery(_) => ApiError::bad_request("bad_query", e.to_string()),
        QueryError::BadRequest(_) => ApiError::bad_request("bad_parameter", e.to_string()),
        QueryError::UnknownIndex(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_index", e.to_string())
        }
        QueryError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        QueryError::Timeout => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "query_timeout", e.to_string())
        }
        // Only reached when the client has gone (the request future was dropped): nobody reads it.
        QueryError::Cancelled => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "cancelled", e.to_string())
        }
        QueryError::Search { .. } | QueryError::Store(_) | QueryError::Segment(_) => {
            ApiError::internal(e.to_string())
        }
    }
}
