use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use logsift_core::time::{now_ns, parse_time_expr};
use logsift_ingest::Metrics;
use logsift_query::{QueryError, SearchRequest, SearchResponse, SortOrder};
use serde::Deserialize;

use crate::{ApiError, AppState};

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

fn time_param(name: &str, value: Option<&str>, now: i64) -> Result<Option<i64>, ApiError> {
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
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("bad_parameter", e.body_text()))?;
    let now = now_ns();
    let req = SearchRequest {
        query: p.q.unwrap_or_default(),
        indexes: p
            .index
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
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
    };
    let store = state.store.clone();
    let result = tokio::task::spawn_blocking(move || logsift_query::search(&store, &req))
        .await
        .map_err(|e| ApiError::internal(format!("search task failed: {e}")))?;
    Metrics::add(&state.metrics.search_requests, 1);
    result.map(Json).map_err(query_error)
}

fn query_error(e: QueryError) -> ApiError {
    match e {
        QueryError::BadQuery(_) => ApiError::bad_request("bad_query", e.to_string()),
        QueryError::BadRequest(_) => ApiError::bad_request("bad_parameter", e.to_string()),
        QueryError::UnknownIndex(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_index", e.to_string())
        }
        QueryError::Search { .. } | QueryError::Store(_) => ApiError::internal(e.to_string()),
    }
}
