//! `GET /api/v1/histogram`, `GET /api/v1/terms`, `GET /api/v1/context`, `GET /api/v1/patterns`
//! and `GET /api/v1/compare`: thin translations to `logsift_query`'s aggregations, run under
//! the same limits as searches.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::{Extension, Json};
use logsift_core::time::now_ns;
use logsift_query::agg::{
    self, ContextRequest, ContextResponse, HistogramRequest, HistogramResponse, TermsRequest,
    TermsResponse,
};
use logsift_query::{Budget, CompareRequest, CompareResponse, PatternsRequest, PatternsResponse};
use serde::Deserialize;

use crate::audit::audited;
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

pub async fn histogram(
    State(state): State<AppState>,
    Extension(limits): Extension<QueryLimits>,
    Extension(principal): Extension<Principal>,
    p: Result<Query<HistogramParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(p)?;
    let now = now_ns();
    let req = HistogramRequest {
        query: p.q.unwrap_or_default(),
        indexes: read_scope(&state, &principal, p.index)?,
        start: time_param("start", p.start.as_deref(), now)?,
        end: time_param("end", p.end.as_deref(), now)?,
        interval_ms: interval_param(p.interval.as_deref())?,
        budget: Budget::default(),
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
    p: Result<Query<TermsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(p)?;
    let now = now_ns();
    let Some(field) = p.field.filter(|f| !f.is_empty()) else {
        return Err(ApiError::bad_request(
            "bad_parameter",
            format!("field is required: one of {}", agg::TERMS_FIELDS.join(", ")),
        ));
    };
    let req = TermsRequest {
        query: p.q.unwrap_or_default(),
        indexes: read_scope(&state, &principal, p.index)?,
        start: time_param("start", p.start.as_deref(), now)?,
        end: time_param("end", p.end.as_deref(), now)?,
        field,
        size: p.size.unwrap_or(DEFAULT_TERMS),
        max_values: limits.terms_max_values,
        budget: Budget::default(),
    };
    let store = state.store.clone();
    let answer = run_query(&limits, move |budget| {
        agg::terms(&store, &TermsRequest { budget, ..req })
    })
    .await?;
    let total = answer.total;
    Ok(audited(Json(answer), total))
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
