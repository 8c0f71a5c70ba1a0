//! Loki's push endpoint, `POST /loki/api/v1/push`, for Promtail, Grafana Alloy, the Docker
//! Loki driver and the Loki client libraries: snappy-compressed protobuf (the default, also
//! taken when no Content-Type is sent, as Loki does) or JSON. Answers 204 like Loki.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use logsift_compat::loki;
use logsift_core::time::now_ns;
use logsift_ingest::Ack;

use crate::compat::{
    content_type, decode_error, encode_records, target_index, unsupported_type, RecordBudget,
};
use crate::ingest::{ingest_body, source_of, Decoded};
use crate::{ApiError, AppState, Principal, Role};

pub async fn push(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let api = "loki";
    let json = match content_type(&headers).as_str() {
        "application/json" => true,
        "" | "application/x-protobuf" => false,
        other => {
            state.metrics.count_bad_request(api, "bad_content_type");
            return Err(unsupported_type(
                other,
                "application/x-protobuf (snappy) or application/json",
            ));
        }
    };
    let index = target_index(&headers)?;
    principal.require_index(Role::Ingest, index.as_str())?;
    let source = source_of(&peer, api);
    let cfg = state.cfg.clone();
    let ingested = ingest_body(
        &state,
        &principal,
        api,
        headers,
        body,
        Ack::Durable,
        move |body, charge| {
            let records = if json {
                // What is charged stays held beside the streams parsed from the body (their
                // entries are parsed one at a time).
                let held = charge
                    .covered()
                    .saturating_add(loki::json_streams_bytes(body));
                charge.cover(held, "the parsed push")?;
                let mut budget = RecordBudget::new(charge, held, &index, &source, &cfg);
                loki::decode_json(body, &mut |len| budget.admit(len))?
            } else {
                let len = loki::snappy_len(body).map_err(decode_error)?;
                // The body stays held while it is decompressed beside it, and the message
                // while it is decoded.
                let held = charge.covered().saturating_add(len);
                charge.cover(held, "the decompressed push")?;
                let held = held.saturating_add(len);
                let mut budget = RecordBudget::new(charge, held, &index, &source, &cfg);
                loki::decode_protobuf(body, cfg.max_body_bytes, &mut |len| budget.admit(len))?
            };
            let (entries, rejected) = encode_records(&records, &index, &source, now_ns(), &cfg);
            Ok(Decoded {
                entries,
                answer: rejected,
            })
        },
    )
    .await?;
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
