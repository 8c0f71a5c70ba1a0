//! The HTTP API (axum): ingest, search, indexes, health and metrics.
//!
//! Handlers only translate between HTTP and the library crates: CPU work (decompressing and
//! splitting bodies, searching) runs on the blocking pool, never on a tokio worker.

mod error;
mod ingest;
mod search;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use logsift_ingest::{Metrics, PipelineHandle};
use logsift_store::Store;
use serde_json::json;

pub use error::ApiError;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, after decompression.
    pub max_body_bytes: usize,
    pub max_line_bytes: usize,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub pipeline: PipelineHandle,
    pub metrics: Arc<Metrics>,
    pub cfg: Arc<ServerConfig>,
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.cfg.max_body_bytes;
    Router::new()
        .route("/api/v1/{index}/ingest", post(ingest::ingest))
        .route("/api/v1/search", get(search::search))
        .route("/api/v1/indexes", get(indexes))
        .route(
            "/health/live",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::not_found("no such endpoint; see /api/v1/search and /api/v1/{index}/ingest")
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    // The HTTP listener starts only after WAL replay, so answering at all means ready.
    let indexes: Vec<_> = state
        .store
        .list()
        .iter()
        .map(|h| h.name().to_string())
        .collect();
    Json(json!({"status": "ready", "indexes": indexes}))
}

async fn indexes(State(state): State<AppState>) -> impl IntoResponse {
    let list: Vec<_> = state
        .store
        .list()
        .iter()
        .map(|h| {
            let searcher = h.searcher();
            json!({
                "name": h.name().as_str(),
                "docs": searcher.num_docs(),
                "segments": searcher.segment_readers().len(),
                "committed_lsn": h.committed_lsn(),
            })
        })
        .collect();
    Json(json!({"indexes": list}))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::with_capacity(4096);
    state.metrics.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
