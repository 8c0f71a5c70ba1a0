//! Who is calling, and what they may do.
//!
//! Authentication is on as soon as the tokens file holds a token (a revoked one counts: revoking
//! the last token must not open the server). Every request to a protected route then needs
//! `Authorization: Bearer <token>`, or Basic with the token as password (or as user name with
//! an empty password) for shippers that only speak Basic. Each request carries a [`Principal`]
//! as a request extension, also when authentication is off (then it names the peer), so that
//! handlers and the audit trail can say who did what.
//!
//! The server re-reads the tokens file when it changes (checked at most every
//! [`RELOAD_CHECK`]), so `logsift tokens create|revoke` take effect without a restart. A file
//! that becomes unreadable or damaged keeps the last good set in force (fail closed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::metrics::ServerMetrics;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::tokens::{hash_token, Role, TokenError, TokenRecord, Tokens};
use crate::ApiError;

/// How often a request may trigger a look at the tokens file's metadata.
pub const RELOAD_CHECK: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub tokens_file: PathBuf,
    /// `/metrics` without a token even when authentication is on.
    pub metrics_public: bool,
    /// Ingest bytes per second per token (0: no limit), unless the token says otherwise.
    pub token_ingest_bytes_per_sec: u64,
    /// Host names served while authentication is off, besides IP literals and localhost
    /// (see [`crate::browser`]).
    pub allowed_hosts: Vec<String>,
}

/// Identifies a version of the tokens file: a rename over it changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        ino,
    })
}

#[derive(Default)]
struct Loaded {
    stamp: Option<Stamp>,
    by_hash: HashMap<[u8; 32], Arc<TokenRecord>>,
    /// Tokens in the file, revoked ones included.
    count: usize,
}

impl Loaded {
    fn from(tokens: Tokens, stamp: Option<Stamp>) -> Loaded {
        let count = tokens.tokens.len();
        let by_hash = tokens
            .tokens
            .into_iter()
            .filter_map(|t| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&t.sha256, &mut hash).ok()?;
                Some((hash, Arc::new(t)))
            })
            .collect();
        Loaded {
            stamp,
            by_hash,
            count,
        }
    }
}

/// A token's ingest allowance: it may go into debt by one request, and is refused while in
/// debt, so a body larger than a second's worth still gets through, then waits its turn.
struct Bucket {
    balance: f64,
    last: Instant,
}

pub struct Auth {
    cfg: AuthConfig,
    loaded: RwLock<Arc<Loaded>>,
    last_check: Mutex<Instant>,
    buckets: Mutex<HashMap<String, Bucket>>,
    pub(crate) metrics: Arc<ServerMetrics>,
}

impl Auth {
    /// Loads the tokens file; a damaged file is an error, so a server never starts open by
    /// mistake.
    pub fn open(cfg: AuthConfig, metrics: Arc<ServerMetrics>) -> Result<Auth, TokenError> {
        let st = stamp(&cfg.tokens_file);
        let tokens = Tokens::load(&cfg.tokens_file)?;
        Ok(Auth {
            loaded: RwLock::new(Arc::new(Loaded::from(tokens, st))),
            cfg,
            last_check: Mutex::new(Instant::now()),
            buckets: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    pub fn config(&self) -> &AuthConfig {
        &self.cfg
    }

    /// Whether requests need a token (after looking for changes to the tokens file).
    pub fn enabled(&self) -> bool {
        self.current().count > 0
    }

    fn current(&self) -> Arc<Loaded> {
        self.refresh();
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn refresh(&self) {
        {
            let mut last = self.last_check.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < RELOAD_CHECK {
                return;
            }
            *last = Instant::now();
        }
        let path = &self.cfg.tokens_file;
        let now = stamp(path);
        let old = self
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if now == old.stamp {
            return;
        }
        if now.is_none() && old.count > 0 {
            tracing::error!(path = %path.display(), tokens = old.count,
                "tokens file is gone; keeping the tokens last loaded (restart to turn authentication off)");
            return;
        }
        match Tokens::load(path) {
            Ok(tokens) => {
                tracing::info!(path = %path.display(), tokens = tokens.tokens.len(), "tokens file reloaded");
                *self.loaded.write().unwrap_or_else(|p| p.into_inner()) =
                    Arc::new(Loaded::from(tokens, now));
            }
            Err(e) => {
                tracing::error!(error = %e, "keeping the tokens last loaded");
            }
        }
    }

    /// The principal for a request's headers: `Ok` with the token's access, or 401.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<Principal, ApiError> {
        let loaded = self.current();
        if loaded.count == 0 {
            return Ok(Principal::anonymous(peer));
        }
        let Some(token) = presented_token(headers) else {
            self.metrics.auth_failures.inc();
            return Err(unauthorized(
                "this endpoint needs a token: Authorization: Bearer <token>",
            ));
        };
        match loaded.by_hash.get(&hash_token(&token)) {
            Some(record) if !record.is_revoked() => Ok(Principal {
                who: Who::Token {
                    id: record.id.clone(),
                    name: record.name.clone(),
                },
                peer,
                access: Access::Token(record.clone()),
            }),
            Some(record) => {
                self.metrics.auth_failures.inc();
                tracing::info!(token = %record.id, ?peer, "revoked token refused");
                Err(unauthorized("this token has been revoked"))
            }
            None => {
                self.metrics.auth_failures.inc();
                Err(unauthorized("unknown token"))
            }
        }
    }

    /// Admits an ingest request of `bytes` for `principal` under its rate limit, or answers
    /// 429 with the seconds until the token is out of debt.
    pub fn admit_ingest(&self, principal: &Principal, bytes: usize) -> Result<(), ApiError> {
        let Access::Token(record) = &principal.access else {
            return Ok(());
        };
        let rate = record
            .ingest_bytes_per_sec
            .unwrap_or(self.cfg.token_ingest_bytes_per_sec);
        if rate == 0 {
            return Ok(());
        }
        let rate = rate as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let b = buckets.entry(record.id.clone()).or_insert(Bucket {
            balance: rate,
            last: now,
        });
        b.balance = (b.balance + now.duration_since(b.last).as_secs_f64() * rate).min(rate);
        b.last = now;
        if b.balance < 0.0 {
            self.metrics.http_rate_limited.inc();
            let wait = (-b.balance / rate).ceil().max(1.0) as u64;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "token {} is over its ingest rate of {} bytes/s; retry in {wait} s",
                    record.id, rate as u64
                ),
            )
            .retry_after(wait));
        }
        b.balance -= bytes as f64;
        Ok(())
    }

    /// Charges bytes learnt only after reading (a body without Content-Length).
    pub fn charge_ingest(&self, principal: &Principal, bytes: usize) {
        if let Access::Token(record) = &principal.access {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(b) = buckets.get_mut(&record.id) {
                b.balance -= bytes as f64;
            }
        }
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).challenge()
}

/// The token in `Authorization`: Bearer, or Basic with the token as password (or user).
fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':').unwrap_or((&text, ""));
        let token = if password.is_empty() { user } else { password };
        return (!token.is_empty()).then(|| token.to_string());
    }
    None
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Token {
        id: String,
        name: String,
    },
    /// Authentication is off (no tokens configured).
    Anonymous,
}

#[derive(Debug, Clone)]
enum Access {
    Everything,
    Token(Arc<TokenRecord>),
}

/// The authenticated caller of a request, available to every handler behind authentication
/// as `Extension<Principal>`.
#[derive(Debug, Clone)]
pub struct Principal {
    pub who: Who,
    pub peer: Option<SocketAddr>,
    access: Access,
}

impl Principal {
    pub fn anonymous(peer: Option<SocketAddr>) -> Principal {
        Principal {
            who: Who::Anonymous,
            peer,
            access: Access::Everything,
        }
    }

    /// For logs and the audit trail: `token 0a1b2c3d4e5f (ci-shipper)` or
    /// `anonymous 127.0.0.1:50312`.
    pub fn label(&self) -> String {
        let peer = self.peer.map(|p| p.to_string()).unwrap_or_default();
        match &self.who {
            Who::Token { id, name } => format!("token {id} ({name})"),
            Who::Anonymous => format!("anonymous {peer}").trim_end().to_string(),
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        match &self.access {
            Access::Everything => true,
            Access::Token(t) => t.roles.contains(&role) || t.roles.contains(&Role::Admin),
        }
    }

    /// Whether the principal may use `index` in `role`.
    pub fn may(&self, role: Role, index: &str) -> bool {
        self.has_role(role)
            && match &self.access {
                Access::Everything => true,
                Access::Token(t) => t
                    .indexes
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|i| i == index)),
            }
    }

    fn forbidden(&self, what: String) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{} may not {what}", self.label()),
        )
    }

    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(self.forbidden(format!("do this: it needs the {role} role")))
        }
    }

    pub fn require_index(&self, role: Role, index: &str) -> Result<(), ApiError> {
        self.require(role)?;
        if self.may(role, index) {
            Ok(())
        } else {
            Err(self.forbidden(format!("use index {index:?} ({role})")))
        }
    }

    /// The indexes a read may cover. Named ones must all be in scope (else 403); none named
    /// means every index the principal may read that `exists`.
    pub fn read_scope(
        &self,
        requested: Vec<String>,
        exists: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, ApiError> {
        self.require(Role::Search)?;
        let allowed = match &self.access {
            Access::Token(t) if !t.roles.contains(&Role::Admin) => t.indexes.clone(),
            _ => None,
        };
        let Some(allowed) = allowed else {
            return Ok(requested);
        };
        if !requested.is_empty() {
            for i in &requested {
                if !allowed.contains(i) {
                    return Err(self.forbidden(format!("read index {i:?}")));
                }
            }
            return Ok(requested);
        }
        let present: Vec<String> = allowed.iter().filter(|i| exists(i)).cloned().collect();
        if present.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_index",
                format!(
                    "none of the indexes {} may read exists yet ({})",
                    self.label(),
                    allowed.join(", ")
                ),
            ));
        }
        Ok(present)
    }
}

/// Middleware: resolves the principal (401 when a token is needed and missing or wrong).
pub async fn authenticate(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match auth.authenticate(req.headers(), peer) {
        Ok(principal) => {
            req.extensions_mut().insert(principal.clone());
            let mut response = next.run(req).await;
            // For the audit layer outside: who was answered.
            response.extensions_mut().insert(principal);
            response
        }
        Err(e) => e.into_response(),
    }
}

/// Middleware behind [`authenticate`]: 403 unless the principal has `role`.
pub async fn require_role(State(role): State<Role>, req: Request, next: Next) -> Response {
    let allowed = req.extensions().get::<Principal>().map(|p| p.require(role));
    match allowed {
        Some(Ok(())) => next.run(req).await,
        Some(Err(e)) => e.into_response(),
        None => ApiError::internal("route has no authentication layer").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn bearer_and_basic_carry_the_token() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            presented_token(&headers("Bearer abc")).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers("bearer  abc ")).as_deref(),
            Some("abc")
        );
        let basic = format!("Basic {}", b64("shipper:abc"));
        assert_eq!(presented_token(&headers(&basic)).as_deref(), Some("abc"));
        let user_only = format!("Basic {}", b64("abc:"));
        assert_eq!(
            presented_token(&headers(&user_only)).as_deref(),
            Some("abc")
        );
        assert_eq!(presented_token(&headers("Basic !!!")), None);
        assert_eq!(presented_token(&headers("Digest abc")), None);
        assert_eq!(presented_token(&headers("Bearer ")), None);
    }

    #[test]
    fn rate_limit_lets_one_request_into_debt_then_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let mut tokens = Tokens::default();
        tokens
            .create(crate::tokens::NewToken {
                roles: vec![Role::Ingest],
                ingest_bytes_per_sec: Some(1000),
                ..Default::default()
            })
            .unwrap();
        tokens.save(&path).unwrap();
        let auth = Auth::open(
            AuthConfig {
                tokens_file: path,
                metrics_public: false,
                token_ingest_bytes_per_sec: 0,
                allowed_hosts: Vec::new(),
            },
            Arc::new(ServerMetrics::default()),
        )
        .unwrap();
        let record = auth.current().by_hash.values().next().unwrap().clone();
        let p = Principal {
            who: Who::Anonymous,
            peer: None,
            access: Access::Token(record),
        };
        auth.admit_ingest(&p, 5000).unwrap();
        let err = auth.admit_ingest(&p, 10).unwrap_err();
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert!((4..=5).contains(&err.retry_after.unwrap()), "{err:?}");
        // Anonymous principals (authentication off) are never limited.
        auth.admit_ingest(&Principal::anonymous(None), usize::MAX)
            .unwrap();
    }
}
