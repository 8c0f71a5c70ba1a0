//! The caller of a request once its token (or its absence) has been checked, and what that
//! caller may do: roles, then index scopes.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::tokens::{Role, TokenRecord};

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

/// Why a principal may not do something. The server answers [`Denied::Forbidden`] 403 and
/// [`Denied::NoIndexInScope`] 404: the caller could read, there is just nothing yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The role or the index is outside what the token grants.
    #[error("{0}")]
    Forbidden(String),
    /// A read named no index and none of the indexes in the token's scope exists yet.
    #[error("{0}")]
    NoIndexInScope(String),
}

/// The authenticated caller of a request. The server attaches one to every request behind
/// authentication, so handlers and the audit trail can say who did what.
#[derive(Debug, Clone)]
pub struct Principal {
    pub who: Who,
    pub peer: Option<SocketAddr>,
    access: Access,
}

impl Principal {
    /// The caller while authentication is off: may do everything.
    pub fn anonymous(peer: Option<SocketAddr>) -> Principal {
        Principal {
            who: Who::Anonymous,
            peer,
            access: Access::Everything,
        }
    }

    /// The caller who presented the token of `record`. Only [`crate::Authenticator`] should
    /// decide that a request carries it; this is public for tests and tools.
    pub fn token(record: Arc<TokenRecord>, peer: Option<SocketAddr>) -> Principal {
        Principal {
            who: Who::Token {
                id: record.id.clone(),
                name: record.name.clone(),
            },
            peer,
            access: Access::Token(record),
        }
    }

    /// The token record behind this principal; `None` while authentication is off.
    pub fn token_record(&self) -> Option<&TokenRecord> {
        match &self.access {
            Access::Everything => None,
            Access::Token(t) => Some(t),
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

    fn forbidden(&self, what: String) -> Denied {
        Denied::Forbidden(format!("{} may not {what}", self.label()))
    }

    pub fn require(&self, role: Role) -> Result<(), Denied> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(self.forbidden(format!("do this: it needs the {role} role")))
        }
    }

    pub fn require_index(&self, role: Role, index: &str) -> Result<(), Denied> {
        self.require(role)?;
        if self.may(role, index) {
            Ok(())
        } else {
            Err(self.forbidden(format!("use index {index:?} ({role})")))
        }
    }

    /// The indexes a read may cover. Named ones must all be in scope; none named means every
    /// index the principal may read that `exists`.
    pub fn read_scope(
        &self,
        requested: Vec<String>,
        exists: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, Denied> {
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
            return Err(Denied::NoIndexInScope(format!(
                "none of the indexes {} may read exists yet ({})",
                self.label(),
                allowed.join(", ")
            )));
        }
        Ok(present)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(roles: &[Role], indexes: Option<&[&str]>) -> Principal {
        Principal::token(
            Arc::new(TokenRecord {
                id: "0a1b2c3d4e5f".into(),
                name: "ci".into(),
                roles: roles.to_vec(),
                indexes: indexes.map(|l| l.iter().map(|s| s.to_string()).collect()),
                sha256: "00".repeat(32),
                created_at: "2025-01-01T00:00:00Z".into(),
                revoked_at: None,
                ingest_bytes_per_sec: None,
            }),
            None,
        )
    }

    #[test]
    fn roles_and_scopes() {
        let p = principal(&[Role::Search], Some(&["web", "db"]));
        assert_eq!(p.label(), "token 0a1b2c3d4e5f (ci)");
        assert!(p.may(Role::Search, "web"));
        assert!(!p.may(Role::Search, "other"));
        assert!(!p.may(Role::Ingest, "web"));
        assert_eq!(
            p.require(Role::Ingest),
            Err(Denied::Forbidden(
                "token 0a1b2c3d4e5f (ci) may not do this: it needs the ingest role".into()
            ))
        );
        assert!(matches!(
            p.require_index(Role::Search, "other"),
            Err(Denied::Forbidden(_))
        ));
        assert_eq!(
            p.read_scope(Vec::new(), |i| i == "db").unwrap(),
            vec!["db".to_string()]
        );
        assert!(matches!(
            p.read_scope(vec!["other".into()], |_| true),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            p.read_scope(Vec::new(), |_| false),
            Err(Denied::NoIndexInScope(_))
        ));

        // Admin implies every role on every index; anonymous (authentication off) may do all.
        let admin = principal(&[Role::Admin], None);
        assert!(admin.may(Role::Export, "anything"));
        assert_eq!(
            admin.read_scope(Vec::new(), |_| false).unwrap(),
            Vec::<String>::new()
        );
        let anon = Principal::anonymous(Some("127.0.0.1:5000".parse().unwrap()));
        assert_eq!(anon.label(), "anonymous 127.0.0.1:5000");
        assert!(anon.require_index(Role::Ingest, "web").is_ok());
        assert!(anon.token_record().is_none());
    }
}
