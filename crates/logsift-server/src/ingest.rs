use std::io::Read;

use axum::body::{Body, Bytes};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Extension;
use axum::Json;
use logsift_core::entry::{Entries, Entry};
use logsift_core::time::now_ns;
use logsift_core::{Format, IndexName};
use logsift_ingest::{
    Ack, Admission, AppendError, PipelineHandle, Reservation, ENTRY_OVERHEAD_BYTES,
    RETRY_AFTER_SECS,
};
use logsift_parse::ParseOptions;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::metrics::ServerMetrics;
use crate::{ApiError, AppState, Principal, Role};

#[derive(Debug, Deserialize)]
pub struct IngestParams {
    /// `json`, `syslog` or `auto`; else taken from Content-Type.
    format: Option<String>,
    /// `durable` (default): answer after fsync. `received`: answer once queued in memory.
    ack: Option<String>,
    /// When the lines were received, if not now (RFC 3339 or epoch seconds): `logsift import`
    /// passes a file's modification time, which dates timestamps without a year (RFC 3164).
    received_at: Option<String>,
}

/// Per-line problems are reported, not fatal: at most this many are listed in one answer.
const MAX_REPORTED_ERRORS: usize = 100;

#[derive(Debug, Serialize)]
pub struct LineError {
    /// 1-based line number in the (decompressed) body.
    line: usize,
    error: String,
    /// Whether the line was still stored (verbatim, with a `parse_error` field).
    stored: bool,
}

#[derive(Debug, Serialize)]
pub struct IngestResponse {
    accepted: usize,
    rejected: usize,
    errors: Vec<LineError>,
}

fn pick_format(params: &IngestParams, headers: &HeaderMap) -> Result<Format, ApiError> {
    if let Some(f) = params.format.as_deref() {
        return match f {
            "json" | "ndjson" => Ok(Format::Json),
            "syslog" => Ok(Format::Syslog),
            "auto" => Ok(Format::Auto),
            other => Err(ApiError::bad_request(
                "bad_format",
                format!("format must be json, syslog or auto, not {other:?}"),
            )),
        };
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Ok(if content_type.contains("json") {
        Format::Json
    } else {
        Format::Auto
    })
}

/// Decompresses a body per its `Content-Encoding`, charging `charge` for every buffer it is
/// about to allocate (on top of the compressed bytes, still held meanwhile) and stopping one
/// byte past `limit`: a 65 KB gzip bomb is refused (413) at the budget, before it is in
/// memory, not after.
pub(crate) fn decompress(
    headers: &HeaderMap,
    body: Bytes,
    limit: usize,
    charge: &mut Charge,
) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim();
    let wire = body.len();
    let mut admit = |capacity: usize| charge.cover(wire + capacity, "the decompressed body");
    let bad = |e: std::io::Error| {
        ApiError::bad_request(
            "bad_body",
            format!("cannot decompress {encoding} body: {e}"),
        )
    };
    // Reading one byte past the limit tells "exactly at the limit" from "over it".
    let out = match encoding {
        "identity" | "" => return Ok(body),
        "gzip" | "x-gzip" => logsift_compat::read_admitted(
            flate2::read::MultiGzDecoder::new(&body[..]).take(limit as u64 + 1),
            &mut admit,
            bad,
        )?,
        "zstd" => {
            let decoder = zstd::stream::read::Decoder::new(&body[..]).map_err(bad)?;
            logsift_compat::read_admitted(decoder.take(limit as u64 + 1), &mut admit, bad)?
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad_encoding",
                format!("Content-Encoding {other:?} is not supported; use gzip or zstd"),
            ))
        }
    };
    if out.len() > limit {
        return Err(body_too_large(limit));
    }
    drop(body);
    // The compressed bytes are gone: what is held now is the decompressed body alone.
    charge.cover(out.len(), "the decompressed body")?;
    Ok(Bytes::from(out))
}

/// What decoding a request's body will hold, as far as its endpoint can tell before reading
/// it: taken at admission (see [`ingest_body`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Held {
    /// The decoder charges as it goes.
    Body,
    /// A body of lines, each copied into an entry of `per_line` bytes besides its own
    /// ([`Charge::cover_lines`]).
    Lines { per_line: usize },
}

/// The line length assumed when a body of lines is admitted: shorter lines need more than
/// was taken, and are tried for it while decoding. The e2e corpus' lines average 214 bytes.
const ASSUMED_LINE_BYTES: usize = 100;

impl Held {
    /// What an entry of a line of index `index` and source `source` holds besides the line.
    pub(crate) fn line_bytes(index: &str, source: &str) -> usize {
        ENTRY_OVERHEAD_BYTES + Entry::FIXED_BYTES + index.len() + source.len()
    }
}

/// A request's share of the in-flight budget while its body is decompressed and decoded on the
/// blocking pool: every buffer is charged before it is allocated, so that what a request can
/// make the server hold is bounded by `ingest.inflight_bytes`, whatever its wire size.
pub(crate) struct Charge {
    pipeline: PipelineHandle,
    reservation: Reservation,
    metrics: Arc<ServerMetrics>,
    /// What the last successful [`Charge::cover`] covered.
    covered: usize,
}

impl Charge {
    /// Makes the reservation cover `bytes` held at once by the request (`what` names them in
    /// the error): 413 when that exceeds the whole budget, 429 when it exceeds what is free.
    pub(crate) fn cover(&mut self, bytes: usize, what: &'static str) -> Result<(), ApiError> {
        self.pipeline
            .try_cover(&mut self.reservation, bytes, what)
            .map_err(|e| append_error(e, &self.metrics))?;
        self.covered = bytes;
        Ok(())
    }

    /// The bytes the request is charged for now.
    pub(crate) fn covered(&self) -> usize {
        self.covered
    }

    /// Charges, before a body of lines is split into entries, what the entries will hold
    /// besides the body: each line's bytes again, plus a header naming `index` and `source`
    /// and [`ENTRY_OVERHEAD_BYTES`] per line. Counting newlines is far cheaper than the
    /// allocation per line it guards.
    pub(crate) fn cover_lines(
        &mut self,
        body: &[u8],
        index: &str,
        source: &str,
    ) -> Result<(), ApiError> {
        let lines = memchr::memchr_iter(b'\n', body).count() + 1;
        let per_line = Held::line_bytes(index, source);
        let bytes = lines
            .saturating_mul(per_line)
            .saturating_add(body.len().saturating_mul(2));
        self.cover(bytes, "the body's lines")
    }
}

struct Prepared {
    entries: Entries,
    rejected: usize,
    errors: Vec<LineError>,
}

/// Splits a body into lines and encodes the accepted ones. Lines are checked here only to tell
/// the sender which ones did not parse (a valid JSON line is scanned, not parsed); the
/// indexer parses them from the WAL.
fn prepare(
    body: &[u8],
    index: &str,
    format: Format,
    max_line_bytes: usize,
    source: &str,
    received_at: i64,
) -> Prepared {
    let opts = ParseOptions {
        received_at_ns: received_at,
        ..Default::default()
    };
    let mut out = Prepared {
        entries: Entries::new(),
        rejected: 0,
        errors: Vec::new(),
    };
    let report = |errors: &mut Vec<LineError>, line, error: String, stored| {
        if errors.len() < MAX_REPORTED_ERRORS {
            errors.push(LineError {
                line,
                error,
                stored,
            });
        }
    };
    // memchr, not `split` with a closure: that went byte by byte (a fifth of this function).
    let ends = memchr::memchr_iter(b'\n', body).chain([body.len()]);
    let lines = ends.scan(0, |start, end| {
        let line = &body[*start..end];
        *start = end + 1;
        Some(line)
    });
    for (i, mut line) in lines.enumerate() {
        while let [rest @ .., b'\r' | 0] = line {
            line = rest;
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if line.len() > max_line_bytes {
            out.rejected += 1;
            report(
                &mut out.errors,
                i + 1,
                format!(
                    "line of {} bytes exceeds max_line_bytes {max_line_bytes}",
                    line.len()
                ),
                false,
            );
            continue;
        }
        if let Some(err) = logsift_parse::parse_error(format, line, &opts) {
            report(&mut out.errors, i + 1, err.into_owned(), true);
        }
        out.entries.push(&Entry {
            format,
            received_at,
            index,
            source,
            raw: line,
        });
    }
    out
}

pub async fn ingest(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path(index): Path<String>,
    params: Result<Query<IngestParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    let api = "ingest";
    let Query(params) =
        params.map_err(|e| ApiError::bad_request("bad_parameter", e.body_text()))?;
    let index =
        IndexName::new(&index).map_err(|e| ApiError::bad_request("bad_index", e.to_string()))?;
    principal.require_index(Role::Ingest, index.as_str())?;
    let format = pick_format(&params, &headers)?;
    let ack = match params.ack.as_deref() {
        None | Some("durable") => Ack::Durable,
        Some("received") => Ack::Received,
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_parameter",
                format!("ack must be durable or received, not {other:?}"),
            ))
        }
    };
    let source = source_of(&peer, "http");
    let now = now_ns();
    let received_at = match params.received_at.as_deref().filter(|v| !v.is_empty()) {
        None => now,
        Some(v) => {
            let at = logsift_core::time::parse_time_expr(v, now)
                .map_err(|e| ApiError::bad_request("bad_parameter", format!("received_at: {e}")))?;
            if at > now {
                return Err(ApiError::bad_request(
                    "bad_parameter",
                    "received_at is in the future",
                ));
            }
            at
        }
    };
    let max_line_bytes = state.cfg.max_line_bytes;
    let metrics = state.metrics.clone();
    let held = Held::Lines {
        per_line: Held::line_bytes(index.as_str(), &source),
    };
    let answer = ingest_body(
        &state,
        &principal,
        api,
        headers,
        body,
        ack,
        held,
        move |body, charge| {
            charge.cover_lines(body, index.as_str(), &source)?;
            let prepared = prepare(
                body,
                index.as_str(),
                format,
                max_line_bytes,
                &source,
                received_at,
            );
            metrics.http_rejected_lines.inc_by(prepared.rejected as u64);
            Ok(Decoded {
                entries: prepared.entries,
                answer: (prepared.rejected, prepared.errors),
            })
        },
    )
    .await?;
    let Ingested {
        accepted,
        answer: (rejected, errors),
    } = answer;
    let status = if accepted == 0 && rejected > 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(IngestResponse {
            accepted,
            rejected,
            errors,
        }),
    ))
}

/// `"{listener} {peer}"`, the `source` of the records a request brings.
pub(crate) fn source_of(
    peer: &Option<Extension<ConnectInfo<SocketAddr>>>,
    listener: &str,
) -> String {
    match peer {
        Some(Extension(ConnectInfo(addr))) => format!("{listener} {addr}"),
        None => listener.to_string(),
    }
}

/// What a route makes of a decompressed request body: the encoded entries to append and
/// whatever else its answer needs.
pub(crate) struct Decoded<T> {
    pub entries: Entries,
    pub answer: T,
}

/// The outcome of [`ingest_body`]: how many entries were appended (durably, for
/// [`Ack::Durable`]) and the route's own part of the answer.
pub(crate) struct Ingested<T> {
    pub accepted: usize,
    pub answer: T,
}

/// The one way a request body becomes WAL entries, shared by every ingest route (NDJSON and
/// syslog lines, Elasticsearch bulk, Loki, OTLP) so that all keep the same promises: the
/// body's share of the in-flight budget is taken before it is read (429 when there is none),
/// the body is bounded and decompressed (gzip, zstd) and decoded on the blocking pool, and
/// with [`Ack::Durable`] this returns only once every entry is fsynced in the WAL (507 when
/// that cannot be done). `decode` gets the decompressed body and its [`Charge`], which it
/// grows before it allocates much beyond the body (the body is charged already); the entries
/// it returns are charged with [`ENTRY_OVERHEAD_BYTES`] each. Its 4xx errors, like those of
/// decompression, are counted per `api` in `logsift_http_bad_requests_total`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn ingest_body<T, F>(
    state: &AppState,
    principal: &Principal,
    api: &'static str,
    headers: HeaderMap,
    body: Body,
    ack: Ack,
    held: Held,
    decode: F,
) -> Result<Ingested<T>, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&[u8], &mut Charge) -> Result<Decoded<T>, ApiError> + Send + 'static,
{
    let Some(pipeline) = state.pipeline.clone() else {
        return Err(ApiError::not_here());
    };
    let cfg = state.cfg.clone();
    let metrics = &state.metrics;
    let counted = |e: ApiError| {
        // 429 is counted as throttling, not as a bad request.
        if e.status.is_client_error() && e.status != StatusCode::TOO_MANY_REQUESTS {
            metrics.count_bad_request(api, e.code);
        }
        e
    };
    // Take the body's share of the in-flight budget before reading it: under overload the
    // request is refused while its bytes are still in the client's socket, not in our memory.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > cfg.max_body_bytes) {
        return Err(counted(body_too_large(cfg.max_body_bytes)));
    }
    let budget_bytes = pipeline.budget_bytes();
    if let Some(bytes) = declared.filter(|&len| len > budget_bytes) {
        // It could never be admitted: refused before any of it is read, not after.
        discard(body, &cfg).await;
        let e = AppendError::TooLarge {
            what: "the request body",
            bytes,
            budget_bytes,
        };
        return Err(counted(append_error(e, metrics)));
    }
    if let Err(e) = state.auth.admit_ingest(principal, declared.unwrap_or(0)) {
        discard(body, &cfg).await;
        return Err(e);
    }
    // A full budget is waited for a while before the answer is 429 (whose Retry-After is
    // whole seconds, slept by a client before it tries again), as the TCP listeners wait
    // without refusing. Only here, where the request holds nothing: a request waiting for
    // more while holding part of the budget (as its body is decoded) would hold back the
    // ones queued behind it, and under attack (the hostile soak's bombs) that took the
    // legitimate senders' p99 from 0.15 to 0.85 s. Growing later is tried, not waited for.
    let admission = match cfg.admission_wait_ms {
        0 => Admission::Try,
        ms => Admission::Within(std::time::Duration::from_millis(ms)),
    };
    // What decoding will hold is taken now too, where it can be waited for; an uncompressed
    // body's size tells it. Decoding then gives back what it does not need.
    let identity = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| matches!(v.trim(), "" | "identity"));
    let first = match (declared, held) {
        (Some(len), Held::Lines { per_line }) if identity => len
            .saturating_mul(2)
            .saturating_add(len / ASSUMED_LINE_BYTES * per_line)
            .clamp(len, budget_bytes),
        (declared, _) => declared.unwrap_or(cfg.max_line_bytes),
    };
    let reservation = match pipeline.reserve(first, admission).await {
        Ok(r) => r,
        Err(e) => {
            // Read and discard the body without keeping it, so the client gets to read our
            // answer instead of a connection reset in the middle of its upload.
            discard(body, &cfg).await;
            return Err(append_error(e, metrics));
        }
    };
    let mut charge = Charge {
        pipeline: pipeline.clone(),
        reservation,
        metrics: metrics.clone(),
        covered: first,
    };
    // A whole-body deadline, not a per-read one: a client trickling a byte at a time must
    // not hold a connection and its in-flight reservation for ever.
    let timeout = std::time::Duration::from_millis(cfg.body_read_timeout_ms);
    let body = tokio::time::timeout(
        timeout,
        read_charged(body, cfg.max_body_bytes, declared, &mut charge),
    )
    .await
    .map_err(|_| {
        metrics.http_timeouts.inc();
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within http.body_read_timeout_ms = {}",
                cfg.body_read_timeout_ms
            ),
        )
    })?
    .map_err(counted)?;
    if declared.is_none() {
        state.auth.charge_ingest(principal, body.len());
    }
    let decoded = tokio::task::spawn_blocking(move || {
        let body = decompress(&headers, body, cfg.max_body_bytes, &mut charge)?;
        let bytes = body.len() as u64;
        decode(&body, &mut charge).map(|d| (d, bytes, charge))
    })
    .await
    .map_err(|e| ApiError::internal(format!("ingest task failed: {e}")))?
    .map_err(counted)?;
    let (Decoded { entries, answer }, bytes, charge) = decoded;
    let reservation = charge.reservation;

    metrics.http_bytes.inc_by(bytes);
    let accepted = entries.len();
    pipeline
        .append_reserved(entries, reservation, ack, Admission::Try)
        .await
        .map_err(|e| counted(append_error(e, metrics)))?;
    metrics.http_lines.inc_by(accepted as u64);
    Ok(Ingested { accepted, answer })
}

pub(crate) fn body_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body exceeds http.max_body_bytes = {limit}"),
    )
}

fn append_error(e: AppendError, metrics: &ServerMetrics) -> ApiError {
    match e {
        AppendError::Closed => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            e.to_string(),
        ),
        AppendError::Full { .. } => {
            metrics.http_throttled.inc();
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", e.to_string())
                .retry_after(RETRY_AFTER_SECS)
        }
        AppendError::TooManyIndexes { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "too_many_indexes", e.to_string())
        }
        AppendError::TooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "over_budget", e.to_string())
        }
        AppendError::Storage(_) => {
            metrics.http_refused.inc();
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "not_durable",
                e.to_string(),
            )
        }
    }
}

/// Reads `body` (at most `limit` bytes) into one buffer that grows a quarter at a time, each
/// growth charged to `charge` before it is allocated. A body with a Content-Length was
/// reserved whole before this; a chunked one declares nothing, and was reserved one line's
/// worth: read whole before being charged, a few hundred chunked uploads at once held
/// `http.max_body_bytes` each, far past the in-flight budget (issue #17).
async fn read_charged(
    body: Body,
    limit: usize,
    declared: Option<usize>,
    charge: &mut Charge,
) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    const MIN_STEP: usize = 64 * 1024;
    let mut body = body;
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request("bad_body", format!("cannot read the request body: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let need = buf.len() + data.len();
        if need > limit {
            return Err(body_too_large(limit));
        }
        if need > buf.capacity() {
            let grown = need
                .max(buf.capacity() + (buf.capacity() / 4).max(MIN_STEP))
                .min(limit);
            charge.cover(grown.max(charge.covered()), "the request body")?;
            buf.reserve_exact(grown - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}

/// Reads a body to its end (at most `max_body_bytes`, within `body_read_timeout_ms`), keeping
/// none of it.
async fn discard(body: Body, cfg: &crate::ServerConfig) {
    use http_body_util::BodyExt;
    let limit = cfg.max_body_bytes;
    let drain = async move {
        let mut body = body;
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > limit {
                break;
            }
        }
    };
    let timeout = std::time::Duration::from_millis(cfg.body_read_timeout_ms);
    let _ = tokio::time::timeout(timeout, drain).await;
}
