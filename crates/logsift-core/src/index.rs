use std::fmt;

/// The index that records go to when a listener or route names none.
pub const DEFAULT_INDEX: &str = "logs";

const MAX_INDEX_NAME_BYTES: usize = 64;

/// A validated index name: `[a-z0-9_-]`, 1 to 64 bytes. Because the name becomes a directory
/// under the data dir, validation is what keeps `../` and friends out of the file system.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexNameError {
    #[error("index name is empty")]
    Empty,
    #[error("index name is {0} bytes long; the limit is {MAX_INDEX_NAME_BYTES}")]
    TooLong(usize),
    #[error("index name {0:?} may only contain a-z, 0-9, '_' and '-'")]
    BadChar(String),
    #[error("index name {0:?} starts with '_', which is reserved for built-in indexes")]
    Reserved(String),
}

impl IndexName {
    /// Parses a name a user may write to. Names starting with `_` are refused.
    pub fn new(name: &str) -> Result<Self, IndexNameError> {
        let parsed = Self::new_builtin(name)?;
        if name.starts_with('_') {
            return Err(IndexNameError::Reserved(name.to_string()));
        }
        Ok(parsed)
    }

    /// Parses any well-formed name, including the reserved `_` ones (for the server's own use).
    pub fn new_builtin(name: &str) -> Result<Self, IndexNameError> {
        if name.is_empty() {
            return Err(IndexNameError::Empty);
        }
        if name.len() > MAX_INDEX_NAME_BYTES {
            return Err(IndexNameError::TooLong(name.len()));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(IndexNameError::BadChar(name.to_string()));
        }
        Ok(IndexName(name.to_string()))
    }

    pub fn default_index() -> Self {
        IndexName(DEFAULT_INDEX.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_builtin(&self) -> bool {
        self.0.starts_with('_')
    }
}

/// Lets maps keyed by `IndexName` be looked up with a `&str`; the derived `Eq`, `Ord` and
/// `Hash` are those of the inner string, as `Borrow` requires.
impl std::borrow::Borrow<str> for IndexName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IndexName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        assert_eq!(
            IndexName::new("web-01_logs").unwrap().as_str(),
            "web-01_logs"
        );
    }

    #[test]
    fn rejects_traversal_and_reserved() {
        assert!(matches!(
            IndexName::new("../etc"),
            Err(IndexNameError::BadChar(_))
        ));
        assert!(matches!(
            IndexName::new("Logs"),
            Err(IndexNameError::BadChar(_))
        ));
        assert!(matches!(
            IndexName::new("_audit"),
            Err(IndexNameError::Reserved(_))
        ));
        assert!(IndexName::new_builtin("_audit").is_ok());
        assert_eq!(IndexName::new(""), Err(IndexNameError::Empty));
        assert!(matches!(
            IndexName::new(&"a".repeat(65)),
            Err(IndexNameError::TooLong(65))
        ));
    }
}
