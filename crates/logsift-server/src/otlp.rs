//! OTLP/HTTP logs, `POST /v1/logs`, for the OpenTelemetry SDKs and Collector: protobuf
//! (`application/x-protobuf`) or JSON (`application/json`), gzip or zstd bodies. Answers carry
//! an `ExportLogsServiceResponse`, errors a `google.rpc.Status`, in the request's encoding, as
//! the OTLP/HTTP spec asks.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use logsift_compat::{otlp, OtlpLogs};

use crate::compat::{content_type, ingest_records, unsupported_type};
use crate::ingest::Ingested;
use crate::{ApiError, AppState, Principal};

/// How OTLP/HTTP answers: in the request's encoding.
#[derive(Clone, Copy)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn media_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

pub async fn logs(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let api = "otlp";
    // The spec asks for 415 on any other type; its answer cannot be in "the request's
    // encoding", so it is logsift's JSON error.
    let encoding = match content_type(&headers).as_str() {
        "application/x-protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            state.metrics.count_bad_request(api, "bad_content_type");
            return unsupported_type(other, "application/x-protobuf or application/json")
                .into_response();
        }
    };
    let decoder = match encoding {
        Encoding::Protobuf => OtlpLogs::Protobuf,
        Encoding::Json => OtlpLogs::Json,
    };
    let (rejected, why) =
        match ingest_records(&state, &principal, &peer, api, headers, body, decoder).await {
            Ok(ingested) => partial_success(&state, ingested),
            Err(e) => return status_response(e, encoding),
        };
    let body = match encoding {
        Encoding::Protobuf => otlp::response_protobuf(rejected, &why),
        Encoding::Json => otlp::response_json(rejected, &why),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.media_type())],
        body,
    )
        .into_response()
}

/// What OTLP/HTTP and OTLP/gRPC answer once a body went through the one ingest path
/// ([`ingest_records`]): counted, and the partial-success part of the answer,
/// `(rejected records, why)`.
pub(crate) fn partial_success(state: &AppState, ingested: Ingested<usize>) -> (i64, String) {
    state
        .metrics
        .otlp_log_records
        .inc_by(ingested.accepted as u64);
    let rejected = ingested.answer as i64;
    let why = if rejected > 0 {
        format!(
            "{rejected} log records exceed ingest.max_line_bytes = {} as JSON records",
            state.cfg.max_line_bytes
        )
    } else {
        String::new()
    };
    (rejected, why)
}

/// An error as OTLP/HTTP answers it: the HTTP status (429 and 503 with Retry-After, which
/// exporters honour) and a `google.rpc.Status` body.
fn status_response(e: ApiError, encoding: Encoding) -> Response {
    if e.status.is_server_error() {
        tracing::error!(code = e.code, message = %e.message, "OTLP export failed");
    }
    // google.rpc.Code: INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL.
    let code = match e.status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::PAYLOAD_TOO_LARGE => 8,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE => 14,
        s if s.is_client_error() => 3,
        _ => 13,
    };
    let body = match encoding {
        Encoding::Protobuf => otlp::status_protobuf(code, &e.message),
        Encoding::Json => serde_json::to_vec(&serde_json::json!({
            "code": code,
            "message": e.message,
        }))
        .unwrap_or_default(),
    };
    let mut response = (
        e.status,
        [(header::CONTENT_TYPE, encoding.media_type())],
        body,
    )
        .into_response();
    if let Some(secs) = e.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
