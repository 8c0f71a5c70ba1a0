//! Who is calling logsift, and what they may do: API tokens at rest ([`tokens`]), checking a
//! presented token against them ([`Authenticator`]), the resulting [`Principal`] with its roles
//! and index scopes, and per-token ingest rates ([`IngestLimiter`]).
//!
//! The server and `logsift tokens` both use this crate; neither HTTP nor axum is in it. What a
//! refusal looks like on the wire (401, 403, 429, `WWW-Authenticate`), where the token is
//! read from, and the metrics of refusals belong to the server, which maps [`Refusal`],
//! [`Denied`] and [`OverRate`] onto its answers.

mod authn;
mod limit;
mod principal;
pub mod tokens;

pub use authn::{presented_token, Authenticator, Refusal, RELOAD_CHECK};
pub use limit::{IngestLimiter, OverRate};
pub use principal::{Denied, Principal, Who};
pub use tokens::{hash_token, NewToken, Role, TokenError, TokenRecord, Tokens, TOKENS_FILE};
