//! Elasticsearch `_id`s stored recently. Shippers set ids derived from the event (Filebeat's
//! fingerprint processor, Logstash's `document_id`, Fluent Bit's `Generate_ID`, Vector's
//! `id_key`) precisely so that a retried bulk — its answer lost to a timeout or a crash after
//! the fsync — does not store the events twice:
//! - `create` with an id already stored answers 409 `version_conflict_engine_exception`, as
//!   Elasticsearch does, and shippers count that as "already there";
//! - `index` with an id already stored would overwrite in Elasticsearch. logsift appends, so a
//!   document identical to the stored one (the retry) is answered 200 `updated` and not stored
//!   again, while a different one is stored beside it: nothing sent is lost, nothing is stored
//!   twice.
//!
//! A record is the raw document, which does not hold its `_id`, so the ids live in a window
//! of their own: those stored in the last `elasticsearch.id_window_secs` (at most
//! `id_window_max` of them), each with a hash of its document, in memory and in
//! `<data>/es-ids/<hour>.ids` files of 32-byte entries, so that a restart or a kill -9 keeps the
//! window. Past the window an id is
//! forgotten and `create` stores the document again.
//!
//! ```text
//! file (version 2): magic "LSFTIDS\0" | version u32 LE (=2) | reserved u32 (=0) | entry…
//! file (version 1): entry…    (no header; written before the format had a version)
//! entry (32 bytes): key [16] | stored_at i64 LE (ns) | content u64 LE
//! ```
//!
//! A file whose first 8 bytes are not the magic is read as version 1 (a key equal to the
//! magic has a 2^-64 chance). Version 1 files of the current hour are appended to as they
//! are: entries are the same in both versions.
//!
//! An id is written only after the WAL fsynced its record: a crash in between forgets the id
//! (a retry then stores a duplicate) rather than refusing a record that was never stored. The
//! files are not fsynced: a process crash keeps them in the page cache, and a power cut loses
//! at most the newest ids, again a duplicate and never a loss.

use parking_lot::{Mutex, MutexGuard};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// An id and its index, hashed: 16 bytes whatever the id's length.
pub type Key = [u8; 16];

/// Key, time stored (ns, little-endian), document hash.
const ENTRY_BYTES: usize = 32;
const MAGIC: &[u8; 8] = b"LSFTIDS\0";
const VERSION: u32 = 2;
const HEADER_BYTES: usize = 16;

fn header() -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

fn invalid(path: &Path, why: String) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {why}", path.display()),
    )
}

/// Where the entries of an id file start: after the header of a version 2 file, at 0 in a
/// version 1 file (no header) and in a file cut short inside its header (a crash right after
/// it was created, before anything in it counted). Another version is an error: this build
/// would misread its entries, and appending to it would damage it for the build that wrote it.
fn entries_start(path: &Path, bytes: &[u8]) -> std::io::Result<usize> {
    let header = header();
    if bytes.len() < HEADER_BYTES && header.starts_with(bytes) {
        return Ok(bytes.len());
    }
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Ok(0);
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(invalid(
            path,
            format!(
                "Elasticsearch _id file version {version} (this logsift reads 1 and {VERSION}); \
                 remove DATA_DIR/es-ids to start with an empty _id window"
            ),
        ));
    }
    Ok(HEADER_BYTES)
}

/// Decodes the entries of one id file: (key, stored_at, content).
fn decode_file(path: &Path, bytes: &[u8]) -> std::io::Result<Vec<(Key, i64, u64)>> {
    let start = entries_start(path, bytes)?;
    // A torn last entry (a crash mid-write) is ignored: its id is forgotten.
    Ok(bytes[start..]
        .chunks_exact(ENTRY_BYTES)
        .map(|entry| {
            let mut key = [0u8; 16];
            key.copy_from_slice(&entry[..16]);
            let at = i64::from_le_bytes(entry[16..24].try_into().expect("8 bytes"));
            let content = u64::from_le_bytes(entry[24..].try_into().expect("8 bytes"));
            (key, at, content)
        })
        .collect())
}

/// Opens the hour file `path` for appending: a new or empty one gets the version 2 header;
/// an existing one is cut back to its last whole entry, so that entries appended after a
/// torn one stay aligned. Only the header and the length are read: the entries were loaded
/// by [`IdWindow::open`], and this runs under the window's lock, on a commit.
fn open_for_append(path: &Path) -> std::io::Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let mut head = Vec::with_capacity(HEADER_BYTES);
    (&mut file)
        .take(HEADER_BYTES as u64)
        .read_to_end(&mut head)?;
    let len = file.metadata()?.len() as usize;
    // The first HEADER_BYTES bytes decide where entries start, whatever follows them.
    let start = entries_start(path, &head)?;
    if start < HEADER_BYTES && start == len {
        // Empty, or a torn header: nothing in it counts.
        file.set_len(0)?;
        file.write_all(&header())?;
    } else {
        let whole = start + (len - start) / ENTRY_BYTES * ENTRY_BYTES;
        if whole != len {
            file.set_len(whole as u64)?;
        }
    }
    Ok(file)
}
const HOUR_NS: i64 = 3_600_000_000_000;

pub fn key(index: &str, id: &str) -> Key {
    let digest = Sha256::new()
        .chain_update(index.as_bytes())
        .chain_update([0u8])
        .chain_update(id.as_bytes())
        .finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// A document's bytes, hashed, to tell a retried `index` from a new version.
pub fn content(doc: &[u8]) -> u64 {
    let digest = Sha256::digest(doc);
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stored {
    /// ns since the epoch.
    at: i64,
    content: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Claimed by a request whose records are not durable yet; what was stored before, to
    /// restore if that request fails.
    Pending(Option<Stored>),
    Stored(Stored),
}

/// Whether a claim is for `create` (a known id conflicts) or `index` (a known id with other
/// content is stored again).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    Create,
    Index,
}

/// What [`IdWindow::claim`] found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Claim {
    /// To be stored: now pending for the caller, who must commit or release it. `existed`:
    /// an `index` of a known id with other content.
    Claimed { existed: bool },
    /// Stored within the window: `create` conflicts, an `index` of the same content is a
    /// retry (`same_content`).
    Exists { same_content: bool },
    /// Another request in flight is storing it; its outcome is not known yet.
    InFlight,
}

pub struct IdWindow {
    dir: PathBuf,
    window_ns: i64,
    max_ids: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    known: HashMap<Key, State>,
    /// Stored ids in commit order, for expiry.
    order: VecDeque<(i64, Key)>,
    /// The hour file being appended to.
    file: Option<(i64, File)>,
}

impl IdWindow {
    /// Loads the ids of the last `window_secs` from `dir` (created if missing) and deletes
    /// files wholly older than that. `window_secs = 0` turns the window off.
    pub fn open(dir: &Path, window_secs: u64, max_ids: usize, now: i64) -> std::io::Result<Self> {
        let window = IdWindow {
            dir: dir.to_path_buf(),
            window_ns: (window_secs as i64).saturating_mul(1_000_000_000),
            max_ids,
            inner: Mutex::new(Inner::default()),
        };
        if !window.enabled() {
            return Ok(window);
        }
        std::fs::create_dir_all(dir)?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let hour = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ids"))
                .and_then(|h| h.parse::<i64>().ok());
            if let Some(hour) = hour {
                files.push((hour, path));
            }
        }
        files.sort();
        let oldest = now - window.window_ns;
        let mut inner = window.lock();
        for (hour, path) in files {
            if (hour + 1) * HOUR_NS <= oldest {
                std::fs::remove_file(&path)?;
                continue;
            }
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            for (key, at, content) in decode_file(&path, &bytes)? {
                if at > oldest {
                    inner
                        .known
                        .insert(key, State::Stored(Stored { at, content }));
                    inner.order.push_back((at, key));
                }
            }
        }
        window.expire(&mut inner, now);
        drop(inner);
        Ok(window)
    }

    pub fn enabled(&self) -> bool {
        self.window_ns > 0 && self.max_ids > 0
    }

    /// Ids known (stored or in flight).
    pub fn known(&self) -> usize {
        self.lock().known.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Claims `key`, whose document hashes to `content`, for `op` at `now`; see [`Claim`].
    pub fn claim(&self, key: Key, content: u64, op: Op, now: i64) -> Claim {
        if !self.enabled() {
            return Claim::Claimed { existed: false };
        }
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        match inner.known.entry(key) {
            Entry::Vacant(v) => {
                v.insert(State::Pending(None));
                Claim::Claimed { existed: false }
            }
            Entry::Occupied(mut o) => match *o.get() {
                State::Pending(_) => Claim::InFlight,
                State::Stored(stored) => {
                    let same_content = stored.content == content;
                    if op == Op::Index && !same_content {
                        o.insert(State::Pending(Some(stored)));
                        Claim::Claimed { existed: true }
                    } else {
                        Claim::Exists { same_content }
                    }
                }
            },
        }
    }

    /// Records `claims` (key, content) as stored at `now`: their records are durable.
    fn commit(&self, claims: &[(Key, u64)], now: i64) -> std::io::Result<()> {
        if !self.enabled() || claims.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        let mut bytes = Vec::with_capacity(claims.len() * ENTRY_BYTES);
        for &(key, content) in claims {
            inner
                .known
                .insert(key, State::Stored(Stored { at: now, content }));
            inner.order.push_back((now, key));
            bytes.extend_from_slice(&key);
            bytes.extend_from_slice(&now.to_le_bytes());
            bytes.extend_from_slice(&content.to_le_bytes());
        }
        let hour = now.div_euclid(HOUR_NS);
        let written = (|| {
            if inner.file.as_ref().map(|(h, _)| *h) != Some(hour) {
                let path = self.dir.join(format!("{hour}.ids"));
                let file = open_for_append(&path)?;
                inner.file = Some((hour, file));
                self.remove_expired_files(now)?;
            }
            let (_, file) = inner.file.as_mut().expect("opened above");
            file.write_all(&bytes)
        })();
        self.expire(&mut inner, now);
        written
    }

    fn release(&self, claims: &[(Key, u64)]) {
        let mut inner = self.lock();
        for (key, _) in claims {
            match inner.known.get(key) {
                Some(State::Pending(Some(before))) => {
                    let before = *before;
                    inner.known.insert(*key, State::Stored(before));
                }
                Some(State::Pending(None)) => {
                    inner.known.remove(key);
                }
                _ => {}
            }
        }
    }

    /// Forgets ids older than the window, and the oldest beyond `max_ids`.
    fn expire(&self, inner: &mut Inner, now: i64) {
        let oldest = now - self.window_ns;
        while let Some(&(at, key)) = inner.order.front() {
            if at > oldest && inner.order.len() <= self.max_ids {
                break;
            }
            inner.order.pop_front();
            // Only if not stored again since: a later entry for it is further back.
            if matches!(inner.known.get(&key), Some(State::Stored(s)) if s.at == at) {
                inner.known.remove(&key);
            }
        }
    }

    fn remove_expired_files(&self, now: i64) -> std::io::Result<()> {
        let oldest = now - self.window_ns;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let expired = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ids"))
                .and_then(|h| h.parse::<i64>().ok())
                .is_some_and(|hour| (hour + 1) * HOUR_NS <= oldest);
            if expired {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

/// The ids one bulk request claimed. Committed once the request's records are durable;
/// dropped without that (an error, or the client gone), its claims are released so that a
/// retry can store them.
pub struct Claims {
    window: Arc<IdWindow>,
    inner: Mutex<ClaimsInner>,
}

#[derive(Default)]
struct ClaimsInner {
    claimed: Vec<(Key, u64)>,
    done: bool,
}

impl Claims {
    pub fn new(window: Arc<IdWindow>) -> Arc<Claims> {
        Arc::new(Claims {
            window,
            inner: Mutex::new(ClaimsInner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ClaimsInner> {
        self.inner.lock()
    }

    /// Claims the id of a document, remembering it when claimed; see [`Claim`]. An id
    /// claimed earlier in this same request counts as stored, as it would be in Elasticsearch,
    /// which applies a bulk's actions in order.
    pub fn claim(&self, key: Key, content: u64, op: Op, now: i64) -> Claim {
        let claim = self.window.claim(key, content, op, now);
        let mut inner = self.lock();
        match claim {
            Claim::Claimed { .. } => inner.claimed.push((key, content)),
            Claim::InFlight => {
                if let Some(slot) = inner.claimed.iter_mut().rev().find(|(k, _)| *k == key) {
                    let same_content = slot.1 == content;
                    if op == Op::Index && !same_content {
                        // A new version: stored too, and the one the window remembers.
                        slot.1 = content;
                        return Claim::Claimed { existed: true };
                    }
                    return Claim::Exists { same_content };
                }
            }
            Claim::Exists { .. } => {}
        }
        claim
    }

    /// The request's records are durable.
    pub fn commit(&self, now: i64) -> std::io::Result<()> {
        let mut inner = self.lock();
        inner.done = true;
        let claimed = std::mem::take(&mut inner.claimed);
        drop(inner);
        self.window.commit(&claimed, now)
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        let inner = self.lock();
        if !inner.done {
            let claimed = inner.claimed.clone();
            drop(inner);
            self.window.release(&claimed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    fn claim(w: &Arc<IdWindow>, id: &str, doc: &str, op: Op, now: i64) -> Claim {
        let claims = Claims::new(w.clone());
        let claim = claims.claim(key("logs", id), content(doc.as_bytes()), op, now);
        claims.commit(now).unwrap();
        claim
    }

    #[test]
    fn create_conflicts_until_the_window_passes_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000 * SEC;
        let window = Arc::new(IdWindow::open(dir.path(), 600, 1000, now).unwrap());
        let a = key("logs", "a");
        let doc = content(b"{}");
        let claims = Claims::new(window.clone());
        assert_eq!(
            claims.claim(a, doc, Op::Create, now),
            Claim::Claimed { existed: false }
        );
        // The same id again, in this request or another, before it is durable.
        assert_eq!(window.claim(a, doc, Op::Create, now), Claim::InFlight);
        claims.commit(now).unwrap();
        drop(claims);
        assert_eq!(
            window.claim(a, doc, Op::Create, now),
            Claim::Exists { same_content: true }
        );
        // Another index has its own ids.
        let other = key("other", "a");
        assert_eq!(
            window.claim(other, doc, Op::Create, now),
            Claim::Claimed { existed: false }
        );

        let reopened = IdWindow::open(dir.path(), 600, 1000, now + 10 * SEC).unwrap();
        assert_eq!(
            reopened.claim(a, content(b"[]"), Op::Create, now + 10 * SEC),
            Claim::Exists {
                same_content: false
            }
        );
        // Expired in memory, and on reopening.
        assert_eq!(
            reopened.claim(a, doc, Op::Create, now + 601 * SEC),
            Claim::Claimed { existed: false }
        );
        let later = IdWindow::open(dir.path(), 600, 1000, now + 601 * SEC).unwrap();
        assert_eq!(later.known(), 0);
    }

    #[test]
    fn index_skips_a_retry_and_stores_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let w = Arc::new(IdWindow::open(dir.path(), 600, 1000, 0).unwrap());
        let stored = Claim::Claimed { existed: false };
        assert_eq!(claim(&w, "x", "v1", Op::Index, 1), stored);
        let retry = Claim::Exists { same_content: true };
        assert_eq!(claim(&w, "x", "v1", Op::Index, 2), retry);
        let again = Claim::Claimed { existed: true };
        assert_eq!(claim(&w, "x", "v2", Op::Index, 3), again);
        assert_eq!(claim(&w, "x", "v2", Op::Index, 4), retry);
        // A failed overwrite restores what was stored before.
        let claims = Claims::new(w.clone());
        let v3 = content(b"v3");
        assert_eq!(claims.claim(key("logs", "x"), v3, Op::Index, 5), again);
        drop(claims);
        assert_eq!(claim(&w, "x", "v2", Op::Index, 6), retry);
    }

    #[test]
    fn an_id_repeated_within_one_request_counts_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let w = Arc::new(IdWindow::open(dir.path(), 600, 1000, 0).unwrap());
        let claims = Claims::new(w.clone());
        let (k, v1, v2) = (key("logs", "r"), content(b"v1"), content(b"v2"));
        let fresh = Claim::Claimed { existed: false };
        assert_eq!(claims.claim(k, v1, Op::Create, 0), fresh);
        let conflict = Claim::Exists {
            same_content: false,
        };
        assert_eq!(claims.claim(k, v2, Op::Create, 0), conflict);
        let retry = Claim::Exists { same_content: true };
        assert_eq!(claims.claim(k, v1, Op::Index, 0), retry);
        let again = Claim::Claimed { existed: true };
        assert_eq!(claims.claim(k, v2, Op::Index, 0), again);
        claims.commit(1).unwrap();
        // The last version is the one remembered.
        assert_eq!(w.claim(k, v2, Op::Index, 2), retry);
    }

    #[test]
    fn failed_requests_release_their_claims() {
        let dir = tempfile::tempdir().unwrap();
        let window = Arc::new(IdWindow::open(dir.path(), 600, 1000, 0).unwrap());
        let claims = Claims::new(window.clone());
        let b = key("logs", "b");
        let claimed = Claim::Claimed { existed: false };
        assert_eq!(claims.claim(b, 0, Op::Create, 0), claimed);
        drop(claims);
        assert_eq!(window.known(), 0);
        assert_eq!(window.claim(b, 0, Op::Create, 0), claimed);
    }

    #[test]
    fn the_cap_forgets_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let w = Arc::new(IdWindow::open(dir.path(), 600, 2, 0).unwrap());
        for (i, id) in ["x", "y", "z"].iter().enumerate() {
            claim(&w, id, "doc", Op::Create, i as i64);
        }
        assert_eq!(w.known(), 2);
        let fresh = Claim::Claimed { existed: false };
        assert_eq!(claim(&w, "x", "doc", Op::Create, 3), fresh);
        let z = w.claim(key("logs", "z"), content(b"doc"), Op::Create, 3);
        assert_eq!(z, Claim::Exists { same_content: true });
    }

    #[test]
    fn a_torn_entry_is_ignored_and_old_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000 * SEC;
        {
            let w = Arc::new(IdWindow::open(dir.path(), 3600, 1000, now).unwrap());
            claim(&w, "kept", "doc", Op::Create, now);
        }
        let file = dir.path().join(format!("{}.ids", now / HOUR_NS));
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(&[7u8; 10]).unwrap();
        std::fs::write(dir.path().join("12.ids"), [1u8; ENTRY_BYTES]).unwrap();
        let w = IdWindow::open(dir.path(), 3600, 1000, now + SEC).unwrap();
        assert_eq!(w.known(), 1);
        let kept = w.claim(key("logs", "kept"), content(b"doc"), Op::Create, now + SEC);
        assert_eq!(kept, Claim::Exists { same_content: true });
        assert!(!dir.path().join("12.ids").exists());
    }

    #[test]
    fn a_zero_window_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let w = Arc::new(IdWindow::open(&dir.path().join("ids"), 0, 1000, 0).unwrap());
        let fresh = Claim::Claimed { existed: false };
        assert_eq!(claim(&w, "a", "doc", Op::Create, 0), fresh);
        assert_eq!(claim(&w, "a", "doc", Op::Create, 1), fresh);
        assert!(!dir.path().join("ids").exists());
    }

    fn golden(name: &str) -> (PathBuf, Vec<u8>) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        (path, bytes)
    }

    /// What both golden files hold: written at 1_800_000_000 s (hour 500000).
    fn golden_entries() -> Vec<(Key, i64, u64)> {
        let t0 = 1_800_000_000 * SEC;
        vec![
            (key("logs", "a"), t0, content(br#"{"msg":"a"}"#)),
            (key("web", "b-2"), t0 + 5 * SEC, content(br#"{"msg":"b"}"#)),
        ]
    }

    /// Version 1 (no header, and a torn entry after a crash) and version 2 files decode to the
    /// same entries; this also pins the key and content hashes.
    #[test]
    fn golden_id_files_decode() {
        for name in ["es-ids-v1.ids", "es-ids-v2.ids"] {
            let (path, bytes) = golden(name);
            assert_eq!(
                decode_file(&path, &bytes).unwrap(),
                golden_entries(),
                "{name}"
            );
        }
    }

    #[test]
    fn a_version_1_file_is_served_and_appended_to_as_version_1() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("500000.ids");
        std::fs::write(&file, golden("es-ids-v1.ids").1).unwrap();
        let now = 1_800_000_010 * SEC;
        let w = Arc::new(IdWindow::open(dir.path(), 3600, 1000, now).unwrap());
        let a = w.claim(
            key("logs", "a"),
            content(br#"{"msg":"a"}"#),
            Op::Create,
            now,
        );
        assert_eq!(a, Claim::Exists { same_content: true });
        claim(&w, "c", "{}", Op::Create, now);
        let bytes = std::fs::read(&file).unwrap();
        // The torn entry was cut before appending, so the new one stays aligned.
        assert_eq!(bytes.len(), 3 * ENTRY_BYTES);
        let mut entries = golden_entries();
        entries.push((key("logs", "c"), now, content(b"{}")));
        assert_eq!(decode_file(&file, &bytes).unwrap(), entries);
    }

    /// Appending reads only the header: a version 2 file torn mid-entry is cut back to its
    /// last whole entry, after the header, like a version 1 file.
    #[test]
    fn a_torn_version_2_file_is_cut_to_whole_entries_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("500000.ids");
        let mut bytes = golden("es-ids-v2.ids").1;
        bytes.extend_from_slice(&[7; 5]);
        std::fs::write(&file, &bytes).unwrap();
        let now = 1_800_000_010 * SEC;
        let w = Arc::new(IdWindow::open(dir.path(), 3600, 1000, now).unwrap());
        claim(&w, "c", "{}", Op::Create, now);
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(bytes.len(), HEADER_BYTES + 3 * ENTRY_BYTES);
        let mut entries = golden_entries();
        entries.push((key("logs", "c"), now, content(b"{}")));
        assert_eq!(decode_file(&file, &bytes).unwrap(), entries);
    }

    #[test]
    fn new_files_are_version_2_and_a_torn_header_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000 * SEC;
        let file = dir.path().join("500000.ids");
        std::fs::write(&file, &MAGIC[..5]).unwrap();
        let w = Arc::new(IdWindow::open(dir.path(), 3600, 1000, now).unwrap());
        claim(&w, "a", r#"{"msg":"a"}"#, Op::Create, now);
        claim(&w, "b-2", r#"{"msg":"b"}"#, Op::Index, now + 5 * SEC);
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(&bytes[..HEADER_BYTES], &header());
        let decoded = decode_file(&file, &bytes).unwrap();
        assert_eq!(decoded[0], golden_entries()[0]);
        assert_eq!(decoded[1].0, key("logs", "b-2"));
    }

    #[test]
    fn an_unknown_version_stops_the_window_from_opening() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000 * SEC;
        let mut bytes = golden("es-ids-v2.ids").1;
        bytes[8] = 3;
        let file = dir.path().join("500000.ids");
        std::fs::write(&file, &bytes).unwrap();
        let err = IdWindow::open(dir.path(), 3600, 1000, now).err().unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        let message = err.to_string();
        assert!(
            message.contains("500000.ids") && message.contains("version 3"),
            "{message}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), bytes, "left as found");
    }
}
