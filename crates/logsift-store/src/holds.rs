//! Legal holds placed through the API, kept in `<data>/holds.json` (replaced atomically) next
//! to the ones in the configuration. A hold names an index (or `*` for every index) and an
//! optional time range; retention deletes nothing it covers and erasure refuses to touch it.
//! Released holds leave the file; the audit trail keeps their history.
//!
//! `{"format": "logsift-holds", "version": 1, "holds": [...]}`. Files written before the
//! format had a version hold only `holds`: they are read as version 1, whose layout they share.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::{LegalHold, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub id: String,
    /// An index name, or `*` for every index.
    pub index: String,
    /// ns, inclusive; absent: from the beginning.
    pub start: Option<i64>,
    /// ns, exclusive; absent: with no end.
    pub end: Option<i64>,
    pub reason: String,
    pub created_at: String,
    pub created_by: String,
}

impl HoldRecord {
    pub fn covers_index(&self, index: &str) -> bool {
        self.index == "*" || self.index == index
    }

    pub fn as_legal_hold(&self) -> LegalHold {
        LegalHold {
            start: self.start.unwrap_or(i64::MIN),
            end: self.end.unwrap_or(i64::MAX),
            reason: self.reason.clone(),
        }
    }
}

const FORMAT: &str = "logsift-holds";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct HoldsFile {
    /// Optional when read: absent in files written before the format had a version.
    #[serde(default = "format_name")]
    format: String,
    #[serde(default = "unversioned")]
    version: u32,
    holds: Vec<HoldRecord>,
}

fn format_name() -> String {
    FORMAT.to_string()
}

fn unversioned() -> u32 {
    1
}

/// Reads a holds file. A file of another format or version is an error rather than an empty
/// list: a hold silently dropped would let retention delete what it protects.
fn decode(bytes: &[u8]) -> Result<Vec<HoldRecord>, String> {
    let file: HoldsFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.format != FORMAT {
        return Err(format!("format {:?} is not {FORMAT:?}", file.format));
    }
    if file.version != VERSION {
        return Err(format!(
            "version {} (this logsift reads {VERSION})",
            file.version
        ));
    }
    Ok(file.holds)
}

pub(crate) struct Holds {
    path: PathBuf,
    holds: Vec<HoldRecord>,
    /// With a PostgreSQL metastore the holds live there (`logsift_holds`), shared by every
    /// process, and `holds` is what was last read.
    shared: Option<std::sync::Arc<crate::PgMetastore>>,
}

fn pg_err(e: crate::CatalogError) -> StoreError {
    StoreError::Catalog(format!("holds: {e}"))
}

fn parse(texts: Vec<String>) -> Result<Vec<HoldRecord>, StoreError> {
    texts
        .iter()
        .map(|t| serde_json::from_str(t))
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::Catalog(format!("holds in the metastore: {e}")))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Holds {
    /// The holds of `path`, or of the metastore `shared`, into which a `writer` moves the
    /// file's holds the first time it finds none there.
    pub(crate) fn load(
        path: PathBuf,
        shared: Option<std::sync::Arc<crate::PgMetastore>>,
        writer: bool,
    ) -> Result<Holds, StoreError> {
        let local = match fs::read(&path) {
            Ok(bytes) => decode(&bytes)
                .map_err(|e| StoreError::Catalog(format!("holds {}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let Some(pg) = shared else {
            return Ok(Holds {
                path,
                holds: local,
                shared: None,
            });
        };
        let mut holds = parse(pg.holds().map_err(pg_err)?)?;
        if holds.is_empty() && writer && !local.is_empty() {
            for h in &local {
                let json =
                    serde_json::to_string(h).map_err(|e| StoreError::Catalog(e.to_string()))?;
                pg.put_hold(&h.id, &json).map_err(pg_err)?;
            }
            tracing::info!(
                holds = local.len(),
                "imported holds.json into the metastore"
            );
            holds = local;
        }
        Ok(Holds {
            path,
            holds,
            shared: Some(pg),
        })
    }

    /// The holds as they are now: read again from the metastore when they live there (an
    /// error then: retention and erasure must not go on without knowing them).
    pub(crate) fn current(&mut self) -> Result<&[HoldRecord], StoreError> {
        if let Some(pg) = &self.shared {
            self.holds = parse(pg.holds().map_err(pg_err)?)?;
        }
        Ok(&self.holds)
    }

    fn save(&self, holds: &[HoldRecord]) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(&HoldsFile {
            format: FORMAT.to_string(),
            version: VERSION,
            holds: holds.to_vec(),
        })
        .map_err(|e| StoreError::Catalog(e.to_string()))?;
        logsift_core::fsutil::write_atomic(&self.path, &bytes)
            .map_err(|e| io_err(&e.path)(e.source))
    }

    /// Saved before it takes effect: a hold acknowledged is a hold that survives a crash.
    pub(crate) fn add(&mut self, hold: HoldRecord) -> Result<(), StoreError> {
        if let Some(pg) = &self.shared {
            let json =
                serde_json::to_string(&hold).map_err(|e| StoreError::Catalog(e.to_string()))?;
            pg.put_hold(&hold.id, &json).map_err(pg_err)?;
            self.holds.push(hold);
            return Ok(());
        }
        let mut next = self.holds.clone();
        next.push(hold);
        self.save(&next)?;
        self.holds = next;
        Ok(())
    }

    pub(crate) fn release(&mut self, id: &str) -> Result<Option<HoldRecord>, StoreError> {
        if let Some(pg) = &self.shared {
            let released = pg.drop_hold(id).map_err(pg_err)?;
            self.holds.retain(|h| h.id != id);
            return Ok(parse(released.into_iter().collect())?.pop());
        }
        let Some(pos) = self.holds.iter().position(|h| h.id == id) else {
            return Ok(None);
        };
        let mut next = self.holds.clone();
        let released = next.remove(pos);
        self.save(&next)?;
        self.holds = next;
        Ok(Some(released))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn expected() -> Vec<HoldRecord> {
        vec![
            HoldRecord {
                id: "h-1".to_string(),
                index: "logs".to_string(),
                start: Some(1_735_689_600_000_000_000),
                end: Some(1_735_776_000_000_000_000),
                reason: "case 42".to_string(),
                created_at: "2025-01-01T00:00:00.000000000Z".to_string(),
                created_by: "admin".to_string(),
            },
            HoldRecord {
                id: "h-2".to_string(),
                index: "*".to_string(),
                start: None,
                end: None,
                reason: "audit".to_string(),
                created_at: "2025-01-02T00:00:00.000000000Z".to_string(),
                created_by: "127.0.0.1".to_string(),
            },
        ]
    }

    /// Files written before the format had a version, and version 1 files, both still read.
    #[test]
    fn golden_holds_files_decode() {
        assert_eq!(decode(&golden("holds-unversioned.json")), Ok(expected()));
        assert_eq!(decode(&golden("holds-v1.json")), Ok(expected()));
    }

    #[test]
    fn what_this_build_writes_is_version_1() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holds.json");
        let mut holds = Holds::load(path.clone(), None, true).unwrap();
        for hold in expected() {
            holds.add(hold).unwrap();
        }
        let written: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["format"], FORMAT);
        assert_eq!(written["version"], 1);
        assert_eq!(
            Holds::load(path, None, true).unwrap().current().unwrap(),
            expected()
        );
    }

    #[test]
    fn other_versions_formats_and_damage_are_errors() {
        for bad in [
            r#"{"format":"logsift-holds","version":2,"holds":[]}"#,
            r#"{"format":"logsift-tokens","version":1,"holds":[]}"#,
            r#"{"version":0,"holds":[]}"#,
            r#"{"holds":[{"id":"h-1"}]}"#,
            r#"{"holds":"#,
            "",
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holds.json");
        fs::write(
            &path,
            r#"{"format":"logsift-holds","version":2,"holds":[]}"#,
        )
        .unwrap();
        let err = Holds::load(path, None, true).err().unwrap().to_string();
        assert!(
            err.contains("holds.json") && err.contains("version 2"),
            "{err}"
        );
    }
}
