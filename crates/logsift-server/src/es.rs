//! The Elasticsearch API as log shippers use it: `_bulk` to write, and the few endpoints
//! Beats, Logstash, Vector, Fluent Bit and the client libraries probe at start (cluster info,
//! license, ILM policies, templates, nodes, health), answered so that they carry on.
//!
//! Every answer carries `X-Elastic-Product: Elasticsearch`, which the official clients check
//! before they believe what they read. Errors are shaped as Elasticsearch shapes them
//! (`{"error": {"type", "reason", ...}, "status": N}`), since shippers log `error.reason`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use logsift_compat::es::{check_document, index_name, OpType};
use logsift_compat::{EsBulk, ShipperDecoder, Unbounded};
use logsift_core::entry::{Entries, Entry};
use logsift_core::time::now_ns;
use logsift_core::{Format, IndexName};
use logsift_ingest::Ack;
use serde_json::{json, Value};

use crate::ingest::{ingest_body, source_of, Decoded, Held};
use crate::{ApiError, AppState, Principal, Role};
use logsift_compat::es_ids::{self, Claim, Claims};

/// The Elasticsearch version logsift answers as. Clients and shippers check the major version
/// (8 speaks the bulk format every current shipper writes); Beats newer than this need
/// `allow_older_versions: true`.
pub const ES_VERSION: &str = "8.17.0";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_bulk", post(bulk_default).put(bulk_default))
        .route("/{index}/_bulk", post(bulk_index).put(bulk_index))
        .route("/_license", get(license))
        .route("/_xpack", get(xpack))
        .route("/_cluster/health", get(health))
        .route("/_cluster/health/{index}", get(health))
        .route("/_nodes", get(nodes))
        .route("/_nodes/{*filter}", get(nodes))
        .route("/_ilm/policy", get(empty_object))
        .route("/_ilm/policy/{name}", get(ilm_policy).put(acknowledged))
        .route(
            "/_index_template/{name}",
            get(index_template).put(acknowledged).head(exists),
        )
        .route(
            "/_template/{name}",
            get(legacy_template).put(acknowledged).head(exists),
        )
        .route("/_data_stream/{name}", get(data_stream).put(acknowledged))
        .route(
            "/_ingest/pipeline/{name}",
            get(empty_object).put(acknowledged),
        )
        .layer(axum::middleware::map_response(product_header))
}

async fn product_header(mut response: Response) -> Response {
    response.headers_mut().insert(
        "x-elastic-product",
        HeaderValue::from_static("Elasticsearch"),
    );
    response
}

/// `/` serves two audiences: browsers get the web UI, Elasticsearch clients (which ask for
/// JSON) the cluster info they probe at start.
pub(crate) async fn root(headers: axum::http::HeaderMap) -> Response {
    let wants_html = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        crate::ui::index().await
    } else {
        product_header(info().await.into_response()).await
    }
}

async fn info() -> Json<Value> {
    Json(json!({
        "name": "logsift",
        "cluster_name": "logsift",
        "cluster_uuid": "logsift",
        "version": {
            "number": ES_VERSION,
            "build_flavor": "default",
            "build_type": "logsift",
            "build_hash": "logsift",
            "build_date": "2024-12-11T12:08:05.663Z",
            "build_snapshot": false,
            "lucene_version": "9.12.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0"
        },
        "tagline": "You Know, for Search"
    }))
}

pub(crate) async fn head() -> Response {
    product_header(StatusCode::OK.into_response()).await
}

async fn exists() -> StatusCode {
    StatusCode::OK
}

async fn license() -> Json<Value> {
    Json(json!({"license": {
        "status": "active",
        "uid": "logsift",
        "type": "basic",
        "issue_date_in_millis": 0,
        "max_nodes": 1000,
        "issued_to": "logsift",
        "issuer": "logsift",
        "start_date_in_millis": -1
    }}))
}

async fn xpack() -> Json<Value> {
    Json(json!({
        "build": {"hash": "logsift", "date": "2024-12-11T12:08:05.663Z"},
        "license": {"uid": "logsift", "type": "basic", "mode": "basic", "status": "active"},
        "features": {}
    }))
}

async fn health() -> Json<Value> {
    Json(json!({
        "cluster_name": "logsift",
        "status": "green",
        "timed_out": false,
        "number_of_nodes": 1,
        "number_of_data_nodes": 1,
        "active_primary_shards": 1,
        "active_shards": 1,
        "relocating_shards": 0,
        "initializing_shards": 0,
        "unassigned_shards": 0,
        "delayed_unassigned_shards": 0,
        "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0,
        "task_max_waiting_in_queue_millis": 0,
        "active_shards_percent_as_number": 100.0
    }))
}

/// One node, reachable where the client reached us, so that sniffing clients keep talking
/// to the same address.
async fn nodes(headers: HeaderMap) -> Json<Value> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1:9480");
    Json(json!({
        "_nodes": {"total": 1, "successful": 1, "failed": 0},
        "cluster_name": "logsift",
        "nodes": {"logsift": {
            "name": "logsift",
            "version": ES_VERSION,
            "roles": ["data", "ingest", "master"],
            "http": {"publish_address": host, "bound_address": [host]}
        }}
    }))
}

/// Any policy a shipper asks for exists: it then neither creates one nor fails for lack of
/// one. Retention is logsift's own per-index setting.
async fn ilm_policy(Path(name): Path<String>) -> Json<Value> {
    Json(json!({ name: {
        "version": 1,
        "modified_date": "2024-01-01T00:00:00.000Z",
        "policy": {"phases": {"hot": {"min_age": "0ms", "actions": {}}}}
    }}))
}

async fn index_template(Path(name): Path<String>) -> Json<Value> {
    Json(json!({"index_templates": [{
        "name": name,
        "index_template": {"index_patterns": [format!("{name}*")], "composed_of": [], "template": {}}
    }]}))
}

async fn legacy_template(Path(name): Path<String>) -> Json<Value> {
    Json(json!({ name.clone(): {
        "order": 0,
        "index_patterns": [format!("{name}*")],
        "settings": {},
        "mappings": {},
        "aliases": {}
    }}))
}

async fn data_stream(Path(name): Path<String>) -> Json<Value> {
    Json(json!({"data_streams": [{
        "name": name,
        "timestamp_field": {"name": "@timestamp"},
        "indices": [],
        "generation": 1,
        "status": "GREEN",
        "template": name
    }]}))
}

async fn empty_object() -> Json<Value> {
    Json(json!({}))
}

async fn acknowledged() -> Json<Value> {
    Json(json!({"acknowledged": true}))
}

async fn bulk_default(
    state: State<AppState>,
    Extension(principal): Extension<Principal>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    bulk(state, principal, peer, None, headers, body).await
}

async fn bulk_index(
    state: State<AppState>,
    Extension(principal): Extension<Principal>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path(index): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    bulk(state, principal, peer, Some(index), headers, body).await
}

/// Ids for documents whose action names none. Unique within the process; the receive time
/// in front makes them unique across restarts.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// One item of the answer, before the request is known to be durable.
enum Item {
    /// Stored, or (`new: false`) already stored: an `index` retry with the same document.
    /// `updated`: the id was known, as Elasticsearch answers an overwrite.
    Stored {
        op: OpType,
        index: IndexName,
        id: String,
        updated: bool,
        new: bool,
    },
    Failed {
        op: OpType,
        index: String,
        id: Option<String>,
        status: u16,
        error_type: &'static str,
        reason: String,
    },
}

/// `POST /_bulk` and `POST /{index}/_bulk`. The index of a document is the action's `_index`,
/// else the one in the path, else `logs`: the action's `_index` wins, as in Elasticsearch.
async fn bulk(
    State(state): State<AppState>,
    principal: Principal,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    path_index: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let source = source_of(&peer, "es-bulk");
    let max_line_bytes = state.cfg.max_line_bytes;
    let scope = principal.clone();
    let claims = Claims::new(state.es_ids.clone());
    let claimed = claims.clone();
    let outcome = ingest_body(&state, &principal, "es-bulk", headers, body, Ack::Durable, Held::Body, move |body, _charge| {
        // The actions borrow their documents from the body, which is charged already; the
        // entries made of them are charged by `ingest_body`.
        let items = EsBulk.decode(body, &mut Unbounded)?;
        let received_at = now_ns();
        let mut entries = Entries::new();
        let mut answer = Vec::with_capacity(items.len());
        for item in items {
            let es_index = item
                .index
                .clone()
                .or_else(|| path_index.clone())
                .unwrap_or_else(|| logsift_core::DEFAULT_INDEX.to_string());
            let fail_with = |status, error_type, reason: String| Item::Failed {
                op: item.op,
                index: es_index.clone(),
                id: item.id.clone(),
                status,
                error_type,
                reason,
            };
            let fail = |error_type, reason| fail_with(400, error_type, reason);
            let doc = match (item.op, item.doc) {
                (OpType::Index | OpType::Create, Some(doc)) => doc,
                (op, _) => {
                    answer.push(fail(
                        "illegal_argument_exception",
                        format!(
                            "logsift keeps logs append-only: the [{}] action is not supported; use index or create",
                            op.name()
                        ),
                    ));
                    continue;
                }
            };
            let index = match index_name(&es_index) {
                Ok(index) => index,
                Err(reason) => {
                    answer.push(fail("invalid_index_name_exception", reason));
                    continue;
                }
            };
            // A token scoped to some indexes gets a per-item refusal for the others, as
            // Elasticsearch answers an unauthorized index in a bulk.
            if !scope.may(Role::Ingest, index.as_str()) {
                answer.push(fail_with(
                    403,
                    "security_exception",
                    format!("{} may not write to index [{}]", scope.label(), index.as_str()),
                ));
                continue;
            }
            if doc.len() > max_line_bytes {
                answer.push(fail(
                    "illegal_argument_exception",
                    format!(
                        "document of {} bytes exceeds ingest.max_line_bytes = {max_line_bytes}",
                        doc.len()
                    ),
                ));
                continue;
            }
            if let Err(reason) = check_document(doc) {
                answer.push(fail("document_parsing_exception", reason));
                continue;
            }
            // Checked last, so that only a document that will be stored holds a claim.
            let mut existed = false;
            if let Some(id) = &item.id {
                let key = es_ids::key(index.as_str(), id);
                let op = match item.op {
                    OpType::Create => es_ids::Op::Create,
                    _ => es_ids::Op::Index,
                };
                match claimed.claim(key, es_ids::content(doc), op, received_at) {
                    Claim::Claimed { existed: e } => existed = e,
                    Claim::Exists { same_content } if op == es_ids::Op::Index => {
                        // Only an identical document gets here: the retry of one stored.
                        debug_assert!(same_content);
                        answer.push(Item::Stored {
                            op: item.op,
                            index,
                            id: id.clone(),
                            updated: true,
                            new: false,
                        });
                        continue;
                    }
                    Claim::Exists { .. } => {
                        answer.push(fail_with(
                            409,
                            "version_conflict_engine_exception",
                            format!(
                                "[{id}]: version conflict, document already exists (current version [1])"
                            ),
                        ));
                        continue;
                    }
                    Claim::InFlight => {
                        answer.push(fail_with(
                            429,
                            "es_rejected_execution_exception",
                            format!(
                                "[{id}]: another request in flight is storing this document; retry"
                            ),
                        ));
                        continue;
                    }
                }
            }
            entries.push(&Entry {
                format: Format::Json,
                received_at,
                index: index.as_str(),
                source: &source,
                raw: doc,
            });
            let id = item.id.clone().unwrap_or_else(|| {
                format!(
                    "{:016x}{:06x}",
                    received_at,
                    NEXT_ID.fetch_add(1, Ordering::Relaxed) & 0xff_ffff
                )
            });
            answer.push(Item::Stored {
                op: item.op,
                index,
                id,
                updated: existed,
                new: true,
            });
        }
        Ok(Decoded { entries, answer })
    })
    .await;
    let items = match outcome {
        Ok(ingested) => ingested.answer,
        Err(e) => return es_error(e),
    };
    // The records are durable: their ids now conflict. Failing to write the id file only
    // forgets them (a retry would store duplicates), so it is logged, not answered.
    if let Err(e) = claims.commit(now_ns()) {
        tracing::warn!(error = %e, "cannot record Elasticsearch _ids; create will not detect these duplicates after a restart");
    }
    let metrics = &state.metrics;
    let mut errors = false;
    let items: Vec<Value> = items
        .into_iter()
        .map(|item| match item {
            Item::Stored {
                op,
                index,
                id,
                updated,
                new,
            } => {
                if new {
                    metrics.es_bulk_docs.inc();
                } else {
                    metrics.es_bulk_unchanged.inc();
                }
                // Versions are not kept: an overwrite reports 2 whatever came before.
                let (status, result, version) = if updated {
                    (200, "updated", 2)
                } else {
                    (201, "created", 1)
                };
                json!({ op.name(): {
                    "_index": index.as_str(),
                    "_id": id,
                    "_version": version,
                    "result": result,
                    "_shards": {"total": 1, "successful": 1, "failed": 0},
                    "_seq_no": 0,
                    "_primary_term": 1,
                    "status": status
                }})
            }
            Item::Failed {
                op,
                index,
                id,
                status,
                error_type,
                reason,
            } => {
                errors = true;
                if status == 409 {
                    metrics.es_bulk_conflicts.inc();
                } else {
                    metrics.es_bulk_item_errors.inc();
                }
                json!({ op.name(): {
                    "_index": index,
                    "_id": id,
                    "status": status,
                    "error": {"type": error_type, "reason": reason}
                }})
            }
        })
        .collect();
    Json(json!({
        "took": started.elapsed().as_millis() as u64,
        "errors": errors,
        "items": items,
    }))
    .into_response()
}

/// An error the way Elasticsearch answers one. The project's error codes become exception
/// types the shippers know (429 is `es_rejected_execution_exception`, which they retry).
fn es_error(e: ApiError) -> Response {
    let error_type = match (e.status, e.code) {
        (StatusCode::TOO_MANY_REQUESTS, _) => "es_rejected_execution_exception",
        (StatusCode::PAYLOAD_TOO_LARGE, _) => "content_too_long_exception",
        (_, "bad_body" | "bad_encoding") => "parse_exception",
        (status, code) if status.is_client_error() && code.ends_with("_exception") => code,
        (status, _) if status.is_client_error() => "illegal_argument_exception",
        _ => "logsift_exception",
    };
    if e.status.is_server_error() {
        tracing::error!(code = e.code, message = %e.message, "bulk request failed");
    }
    let body = json!({
        "error": {
            "root_cause": [{"type": error_type, "reason": e.message}],
            "type": error_type,
            "reason": e.message,
        },
        "status": e.status.as_u16(),
    });
    let mut response = (e.status, Json(body)).into_response();
    if let Some(secs) = e.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
