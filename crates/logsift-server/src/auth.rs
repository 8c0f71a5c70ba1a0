//! The HTTP side of who is calling: the middleware that turns a request's `Authorization`
//! into a [`Principal`] (checked by `logsift-identity`), and the status codes, headers and
//! metrics of refusals. Each request carries a [`Principal`] as a request extension, also when
//! authentication is off (then it names the peer), so that handlers and the audit trail can
//! say who did what.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::metrics::ServerMetrics;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use logsift_identity::{
    Authenticator, Denied, IngestLimiter, Principal, Refusal, Role, TokenError,
};

use crate::ApiError;

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

pub struct Auth {
    cfg: AuthConfig,
    tokens: Authenticator,
    limiter: IngestLimiter,
    pub(crate) metrics: Arc<ServerMetrics>,
}

impl Auth {
    /// Loads the tokens file; a damaged file is an error, so a server never starts open by
    /// mistake.
    pub fn open(cfg: AuthConfig, metrics: Arc<ServerMetrics>) -> Result<Auth, TokenError> {
        Ok(Auth {
            tokens: Authenticator::open(cfg.tokens_file.clone())?,
            limiter: IngestLimiter::new(cfg.token_ingest_bytes_per_sec),
            cfg,
            metrics,
        })
    }

    pub fn config(&self) -> &AuthConfig {
        &self.cfg
    }

    /// Whether requests need a token (after looking for changes to the tokens file).
    pub fn enabled(&self) -> bool {
        self.tokens.enabled()
    }

    /// The principal for a request's headers: `Ok` with the token's access, or 401.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<Principal, ApiError> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.tokens
            .authenticate(authorization, peer)
            .map_err(|refusal| {
                self.metrics.auth_failures.inc();
                if let Refusal::Revoked { id } = &refusal {
                    tracing::info!(token = %id, ?peer, "revoked token refused");
                }
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    refusal.to_string(),
                )
                .challenge()
            })
    }

    /// Admits an ingest request of `bytes` for `principal` under its rate limit, or answers
    /// 429 with the seconds until the token is out of debt.
    pub fn admit_ingest(&self, principal: &Principal, bytes: usize) -> Result<(), ApiError> {
        self.limiter.admit(principal, bytes).map_err(|over| {
            self.metrics.http_rate_limited.inc();
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                over.to_string(),
            )
            .retry_after(over.retry_after_secs)
        })
    }

    /// Charges bytes learnt only after reading (a body without Content-Length).
    pub fn charge_ingest(&self, principal: &Principal, bytes: usize) {
        self.limiter.charge(principal, bytes);
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::Forbidden(message) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            Denied::NoIndexInScope(message) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_index", message)
            }
        }
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
        Some(Err(e)) => ApiError::from(e).into_response(),
        None => ApiError::internal("route has no authentication layer").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use logsift_identity::{NewToken, Tokens};

    fn auth(dir: &std::path::Path) -> Auth {
        Auth::open(
            AuthConfig {
                tokens_file: dir.join(logsift_identity::TOKENS_FILE),
                metrics_public: false,
                token_ingest_bytes_per_sec: 0,
                allowed_hosts: Vec::new(),
            },
            Arc::new(ServerMetrics::default()),
        )
        .unwrap()
    }

    #[test]
    fn refusals_are_401_with_a_challenge_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut tokens = Tokens::default();
        tokens
            .create(NewToken {
                roles: vec![Role::Ingest],
                ..Default::default()
            })
            .unwrap();
        tokens
            .save(&dir.path().join(logsift_identity::TOKENS_FILE))
            .unwrap();
        let auth = auth(dir.path());
        let mut headers = HeaderMap::new();
        let err = auth.authenticate(&headers, None).unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        assert!(err.challenge);
        assert_eq!(
            err.message,
            "this endpoint needs a token: Authorization: Bearer <token>"
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        assert_eq!(
            auth.authenticate(&headers, None).unwrap_err().message,
            "unknown token"
        );
        assert_eq!(auth.metrics.auth_failures.get(), 2);
    }

    #[test]
    fn over_rate_is_429_with_retry_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut tokens = Tokens::default();
        let (record, _) = tokens
            .create(NewToken {
                roles: vec![Role::Ingest],
                ingest_bytes_per_sec: Some(1000),
                ..Default::default()
            })
            .unwrap();
        let auth = auth(dir.path());
        let p = Principal::token(Arc::new(record), None);
        auth.admit_ingest(&p, 5000).unwrap();
        let err = auth.admit_ingest(&p, 10).unwrap_err();
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.code, "rate_limited");
        assert!((4..=5).contains(&err.retry_after.unwrap()), "{err:?}");
    }
}
