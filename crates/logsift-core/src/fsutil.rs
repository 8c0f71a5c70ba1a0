//! Atomic file replacement, the one piece of I/O in this crate: every small file logsift
//! replaces whole (catalog, holds, tokens, the signing key, saved searches, alert state, export
//! manifests and progress, segment bundles) goes through [`Replace`], so that each keeps the
//! same crash guarantee: after a crash the path holds either the old file or the new one,
//! complete, never a mix or a truncated file.
//!
//! The steps: write `<name>.tmp` beside the target, fsync it, rename it over the target, fsync
//! the directory. Without the file fsync a crash after the rename can leave an empty file under
//! the final name; without the directory fsync the rename itself may not survive a power loss.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A step of a replacement: where it failed, and where a fault hook may inject a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Creating the temporary file.
    Create,
    /// Filling the temporary file.
    Write,
    /// fsync of the temporary file.
    Sync,
    /// Renaming the temporary file over the target.
    Rename,
    /// fsync of the directory. The rename has happened: the new file is what a reader sees,
    /// and only a power loss could bring the old one back.
    DirSync,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Create => "creating",
            Step::Write => "writing",
            Step::Sync => "fsyncing",
            Step::Rename => "renaming into",
            Step::DirSync => "fsyncing the directory",
        })
    }
}

/// A failed replacement: the step, and the path it was working on (the temporary file up to
/// its fsync, the target for the rename, the directory for its fsync).
#[derive(Debug, thiserror::Error)]
#[error("{step} {}: {source}", path.display())]
pub struct ReplaceError {
    pub step: Step,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl ReplaceError {
    /// Whether the new file is already in place (only the directory fsync failed).
    pub fn renamed(&self) -> bool {
        self.step == Step::DirSync
    }
}

impl From<ReplaceError> for io::Error {
    fn from(e: ReplaceError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

/// A hook called before each step; an error it returns fails that step. The crates with fault
/// tests pass their `fail` points here, so this crate does not depend on `fail`.
pub type FaultHook<'a> = &'a dyn Fn(Step) -> io::Result<()>;

/// How to replace a file. `Replace::new().write(path, bytes)` is [`write_atomic`].
#[derive(Default, Clone, Copy)]
pub struct Replace<'a> {
    mode: Option<u32>,
    fault: Option<FaultHook<'a>>,
}

impl fmt::Debug for Replace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replace")
            .field("mode", &self.mode)
            .field("fault", &self.fault.is_some())
            .finish()
    }
}

/// Replaces `path` with `bytes` atomically and durably. Blocking.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReplaceError> {
    Replace::new().write(path, bytes)
}

/// The temporary file a replacement of `path` writes first: `<name>.tmp` in the same
/// directory, since a rename is atomic only within one file system.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// fsyncs directory `dir`, which makes the entries created or renamed in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl<'a> Replace<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Unix permission bits of a newly created file (`0o600` for secrets: it is never
    /// readable by others, not even as the temporary file).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Calls `hook` before each step (fault injection in tests).
    pub fn fault(mut self, hook: FaultHook<'a>) -> Self {
        self.fault = Some(hook);
        self
    }

    /// Replaces `path` with `bytes`.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), ReplaceError> {
        self.write_with(path, |file, tmp| {
            file.write_all(bytes).map_err(|source| ReplaceError {
                step: Step::Write,
                path: tmp.to_path_buf(),
                source,
            })
        })
    }

    /// Replaces `path` with what `fill` writes into the temporary file (given with its path,
    /// for error messages), for files written as a stream. `fill`'s result is returned once
    /// the new file is durable.
    pub fn write_with<T, E: From<ReplaceError>>(
        &self,
        path: &Path,
        fill: impl FnOnce(&mut File, &Path) -> Result<T, E>,
    ) -> Result<T, E> {
        let tmp = tmp_path(path);
        let at = |step: Step, p: &Path| {
            let p = p.to_path_buf();
            move |source| ReplaceError {
                step,
                path: p,
                source,
            }
        };
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if let Some(mode) = self.mode {
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        }
        self.hook(Step::Create).map_err(at(Step::Create, &tmp))?;
        let mut file = options.open(&tmp).map_err(at(Step::Create, &tmp))?;
        self.hook(Step::Write).map_err(at(Step::Write, &tmp))?;
        let out = fill(&mut file, &tmp)?;
        self.hook(Step::Sync).map_err(at(Step::Sync, &tmp))?;
        file.sync_all().map_err(at(Step::Sync, &tmp))?;
        drop(file);
        self.hook(Step::Rename).map_err(at(Step::Rename, path))?;
        std::fs::rename(&tmp, path).map_err(at(Step::Rename, path))?;
        let dir = parent(path);
        self.hook(Step::DirSync)
            .and_then(|()| sync_dir(dir))
            .map_err(at(Step::DirSync, dir))?;
        Ok(out)
    }

    /// Runs the directory fsync step again (with its fault hook), for a caller that retries
    /// after [`ReplaceError::renamed`].
    pub fn sync_dir_of(&self, path: &Path) -> io::Result<()> {
        self.hook(Step::DirSync)?;
        sync_dir(parent(path))
    }

    fn hook(&self, step: Step) -> io::Result<()> {
        match self.fault {
            Some(hook) => hook(step),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "logsift-fsutil-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_whole_and_leaves_no_temporary() {
        let dir = dir();
        let path = dir.join("doc.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        assert!(!tmp_path(&path).exists());
        assert_eq!(tmp_path(&path), dir.join("doc.json.tmp"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn runs_every_step_in_order_and_a_failure_keeps_the_old_file() {
        let dir = dir();
        let path = dir.join("state");
        write_atomic(&path, b"old").unwrap();

        let seen = RefCell::new(Vec::new());
        let record = |step| {
            seen.borrow_mut().push(step);
            Ok(())
        };
        Replace::new().fault(&record).write(&path, b"new").unwrap();
        use Step::*;
        assert_eq!(*seen.borrow(), [Create, Write, Sync, Rename, DirSync]);

        for failing in [Create, Write, Sync, Rename] {
            let fail = |step| match step == failing {
                true => Err(io::Error::other("injected")),
                false => Ok(()),
            };
            let e = Replace::new()
                .fault(&fail)
                .write(&path, b"lost")
                .unwrap_err();
            assert_eq!(e.step, failing);
            assert!(!e.renamed());
            assert_eq!(std::fs::read(&path).unwrap(), b"new", "{failing:?}");
        }
        // A failed directory fsync comes after the rename: the new file is in place.
        let fail = |step| match step {
            DirSync => Err(io::Error::other("injected")),
            _ => Ok(()),
        };
        let e = Replace::new()
            .fault(&fail)
            .write(&path, b"renamed")
            .unwrap_err();
        assert!(e.renamed());
        assert_eq!(e.path, dir);
        assert_eq!(std::fs::read(&path).unwrap(), b"renamed");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn mode_applies_to_the_new_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = dir();
        let path = dir.join("secret");
        Replace::new().mode(0o600).write(&path, b"key").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn streamed_fill_returns_its_value() {
        let dir = dir();
        let path = dir.join("bundle");
        let n = Replace::new()
            .write_with(&path, |f, _| -> Result<usize, ReplaceError> {
                f.write_all(b"abc").unwrap();
                f.write_all(b"def").unwrap();
                Ok(6)
            })
            .unwrap();
        assert_eq!(n, 6);
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdef");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
