//! The access audit trail: every search, export, tail and admin call becomes a record of the
//! built-in `_audit` index — who (the authenticated principal, else the peer address), what
//! (action, query, range, indexes), when, how many results, and the outcome. It goes through
//! the same WAL and indexer as ingested logs, so it is as durable and as searchable
//! (`index=_audit`), while ingest clients cannot write to it: `_` names are refused on every
//! ingest route. Its retention is set like any index's, under `[indexes._audit]` (the embedded
//! configuration keeps it for 400 days).
//!
//! Anyone who can reach the port can make a refused call, so what a refusal costs the trail
//! is bounded: every text field is kept to [`MAX_TEXT_BYTES`] (with the original length
//! beside it), and refusals of one kind (action and outcome) from one caller (a token, else
//! a peer address without its port) are folded together for [`REFUSAL_WINDOW`]: the first is
//! recorded in full, the rest in one summary record when the window closes (`repeated`, the
//! time range, and a few of their queries). That caps the append rate per caller at two
//! records per window, whatever the request rate.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use logsift_core::entry::Entry;
use logsift_core::time::{format_rfc3339, now_ns};
use logsift_core::Format;
use logsift_ingest::{Ack, Admission, PipelineHandle};
use serde_json::{json, Map, Value};

use crate::metrics::ServerMetrics;
use logsift_identity::Principal;

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

/// Text fields of an audit record (a query, a path, an index list) are kept to this many
/// bytes; the rest is replaced by [`TRUNCATION_MARKER`] and the original length is kept in
/// `<field>_bytes`.
pub const MAX_TEXT_BYTES: usize = 2048;
pub const TRUNCATION_MARKER: &str = "…[truncated]";
/// Refusals of one kind from one caller within this window after the first are folded into
/// one summary record.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(10);
/// Callers whose refusals are being folded at once; past it, refusals of further callers are
/// folded under one key (`who` = "many callers"), so the table stays bounded too.
const MAX_REFUSAL_WINDOWS: usize = 10_000;
/// Distinct queries a summary record keeps as examples.
const SAMPLE_QUERIES: usize = 5;

/// Who, what and how a refusal was refused: what refusals are folded by.
type RefusalKey = (String, String, String);

/// Refusals folded since the first of a window, which was recorded in full.
struct RefusalWindow {
    opened: Instant,
    first_ns: i64,
    last_ns: i64,
    /// Refusals after the first.
    repeated: u64,
    /// The last full caller name (a peer with its port), and the peer.
    who: String,
    peer: Option<SocketAddr>,
    queries: Vec<String>,
    other_queries: u64,
}

/// Where audit records go.
#[derive(Clone)]
pub enum AuditSink {
    /// This process's WAL, into its `_audit` index.
    Wal(PipelineHandle),
    /// A process without a WAL (a searcher): the metastore's audit outbox, which an indexer
    /// takes into its `_audit` index (see [`drain_outbox`]).
    Outbox(Arc<logsift_store::PgMetastore>),
}

/// Writes audit records without making the audited request wait for them.
pub struct Audit {
    sink: AuditSink,
    metrics: Arc<ServerMetrics>,
    runtime: tokio::runtime::Handle,
    refusals: Arc<Mutex<HashMap<RefusalKey, RefusalWindow>>>,
}

impl Audit {
    /// Starts the task that writes a summary record for each refusal window once it closes.
    pub fn new(sink: AuditSink, metrics: Arc<ServerMetrics>) -> Self {
        let audit = Audit {
            sink,
            metrics,
            runtime: tokio::runtime::Handle::current(),
            refusals: Arc::default(),
        };
        let flusher = Audit {
            sink: audit.sink.clone(),
            metrics: audit.metrics.clone(),
            runtime: audit.runtime.clone(),
            refusals: audit.refusals.clone(),
        };
        audit.runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for entry in flusher.closed_windows(false) {
                    flusher.append(entry);
                }
            }
        });
        audit
    }

    /// Writes the summary of every refusal window, closed or not, and waits until they are
    /// queued: at shutdown, so that no folded refusal is lost.
    pub async fn flush(&self) {
        for entry in self.closed_windows(true) {
            self.append_now(entry).await;
        }
    }

    /// Takes the windows that are closed (every one with `all`) and returns the summary
    /// entries of those that folded any refusal.
    fn closed_windows(&self, all: bool) -> Vec<Vec<u8>> {
        let mut windows = self.refusals.lock();
        let closed: Vec<RefusalKey> = windows
            .iter()
            .filter(|(_, w)| all || w.opened.elapsed() >= REFUSAL_WINDOW)
            .map(|(k, _)| k.clone())
            .collect();
        closed
            .into_iter()
            .filter_map(|key| {
                let window = windows.remove(&key)?;
                (window.repeated > 0).then(|| summary(&key, window))
            })
            .collect()
    }

    /// Folds a refusal into its caller's open window: `true` when it was folded (and must not
    /// be recorded on its own), `false` when it opens a window and is to be recorded in full.
    fn fold_refusal(&self, who: &Caller, action: &str, outcome: &str, query: Option<&str>) -> bool {
        let caller = match (&who.principal, who.peer) {
            (Some(p), _) if p.starts_with("token ") => p.clone(),
            (_, Some(peer)) => format!("peer {}", peer.ip()),
            (_, None) => who.name(),
        };
        let mut key = (caller, action.to_string(), outcome.to_string());
        let now = now_ns();
        let mut expired = None;
        {
            let mut windows = self.refusals.lock();
            if !windows.contains_key(&key) && windows.len() >= MAX_REFUSAL_WINDOWS {
                key.0 = "many callers".into();
            }
            match windows.get_mut(&key) {
                Some(w) if w.opened.elapsed() < REFUSAL_WINDOW => {
                    w.repeated += 1;
                    w.last_ns = now;
                    w.who = who.name();
                    w.peer = who.peer;
                    if let Some(q) = query {
                        let q = capped(q).0;
                        if !w.queries.contains(&q) {
                            if w.queries.len() < SAMPLE_QUERIES {
                                w.queries.push(q);
                            } else {
                                w.other_queries += 1;
                            }
                        }
                    }
                    return true;
                }
                _ => {
                    let window = RefusalWindow {
                        opened: Instant::now(),
                        first_ns: now,
                        last_ns: now,
                        repeated: 0,
                        who: who.name(),
                        peer: who.peer,
                        queries: Vec::new(),
                        other_queries: 0,
                    };
                    if let Some(old) = windows.insert(key.clone(), window) {
                        if old.repeated > 0 {
                            expired = Some(summary(&key, old));
                        }
                    }
                }
            }
        }
        if let Some(entry) = expired {
            self.append(entry);
        }
        false
    }

    /// Records one call. `what` holds the call's parameters (query, range, ids); `results` is
    /// how many records it returned or touched. Callable from async and blocking code.
    /// Refusals may be folded into a summary record (see the module documentation).
    pub fn record(&self, who: &Caller, action: &str, what: Value, results: u64, outcome: &str) {
        if outcome.starts_with("refused") {
            let query = what.get("query").and_then(Value::as_str);
            if self.fold_refusal(who, action, outcome, query) {
                self.metrics.audit_refusals_folded.inc();
                return;
            }
        }
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
                match v {
                    Value::Null => {}
                    Value::String(text) => {
                        let (kept, original) = capped(&text);
                        if let Some(bytes) = original {
                            record.insert(format!("{k}_bytes"), json!(bytes));
                        }
                        record.insert(k, json!(kept));
                    }
                    v => {
                        record.insert(k, v);
                    }
                }
            }
        }
        record.insert("results".into(), json!(results));
        record.insert("outcome".into(), json!(outcome));
        record.insert(
            "msg".into(),
            json!(format!("{action} by {}: {outcome}", who.name())),
        );
        self.append(encode(Value::Object(record)));
    }

    /// Queues one encoded entry without waiting for it.
    fn append(&self, entry: Vec<u8>) {
        let sink = self.sink.clone();
        let metrics = self.metrics.clone();
        self.runtime
            .spawn(async move { append_to(&sink, &metrics, entry).await });
    }

    async fn append_now(&self, entry: Vec<u8>) {
        append_to(&self.sink, &self.metrics, entry).await
    }
}

async fn append_to(sink: &AuditSink, metrics: &ServerMetrics, entry: Vec<u8>) {
    let appended = match sink {
        AuditSink::Wal(pipeline) => pipeline
            .append(vec![entry], Ack::Received, Admission::Wait)
            .await
            .map_err(|e| e.to_string()),
        AuditSink::Outbox(metastore) => {
            let metastore = metastore.clone();
            tokio::task::spawn_blocking(move || {
                let e = Entry::decode(&entry).map_err(|e| e.to_string())?;
                let record = String::from_utf8_lossy(e.raw).into_owned();
                metastore
                    .push_audit(&[(e.received_at, record)])
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        }
    };
    match appended {
        Ok(()) => metrics.audit_records.inc(),
        Err(e) => {
            tracing::warn!(error = %e, "an audit record could not be written");
            metrics.audit_dropped.inc()
        }
    };
}

/// Takes the audit records that searchers left in the metastore's outbox into this process's
/// `_audit` index, every second until `shutdown`: each batch is removed from the outbox only
/// once the WAL has it durably. A crash between the two leaves the batch in the outbox, and
/// it is appended again after the restart: the outbox is delivered at least once, so an
/// audit record is never lost but may, after a crash at that instant, appear twice.
pub async fn drain_outbox(
    metastore: Arc<logsift_store::PgMetastore>,
    pipeline: PipelineHandle,
    metrics: Arc<ServerMetrics>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    const BATCH: i64 = 1000;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        loop {
            let m = metastore.clone();
            let pending = tokio::task::spawn_blocking(move || m.pending_audit(BATCH)).await;
            let rows = match pending {
                Ok(Ok(rows)) => rows,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the audit outbox; trying again");
                    break;
                }
                Err(_) => break,
            };
            if rows.is_empty() {
                break;
            }
            let mut entries = Vec::with_capacity(rows.len());
            for (_, received_at, record) in &rows {
                entries.push(
                    Entry {
                        format: Format::Json,
                        received_at: *received_at,
                        index: AUDIT_INDEX,
                        source: "audit",
                        raw: record.as_bytes(),
                    }
                    .encode(),
                );
            }
            if let Err(e) = pipeline
                .append(entries, Ack::Durable, Admission::Wait)
                .await
            {
                tracing::warn!(error = %e, "cannot append the audit outbox's records; trying again");
                break;
            }
            metrics.audit_records.inc_by(rows.len() as u64);
            let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
            let m = metastore.clone();
            match tokio::task::spawn_blocking(move || m.remove_audit(&ids)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot remove appended records from the audit outbox; they will be appended again");
                    break;
                }
                Err(_) => break,
            }
            if (rows.len() as i64) < BATCH {
                break;
            }
        }
    }
}

fn encode(record: Value) -> Vec<u8> {
    let raw = record.to_string();
    Entry {
        format: Format::Json,
        received_at: now_ns(),
        index: AUDIT_INDEX,
        source: "audit",
        raw: raw.as_bytes(),
    }
    .encode()
}

/// `text` kept to [`MAX_TEXT_BYTES`] (cut on a character boundary, marked), with its original
/// length when it was cut.
fn capped(text: &str) -> (String, Option<usize>) {
    if text.len() <= MAX_TEXT_BYTES {
        return (text.to_string(), None);
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (
        format!("{}{TRUNCATION_MARKER}", &text[..end]),
        Some(text.len()),
    )
}

/// The record of the refusals a window folded (all but its first, recorded in full).
fn summary(key: &RefusalKey, w: RefusalWindow) -> Vec<u8> {
    let (caller, action, outcome) = key;
    let mut record = Map::new();
    record.insert("timestamp".into(), json!(format_rfc3339(w.last_ns)));
    record.insert("app".into(), json!("logsift-audit"));
    record.insert("level".into(), json!("warning"));
    record.insert("who".into(), json!(w.who));
    if let Some(peer) = w.peer {
        record.insert("peer".into(), json!(peer.to_string()));
    }
    record.insert("caller".into(), json!(caller));
    record.insert("action".into(), json!(action));
    record.insert("outcome".into(), json!(outcome));
    record.insert("results".into(), json!(0));
    record.insert("repeated".into(), json!(w.repeated));
    record.insert("first".into(), json!(format_rfc3339(w.first_ns)));
    record.insert("last".into(), json!(format_rfc3339(w.last_ns)));
    if !w.queries.is_empty() {
        record.insert("queries".into(), json!(w.queries));
    }
    if w.other_queries > 0 {
        record.insert("other_queries".into(), json!(w.other_queries));
    }
    record.insert(
        "msg".into(),
        json!(format!(
            "{action} by {caller}: {outcome}, {} more times within {} s",
            w.repeated,
            REFUSAL_WINDOW.as_secs()
        )),
    );
    encode(Value::Object(record))
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
        // A share of a search another process fanned out (see `crate::fanout`).
        "search" | "histogram" | "terms" if rest.ends_with("/part") => format!("{first} part"),
        "search" | "histogram" | "terms" | "context" | "patterns" | "compare" | "tail"
        | "indexes" | "segments" | "keys" | "holds" | "delete" => first.to_string(),
        "exports" => "export manifest".to_string(),
        "saved" => "saved searches".to_string(),
        "alerts" if rest.starts_with("alerts/rules") => "alert rules".to_string(),
        "alerts" => "alerts".to_string(),
        _ => return None,
    };
    Some(
        if *method == axum::http::Method::GET || action == "delete" || action.ends_with(" part") {
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
        assert_eq!(
            action_of(&Method::DELETE, "/api/v1/alerts/rules/x").as_deref(),
            Some("alert rules delete")
        );
        assert_eq!(
            action_of(&Method::POST, "/api/v1/saved").as_deref(),
            Some("saved searches post")
        );
        assert_eq!(action_of(&Method::POST, "/api/v1/export"), None);
        assert_eq!(action_of(&Method::GET, "/health/ready"), None);
    }
}
