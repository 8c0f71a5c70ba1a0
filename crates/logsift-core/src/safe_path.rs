//! User-supplied relative paths (an export's file name, say) checked before they are joined
//! under a directory the server owns. Only plain names separated by `/` pass: no absolute
//! paths, no `.` or `..`, no backslashes, drive letters, control characters or empty parts, so
//! that the joined path cannot leave its base directory by any spelling.

use std::path::{Path, PathBuf};

const MAX_PATH_BYTES: usize = 1024;
const MAX_COMPONENT_BYTES: usize = 255;

/// A validated relative path; [`SafeRelativePath::under`] joins it to a base directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeRelativePath(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SafePathError {
    #[error("path is empty")]
    Empty,
    #[error("path is {0} bytes long; the limit is {MAX_PATH_BYTES}")]
    TooLong(usize),
    #[error("path {0:?} must be relative (no leading '/')")]
    Absolute(String),
    #[error("path {0:?} may not contain '.', '..' or empty parts")]
    Traversal(String),
    #[error("path {0:?} contains a backslash, ':' or a control character")]
    BadChar(String),
    #[error("a part of path {0:?} is longer than {MAX_COMPONENT_BYTES} bytes")]
    ComponentTooLong(String),
}

impl SafeRelativePath {
    pub fn new(path: &str) -> Result<Self, SafePathError> {
        if path.is_empty() {
            return Err(SafePathError::Empty);
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(SafePathError::TooLong(path.len()));
        }
        if path.starts_with('/') {
            return Err(SafePathError::Absolute(path.to_string()));
        }
        // ':' keeps out Windows drive letters and alternate data streams.
        if path
            .chars()
            .any(|c| c == '\\' || c == ':' || c.is_control())
        {
            return Err(SafePathError::BadChar(path.to_string()));
        }
        for part in path.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                return Err(SafePathError::Traversal(path.to_string()));
            }
            if part.len() > MAX_COMPONENT_BYTES {
                return Err(SafePathError::ComponentTooLong(path.to_string()));
            }
        }
        Ok(SafeRelativePath(path.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `base` joined with this path; always inside `base`.
    pub fn under(&self, base: &Path) -> PathBuf {
        let joined = base.join(&self.0);
        debug_assert!(joined.starts_with(base));
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass() {
        let p = SafeRelativePath::new("audits/2026-q1.ndjson.zst").unwrap();
        assert_eq!(
            p.under(Path::new("/data/exports")),
            Path::new("/data/exports/audits/2026-q1.ndjson.zst")
        );
    }

    #[test]
    fn every_way_out_is_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            ".",
            "..",
            "a\\..\\b",
            "C:x",
            "c:\\windows",
            "a\u{0}b",
            "line\nbreak",
        ] {
            assert!(SafeRelativePath::new(bad).is_err(), "{bad:?} passed");
        }
        assert_eq!(
            SafeRelativePath::new(&"a".repeat(2000)),
            Err(SafePathError::TooLong(2000))
        );
        assert!(matches!(
            SafeRelativePath::new(&"a".repeat(300)),
            Err(SafePathError::ComponentTooLong(_))
        ));
    }
}
