//! The write-ahead log: what makes an acknowledged record survive kill -9 and power loss.
//!
//! The WAL is a directory of files `wal-<first lsn, 20 digits>.log`. Each holds a header and a
//! sequence of entries; every entry carries its own log sequence number (LSN) and a CRC32C, so a
//! file describes itself and a torn or corrupt tail is detected instead of replayed as garbage.
//! Damage in the middle of a file is skipped to the next valid entry (found by its CRC and
//! LSN), and the damaged file is kept aside as `*.damaged`; only a torn tail of the last file
//! is cut.
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

/// An injected I/O failure named `name`, for the crash-consistency tests (`tests/faults.rs`,
/// built with the `fail` crate's `failpoints` feature); a no-op in every other build.
fn fault(name: &str, path: &Path) -> Result<(), WalError> {
    fail::fail_point!(name, |_| Err(WalError::Io {
        path: path.to_path_buf(),
        source: io::Error::other(format!("injected failure at {name}")),
    }));
    let _ = (name, path);
    Ok(())
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
    /// Bytes cut from the end of the last file because they did not form a whole, valid
    /// entry: a crash in the middle of a write.
    pub torn_bytes: u64,
    /// Files with damage anywhere but in the torn tail of the last file: a copy of each, as
    /// found, was set aside (`<name>.damaged`) before replay went on past the damage; a file
    /// whose header is not a WAL header was renamed so. Never deleted.
    pub damaged_files: Vec<PathBuf>,
    /// Damaged byte ranges that replay skipped to reach the valid entries after them (each
    /// may have held one or more entries, which are lost).
    pub skipped_ranges: u64,
    /// Bytes in those ranges, plus the damaged tails of files other than the last.
    pub skipped_bytes: u64,
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
    /// A write failed and no rollback has succeeded since: buffered or written bytes of a
    /// refused round may be in the way, so nothing is written until a rollback succeeds.
    broken: bool,
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
        let mut readable = Vec::with_capacity(files.len());
        for (i, mut file) in files.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let outcome = match replay_file(&file.path, file.first_lsn, &mut |lsn, payload| {
                on_entry(lsn, payload);
                report.entries += 1;
            }) {
                Ok(outcome) => outcome,
                Err(WalError::BadHeader { path, version }) => {
                    // Not a WAL file (or its header was destroyed): nothing in it can be read
                    // as entries, and it must not stop the server nor be deleted.
                    let aside = set_aside(&path, false)?;
                    tracing::error!(path = %path.display(), version, set_aside = %aside.display(), "WAL file with a bad header; set aside");
                    report.damaged_files.push(aside);
                    continue;
                }
                Err(e) => return Err(e),
            };
            file.last_lsn = outcome.last_lsn;
            file.bytes = outcome.file_len;
            if let Some(lsn) = outcome.last_lsn {
                next_lsn = next_lsn.max(lsn + 1);
            }
            next_lsn = next_lsn.max(file.first_lsn);
            let tail = outcome.file_len - outcome.valid_len;
            let torn_tail = is_last && tail > 0;
            if !outcome.skipped.is_empty() || (tail > 0 && !is_last) {
                // Damage that a crash mid-write cannot explain: keep the file as found, for
                // whoever investigates, before anything (a torn-tail cut, a later truncation)
                // changes it.
                let aside = set_aside(&file.path, true)?;
                let skipped: u64 = outcome.skipped.iter().map(|(_, len)| len).sum();
                tracing::error!(
                    path = %file.path.display(),
                    skipped_ranges = outcome.skipped.len(),
                    skipped_bytes = skipped,
                    damaged_tail_bytes = if is_last { 0 } else { tail },
                    copy = %aside.display(),
                    "damaged WAL file: replay skipped the damage and kept every valid entry after it"
                );
                report.skipped_ranges += outcome.skipped.len() as u64;
                report.skipped_bytes += skipped + if is_last { 0 } else { tail };
                report.damaged_files.push(aside);
            }
            if torn_tail {
                tracing::warn!(path = %file.path.display(), torn_bytes = tail, "cutting torn WAL tail");
                report.torn_bytes += tail;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&file.path)
                    .map_err(io_err(&file.path))?;
                f.set_len(outcome.valid_len).map_err(io_err(&file.path))?;
                f.sync_all().map_err(io_err(&file.path))?;
                file.bytes = outcome.valid_len;
            }
            readable.push(file);
        }
        let files = readable;
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
                broken: false,
            },
            report,
        ))
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Appends one entry to the OS buffers (not durable until [`Wal::sync`]) and returns its LSN.
    ///
    /// The entries appended between two flushes or syncs are a round: on failure
    /// [`Wal::rollback`] removes the whole round. A full file is therefore rotated only when a
    /// round starts (a file may exceed `max_file_bytes` by one round): rotating syncs and closes
    /// the file, and a round whose first part sat durable in a closed file while the rest
    /// failed was answered 507, retried by its sender, and came back twice after a crash.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        if payload.len() > MAX_ENTRY_BYTES {
            return Err(WalError::EntryTooLarge { len: payload.len() });
        }
        self.heal()?;
        let round_starts = self.current_bytes == self.good.bytes;
        if round_starts && self.current_bytes >= self.max_file_bytes {
            self.guard(Self::rotate)?;
        }
        let lsn = self.next_lsn;
        let lsn_bytes = lsn.to_le_bytes();
        let mut crc = crc32c::crc32c(&lsn_bytes);
        crc = crc32c::crc32c_append(crc, payload);
        let mut header = [0u8; ENTRY_HEADER_BYTES];
        header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&crc.to_le_bytes());
        header[8..16].copy_from_slice(&lsn_bytes);
        self.guard(|wal| {
            let path = &wal.current.path;
            fault("wal::append", path)?;
            wal.writer.write_all(&header).map_err(io_err(path))?;
            wal.writer.write_all(payload).map_err(io_err(path))
        })?;
        self.current_bytes += (ENTRY_HEADER_BYTES + payload.len()) as u64;
        self.current.last_lsn = Some(lsn);
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Makes every appended entry durable (write + fdatasync). On error, call
    /// [`Wal::rollback`]: the entries appended since the last success are not durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.heal()?;
        self.guard(|wal| {
            wal.write_buffer()?;
            let path = &wal.current.path;
            fault("wal::sync", path)?;
            wal.writer.get_ref().sync_data().map_err(io_err(path))
        })?;
        self.checkpoint();
        Ok(())
    }

    /// Hands appended entries to the OS without waiting for the disk (they survive a crash of
    /// the process, not of the machine). On error, call [`Wal::rollback`].
    pub fn flush(&mut self) -> Result<(), WalError> {
        self.heal()?;
        self.guard(Self::write_buffer)?;
        self.checkpoint();
        Ok(())
    }

    fn write_buffer(&mut self) -> Result<(), WalError> {
        let path = &self.current.path;
        fail::fail_point!("wal::flush-torn", |_| {
            // Part of the buffer reaches the file, then the write fails: a torn round.
            let half = self.writer.buffer()[..self.writer.buffer().len() / 2].to_vec();
            let _ = self.writer.get_mut().write_all(&half);
            Err(WalError::Io {
                path: path.clone(),
                source: io::Error::other("injected failure at wal::flush-torn"),
            })
        });
        fault("wal::flush", path)?;
        self.writer.flush().map_err(io_err(path))
    }

    /// Runs a write step; a failure marks the log broken until a rollback succeeds.
    fn guard<T>(
        &mut self,
        step: impl FnOnce(&mut Self) -> Result<T, WalError>,
    ) -> Result<T, WalError> {
        let result = step(self);
        self.broken |= result.is_err();
        result
    }

    /// Rolls back a failed round whose rollback failed too, before anything new is written.
    fn heal(&mut self) -> Result<(), WalError> {
        if self.broken {
            self.rollback()?;
        }
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
        self.broken = true;
        let path = self.current.path.clone();
        fault("wal::rollback", &path)?;
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
        // The cut must outlive a crash: bytes of the refused round left on disk would be
        // replayed as records their sender was told were not taken.
        file.sync_all().map_err(io_err(&path))?;
        file.seek(SeekFrom::Start(self.good.bytes))
            .map_err(io_err(&path))?;
        self.current_bytes = self.good.bytes;
        self.next_lsn = self.good.next_lsn;
        self.current.last_lsn = self.good.last_lsn;
        self.broken = false;
        Ok(())
    }

    /// Deletes closed files whose entries all have LSN ≤ `lsn`. If the open file is also fully
    /// covered it is rotated first, so that a quiet server does not keep a stale log around.
    pub fn truncate_through(&mut self, lsn: u64) -> Result<usize, WalError> {
        if self.current.last_lsn.is_some_and(|last| last <= lsn) && !self.broken {
            self.guard(Self::rotate)?;
        }
        let mut removed = 0;
        let mut failed = None;
        // A file that could not be removed stays listed (and is tried again next time).
        self.closed.retain(|file| {
            let covered = file.last_lsn.is_none_or(|last| last <= lsn);
            if !covered || failed.is_some() {
                return true;
            }
            match fault("wal::truncate", &file.path)
                .and_then(|()| fs::remove_file(&file.path).map_err(io_err(&file.path)))
            {
                Ok(()) => {
                    removed += 1;
                    false
                }
                Err(e) => {
                    failed = Some(e);
                    true
                }
            }
        });
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(removed),
        }
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
/// simply not seen yet: a partial entry ends the scan of its file. Damage is skipped as in
/// [`Wal::open`]; a file with a bad header is passed over (open sets it aside).
pub fn scan(dir: &Path, mut on_entry: impl FnMut(u64, &[u8])) -> Result<(), WalError> {
    let mut files = list_files(dir)?;
    files.sort_by_key(|f| f.first_lsn);
    for file in files {
        match replay_file(&file.path, file.first_lsn, &mut on_entry) {
            Ok(_) => {}
            Err(WalError::BadHeader { .. }) => {}
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
    // create_new: reusing a name would silently replace a file that still holds entries. A
    // file of this name without a whole entry was left by a rotation that failed after
    // creating it (its header write or an fsync failed); it holds nothing and is taken over,
    // else every later rotation would fail on it until a restart.
    let created = OpenOptions::new().create_new(true).write(true).open(&path);
    let mut file = match created {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let len = fs::metadata(&path).map_err(io_err(&path))?.len();
            if len > FILE_HEADER_BYTES {
                return Err(io_err(&path)(e));
            }
            OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
                .map_err(io_err(&path))?
        }
        other => other.map_err(io_err(&path))?,
    };
    fault("wal::create", &path)?;
    let mut header = [0u8; FILE_HEADER_BYTES as usize];
    header[0..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    file.write_all(&header).map_err(io_err(&path))?;
    fault("wal::create-sync", &path)?;
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
    fault("wal::dir-sync", dir)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Keeps `path` as `<name>.damaged` (or `.damaged.<n>` when taken): a copy when `copy`, else
/// the file itself, renamed. Returns where it went.
fn set_aside(path: &Path, copy: bool) -> Result<PathBuf, WalError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_else(|| "wal".into());
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut target = dir.join(format!("{name}.damaged"));
    let mut n = 1;
    while target.exists() {
        if copy && fs::read(&target).ok() == fs::read(path).ok() {
            // Found at an earlier start and kept since: the same evidence, already kept.
            return Ok(target);
        }
        target = dir.join(format!("{name}.damaged.{n}"));
        n += 1;
    }
    if copy {
        fs::copy(path, &target).map_err(io_err(&target))?;
        File::open(&target)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&target))?;
    } else {
        fs::rename(path, &target).map_err(io_err(path))?;
    }
    sync_dir(dir)?;
    Ok(target)
}

struct FileReplay {
    last_lsn: Option<u64>,
    /// Offset just past the last valid entry.
    valid_len: u64,
    file_len: u64,
    /// Damaged ranges `(offset, bytes)` skipped to reach valid entries after them.
    skipped: Vec<(u64, u64)>,
}

/// Replays the entries of one file. An entry that is not whole and valid (short, too large,
/// a CRC mismatch, an LSN out of order) is damage: replay looks for the next valid entry after
/// it ([`resync`]) and goes on from there, so one bad byte loses one entry, not the rest of
/// the file. Damage with no valid entry after it ends the file (`valid_len < file_len`).
fn replay_file(
    path: &Path,
    first_lsn: u64,
    on_entry: &mut dyn FnMut(u64, &[u8]),
) -> Result<FileReplay, WalError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut header = [0u8; FILE_HEADER_BYTES as usize];
    if file_len < FILE_HEADER_BYTES {
        // A crash between create and the header's fsync: nothing in it was ever acknowledged.
        return Ok(FileReplay {
            last_lsn: None,
            valid_len: 0,
            file_len,
            skipped: Vec::new(),
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
    let resync_file = file.try_clone().map_err(io_err(path))?;
    file.seek(SeekFrom::Start(FILE_HEADER_BYTES))
        .map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut offset = FILE_HEADER_BYTES;
    let mut valid_len = FILE_HEADER_BYTES;
    let mut last_lsn: Option<u64> = None;
    let mut skipped = Vec::new();
    let mut payload = Vec::new();
    while offset < file_len {
        let entry = read_entry(&mut reader, offset, file_len, last_lsn, &mut payload)
            .map_err(io_err(path))?;
        match entry {
            Some(lsn) => {
                on_entry(lsn, &payload);
                last_lsn = Some(lsn);
                offset += (ENTRY_HEADER_BYTES + payload.len()) as u64;
                valid_len = offset;
            }
            None => {
                // Entries in a file are numbered on from its name's LSN without gaps.
                let before = last_lsn.unwrap_or(first_lsn.saturating_sub(1));
                match resync(&resync_file, offset, file_len, before).map_err(io_err(path))? {
                    Some(next) => {
                        skipped.push((offset, next - offset));
                        reader.seek(SeekFrom::Start(next)).map_err(io_err(path))?;
                        offset = next;
                    }
                    None => break,
                }
            }
        }
    }
    Ok(FileReplay {
        last_lsn,
        valid_len,
        file_len,
        skipped,
    })
}

/// Reads the entry at `offset` into `payload`: `Some(lsn)` when it is whole and valid, `None`
/// when it is not (the reader's position is then undefined).
fn read_entry(
    reader: &mut impl Read,
    offset: u64,
    file_len: u64,
    last_lsn: Option<u64>,
    payload: &mut Vec<u8>,
) -> io::Result<Option<u64>> {
    let mut eh = [0u8; ENTRY_HEADER_BYTES];
    if !read_full(reader, &mut eh)? {
        return Ok(None);
    }
    let (len, crc, lsn) = parse_entry_header(&eh);
    if len > MAX_ENTRY_BYTES || offset + (ENTRY_HEADER_BYTES + len) as u64 > file_len {
        return Ok(None);
    }
    payload.resize(len, 0);
    if !read_full(reader, payload)? {
        return Ok(None);
    }
    // LSNs must strictly increase: a stale entry from an earlier file that survived a
    // truncate-and-reuse would otherwise be replayed twice.
    if entry_crc(&eh, payload) != crc || last_lsn.is_some_and(|last| lsn <= last) {
        return Ok(None);
    }
    Ok(Some(lsn))
}

fn parse_entry_header(eh: &[u8; ENTRY_HEADER_BYTES]) -> (usize, u32, u64) {
    let len = u32::from_le_bytes([eh[0], eh[1], eh[2], eh[3]]) as usize;
    let crc = u32::from_le_bytes([eh[4], eh[5], eh[6], eh[7]]);
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&eh[8..16]);
    (len, crc, u64::from_le_bytes(lsn))
}

fn entry_crc(eh: &[u8; ENTRY_HEADER_BYTES], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&eh[8..16]), payload)
}

/// Finds the first valid entry after damage at `damaged`, where an entry numbered `before + 1`
/// should have started. Every entry carries its LSN and a CRC over it and its payload, so any
/// offset can be tried: one is taken only if its length fits the file, its LSN is one that
/// could follow (above `before`, and at most one more than entries of 16 bytes or more could
/// fit since `damaged`) and its CRC matches. The offset just past the damaged entry's own
/// length is tried first: a flipped payload byte is then skipped without a search.
fn resync(file: &File, damaged: u64, file_len: u64, before: u64) -> io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let entry_at = |pos: u64, eh: &[u8; ENTRY_HEADER_BYTES]| -> io::Result<bool> {
        let (len, crc, lsn) = parse_entry_header(eh);
        let max_lsn = before + 2 + (pos - damaged) / ENTRY_HEADER_BYTES as u64;
        if len > MAX_ENTRY_BYTES
            || pos + (ENTRY_HEADER_BYTES + len) as u64 > file_len
            || lsn <= before
            || lsn > max_lsn
        {
            return Ok(false);
        }
        let mut payload = vec![0u8; len];
        file.read_exact_at(&mut payload, pos + ENTRY_HEADER_BYTES as u64)?;
        Ok(entry_crc(eh, &payload) == crc)
    };
    let header_at = |pos: u64| -> io::Result<Option<[u8; ENTRY_HEADER_BYTES]>> {
        if pos + ENTRY_HEADER_BYTES as u64 > file_len {
            return Ok(None);
        }
        let mut eh = [0u8; ENTRY_HEADER_BYTES];
        file.read_exact_at(&mut eh, pos)?;
        Ok(Some(eh))
    };
    if let Some(eh) = header_at(damaged)? {
        let (len, _, _) = parse_entry_header(&eh);
        let next = damaged + (ENTRY_HEADER_BYTES + len.min(MAX_ENTRY_BYTES)) as u64;
        if let Some(next_eh) = header_at(next)? {
            if entry_at(next, &next_eh)? {
                return Ok(Some(next));
            }
        }
    }
    // Byte by byte, through a window read in large blocks.
    const WINDOW: u64 = 1 << 20;
    let mut window = Vec::new();
    let mut start = damaged + 1;
    while start + ENTRY_HEADER_BYTES as u64 <= file_len {
        let end = (start + WINDOW + ENTRY_HEADER_BYTES as u64).min(file_len);
        window.resize((end - start) as usize, 0);
        file.read_exact_at(&mut window, start)?;
        for i in 0..=window.len() - ENTRY_HEADER_BYTES {
            let mut eh = [0u8; ENTRY_HEADER_BYTES];
            eh.copy_from_slice(&window[i..i + ENTRY_HEADER_BYTES]);
            if entry_at(start + i as u64, &eh)? {
                return Ok(Some(start + i as u64));
            }
        }
        start = end + 1 - ENTRY_HEADER_BYTES as u64;
    }
    Ok(None)
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
            // One entry per round: files rotate only between rounds.
            wal.flush().unwrap();
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

    /// The offset of entry `i` (0-based) in a file of entries of `payload` bytes each.
    fn entry_offset(i: usize, payload: usize) -> usize {
        FILE_HEADER_BYTES as usize + i * (ENTRY_HEADER_BYTES + payload)
    }

    fn flip(path: &Path, at: usize) {
        let mut bytes = fs::read(path).unwrap();
        bytes[at] ^= 0x40;
        fs::write(path, &bytes).unwrap();
    }

    fn damaged_copies(dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".damaged"))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_flipped_byte_in_the_open_file_loses_only_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = reopen(dir.path(), 1 << 20);
        for i in 0..10u8 {
            wal.append(&[i; 100]).unwrap();
            // One entry per round: files rotate only between rounds.
            wal.flush().unwrap();
        }
        wal.sync().unwrap();
        let path = wal.current.path.clone();
        drop(wal);
        let original = fs::read(&path).unwrap();
        flip(&path, entry_offset(4, 100) + ENTRY_HEADER_BYTES + 7);
        let (_, report, seen) = reopen(dir.path(), 1 << 20);
        let lsns: Vec<u64> = seen.iter().map(|(lsn, _)| *lsn).collect();
        assert_eq!(lsns, [1, 2, 3, 4, 6, 7, 8, 9, 10]);
        assert!(seen.iter().all(|(lsn, p)| p == &[*lsn as u8 - 1; 100]));
        assert_eq!((report.torn_bytes, report.skipped_ranges), (0, 1));
        assert_eq!(report.skipped_bytes, (ENTRY_HEADER_BYTES + 100) as u64);
        // The file is kept whole, and a copy as found is set aside.
        assert_eq!(report.damaged_files, damaged_copies(dir.path()));
        assert_eq!(report.damaged_files.len(), 1);
        assert_eq!(fs::read(&path).unwrap().len(), original.len());
        let mut copy = fs::read(&report.damaged_files[0]).unwrap();
        copy[entry_offset(4, 100) + ENTRY_HEADER_BYTES + 7] ^= 0x40;
        assert_eq!(copy, original);
        // A second start finds the same damage and keeps the one copy.
        let (_, report, seen) = reopen(dir.path(), 1 << 20);
        assert_eq!(seen.len(), 9);
        assert_eq!(damaged_copies(dir.path()), report.damaged_files);
    }

    /// Issue #17: one bad byte in a closed file cut it there, losing every fsynced entry
    /// after it.
    #[test]
    fn a_flipped_byte_in_a_closed_file_keeps_the_entries_after_it() {
        let dir = tempfile::tempdir().unwrap();
        // Five entries per file.
        let (mut wal, _, _) = reopen(dir.path(), entry_offset(5, 100) as u64);
        for i in 0..15u8 {
            wal.append(&[i; 100]).unwrap();
            // One entry per round: files rotate only between rounds.
            wal.flush().unwrap();
        }
        wal.sync().unwrap();
        let first = wal.closed[0].path.clone();
        drop(wal);
        assert!(list_files(dir.path()).unwrap().len() >= 3);
        // The middle entry of the first, closed file.
        flip(&first, entry_offset(2, 100) + ENTRY_HEADER_BYTES + 50);
        let (_, report, seen) = reopen(dir.path(), 1 << 20);
        let lsns: Vec<u64> = seen.iter().map(|(lsn, _)| *lsn).collect();
        assert_eq!(lsns, [1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(report.torn_bytes, 0);
        assert_eq!(report.damaged_files.len(), 1);
        assert!(first.exists(), "a damaged file is never deleted");
        let mut scanned = Vec::new();
        scan(dir.path(), |lsn, _| scanned.push(lsn)).unwrap();
        assert_eq!(scanned, lsns);
    }

    #[test]
    fn a_broken_length_is_resynced_past() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = reopen(dir.path(), 1 << 20);
        for i in 0..10u8 {
            wal.append(&vec![i; 100 + i as usize]).unwrap();
        }
        wal.sync().unwrap();
        let path = wal.current.path.clone();
        drop(wal);
        // The length of entry 4 (LSN 4) now points into the middle of a later entry.
        let at: usize = FILE_HEADER_BYTES as usize
            + (0..3).map(|i| ENTRY_HEADER_BYTES + 100 + i).sum::<usize>();
        let mut bytes = fs::read(&path).unwrap();
        bytes[at..at + 4].copy_from_slice(&250u32.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let (mut wal, report, seen) = reopen(dir.path(), 1 << 20);
        let lsns: Vec<u64> = seen.iter().map(|(lsn, _)| *lsn).collect();
        assert_eq!(lsns, [1, 2, 3, 5, 6, 7, 8, 9, 10]);
        assert_eq!((report.skipped_ranges, report.torn_bytes), (1, 0));
        assert_eq!(wal.append(b"next").unwrap(), 11);
    }

    #[test]
    fn damage_then_a_torn_tail_in_the_last_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = reopen(dir.path(), 1 << 20);
        for i in 0..10u8 {
            wal.append(&[i; 100]).unwrap();
            // One entry per round: files rotate only between rounds.
            wal.flush().unwrap();
        }
        wal.sync().unwrap();
        let path = wal.current.path.clone();
        drop(wal);
        flip(&path, entry_offset(3, 100) + 9);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 30)
            .unwrap();
        let (mut wal, report, seen) = reopen(dir.path(), 1 << 20);
        let lsns: Vec<u64> = seen.iter().map(|(lsn, _)| *lsn).collect();
        assert_eq!(lsns, [1, 2, 3, 5, 6, 7, 8, 9]);
        assert_eq!(report.torn_bytes, 86);
        assert_eq!(report.damaged_files.len(), 1);
        // The torn entry was never acknowledged: its LSN is reused.
        assert_eq!(wal.append(b"next").unwrap(), 10);
    }

    #[test]
    fn a_file_with_a_bad_header_is_set_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = reopen(dir.path(), entry_offset(5, 100) as u64);
        for i in 0..10u8 {
            wal.append(&[i; 100]).unwrap();
            // One entry per round: files rotate only between rounds.
            wal.flush().unwrap();
        }
        wal.sync().unwrap();
        let first = wal.closed[0].path.clone();
        drop(wal);
        flip(&first, 2);
        let original = fs::read(&first).unwrap();
        let (_, report, seen) = reopen(dir.path(), 1 << 20);
        assert_eq!(seen.first().map(|(lsn, _)| *lsn), Some(6));
        assert_eq!(seen.len(), 5);
        assert_eq!(report.damaged_files, damaged_copies(dir.path()));
        assert_eq!(fs::read(&report.damaged_files[0]).unwrap(), original);
        assert!(!first.exists());
    }

    #[test]
    fn truncation_drops_only_covered_files_and_lsns_stay_unique() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = reopen(dir.path(), 200);
        for i in 0..20u8 {
            wal.append(&[i; 60]).unwrap();
            // One entry per round: files rotate only between rounds.
            wal.flush().unwrap();
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
            // One entry per round: files rotate only between rounds.
            wal.flush().unwrap();
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
