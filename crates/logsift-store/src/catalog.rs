//! The catalog of one index: every sealed segment ever added or deleted, as a hash chain, so
//! that a changed, removed or substituted segment (or a rewritten history) is detected.
//!
//! Stored as `catalog.json` next to the segments, replaced atomically (write a temporary file,
//! fsync, rename, fsync the directory): a crash leaves the old or the new catalog, never a
//! broken one. Each entry's `hash` is sha256 over the previous entry's hash and the entry's
//! own fields; the first entry chains from 64 zeros.

use std::fs;
use std::path::{Path, PathBuf};

use logsift_core::fsutil::{Replace, Step};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const CATALOG_FILE: &str = "catalog.json";
const FORMAT_VERSION: u32 = 1;
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Add,
    Delete,
}

/// One link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub seq: u64,
    pub action: Action,
    /// Segment id; its file is `<id>.lsseg`.
    pub segment: String,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub docs: u64,
    /// Bytes of the raw lines it holds.
    pub raw_bytes: u64,
    /// Bytes of the segment file.
    pub file_bytes: u64,
    pub sha256: String,
    /// Every record of this index with an id ≤ this is in this or an earlier segment.
    pub max_lsn: u64,
    /// Why (deletions: "retention: age", ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub prev_hash: String,
    pub hash: String,
}

impl CatalogEntry {
    fn compute_hash(&self) -> String {
        let mut sha = Sha256::new();
        sha.update(self.prev_hash.as_bytes());
        let action = match self.action {
            Action::Add => "add",
            Action::Delete => "delete",
        };
        let fields = format!(
            "|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.seq,
            action,
            self.segment,
            self.min_timestamp,
            self.max_timestamp,
            self.docs,
            self.raw_bytes,
            self.file_bytes,
            self.sha256,
            self.max_lsn,
            self.reason
        );
        sha.update(fields.as_bytes());
        hex::encode(sha.finalize())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalog {
    pub format_version: u32,
    pub entries: Vec<CatalogEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unreadable catalog: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("metastore {0}")]
    Metastore(String),
    /// The save may or may not have taken effect (the metastore went away mid-commit): the
    /// caller must keep whatever the entries point to.
    #[error("metastore: a catalog save could not be confirmed: {0}")]
    Unconfirmed(String),
    /// Another indexer appended to the chain since this process loaded it: load it again and
    /// apply the change on top.
    #[error("metastore {0}")]
    Moved(String),
}

/// Bits of a record id that count within one indexer: an indexer's ids (its WAL positions)
/// start at `indexer << LSN_BITS`, so that several indexers of one index never give two
/// records one id. 2^46 ids each (22 years at 100,000 records a second); ids stay below
/// 2^53, exact in JSON numbers, for indexers up to [`MAX_INDEXER`].
pub const LSN_BITS: u32 = 46;
/// The highest indexer number (`[node] indexer`).
pub const MAX_INDEXER: u16 = 127;

/// The first id of indexer `indexer`'s range (0 for a lone writer).
pub fn lsn_base(indexer: u16) -> u64 {
    u64::from(indexer) << LSN_BITS
}

/// Fields of a new entry; `seq`, the hashes and the action are filled in by the catalog.
#[derive(Debug, Clone, Default)]
pub struct SegmentInfo {
    pub segment: String,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub docs: u64,
    pub raw_bytes: u64,
    pub file_bytes: u64,
    pub sha256: String,
    pub max_lsn: u64,
}

impl Catalog {
    /// An empty catalog of the current format.
    pub fn new() -> Catalog {
        Catalog {
            format_version: FORMAT_VERSION,
            entries: Vec::new(),
        }
    }

    pub fn load(dir: &Path) -> Result<Catalog, CatalogError> {
        let path = dir.join(CATALOG_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let catalog: Catalog =
                    serde_json::from_slice(&bytes).map_err(|e| CatalogError::Corrupt {
                        path: path.clone(),
                        why: e.to_string(),
                    })?;
                if catalog.format_version != FORMAT_VERSION {
                    return Err(CatalogError::Corrupt {
                        path,
                        why: format!(
                            "format version {}; this build reads {FORMAT_VERSION}",
                            catalog.format_version
                        ),
                    });
                }
                Ok(catalog)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog::new()),
            Err(source) => Err(CatalogError::Io { path, source }),
        }
    }

    /// Writes the catalog atomically into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), CatalogError> {
        let path = dir.join(CATALOG_FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| CatalogError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        let fault = |step| match step {
            Step::Write => crate::fault("store::catalog-write"),
            Step::Rename => crate::fault("store::catalog-rename"),
            Step::DirSync => crate::fault("store::catalog-dir-sync"),
            Step::Create | Step::Sync => Ok(()),
        };
        let replace = Replace::new().fault(&fault);
        match replace.write(&path, &bytes) {
            Ok(()) => Ok(()),
            // Once renamed, the new catalog is what a restart reads: the save took effect, and
            // reporting a failure now would make the caller undo in memory (and delete the
            // segment file of) an entry that is on disk. A directory that cannot be fsynced is
            // tried once more and else logged: only a power loss could bring the old catalog
            // back.
            Err(e) if e.renamed() => {
                if let Err(e) = replace.sync_dir_of(&path) {
                    tracing::error!(path = %path.display(), error = %e, "the catalog was replaced but its directory could not be fsynced; a power loss now may bring back the previous catalog");
                }
                Ok(())
            }
            Err(e) => Err(CatalogError::Io {
                path: e.path,
                source: e.source,
            }),
        }
    }

    fn head_hash(&self) -> &str {
        self.entries.last().map_or(GENESIS, |e| e.hash.as_str())
    }

    /// The hash of the last entry: what an export manifest or an auditor pins.
    pub fn head(&self) -> String {
        self.head_hash().to_string()
    }

    fn push(&mut self, action: Action, info: SegmentInfo, reason: String) -> &CatalogEntry {
        let mut entry = CatalogEntry {
            seq: self.entries.last().map_or(1, |e| e.seq + 1),
            action,
            segment: info.segment,
            min_timestamp: info.min_timestamp,
            max_timestamp: info.max_timestamp,
            docs: info.docs,
            raw_bytes: info.raw_bytes,
            file_bytes: info.file_bytes,
            sha256: info.sha256,
            max_lsn: info.max_lsn,
            reason,
            prev_hash: self.head_hash().to_string(),
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        self.entries.push(entry);
        self.entries.last().expect("just pushed")
    }

    pub fn add(&mut self, info: SegmentInfo) -> &CatalogEntry {
        self.push(Action::Add, info, String::new())
    }

    /// Adds a segment that replaces others (a merge), saying so in the chain.
    pub fn add_with_reason(&mut self, info: SegmentInfo, reason: &str) -> &CatalogEntry {
        self.push(Action::Add, info, reason.to_string())
    }

    /// Records the deletion of a live segment (retention, merge); a deletion is an entry, not a gap.
    pub fn delete(&mut self, segment: &str, reason: &str) -> Option<&CatalogEntry> {
        let live = self
            .live()
            .into_iter()
            .find(|e| e.segment == segment)?
            .clone();
        let info = SegmentInfo {
            segment: live.segment,
            min_timestamp: live.min_timestamp,
            max_timestamp: live.max_timestamp,
            docs: live.docs,
            raw_bytes: live.raw_bytes,
            file_bytes: live.file_bytes,
            sha256: live.sha256,
            max_lsn: live.max_lsn,
        };
        Some(self.push(Action::Delete, info, reason.to_string()))
    }

    /// Segments added and not deleted, in the order they were added.
    pub fn live(&self) -> Vec<&CatalogEntry> {
        let deleted: std::collections::HashSet<&str> = self
            .entries
            .iter()
            .filter(|e| e.action == Action::Delete)
            .map(|e| e.segment.as_str())
            .collect();
        self.entries
            .iter()
            .filter(|e| e.action == Action::Add && !deleted.contains(e.segment.as_str()))
            .collect()
    }

    pub fn max_lsn(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.action == Action::Add)
            .map(|e| e.max_lsn)
            .max()
            .unwrap_or(0)
    }

    /// [`Self::max_lsn`] among the ids of the indexer whose range starts at `base` (see
    /// [`LSN_BITS`]): what that indexer has sealed.
    pub fn max_lsn_from(&self, base: u64) -> u64 {
        let end = base.saturating_add(1 << LSN_BITS);
        self.entries
            .iter()
            .filter(|e| e.action == Action::Add && e.max_lsn >= base && e.max_lsn < end)
            .map(|e| e.max_lsn)
            .max()
            .unwrap_or(0)
    }

    /// Walks the chain; returns a description of every broken link.
    pub fn verify_chain(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut prev = GENESIS.to_string();
        for (i, e) in self.entries.iter().enumerate() {
            if e.prev_hash != prev {
                problems.push(format!(
                    "entry {} (seq {}) does not chain from the entry before it",
                    i + 1,
                    e.seq
                ));
            }
            if e.compute_hash() != e.hash {
                problems.push(format!(
                    "entry {} (seq {}, segment {}) was altered: its hash does not match",
                    i + 1,
                    e.seq,
                    e.segment
                ));
            }
            prev = e.hash.clone();
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, lsn: u64) -> SegmentInfo {
        SegmentInfo {
            segment: id.into(),
            docs: 10,
            sha256: format!("{id}-sha"),
            max_lsn: lsn,
            ..Default::default()
        }
    }

    #[test]
    fn chain_survives_save_and_load_and_detects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::load(dir.path()).unwrap();
        c.add(info("a", 10));
        c.add(info("b", 20));
        c.delete("a", "retention: age").unwrap();
        c.save(dir.path()).unwrap();
        let mut loaded = Catalog::load(dir.path()).unwrap();
        assert!(loaded.verify_chain().is_empty());
        assert_eq!(
            loaded
                .live()
                .iter()
                .map(|e| e.segment.as_str())
                .collect::<Vec<_>>(),
            vec!["b"]
        );
        assert_eq!(loaded.max_lsn(), 20);

        loaded.entries[1].docs = 11;
        let problems = loaded.verify_chain();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("seq 2") && p.contains("altered")),
            "{problems:?}"
        );

        let mut cut = Catalog::load(dir.path()).unwrap();
        cut.entries.remove(0);
        assert!(cut
            .verify_chain()
            .iter()
            .any(|p| p.contains("does not chain")));
    }
}
