//! `GET /api/v1/histogram`, `GET /api/v1/terms`, `GET /api/v1/context`, `GET /api/v1/patterns`
//! and `GET /api/v1/compare`: thin translations to `logsift_query`'s aggregations, run under
//! the same limits as searches. With `[node] searchers`, histograms and terms are shared
//! with them (see [`crate::fanout`]).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Extension, Json};
use logsift_core::time::now_ns;
use logsift_query::agg::{
    self, ContextRequest, ContextResponse, HistogramRequest, HistogramResponse, TermsRequest,
    TermsResponse,
};
use logsift_query::{
    Budget, CompareRequest, CompareResponse, PatternsRequest, PatternsResponse, Segments,
};
use serde::Deserialize;

use crate::audit::audited;
use crate::fanout::{
    as_share, common_params, fan_out, merge_histograms, merge_terms, HistogramShare, PartBody,
    Shared, TermsShare,
};
use crate::search::{query_error, read_scope, run_query, time_param, Answer, QueryLimits};
use crate::{ApiError, AppState, Principal, Role};

const DEFAULT_TERMS: usize = 10;

impl Answer for HistogramResponse {
    fn partial(&self) -> bool {
        self.partial
    }
}

impl Answer for TermsResponse {
    fn partial(&self) -> bool {
        self.partial
    }
}

impl Answer for PatternsResponse {
    fn partial(&self) -> bool {
        self.partial
    }
}

impl Answer for CompareResponse {
    fn partial(&self) -> bool {
        self.partial
    }
}

impl Answer for ContextResponse {
    fn partial(&self) -> bool {
        false
    }
}
const DEFAULT_CONTEXT: usize = 10;

/// A bucket size parameter (`30s`, `5m`); absent or empty: automatic.
fn interval_param(interval: Option<&str>) -> Result<Option<i64>, ApiError> {
    interval
        .filter(|s| !s.is_empty())
        .map(agg::parse_interval)
        .transpose()
        .map_err(query_error)
}

fn params<T>(p: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    p.map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request("bad_parameter", e.body_text()))
}

#[derive(Debug, Deserialize)]
pub struct HistogramParams {
    q: Option<String>,
    index: Option<String>,
    start: Option<String>,
    end: Option<String>,
    /// `30s`, `5m`, ...; automatic when absent.
    interval: Option<String>,
}

fn histogram_request(
    state: &AppState,
    principal: &Principal,
    p: Result<Query<HistogramParams>, QueryRejection>,
) -> Result<HistogramRequest, ApiError> {
    let p = params(p)?;
    let now = now_ns();
    Ok(HistogramRequest {
        query: p.q.unwrap_or_default(),
        indexes: read_scope(state, principal, p.index)?,
        start: time_param("start", p.start.as_deref(), now)?,
        end: time_param("end", p.end.as_deref(), now)?,
        interval_ms: interval_param(p.interval.as_deref())?,
        budget: Budget::default(),
        segments: Segments::All,
    })
}

pub async fn histogram(
    State(state): State<AppState>,
    Extension(limits): Extension<QueryLimits>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    p: Result<Query<HistogramParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let mut req = histogram_request(&state, &principal, p)?;
    if state.cfg.searchers.is_empty() {
        let store = state.store.clone();
        let answer = run_query(&limits, move |budget| {
            agg::histogram(&store, &HistogramRequest { budget, ..req })
        })
        .await?;
        let total = answer.total;
        return Ok(audited(Json(answer), total));
    }
    let started = std::time::Instant::now();
    // Every share counts into the same buckets: the range and the interval are fixed here,
    // where every part is known, as one process would place them.
    if req.start.is_none() || req.end.is_none() {
        let bounds = logsift_query::data_bounds(&state.store, &req.indexes, req.start, req.end)
            .map_err(query_error)?;
        let (lo, hi) = bounds.unwrap_or((0, 0));
        req.start = Some(req.start.unwrap_or(lo));
        req.end = Some(req.end.unwrap_or(hi.saturating_add(1)));
    }
    if req.interval_ms.is_none() {
        let span = req.end.unwrap_or(0).saturating_sub(req.start.unwrap_or(0));
        req.interval_ms = Some(agg::auto_interval_ms(span));
    }
    let interval = format!("{}ms", req.interval_ms.unwrap_or(1).max(1));
    let run_req = req.clone();
    let shared = Shared {
        path: "/api/v1/histogram/part",
        params: common_params(
            &req.query,
            &req.indexes,
            req.start,
            req.end,
            vec![("interval", interval)],
        ),
        indexes: req.indexes.clone(),
        start: req.start,
        end: req.end,
        run: move |store: &logsift_store::Store, segments, budget| {
            let answer = agg::histogram(
                store,
                &HistogramRequest {
                    segments,
                    budget,
                    ..run_req.clone()
                },
            )?;
            as_share::<_, HistogramShare>(answer)
        },
    };
    let (answers, gone) = fan_out(&state, &limits, &headers, shared).await?;
    let mut answer = merge_histograms(answers, gone);
    answer.took_ms = started.elapsed().as_millis() as u64;
    let total = answer.total;
    Ok(audited(Json(answer), total))
}

/// A root's share of a histogram (`POST /api/v1/histogram/part`, see [`crate::fanout`]).
pub async fn histogram_part(
    State(state): State<AppState>,
    Extension(limits): Extension<QueryLimits>,
    Extension(principal): Extension<Principal>,
    p: Result<Query<HistogramParams>, QueryRejection>,
    body: Result<Json<PartBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = histogram_request(&state, &principal, p)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request("bad_body", e.body_text()))?;
    let req = HistogramRequest {
        segments: body.only(),
        ..req
    };
    let store = state.store.clone();
    let answer = run_query(&limits, move |budget| {
        agg::histogram(&store, &HistogramRequest { budget, ..req })
    })
    .await?;
    let total = answer.total;
    Ok(audited(Json(answer), total))
}

#[derive(Debug, Deserialize)]
pub struct TermsParams {
    field: Option<String>,
    q: Option<String>,
    index: Option<String>,
    start: Option<String>,
    end: Option<String>,
    size: Option<usize>,
}

pub async fn terms(
    State(state): State<AppState>,
    Extension(limits): Extension<QueryLimits>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    p: Result<Query<TermsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let req = terms_request(&state, &principal, &limits, p)?;
    if state.cfg.searchers.is_empty() {
        let store = state.store.clone();
        let answer = run_query(&limits, move |budget| {
            agg::terms(&store, &TermsRequest { budget, ..req })
        })
        .await?;
        let total = answer.total;
        return Ok(audited(Json(answer), total));
    }
    let started = std::time::Instant::now();
    // Each share lists every value it counted (up to the most a terms answer may list), so
    // that the sum is exact; the root keeps the `size` most frequent.
    let share_req = TermsRequest {
        size: agg::MAX_TERMS,
        ..req.clone()
    };
    let run_req = share_req.clone();
    let shared = Shared {
        path: "/api/v1/terms/part",
        params: common_params(
            &req.query,
            &req.indexes,
            req.start,
            req.end,
            vec![
                ("field", req.field.clone()),
                ("size", agg::MAX_TERMS.to_string()),
            ],
        ),
        indexes: req.indexes.clone(),
        start: req.start,
        end: req.end,
        run: move |store: &logsift_store::Store, segments, budget| {
            let answer = agg::terms(
                store,
                &TermsRequest {
                    segments,
                    budget,
                    ..run_req.clone()
                },
            )?;
            as_share::<_, TermsShare>(answer)
        },
    };
    let (answers, gone) = fan_out(&state, &limits, &headers, shared).await?;
    let mut answer = merge_terms(answers, req.size, gone);
    answer.took_ms = started.elapsed().as_millis() as u64;
    let total = answer.total;
    Ok(audited(Json(answer), total))
}

/// A root's share of a terms count (`POST /api/v1/terms/part`, see [`crate::fanout`]).
pub async fn terms_part(
    State(state): State<AppState>,
    Extension(limits): Extension<QueryLimits>,
    Extension(principal): Extension<Principal>,
    p: Result<Query<TermsParams>, QueryRejection>,
    body: Result<Json<PartBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = terms_request(&state, &principal, &limits, p)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request("bad_body", e.body_text()))?;
    let req = TermsRequest {
        segments: body.only(),
        ..req
    };
    let store = state.store.clone();
    let answer = run_query(&limits, move |budget| {
        agg::terms(&store, &TermsRequest { budget, ..req })
    })
    .await?;
    let total = answer.total;
    Ok(audited(Json(answer), total))
}

fn terms_request(
    state: &AppState,
    principal: &Principal,
    limits: &QueryLimits,
    p: Result<Query<TermsParams>, QueryRejection>,
) -> Result<TermsRequest, ApiError> {
    let p = params(p)?;
    let now = now_ns();
    let Some(field) = p.field.filter(|f| !f.is_empty()) else {
        return Err(ApiError::bad_request(
            "bad_parameter",
            format!("field is required: one of {}", agg::TERMS_FIELDS.join(", ")),
        ));
    };
    Ok(TermsRequest {
        query: p.q.unwrap_or_default(),
        indexes: read_scope(state, principal, p.index)?,
        start: time_param("start", p.start.as_deref(), now)?,
        end: time_param("end", p.end.as_deref(), now)?,
        field,
        size: p.size.unwrap_or(DEFAULT_TERMS),
        max_values: limits.terms_max_values,
        budget: Budget::default(),
        segments: Segments::All,
    })
}

#[derive(Debug, Deserialize)]
pub struct ContextParams {
    /// As hits carry it: a decimal string.
    id: Option<String>,
    before: Option<usize>,
    after: Option<usize>,
}

pub async fn context(
    State(state): State<AppState>,
    Extension(limits): Extension<QueryLimits>,
    Extension(principal): Extension<Principal>,
    p: Result<Query<ContextParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(p)?;
    let raw_id = p.id.unwrap_or_default();
    let id: u64 = raw_id.trim().parse().map_err(|_| {
        ApiError::bad_request(
            "bad_parameter",
            format!("id must be the id of a hit (a decimal number), not {raw_id:?}"),
        )
    })?;
    let req = ContextRequest {
        id,
        before: p.before.unwrap_or(DEFAULT_CONTEXT),
        after: p.after.unwrap_or(DEFAULT_CONTEXT),
        budget: Budget::default(),
    };
    let store = state.store.clone();
    let mut answer = run_query(&limits, move |budget| {
        agg::context(&store, &ContextRequest { budget, ..req })
    })
    .await?;
    // A context request names a record, not an index: out of scope looks like unknown, so
    // that ids do not reveal what other indexes hold.
    let readable = |hit: &serde_json::Value| {
        hit["index"]
            .as_str()
            .is_some_and(|i| principal.may(Role::Search, i))
    };
    if !readable(&answer.hit) {
        return Err(ApiError::not_found(format!("no record has id {id}")));
    }
    answer.before.retain(readable);
    answer.after.retain(readable);
    let n = (answer.before.len() + 1 + answer.after.len()) as u64;
    Ok(audited(Json(answer), n))
}

const DEFAULT_PATTERNS: usize = 20;
/// The window of `compare` when no start is given: the last quarter of an hour.
const DEFAULT_COMPARE_WINDOW_NS: i64 = 15 * 60 * 1_000_000_000;

#[derive(Debug, Deserialize)]
pub struct PatternsParams {
    q: Option<String>,
    index: Option<String>,
    start: Option<String>,
    end: Option<String>,
    size: Option<usize>,
    interval: Option<String>,
}

pub async fn patterns(
    State(state): State<AppState>,
    Extension(limits): Extension<QueryLimits>,
    Extension(principal): Extension<Principal>,
    p: Result<Query<PatternsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(p)?;
    let now = now_ns();
    let req = PatternsRequest {
        query: p.q.unwrap_or_default(),
        indexes: read_scope(&state, &principal, p.index)?,
        start: time_param("start", p.start.as_deref(), now)?,
        end: time_param("end", p.end.as_deref(), now)?,
        size: p.size.unwrap_or(DEFAULT_PATTERNS),
        interval_ms: interval_param(p.interval.as_deref())?,
        budget: Budget::default(),
    };
    let store = state.store.clone();
    let answer = run_query(&limits, move |budget| {
        logsift_query::patterns(&store, &PatternsRequest { budget, ..req })
    })
    .await?;
    let n = answer.patterns.len() as u64;
    Ok(audited(Json(answer), n))
}

#[derive(Debug, Deserialize)]
pub struct CompareParams {
    q: Option<String>,
    index: Option<String>,
    start: Option<String>,
    end: Option<String>,
    baseline_start: Option<String>,
    baseline_end: Option<String>,
    size: Option<usize>,
}

pub async fn compare(
    State(state): State<AppState>,
    Extension(limits): Extension<QueryLimits>,
    Extension(principal): Extension<Principal>,
    p: Result<Query<CompareParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(p)?;
    let now = now_ns();
    let end = time_param("end", p.end.as_deref(), now)?.unwrap_or(now);
    let start = time_param("start", p.start.as_deref(), now)?
        .unwrap_or_else(|| end.saturating_sub(DEFAULT_COMPARE_WINDOW_NS));
    let req = CompareRequest {
        query: p.q.unwrap_or_default(),
        indexes: read_scope(&state, &principal, p.index)?,
        start,
        end,
        baseline_start: time_param("baseline_start", p.baseline_start.as_deref(), now)?,
        baseline_end: time_param("baseline_end", p.baseline_end.as_deref(), now)?,
        size: p.size.unwrap_or(DEFAULT_PATTERNS),
        max_values: limits.terms_max_values,
        budget: Budget::default(),
    };
    let store = state.store.clone();
    let answer = run_query(&limits, move |budget| {
        logsift_query::compare(&store, &CompareRequest { budget, ..req })
    })
    .await?;
    let n = answer.patterns.len() as u64;
    Ok(audited(Json(answer), n))
}
