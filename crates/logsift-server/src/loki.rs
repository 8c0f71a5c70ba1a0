//! Loki's push endpoint, `POST /loki/api/v1/push`, for Promtail, Grafana Alloy, the Docker
//! Loki driver and the Loki client libraries: snappy-compressed protobuf (the default, also
//! taken when no Content-Type is sent, as Loki does) or JSON. Answers 204 like Loki.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use logsift_compat::LokiPush;

use crate::compat::{content_type, ingest_records, unsupported_type};
use crate::{ApiError, AppState, Principal};

pub async fn push(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let api = "loki";
    let decoder = match content_type(&headers).as_str() {
        "application/json" => LokiPush::Json,
        "" | "application/x-protobuf" => LokiPush::Protobuf {
            max_decoded_bytes: state.cfg.max_body_bytes,
        },
        other => {
            state.metrics.count_bad_request(api, "bad_content_type");
            return Err(unsupported_type(
                other,
                "application/x-protobuf (snappy) or application/json",
            ));
        }
    };
    let ingested = ingest_records(&state, &principal, &peer, api, headers, body, decoder).await?;
    state.metrics.loki_entries.inc_by(ingested.accepted as u64);
    if ingested.answer > 0 {
        // Loki too stores the valid entries of a push and answers 400 for the rest, so that
        // the sender does not retry what was stored.
        return Err(ApiError::bad_request(
            "line_too_long",
            format!(
                "{} entries exceed ingest.max_line_bytes = {} and were dropped; {} stored",
                ingested.answer, state.cfg.max_line_bytes, ingested.accepted
            ),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}
