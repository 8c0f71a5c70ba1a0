//! Legal holds placed through the API, kept in `<data>/holds.json` (replaced atomically) next
//! to the ones in the configuration. A hold names an index (or `*` for every index) and an
//! optional time range; retention deletes nothing it covers and erasure refuses to touch it.
//! Released holds leave the file; the audit trail keeps their history.

use std::fs::{self, File};
use std::io::Write;
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

#[derive(Debug, Default, Serialize, Deserialize)]
struct HoldsFile {
    holds: Vec<HoldRecord>,
}

pub(crate) struct Holds {
    path: PathBuf,
    holds: Vec<HoldRecord>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Holds {
    pub(crate) fn load(path: PathBuf) -> Result<Holds, StoreError> {
        let holds = match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<HoldsFile>(&bytes)
                    .map_err(|e| StoreError::Catalog(format!("{}: {e}", path.display())))?
                    .holds
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        Ok(Holds { path, holds })
    }

    pub(crate) fn list(&self) -> &[HoldRecord] {
        &self.holds
    }

    fn save(&self, holds: &[HoldRecord]) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&HoldsFile {
            holds: holds.to_vec(),
        })
        .map_err(|e| StoreError::Catalog(e.to_string()))?;
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        Ok(())
    }

    /// Saved before it takes effect: a hold acknowledged is a hold that survives a crash.
    pub(crate) fn add(&mut self, hold: HoldRecord) -> Result<(), StoreError> {
        let mut next = self.holds.clone();
        next.push(hold);
        self.save(&next)?;
        self.holds = next;
        Ok(())
    }

    pub(crate) fn release(&mut self, id: &str) -> Result<Option<HoldRecord>, StoreError> {
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
