//! The HTTP API (axum): ingest, search, indexes, health and metrics, and the ingest APIs of
//! Elasticsearch (`/_bulk`), Loki (`/loki/api/v1/push`) and OTLP (`/v1/logs`) so that
//! existing shippers work unchanged.
//!
//! Handlers only translate between HTTP and the library crates: CPU work (decompressing and
//! splitting bodies, searching) runs on the blocking pool, never on a tokio worker.

mod aggs;
pub mod alerts;
pub mod audit;
pub mod auth;
mod browser;
mod compat;
mod delete;
mod error;
mod es;
pub mod export;
pub mod fanout;
mod grpc;
mod holds;
mod ingest;
mod loki;
pub mod metrics;
mod otlp;
mod persist;
pub mod saved;
mod search;
mod serve;
mod tail;
mod ui;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use logsift_ingest::{PipelineHandle, StartReport};
use logsift_store::Store;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use serde_json::json;

pub use auth::{Auth, AuthConfig};
pub use error::ApiError;
pub use metrics::ServerMetrics;
pub use serve::{serve_http, HttpLimits, Protocol};
// Handlers name these often; they live in `logsift-identity`.
pub use logsift_identity::{Principal, Role, Who};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, after decompression.
    pub max_body_bytes: usize,
    pub max_line_bytes: usize,
    /// A query running longer stops; it answers what it searched completely by then
    /// (`partial`), or 408 if that is nothing.
    pub query_timeout_ms: u64,
    /// Queries (search, histogram, terms, context) running at once; more are answered 429.
    pub max_concurrent_queries: usize,
    /// Distinct values a terms query counts before its answer becomes approximate.
    pub terms_max_values: usize,
    /// Open tail streams; more are answered 429.
    pub max_tail_clients: usize,
    /// Exports streaming at once; more are answered 429.
    pub max_concurrent_exports: usize,
    /// Cancelled when the server shuts down: long-lived answers (`/api/v1/tail`) end then.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The longest an ingest body may take to arrive (a slow upload answers 408).
    pub body_read_timeout_ms: u64,
    /// How long an ingest request waits for room in a full in-flight budget before it is
    /// answered 429 (0: at once).
    pub admission_wait_ms: u64,
    /// Base URLs of searchers that share this process's searches (`[node] searchers`);
    /// empty: it searches alone.
    pub searchers: Vec<String>,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    /// The way into the WAL; `None` in a searcher (`--role searcher`), which has none and
    /// answers every route that writes with 421.
    pub pipeline: Option<PipelineHandle>,
    pub metrics: Arc<ServerMetrics>,
    /// Every metric set (ingest's, the server's, alerting's), encoded at `/metrics`.
    pub registry: Arc<Registry>,
    pub cfg: Arc<ServerConfig>,
    /// What start-up found in the WAL, for `/health/ready`.
    pub start: Arc<StartReport>,
    pub exports: Arc<export::ExportState>,
    pub audit: Arc<audit::Audit>,
    pub auth: Arc<Auth>,
    /// Elasticsearch `_id`s stored recently, for `create` conflicts.
    pub es_ids: Arc<logsift_compat::es_ids::IdWindow>,
    /// Alert rules, their state and delivery.
    pub alerts: Arc<alerts::Alerts>,
    pub saved: Arc<saved::SavedSearches>,
    /// Connections to the searchers (see [`fanout`]).
    pub searcher_client: reqwest::Client,
}

/// The routes, each behind what it needs: the UI page and `/health/*` are open; the rest
/// needs a token with the route's role once tokens exist (see [`auth`]). Handlers find the
/// caller as `Extension<Principal>` and check index scopes themselves.
pub fn router(state: AppState) -> Router {
    let body_limit = state.cfg.max_body_bytes;
    let auth = state.auth.clone();
    let role = |r: Role| from_fn_with_state(r, auth::require_role);
    // A searcher has no WAL: no records, and no export (it would miss the indexers' hot tiers),
    // holds or erasure (they change what indexers keep).
    let with_wal = || from_fn_with_state(state.clone(), needs_wal);
    let ingest = Router::new()
        .route("/api/v1/{index}/ingest", post(ingest::ingest))
        .route("/loki/api/v1/push", post(loki::push))
        .route("/v1/logs", post(otlp::logs))
        .route(grpc::EXPORT_PATH, post(grpc::export))
        .merge(es::routes())
        .route_layer(with_wal())
        .route_layer(role(Role::Ingest));
    let read = Router::new()
        .route("/api/v1/search", get(search::search))
        .route("/api/v1/search/part", post(search::search_part))
        .route("/api/v1/histogram", get(aggs::histogram))
        .route("/api/v1/histogram/part", post(aggs::histogram_part))
        .route("/api/v1/terms", get(aggs::terms))
        .route("/api/v1/terms/part", post(aggs::terms_part))
        .route("/api/v1/context", get(aggs::context))
        .route("/api/v1/patterns", get(aggs::patterns))
        .route("/api/v1/compare", get(aggs::compare))
        .route("/api/v1/tail", get(tail::tail))
        .route("/api/v1/indexes", get(indexes))
        .route("/api/v1/segments", get(segments))
        .route("/api/v1/saved", get(saved::list).post(saved::save))
        .route(
            "/api/v1/saved/{name}",
            get(saved::get).delete(saved::delete),
        )
        .route("/api/v1/alerts", get(alerts::list_alerts))
        // Changing rules needs admin (checked in the handlers): a rule's query runs over
        // every index, whatever its author's scope.
        .route(
            "/api/v1/alerts/rules",
            get(alerts::list_rules).post(alerts::put_rule),
        )
        .route(
            "/api/v1/alerts/rules/{name}",
            axum::routing::delete(alerts::delete_rule),
        )
        .route_layer(role(Role::Search));
    let exports = Router::new()
        .route("/api/v1/export", post(export::start_export))
        .route("/api/v1/exports/{id}/manifest", get(export::manifest))
        .route_layer(with_wal())
        .route_layer(role(Role::Export));
    let admin = Router::new()
        .route("/api/v1/holds", get(holds::list).post(holds::place))
        .route("/api/v1/holds/{id}", axum::routing::delete(holds::release))
        .route("/api/v1/delete", post(delete::delete))
        .route_layer(with_wal())
        .route_layer(role(Role::Admin));
    // `/` is the UI for browsers and cluster info for Elasticsearch clients (see `es::root`).
    let mut open = Router::new()
        .route("/", get(es::root).head(es::head))
        .route("/ui/{file}", get(ui::asset))
        .route("/api/v1/keys", get(export::keys))
        .route(
            "/health/live",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route("/health/ready", get(ready));
    let mut protected = ingest.merge(read).merge(exports).merge(admin);
    if auth.config().metrics_public {
        open = open.route("/metrics", get(metrics));
    } else {
        protected = protected.merge(
            Router::new()
                .route("/metrics", get(metrics))
                .route_layer(role(Role::Admin)),
        );
    }
    let allowed_hosts = Arc::new(browser::AllowedHosts::new(&auth.config().allowed_hosts));
    let protected = protected.route_layer(from_fn_with_state(auth.clone(), auth::authenticate));
    open.merge(protected)
        .fallback(|| async {
            ApiError::not_found("no such endpoint; see /api/v1/search and /api/v1/{index}/ingest")
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::layer,
        ))
        // Outside the audit layer: a page that makes a browser knock changes nothing, and its
        // knocks, counted in metrics, must not fill the trail.
        .layer(from_fn_with_state((auth, allowed_hosts), browser::guard))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(nosniff))
        .layer(Extension(search::QueryLimits::new(
            &state.cfg,
            state.metrics.clone(),
        )))
        .with_state(state)
}

/// JSON and event streams must never be sniffed into something a browser would run.
async fn nosniff(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// Ready means searches are served (the HTTP listener starts only after WAL replay). While
/// ingest is refused (disk full or failing) the answer stays 200 for search traffic but says
/// so with `"ingest": "refusing"`, so that whoever balances ingest can route around it.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let indexes: Vec<_> = state
        .store
        .list()
        .iter()
        .map(|h| h.name().to_string())
        .collect();
    let start = &state.start;
    let refusing = state.pipeline.as_ref().is_some_and(|p| p.is_refusing());
    let ingest = match (&state.pipeline, refusing) {
        (None, _) => "none",
        (Some(_), true) => "refusing",
        (Some(_), false) => "accepting",
    };
    // Damage found in the WAL at start: replay kept every valid entry, but some acknowledged
    // ones may be lost, and an operator must look at the files set aside.
    let wal = if start.damaged_files.is_empty() {
        "ok"
    } else {
        "damaged"
    };
    if state.auth.enabled() {
        // Open to load balancers without a token: say whether we serve, not what we hold.
        return Json(json!({
            "status": "ready",
            "ingest": ingest,
            "wal": wal,
        }));
    }
    Json(json!({
        "status": "ready",
        "ingest": ingest,
        "wal": wal,
        "indexes": indexes,
        "quarantined_segments": state.store.list().iter().flat_map(|h| {
            let name = h.name().to_string();
            h.quarantined().into_iter().map(move |(id, why)| json!({"index": name, "segment": id, "reason": why}))
        }).collect::<Vec<_>>(),
        "broken_catalog_chains": state.store.list().iter().flat_map(|h| {
            let name = h.name().to_string();
            h.chain_problems().iter().map(move |p| json!({"index": name, "problem": p})).collect::<Vec<_>>()
        }).collect::<Vec<_>>(),
        "wal_replay": {
            "files": start.wal_files,
            "entries": start.wal_entries,
            "replayed": start.replayed,
            "torn_bytes": start.torn_bytes,
            "damaged_files": start.damaged_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "skipped_ranges": start.skipped_ranges,
            "skipped_bytes": start.skipped_bytes,
            "unreadable_entries": start.unreadable_entries,
        },
    }))
}

/// The indexes `principal` may read, the ones that hold users' logs first, then the built-in
/// ones (`_audit`).
fn readable_indexes(store: &Store, principal: &Principal) -> Vec<Arc<logsift_store::IndexHandle>> {
    let mut list = store.list();
    list.retain(|h| principal.may(Role::Search, h.name().as_str()));
    list.sort_by_key(|h| (h.name().is_builtin(), h.name().to_string()));
    list
}

/// `{"indexes": [...]}`: `describe` of each index `principal` may read.
fn per_index(
    state: &AppState,
    principal: &Principal,
    describe: impl Fn(&logsift_store::IndexHandle) -> serde_json::Value,
) -> Json<serde_json::Value> {
    let list: Vec<serde_json::Value> = readable_indexes(&state.store, principal)
        .iter()
        .map(|h| describe(h))
        .collect();
    Json(json!({ "indexes": list }))
}

async fn indexes(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> impl IntoResponse {
    per_index(&state, &principal, |h| {
        json!({
            "name": h.name().as_str(),
            "docs": h.num_docs(),
            "sealed_segments": h.segments().len(),
            "quarantined_segments": h.quarantined().len(),
            "committed_lsn": h.committed_lsn(),
            "catalog_head": h.catalog_head(),
        })
    })
}

/// The sealed segments of every index, as their catalogs list them, plus quarantined ones.
async fn segments(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> impl IntoResponse {
    per_index(&state, &principal, |h| {
        let quarantined: Vec<serde_json::Value> = h
            .quarantined()
            .into_iter()
            .map(|(id, why)| json!({"segment": id, "reason": why}))
            .collect();
        // How each served segment lays out its records: record segments of a `blocks`
        // server are rewritten as blocks once it is quiet.
        let layouts: std::collections::HashMap<String, &str> = h
            .sealed_parts(None, None)
            .into_iter()
            .map(|(entry, part)| {
                let layout = match part {
                    logsift_store::PartReader::Records(_) => "records",
                    logsift_store::PartReader::Blocks(_) => "blocks",
                };
                (entry.segment, layout)
            })
            .collect();
        let segments: Vec<serde_json::Value> = h
            .segments()
            .into_iter()
            .map(|entry| {
                let layout = layouts.get(&entry.segment).copied();
                let mut v = serde_json::to_value(entry).unwrap_or_default();
                if let (Some(layout), Some(map)) = (layout, v.as_object_mut()) {
                    map.insert("layout".into(), json!(layout));
                }
                v
            })
            .collect();
        json!({
            "index": h.name().as_str(),
            "catalog_head": h.catalog_head(),
            "segments": segments,
            "quarantined": quarantined,
        })
    })
}

/// 421 from routes that write, in a process without a WAL (a searcher).
async fn needs_wal(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if state.pipeline.is_none() {
        return ApiError::not_here().into_response();
    }
    next.run(request).await
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Some(pipeline) = &state.pipeline {
        pipeline.refresh_metrics();
    }
    state.alerts.refresh_metrics();
    let mut out = String::with_capacity(16 << 10);
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &state.registry);
    ([(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], out)
}
