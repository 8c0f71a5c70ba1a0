//! Legal holds: `GET /api/v1/holds` lists every hold (configured and placed here),
//! `POST /api/v1/holds` places one on an index (or `*`) and an optional time range with a
//! reason, `DELETE /api/v1/holds/{id}` releases one placed here. Retention spares what a hold
//! covers and erasure refuses it; every call lands in the audit trail.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use logsift_core::time::{format_rfc3339, now_ns};
use logsift_core::IndexName;
use logsift_store::HoldRecord;
use serde::Deserialize;
use serde_json::json;

use crate::audit::Caller;
use crate::search::time_param;
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldParams {
    /// An index name, or `*` for every index.
    index: String,
    start: Option<String>,
    end: Option<String>,
    reason: String,
}

fn hold_json(h: &HoldRecord) -> serde_json::Value {
    json!({
        "id": h.id,
        "index": h.index,
        "start": h.start.map(format_rfc3339),
        "end": h.end.map(format_rfc3339),
        "reason": h.reason,
        "created_at": h.created_at,
        "created_by": h.created_by,
        "source": "api",
    })
}

pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let placed = state
        .store
        .api_holds()
        .map_err(|e| ApiError::unavailable(format!("the legal holds cannot be read: {e}")))?;
    let mut holds: Vec<serde_json::Value> = placed.iter().map(hold_json).collect();
    for (index, opts) in &state.store.config().index_options {
        for h in &opts.legal_holds {
            holds.push(json!({
                "index": index,
                "start": (h.start != i64::MIN).then(|| format_rfc3339(h.start)),
                "end": (h.end != i64::MAX).then(|| format_rfc3339(h.end)),
                "reason": h.reason,
                "source": "config",
            }));
        }
    }
    let n = holds.len() as u64;
    Ok(crate::audit::audited(Json(json!({ "holds": holds })), n))
}

pub async fn place(
    State(state): State<AppState>,
    who: Caller,
    body: Result<Json<HoldParams>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(p) = body.map_err(|e| ApiError::bad_request("bad_body", e.body_text()))?;
    if p.index != "*" {
        IndexName::new_builtin(&p.index)
            .map_err(|e| ApiError::bad_request("bad_index", e.to_string()))?;
    }
    if p.reason.trim().is_empty() {
        return Err(ApiError::bad_request(
            "bad_parameter",
            "a hold needs a reason (the case or request it serves)",
        ));
    }
    let now = now_ns();
    let start = time_param("start", p.start.as_deref(), now)?;
    let end = time_param("end", p.end.as_deref(), now)?;
    if let (Some(s), Some(e)) = (start, end) {
        if s >= e {
            return Err(ApiError::bad_request(
                "bad_parameter",
                "start must be before end",
            ));
        }
    }
    let hold = HoldRecord {
        id: format!("hold-{now:x}"),
        index: p.index,
        start,
        end,
        reason: p.reason.trim().to_string(),
        created_at: format_rfc3339(now),
        created_by: who.name(),
    };
    let store = state.store.clone();
    let saved = hold.clone();
    tokio::task::spawn_blocking(move || store.add_hold(saved))
        .await
        .map_err(|e| ApiError::internal(format!("hold task failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    tracing::info!(hold = %hold.id, index = %hold.index, reason = %hold.reason, by = %hold.created_by, "legal hold placed");
    let response = (
        StatusCode::CREATED,
        crate::audit::audited(Json(hold_json(&hold)), 1),
    )
        .into_response();
    Ok(crate::audit::with_details(response, hold_json(&hold)))
}

pub async fn release(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let key = id.clone();
    let released = tokio::task::spawn_blocking(move || store.release_hold(&key))
        .await
        .map_err(|e| ApiError::internal(format!("hold task failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match released {
        Some(h) => {
            tracing::info!(hold = %h.id, index = %h.index, "legal hold released");
            Ok(crate::audit::with_details(
                crate::audit::audited(Json(json!({ "released": hold_json(&h) })), 1),
                hold_json(&h),
            ))
        }
        None => Err(ApiError::not_found(format!(
            "no hold {id:?} placed through the API (configured holds are released by editing the configuration)"
        ))),
    }
}
