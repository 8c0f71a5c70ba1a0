//! `POST /api/v1/delete`: erasure of the records matching a query in a time range (GDPR
//! requests). Refused with 409 while a legal hold covers any part of the range; the rewrite of
//! each affected segment is recorded in its index's catalog chain (old and new sha256), and
//! the call in the audit trail with the count.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use logsift_core::time::{format_rfc3339, now_ns};
use logsift_query::erase::{erase, EraseRequest};
use serde::Deserialize;

use crate::audit::Caller;
use crate::search::{index_list, query_error, time_param};
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// Required: `*` to erase everything in the range, said explicitly.
    q: String,
    /// Comma-separated index names; absent: every index except the built-in ones.
    index: Option<String>,
    start: Option<String>,
    end: Option<String>,
}

pub async fn delete(
    State(state): State<AppState>,
    who: Caller,
    body: Result<Json<DeleteParams>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(p) = body.map_err(|e| ApiError::bad_request("bad_body", e.body_text()))?;
    if state.store.config().lsn_base > 0 {
        // Records still in another indexer's hot tier would outlive the erasure, and a
        // report of "erased" must be the whole truth.
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "several_indexers",
            "erasure is not supported yet on an indexer beside others ([node] indexer > 0): another indexer's unsealed records would be missed; run it on a lone writer ([node] indexer = 0)",
        ));
    }
    if p.q.trim().is_empty() {
        return Err(ApiError::bad_request(
            "bad_parameter",
            "q is required; pass \"*\" to erase every record in the range",
        ));
    }
    let now = now_ns();
    let start = time_param("start", p.start.as_deref(), now)?;
    let end = time_param("end", p.end.as_deref(), now)?;
    let indexes = index_list(p.index);
    if indexes.iter().any(|i| i.starts_with('_')) {
        return Err(ApiError::bad_request(
            "bad_index",
            "built-in indexes (the audit trail) cannot be erased from",
        ));
    }
    logsift_query::parse_query(&p.q).map_err(query_error)?;
    // Which indexes the request reaches, to check their holds before touching anything.
    let names: Vec<String> = if indexes.is_empty() {
        state
            .store
            .list()
            .iter()
            .filter(|h| !h.name().is_builtin())
            .map(|h| h.name().to_string())
            .collect()
    } else {
        indexes.clone()
    };
    for name in &names {
        let (lo, hi) = (start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX));
        if let Some(h) = state
            .store
            .holds_of(name)
            .map_err(|e| ApiError::unavailable(format!("the legal holds cannot be read: {e}")))?
            .into_iter()
            .find(|h| h.start < hi && lo < h.end)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "legal_hold",
                format!(
                    "a legal hold on index {name} covers part of this range ({}: {} to {}); release it before erasing",
                    h.reason,
                    if h.start == i64::MIN { "the beginning".into() } else { format_rfc3339(h.start) },
                    if h.end == i64::MAX { "no end".into() } else { format_rfc3339(h.end) },
                ),
            ));
        }
    }
    let details = serde_json::json!({
        "query": p.q,
        "indexes": names,
        "start": start.map(format_rfc3339),
        "end": end.map(format_rfc3339),
    });
    let req = EraseRequest {
        query: p.q,
        indexes,
        start,
        end,
        who: who.name(),
    };
    let store = state.store.clone();
    let report = tokio::task::spawn_blocking(move || erase(&store, &req))
        .await
        .map_err(|e| ApiError::internal(format!("erasure task failed: {e}")))?
        .map_err(query_error)?;
    state.metrics.erased_records.inc_by(report.erased);
    tracing::warn!(erased = report.erased, segments = report.rewritten.len(), by = %who.name(), "erased records");
    let n = report.erased;
    let mut details = details;
    details["segments_rewritten"] = serde_json::json!(report
        .rewritten
        .iter()
        .map(|r| serde_json::json!({"index": r.index, "old": r.old_segment, "old_sha256": r.old_sha256, "new": r.new_segment, "new_sha256": r.new_sha256}))
        .collect::<Vec<_>>());
    Ok(crate::audit::with_details(
        crate::audit::audited(Json(report), n),
        details,
    ))
}
