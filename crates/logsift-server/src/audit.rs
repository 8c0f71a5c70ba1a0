//! The access audit trail: every search, export, tail and admin call becomes a record of the
//! built-in `_audit` index — who (the authenticated principal, else the peer address), what
//! (action, query, range, indexes), when, how many results, and the outcome. It goes through
//! the same WAL and indexer as ingested logs, so it is as durable and as searchable
//! (`index=_audit`), while ingest clients cannot write to it: `_` names are refused on every
//! ingest route. Its retention is set like any index's, under `[indexes._audit]`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use logsift_core::entry::Entry;
use logsift_core::time::{format_rfc3339, now_ns};
use logsift_core::Format;
use logsift_ingest::{Ack, Admission, Metrics, PipelineHandle};
use serde_json::{json, Map, Value};

use crate::auth::Principal;

/// The index audit records go to.
pub const AUDIT_INDEX: &str = "_audit";

/// The caller of a request, for the audit trail: the authenticated principal's label (a
/// token's id and name, or "anonymous" with the peer when auth is off), else the peer.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Option<String>,
    pub peer: Option<SocketAddr>,
}

impl Caller {
    pub fn name(&self) -> String {
        match (&self.principal, self.peer) {
            (Some(p), _) => p.clone(),
            (None, Some(peer)) => format!("peer {peer}"),
            (None, None) => "unknown".into(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            principal: parts.extensions.get::<Principal>().map(Principal::label),
            peer: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        })
    }
}

/// Writes audit records without making the audited request wait for them.
pub struct Audit {
    pipeline: PipelineHandle,
    metrics: Arc<Metrics>,
    runtime: tokio::runtime::Handle,
}

impl Audit {
    pub fn new(pipeline: PipelineHandle, metrics: Arc<Metrics>) -> Self {
        Audit {
            pipeline,
            metrics,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Records one call. `what` holds the call's parameters (query, range, ids); `results` is
    /// how many records it returned or touched. Callable from async and blocking code.
    pub fn record(&self, who: &Caller, action: &str, what: Value, results: u64, outcome: &str) {
        let mut record = Map::new();
        record.insert("timestamp".into(), json!(format_rfc3339(now_ns())));
        record.insert("app".into(), json!("logsift-audit"));
        record.insert(
            "level".into(),
            json!(if outcome == "ok" { "info" } else { "warning" }),
        );
        record.insert("who".into(), json!(who.name()));
        if let Some(peer) = who.peer {
            record.insert("peer".into(), json!(peer.to_string()));
        }
        record.insert("action".into(), json!(action));
        if let Value::Object(fields) = what {
            for (k, v) in fields {
                if !v.is_null() {
                    record.insert(k, v);
                }
            }
        }
        record.insert("results".into(), json!(results));
        record.insert("outcome".into(), json!(outcome));
        record.insert(
            "msg".into(),
            json!(format!("{action} by {}: {outcome}", who.name())),
        );
        let raw = Value::Object(record).to_string();
        let entry = Entry {
            format: Format::Json,
            received_at: now_ns(),
            index: AUDIT_INDEX,
            source: "audit",
            raw: raw.as_bytes(),
        }
        .encode();
        let pipeline = self.pipeline.clone();
        let metrics = self.metrics.clone();
        self.runtime.spawn(async move {
            match pipeline
                .append(vec![entry], Ack::Received, Admission::Wait)
                .await
            {
                Ok(()) => metrics.audit_records.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(error = %e, "an audit record could not be written");
                    metrics.audit_dropped.fetch_add(1, Ordering::Relaxed)
                }
            };
        });
    }
}

/// How many records an answer returned, for the audit trail (set by handlers that know).
#[derive(Debug, Clone, Copy)]
pub struct AuditResults(pub u64);

/// What a call did, for calls whose parameters are in their body (the layer sees only URLs).
#[derive(Debug, Clone)]
pub struct AuditDetails(pub Value);

/// Adds `details` to what the audit layer records about `response`.
pub fn with_details(mut response: Response, details: Value) -> Response {
    response.extensions_mut().insert(AuditDetails(details));
    response
}

/// `body` as a response that tells the audit layer how many results it holds.
pub fn audited(body: impl IntoResponse, results: u64) -> Response {
    let mut response = body.into_response();
    response.extensions_mut().insert(AuditResults(results));
    response
}

/// Which calls are recorded, by path: what an auditor asks about (who looked at what, who
/// changed holds or erased data). Ingest is not an access, and exports record themselves
/// when they end (their result is known only then).
fn action_of(method: &axum::http::Method, path: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/v1/")?;
    let first = rest.split('/').next().unwrap_or("");
    let action = match first {
        "search" | "histogram" | "terms" | "context" | "tail" | "indexes" | "segments" | "keys"
        | "holds" | "delete" => first.to_string(),
        "exports" => "export manifest".to_string(),
        _ => return None,
    };
    Some(
        if *method == axum::http::Method::GET || action == "delete" {
            action
        } else {
            format!("{action} {}", method.as_str().to_ascii_lowercase())
        },
    )
}

/// The audit layer: records each audited call once it is answered.
pub async fn layer(State(state): State<crate::AppState>, request: Request, next: Next) -> Response {
    let Some(action) = action_of(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let mut what = Map::new();
    what.insert("path".into(), json!(request.uri().path()));
    for (k, v) in url_params(request.uri().query().unwrap_or("")) {
        // The parameters that say what was looked at; cursors and sizes are noise.
        if matches!(k.as_str(), "q" | "index" | "start" | "end" | "id" | "field") {
            what.insert(if k == "q" { "query".into() } else { k }, json!(v));
        }
    }
    let response = next.run(request).await;
    // Authentication runs inside this layer and hands its principal back on the response.
    let who = Caller {
        principal: response
            .extensions()
            .get::<Principal>()
            .map(Principal::label),
        peer,
    };
    let status = response.status();
    let results = response
        .extensions()
        .get::<AuditResults>()
        .map_or(0, |r| r.0);
    if let Some(AuditDetails(Value::Object(details))) = response.extensions().get::<AuditDetails>()
    {
        for (k, v) in details {
            if !v.is_null() {
                what.insert(k.clone(), v.clone());
            }
        }
    }
    let outcome = if status.is_success() {
        "ok".to_string()
    } else {
        format!("refused: {status}")
    };
    state
        .audit
        .record(&who, &action, Value::Object(what), results, &outcome);
    response
}

/// Decoded `key=value` pairs of a query string.
fn url_params(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let escaped = (bytes[i] == b'%')
                .then(|| bytes.get(i + 1..i + 3))
                .flatten()
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], escaped) {
                (_, Some(b)) => {
                    out.push(b);
                    i += 3;
                }
                (b'+', None) => {
                    out.push(b' ');
                    i += 1;
                }
                (b, None) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            url_params("q=host%3Aweb-01+AND+%22disk%20full%22&start=now-1h&x"),
            vec![
                ("q".to_string(), "host:web-01 AND \"disk full\"".to_string()),
                ("start".to_string(), "now-1h".to_string()),
                ("x".to_string(), String::new()),
            ]
        );
        assert_eq!(url_params("q=100%")[0].1, "100%");
        assert_eq!(url_params("q=%zz%4")[0].1, "%zz%4");
    }

    #[test]
    fn only_accesses_and_admin_calls_are_audited() {
        use axum::http::Method;
        assert_eq!(
            action_of(&Method::GET, "/api/v1/search").as_deref(),
            Some("search")
        );
        assert_eq!(
            action_of(&Method::POST, "/api/v1/holds").as_deref(),
            Some("holds post")
        );
        assert_eq!(action_of(&Method::POST, "/api/v1/logs/ingest"), None);
        assert_eq!(action_of(&Method::POST, "/api/v1/export"), None);
        assert_eq!(action_of(&Method::GET, "/health/ready"), None);
    }
}
