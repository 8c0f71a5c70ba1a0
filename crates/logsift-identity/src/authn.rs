//! Checking a presented token against the tokens file.
//!
//! Authentication is on as soon as the tokens file holds a token (a revoked one counts: revoking
//! the last token must not open the server). A token is presented in `Authorization` as
//! `Bearer <token>`, or Basic with the token as password (or as user name with an empty
//! password) for shippers that only speak Basic.
//!
//! The file is re-read when it changes (checked at most every [`RELOAD_CHECK`]), so
//! `logsift tokens create|revoke` take effect without a restart. A file that becomes unreadable
//! or damaged keeps the last good set in force (fail closed).

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;

use crate::principal::Principal;
use crate::tokens::{hash_token, TokenError, TokenRecord, Tokens};

/// How often a check may trigger a look at the tokens file's metadata.
pub const RELOAD_CHECK: Duration = Duration::from_millis(500);

/// Why a request was not let in; the server answers each 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this endpoint needs a token: Authorization: Bearer <token>")]
    Missing,
    #[error("this token has been revoked")]
    Revoked { id: String },
    #[error("unknown token")]
    Unknown,
}

/// Identifies a version of the tokens file: a rename over it changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
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

/// The tokens of one tokens file, kept current, against which presented tokens are checked.
pub struct Authenticator {
    path: PathBuf,
    loaded: RwLock<Arc<Loaded>>,
    last_check: Mutex<Instant>,
}

impl Authenticator {
    /// Loads the tokens file; a damaged file is an error, so a server never starts open by
    /// mistake.
    pub fn open(path: PathBuf) -> Result<Authenticator, TokenError> {
        let st = stamp(&path);
        let tokens = Tokens::load(&path)?;
        Ok(Authenticator {
            loaded: RwLock::new(Arc::new(Loaded::from(tokens, st))),
            path,
            last_check: Mutex::new(Instant::now()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether requests need a token (after looking for changes to the tokens file).
    pub fn enabled(&self) -> bool {
        self.current().count > 0
    }

    fn current(&self) -> Arc<Loaded> {
        self.refresh();
        self.loaded.read().clone()
    }

    fn refresh(&self) {
        {
            let mut last = self.last_check.lock();
            if last.elapsed() < RELOAD_CHECK {
                return;
            }
            *last = Instant::now();
        }
        let path = &self.path;
        let now = stamp(path);
        let old = self.loaded.read().clone();
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
                *self.loaded.write() = Arc::new(Loaded::from(tokens, now));
            }
            Err(e) => {
                tracing::error!(error = %e, "keeping the tokens last loaded");
            }
        }
    }

    /// The principal for a request whose `Authorization` header is `authorization` (`None`
    /// when absent or not text), coming from `peer`.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        peer: Option<SocketAddr>,
    ) -> Result<Principal, Refusal> {
        let loaded = self.current();
        if loaded.count == 0 {
            return Ok(Principal::anonymous(peer));
        }
        let Some(token) = authorization.and_then(presented_token) else {
            return Err(Refusal::Missing);
        };
        match loaded.by_hash.get(&hash_token(&token)) {
            Some(record) if !record.is_revoked() => Ok(Principal::token(record.clone(), peer)),
            Some(record) => Err(Refusal::Revoked {
                id: record.id.clone(),
            }),
            None => Err(Refusal::Unknown),
        }
    }
}

/// The token in an `Authorization` header value: Bearer, or Basic with the token as password
/// (or user).
pub fn presented_token(authorization: &str) -> Option<String> {
    let value = authorization.trim();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::{NewToken, Role, TOKENS_FILE};
    use crate::Who;

    #[test]
    fn bearer_and_basic_carry_the_token() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(presented_token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(presented_token("bearer  abc ").as_deref(), Some("abc"));
        let basic = format!("Basic {}", b64("shipper:abc"));
        assert_eq!(presented_token(&basic).as_deref(), Some("abc"));
        let user_only = format!("Basic {}", b64("abc:"));
        assert_eq!(presented_token(&user_only).as_deref(), Some("abc"));
        assert_eq!(presented_token("Basic !!!"), None);
        assert_eq!(presented_token("Digest abc"), None);
        assert_eq!(presented_token("Bearer "), None);
    }

    fn create(tokens: &mut Tokens, name: &str) -> (TokenRecord, String) {
        tokens
            .create(NewToken {
                name: Some(name.into()),
                roles: vec![Role::Ingest],
                ..Default::default()
            })
            .unwrap()
    }

    #[test]
    fn checks_presented_tokens_and_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let peer: Option<SocketAddr> = Some("10.0.0.1:4000".parse().unwrap());

        // No file: authentication is off and everyone is anonymous.
        let auth = Authenticator::open(path.clone()).unwrap();
        assert!(!auth.enabled());
        let p = auth.authenticate(None, peer).unwrap();
        assert_eq!(p.who, Who::Anonymous);

        let mut tokens = Tokens::default();
        let (first, first_token) = create(&mut tokens, "first");
        tokens.save(&path).unwrap();
        let auth = Authenticator::open(path.clone()).unwrap();
        assert!(auth.enabled());
        let p = auth
            .authenticate(Some(&format!("Bearer {first_token}")), peer)
            .unwrap();
        assert_eq!(p.token_record().unwrap().id, first.id);
        assert_eq!(p.peer, peer);
        assert_eq!(auth.authenticate(None, peer).unwrap_err(), Refusal::Missing);
        assert_eq!(
            auth.authenticate(Some("Bearer lsft_000000000000_00"), peer)
                .unwrap_err(),
            Refusal::Unknown
        );

        // A revocation and a new token are seen once the file changed and a check is due.
        tokens.revoke(&first.id).unwrap();
        let (_, second_token) = create(&mut tokens, "second");
        tokens.save(&path).unwrap();
        std::thread::sleep(RELOAD_CHECK + Duration::from_millis(50));
        assert_eq!(
            auth.authenticate(Some(&format!("Bearer {first_token}")), peer)
                .unwrap_err(),
            Refusal::Revoked { id: first.id }
        );
        assert!(auth
            .authenticate(Some(&format!("Bearer {second_token}")), peer)
            .is_ok());

        // A damaged file keeps the set last loaded in force rather than opening the server.
        std::fs::write(&path, b"{").unwrap();
        std::thread::sleep(RELOAD_CHECK + Duration::from_millis(50));
        assert!(auth.enabled());
        assert!(auth
            .authenticate(Some(&format!("Bearer {second_token}")), peer)
            .is_ok());
        // So does a file that is gone.
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(RELOAD_CHECK + Duration::from_millis(50));
        assert_eq!(auth.authenticate(None, peer).unwrap_err(), Refusal::Missing);
    }
}
