//! Pattern ids at ingest (#19): the indexer gives each record's message the id of its log
//! pattern (`logsift-patterns`), stored in the record's `pattern` column, and keeps the miner's
//! state so that ids mean the same thing in every segment and after every restart.
//!
//! One miner serves every index (ids are global, so `pattern:<id>` means one thing in a query
//! over several indexes); records of built-in indexes (`_audit`) get none. The miner lives on
//! the indexer thread, so its state after a record is exactly "everything applied so far has
//! been learnt". It is saved (`<data>/patterns.state`) together with the LSN it holds
//! everything through, and the WAL keeps every record above that LSN: a restart loads the
//! state and learns from the records above it again, in the same order, which gives them the
//! same ids (the miner is deterministic). Records at or below it that a replay meets again
//! (still in a hot tier, or re-applied after a write failure) are looked up without learning.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logsift_patterns::{Miner, MinerConfig, PatternId};
use parking_lot::RwLock;

/// The miner's state file, beside the `indexes` directory.
pub const STATE_FILE: &str = "patterns.state";
/// Version 1: magic (8) | LSN u64 | crc32c u32 of the LSN's bytes and the miner state.
const MAGIC_V1: &[u8; 8] = b"LSPATLSN";
/// Version 2 (written now): magic (8) | LSN u64 | trusted-after LSN u64 | crc32c u32 of both
/// LSNs' bytes and the miner state.
const MAGIC: &[u8; 8] = b"LSPATLS2";
const HEADER_V1_BYTES: usize = 20;
const HEADER_BYTES: usize = 28;
/// A changed state is saved at most this often: each save rewrites the whole state, and the
/// WAL keeps the records since the last one meanwhile.
const SAVE_EVERY: Duration = Duration::from_secs(5);

/// The template text of each pattern id, as readers show it: a copy the indexer refreshes
/// before each commit, so a hit never names a pattern its reader cannot spell.
#[derive(Debug, Default)]
pub struct PatternBook {
    templates: RwLock<Vec<Option<Arc<str>>>>,
    /// Per pattern id, the texts of its templates ([`Miner::template_texts`]; the first is
    /// the same allocation as its entry in `templates`), from which [`PatternBook::runs`]
    /// derives what every record of the pattern holds; `None` for a loose pattern.
    variants: RwLock<Vec<Option<TemplateTexts>>>,
    /// Records with ids (LSNs) at or below this got their pattern ids from an earlier miner
    /// whose state was lost (see [`Mining::open`]): their ids name other templates.
    trusted_after: std::sync::atomic::AtomicU64,
    /// Bumped after every change of templates or runs.
    generation: std::sync::atomic::AtomicU64,
    /// [`PatternBook::derived`]'s answers: key, the generation they were made at, value.
    derived: parking_lot::Mutex<Vec<Derived>>,
}

type Derived = (String, u64, Arc<dyn std::any::Any + Send + Sync>);

/// How many [`PatternBook::derived`] answers are kept (the most recent).
const DERIVED_KEPT: usize = 16;

/// Per template of a pattern, its runs of constant tokens ([`Miner::constant_runs`]).
pub type Runs = Vec<Vec<String>>;

/// The texts of a pattern's templates, shared with readers.
type TemplateTexts = Arc<[Arc<str>]>;

impl PatternBook {
    /// The current template of `id` (templates generalise as records arrive; ids stay).
    pub fn template(&self, id: PatternId) -> Option<Arc<str>> {
        let i = (id as usize).checked_sub(1)?;
        self.templates.read().get(i).cloned().flatten()
    }

    /// What every record given pattern `id` holds for certain ([`Miner::constant_runs`]), if
    /// its id came from this miner (a record id above [`PatternBook::trusted_after`]).
    /// `None` for an unknown or loose pattern.
    pub fn runs(&self, id: PatternId) -> Option<Runs> {
        let i = (id as usize).checked_sub(1)?;
        let texts = self.variants.read().get(i).cloned().flatten()?;
        Some(
            texts
                .iter()
                .map(|t| logsift_patterns::constant_runs_of(t))
                .collect(),
        )
    }

    /// Records with ids at or below this have pattern ids that [`PatternBook::runs`] cannot
    /// vouch for.
    pub fn trusted_after(&self) -> u64 {
        self.trusted_after
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Something computed from every template (such as the patterns that vouch for a query),
    /// by `key`: made by `make` once, and again after any template changes.
    pub fn derived<T: std::any::Any + Send + Sync>(
        &self,
        key: &str,
        make: impl FnOnce(&PatternBook) -> T,
    ) -> Arc<T> {
        use std::sync::atomic::Ordering;
        // Read before making: an answer made while templates change is kept under the older
        // generation, so it is never used after the change.
        let generation = self.generation.load(Ordering::Acquire);
        {
            let mut kept = self.derived.lock();
            kept.retain(|(_, g, _)| *g == generation);
            if let Some(found) = kept.iter().find(|(k, _, _)| k == key) {
                if let Ok(value) = found.2.clone().downcast::<T>() {
                    return value;
                }
            }
        }
        let value = Arc::new(make(self));
        let mut kept = self.derived.lock();
        if kept.len() >= DERIVED_KEPT {
            kept.remove(0);
        }
        kept.push((key.to_string(), generation, value.clone()));
        value
    }

    /// Pattern ids handed out so far (1 to this).
    pub fn len(&self) -> usize {
        self.templates.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn refresh(&self, miner: &Miner, ids: &[PatternId]) {
        if ids.is_empty() {
            return;
        }
        // Both under their locks at once, so that a reader never sees a template without
        // the texts its records were given under.
        let mut templates = self.templates.write();
        let mut variants = self.variants.write();
        if templates.len() < miner.len() {
            templates.resize(miner.len(), None);
        }
        if variants.len() < miner.len() {
            variants.resize(miner.len(), None);
        }
        for &id in ids {
            let i = id as usize - 1;
            let Some(text) = miner.template(id) else {
                continue;
            };
            let first: Arc<str> = Arc::from(text);
            variants[i] = miner.template_texts(id).map(|texts| {
                texts
                    .into_iter()
                    .enumerate()
                    .map(|(n, t)| if n == 0 { first.clone() } else { Arc::from(t) })
                    .collect()
            });
            templates[i] = Some(first);
        }
        drop(variants);
        drop(templates);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Why a state file was not used.
#[derive(Debug, thiserror::Error)]
pub enum PatternStateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Damaged { path: PathBuf, why: String },
}

/// The indexer's miner and what it knows about the saved state.
pub(crate) struct Mining {
    miner: Miner,
    book: Arc<PatternBook>,
    path: PathBuf,
    /// Every record up to this LSN has been learnt from: records at or below it (a replay)
    /// are looked up, records above it learnt from.
    mined_lsn: u64,
    /// The state on disk holds everything through this LSN; the WAL keeps what is above.
    saved_lsn: u64,
    saved_revision: u64,
    last_save: Option<Instant>,
    /// See [`PatternBook::trusted_after`]; saved with the state.
    trusted_after: u64,
}

impl Mining {
    /// Loads the state saved at `path`, or starts empty. A damaged state is set aside as
    /// `<path>.damaged` and mining starts again: ids handed out from then on are new numbers
    /// for the same patterns, which the error says. `committed_lsn` is the highest record id
    /// the store holds: when mining starts again over stored records, their ids are no longer
    /// vouched for ([`PatternBook::trusted_after`]).
    pub(crate) fn open(path: &Path, book: Arc<PatternBook>, committed_lsn: u64) -> Mining {
        let path = path.to_path_buf();
        let fresh = || Miner::new(MinerConfig::default()).expect("the default config is valid");
        let (miner, lsn, trusted_after) = match read_state(&path) {
            Ok(Some(State {
                miner,
                lsn,
                trusted_after,
            })) => {
                tracing::info!(
                    patterns = miner.len(),
                    lsn,
                    "loaded the pattern miner's state"
                );
                (miner, lsn, trusted_after)
            }
            Ok(None) => (fresh(), 0, committed_lsn),
            Err(e) => {
                let mut aside = path.clone().into_os_string();
                aside.push(".damaged");
                let aside = PathBuf::from(aside);
                let moved = std::fs::rename(&path, &aside);
                tracing::error!(error = %e, set_aside = %aside.display(), moved = moved.is_ok(),
                    "cannot use the pattern miner's state; mining starts again, and pattern ids \
                     of records stored before now do not match the new ones");
                (fresh(), 0, committed_lsn)
            }
        };
        book.trusted_after
            .store(trusted_after, std::sync::atomic::Ordering::Release);
        let mining = Mining {
            miner,
            book,
            path,
            mined_lsn: lsn,
            saved_lsn: lsn,
            saved_revision: 0,
            last_save: None,
            trusted_after,
        };
        let all: Vec<PatternId> = (1..=mining.miner.len() as PatternId).collect();
        mining.book.refresh(&mining.miner, &all);
        mining
    }

    /// The pattern of the record at `lsn` of index `index` whose message is `message`; 0 for
    /// built-in indexes. Records must come in LSN order above what was learnt.
    pub(crate) fn assign(&mut self, lsn: u64, index: &str, message: &str) -> PatternId {
        if index.starts_with('_') {
            return 0;
        }
        if lsn > self.mined_lsn {
            self.mined_lsn = lsn;
            self.miner.ingest(message)
        } else {
            let id = self.miner.assigned(message).unwrap_or(0);
            // Found by similarity, it may differ from every template of its pattern where
            // they hold constants: the pattern no longer vouches for its records' text.
            if id != 0 && !self.miner.fits(id, message) {
                self.miner.mark_loose(id);
            }
            id
        }
    }

    /// Whether the record at `lsn` still has to be learnt from (a replay past the state).
    pub(crate) fn needs(&self, lsn: u64, index: &str) -> bool {
        lsn > self.mined_lsn && !index.starts_with('_')
    }

    /// Makes templates that changed since the last call readable.
    pub(crate) fn publish(&mut self) {
        let changed = self.miner.take_changed();
        self.book.refresh(&self.miner, &changed);
    }

    /// The WAL may be truncated through this LSN as far as patterns are concerned.
    pub(crate) fn saved_lsn(&self) -> u64 {
        self.saved_lsn
    }

    /// Notes that everything through `applied_lsn` has been applied (nothing is pending):
    /// saves the state if it changed and the last save is old enough (or `force`), and
    /// otherwise lets the WAL go as far as an unchanged state allows.
    pub(crate) fn checkpoint(&mut self, applied_lsn: u64, force: bool) {
        if self.miner.revision() == self.saved_revision {
            // Only counts moved since the saved state: a restart from it gives every later
            // record the id it has now, so those records need not stay in the WAL for this.
            self.saved_lsn = self.saved_lsn.max(applied_lsn);
            return;
        }
        if !force && self.last_save.is_some_and(|t| t.elapsed() < SAVE_EVERY) {
            return;
        }
        let state = self.miner.to_bytes();
        let mut bytes = Vec::with_capacity(HEADER_BYTES + state.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&applied_lsn.to_le_bytes());
        bytes.extend_from_slice(&self.trusted_after.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[8..HEADER_BYTES - 4]), &state);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&state);
        self.last_save = Some(Instant::now());
        match logsift_core::fsutil::write_atomic(&self.path, &bytes) {
            Ok(()) => {
                self.saved_revision = self.miner.revision();
                self.saved_lsn = applied_lsn;
            }
            // The WAL keeps what the state lacks; the next checkpoint tries again.
            Err(e) => {
                tracing::error!(error = %e, "cannot save the pattern miner's state; will retry")
            }
        }
    }
}

/// A saved state: the miner, the LSN it holds everything through, and
/// [`PatternBook::trusted_after`].
struct State {
    miner: Miner,
    lsn: u64,
    trusted_after: u64,
}

/// The state in `path`; `None` when there is none.
fn read_state(path: &Path) -> Result<Option<State>, PatternStateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PatternStateError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let damaged = |why: String| PatternStateError::Damaged {
        path: path.to_path_buf(),
        why,
    };
    let header = match bytes.get(..8) {
        Some(m) if m == MAGIC => HEADER_BYTES,
        Some(m) if m == MAGIC_V1 => HEADER_V1_BYTES,
        _ => {
            return Err(damaged(
                "not a pattern state file (bad magic or too short)".into(),
            ))
        }
    };
    if bytes.len() < header {
        return Err(damaged("header cut short".into()));
    }
    let lsns = &bytes[8..header - 4];
    let crc = u32::from_le_bytes(bytes[header - 4..header].try_into().expect("4 bytes"));
    let state = &bytes[header..];
    if crc32c::crc32c_append(crc32c::crc32c(lsns), state) != crc {
        return Err(damaged("checksum mismatch".into()));
    }
    let miner = Miner::from_bytes(state).map_err(|e| damaged(e.to_string()))?;
    let lsn = u64::from_le_bytes(lsns[..8].try_into().expect("8 bytes"));
    // Version 1 predates the trust line: its ids were never restarted under stored records
    // as far as this build can tell.
    let trusted_after = lsns
        .get(8..16)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    Ok(Some(State {
        miner,
        lsn,
        trusted_after,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_state_gives_replayed_and_new_records_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let book = Arc::new(PatternBook::default());
        let mut m = Mining::open(&dir.path().join(STATE_FILE), book.clone(), 0);
        let a = m.assign(1, "app", "disk sda1 is 91% full");
        assert_eq!(m.assign(2, "_audit", "disk sda1 is 91% full"), 0);
        let b = m.assign(3, "app", "user bob logged in");
        m.publish();
        assert_eq!(book.template(a).as_deref(), Some("disk sda1 is <*> full"));
        m.checkpoint(3, true);
        assert_eq!(m.saved_lsn(), 3);
        // Learnt after the save: the WAL still holds it.
        let c = m.assign(4, "app", "fan 2 stopped");

        let book2 = Arc::new(PatternBook::default());
        let mut again = Mining::open(&dir.path().join(STATE_FILE), book2.clone(), 0);
        assert_eq!(book2.template(b).as_deref(), Some("user bob logged in"));
        // A record the state holds (still in a hot tier) is looked up...
        assert!(!again.needs(3, "app"));
        assert_eq!(again.assign(1, "app", "disk sda1 is 91% full"), a);
        // ...one after it is learnt again, and gets the id it had.
        assert!(again.needs(4, "app"));
        assert_eq!(again.assign(4, "app", "fan 2 stopped"), c);
    }

    #[test]
    fn an_unchanged_state_lets_the_wal_go_without_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mining::open(
            &dir.path().join(STATE_FILE),
            Arc::new(PatternBook::default()),
            0,
        );
        m.checkpoint(10, false);
        assert_eq!(m.saved_lsn(), 10);
        assert!(!dir.path().join(STATE_FILE).exists());
        m.assign(11, "app", "link eth0 up");
        m.checkpoint(11, false);
        assert_eq!(m.saved_lsn(), 11);
        // Changed again within the save interval: the WAL keeps the rest.
        m.assign(12, "app", "power supply 1 lost");
        m.checkpoint(12, false);
        assert_eq!(m.saved_lsn(), 11);
        m.assign(13, "app", "power supply 2 lost");
        m.checkpoint(13, true);
        assert_eq!(m.saved_lsn(), 13);
    }

    #[test]
    fn a_damaged_state_is_set_aside_and_mining_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mining::open(
            &dir.path().join(STATE_FILE),
            Arc::new(PatternBook::default()),
            0,
        );
        m.assign(1, "app", "link eth0 up");
        m.checkpoint(1, true);
        let path = dir.path().join(STATE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        for at in [0, 9, 17, HEADER_BYTES + 3, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(read_state_bytes(&path, &bad).is_err(), "flip at {at}");
        }
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&path, &bytes).unwrap();
        let again = Mining::open(
            &dir.path().join(STATE_FILE),
            Arc::new(PatternBook::default()),
            0,
        );
        assert_eq!(again.saved_lsn(), 0);
        assert!(again.needs(1, "app"));
        assert!(dir.path().join("patterns.state.damaged").exists());
    }

    #[test]
    fn runs_vouch_only_for_records_that_fit_their_template() {
        let dir = tempfile::tempdir().unwrap();
        let book = Arc::new(PatternBook::default());
        let mut m = Mining::open(&dir.path().join(STATE_FILE), book.clone(), 0);
        let id = m.assign(1, "app", "job state:ok after 3 tries on node");
        m.publish();
        let runs = book.runs(id).expect("a learnt pattern vouches");
        assert_eq!(
            *runs,
            vec![vec![
                "job state:ok after".to_string(),
                "tries on node".into()
            ]]
        );
        // A replay finds the pattern by similarity although `state:bad` is not `state:ok`.
        assert_eq!(
            m.assign(1, "app", "job state:bad after 3 tries on node"),
            id
        );
        m.publish();
        assert!(
            book.runs(id).is_none(),
            "a loose pattern vouches for nothing"
        );
        // Saved and loaded, it stays loose.
        m.checkpoint(1, true);
        let book2 = Arc::new(PatternBook::default());
        let _again = Mining::open(&dir.path().join(STATE_FILE), book2.clone(), 1);
        assert!(book2.runs(id).is_none());
        assert_eq!(book2.trusted_after(), 0);
    }

    #[test]
    fn mining_again_over_stored_records_stops_trusting_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut m = Mining::open(&path, Arc::new(PatternBook::default()), 0);
        m.assign(1, "app", "link eth0 up");
        m.checkpoint(1, true);
        std::fs::write(&path, b"LSPATLS2 damaged").unwrap();
        // The store holds records through 40: their ids came from the lost state.
        let book = Arc::new(PatternBook::default());
        let mut again = Mining::open(&path, book.clone(), 40);
        assert_eq!(book.trusted_after(), 40);
        again.assign(41, "app", "power supply 1 lost");
        again.checkpoint(41, true);
        // The line is kept by the state saved from then on.
        let book = Arc::new(PatternBook::default());
        let _third = Mining::open(&path, book.clone(), 41);
        assert_eq!(book.trusted_after(), 40);
        // A store that starts empty trusts every id.
        let fresh = tempfile::tempdir().unwrap();
        let book = Arc::new(PatternBook::default());
        let _m = Mining::open(&fresh.path().join(STATE_FILE), book.clone(), 0);
        assert_eq!(book.trusted_after(), 0);
    }

    /// The messages of the golden state file (`Mining::assign` at LSNs 1–3 with a default
    /// miner, then `checkpoint(3)`), learnt through LSN 3. A format change adds a file.
    const GOLDEN_MESSAGES: [&str; 3] = [
        "Connection from 10.0.0.1 closed",
        "disk sda1 is 91% full",
        "Connection from 10.0.0.2 closed",
    ];

    #[test]
    fn the_golden_version_1_state_loads_and_gives_its_ids() {
        let golden =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/patterns-v1.state");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::copy(&golden, &path).expect("the golden file is committed");
        let book = Arc::new(PatternBook::default());
        let mut m = Mining::open(&path, book.clone(), 0);
        assert_eq!(m.saved_lsn(), 3);
        assert_eq!(
            book.template(1).as_deref(),
            Some("Connection from <*> closed")
        );
        assert_eq!(book.template(2).as_deref(), Some("disk sda1 is <*> full"));
        assert_eq!(book.len(), 2);
        assert!(!m.needs(3, "app"));
        assert_eq!(m.assign(2, "app", GOLDEN_MESSAGES[1]), 2);
        assert_eq!(m.assign(4, "app", "Connection from 10.9.9.9 closed"), 1);
    }

    /// Version 2 as this build writes it: the golden messages at LSNs 8–10, mined from
    /// nothing over a store that held records through 7. `LOGSIFT_WRITE_GOLDEN=1` writes the
    /// file anew (for a deliberate format change, which also adds a version).
    #[test]
    fn the_golden_version_2_state_is_what_this_build_writes_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut m = Mining::open(&path, Arc::new(PatternBook::default()), 7);
        for (i, message) in GOLDEN_MESSAGES.iter().enumerate() {
            m.assign(8 + i as u64, "app", message);
        }
        m.checkpoint(10, true);
        let written = std::fs::read(&path).unwrap();
        let golden =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/patterns-v2.state");
        if std::env::var_os("LOGSIFT_WRITE_GOLDEN").is_some() {
            std::fs::write(&golden, &written).unwrap();
        }
        assert_eq!(
            written,
            std::fs::read(&golden).expect("the golden file is committed")
        );
        assert_eq!(&written[..8], MAGIC);

        let copy = dir.path().join("copy.state");
        std::fs::copy(&golden, &copy).unwrap();
        let book = Arc::new(PatternBook::default());
        let mut m = Mining::open(&copy, book.clone(), 10);
        assert_eq!(m.saved_lsn(), 10);
        assert_eq!(book.trusted_after(), 7);
        assert_eq!(
            book.template(1).as_deref(),
            Some("Connection from <*> closed")
        );
        assert_eq!(
            book.runs(1),
            Some(vec![vec!["Connection from".to_string(), "closed".into()]])
        );
        assert_eq!(m.assign(11, "app", "Connection from 10.9.9.9 closed"), 1);
    }

    fn read_state_bytes(path: &Path, bytes: &[u8]) -> Result<Option<State>, PatternStateError> {
        std::fs::write(path, bytes).unwrap();
        read_state(path)
    }
}
