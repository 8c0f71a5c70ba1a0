//! OTLP over gRPC: the `Export` method of `opentelemetry.proto.collector.logs.v1.LogsService`,
//! which the OpenTelemetry Collector's `otlp` exporter and most SDKs use by default (port
//! 4317). It is served by the same router as everything else (tokens, index scopes, limits,
//! the in-flight budget, the one ingest path), on a listener that speaks HTTP/2.
//!
//! One unary method needs no gRPC framework: a request body is one length-prefixed message
//! (compressed per `grpc-encoding` when its flag says so) and the status travels in trailers,
//! as gRPC's HTTP/2 protocol description lays out. Errors are "trailers-only" answers
//! (HTTP 200 with `grpc-status` in the headers); the codes follow the OTLP spec's advice on
//! which ones exporters retry (UNAVAILABLE) and which they drop (INVALID_ARGUMENT).

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use logsift_compat::otlp::{self, GrpcEncoding};
use logsift_compat::OtlpLogs;

use crate::compat::{content_type, ingest_records};
use crate::{ApiError, AppState, Principal};

pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// gRPC status codes used here (google.rpc.Code).
mod code {
    pub const OK: u32 = 0;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

pub async fn export(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let api = "otlp-grpc";
    // gRPC's own rule: a request that is not gRPC gets a plain HTTP 415.
    let ct = content_type(&headers);
    if ct != "application/grpc" && ct != "application/grpc+proto" {
        state.metrics.count_bad_request(api, "bad_content_type");
        return Response::builder()
            .status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(format!(
                "content-type {ct:?} is not gRPC; send application/grpc\n"
            )))
            .unwrap_or_default();
    }
    let header = headers
        .get("grpc-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let Some(encoding) = GrpcEncoding::from_header(header) else {
        state.metrics.count_bad_request(api, "bad_encoding");
        return status_only(
            code::UNIMPLEMENTED,
            &format!(
                "grpc-encoding {header:?} is not supported; use {}",
                GrpcEncoding::ACCEPTED
            ),
        );
    };
    let decoder = OtlpLogs::Grpc {
        encoding,
        max_message_bytes: state.cfg.max_body_bytes,
    };
    let (rejected, why) =
        match ingest_records(&state, &principal, &peer, api, headers, body, decoder).await {
            Ok(ingested) => crate::otlp::partial_success(&state, ingested),
            Err(e) => return error(e),
        };
    let message = otlp::response_protobuf(rejected, &why);
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code::OK));
    let frames = [Frame::data(Bytes::from(framed)), Frame::trailers(trailers)];
    let body = StreamBody::new(futures_util::stream::iter(frames.map(Ok::<_, Infallible>)));
    grpc_response(Body::new(body))
}

fn grpc_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        "grpc-accept-encoding",
        HeaderValue::from_static(GrpcEncoding::ACCEPTED),
    );
    response
}

/// A "trailers-only" answer: no message, the status in the headers.
fn status_only(status: u32, message: &str) -> Response {
    let mut response = grpc_response(Body::empty());
    let headers = response.headers_mut();
    headers.insert("grpc-status", HeaderValue::from(status));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", v);
    }
    response
}

/// An [`ApiError`] as a gRPC status. The OTLP spec has exporters retry UNAVAILABLE (and
/// RESOURCE_EXHAUSTED only with retry info, which is not sent): so overload and a full disk
/// are UNAVAILABLE, and a body too large to ever fit is RESOURCE_EXHAUSTED.
fn error(e: ApiError) -> Response {
    if e.status.is_server_error() && e.status != StatusCode::SERVICE_UNAVAILABLE {
        tracing::error!(code = e.code, message = %e.message, "OTLP/gRPC export failed");
    }
    let status = match e.status {
        StatusCode::UNAUTHORIZED => code::UNAUTHENTICATED,
        StatusCode::FORBIDDEN => code::PERMISSION_DENIED,
        StatusCode::PAYLOAD_TOO_LARGE => code::RESOURCE_EXHAUSTED,
        StatusCode::REQUEST_TIMEOUT => code::DEADLINE_EXCEEDED,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::INSUFFICIENT_STORAGE => code::UNAVAILABLE,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => code::UNIMPLEMENTED,
        s if s.is_client_error() => code::INVALID_ARGUMENT,
        _ => code::INTERNAL,
    };
    status_only(status, &e.message)
}

/// `grpc-message` is percent-encoded UTF-8: every byte outside printable ASCII, and `%`.
fn percent_encode(message: &str) -> String {
    // Bytes outside ASCII are always encoded; controls (and DEL) and `%` are added.
    const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    percent_encoding::utf8_percent_encode(message, ENCODED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(
            percent_encode("50% off: ünï\n"),
            "50%25 off: %C3%BCn%C3%AF%0A"
        );
    }
}
