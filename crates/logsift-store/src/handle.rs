//! One named index on disk:
//!
//! ```text
//! <data>/indexes/<name>/
//!     hot/                 the tantivy index being written (commits every ≤ 1 s)
//!     sealing-<id>/        a former hot index being turned into a segment (only while sealing)
//!     segments/<id>.lsseg  sealed segments, one immutable file each (see `segment`)
//!     catalog.json         the hash-chained list of sealed segments (see `catalog`)
//! ```
//!
//! Sealing renames `hot/` to `sealing-<id>/`, starts a new `hot/`, merges the old one into a
//! single segment, bundles it into `segments/<id>.lsseg`, records it in the catalog, and only
//! then deletes `sealing-<id>/`. A crash at any point is finished or undone at the next open:
//! a `sealing-` directory whose id is in the catalog is deleted, one that is not is sealed
//! again, and a segment file the catalog does not list is never served.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use logsift_core::IndexName;
use tantivy::directory::MmapDirectory;
use tantivy::indexer::LogMergePolicy;
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, Searcher};

use crate::catalog::{Catalog, CatalogEntry, SegmentInfo};
use crate::segment::{write_bundle, BundleDirectory, SEGMENT_EXT};
use crate::store::{StoreConfig, StoreError};
use crate::LogSchema;

const HOT_DIR: &str = "hot";
const SEGMENTS_DIR: &str = "segments";
const SEALING_PREFIX: &str = "sealing-";

/// Commit payload: `lsn=<N> raw=<bytes>`: every record with id ≤ N is in the index, and the
/// raw lines it holds add up to that many bytes (kept for the catalog when sealed).
fn payload(lsn: u64, raw: u64) -> String {
    format!("lsn={lsn} raw={raw}")
}

fn parse_payload(p: Option<&str>) -> (u64, u64) {
    let mut lsn = 0;
    let mut raw = 0;
    for part in p.unwrap_or_default().split_whitespace() {
        if let Some(v) = part.strip_prefix("lsn=") {
            lsn = v.parse().unwrap_or(0);
        } else if let Some(v) = part.strip_prefix("raw=") {
            raw = v.parse().unwrap_or(0);
        }
    }
    (lsn, raw)
}

struct Hot {
    index: Index,
    reader: IndexReader,
    opened: Instant,
}

/// A sealed segment being served.
pub struct Sealed {
    pub entry: CatalogEntry,
    reader: IndexReader,
}

/// One named index: the hot index the indexer writes, the sealed segments, and the catalog.
pub struct IndexHandle {
    name: IndexName,
    dir: PathBuf,
    /// An empty in-memory index with the same schema and tokenizers: what queries are
    /// compiled against, whichever index they then run on.
    query_index: Index,
    hot: RwLock<Hot>,
    /// Former hot indexes being sealed: still searched until their segment is served.
    sealing: RwLock<Vec<(String, IndexReader)>>,
    sealed: RwLock<Vec<Sealed>>,
    /// The thread finishing the current seal, if any.
    seal_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Segments that failed their checks: reported, not served.
    quarantined: RwLock<Vec<(String, String)>>,
    catalog: Mutex<Catalog>,
    /// `None` only between dropping a broken writer and opening its replacement.
    writer: Mutex<Option<IndexWriter>>,
    schema: LogSchema,
    writer_memory_bytes: usize,
    docstore_block_bytes: usize,
    /// Every record of this index with an id ≤ this is committed.
    committed_lsn: AtomicU64,
    /// Documents added since the last commit.
    pub(crate) uncommitted: AtomicU64,
    /// Raw bytes in the hot index, committed or not.
    hot_raw_bytes: AtomicU64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl IndexHandle {
    pub(crate) fn open_or_create(
        dir: &Path,
        name: IndexName,
        schema: &LogSchema,
        cfg: &StoreConfig,
    ) -> Result<Self, StoreError> {
        let tantivy_err = |source| StoreError::Tantivy {
            index: name.to_string(),
            source,
        };
        let segments_dir = dir.join(SEGMENTS_DIR);
        fs::create_dir_all(&segments_dir).map_err(io_err(&segments_dir))?;
        let catalog = Catalog::load(dir).map_err(|e| StoreError::Catalog(e.to_string()))?;

        let query_index = Index::create_in_ram(schema.schema.clone());
        LogSchema::register_tokenizers(query_index.tokenizers());
        let hot_index = open_tantivy(&dir.join(HOT_DIR), schema, cfg.docstore_block_bytes)
            .map_err(tantivy_err)?;
        let (hot_lsn, hot_raw) = parse_payload(
            hot_index
                .load_metas()
                .map_err(tantivy_err)?
                .payload
                .as_deref(),
        );
        let reader = reader_of(&hot_index).map_err(tantivy_err)?;
        let writer = new_writer(&hot_index, cfg.writer_memory_bytes).map_err(tantivy_err)?;
        let handle = IndexHandle {
            name: name.clone(),
            dir: dir.to_path_buf(),
            query_index,
            hot: RwLock::new(Hot {
                index: hot_index,
                reader,
                opened: Instant::now(),
            }),
            sealing: RwLock::new(Vec::new()),
            sealed: RwLock::new(Vec::new()),
            quarantined: RwLock::new(Vec::new()),
            seal_thread: Mutex::new(None),
            committed_lsn: AtomicU64::new(hot_lsn.max(catalog.max_lsn())),
            catalog: Mutex::new(catalog),
            writer: Mutex::new(Some(writer)),
            schema: schema.clone(),
            writer_memory_bytes: cfg.writer_memory_bytes,
            docstore_block_bytes: cfg.docstore_block_bytes,
            uncommitted: AtomicU64::new(0),
            hot_raw_bytes: AtomicU64::new(hot_raw),
        };
        handle.recover()?;
        Ok(handle)
    }

    /// Serves the catalog's segments, removes orphans, and finishes interrupted seals.
    fn recover(&self) -> Result<(), StoreError> {
        let live: Vec<CatalogEntry> = self.lock_catalog().live().into_iter().cloned().collect();
        for entry in &live {
            self.serve_segment(entry.clone());
        }
        let segments_dir = self.dir.join(SEGMENTS_DIR);
        for file in fs::read_dir(&segments_dir).map_err(io_err(&segments_dir))? {
            let path = file.map_err(io_err(&segments_dir))?.path();
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            let listed = path.extension().is_some_and(|e| e == SEGMENT_EXT)
                && live.iter().any(|e| e.segment == id);
            if !listed {
                tracing::warn!(index = %self.name, path = %path.display(), "removing a segment file the catalog does not list (an interrupted seal or deletion)");
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        for dir in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = dir.map_err(io_err(&self.dir))?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(SEALING_PREFIX))
            else {
                continue;
            };
            let id = id.to_string();
            if live.iter().any(|e| e.segment == id) {
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            } else {
                tracing::info!(index = %self.name, segment = %id, "finishing a seal interrupted by a crash");
                let index = open_tantivy(&path, &self.schema, self.docstore_block_bytes)
                    .map_err(|e| self.tantivy_err(e))?;
                let (lsn, _) = parse_payload(
                    index
                        .load_metas()
                        .map_err(|e| self.tantivy_err(e))?
                        .payload
                        .as_deref(),
                );
                self.committed_lsn.fetch_max(lsn, Ordering::AcqRel);
                let reader = reader_of(&index).map_err(|e| self.tantivy_err(e))?;
                self.sealing
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((id.clone(), reader));
                self.finish_seal(&id, &path)?;
            }
        }
        Ok(())
    }

    fn lock_catalog(&self) -> std::sync::MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a catalogued segment for searching, or quarantines it.
    fn serve_segment(&self, entry: CatalogEntry) {
        let path = self
            .dir
            .join(SEGMENTS_DIR)
            .join(format!("{}.{SEGMENT_EXT}", entry.segment));
        let opened = BundleDirectory::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|dir| Index::open(dir).map_err(|e| e.to_string()))
            .and_then(|index| {
                LogSchema::register_tokenizers(index.tokenizers());
                reader_of(&index).map_err(|e| e.to_string())
            });
        match opened {
            Ok(reader) => self
                .sealed
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .push(Sealed { entry, reader }),
            Err(why) => {
                tracing::error!(index = %self.name, segment = %entry.segment, %why, "quarantining a segment that cannot be opened; the rest keeps serving");
                self.quarantined
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((entry.segment, why));
            }
        }
    }

    pub fn name(&self) -> &IndexName {
        &self.name
    }

    /// An index with this index's schema and tokenizers, for compiling queries.
    pub fn index(&self) -> &Index {
        &self.query_index
    }

    /// A searcher over the hot index only.
    pub fn searcher(&self) -> Searcher {
        self.hot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .reader
            .searcher()
    }

    /// Searchers over everything that may hold records in `[start, end)` (ns; `None` is
    /// open): the hot index, segments being sealed, and the sealed segments whose catalogued
    /// time range overlaps. Segments outside the range are never touched.
    pub fn searchers(&self, start: Option<i64>, end: Option<i64>) -> Vec<Searcher> {
        // All three locks at once, in the order sealing takes them (hot, sealing, sealed), so
        // a search sees the parts either before or after a seal moves records between them,
        // never a mix that would count them twice or not at all.
        let hot = self.hot.read().unwrap_or_else(|p| p.into_inner());
        let sealing = self.sealing.read().unwrap_or_else(|p| p.into_inner());
        let sealed = self.sealed.read().unwrap_or_else(|p| p.into_inner());
        let mut out = vec![hot.reader.searcher()];
        out.extend(sealing.iter().map(|(_, r)| r.searcher()));
        for s in sealed.iter() {
            let after_start = start.is_none_or(|st| s.entry.max_timestamp >= st);
            let before_end = end.is_none_or(|en| s.entry.min_timestamp < en);
            if after_start && before_end {
                out.push(s.reader.searcher());
            }
        }
        out
    }

    /// Records in the index, all parts included.
    pub fn num_docs(&self) -> u64 {
        self.searchers(None, None)
            .iter()
            .map(|s| s.num_docs())
            .sum()
    }

    /// The live catalog entries, oldest first.
    pub fn segments(&self) -> Vec<CatalogEntry> {
        self.lock_catalog().live().into_iter().cloned().collect()
    }

    /// Segments that could not be opened, with the reason.
    pub fn quarantined(&self) -> Vec<(String, String)> {
        self.quarantined
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn catalog_head(&self) -> String {
        self.lock_catalog().head()
    }

    pub fn committed_lsn(&self) -> u64 {
        self.committed_lsn.load(Ordering::Acquire)
    }

    pub(crate) fn tantivy_err(&self, source: tantivy::TantivyError) -> StoreError {
        StoreError::Tantivy {
            index: self.name.to_string(),
            source,
        }
    }

    pub(crate) fn add_raw_bytes(&self, n: u64) {
        self.hot_raw_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Throws away every document added since the last commit by dropping the writer; a new
    /// one is opened on next use. tantivy kills a writer whose worker hit an I/O error, and
    /// its `rollback` does not always revive it, so a fresh writer is the only safe state.
    /// The WAL still holds the dropped records to add them again.
    pub(crate) fn reset_writer(&self) {
        let mut slot = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.uncommitted.store(0, Ordering::Release);
        // The old writer holds the index lock: it must be gone before a new one is made.
        *slot = None;
        let hot = self.hot.read().unwrap_or_else(|p| p.into_inner());
        let committed_raw = parse_payload(
            hot.index
                .load_metas()
                .ok()
                .and_then(|m| m.payload)
                .as_deref(),
        )
        .1;
        self.hot_raw_bytes.store(committed_raw, Ordering::Relaxed);
        match new_writer(&hot.index, self.writer_memory_bytes) {
            Ok(w) => *slot = Some(w),
            Err(e) => {
                tracing::warn!(index = %self.name, error = %e, "cannot reopen the index writer yet; will retry")
            }
        }
    }

    pub(crate) fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut IndexWriter) -> tantivy::Result<T>,
    ) -> Result<T, StoreError> {
        let mut slot = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let hot = self.hot.read().unwrap_or_else(|p| p.into_inner());
            *slot = Some(
                new_writer(&hot.index, self.writer_memory_bytes)
                    .map_err(|e| self.tantivy_err(e))?,
            );
        }
        let writer = slot.as_mut().ok_or_else(|| {
            self.tantivy_err(tantivy::TantivyError::InternalError("no writer".into()))
        })?;
        f(writer).map_err(|e| self.tantivy_err(e))
    }

    /// Commits everything added so far, recording that all of this index's records with
    /// id ≤ `through_lsn` are in it, then makes them visible to searches.
    pub(crate) fn commit(&self, through_lsn: u64) -> Result<(), StoreError> {
        let raw = self.hot_raw_bytes.load(Ordering::Relaxed);
        self.with_writer(|writer| {
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&payload(through_lsn, raw));
            prepared.commit().map(|_| ())
        })?;
        self.committed_lsn.store(through_lsn, Ordering::Release);
        self.uncommitted.store(0, Ordering::Release);
        let hot = self.hot.read().unwrap_or_else(|p| p.into_inner());
        hot.reader.reload().map_err(|e| self.tantivy_err(e))
    }

    /// Deletes sealed segments past the index's retention, oldest first, except what a legal
    /// hold covers. Each deletion is a catalog entry (saved before the file goes, so a crash
    /// leaves at worst an unlisted file, removed at the next start). Searches already running
    /// on a deleted segment finish normally: they hold its memory map.
    pub(crate) fn enforce_retention(
        &self,
        now_ns: i64,
        opts: &crate::IndexOptions,
    ) -> Result<usize, StoreError> {
        let mut catalog = self.lock_catalog();
        let mut live: Vec<CatalogEntry> = catalog.live().into_iter().cloned().collect();
        live.sort_by_key(|e| (e.max_timestamp, e.seq));
        let mut total: u64 = live.iter().map(|e| e.file_bytes).sum();
        let cutoff = opts
            .retention_age_secs
            .map(|s| now_ns.saturating_sub((s as i64).saturating_mul(1_000_000_000)));
        let mut doomed = Vec::new();
        for e in &live {
            let held = opts
                .legal_holds
                .iter()
                .any(|h| e.min_timestamp < h.end && e.max_timestamp >= h.start);
            let too_old = cutoff.is_some_and(|c| e.max_timestamp < c);
            let too_big = opts.retention_bytes.is_some_and(|b| total > b);
            if !(too_old || too_big) {
                continue;
            }
            if held {
                tracing::info!(index = %self.name, segment = %e.segment, "retention skips a segment under legal hold");
                continue;
            }
            let reason = if too_old {
                "retention: age"
            } else {
                "retention: size"
            };
            doomed.push((e.segment.clone(), reason));
            total -= e.file_bytes;
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        for (segment, reason) in &doomed {
            catalog.delete(segment, reason);
        }
        catalog
            .save(&self.dir)
            .map_err(|e| StoreError::Catalog(e.to_string()))?;
        drop(catalog);
        self.sealed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| !doomed.iter().any(|(d, _)| *d == s.entry.segment));
        for (segment, reason) in &doomed {
            let path = self
                .dir
                .join(SEGMENTS_DIR)
                .join(format!("{segment}.{SEGMENT_EXT}"));
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a deleted segment's file; it is removed at next start");
            }
            tracing::info!(index = %self.name, %segment, %reason, "deleted segment");
        }
        Ok(doomed.len())
    }

    /// Whether the hot index is due to be sealed: it holds `seal_docs` records, or it is
    /// older than `seal_after` and holds any.
    pub(crate) fn seal_due(&self, seal_docs: u64, seal_after: std::time::Duration) -> bool {
        // One seal at a time per index: that bounds the memory and I/O sealing takes.
        if !self
            .sealing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return false;
        }
        let hot = self.hot.read().unwrap_or_else(|p| p.into_inner());
        let docs = hot.reader.searcher().num_docs();
        docs >= seal_docs || (docs > 0 && hot.opened.elapsed() >= seal_after)
    }

    /// Seals the (committed) hot index into a segment and starts a new hot index. Must be
    /// called right after a successful commit, with nothing uncommitted. Only the swap happens
    /// here; merging and bundling run on their own thread, so ingest goes on meanwhile.
    pub(crate) fn seal(self: &Arc<Self>) -> Result<Option<String>, StoreError> {
        let mut slot = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if self.uncommitted.load(Ordering::Acquire) != 0 {
            return Ok(None);
        }
        let id = format!("{:020}", self.committed_lsn());
        let sealing_dir = self.dir.join(format!("{SEALING_PREFIX}{id}"));
        let hot_dir = self.dir.join(HOT_DIR);
        {
            let mut hot = self.hot.write().unwrap_or_else(|p| p.into_inner());
            if hot.reader.searcher().num_docs() == 0 {
                return Ok(None);
            }
            // The writer holds the hot index's lock file: gone before the directory moves.
            *slot = None;
            fs::rename(&hot_dir, &sealing_dir).map_err(io_err(&hot_dir))?;
            let index = open_tantivy(&hot_dir, &self.schema, self.docstore_block_bytes)
                .map_err(|e| self.tantivy_err(e))?;
            let reader = reader_of(&index).map_err(|e| self.tantivy_err(e))?;
            *slot = Some(
                new_writer(&index, self.writer_memory_bytes).map_err(|e| self.tantivy_err(e))?,
            );
            let old = std::mem::replace(
                &mut *hot,
                Hot {
                    index,
                    reader,
                    opened: Instant::now(),
                },
            );
            self.sealing
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .push((id.clone(), old.reader));
            self.hot_raw_bytes.store(0, Ordering::Relaxed);
        }
        drop(slot);
        let handle = self.clone();
        let thread_id = id.clone();
        let spawned = std::thread::Builder::new().name("logsift-seal".into()).spawn(move || {
            if let Err(e) = handle.finish_seal(&thread_id, &sealing_dir) {
                // Nothing is lost: the former hot index stays searchable in its `sealing-`
                // directory, and the seal is finished at the next start.
                tracing::error!(index = %handle.name, segment = %thread_id, error = %e, "sealing failed; will be finished at next start");
            }
        });
        let thread = spawned.map_err(|source| StoreError::Io {
            path: self.dir.clone(),
            source,
        })?;
        *self.seal_thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(Some(id))
    }

    /// Waits for a seal in progress to finish (graceful shutdown).
    pub fn wait_for_seal(&self) {
        let thread = self
            .seal_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// Merges `sealing_dir` into one segment, bundles it, catalogues it, serves it.
    fn finish_seal(&self, id: &str, sealing_dir: &Path) -> Result<(), StoreError> {
        let err = |e| self.tantivy_err(e);
        let index =
            open_tantivy(sealing_dir, &self.schema, self.docstore_block_bytes).map_err(err)?;
        let metas = index.load_metas().map_err(err)?;
        let (max_lsn, raw_bytes) = parse_payload(metas.payload.as_deref());
        let ids = index.searchable_segment_ids().map_err(err)?;
        {
            let mut writer: IndexWriter = index
                .writer_with_num_threads(1, self.writer_memory_bytes)
                .map_err(err)?;
            if ids.len() > 1 {
                writer.merge(&ids).wait().map_err(err)?;
            }
            // Keep the payload: the merge's own commit does not carry it.
            let mut prepared = writer.prepare_commit().map_err(err)?;
            prepared.set_payload(&payload(max_lsn, raw_bytes));
            prepared.commit().map_err(err)?;
            writer.garbage_collect_files().wait().map_err(err)?;
            writer.wait_merging_threads().map_err(err)?;
        }
        let reader = reader_of(&index).map_err(err)?;
        let searcher = reader.searcher();
        let (mut min_ts, mut max_ts, mut docs) = (i64::MAX, i64::MIN, 0u64);
        for seg in searcher.segment_readers() {
            let col = seg.fast_fields().i64("timestamp").map_err(err)?;
            if seg.num_docs() > 0 {
                min_ts = min_ts.min(col.min_value());
                max_ts = max_ts.max(col.max_value());
            }
            docs += seg.num_docs() as u64;
        }
        drop(searcher);
        drop(reader);
        let file = self
            .dir
            .join(SEGMENTS_DIR)
            .join(format!("{id}.{SEGMENT_EXT}"));
        let written =
            write_bundle(sealing_dir, &file).map_err(|e| StoreError::Catalog(e.to_string()))?;
        let entry = {
            let mut catalog = self.lock_catalog();
            let entry = catalog
                .add(SegmentInfo {
                    segment: id.to_string(),
                    min_timestamp: min_ts,
                    max_timestamp: max_ts,
                    docs,
                    raw_bytes,
                    file_bytes: written.bytes,
                    sha256: written.sha256,
                    max_lsn,
                })
                .clone();
            catalog
                .save(&self.dir)
                .map_err(|e| StoreError::Catalog(e.to_string()))?;
            entry
        };
        {
            // Swap under the sealing lock: a search sees the records in one place or the other.
            let mut sealing = self.sealing.write().unwrap_or_else(|p| p.into_inner());
            self.serve_segment(entry);
            sealing.retain(|(s, _)| s != id);
        }
        fs::remove_dir_all(sealing_dir).map_err(io_err(sealing_dir))?;
        tracing::info!(index = %self.name, segment = %id, docs, bytes = written.bytes, "sealed segment");
        Ok(())
    }
}

fn open_tantivy(
    dir: &Path,
    schema: &LogSchema,
    docstore_block_bytes: usize,
) -> tantivy::Result<Index> {
    fs::create_dir_all(dir)?;
    let directory = MmapDirectory::open(dir)?;
    let settings = IndexSettings {
        docstore_compression: Compressor::Zstd(ZstdCompressor {
            compression_level: Some(3),
        }),
        docstore_blocksize: docstore_block_bytes,
        ..IndexSettings::default()
    };
    let index = Index::builder()
        .schema(schema.schema.clone())
        .settings(settings)
        .open_or_create(directory)?;
    LogSchema::register_tokenizers(index.tokenizers());
    Ok(index)
}

fn reader_of(index: &Index) -> tantivy::Result<IndexReader> {
    index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
}

/// tantivy splits the writer's memory budget between its indexing threads and wants at least
/// 15 MB each; below 32 MB a second thread mostly adds segments to merge.
const MIN_BYTES_PER_INDEXING_THREAD: usize = 32 << 20;

pub(crate) fn new_writer(index: &Index, memory_bytes: usize) -> tantivy::Result<IndexWriter> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (memory_bytes / MIN_BYTES_PER_INDEXING_THREAD).clamp(1, cores);
    let writer: IndexWriter = index.writer_with_num_threads(threads, memory_bytes)?;
    writer.set_merge_policy(Box::new(LogMergePolicy::default()));
    Ok(writer)
}
