//! The write-ahead log: what makes an acknowledged record survive kill -9 and power loss.
//!
//! The WAL is a directory of files `wal-<first lsn, 20 digits>.log`. Each holds a header and a
//! sequence of entries; every entry carries its own log sequence number (LSN) and a CRC32C, so a
//! file describes itself and a torn or corrupt tail is detected instead of replayed as garbage.
//!
//! ```text
//! file header (16 bytes):  magic "LSFTWAL\0" | version u32 LE (=1) | reserved u32 (=0)
//! entry:                   len u32 LE | crc32c u32 LE over (lsn ‖ payload) | lsn u64 LE | payload[len]
//! ```
//!
//! LSNs increase by one per entry, across files and restarts; they double as record ids.
//! This crate knows nothing about what payloads mean, nor about threads: the caller decides when
//! to [`Wal::sync`] (group commit) and when entries are safe to drop ([`Wal::truncate_through`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"LSFTWAL\0";
const VERSION: u32 = 1;
const FILE_HEADER_BYTES: u64 = 16;
const ENTRY_HEADER_BYTES: usize = 16;
/// An entry larger than this is treated as corruption on replay: no writer produces one.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("WAL file {path} is not a logsift WAL (bad magic or version {version})")]
    BadHeader { path: PathBuf, version: u32 },
    #[error("WAL entry of {len} bytes exceeds the limit of {MAX_ENTRY_BYTES} bytes")]
    EntryTooLarge { len: usize },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct WalOptions {
    pub dir: PathBuf,
    /// A file is closed and a new one started once it grows past this.
    pub max_file_bytes: u64,
}

/// What replay found besides the entries themselves.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub files: usize,
    pub entries: u64,
    /// Bytes cut from the end of a file because they did not form a whole, valid entry.
    pub torn_bytes: u64,
    /// Files whose damage was not at the tail of the log (entries after it were lost).
    pub damaged_files: Vec<PathBuf>,
}

struct WalFile {
    first_lsn: u64,
    /// The LSN of the last entry in it, if it has any.
    last_lsn: Option<u64>,
    path: PathBuf,
    /// Its length on disk; kept for closed files so that reporting WAL size needs no I/O.
    bytes: u64,
}

pub struct Wal {
    dir: PathBuf,
    max_file_bytes: u64,
    /// Closed files, oldest first; the open file is `current`.
    closed: Vec<WalFile>,
    current: WalFile,
    writer: BufWriter<File>,
    current_bytes: u64,
    next_lsn: u64,
    /// The state as of the last successful flush or sync: what [`Wal::rollback`] returns to
    /// after a failed write, so that a half-written entry never stays in the log.
    good: Checkpoint,
}

#[derive(Debug, Clone, Copy)]
struct Checkpoint {
    bytes: u64,
    next_lsn: u64,
    last_lsn: Option<u64>,
}

impl Wal {
    /// Opens the WAL in `opts.dir` (creating it), replays every valid entry in LSN order into
    /// `on_entry`, cuts torn tails, and starts a fresh file for new appends.
    ///
    /// `min_next_lsn` keeps LSNs unique when the WAL was truncated empty: pass one past the
    /// highest LSN that any consumer has already made durable elsewhere.
    pub fn open(
        opts: &WalOptions,
        min_next_lsn: u64,
        mut on_entry: impl FnMut(u64, &[u8]),
    ) -> Result<(Wal, ReplayReport), WalError> {
        fs::create_dir_all(&opts.dir).map_err(io_err(&opts.dir))?;
        let mut files = list_files(&opts.dir)?;
        files.sort_by_key(|f| f.first_lsn);
        let mut report = ReplayReport {
            files: files.len(),
            ..Default::default()
        };
        let mut next_lsn = min_next_lsn.max(1);
        let count = files.len();
        for (i, file) in files.iter_mut().enumerate() {
            let is_last = i + 1 == count;
            let outcome = replay_file(&file.path, &mut |lsn, payload| {
                on_entry(lsn, payload);
                report.entries += 1;
            })?;
            file.last_lsn = outcome.last_lsn;
            file.bytes = outcome.valid_len;
            if let Some(lsn) = outcome.last_lsn {
                next_lsn = next_lsn.max(lsn + 1);
            }
            next_lsn = next_lsn.max(file.first_lsn);
            if outcome.valid_len < outcome.file_len {
                let torn = outcome.file_len - outcome.valid_len;
                if is_last {
                    tracing::warn!(path = %file.path.display(), torn_bytes = torn, "cutting torn WAL tail");
                } else {
                    tracing::error!(path = %file.path.display(), bad_bytes = torn, "damaged WAL file: entries after the damage are lost");
                    report.damaged_files.push(file.path.clone());
                }
                report.torn_bytes += torn;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&file.path)
                    .map_err(io_err(&file.path))?;
                f.set_len(outcome.valid_len).map_err(io_err(&file.path))?;
                f.sync_all().map_err(io_err(&file.path))?;
            }
        }
        // A file without a single valid entry holds nothing to keep, and its name may be the
        // one the new file needs: it goes before the new file is made.
        let (empty, files): (Vec<_>, Vec<_>) =
            files.into_iter().partition(|f| f.last_lsn.is_none());
        for file in &empty {
            fs::remove_file(&file.path).map_err(io_err(&file.path))?;
        }
        let (current, writer) = create_file(&opts.dir, next_lsn)?;
        Ok((
            Wal {
                dir: opts.dir.clone(),
                max_file_bytes: opts.max_file_bytes,
                closed: files,
                current,
                writer,
                current_bytes: FILE_HEADER_BYTES,
                next_lsn,
                good: Checkpoint {
                    bytes: FILE_HEADER_BYTES,
                    next_lsn,
                    last_lsn: None,
                },
            },
            report,
        ))
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Appends one entry to the OS buffers (not durable until [`Wal::sync`]) and returns its LSN.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        if payload.len() > MAX_ENTRY_BYTES {
            return Err(WalError::EntryTooLarge { len: payload.len() });
        }
        if self.current_bytes >= self.max_file_bytes {
            self.rotate()?;
        }
        let lsn = self.next_lsn;
        let lsn_bytes = lsn.to_le_bytes();
        let mut crc = crc32c::crc32c(&lsn_bytes);
        crc = crc32c::crc32c_append(crc, payload);
        let mut header = [0u8; ENTRY_HEADER_BYTES];
        header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&crc.to_le_bytes());
        header[8..16].copy_from_slice(&lsn_bytes);
        let path = &self.current.path;
        self.writer.write_all(&header).map_err(io_err(path))?;
        self.writer.write_all(payload).map_err(io_err(path))?;
        self.current_bytes += (ENTRY_HEADER_BYTES + payload.len()) as u64;
        self.current.last_lsn = Some(lsn);
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Makes every appended entry durable (write + fdatasync). On error, call
    /// [`Wal::rollback`]: the entries appended since the last success are not durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        let path = &self.current.path;
        self.writer.flush().map_err(io_err(path))?;
        self.writer.get_ref().sync_data().map_err(io_err(path))?;
        self.checkpoint();
        Ok(())
    }

    /// Hands appended entries to the OS without waiting for the disk (they survive a crash of
    /// the process, not of the machine). On error, call [`Wal::rollback`].
    pub fn flush(&mut self) -> Result<(), WalError> {
        self.writer.flush().map_err(io_err(&self.current.path))?;
        self.checkpoint();
        Ok(())
    }

    fn checkpoint(&mut self) {
        self.good = Checkpoint {
            bytes: self.current_bytes,
            next_lsn: self.next_lsn,
            last_lsn: self.current.last_lsn,
        };
    }

    /// Forgets every entry appended since the last successful [`Wal::flush`] or [`Wal::sync`]:
    /// drops buffered bytes, cuts the file back, and reuses their LSNs. Used after a failed
    /// write (disk full, I/O error), so that the log holds only whole entries and ingest can
    /// resume by itself once the cause is gone.
    pub fn rollback(&mut self) -> Result<(), WalError> {
        let path = self.current.path.clone();
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // Swap in a writer on a fresh handle first: the old one's buffer must be discarded,
        // never flushed.
        let old = std::mem::replace(&mut self.writer, BufWriter::with_capacity(1 << 20, file));
        let (_old_file, _unwritten) = old.into_parts();
        let file = self.writer.get_mut();
        file.set_len(self.good.bytes).map_err(io_err(&path))?;
        file.seek(SeekFrom::Start(self.good.bytes))
            .map_err(io_err(&path))?;
        self.current_bytes = self.good.bytes;
        self.next_lsn = self.good.next_lsn;
        self.current.last_lsn = self.good.last_lsn;
        Ok(())
    }

    /// Deletes closed files whose entries all have LSN ≤ `lsn`. If the open file is also fully
    /// covered it is rotated first, so that a quiet server does not keep a stale log around.
    pub fn truncate_through(&mut self, lsn: u64) -> Result<usize, WalError> {
        if self.current.last_lsn.is_some_and(|last| last <= lsn) {
            self.rotate()?;
        }
        let mut removed = 0;
        let mut keep = Vec::with_capacity(self.closed.len());
        for file in self.closed.drain(..) {
            let covered = match file.last_lsn {
                Some(last) => last <= lsn,
                None => true,
            };
            if covered {
                fs::remove_file(&file.path).map_err(io_err(&file.path))?;
                removed += 1;
            } else {
                keep.push(file);
            }
        }
        self.closed = keep;
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Bytes in WAL files on disk, including the open one.
    pub fn disk_bytes(&self) -> u64 {
        self.closed.iter().map(|f| f.bytes).sum::<u64>() + self.current_bytes
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        self.sync()?;
        let (file, writer) = create_file(&self.dir, self.next_lsn)?;
        let mut old = std::mem::replace(&mut self.current, file);
        old.bytes = self.current_bytes;
        self.writer = writer;
        self.current_bytes = FILE_HEADER_BYTES;
        self.closed.push(old);
        self.checkpoint();
        Ok(())
    }
}

/// Reads every valid entry in `dir` in LSN order without changing anything, for readers that
/// run beside the writer (re-indexing after a failed commit). Entries still being written are
/// simply not seen yet: a partial entry ends the scan of its file.
pub fn scan(dir: &Path, mut on_entry: impl FnMut(u64, &[u8])) -> Result<(), WalError> {
    let mut files = list_files(dir)?;
    files.sort_by_key(|f| f.first_lsn);
    for file in files {
        match replay_file(&file.path, &mut on_entry) {
            Ok(_) => {}
            // Truncated away between listing and opening: its entries were committed.
            Err(WalError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn file_name(first_lsn: u64) -> String {
    format!("wal-{first_lsn:020}.log")
}

fn list_files(dir: &Path) -> Result<Vec<WalFile>, WalError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(first_lsn) = name
            .strip_prefix("wal-")
            .and_then(|s| s.strip_suffix(".log"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        files.push(WalFile {
            first_lsn,
            last_lsn: None,
            path: entry.path(),
            bytes: 0,
        });
    }
    Ok(files)
}

fn create_file(dir: &Path, first_lsn: u64) -> Result<(WalFile, BufWriter<File>), WalError> {
    let path = dir.join(file_name(first_lsn));
    // create_new: reusing a name would silently replace a file that still holds entries.
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let mut header = [0u8; FILE_HEADER_BYTES as usize];
    header[0..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    file.write_all(&header).map_err(io_err(&path))?;
    file.sync_all().map_err(io_err(&path))?;
    sync_dir(dir)?;
    let writer = BufWriter::with_capacity(1 << 20, file);
    Ok((
        WalFile {
            first_lsn,
            last_lsn: None,
            path,
            bytes: FILE_HEADER_BYTES,
        },
        writer,
    ))
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

struct FileReplay {
    last_lsn: Option<u64>,
    /// Offset just past the last valid entry.
    valid_len: u64,
    file_len: u64,
}

fn replay_file(path: &Path, on_entry: &mut dyn FnMut(u64, &[u8])) -> Result<FileReplay, WalError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut header = [0u8; FILE_HEADER_BYTES as usize];
    if file_len < FILE_HEADER_BYTES {
        // A crash between create and the header's fsync: nothing in it was ever acknowledged.
        return Ok(FileReplay {
            last_lsn: None,
            valid_len: 0,
            file_len,
        });
    }
    file.read_exact(&mut header).map_err(io_err(path))?;
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if &header[0..8] != MAGIC || version != VERSION {
        return Err(WalError::BadHeader {
            path: path.to_path_buf(),
            version,
        });
    }
    file.seek(SeekFrom::Start(FILE_HEADER_BYTES))
        .map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut offset = FILE_HEADER_BYTES;
    let mut last_lsn = None;
    let mut payload = Vec::new();
    loop {
        let mut eh = [0u8; ENTRY_HEADER_BYTES];
        if !read_full(&mut reader, &mut eh).map_err(io_err(path))? {
            break;
        }
        let len = u32::from_le_bytes([eh[0], eh[1], eh[2], eh[3]]) as usize;
        let crc = u32::from_le_bytes([eh[4], eh[5], eh[6], eh[7]]);
        let lsn = u64::from_le_bytes(eh[8..16].try_into().unwrap_or_default());
        if len > MAX_ENTRY_BYTES || offset + (ENTRY_HEADER_BYTES + len) as u64 > file_len {
            break;
        }
        payload.resize(len, 0);
        if !read_full(&mut reader, &mut payload).map_err(io_err(path))? {
            break;
        }
        let actual = crc32c::crc32c_append(crc32c::crc32c(&eh[8..16]), &payload);
        // LSNs must strictly increase: a stale entry from an earlier file that survived a
        // truncate-and-reuse would otherwise be replayed twice.
        if actual != crc || last_lsn.is_some_and(|last| lsn <= last) {
            break;
        }
        on_entry(lsn, &payload);
        last_lsn = Some(lsn);
        offset += (ENTRY_HEADER_BYTES + len) as u64;
    }
    Ok(FileReplay {
        last_lsn,
        valid_len: offset,
        file_len,
    })
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean or partial EOF.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path, max: u64) -> WalOptions {
        WalOptions {
            dir: dir.to_path_buf(),
            max_file_bytes: max,
        }
    }

    fn reopen(dir: &Path, max: u64) -> (Wal, ReplayReport, Vec<(u64, Vec<u8>)>) {
        let mut seen = Vec::new();
        let (wal, report) =
            Wal::open(&opts(dir, max), 1, |lsn, p| seen.push((lsn, p.to_vec()))).unwrap();
        (wal, report, seen)
    }

    #[test]
    fn appends_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, seen) = reopen(dir.path(), 1 << 20);
        assert!(seen.is_empty());
        for i in 0..100u32 {
            assert_eq!(wal.append(&i.to_le_bytes()).unwrap(), i as u64 + 1);
        }
        wal.sync().unwrap();
        drop(wal);
        let (wal, report, seen) = reopen(dir.path(), 1 << 20);
        assert_eq!(report.entries, 100);
        assert_eq!(seen.len(), 100);
        assert!(seen
            .iter()
            .enumerate()
            .all(|(i, (lsn, p))| *lsn == i as u64 + 1 && p == &(i as u32).to_le_bytes()));
        assert_eq!(wal.next_lsn(), 101);
    }

    #[test]
    fn torn_tail_is_cut_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = reopen(dir.path(), 1 << 20);
        for i in 0..10u8 {
            wal.append(&[i; 100]).unwrap();
        }
        wal.sync().unwrap();
        let path = wal.current.path.clone();
        drop(wal);
        // Tear the last entry in half, as a crash mid-write would.
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 50)
            .unwrap();
        let (mut wal, report, seen) = reopen(dir.path(), 1 << 20);
        assert_eq!(seen.len(), 9);
        assert_eq!(report.torn_bytes, 66);
        assert!(report.damaged_files.is_empty());
        // The LSN of the lost entry is reused: it was never acknowledged.
        assert_eq!(wal.append(b"next").unwrap(), 10);
    }

    #[test]
    fn flipped_byte_stops_replay_at_the_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = reopen(dir.path(), 1 << 20);
        for i in 0..10u8 {
            wal.append(&[i; 100]).unwrap();
        }
        wal.sync().unwrap();
        let path = wal.current.path.clone();
        drop(wal);
        let mut bytes = fs::read(&path).unwrap();
        let fifth_payload =
            FILE_HEADER_BYTES as usize + 4 * (ENTRY_HEADER_BYTES + 100) + ENTRY_HEADER_BYTES + 7;
        bytes[fifth_payload] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let (_, _, seen) = reopen(dir.path(), 1 << 20);
        assert_eq!(seen.len(), 4);
        assert!(seen.iter().all(|(_, p)| p.len() == 100));
    }

    #[test]
    fn truncation_drops_only_covered_files_and_lsns_stay_unique() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = reopen(dir.path(), 200);
        for i in 0..20u8 {
            wal.append(&[i; 60]).unwrap();
        }
        wal.sync().unwrap();
        let files_before = list_files(dir.path()).unwrap().len();
        assert!(files_before > 3);
        let removed = wal.truncate_through(10).unwrap();
        assert!(removed >= 1);
        drop(wal);
        let (_, _, seen) = reopen(dir.path(), 200);
        assert!(
            seen.iter().all(|(lsn, _)| *lsn > 8),
            "entries above the truncation point remain"
        );
        assert!(seen.iter().any(|(lsn, _)| *lsn == 11));
        assert_eq!(seen.last().unwrap().0, 20);

        // Everything truncated: the next LSN comes from min_next_lsn.
        let (mut wal, _) = Wal::open(&opts(dir.path(), 200), 1, |_, _| {}).unwrap();
        wal.truncate_through(20).unwrap();
        drop(wal);
        let (mut wal, _) = Wal::open(&opts(dir.path(), 200), 21, |_, _| {}).unwrap();
        assert_eq!(wal.append(b"x").unwrap(), 21);
    }

    #[test]
    fn disk_bytes_matches_the_files_without_reading_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = reopen(dir.path(), 200);
        for i in 0..20u8 {
            wal.append(&[i; 60]).unwrap();
        }
        wal.flush().unwrap();
        let on_disk = |d: &Path| -> u64 {
            fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum()
        };
        assert_eq!(wal.disk_bytes(), on_disk(dir.path()));
        wal.truncate_through(10).unwrap();
        assert_eq!(wal.disk_bytes(), on_disk(dir.path()));
        drop(wal);
        let (wal, _, _) = reopen(dir.path(), 200);
        assert_eq!(wal.disk_bytes(), on_disk(dir.path()));
    }

    /// Regression: a restart after a truncation that left an empty file made the new file
    /// take the same name, and the next truncation deleted the file being written.
    #[test]
    fn restart_after_full_truncation_keeps_new_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = reopen(dir.path(), 1 << 20);
        wal.append(b"one").unwrap();
        wal.sync().unwrap();
        wal.truncate_through(1).unwrap();
        drop(wal);
        let (mut wal, _, _) = reopen(dir.path(), 1 << 20);
        wal.truncate_through(1).unwrap();
        assert_eq!(wal.append(b"two").unwrap(), 2);
        wal.sync().unwrap();
        drop(wal);
        let (_, _, seen) = reopen(dir.path(), 1 << 20);
        assert_eq!(seen, vec![(2, b"two".to_vec())]);
    }

    #[test]
    fn rollback_forgets_unflushed_entries_and_reuses_their_lsns() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = reopen(dir.path(), 1 << 20);
        wal.append(b"kept-1").unwrap();
        wal.append(b"kept-2").unwrap();
        wal.sync().unwrap();
        wal.append(b"lost-3").unwrap();
        wal.append(b"lost-4").unwrap();
        // As after a failed write: whatever was buffered or half-written goes.
        wal.rollback().unwrap();
        assert_eq!(wal.append(b"after-3").unwrap(), 3);
        wal.sync().unwrap();
        drop(wal);
        let (_, report, seen) = reopen(dir.path(), 1 << 20);
        assert_eq!(report.torn_bytes, 0);
        let payloads: Vec<_> = seen
            .iter()
            .map(|(lsn, p)| (*lsn, String::from_utf8_lossy(p).into_owned()))
            .collect();
        assert_eq!(
            payloads,
            vec![
                (1, "kept-1".into()),
                (2, "kept-2".into()),
                (3, "after-3".into())
            ]
        );

        let mut scanned = Vec::new();
        scan(dir.path(), |lsn, _| scanned.push(lsn)).unwrap();
        assert_eq!(scanned, vec![1, 2, 3]);
    }
}
