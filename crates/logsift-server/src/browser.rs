//! What a web page may make a browser do to a server without tokens.
//!
//! Without tokens the API is open to whoever reaches it, which the loopback rule narrows to
//! this machine's processes — and to every web page its browsers show. Two attacks remain,
//! and this layer closes them while authentication is off:
//!
//! - **DNS rebinding**: a page on `attacker.example` re-resolves its own name to 127.0.0.1 and
//!   then reads, exports and erases as a same-origin page. Its requests still say
//!   `Host: attacker.example`, so only an IP literal, `localhost` (and `*.localhost`, which
//!   resolve to loopback by RFC 6761) or a name in `security.allowed_hosts` may be the host.
//! - **Cross-site requests**: any page can POST (a form, or `fetch` with `mode: "no-cors"`)
//!   without reading the answer, enough to inject records or start an erasure. A request that
//!   is not GET, HEAD or OPTIONS is refused when the browser says it comes from another site
//!   (`Sec-Fetch-Site`) or its `Origin` is not the server's own. Shippers, curl and client
//!   libraries send neither header and are unaffected.
//!
//! With tokens, a page cannot present one (the UI keeps it in sessionStorage and sends it as a
//! header, which cross-site requests cannot set without a CORS preflight this server never
//! grants), so the layer steps aside.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Auth;
use crate::ApiError;

/// Host names (lowercase, without port) that may be used while authentication is off, besides
/// IP literals and `localhost`.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> AllowedHosts {
        AllowedHosts(
            names
                .into_iter()
                .map(|n| normalise(n.as_ref()).to_string())
                .filter(|n| !n.is_empty())
                .collect(),
        )
    }

    fn allows(&self, host: &str) -> bool {
        let host = normalise(host);
        host.parse::<IpAddr>().is_ok()
            || host == "localhost"
            || host.ends_with(".localhost")
            || self.0.contains(&host)
    }
}

/// `Host: LocalHost.:8080` → `localhost.`'s name part, `[::1]:80` → `::1`.
fn normalise(authority: &str) -> String {
    let authority = authority.trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, port)| {
            // An IPv6 literal without brackets has several colons and no port.
            if h.contains(':') || !port.bytes().all(|b| b.is_ascii_digit()) {
                authority
            } else {
                h
            }
        })
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The authority the client asked for: the HTTP/2 `:authority`, else the `Host` header.
fn requested_authority(req: &Request) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Why a request is refused, if it is.
fn refusal(req: &Request, allowed: &AllowedHosts) -> Option<String> {
    let authority = requested_authority(req);
    if let Some(authority) = &authority {
        if !allowed.allows(authority) {
            return Some(format!(
                "Host {authority:?} is not served while authentication is off (a web page could \
                 reach this server through DNS rebinding): use an IP address or localhost, add \
                 the name to [security] allowed_hosts, or create a token"
            ));
        }
    }
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Some(format!(
                "a browser sent this {} from another site (Sec-Fetch-Site: {site}); without \
                 tokens only pages served by this server may change its data",
                req.method()
            ));
        }
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("<not text>");
    let origin_authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    let same = match (origin_authority, &authority) {
        (Some(o), Some(a)) => o.eq_ignore_ascii_case(a),
        _ => false,
    };
    if same {
        None
    } else {
        Some(format!(
            "a browser sent this {} from origin {origin:?}, not from this server; without \
             tokens only pages served by this server may change its data",
            req.method()
        ))
    }
}

pub async fn guard(
    State((auth, allowed)): State<(Arc<Auth>, Arc<AllowedHosts>)>,
    req: Request,
    next: Next,
) -> Response {
    if auth.enabled() {
        return next.run(req).await;
    }
    match refusal(&req, &allowed) {
        None => next.run(req).await,
        Some(why) => {
            auth.metrics.http_browser_refused.inc();
            tracing::debug!(method = %req.method(), uri = %req.uri(), "{why}");
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", why).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn req(method: &str, host: Option<&str>, extra: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().method(method).uri("/api/v1/web/ingest");
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn hosts_that_cannot_be_rebound_pass() {
        let allowed = AllowedHosts::new(["Logs.Internal"]);
        for host in [
            "127.0.0.1:9200",
            "127.0.0.1",
            "[::1]:8080",
            "::1",
            "localhost:1",
            "LOCALHOST.",
            "app.localhost:3000",
            "10.1.2.3:80",
            "logs.internal:9200",
        ] {
            assert_eq!(
                refusal(&req("GET", Some(host), &[]), &allowed),
                None,
                "{host}"
            );
        }
        for host in [
            "attacker.example:9200",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "logs.internal.attacker.example",
        ] {
            assert!(
                refusal(&req("GET", Some(host), &[]), &allowed).is_some(),
                "{host}"
            );
        }
        // HTTP/1.0 clients may send no Host; browsers always do.
        assert_eq!(refusal(&req("POST", None, &[]), &allowed), None);
    }

    #[test]
    fn writes_from_other_sites_are_refused() {
        let allowed = AllowedHosts::default();
        let host = Some("127.0.0.1:9200");
        // (method, extra headers, served)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            ("POST", &[], true),
            ("POST", &[("origin", "http://127.0.0.1:9200")], true),
            ("POST", &[("sec-fetch-site", "same-origin")], true),
            ("POST", &[("sec-fetch-site", "none")], true),
            ("POST", &[("origin", "https://attacker.example")], false),
            ("POST", &[("origin", "http://127.0.0.1:9201")], false),
            ("POST", &[("origin", "null")], false),
            ("DELETE", &[("sec-fetch-site", "cross-site")], false),
            ("POST", &[("sec-fetch-site", "same-site")], false),
            // A link from elsewhere may open the page and read nothing it could not show.
            ("GET", &[("sec-fetch-site", "cross-site")], true),
            ("GET", &[("origin", "https://attacker.example")], true),
        ];
        for (method, headers, ok) in cases {
            let got = refusal(&req(method, host, headers), &allowed);
            assert_eq!(got.is_none(), *ok, "{method} {headers:?}: {got:?}");
        }
    }
}
