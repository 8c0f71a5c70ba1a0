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
use std::io::Read;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use logsift_compat::otlp;
use logsift_core::time::now_ns;
use logsift_ingest::Metrics;

use crate::compat::{content_type, decode_error, encode_records, target_index};
use crate::ingest::{body_too_large, ingest_body, source_of, Decoded};
use crate::{ApiError, AppState, Principal, Role};

pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// What `grpc-accept-encoding` announces, and the message encodings a request may use.
const ACCEPTED_ENCODINGS: &str = "identity,gzip,zstd";

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

#[derive(Clone, Copy)]
enum MessageEncoding {
    Identity,
    Gzip,
    Zstd,
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
    let encoding = match headers
        .get("grpc-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
    {
        "identity" => MessageEncoding::Identity,
        "gzip" => MessageEncoding::Gzip,
        "zstd" => MessageEncoding::Zstd,
        other => {
            state.metrics.count_bad_request(api, "bad_encoding");
            return status_only(
                code::UNIMPLEMENTED,
                &format!("grpc-encoding {other:?} is not supported; use {ACCEPTED_ENCODINGS}"),
            );
        }
    };
    let index = match target_index(&headers) {
        Ok(index) => index,
        Err(e) => return error(e),
    };
    if let Err(e) = principal.require_index(Role::Ingest, index.as_str()) {
        return error(e);
    }
    let source = source_of(&peer, api);
    let cfg = state.cfg.clone();
    let outcome = ingest_body(
        &state,
        &principal,
        api,
        headers,
        body,
        logsift_ingest::Ack::Durable,
        move |body| {
            let message = unframe(body, encoding, cfg.max_body_bytes)?;
            let request = otlp::decode_protobuf(&message).map_err(decode_error)?;
            drop(message);
            let records = otlp::records(&request);
            drop(request);
            let (entries, rejected) = encode_records(&records, &index, &source, now_ns(), &cfg)?;
            Ok(Decoded {
                entries,
                answer: rejected,
            })
        },
    )
    .await;
    let ingested = match outcome {
        Ok(i) => i,
        Err(e) => return error(e),
    };
    Metrics::add(&state.metrics.otlp_log_records, ingested.accepted as u64);
    let rejected = ingested.answer as i64;
    let why = if rejected > 0 {
        format!(
            "{rejected} log records exceed ingest.max_line_bytes = {} as JSON records",
            state.cfg.max_line_bytes
        )
    } else {
        String::new()
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
        HeaderValue::from_static(ACCEPTED_ENCODINGS),
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

/// The one message of a unary request: a flag byte (1: compressed with the request's
/// `grpc-encoding`), a big-endian u32 length, the bytes. Decompression stops one byte past
/// `limit`, so a small bomb cannot expand without bound.
fn unframe(body: &[u8], encoding: MessageEncoding, limit: usize) -> Result<Vec<u8>, ApiError> {
    let bad = |reason: String| ApiError::bad_request("bad_grpc_frame", reason);
    if body.len() < 5 {
        return Err(bad(format!(
            "a gRPC request needs a 5-byte message prefix; the body has {} bytes",
            body.len()
        )));
    }
    let (prefix, rest) = body.split_at(5);
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if rest.len() < len {
        return Err(bad(format!(
            "the gRPC message prefix announces {len} bytes; the body has {}",
            rest.len()
        )));
    }
    if rest.len() > len {
        return Err(bad(
            "Export is unary: the body holds more than one gRPC message".to_string(),
        ));
    }
    let mut out = Vec::new();
    let read = match (prefix[0], encoding) {
        (0, _) => return Ok(rest.to_vec()),
        (1, MessageEncoding::Identity) => {
            return Err(bad(
                "the message is flagged compressed but grpc-encoding is identity".to_string(),
            ))
        }
        (1, MessageEncoding::Gzip) => flate2::read::GzDecoder::new(rest)
            .take(limit as u64 + 1)
            .read_to_end(&mut out),
        (1, MessageEncoding::Zstd) => zstd::stream::read::Decoder::new(rest)
            .and_then(|d| d.take(limit as u64 + 1).read_to_end(&mut out)),
        (flag, _) => return Err(bad(format!("unknown gRPC message flag {flag}"))),
    };
    read.map_err(|e| bad(format!("cannot decompress the gRPC message: {e}")))?;
    if out.len() > limit {
        return Err(body_too_large(limit));
    }
    Ok(out)
}

/// `grpc-message` is percent-encoded UTF-8: every byte outside printable ASCII, and `%`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn unframes_plain_and_compressed_messages() {
        let msg = b"hello protobuf".repeat(10);
        assert_eq!(
            unframe(&framed(0, &msg), MessageEncoding::Identity, 1 << 20).unwrap(),
            msg
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &msg).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            unframe(&framed(1, &gz), MessageEncoding::Gzip, 1 << 20).unwrap(),
            msg
        );
        let zst = zstd::encode_all(&msg[..], 3).unwrap();
        assert_eq!(
            unframe(&framed(1, &zst), MessageEncoding::Zstd, 1 << 20).unwrap(),
            msg
        );
    }

    #[test]
    fn refuses_malformed_frames() {
        let msg = b"abc";
        let mut two = framed(0, msg);
        two.extend(framed(0, msg));
        let mut short = framed(0, msg);
        short.pop();
        for (body, enc, want) in [
            (vec![0, 0, 0], MessageEncoding::Identity, "5-byte"),
            (short, MessageEncoding::Identity, "announces 3 bytes"),
            (two, MessageEncoding::Identity, "unary"),
            (framed(1, msg), MessageEncoding::Identity, "identity"),
            (framed(1, msg), MessageEncoding::Gzip, "decompress"),
            (framed(7, msg), MessageEncoding::Identity, "flag 7"),
        ] {
            let e = unframe(&body, enc, 1 << 20).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(want), "{} lacks {want}", e.message);
        }
        // A compressed message that expands past the limit is refused without being held.
        let bomb = zstd::encode_all(&vec![0u8; 1 << 20][..], 3).unwrap();
        let e = unframe(&framed(1, &bomb), MessageEncoding::Zstd, 4096).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(
            percent_encode("50% off: ünï\n"),
            "50%25 off: %C3%BCn%C3%AF%0A"
        );
    }
}
