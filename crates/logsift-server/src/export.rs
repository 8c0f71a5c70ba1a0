//! Exports for auditors: `POST /api/v1/export` streams every matching record oldest first,
//! `GET /api/v1/exports/{id}/manifest` serves the signed manifest once the stream completed,
//! and `GET /api/v1/keys` the public key to check it with.
//!
//! The stream is produced on the blocking pool into a small bounded channel, so a slow client
//! slows the export down instead of growing memory, and a client that goes away stops it.
//! The manifest is written only when every record was sent: an export cut short has none.
//! Resuming (`after`) regenerates the part before the cursor without sending it, so that the
//! manifest's count and sha256 cover the whole file the client ends up with.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use logsift_audit::{Encoder, Format, Keys, Manifest, SegmentRef, MANIFEST_VERSION};
use logsift_core::time::{format_rfc3339, now_ns};
use logsift_query::export::{committed_max_id, export, ExportRequest};
use logsift_query::{Budget, QueryError, SearchRequest};
use serde::Deserialize;
use serde_json::json;

use crate::audit::Caller;
use crate::search::{index_list, query_error, run_query, time_param, Answer, QueryLimits};
use crate::{ApiError, AppState, Principal, Role};

/// Bytes gathered before a chunk is handed to the connection.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks in flight between the export and the connection: the export's memory bound.
const CHUNKS_IN_FLIGHT: usize = 8;

/// What the export endpoints need besides the store.
pub struct ExportState {
    pub keys: Keys,
    /// `<data>/exports`: one signed manifest per completed export.
    pub dir: PathBuf,
}

impl ExportState {
    pub fn open(data_dir: &Path, key_file: Option<&Path>) -> Result<Self, String> {
        let key_path = key_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.join("keys").join("export.key"));
        let keys = Keys::load_or_generate(&key_path).map_err(|e| e.to_string())?;
        let dir = data_dir.join("exports");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(ExportState { keys, dir })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    #[serde(default)]
    q: String,
    /// Comma-separated index names.
    index: Option<String>,
    start: Option<String>,
    end: Option<String>,
    format: Option<String>,
    /// Pin the exported set (a resumed export passes the first one's).
    max_id: Option<u64>,
    /// Resume after this cursor (the `X-Logsift-Cursor` of the last record received).
    after: Option<String>,
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if bytes == [0u8; 16] {
        // /dev/urandom unreadable: time and pid still make it unique on this server.
        bytes[..8].copy_from_slice(&now_ns().to_le_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    hex::encode(bytes)
}

fn cursor_key(c: &str) -> Option<(i64, u64)> {
    let (ts, id) = c.split_once('_')?;
    Some((ts.parse().ok()?, id.parse().ok()?))
}

/// What an export finds out before its first byte: the pinned set and its size.
struct Prelude {
    max_id: u64,
    estimate: u64,
    /// The estimate stopped at the query time limit: it counts part of the range.
    partial: bool,
    resolved: Vec<String>,
    segments: Vec<SegmentRef>,
    heads: Vec<(String, String)>,
}

impl Answer for Prelude {
    fn partial(&self) -> bool {
        self.partial
    }
}

pub(crate) async fn start_export(
    State(state): State<AppState>,
    Extension(limits): Extension<QueryLimits>,
    Extension(principal): Extension<Principal>,
    who: Caller,
    body: Result<Json<ExportParams>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(p) = body.map_err(|e| ApiError::bad_request("bad_body", e.body_text()))?;
    let format = Format::parse(p.format.as_deref().unwrap_or("ndjson"))
        .map_err(|e| ApiError::bad_request("bad_parameter", e.to_string()))?;
    let now = now_ns();
    let start = time_param("start", p.start.as_deref(), now)?;
    let end = time_param("end", p.end.as_deref(), now)?;
    let after_key = match p.after.as_deref().filter(|a| !a.is_empty()) {
        Some(a) => Some(cursor_key(a).ok_or_else(|| {
            ApiError::bad_request("bad_parameter", format!("after {a:?} is not a cursor"))
        })?),
        None => None,
    };
    let mut indexes = index_list(p.index.clone());
    // A token scoped to some indexes exports only those: named ones must be in scope, and
    // "all" means all of its own.
    if indexes.is_empty() {
        let all = state.store.user_index_names();
        let mine: Vec<String> = all
            .iter()
            .filter(|i| principal.may(Role::Export, i))
            .cloned()
            .collect();
        if mine.len() < all.len() {
            if mine.is_empty() {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("{} may not export any existing index", principal.label()),
                ));
            }
            indexes = mine;
        }
    } else {
        for i in &indexes {
            principal.require_index(Role::Export, i)?;
        }
    }
    logsift_query::parse_query(&p.q).map_err(query_error)?;
    let store = state.store.clone();
    // Held by the streaming task until the export ends.
    let streaming = limits.export_permit()?;

    // Pin the set and estimate its size (for progress bars) before the first byte goes out:
    // a query like any other, in a query slot, under the time limit, stopped if the client
    // goes.
    let Prelude {
        max_id,
        estimate,
        partial: estimate_partial,
        resolved,
        segments,
        heads,
    } = {
        let (store, indexes, q) = (store.clone(), indexes.clone(), p.q.clone());
        let pinned = p.max_id;
        run_query(&limits, move |budget| -> Result<_, QueryError> {
            let max_id = match pinned {
                Some(m) => m,
                None => committed_max_id(&store, &indexes)?,
            };
            let counted = logsift_query::search(
                &store,
                &SearchRequest {
                    query: q,
                    indexes: indexes.clone(),
                    start,
                    end,
                    limit: 0,
                    budget,
                    ..SearchRequest::default()
                },
            )?;
            let handles = logsift_query::resolve_indexes(&store, &indexes)?;
            let mut segments = Vec::new();
            let mut heads = Vec::new();
            for h in &handles {
                heads.push((h.name().to_string(), h.catalog_head()));
                for e in h.segments() {
                    let overlaps = start.is_none_or(|s| e.max_timestamp >= s)
                        && end.is_none_or(|en| e.min_timestamp < en);
                    if overlaps {
                        segments.push(SegmentRef {
                            index: h.name().to_string(),
                            segment: e.segment.clone(),
                            sha256: e.sha256.clone(),
                        });
                    }
                }
            }
            let resolved: Vec<String> = handles.iter().map(|h| h.name().to_string()).collect();
            Ok(Prelude {
                max_id,
                estimate: counted.total,
                partial: counted.partial,
                resolved,
                segments,
                heads,
            })
        })
        .await?
    };

    let export_id = random_id();
    let what = json!({
        "export_id": export_id,
        "query": p.q,
        "indexes": resolved,
        "start": start.map(format_rfc3339),
        "end": end.map(format_rfc3339),
        "format": format,
        "max_id": max_id,
        "after": p.after,
    });
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(CHUNKS_IN_FLIGHT);
    let budget = Budget::default();
    let cancel = budget.cancel.clone();
    let exports = state.exports.clone();
    let metrics = state.metrics.clone();
    let audit = state.audit.clone();
    let manifest_base = Manifest {
        version: MANIFEST_VERSION,
        export_id: export_id.clone(),
        query: p.q.clone(),
        indexes: resolved.clone(),
        start: start.map(format_rfc3339),
        end: end.map(format_rfc3339),
        max_id,
        format,
        records: 0,
        bytes: 0,
        sha256: String::new(),
        segments,
        catalog_heads: heads,
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: format_rfc3339(now),
    };
    let req = ExportRequest {
        query: p.q.clone(),
        indexes,
        start,
        end,
        max_id: Some(max_id),
        after: None,
        budget,
    };
    let id_for_task = export_id.clone();
    tokio::task::spawn_blocking(move || {
        let _streaming = streaming;
        let mut enc = Encoder::new(format);
        let mut buf = Vec::with_capacity(CHUNK_BYTES + 64 * 1024);
        enc.header(&mut buf);
        let mut sent_records = 0u64;
        let send = |buf: &mut Vec<u8>| -> Result<(), QueryError> {
            let chunk = bytes::Bytes::from(std::mem::take(buf));
            tx.blocking_send(Ok(chunk))
                .map_err(|_| QueryError::Cancelled)
        };
        let result = export(&store, &req, |hit, cursor| {
            // Records up to the resume cursor are the client's already: hashed, not sent.
            let skip = after_key.is_some_and(|a| cursor_key(cursor).is_some_and(|k| k <= a));
            let mark = buf.len();
            enc.record(hit, &mut buf);
            if skip {
                buf.truncate(mark);
                return Ok(());
            }
            sent_records += 1;
            if buf.len() >= CHUNK_BYTES {
                send(&mut buf)?;
            }
            Ok(())
        });
        let outcome = match result {
            Ok(_) => {
                if !buf.is_empty() && send(&mut buf).is_err() {
                    Err(QueryError::Cancelled)
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                let mut manifest = manifest_base;
                manifest.records = enc.records();
                manifest.bytes = enc.bytes();
                manifest.sha256 = enc.finish();
                let records = manifest.records;
                let signed = exports.keys.sign(manifest);
                let path = exports.dir.join(format!("{id_for_task}.manifest.json"));
                let bytes = serde_json::to_vec_pretty(&signed).unwrap_or_default();
                if let Err(e) = logsift_core::fsutil::write_atomic(&path, &bytes) {
                    tracing::error!(error = %e, "cannot save an export manifest");
                    let _ = tx.blocking_send(Err(std::io::Error::other("manifest not saved")));
                    metrics.exports_failed.inc();
                    audit.record(
                        &who,
                        "export",
                        what,
                        sent_records,
                        "error: manifest not saved",
                    );
                    return;
                }
                metrics.exported_records.inc_by(sent_records);
                let mut what = what;
                what["sha256"] = json!(signed.manifest.sha256);
                audit.record(&who, "export", what, records, "ok");
            }
            Err(e) => {
                // Abort the response so that the client sees an incomplete transfer rather
                // than a short file that looks whole.
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                metrics.exports_failed.inc();
                audit.record(&who, "export", what, sent_records, &format!("stopped: {e}"));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    // Dropping the body (client gone) drops the receiver; the export's next send fails and
    // it stops. The flag also stops it between records.
    let guard = CancelOnDrop(cancel);
    let stream = futures_util::StreamExt::map(stream, move |item| {
        let _ = &guard;
        item
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    for (name, value) in [
        ("x-logsift-export-id", export_id),
        ("x-logsift-max-id", max_id.to_string()),
        ("x-logsift-estimate", estimate.to_string()),
        // The count stopped at query.query_timeout_ms: the export itself is not affected.
        ("x-logsift-estimate-partial", estimate_partial.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    Ok(response)
}

struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub async fn manifest(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    // Ids are 32 hex digits: nothing else can name a file.
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "bad_parameter",
            "an export id is 32 hex digits",
        ));
    }
    let path = state.exports.dir.join(format!("{id}.manifest.json"));
    match std::fs::read(&path) {
        Ok(bytes) => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::not_found(format!(
            "no manifest for export {id}: it is unknown, still running, or did not complete"
        ))),
        Err(e) => Err(ApiError::internal(format!("{}: {e}", path.display()))),
    }
}

pub async fn keys(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "keys": [{
            "key_id": state.exports.keys.key_id(),
            "algorithm": "ed25519",
            "public_key": state.exports.keys.public_hex(),
            "use": "export manifests",
        }]
    }))
}
