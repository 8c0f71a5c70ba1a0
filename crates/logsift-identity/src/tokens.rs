//! API tokens at rest: the tokens file in the data directory.
//!
//! A token is `lsft_<id>_<secret>`: `id` (12 hex digits) names it in lists and logs, `secret`
//! is 32 random bytes in hex. Only the sha256 of the whole token string is stored, so the file
//! alone does not let anyone in; the token itself is shown once, when it is created.
//!
//! The file is JSON, self-describing (`format`, `version`), and replaced atomically (written
//! to a temporary file, fsynced, renamed over the old one, directory fsynced) so that a crash
//! leaves either the old or the new set of tokens, never a torn file that would lock everyone
//! out. `logsift tokens create|list|revoke` edit it offline; a running server notices the
//! change (see [`crate::Authenticator`]).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The file name under the data directory.
pub const TOKENS_FILE: &str = "tokens.json";
const FORMAT: &str = "logsift-tokens";
const VERSION: u32 = 1;
const PREFIX: &str = "lsft_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;
const MAX_NAME_BYTES: usize = 128;

/// What a token may do. `admin` implies every other role, on every index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Write records: HTTP ingest and the compatible ingest APIs.
    Ingest,
    /// Read records: search, histogram, terms, context, tail, indexes, segments.
    Search,
    /// Export records for auditors.
    Export,
    /// Everything, plus operations endpoints such as `/metrics`.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Ingest, Role::Search, Role::Export, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Search => "search",
            Role::Export => "export",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Role, TokenError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| TokenError::BadRole(s.to_string()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One token as stored: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub roles: Vec<Role>,
    /// The indexes the token may use; absent means every index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexes: Option<Vec<String>>,
    /// Hex sha256 of the whole token string.
    pub sha256: String,
    /// RFC 3339.
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Ingest rate limit for this token; absent: `security.token_ingest_bytes_per_sec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_bytes_per_sec: Option<u64>,
}

impl TokenRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBody {
    format: String,
    version: u32,
    tokens: Vec<TokenRecord>,
}

/// The tokens file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    pub tokens: Vec<TokenRecord>,
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    pub name: Option<String>,
    pub roles: Vec<Role>,
    /// Empty: every index.
    pub indexes: Vec<String>,
    pub ingest_bytes_per_sec: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tokens file {path} is not a logsift tokens file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write tokens file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("role {0:?} is not one of ingest, search, export, admin")]
    BadRole(String),
    #[error("a token needs at least one role (--role ingest|search|export|admin)")]
    NoRole,
    #[error("admin tokens cover every index; leave out --index")]
    ScopedAdmin,
    #[error("index {0:?}: {1}")]
    BadIndex(String, logsift_core::IndexNameError),
    #[error("token name must be 1 to {MAX_NAME_BYTES} printable characters, not {0:?}")]
    BadName(String),
    #[error("no token with id {0:?}; `logsift tokens list` shows them")]
    UnknownId(String),
    #[error("token {0} is already revoked")]
    AlreadyRevoked(String),
    #[error("cannot draw random bytes for a token: {0}")]
    Random(String),
}

/// The hash stored for `token`.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn random_hex(n: usize) -> Result<String, TokenError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

fn now_rfc3339() -> String {
    logsift_core::time::format_rfc3339(logsift_core::time::now_ns())
}

/// Names appear in logs and the audit trail: keep them short and free of control characters.
fn check_name(name: &str) -> Result<(), TokenError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(TokenError::BadName(name.to_string()));
    }
    Ok(())
}

impl Tokens {
    /// Reads `path`; a missing file is an empty set.
    pub fn load(path: &Path) -> Result<Tokens, TokenError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Tokens::default()),
            Err(source) => {
                return Err(TokenError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(path, &text)
    }

    /// The tokens in `text`, the file's contents kept elsewhere (a metastore's copy, named
    /// `path` in errors).
    pub fn parse(path: &Path, text: &[u8]) -> Result<Tokens, TokenError> {
        let corrupt = |reason: String| TokenError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let body: FileBody = serde_json::from_slice(text).map_err(|e| corrupt(e.to_string()))?;
        if body.format != FORMAT {
            return Err(corrupt(format!("format is {:?}", body.format)));
        }
        if body.version != VERSION {
            return Err(corrupt(format!(
                "version {} (this logsift reads {VERSION})",
                body.version
            )));
        }
        for t in &body.tokens {
            let hash_ok = t.sha256.len() == 64 && hex::decode(&t.sha256).is_ok();
            if !hash_ok || t.roles.is_empty() {
                return Err(corrupt(format!("token {:?} is malformed", t.id)));
            }
        }
        Ok(Tokens {
            tokens: body.tokens,
        })
    }

    /// The file's contents for these tokens.
    pub fn to_text(&self) -> Vec<u8> {
        let body = FileBody {
            format: FORMAT.to_string(),
            version: VERSION,
            tokens: self.tokens.clone(),
        };
        let mut text = serde_json::to_vec_pretty(&body).expect("tokens serialize");
        text.push(b'\n');
        text
    }

    /// Replaces `path` atomically (temporary file, fsync, rename, directory fsync); the file
    /// is readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), TokenError> {
        Self::save_text(path, &self.to_text())
    }

    /// [`Self::save`] of a file's contents as they are (a metastore's copy).
    pub fn save_text(path: &Path, text: &[u8]) -> Result<(), TokenError> {
        let write_err = |source| TokenError::Write {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(write_err)?;
        logsift_core::fsutil::Replace::new()
            .mode(0o600)
            .write(path, text)
            .map_err(|e| write_err(e.source))?;
        Ok(())
    }

    /// Adds a token; returns its record and the token string, which exists nowhere else.
    pub fn create(&mut self, new: NewToken) -> Result<(TokenRecord, String), TokenError> {
        let mut roles = new.roles;
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            return Err(TokenError::NoRole);
        }
        if roles.contains(&Role::Admin) && !new.indexes.is_empty() {
            return Err(TokenError::ScopedAdmin);
        }
        let mut indexes = Vec::new();
        for i in &new.indexes {
            // Built-in names (`_audit`) are allowed: a token may be scoped to the audit trail.
            logsift_core::IndexName::new_builtin(i)
                .map_err(|e| TokenError::BadIndex(i.clone(), e))?;
            if !indexes.contains(i) {
                indexes.push(i.clone());
            }
        }
        let id = loop {
            let id = random_hex(ID_BYTES)?;
            if !self.tokens.iter().any(|t| t.id == id) {
                break id;
            }
        };
        let name = new.name.unwrap_or_else(|| format!("token-{id}"));
        check_name(&name)?;
        let token = format!("{PREFIX}{id}_{}", random_hex(SECRET_BYTES)?);
        let record = TokenRecord {
            id,
            name,
            roles,
            indexes: (!indexes.is_empty()).then_some(indexes),
            sha256: hex::encode(hash_token(&token)),
            created_at: now_rfc3339(),
            revoked_at: None,
            ingest_bytes_per_sec: new.ingest_bytes_per_sec,
        };
        self.tokens.push(record.clone());
        Ok((record, token))
    }

    /// Marks a token revoked. It stays in the file, so that its id keeps meaning the same
    /// token in logs and the audit trail, and so that revoking the last token does not turn
    /// authentication off.
    pub fn revoke(&mut self, id: &str) -> Result<&TokenRecord, TokenError> {
        let t = self
            .tokens
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| TokenError::UnknownId(id.to_string()))?;
        if t.is_revoked() {
            return Err(TokenError::AlreadyRevoked(id.to_string()));
        }
        t.revoked_at = Some(now_rfc3339());
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(roles: &[Role], indexes: &[&str]) -> NewToken {
        NewToken {
            name: Some("ci".into()),
            roles: roles.to_vec(),
            indexes: indexes.iter().map(|s| s.to_string()).collect(),
            ingest_bytes_per_sec: None,
        }
    }

    #[test]
    fn round_trip_keeps_only_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let mut tokens = Tokens::load(&path).unwrap();
        assert!(tokens.tokens.is_empty());
        let (record, token) = tokens.create(new(&[Role::Search], &["web"])).unwrap();
        assert!(token.starts_with(&format!("lsft_{}_", record.id)));
        tokens.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&token[18..]),
            "the secret must not be stored"
        );
        assert!(text.contains(&hex::encode(hash_token(&token))));
        assert_eq!(Tokens::load(&path).unwrap(), tokens);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn revoke_and_validation() {
        let mut tokens = Tokens::default();
        let (r, _) = tokens.create(new(&[Role::Ingest], &[])).unwrap();
        assert!(tokens.revoke(&r.id).unwrap().is_revoked());
        assert!(matches!(
            tokens.revoke(&r.id),
            Err(TokenError::AlreadyRevoked(_))
        ));
        assert!(matches!(
            tokens.revoke("nope"),
            Err(TokenError::UnknownId(_))
        ));
        assert!(matches!(
            tokens.create(new(&[], &[])),
            Err(TokenError::NoRole)
        ));
        assert!(matches!(
            tokens.create(new(&[Role::Admin], &["web"])),
            Err(TokenError::ScopedAdmin)
        ));
        assert!(matches!(
            tokens.create(new(&[Role::Search], &["../etc"])),
            Err(TokenError::BadIndex(..))
        ));
        let mut bad_name = new(&[Role::Search], &[]);
        bad_name.name = Some("evil\nname".into());
        assert!(matches!(
            tokens.create(bad_name),
            Err(TokenError::BadName(_))
        ));
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        std::fs::write(&path, b"{\"format\":\"logsift-tokens\",\"version\":1,\"tok").unwrap();
        assert!(matches!(
            Tokens::load(&path),
            Err(TokenError::Corrupt { .. })
        ));
        std::fs::write(&path, b"{\"format\":\"other\",\"version\":1,\"tokens\":[]}").unwrap();
        assert!(matches!(
            Tokens::load(&path),
            Err(TokenError::Corrupt { .. })
        ));
    }
}
