//! Where sealed segment files live, behind one small interface: the store writes a segment
//! once, opens it to serve it, rehashes it, removes it, and lists what is there to clean up
//! after a crash. Nothing else of the store touches segment files, so that segments can move
//! to an object store (issue #18) without the store changing; catalogs, work directories and
//! the WAL stay local.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::object::ObjectStorage;

use crate::segment::{
    sha256_file, write_bundle, BundleDirectory, SegmentError, Written, SEGMENT_EXT,
};

/// The segment id a stored file or object name stands for (`<id>.lsseg`, the id without a
/// dot), or `None` for anything else: a leftover.
pub(crate) fn segment_id(name: &str) -> Option<&str> {
    name.strip_suffix(SEGMENT_EXT)
        .and_then(|n| n.strip_suffix('.'))
        .filter(|id| !id.is_empty() && !id.contains('.'))
}

/// Splits stored names into segment ids and leftovers, each sorted.
pub(crate) fn split_names(names: impl IntoIterator<Item = String>) -> (Vec<String>, Vec<String>) {
    let (mut ids, mut rest) = (Vec::new(), Vec::new());
    for name in names {
        match segment_id(&name) {
            Some(id) => ids.push(id.to_string()),
            None => rest.push(name),
        }
    }
    ids.sort();
    rest.sort();
    (ids, rest)
}

/// The directory of an index's segment files when they are local.
pub const SEGMENTS_DIR: &str = "segments";

/// Where the store keeps every index's segment files.
#[derive(Debug, Clone, Default)]
pub enum SegmentStorage {
    /// `segments/` in each index's directory.
    #[default]
    Local,
    /// An object store, read through a local cache (see [`crate::object`]).
    Object(Arc<ObjectStorage>),
}

impl SegmentStorage {
    /// The segment files of index `name`, whose local directory is `index_dir`.
    pub(crate) fn for_index(
        &self,
        index_dir: &Path,
        name: &str,
    ) -> Result<Arc<dyn SegmentFiles>, SegmentError> {
        Ok(match self {
            SegmentStorage::Local => {
                Arc::new(LocalSegments::create(&index_dir.join(SEGMENTS_DIR))?)
            }
            SegmentStorage::Object(store) => Arc::new(store.for_index(name)?),
        })
    }
}

/// The segment files of one index. Ids are the catalog's segment ids (no `.` in them).
pub trait SegmentFiles: Send + Sync {
    /// Where this index's segment files live (a directory, a URL), for messages and logs.
    fn root(&self) -> String;
    /// Where segment `id` lives.
    fn location(&self, id: &str) -> String {
        format!("{}/{id}.{SEGMENT_EXT}", self.root())
    }
    /// Bundles the files `names` of the one-segment index in `src` as segment `id`, durably:
    /// after a crash, `id` holds either the whole segment or nothing.
    fn write(&self, id: &str, src: &Path, names: &[String]) -> Result<Written, SegmentError>;
    /// Opens segment `id` to read it (its footer and directory checked).
    fn open(&self, id: &str) -> Result<BundleDirectory, SegmentError>;
    /// The size of segment `id` in bytes, or `None` when it is not there.
    fn size(&self, id: &str) -> Result<Option<u64>, SegmentError>;
    /// sha256 of segment `id` as stored, hex: what `logsift segments verify` checks.
    fn sha256(&self, id: &str) -> Result<String, SegmentError>;
    /// Checks segment `id` as stored, for `logsift segments verify`: its sha256 (hex), and
    /// whether every bundled file matches its CRC32C (the inner result). Where reading is
    /// costly, implementations read the stored bytes once for both.
    fn check(&self, id: &str) -> Result<(String, Result<(), SegmentError>), SegmentError> {
        let sha = self.sha256(id)?;
        Ok((sha, self.open(id).and_then(|d| d.verify_files())))
    }
    /// sha256 of the copy of segment `id` that searches read, hex: what the server checks
    /// after it starts. The same file, unless segments are kept elsewhere and cached.
    fn sha256_served(&self, id: &str) -> Result<String, SegmentError> {
        self.sha256(id)
    }
    /// Removes segment `id`; one that is not there is not an error.
    fn remove(&self, id: &str) -> Result<(), SegmentError>;
    /// Drops whatever this process keeps of segment `id` besides the stored segment (a
    /// cached copy), once it no longer serves it; the stored segment stays. Nothing, locally.
    fn forget(&self, id: &str) -> Result<(), SegmentError> {
        let _ = id;
        Ok(())
    }
    /// The ids of the segments stored, catalogued or not.
    fn list(&self) -> Result<Vec<String>, SegmentError>;
    /// The ids of stored segments that no write can still be publishing: what recovery may
    /// remove when the catalog does not list them. Locally that is every one (this process
    /// is the only writer and has not started one); a shared store keeps recent ones, which
    /// another process may be about to catalogue.
    fn settled(&self) -> Result<Vec<String>, SegmentError> {
        self.list()
    }
    /// What else is stored: leftovers of interrupted writes, and anything put there by hand.
    fn leftovers(&self) -> Result<Vec<String>, SegmentError>;
    /// Removes a leftover that [`Self::leftovers`] named.
    fn remove_leftover(&self, name: &str) -> Result<(), SegmentError>;
}

/// Segment files in a local directory: `<dir>/<id>.lsseg`, written under a temporary name and
/// renamed into place (see [`write_bundle`]).
#[derive(Debug, Clone)]
pub struct LocalSegments {
    dir: PathBuf,
}

impl LocalSegments {
    /// The segments in `dir`, which is created if missing.
    pub fn create(dir: &Path) -> Result<Self, SegmentError> {
        fs::create_dir_all(dir).map_err(|source| SegmentError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self::at(dir))
    }

    /// The segments in `dir`, without touching it (offline checks).
    pub fn at(dir: &Path) -> Self {
        LocalSegments {
            dir: dir.to_path_buf(),
        }
    }

    /// The file of segment `id`.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.{SEGMENT_EXT}"))
    }

    /// Removes `path`, durably: a crash must not bring back a file whose deletion the
    /// catalog recorded (it would be removed again at the next start, but `verify` would
    /// report it meanwhile).
    fn remove_file(&self, path: PathBuf) -> Result<(), SegmentError> {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(SegmentError::Io { path, source }),
        }
        logsift_core::fsutil::sync_dir(&self.dir).map_err(|source| SegmentError::Io {
            path: self.dir.clone(),
            source,
        })
    }

    /// Names in the directory, split into segment ids and the rest.
    fn names(&self) -> Result<(Vec<String>, Vec<String>), SegmentError> {
        let err = |source| SegmentError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut names = Vec::new();
        for file in fs::read_dir(&self.dir).map_err(err)? {
            names.push(
                file.map_err(err)?
                    .file_name()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        Ok(split_names(names))
    }
}

impl SegmentFiles for LocalSegments {
    fn root(&self) -> String {
        self.dir.display().to_string()
    }

    fn write(&self, id: &str, src: &Path, names: &[String]) -> Result<Written, SegmentError> {
        write_bundle(src, names, &self.path(id))
    }

    fn open(&self, id: &str) -> Result<BundleDirectory, SegmentError> {
        BundleDirectory::open(&self.path(id))
    }

    fn size(&self, id: &str) -> Result<Option<u64>, SegmentError> {
        let path = self.path(id);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SegmentError::Io { path, source }),
        }
    }

    fn sha256(&self, id: &str) -> Result<String, SegmentError> {
        sha256_file(&self.path(id))
    }

    fn remove(&self, id: &str) -> Result<(), SegmentError> {
        self.remove_file(self.path(id))
    }

    fn list(&self) -> Result<Vec<String>, SegmentError> {
        Ok(self.names()?.0)
    }

    fn leftovers(&self) -> Result<Vec<String>, SegmentError> {
        Ok(self.names()?.1)
    }

    fn remove_leftover(&self, name: &str) -> Result<(), SegmentError> {
        if name.contains('/') || name == ".." {
            return Err(SegmentError::Io {
                path: self.dir.join(name),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a name in the directory"),
            });
        }
        self.remove_file(self.dir.join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-file "index" to bundle.
    fn source(dir: &Path) -> Vec<String> {
        fs::write(dir.join("meta.json"), b"{}").unwrap();
        vec!["meta.json".to_string()]
    }

    #[test]
    fn a_segment_is_written_listed_hashed_opened_and_removed_by_id() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        let names = source(&src);
        let files = LocalSegments::create(&tmp.path().join("segments")).unwrap();
        assert!(files.list().unwrap().is_empty());
        assert_eq!(files.size("00000000000000000007").unwrap(), None);

        let written = files.write("00000000000000000007", &src, &names).unwrap();
        assert_eq!(files.list().unwrap(), vec!["00000000000000000007"]);
        assert_eq!(
            files.size("00000000000000000007").unwrap(),
            Some(written.bytes)
        );
        assert_eq!(
            files.sha256("00000000000000000007").unwrap(),
            written.sha256
        );
        let opened = files.open("00000000000000000007").unwrap();
        assert_eq!(opened.file_sizes(), vec![("meta.json".to_string(), 2)]);

        files.remove("00000000000000000007").unwrap();
        files.remove("00000000000000000007").unwrap();
        assert!(files.list().unwrap().is_empty());
        assert!(files.open("00000000000000000007").is_err());
    }

    #[test]
    fn leftovers_of_interrupted_writes_are_listed_apart_from_segments_and_removed_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let files = LocalSegments::create(tmp.path()).unwrap();
        fs::write(tmp.path().join("00000000000000000009.tmp"), b"half").unwrap();
        fs::write(tmp.path().join("stray"), b"?").unwrap();
        fs::write(tmp.path().join("00000000000000000011.lsseg"), b"?").unwrap();
        assert_eq!(files.list().unwrap(), vec!["00000000000000000011"]);
        assert_eq!(
            files.leftovers().unwrap(),
            vec!["00000000000000000009.tmp", "stray"]
        );
        files.remove_leftover("00000000000000000009.tmp").unwrap();
        files.remove_leftover("stray").unwrap();
        assert!(files.leftovers().unwrap().is_empty());
        assert!(files.remove_leftover("../x").is_err());
    }
}
