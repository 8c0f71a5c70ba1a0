//! One named index on disk:
//!
//! ```text
//! <data>/indexes/<name>/
//!     segments/<id>.lsseg  sealed segments, one immutable file each (see `segment`)
//!     building-<id>/       the output of a seal being written (only while sealing)
//!     merging-<id>/        the output of a merge of sealed segments (only while merging)
//!     catalog.json         the hash-chained list of sealed segments (see `catalog`)
//! ```
//!
//! Storage v2: records are indexed once into an in-memory *hot tier* (a tantivy index in RAM,
//! committed every ≤ 500 ms so they are searchable within a second, each committed segment
//! sorted by stream) and built once into their sealed segment: a seal swaps the hot tier for
//! an empty one and merges the old tier's segments into one zstd segment, sorted by stream, on
//! a `logsift-seal` thread. Nothing of the hot tier is written to disk: until its seal is in
//! the catalog, its records live in memory and in the WAL, which is truncated only through
//! what is sealed ([`IndexHandle::first_unsealed_lsn`]). A crash loses the hot tier and WAL
//! replay rebuilds it: every record exactly once.
//!
//! A crash at any point of a seal is undone at the next open: a `building-` directory is
//! deleted (its records are still in the WAL), and a segment file the catalog does not list is
//! never served. Merging sealed segments works the same way: the merged segment is written
//! under `merging-<id>/`, bundled, and then one catalog update adds it and deletes its sources,
//! so a crash leaves either the sources or the merged segment, never both served.
//!
//! Data directories of v1 kept a tantivy index on disk in `hot/` (and `sealing-<id>/` while
//! sealing it): at open, each is sealed into a segment like any hot tier, with a catalog entry
//! saying so, and removed.

use parking_lot::{Mutex, MutexGuard, RwLock};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logsift_core::IndexName;
use tantivy::directory::MmapDirectory;
use tantivy::fastfield::{write_alive_bitset, AliveBitSet};
use tantivy::indexer::{merge_filtered_segments, LogMergePolicy};
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, Searcher};

use crate::analyze::Analysis;
use crate::block_tier::BlockTier;
use crate::blocks::{BlockRecord, BlockSegment, BODY_FILE, FILTERS_FILE};
use crate::catalog::{Catalog, CatalogEntry, SegmentInfo};
use crate::files::SegmentFiles;
use crate::metastore::Metastore;
use crate::store::{SealPolicy, StoreConfig, StoreError};
use crate::summary::{SegmentSummary, SUMMARY_FILE};
use crate::LogSchema;

/// v1 only: the on-disk hot index, upgraded into a segment at open.
const V1_HOT_DIR: &str = "hot";
/// v1 only: a former hot index being sealed when the server stopped.
const V1_SEALING_PREFIX: &str = "sealing-";
const BUILDING_PREFIX: &str = "building-";
const MERGING_PREFIX: &str = "merging-";
/// The hot tier's doc store blocks: small, because hot hits are fetched often and the seal
/// rewrites them anyway.
const HOT_BLOCK_BYTES: usize = 64 * 1024;
/// The hot tier merges only its small segments (what a trickle of records commits): at a high
/// rate each commit's segments are larger than this and wait for the seal, which merges every
/// record exactly once.
const HOT_MERGE_MAX_DOCS: usize = 8192;
/// How long a failed seal waits before it is tried again.
const SEAL_RETRY: Duration = Duration::from_secs(5);

/// The commit payload of a v1 on-disk hot index (`meta.json`'s `payload`), written only by
/// storage v1 builds: `lsn=<N> raw=<bytes>`, every record with id ≤ N is in the index and the
/// raw lines it holds add up to that many bytes. It has no version key; its only version is 1,
/// and a `v=` key (what a later writer would add) other than `v=1` is refused as unknown.
///
/// Strict on purpose: v1 truncated the WAL below `lsn`, so a payload misread as a lower LSN
/// (the old reader took anything unparseable as 0) would have the upgrade drop the index as
/// already sealed, losing records that exist nowhere else.
fn parse_payload(p: &str) -> Result<(u64, u64), String> {
    let mut lsn = None;
    let mut raw = None;
    for part in p.split_whitespace() {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not key=value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{key}={value:?} is not a number"))
        };
        let slot = match key {
            "lsn" => &mut lsn,
            "raw" => &mut raw,
            "v" if value == "1" => continue,
            "v" => {
                return Err(format!(
                    "unknown commit payload version {value:?} (this build reads 1)"
                ))
            }
            _ => return Err(format!("unknown key {key:?}")),
        };
        if slot.replace(number()?).is_some() {
            return Err(format!("{key} given twice"));
        }
    }
    match (lsn, raw) {
        (Some(lsn), Some(raw)) => Ok((lsn, raw)),
        _ => Err("lsn= or raw= is missing".to_string()),
    }
}

struct Hot {
    data: HotData,
    opened: Instant,
}

/// What the hot tier's queries read, by layout.
enum HotData {
    /// An in-memory record index.
    Records { index: Index, reader: IndexReader },
    /// The hot tier's blocks as of its last commit (see [`BlockTier::snapshot`]).
    Blocks(Vec<Arc<BlockSegment>>),
}

impl HotData {
    fn parts(&self) -> Vec<PartReader> {
        match self {
            HotData::Records { reader, .. } => vec![PartReader::Records(reader.searcher())],
            HotData::Blocks(parts) => parts.iter().cloned().map(PartReader::Blocks).collect(),
        }
    }

    /// Committed records.
    fn docs(&self) -> u64 {
        self.parts().iter().map(PartReader::num_docs).sum()
    }
}

/// A record as [`IndexHandle::add`] is handed it.
enum Parsed<'a> {
    Record(&'a logsift_core::Record<'a>),
    Analysis(&'a Analysis<'a>),
}

/// The hot tier's writer, by layout.
// One per index, moved only when a tier is sealed: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum HotWriter {
    Records(IndexWriter),
    Blocks(BlockTier),
}

/// A former hot tier whose segment is being built: searched until that segment is served.
struct Sealing {
    /// The segment id it becomes: its highest LSN.
    id: String,
    /// What it is searched through: the hot tier as it was last committed.
    data: HotData,
    /// A tier of blocks, whose segment the seal completes where it is written (taken by the
    /// first attempt; a later one builds the segment again from `data`). `None` for records.
    blocks: Mutex<Option<Box<BlockTier>>>,
    /// Every record of the index with an id ≤ this is in this tier or sealed before it.
    max_lsn: u64,
    /// The lowest LSN it holds: the WAL keeps everything from there on until it is sealed.
    first_lsn: u64,
    raw_bytes: u64,
    /// Catalog reason of the seal.
    reason: &'static str,
    /// v1 upgrade: the on-disk index this tier was opened from, removed once sealed.
    v1_dir: Option<PathBuf>,
    /// The segment an attempt wrote (and uploaded) but could not catalogue: while the
    /// metastore is down, a retry only tries the catalog again instead of merging and
    /// uploading the whole tier every few seconds.
    written: Mutex<Option<SegmentInfo>>,
}

/// A sealed segment being served.
pub struct Sealed {
    pub entry: CatalogEntry,
    data: SealedData,
    /// `None` for segments written before summaries existed.
    summary: Option<Arc<SegmentSummary>>,
}

/// How a served segment's records are read: its layout ([`crate::Layout`]).
#[derive(Clone)]
enum SealedData {
    Records(IndexReader),
    Blocks(Arc<BlockSegment>),
}

impl Sealed {
    fn part(&self) -> PartReader {
        match &self.data {
            SealedData::Records(r) => PartReader::Records(r.searcher()),
            SealedData::Blocks(b) => PartReader::Blocks(b.clone()),
        }
    }

    fn records(&self) -> Option<&IndexReader> {
        match &self.data {
            SealedData::Records(r) => Some(r),
            SealedData::Blocks(_) => None,
        }
    }
}

/// One part of an index that a query reads: a record index (the hot tier, a tier being
/// sealed, a segment of the `records` layout) or a block segment.
#[derive(Clone)]
pub enum PartReader {
    Records(Searcher),
    Blocks(Arc<BlockSegment>),
}

impl PartReader {
    /// Records it holds.
    pub fn num_docs(&self) -> u64 {
        match self {
            PartReader::Records(s) => s.num_docs(),
            PartReader::Blocks(b) => b.num_records(),
        }
    }
}

/// One named index: the hot tier the indexer writes, tiers being sealed, the sealed segments,
/// and the catalog.
/// How many hot tiers in a row compress with the dictionary an earlier one trained before
/// one trains anew. Training (zstd's `from_samples` on 2 MiB of blocks) ran on the indexer
/// thread once per tier, a tenth of that thread's time in a perf of the e2e ingest; a tier's
/// records are like the one's before, and a new one every few tiers follows the data as it
/// changes. Segments rewritten when quiet train their own.
const HOT_DICTIONARY_REUSES: u32 = 7;

/// How many times one catalog change is applied again on top of other indexers' appends
/// before it fails like any failed save (and is retried later).
const MAX_CATCH_UPS: u32 = 8;

pub struct IndexHandle {
    name: IndexName,
    dir: PathBuf,
    /// The sealed segment files (`segments/` in `dir`).
    files: Arc<dyn SegmentFiles>,
    /// Where `catalog` is saved.
    metastore: Metastore,
    /// An empty in-memory index with the same schema and tokenizers: what queries are
    /// compiled against, whichever index they then run on.
    query_index: Index,
    hot: RwLock<Hot>,
    /// Former hot tiers being sealed, oldest first (at most one at a time, so that segments
    /// are catalogued in LSN order): still searched until their segment is served.
    sealing: RwLock<Vec<Arc<Sealing>>>,
    sealed: RwLock<Vec<Sealed>>,
    /// The thread building the current seal, if any.
    seal_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// When the last seal attempt failed: the next waits [`SEAL_RETRY`].
    seal_failed_at: Mutex<Option<Instant>>,
    /// Set at shutdown: a seal that fails is not retried.
    stopping: AtomicBool,
    /// Segments that failed their checks: reported, not served.
    quarantined: RwLock<Vec<(String, String)>>,
    /// Broken links of the catalog's hash chain found when it was loaded: the segments are
    /// still served (they pass their own checks), but the history that proves nothing was
    /// removed or altered does not hold, and `/health/ready` says so. A searcher finds them
    /// again at each refresh.
    chain_problems: RwLock<Vec<String>>,
    /// A searcher's view: segments are only served, never written, removed or cleaned up;
    /// the catalog comes from the shared metastore at each [`Self::refresh`].
    read_only: bool,
    /// See [`StoreConfig::lsn_base`]: the catalog's highest id in this range is what this
    /// process has sealed.
    lsn_base: u64,
    catalog: Mutex<Catalog>,
    /// The hot tier's writer, opened by the first record after open, a seal or a reset. An
    /// idle index holds none: a writer costs megabytes (its hash table, its worker and merge
    /// threads), and an index-name flood or a thousand quiet indexes must not multiply that.
    writer: Mutex<Option<HotWriter>>,
    schema: LogSchema,
    /// Numbers the hot tiers' directories.
    hot_tiers: AtomicU64,
    writer_memory_bytes: usize,
    /// How seals lay out segments.
    layout: crate::Layout,
    /// How this index's records are parsed (the receive time is set per record): block
    /// seals parse each record again for its words.
    parse: logsift_parse::ParseOptions,
    /// zstd level of the bodies of block segments that are rewritten (erasure) or rebuilt.
    block_zstd_level: i32,
    /// zstd level of the hot tier's blocks, paid while ingesting: the sealed level.
    hot_zstd_level: i32,
    /// The zstd dictionary the last hot tier that trained one trained, and how many tiers
    /// have used it since: see [`HOT_DICTIONARY_REUSES`].
    hot_dictionary: Mutex<Option<(Vec<u8>, u32)>>,
    /// How sealed and merged segments are written.
    sealed_settings: IndexSettings,
    /// How quiet segments are rewritten (a higher zstd level), if they are; see
    /// [`Self::maybe_recompress`].
    idle_settings: Option<IndexSettings>,
    /// The merge running in the background, if any: one at a time per index bounds the memory
    /// and I/O merging takes.
    merge_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held for a whole rewrite (merge or erasure): two at once could take the same new id
    /// (it comes from the catalog's next sequence number) and write into one directory, and
    /// the second would copy a segment the first is replacing.
    rewriting: Mutex<()>,
    /// The new segment id of the rewrite in progress, so that a shutdown can take its
    /// unfinished output away (see [`Self::abandon_rewrite`]).
    rewrite_output: Mutex<Option<String>>,
    /// Set at shutdown: rewrites still running give up, and none is recorded any more.
    rewrites_abandoned: AtomicBool,
    /// Every record of this index with an id ≤ this is searchable (hot tier committed, or
    /// sealed).
    committed_lsn: AtomicU64,
    /// The lowest LSN in the hot tier, committed or not; 0 when it is empty.
    hot_first_lsn: AtomicU64,
    /// When a record was last added, in ns after `clock_base` (when the handle was made): an
    /// idle hot tier is sealed.
    /// An atomic, not a lock: it is set for every record.
    last_add: AtomicU64,
    clock_base: Instant,
    /// Documents added since the last commit.
    pub(crate) uncommitted: AtomicU64,
    /// Raw bytes in the hot tier, committed or not.
    hot_raw_bytes: AtomicU64,
    /// Raw bytes in the hot tier as of its last commit.
    committed_raw_bytes: AtomicU64,
    /// Segments written by seals, merges and rewrites since open.
    segments_written: AtomicU64,
    /// Seals that merged and wrote a segment file (a retry that only catalogues does not).
    segments_built: AtomicU64,
    /// The store's pattern templates: a segment's summary keeps those of its records.
    patterns: Arc<crate::PatternBook>,
}

/// What a rewrite (merge or erasure) of sealed segments did.
#[derive(Debug, Clone)]
pub enum Rewritten {
    /// The sources were replaced by this segment.
    Into(CatalogEntry),
    /// Nothing was left: the sources were deleted.
    Emptied,
    /// A source was no longer live (replaced by another rewrite, or deleted by retention):
    /// nothing was done.
    SourcesGone,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl IndexHandle {
    /// `query_index` is the store's empty index that queries are compiled against (shared:
    /// one per index cost a few KiB each, and an index-name flood makes a thousand).
    pub(crate) fn open_or_create(
        dir: &Path,
        name: IndexName,
        schema: &LogSchema,
        query_index: &Index,
        cfg: &StoreConfig,
        patterns: &Arc<crate::PatternBook>,
    ) -> Result<Self, StoreError> {
        let tantivy_err = |source| StoreError::Tantivy {
            index: name.to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let files = cfg
            .segments
            .for_index(dir, name.as_str())
            .map_err(|e| StoreError::Catalog(format!("index {name}: {e}")))?;
        let catalog = cfg
            .metastore
            .load(dir, name.as_str())
            .map_err(|e| StoreError::Catalog(e.to_string()))?;

        let chain_problems = catalog.verify_chain();
        for problem in &chain_problems {
            tracing::error!(index = %name, %problem, "the catalog's hash chain is broken: its history no longer proves that no segment was removed or altered");
        }
        let hot = new_hot(schema, cfg.layout).map_err(tantivy_err)?;
        let handle = IndexHandle {
            name: name.clone(),
            dir: dir.to_path_buf(),
            files,
            metastore: cfg.metastore.clone(),
            query_index: query_index.clone(),
            hot: RwLock::new(hot),
            sealing: RwLock::new(Vec::new()),
            sealed: RwLock::new(Vec::new()),
            quarantined: RwLock::new(Vec::new()),
            chain_problems: RwLock::new(chain_problems),
            read_only: cfg.read_only,
            lsn_base: cfg.lsn_base,
            seal_thread: Mutex::new(None),
            seal_failed_at: Mutex::new(None),
            stopping: AtomicBool::new(false),
            committed_lsn: AtomicU64::new(catalog.max_lsn_from(cfg.lsn_base)),
            catalog: Mutex::new(catalog),
            writer: Mutex::new(None),
            schema: schema.clone(),
            hot_tiers: AtomicU64::new(0),
            writer_memory_bytes: cfg.writer_memory_bytes,
            layout: cfg.layout,
            parse: cfg.parse_options(name.as_str(), 0),
            // Rewrites are off the ingest path: the idle level when there is one (measured at
            // 100 MB: 0.217 B/B at level 3, 0.205 at 9, for 8.6 against about 9.5 µs of CPU per
            // record, all steps included). The hot tier pays the sealed level: zstd 9 took 45 %
            // of the indexer thread's time at 16 MB/s.
            block_zstd_level: if cfg.idle_zstd_level > 0 {
                cfg.idle_zstd_level
            } else {
                cfg.sealed_zstd_level
            },
            hot_zstd_level: cfg.sealed_zstd_level,
            hot_dictionary: Mutex::new(None),
            sealed_settings: zstd_settings(cfg, cfg.sealed_zstd_level),
            idle_settings: (cfg.idle_zstd_level > 0 && cfg.idle_recompress_ms > 0)
                .then(|| zstd_settings(cfg, cfg.idle_zstd_level)),
            merge_thread: Mutex::new(None),
            rewriting: Mutex::new(()),
            rewrite_output: Mutex::new(None),
            rewrites_abandoned: AtomicBool::new(false),
            hot_first_lsn: AtomicU64::new(0),
            last_add: AtomicU64::new(0),
            clock_base: Instant::now(),
            uncommitted: AtomicU64::new(0),
            hot_raw_bytes: AtomicU64::new(0),
            committed_raw_bytes: AtomicU64::new(0),
            segments_written: AtomicU64::new(0),
            segments_built: AtomicU64::new(0),
            patterns: patterns.clone(),
        };
        handle.recover()?;
        Ok(handle)
    }

    /// Serves the catalog's segments, removes orphans and abandoned work directories, and
    /// upgrades a v1 on-disk hot index into a segment.
    fn recover(&self) -> Result<(), StoreError> {
        let live: Vec<CatalogEntry> = self.lock_catalog().live().into_iter().cloned().collect();
        for entry in &live {
            self.serve_segment(entry.clone());
        }
        if self.read_only {
            // What looks orphaned to a searcher may be an indexer's upload about to be
            // published, and work directories are the indexers' own.
            return Ok(());
        }
        let files_err = |e: crate::segment::SegmentError| self.store_err(e.to_string());
        for name in self.files.leftovers().map_err(files_err)? {
            tracing::warn!(index = %self.name, file = %name, "removing a leftover among the segment files (an interrupted seal or merge)");
            self.files.remove_leftover(&name).map_err(files_err)?;
        }
        for id in self.files.settled().map_err(files_err)? {
            if !live.iter().any(|e| e.segment == id) {
                tracing::warn!(index = %self.name, segment = %self.files.location(&id), "removing a segment the catalog does not list (an interrupted seal or deletion)");
                self.files.remove(&id).map_err(files_err)?;
            }
        }
        let mut v1_dirs = Vec::new();
        for dir in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = dir.map_err(io_err(&self.dir))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with(MERGING_PREFIX) || name.starts_with(BUILDING_PREFIX) {
                // A merge or seal the catalog does not record is abandoned (its sources are
                // still live, or still in the WAL); one it records was bundled already. Either
                // way the directory is spare.
                tracing::info!(index = %self.name, dir = %path.display(), "removing the work directory of an interrupted merge or seal");
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            } else if let Some(id) = name.strip_prefix(V1_SEALING_PREFIX) {
                if live.iter().any(|e| e.segment == id) {
                    fs::remove_dir_all(&path).map_err(io_err(&path))?;
                } else {
                    v1_dirs.push(path);
                }
            } else if name == V1_HOT_DIR {
                v1_dirs.push(path);
            }
        }
        // Oldest first: a v1 `sealing-` directory holds records older than `hot/`'s.
        v1_dirs.sort_by_key(|p| p.file_name() == Some(std::ffi::OsStr::new(V1_HOT_DIR)));
        for path in v1_dirs {
            self.upgrade_v1_dir(&path)?;
        }
        Ok(())
    }

    /// Seals a v1 on-disk hot index (`hot/` or an interrupted `sealing-<id>/`) into a segment,
    /// recorded in the catalog chain as an upgrade, and removes it. Its records above its
    /// commit payload's LSN are still in the WAL and are replayed into the hot tier.
    fn upgrade_v1_dir(&self, path: &Path) -> Result<(), StoreError> {
        let err = |e| self.tantivy_err(e);
        let index = open_v1(path, &self.schema).map_err(err)?;
        let payload = index.load_metas().map_err(err)?.payload;
        let reader = reader_of(&index).map_err(err)?;
        let docs = reader.searcher().num_docs();
        // An index without documents holds nothing to lose, whatever its payload says (a v1
        // index that never committed has none). With documents, a missing or damaged payload
        // stops this index from opening, and with it the server: guessing an LSN either drops
        // records (too low) or skips replaying WAL entries (too high), and the directory is
        // left untouched for whoever repairs it.
        let (lsn, raw_bytes) = if docs == 0 {
            (0, 0)
        } else {
            payload
                .as_deref()
                .ok_or_else(|| "no commit payload".to_string())
                .and_then(parse_payload)
                .map_err(|why| StoreError::CommitPayload {
                    index: self.name.to_string(),
                    path: path.to_path_buf(),
                    why,
                })?
        };
        if docs == 0 || lsn <= self.lock_catalog().max_lsn_from(self.lsn_base) {
            tracing::info!(index = %self.name, dir = %path.display(), docs, "removing a v1 hot index with nothing left to seal");
            drop(reader);
            drop(index);
            return fs::remove_dir_all(path).map_err(io_err(path));
        }
        tracing::info!(index = %self.name, dir = %path.display(), docs, lsn, "upgrading a v1 hot index: sealing it into a segment");
        self.committed_lsn.fetch_max(lsn, Ordering::AcqRel);
        let tier = Arc::new(Sealing {
            id: format!("{lsn:020}"),
            data: HotData::Records { index, reader },
            blocks: Mutex::new(None),
            max_lsn: lsn,
            first_lsn: 1,
            raw_bytes,
            reason: "upgrade: v1 hot index sealed",
            v1_dir: Some(path.to_path_buf()),
            written: Mutex::new(None),
        });
        self.sealing.write().push(tier.clone());
        self.finish_seal(&tier)
    }

    fn save_catalog(&self, catalog: &Catalog) -> Result<(), crate::CatalogError> {
        self.metastore.save(&self.dir, self.name.as_str(), catalog)
    }

    fn lock_catalog(&self) -> MutexGuard<'_, Catalog> {
        self.catalog.lock()
    }

    /// Opens a catalogued segment for searching, or quarantines it.
    fn serve_segment(&self, entry: CatalogEntry) {
        if let Some(s) = self.open_segment(entry) {
            self.sealed.write().push(s);
        }
    }

    /// A catalogued segment opened for searching; `None` (quarantined) if it cannot be.
    fn open_segment(&self, entry: CatalogEntry) -> Option<Sealed> {
        let opened = self
            .files
            .open(&entry.segment)
            .map_err(|e| e.to_string())
            .and_then(|dir| {
                let summary = SegmentSummary::read_in(&dir).map(Arc::new);
                if tantivy::Directory::exists(&dir, Path::new(BODY_FILE)).unwrap_or(false) {
                    let label = PathBuf::from(self.files.location(&entry.segment));
                    let blocks = BlockSegment::open_in(dir, &label).map_err(|e| e.to_string())?;
                    return Ok((SealedData::Blocks(Arc::new(blocks)), summary));
                }
                let index = Index::open(dir).map_err(|e| e.to_string())?;
                LogSchema::register_tokenizers(index.tokenizers());
                reader_of(&index)
                    .map(|r| (SealedData::Records(r), summary))
                    .map_err(|e| e.to_string())
            });
        match opened {
            Ok((data, summary)) => Some(Sealed {
                entry,
                data,
                summary,
            }),
            Err(why) => {
                tracing::error!(index = %self.name, segment = %entry.segment, %why, "quarantining a segment that cannot be opened; the rest keeps serving");
                self.quarantined.write().push((entry.segment, why));
                None
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

    /// Searchers over the record indexes that may hold records in `[start, end)` (ns; `None`
    /// is open): the hot index, segments being sealed, and the sealed segments of the
    /// `records` layout whose catalogued time range overlaps. Block segments are left out:
    /// [`Self::parts`] gives them too.
    pub fn searchers(&self, start: Option<i64>, end: Option<i64>) -> Vec<Searcher> {
        self.parts(start, end)
            .into_iter()
            .filter_map(|(p, _)| match p {
                PartReader::Records(s) => Some(s),
                PartReader::Blocks(_) => None,
            })
            .collect()
    }

    /// Everything that may hold records in `[start, end)` (ns; `None` is open): the hot
    /// index, segments being sealed, and the sealed segments whose catalogued time range
    /// overlaps, each with its summary (`None` for the hot tier, tiers being sealed, and
    /// segments written without one). Segments outside the range are never touched.
    pub fn parts(
        &self,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Vec<(PartReader, Option<Arc<SegmentSummary>>)> {
        self.parts_named(start, end)
            .into_iter()
            .map(|(reader, summary, _)| (reader, summary))
            .collect()
    }

    /// [`Self::parts`], each sealed segment with its id (`None` for what is in memory): what
    /// a search split between processes assigns by.
    #[allow(clippy::type_complexity)]
    pub fn parts_named(
        &self,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Vec<(PartReader, Option<Arc<SegmentSummary>>, Option<String>)> {
        // All three locks at once, in the order sealing takes them (hot, sealing, sealed), so
        // a search sees the parts either before or after a seal moves records between them,
        // never a mix that would count them twice or not at all.
        let hot = self.hot.read();
        let sealing = self.sealing.read();
        let sealed = self.sealed.read();
        let mut out: Vec<(PartReader, Option<Arc<SegmentSummary>>, Option<String>)> = hot
            .data
            .parts()
            .into_iter()
            .map(|p| (p, None, None))
            .collect();
        for t in sealing.iter() {
            out.extend(t.data.parts().into_iter().map(|p| (p, None, None)));
        }
        for s in sealed.iter() {
            let after_start = start.is_none_or(|st| s.entry.max_timestamp >= st);
            let before_end = end.is_none_or(|en| s.entry.min_timestamp < en);
            if after_start && before_end {
                out.push((s.part(), s.summary.clone(), Some(s.entry.segment.clone())));
            }
        }
        out
    }

    /// Committed records in the hot tier.
    pub(crate) fn hot_docs(&self) -> u64 {
        self.hot.read().data.docs()
    }

    /// Records in the index, all parts included.
    pub fn num_docs(&self) -> u64 {
        self.parts(None, None)
            .iter()
            .map(|(p, _)| p.num_docs())
            .sum()
    }

    /// The live catalog entries, oldest first.
    pub fn segments(&self) -> Vec<CatalogEntry> {
        self.lock_catalog().live().into_iter().cloned().collect()
    }

    /// Rehashes every served segment file against the sha256 the catalog recorded and
    /// quarantines the ones that differ (opening a segment checks only its footer and
    /// directory, which a flipped byte in the data does not touch). Returns how many failed.
    pub fn check_segments(&self) -> usize {
        let entries: Vec<CatalogEntry> =
            self.sealed.read().iter().map(|s| s.entry.clone()).collect();
        let mut failed = 0;
        for entry in entries {
            let why = match self.files.sha256_served(&entry.segment) {
                Ok(sha) if sha == entry.sha256 => continue,
                Ok(sha) => format!(
                    "sha256 {sha} differs from {} recorded in the catalog",
                    entry.sha256
                ),
                Err(e) => e.to_string(),
            };
            // A merge or retention may have replaced it meanwhile: only a served one counts.
            let mut sealed = self.sealed.write();
            let before = sealed.len();
            sealed.retain(|s| s.entry.segment != entry.segment);
            if sealed.len() == before {
                continue;
            }
            drop(sealed);
            failed += 1;
            tracing::error!(index = %self.name, segment = %entry.segment, %why, "quarantining a segment that fails its checksum; the rest keeps serving");
            self.quarantined.write().push((entry.segment, why));
        }
        failed
    }

    /// A refresh from the metastore (a searcher's, or an indexer's beside others): serves what
    /// `catalog` (the metastore's chain of this index, loaded before the call) lists, unless
    /// the chain held here has moved past it meanwhile (a seal here saved after the load).
    /// Returns how many segments were opened and how many dropped.
    pub(crate) fn refresh(&self, catalog: Catalog) -> (usize, usize) {
        let mut held = self.lock_catalog();
        let head = held.entries.last().map(|e| e.hash.clone());
        if head.is_some_and(|h| !catalog.entries.iter().any(|e| e.hash == h)) {
            return (0, 0);
        }
        self.adopt(&mut held, catalog)
    }

    /// Makes `loaded` (the metastore's chain) the catalog held in `held` (this handle's,
    /// locked by the caller) and serves what it lists. Segments it adds are opened first
    /// (downloaded into the cache if need be), then swapped in together with the removal of
    /// those it no longer lists, in one step: a search sees a merge's output or its sources,
    /// never both or neither. Searches already running on a removed segment finish on its
    /// memory map; its cached copy is dropped. Returns how many were opened and dropped.
    fn adopt(&self, held: &mut Catalog, loaded: Catalog) -> (usize, usize) {
        let problems = loaded.verify_chain();
        {
            let known = self.chain_problems.read();
            for problem in problems.iter().filter(|p| !known.contains(p)) {
                tracing::error!(index = %self.name, %problem, "the metastore's catalog chain is broken: its history no longer proves that no segment was removed or altered");
            }
        }
        let live: Vec<CatalogEntry> = loaded.live().into_iter().cloned().collect();
        let live_ids: std::collections::HashSet<&str> =
            live.iter().map(|e| e.segment.as_str()).collect();
        let served: std::collections::HashSet<String> = self
            .sealed
            .read()
            .iter()
            .map(|s| s.entry.segment.clone())
            .chain(self.quarantined.read().iter().map(|(id, _)| id.clone()))
            .collect();
        let opened: Vec<Sealed> = live
            .iter()
            .filter(|e| !served.contains(&e.segment))
            .filter_map(|e| self.open_segment(e.clone()))
            .collect();
        let added = opened.len();
        let mut dropped = Vec::new();
        {
            let mut sealed = self.sealed.write();
            sealed.retain(|s| {
                let keep = live_ids.contains(s.entry.segment.as_str());
                if !keep {
                    dropped.push(s.entry.segment.clone());
                }
                keep
            });
            sealed.extend(opened);
        }
        self.quarantined
            .write()
            .retain(|(id, _)| live_ids.contains(id.as_str()));
        for id in &dropped {
            if let Err(e) = self.files.forget(id) {
                tracing::warn!(index = %self.name, segment = %id, error = %e, "cannot drop the cached copy of a segment no longer served");
            }
        }
        self.committed_lsn
            .fetch_max(loaded.max_lsn_from(self.lsn_base), Ordering::AcqRel);
        *self.chain_problems.write() = problems;
        *held = loaded;
        (added, dropped.len())
    }

    /// After a save that another indexer's append refused ([`crate::CatalogError::Moved`]):
    /// takes the metastore's chain into `held` (this handle's, locked by the caller), so
    /// that the caller can apply its change again on top.
    fn catch_up(&self, held: &mut Catalog) -> Result<(), StoreError> {
        let loaded = self
            .metastore
            .load(&self.dir, self.name.as_str())
            .map_err(|e| StoreError::Catalog(e.to_string()))?;
        let (opened, dropped) = self.adopt(held, loaded);
        tracing::info!(index = %self.name, opened, dropped, "another indexer appended to the catalog; applying this change on top");
        Ok(())
    }

    /// Segments written by seals, merges and rewrites since open.
    pub fn segments_written(&self) -> u64 {
        self.segments_written.load(Ordering::Relaxed)
    }

    /// Seal attempts that merged a tier and wrote its segment file, catalogued or not.
    pub fn segments_built(&self) -> u64 {
        self.segments_built.load(Ordering::Relaxed)
    }

    /// Segments that could not be opened, with the reason.
    pub fn quarantined(&self) -> Vec<(String, String)> {
        self.quarantined.read().clone()
    }

    /// The broken links of the catalog's hash chain found at open (empty: it holds).
    pub fn chain_problems(&self) -> Vec<String> {
        self.chain_problems.read().clone()
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

    /// Throws away every document added since the last commit by dropping the writer; a new
    /// one is opened on next use. tantivy kills a writer whose worker hit an error, and its
    /// `rollback` does not always revive it, so a fresh writer is the only safe state. The WAL
    /// still holds the dropped records to add them again.
    ///
    /// A hot tier of blocks cannot drop only what came since its commit: it is dropped whole,
    /// and the committed LSN goes back to what is sealed or being sealed, so that the re-apply
    /// from the WAL (which keeps everything unsealed) adds the whole tier again.
    pub(crate) fn reset_writer(&self) {
        let mut slot = self.writer.lock();
        self.uncommitted.store(0, Ordering::Release);
        if matches!(&*slot, Some(HotWriter::Blocks(_))) {
            let catalogued = self.lock_catalog().max_lsn_from(self.lsn_base);
            let mut hot = self.hot.write();
            let sealing = self.sealing.read();
            let kept = sealing
                .iter()
                .map(|t| t.max_lsn)
                .max()
                .unwrap_or(0)
                .max(catalogued);
            hot.data = HotData::Blocks(Vec::new());
            hot.opened = Instant::now();
            self.committed_lsn.store(kept, Ordering::Release);
            self.hot_first_lsn.store(0, Ordering::Release);
            self.committed_raw_bytes.store(0, Ordering::Relaxed);
            if let Some(HotWriter::Blocks(tier)) = slot.take() {
                remove_scratch(tier.dir());
            }
        }
        *slot = None;
        self.hot_raw_bytes.store(
            self.committed_raw_bytes.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }

    /// Notes that the record `lsn` was added to the hot tier (not yet committed).
    pub(crate) fn note_added(&self, lsn: u64, raw_bytes: u64) {
        self.hot_raw_bytes.fetch_add(raw_bytes, Ordering::Relaxed);
        self.uncommitted.fetch_add(1, Ordering::Relaxed);
        // Loaded first: a failing compare-exchange still takes the cache line for writing.
        if self.hot_first_lsn.load(Ordering::Acquire) == 0 {
            let _ =
                self.hot_first_lsn
                    .compare_exchange(0, lsn, Ordering::AcqRel, Ordering::Acquire);
        }
        self.last_add.store(
            self.clock_base.elapsed().as_nanos() as u64,
            Ordering::Relaxed,
        );
    }

    /// The lowest LSN of this index that is not in a sealed segment yet (in the hot tier or a
    /// tier being sealed), if any: the WAL must keep it and everything after it.
    pub fn first_unsealed_lsn(&self) -> Option<u64> {
        let sealing = self.sealing.read();
        let hot = self.hot_first_lsn.load(Ordering::Acquire);
        sealing
            .iter()
            .map(|t| t.first_lsn)
            .chain((hot != 0).then_some(hot))
            .min()
    }

    /// The hot tier's writer, opened if there is none.
    fn open_writer(&self) -> Result<MutexGuard<'_, Option<HotWriter>>, StoreError> {
        let mut slot = self.writer.lock();
        if slot.is_none() {
            let hot = self.hot.read();
            *slot = Some(match &hot.data {
                HotData::Records { index, .. } => HotWriter::Records(
                    new_writer(index, self.writer_memory_bytes).map_err(|e| self.tantivy_err(e))?,
                ),
                HotData::Blocks(_) => {
                    let n = self.hot_tiers.fetch_add(1, Ordering::Relaxed);
                    let dir = self.dir.join(format!("{BUILDING_PREFIX}hot-{n}"));
                    if dir.exists() {
                        fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
                    }
                    let mut tier = BlockTier::new(&dir, self.hot_zstd_level, true)
                        .map_err(|e| self.store_err(e.to_string()))?;
                    let mut kept = self.hot_dictionary.lock();
                    match kept.as_mut() {
                        Some((dictionary, uses)) if *uses < HOT_DICTIONARY_REUSES => {
                            *uses += 1;
                            tier = tier.with_trained_dictionary(dictionary.clone());
                        }
                        // This tier trains one, kept when it is sealed.
                        _ => *kept = None,
                    }
                    HotWriter::Blocks(tier)
                }
            });
        }
        Ok(slot)
    }

    /// Adds a record to the hot tier (searchable at the next commit). `record` is
    /// `entry.raw` parsed with the index's options; `lsn` becomes its id.
    pub(crate) fn add_record(
        &self,
        lsn: u64,
        entry: &logsift_core::entry::Entry<'_>,
        record: &logsift_core::Record<'_>,
        pattern: u32,
    ) -> Result<(), StoreError> {
        self.add(lsn, entry, Parsed::Record(record), pattern)
    }

    /// [`IndexHandle::add_record`] for a record analysed beforehand (the `blocks` layout).
    pub(crate) fn add_analyzed(
        &self,
        lsn: u64,
        entry: &logsift_core::entry::Entry<'_>,
        analysis: &Analysis<'_>,
        pattern: u32,
    ) -> Result<(), StoreError> {
        self.add(lsn, entry, Parsed::Analysis(analysis), pattern)
    }

    fn add(
        &self,
        lsn: u64,
        entry: &logsift_core::entry::Entry<'_>,
        parsed: Parsed<'_>,
        pattern: u32,
    ) -> Result<(), StoreError> {
        // Noted under the writer lock: a seal swapping the hot tier must see the record as
        // uncommitted, or it would drop it with the old writer.
        let mut slot = self.open_writer()?;
        let block_record = |timestamp: Option<i64>| BlockRecord {
            id: lsn,
            timestamp: timestamp.unwrap_or(entry.received_at),
            received_at: entry.received_at,
            format: entry.format,
            source: entry.source,
            raw: entry.raw,
            pattern,
        };
        match (slot.as_mut(), parsed) {
            (Some(HotWriter::Records(w)), Parsed::Record(record)) => {
                let doc = crate::build_document(&self.schema, lsn, entry, record, pattern);
                w.add_document(doc).map_err(|e| self.tantivy_err(e))?;
            }
            (Some(HotWriter::Records(w)), Parsed::Analysis(_)) => {
                // Analysed for blocks, but this index writes records: parsed here instead.
                let opts = logsift_parse::ParseOptions {
                    received_at_ns: entry.received_at,
                    ..self.parse
                };
                let record = logsift_parse::parse(entry.format, entry.raw, &opts);
                let doc = crate::build_document(&self.schema, lsn, entry, &record, pattern);
                w.add_document(doc).map_err(|e| self.tantivy_err(e))?;
            }
            (Some(HotWriter::Blocks(tier)), Parsed::Record(record)) => {
                tier.add(&block_record(record.timestamp), record)
            }
            (Some(HotWriter::Blocks(tier)), Parsed::Analysis(a)) => {
                tier.add_analyzed(&block_record(a.timestamp), a)
            }
            (None, _) => return Err(self.store_err("no hot writer".into())),
        }
        self.note_added(lsn, entry.raw.len() as u64);
        Ok(())
    }

    /// Commits everything added so far to the hot tier, so that all of this index's records
    /// with id ≤ `through_lsn` are searchable, and makes them visible.
    pub(crate) fn commit(&self, through_lsn: u64) -> Result<(), StoreError> {
        // Under the writer lock throughout: a seal (which may run on an erasure's thread)
        // sees either everything before this commit or everything after it.
        {
            let slot = self.writer.lock();
            if slot.is_none() && self.uncommitted.load(Ordering::Acquire) == 0 {
                // Nothing was added since the writer went: everything is already visible.
                self.committed_lsn.fetch_max(through_lsn, Ordering::AcqRel);
                return Ok(());
            }
        }
        let mut slot = self.open_writer()?;
        let raw = self.hot_raw_bytes.load(Ordering::Relaxed);
        match slot.as_mut() {
            Some(HotWriter::Records(writer)) => {
                writer.commit().map_err(|e| self.tantivy_err(e))?;
            }
            Some(HotWriter::Blocks(tier)) => {
                let parts = tier.snapshot().map_err(|e| self.store_err(e.to_string()))?;
                self.hot.write().data = HotData::Blocks(parts);
            }
            None => return Err(self.store_err("no hot writer".into())),
        }
        self.committed_lsn.store(through_lsn, Ordering::Release);
        self.committed_raw_bytes.store(raw, Ordering::Relaxed);
        self.uncommitted.store(0, Ordering::Release);
        if let HotData::Records { reader, .. } = &self.hot.read().data {
            reader.reload().map_err(|e| self.tantivy_err(e))?;
        }
        Ok(())
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
        let before = catalog.entries.len();
        for (segment, reason) in &doomed {
            catalog.delete(segment, reason);
        }
        match self.save_catalog(&catalog) {
            Ok(()) => {}
            Err(crate::CatalogError::Moved(_)) => {
                // Another indexer's chain is taken in; retention looks again next time.
                catalog.entries.truncate(before);
                self.catch_up(&mut catalog)?;
                return Ok(0);
            }
            Err(e) => return Err(StoreError::Catalog(e.to_string())),
        }
        drop(catalog);
        self.sealed
            .write()
            .retain(|s| !doomed.iter().any(|(d, _)| *d == s.entry.segment));
        for (segment, reason) in &doomed {
            if let Err(e) = self.files.remove(segment) {
                tracing::warn!(%segment, error = %e, "cannot remove a deleted segment's file; it is removed at next start");
            }
            tracing::info!(index = %self.name, %segment, %reason, "deleted segment");
        }
        Ok(doomed.len())
    }

    /// Whether the hot tier has a writer open (it costs megabytes, see `writer`).
    pub(crate) fn writer_open(&self) -> bool {
        self.writer.lock().is_some()
    }

    fn since_last_add(&self) -> Duration {
        let last = Duration::from_nanos(self.last_add.load(Ordering::Relaxed));
        self.clock_base.elapsed().saturating_sub(last)
    }

    /// How long since a record was last added.
    pub(crate) fn idle_for(&self) -> Duration {
        self.since_last_add()
    }

    /// Why the hot tier is due to be sealed now, if it is: it holds `seal_docs` records, it
    /// is older than `seal_after`, nothing was added for `seal_idle` (so that a quiet index
    /// leaves nothing unsealed behind), or it holds back more than `seal_docs` WAL entries
    /// behind `applied_lsn` (a slow index must not make the WAL grow with a busy one's).
    pub(crate) fn seal_due(&self, policy: &SealPolicy, applied_lsn: u64) -> Option<&'static str> {
        // One seal at a time per index: segments are catalogued in LSN order, and the memory
        // and I/O sealing takes stay bounded.
        if !self.sealing.read().is_empty() {
            return None;
        }
        let hot = self.hot.read();
        let docs = hot.data.docs();
        if docs == 0 {
            return None;
        }
        let first = self.hot_first_lsn.load(Ordering::Acquire);
        let idle = self.since_last_add();
        if docs >= policy.docs {
            Some("size")
        } else if hot.opened.elapsed() >= policy.after {
            Some("age")
        } else if policy.idle.is_some_and(|i| idle >= i) {
            Some("idle")
        } else if first != 0 && applied_lsn.saturating_sub(first) >= policy.docs {
            Some("wal")
        } else {
            None
        }
    }

    /// Swaps the (committed) hot tier for an empty one and builds the old one's segment on a
    /// `logsift-seal` thread, so ingest goes on meanwhile. Does nothing (returns `None`) while
    /// records are uncommitted, another seal runs, or the hot tier is empty.
    pub(crate) fn seal(self: &Arc<Self>, why: &'static str) -> Result<Option<String>, StoreError> {
        let mut slot = self.writer.lock();
        if self.uncommitted.load(Ordering::Acquire) != 0 {
            return Ok(None);
        }
        let max_lsn = self.committed_lsn();
        let id = format!("{max_lsn:020}");
        let tier = {
            let mut hot = self.hot.write();
            let mut sealing = self.sealing.write();
            if !sealing.is_empty() || hot.data.docs() == 0 {
                return Ok(None);
            }
            let fresh = new_hot(&self.schema, self.layout).map_err(|e| self.tantivy_err(e))?;
            // Dropping the old writer stops its merges on the old tier (a tier of blocks goes
            // with it, to be completed); the next record opens a writer on the fresh one.
            let blocks = match slot.take() {
                Some(HotWriter::Blocks(tier)) => {
                    let mut kept = self.hot_dictionary.lock();
                    if kept.is_none() && !tier.dictionary().is_empty() {
                        *kept = Some((tier.dictionary().to_vec(), 0));
                    }
                    Some(Box::new(tier))
                }
                _ => None,
            };
            let old = std::mem::replace(&mut *hot, fresh);
            let tier = Arc::new(Sealing {
                id: id.clone(),
                data: old.data,
                blocks: Mutex::new(blocks),
                max_lsn,
                first_lsn: self.hot_first_lsn.swap(0, Ordering::AcqRel),
                raw_bytes: self.hot_raw_bytes.swap(0, Ordering::Relaxed),
                reason: match why {
                    "size" => "sealed: size",
                    "age" => "sealed: age",
                    "idle" => "sealed: idle",
                    "wal" => "sealed: WAL bound",
                    "erasure" => "sealed: for erasure",
                    "writers" => "sealed: open writer limit",
                    _ => "sealed: shutdown",
                },
                v1_dir: None,
                written: Mutex::new(None),
            });
            self.committed_raw_bytes.store(0, Ordering::Relaxed);
            sealing.push(tier.clone());
            tier
        };
        drop(slot);
        self.spawn_seal(tier)?;
        Ok(Some(id))
    }

    fn spawn_seal(self: &Arc<Self>, tier: Arc<Sealing>) -> Result<(), StoreError> {
        let handle = self.clone();
        let spawned = std::thread::Builder::new()
            .name("logsift-seal".into())
            .spawn(move || {
                if let Err(e) = handle.finish_seal(&tier) {
                    // Nothing is lost: the tier stays searchable in memory, its records stay
                    // in the WAL, and the seal is tried again.
                    *handle
                        .seal_failed_at
                        .lock() = Some(Instant::now());
                    tracing::error!(index = %handle.name, segment = %tier.id, error = %e, "sealing failed; will retry");
                }
            });
        let thread = spawned.map_err(|source| StoreError::Io {
            path: self.dir.clone(),
            source,
        })?;
        *self.seal_thread.lock() = Some(thread);
        Ok(())
    }

    /// Starts again a seal that failed, once [`SEAL_RETRY`] has passed (not while stopping).
    pub(crate) fn retry_failed_seal(self: &Arc<Self>) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        {
            if running(&self.seal_thread.lock()) {
                return;
            }
        }
        let mut failed = self.seal_failed_at.lock();
        if failed.is_none_or(|t| t.elapsed() < SEAL_RETRY) {
            return;
        }
        let Some(tier) = self.sealing.read().first().cloned() else {
            *failed = None;
            return;
        };
        *failed = None;
        drop(failed);
        if let Err(e) = self.spawn_seal(tier) {
            tracing::warn!(index = %self.name, error = %e, "cannot start a seal thread; will retry");
        }
    }

    /// Waits for a seal in progress to finish.
    pub fn wait_for_seal(&self) {
        let thread = self.seal_thread.lock().take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// At shutdown: seals that fail from now on are not retried (their records are in the
    /// WAL for the next start).
    pub(crate) fn stop_retrying(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Merges a tier's segments into one sorted, zstd-compressed segment, bundles it,
    /// catalogues it, serves it, and drops the tier.
    fn finish_seal(&self, tier: &Sealing) -> Result<(), StoreError> {
        let mut out = self.dir.join(format!("{BUILDING_PREFIX}{}", tier.id));
        let kept = tier
            .written
            .lock()
            .take()
            // Only if the file is still there as written.
            .filter(|info| {
                self.files
                    .size(&tier.id)
                    .is_ok_and(|size| size == Some(info.file_bytes))
            });
        let info = match kept {
            Some(info) => {
                tracing::info!(index = %self.name, segment = %tier.id, "cataloguing the segment written by the last attempt");
                info
            }
            None => match &tier.data {
                HotData::Blocks(parts) => {
                    crate::fault("store::build").map_err(io_err(&out))?;
                    let taken = tier.blocks.lock().take();
                    let info = match taken {
                        // Its blocks are written already: the segment is completed where it is.
                        Some(hot) => {
                            let dir = hot.dir().to_path_buf();
                            let bundled = self.bundle_blocks(&tier.id, tier.max_lsn, *hot);
                            if bundled.is_err() {
                                remove_scratch(&dir);
                            }
                            out = dir;
                            bundled?.0
                        }
                        // An earlier attempt took the tier and failed: the segment is built
                        // again from the records of the tier's snapshot.
                        None => {
                            self.write_blocks(&tier.id, tier.max_lsn, &out, |add| {
                                parts
                                    .iter()
                                    .try_for_each(|p| self.feed_blocks(p, &|_| true, add))
                            })?
                            .ok_or_else(|| self.store_err("a tier to seal holds no record".into()))?
                            .0
                        }
                    };
                    self.segments_built.fetch_add(1, Ordering::Relaxed);
                    info
                }
                // A v1 hot index keeps its own schema: it is sealed as records.
                HotData::Records { index, .. }
                    if self.layout == crate::Layout::Blocks && tier.v1_dir.is_none() =>
                {
                    let (info, _) = self
                        .write_blocks(&tier.id, tier.max_lsn, &out, |add| {
                            self.feed_tier(index, add)
                        })?
                        .ok_or_else(|| self.store_err("a tier to seal holds no record".into()))?;
                    self.segments_built.fetch_add(1, Ordering::Relaxed);
                    info
                }
                HotData::Records { index, .. } => {
                    let segments = index
                        .searchable_segments()
                        .map_err(|e| self.tantivy_err(e))?;
                    let sealed = self.write_merged(&segments, &out)?;
                    let (info, _) = sealed_info(
                        &sealed,
                        &out,
                        &*self.files,
                        &self.patterns,
                        &tier.id,
                        tier.raw_bytes,
                        tier.max_lsn,
                    )
                    .map_err(|e| self.store_err(e))?;
                    self.segments_built.fetch_add(1, Ordering::Relaxed);
                    info
                }
            },
        };
        let written = info.file_bytes;
        // Held until the segment is served: a refresh in between would serve it from the
        // catalog while its tier is still searched (records counted twice), and then again.
        let mut held = self.lock_catalog();
        let entry = 'saved: {
            let catalog = &mut *held;
            let mut catch_ups = 0;
            let e = loop {
                let entry = catalog.add_with_reason(info.clone(), tier.reason).clone();
                match self.save_catalog(catalog) {
                    Ok(()) => break 'saved entry,
                    Err(crate::CatalogError::Moved(why)) if catch_ups < MAX_CATCH_UPS => {
                        catalog.entries.pop();
                        catch_ups += 1;
                        if let Err(e) = self.catch_up(catalog) {
                            break crate::CatalogError::Metastore(format!("{why}; {e}"));
                        }
                    }
                    Err(e) => {
                        catalog.entries.pop();
                        break e;
                    }
                }
            };
            {
                // Not recorded: the entry was taken back so the next attempt starts clean. A
                // save that may have been recorded keeps the file it would point to (an
                // unlisted one is removed at the next start).
                if matches!(e, crate::CatalogError::Unconfirmed(_)) {
                    // Trying again would write a different file under the same id, which
                    // the entry (if it was recorded) does not describe. The records stay in
                    // memory and the WAL; a restart loads the metastore's chain.
                    self.stopping.store(true, Ordering::Release);
                    tracing::error!(index = %self.name, segment = %tier.id, "a catalog save could not be confirmed; this index seals no more until logsift is restarted");
                } else {
                    // Kept for the next attempt; if logsift stops first, the next start
                    // collects it as an unlisted file and seals the records again from the WAL.
                    *tier.written.lock() = Some(info);
                }
                return Err(StoreError::Catalog(e.to_string()));
            }
        };
        {
            // Swap under the sealing lock: a search sees the records in one place or the other.
            let mut sealing = self.sealing.write();
            self.serve_segment(entry.clone());
            sealing.retain(|t| t.id != tier.id);
        }
        drop(held);
        match fs::remove_dir_all(&out) {
            // A retry that only catalogued may find no work directory left.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&out)(e)),
            _ => {}
        }
        if let Some(dir) = &tier.v1_dir {
            fs::remove_dir_all(dir).map_err(io_err(dir))?;
        }
        self.segments_written.fetch_add(1, Ordering::Relaxed);
        tracing::info!(index = %self.name, segment = %tier.id, docs = entry.docs, bytes = written, reason = tier.reason, "sealed segment");
        Ok(())
    }

    /// Builds a block segment in `out` (emptied first) from the records `feed` hands over,
    /// with its summary, and bundles it as segment `id`. `None` when `feed` gave no record.
    fn write_blocks(
        &self,
        id: &str,
        max_lsn: u64,
        out: &Path,
        feed: impl FnOnce(&mut dyn FnMut(&BlockRecord<'_>)) -> Result<(), StoreError>,
    ) -> Result<Option<(SegmentInfo, u64)>, StoreError> {
        if out.exists() {
            fs::remove_dir_all(out).map_err(io_err(out))?;
        }
        crate::fault("store::build").map_err(io_err(out))?;
        let mut tier = BlockTier::new(out, self.block_zstd_level, false)
            .map_err(|e| self.store_err(e.to_string()))?;
        feed(&mut |rec: &BlockRecord<'_>| {
            // Parsed again for its words: what is fed keeps the line, not its parse.
            let opts = logsift_parse::ParseOptions {
                received_at_ns: rec.received_at,
                ..self.parse
            };
            let record = logsift_parse::parse(rec.format, rec.raw, &opts);
            tier.add(rec, &record);
        })?;
        if tier.docs() == 0 {
            return Ok(None);
        }
        self.bundle_blocks(id, max_lsn, tier).map(Some)
    }

    /// Completes a block segment and bundles it as segment `id`.
    fn bundle_blocks(
        &self,
        id: &str,
        max_lsn: u64,
        tier: BlockTier,
    ) -> Result<(SegmentInfo, u64), StoreError> {
        let built = tier
            .finish(&self.patterns)
            .map_err(|e| self.store_err(e.to_string()))?;
        let out = built.dir.as_path();
        let metas = built
            .index
            .searchable_segment_metas()
            .map_err(|e| self.tantivy_err(e))?;
        let names =
            bundle_names(out, &metas, &[BODY_FILE, FILTERS_FILE]).map_err(|e| self.store_err(e))?;
        let written = self
            .files
            .write(id, out, &names)
            .map_err(|e| self.store_err(e.to_string()))?;
        Ok((
            SegmentInfo {
                segment: id.to_string(),
                min_timestamp: built.min_ts,
                max_timestamp: built.max_ts,
                docs: built.docs,
                raw_bytes: built.raw_bytes,
                file_bytes: written.bytes,
                sha256: written.sha256,
                max_lsn,
            },
            written.bytes,
        ))
    }

    /// Hands every record of a block segment that `keep` keeps (by id) to `add`.
    fn feed_blocks(
        &self,
        segment: &BlockSegment,
        keep: &dyn Fn(u64) -> bool,
        add: &mut dyn FnMut(&BlockRecord<'_>),
    ) -> Result<(), StoreError> {
        let mut block = crate::blocks::DecodedBlock::default();
        for ord in 0..segment.blocks.len() {
            segment
                .read_block(ord, &mut block)
                .map_err(|e| self.store_err(e.to_string()))?;
            for r in block.records.iter().filter(|r| keep(r.id)) {
                add(&BlockRecord {
                    id: r.id,
                    timestamp: r.timestamp,
                    received_at: r.received_at,
                    format: r.format,
                    source: block.source(r),
                    raw: block.raw(r),
                    pattern: r.pattern,
                });
            }
        }
        Ok(())
    }

    /// Hands every record of a record index (a hot tier, or a record segment being rewritten
    /// as blocks) to `add`, in id order, so that each stream's blocks follow one another in
    /// time.
    fn feed_tier(
        &self,
        index: &Index,
        add: &mut dyn FnMut(&BlockRecord<'_>),
    ) -> Result<(), StoreError> {
        let reader = reader_of(index).map_err(|e| self.tantivy_err(e))?;
        let searcher = reader.searcher();
        let mut order: Vec<(u64, i64, u32, tantivy::DocId, u32)> = Vec::new();
        let mut stores = Vec::new();
        for (ord, seg) in searcher.segment_readers().iter().enumerate() {
            let fast = seg.fast_fields();
            let ids = fast.u64("id").map_err(|e| self.tantivy_err(e))?;
            let ts = fast.i64("timestamp").map_err(|e| self.tantivy_err(e))?;
            // Segments written before patterns were mined have no column: no pattern.
            let patterns = fast.u64(crate::PATTERN_FIELD).ok();
            for doc in seg.doc_ids_alive() {
                let (Some(id), Some(t)) = (ids.first(doc), ts.first(doc)) else {
                    continue;
                };
                let pattern = patterns.as_ref().and_then(|p| p.first(doc)).unwrap_or(0);
                order.push((id, t, ord as u32, doc, pattern as u32));
            }
            // Each segment is read in doc order (ids rise within it): a few cached blocks each.
            stores.push(
                seg.get_store_reader(4)
                    .map_err(|e| self.tantivy_err(e.into()))?,
            );
        }
        order.sort_unstable_by_key(|o| o.0);
        for (id, timestamp, ord, doc, pattern) in order {
            let stored: tantivy::TantivyDocument = stores[ord as usize]
                .get(doc)
                .map_err(|e| self.tantivy_err(e))?;
            let st = crate::Stored::of(&self.schema, &stored);
            add(&BlockRecord {
                id,
                timestamp,
                received_at: st.received_at.unwrap_or(timestamp),
                format: st.format,
                source: st.source,
                raw: st.raw,
                pattern,
            });
        }
        Ok(())
    }

    /// Where the rewrite that makes segment `id` writes its one-segment index.
    fn rewrite_work(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{MERGING_PREFIX}{id}"))
    }

    fn store_err(&self, why: String) -> StoreError {
        StoreError::Catalog(format!("index {}: {why}", self.name))
    }

    /// Writes `segments` as one sorted segment of a new index in `out` (emptied first).
    fn write_merged(&self, segments: &[tantivy::Segment], out: &Path) -> Result<Index, StoreError> {
        let alive = segments.iter().map(|_| None).collect();
        self.write_filtered(segments, alive, out, &self.sealed_settings)
    }

    /// Like [`Self::write_merged`], leaving out the documents `alive` marks deleted.
    fn write_filtered(
        &self,
        segments: &[tantivy::Segment],
        alive: Vec<Option<AliveBitSet>>,
        out: &Path,
        settings: &IndexSettings,
    ) -> Result<Index, StoreError> {
        if out.exists() {
            fs::remove_dir_all(out).map_err(io_err(out))?;
        }
        crate::fault("store::build").map_err(io_err(out))?;
        fs::create_dir_all(out).map_err(io_err(out))?;
        let directory = MmapDirectory::open(out).map_err(|e| self.store_err(e.to_string()))?;
        let merged = merge_filtered_segments(segments, settings.clone(), alive, directory)
            .map_err(|e| self.tantivy_err(e))?;
        LogSchema::register_tokenizers(merged.tokenizers());
        Ok(merged)
    }

    /// A served segment written at a lower zstd level than the idle settings', oldest first,
    /// once nothing was added to the index for `idle` (and its hot tier is sealed): the
    /// level paid while ingesting is low, the bytes kept for months are not. Segments holding
    /// less than one doc store block of raw text are left alone: a higher level saves next
    /// to nothing there, and an index-name flood would otherwise rewrite a thousand
    /// one-record segments the moment they all go quiet.
    fn pick_recompress(&self, idle: Duration) -> Option<(CatalogEntry, IndexSettings)> {
        let settings = self.idle_settings.as_ref()?;
        let target = zstd_level(settings)?;
        if self.idle_for() < idle || self.writer_open() {
            return None;
        }
        let sealed = self.sealed.read();
        sealed
            .iter()
            .filter(|s| s.entry.raw_bytes >= settings.docstore_blocksize as u64)
            .filter(|s| {
                s.records().is_some_and(|r| {
                    let level = zstd_level(r.searcher().index().settings());
                    level.is_some_and(|l| l < target)
                })
            })
            .min_by_key(|s| s.entry.max_lsn)
            .map(|s| (s.entry.clone(), settings.clone()))
    }

    /// A served record segment (oldest first) to rewrite as a block segment, once nothing was
    /// added to the index for `idle` (its hot tier may still be open: the audit index of a
    /// server in use gets a record every few seconds and is never sealed for being idle).
    fn pick_upgrade(&self, idle: Duration) -> Option<CatalogEntry> {
        if self.idle_for() < idle {
            return None;
        }
        self.sealed
            .read()
            .iter()
            .filter(|s| s.records().is_some())
            .min_by_key(|s| s.entry.max_lsn)
            .map(|s| s.entry.clone())
    }

    /// Rewrites record segment `source` (written by v1 or with `layout = "records"`) as a
    /// block segment holding the same records, recording it in the catalog chain.
    pub fn upgrade(&self, source: CatalogEntry) -> Result<Rewritten, StoreError> {
        let (entry, data) = self.served(&source.segment)?;
        let SealedData::Records(reader) = data else {
            return Err(self.store_err(format!(
                "segment {} is not a record segment",
                source.segment
            )));
        };
        // Held for the whole build, even if retention deletes the segment meanwhile.
        let index = reader.searcher().index().clone();
        self.rewrite_as_blocks(
            entry,
            ["b", "rewritten as blocks", "rewritten as blocks into"],
            |add| self.feed_tier(&index, add),
        )
    }

    /// A served block segment (oldest first) whose bodies are at a lower zstd level than the
    /// idle one, on the terms of [`Self::pick_recompress`]: the hot tier of blocks compresses
    /// at the sealed level, paid while ingesting, and its seal keeps those bodies as they are.
    fn pick_block_recompress(&self, idle: Duration) -> Option<CatalogEntry> {
        let settings = self.idle_settings.as_ref()?;
        let target = self.block_zstd_level;
        if self.idle_for() < idle || self.writer_open() {
            return None;
        }
        self.sealed
            .read()
            .iter()
            .filter(|s| matches!(s.data, SealedData::Blocks(_)))
            .filter(|s| s.entry.raw_bytes >= settings.docstore_blocksize as u64)
            .filter(|s| {
                // Unknown (written before levels were noted): once, to know it.
                let level = s.summary.as_ref().and_then(|m| m.body_zstd_level);
                level.is_none_or(|l| l < target)
            })
            .min_by_key(|s| s.entry.max_lsn)
            .map(|s| s.entry.clone())
    }

    /// Rewrites block segment `source` with its bodies at the idle zstd level.
    fn recompress_blocks(&self, source: CatalogEntry) -> Result<Rewritten, StoreError> {
        let (entry, data) = self.served(&source.segment)?;
        let SealedData::Blocks(segment) = data else {
            return Err(
                self.store_err(format!("segment {} is not a block segment", source.segment))
            );
        };
        let reason = format!("recompressed at zstd level {}", self.block_zstd_level);
        self.rewrite_as_blocks(entry, ["z", &reason, "recompressed into"], |add| {
            self.feed_blocks(&segment, &|_| true, add)
        })
    }

    /// Whether a merge or recompression of this index is running.
    pub(crate) fn merge_running(&self) -> bool {
        running(&self.merge_thread.lock())
    }

    /// Starts merging small sealed segments in the background when a run of `factor` adjacent
    /// ones of the same size class exists and no merge is running; else, on a quiet index,
    /// recompressing one segment at the idle zstd level. Returns whether one started.
    pub(crate) fn maybe_merge(
        self: &Arc<Self>,
        factor: usize,
        max_docs: u64,
        idle: Duration,
    ) -> bool {
        let mut slot = self.merge_thread.lock();
        if running(&slot) {
            return false;
        }
        if self.layout == crate::Layout::Blocks {
            // Record segments are rewritten as blocks rather than merged among themselves.
            let upgrade_idle = if idle.is_zero() { UPGRADE_IDLE } else { idle };
            let work = match self.pick_upgrade(upgrade_idle) {
                Some(source) => Background::Upgrade(Box::new(source)),
                None => match self.pick_block_recompress(idle) {
                    Some(source) => Background::RecompressBlocks(Box::new(source)),
                    None => return false,
                },
            };
            return self.spawn_background(&mut slot, work);
        }
        let live: Vec<CatalogEntry> = self.segments();
        // Segments by schema generation (folded ids, then pattern ids): tantivy merges only
        // segments of one schema, so older ones are merged among themselves.
        let sealed: HashMap<String, u8> = self
            .sealed
            .read()
            .iter()
            // Block segments are never merged: they are written whole by their seal.
            .filter_map(|s| {
                let generation = LogSchema::generation(s.records()?.searcher().schema());
                Some((s.entry.segment.clone(), generation))
            })
            .collect();
        // Quarantined segments are never merged: their bytes are not to be trusted.
        let work = match pick_merge(&live, factor, max_docs, |e| sealed.get(&e.segment).copied()) {
            Some(sources) => Background::Merge(sources),
            None => match self.pick_recompress(idle) {
                Some(picked) => Background::Recompress(Box::new(picked)),
                None => return false,
            },
        };
        self.spawn_background(&mut slot, work)
    }

    /// Runs `work` on a `logsift-merge` thread kept in `slot`; whether it started.
    fn spawn_background(
        self: &Arc<Self>,
        slot: &mut Option<std::thread::JoinHandle<()>>,
        work: Background,
    ) -> bool {
        let handle = self.clone();
        let spawned = std::thread::Builder::new()
            .name("logsift-merge".into())
            .spawn(move || match work {
                Background::Merge(sources) => {
                    let ids: Vec<String> = sources.iter().map(|e| e.segment.clone()).collect();
                    if let Err(e) = handle.merge(sources) {
                        if matches!(e, StoreError::Stopping) {
                            return;
                        }
                        tracing::error!(index = %handle.name, segments = ?ids, error = %e, "merging segments failed; they stay as they are");
                    }
                }
                Background::Recompress(picked) => {
                    let (source, settings) = *picked;
                    let id = source.segment.clone();
                    if let Err(e) = handle.recompress(source, &settings) {
                        if matches!(e, StoreError::Stopping) {
                            return;
                        }
                        tracing::error!(index = %handle.name, segment = %id, error = %e, "recompressing a segment failed; it stays as it is");
                    }
                }
                Background::Upgrade(source) => {
                    let id = source.segment.clone();
                    if let Err(e) = handle.upgrade(*source) {
                        if matches!(e, StoreError::Stopping) {
                            return;
                        }
                        tracing::error!(index = %handle.name, segment = %id, error = %e, "rewriting a record segment as blocks failed; it stays as it is");
                    }
                }
                Background::RecompressBlocks(source) => {
                    let id = source.segment.clone();
                    if let Err(e) = handle.recompress_blocks(*source) {
                        if matches!(e, StoreError::Stopping) {
                            return;
                        }
                        tracing::error!(index = %handle.name, segment = %id, error = %e, "recompressing a block segment failed; it stays as it is");
                    }
                }
            });
        match spawned {
            Ok(t) => {
                *slot = Some(t);
                true
            }
            Err(e) => {
                tracing::warn!(index = %self.name, error = %e, "cannot start a merge thread");
                false
            }
        }
    }

    /// Waits for a merge in progress to finish.
    pub fn wait_for_merge(&self) {
        let thread = self.merge_thread.lock().take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// Merges `sources` (live, adjacent by LSN) into one segment: written and bundled aside,
    /// then one catalog update adds it and deletes them, then the files go.
    fn merge(&self, sources: Vec<CatalogEntry>) -> Result<(), StoreError> {
        // A merge whose source was erased or deleted meanwhile (Rewritten::SourcesGone) is
        // simply not done; the next merge pass sees the new segments.
        let names: Vec<String> = sources.iter().map(|e| e.segment.clone()).collect();
        let alive = sources.iter().map(|_| None).collect();
        self.rewrite(
            &sources,
            alive,
            "m",
            &format!("merge of {}", names.join(", ")),
            "merged into",
            &self.sealed_settings,
        )?;
        Ok(())
    }

    /// Rewrites one sealed segment with the idle settings (a higher zstd level).
    fn recompress(&self, source: CatalogEntry, settings: &IndexSettings) -> Result<(), StoreError> {
        let level = zstd_level(settings).unwrap_or(0);
        self.rewrite(
            &[source],
            vec![None],
            "z",
            &format!("recompressed at zstd level {level}"),
            "recompressed into",
            settings,
        )?;
        Ok(())
    }

    /// The sealed segments overlapping `[start, end)`, with a reader on each (erasure looks
    /// for the records to remove with them).
    pub fn sealed_parts(
        &self,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Vec<(CatalogEntry, PartReader)> {
        self.sealed
            .read()
            .iter()
            .filter(|s| {
                start.is_none_or(|st| s.entry.max_timestamp >= st)
                    && end.is_none_or(|en| s.entry.min_timestamp < en)
            })
            .map(|s| (s.entry.clone(), s.part()))
            .collect()
    }

    /// Rewrites sealed segment `segment` without the documents `deleted` (doc ids of its one
    /// tantivy segment), recording why in the catalog chain: the new segment is added with
    /// `reason` and the old one deleted, in one catalog save.
    pub fn erase_from_segment(
        &self,
        segment: &str,
        deleted: &[tantivy::DocId],
        reason: &str,
    ) -> Result<Rewritten, StoreError> {
        let (entry, data) = self.served(segment)?;
        let SealedData::Records(reader) = data else {
            return Err(self.store_err(format!("segment {segment} is not a record segment")));
        };
        let searcher = reader.searcher();
        let max_doc = searcher
            .segment_readers()
            .first()
            .map_or(0, |r| r.max_doc());
        let mut bits = tantivy::BitSet::with_max_value_and_full(max_doc);
        for &d in deleted {
            if d < max_doc {
                bits.remove(d);
            }
        }
        let mut bytes = Vec::new();
        write_alive_bitset(&bits, &mut bytes).map_err(io_err(&self.dir))?;
        let alive = AliveBitSet::open(tantivy::directory::OwnedBytes::new(bytes));
        self.rewrite(
            &[entry],
            vec![Some(alive)],
            "e",
            reason,
            "erased into",
            &self.sealed_settings,
        )
    }

    /// The catalog entry of live segment `segment` and how it is served.
    fn served(&self, segment: &str) -> Result<(CatalogEntry, SealedData), StoreError> {
        let entry = self
            .segments()
            .into_iter()
            .find(|e| e.segment == segment)
            .ok_or_else(|| self.store_err(format!("segment {segment} is not live")))?;
        let data = self
            .sealed
            .read()
            .iter()
            .find(|s| s.entry.segment == segment)
            .map(|s| s.data.clone())
            .ok_or_else(|| self.store_err(format!("segment {segment} is not served")))?;
        Ok((entry, data))
    }

    /// Writes `sources` (live, served record segments) as one new segment keeping only what
    /// `alive` keeps; see [`Self::rewrite_with`].
    fn rewrite(
        &self,
        sources: &[CatalogEntry],
        alive: Vec<Option<AliveBitSet>>,
        tag: &str,
        add_reason: &str,
        delete_reason: &str,
        settings: &IndexSettings,
    ) -> Result<Rewritten, StoreError> {
        self.rewrite_with(
            sources,
            tag,
            add_reason,
            delete_reason,
            |work, id, max_lsn| {
                // Hold the sources' indexes (and so their maps) for the whole build, even if
                // retention deletes one meanwhile.
                let mut indexes = Vec::new();
                {
                    let sealed = self.sealed.read();
                    for src in sources {
                        let s = sealed
                            .iter()
                            .find(|s| s.entry.segment == src.segment)
                            .ok_or_else(|| {
                                self.store_err(format!(
                                    "segment {} is no longer served",
                                    src.segment
                                ))
                            })?;
                        let reader = s.records().ok_or_else(|| {
                            self.store_err(format!("segment {} is a block segment", src.segment))
                        })?;
                        indexes.push(reader.searcher().index().clone());
                    }
                }
                let mut segments = Vec::new();
                for index in &indexes {
                    segments.extend(
                        index
                            .searchable_segments()
                            .map_err(|e| self.tantivy_err(e))?,
                    );
                }
                if segments.len() != alive.len() {
                    return Err(self
                        .store_err("a sealed segment holds more than one tantivy segment".into()));
                }
                let kept: u64 = segments
                    .iter()
                    .zip(&alive)
                    .map(|(seg, a)| {
                        a.as_ref()
                            .map_or(seg.meta().num_docs() as u64, |a| a.num_alive_docs() as u64)
                    })
                    .sum();
                if kept == 0 {
                    return Ok((None, 0));
                }
                let raw_bytes = kept_raw_bytes(sources, kept);
                let merged = self.write_filtered(&segments, alive, work, settings)?;
                if zstd_level(settings) != zstd_level(&self.sealed_settings) {
                    self.check_not_abandoned()?;
                    // tantivy's merge copies doc store blocks as they are when the compressor kind
                    // matches, whatever its level: write the store again at the new level.
                    rewrite_store(&merged, work, settings).map_err(|e| self.store_err(e))?;
                }
                crate::fault("store::rewrite-bundle").map_err(io_err(work))?;
                self.check_not_abandoned()?;
                let written = sealed_info(
                    &merged,
                    work,
                    &*self.files,
                    &self.patterns,
                    id,
                    raw_bytes,
                    max_lsn,
                )
                .map_err(|e| self.store_err(e))?;
                Ok((Some(written), kept))
            },
        )
    }

    /// Rewrites block segment `segment` without the records whose ids `erased` holds,
    /// recording why in the catalog chain like [`Self::erase_from_segment`].
    pub fn erase_from_block_segment(
        &self,
        segment: &str,
        erased: &std::collections::HashSet<u64>,
        reason: &str,
    ) -> Result<Rewritten, StoreError> {
        let (entry, data) = self.served(segment)?;
        let SealedData::Blocks(source) = data else {
            return Err(self.store_err(format!("segment {segment} is not a block segment")));
        };
        self.rewrite_as_blocks(entry, ["e", reason, "erased into"], |add| {
            self.feed_blocks(&source, &|id| !erased.contains(&id), add)
        })
    }

    /// Writes `source` (live, served) as one new block segment from the records `feed` hands
    /// over, with [`Self::rewrite_with`]'s `[tag, add_reason, delete_reason]`.
    fn rewrite_as_blocks(
        &self,
        source: CatalogEntry,
        [tag, add_reason, delete_reason]: [&str; 3],
        feed: impl FnOnce(&mut dyn FnMut(&BlockRecord<'_>)) -> Result<(), StoreError>,
    ) -> Result<Rewritten, StoreError> {
        let sources = [source];
        self.rewrite_with(
            &sources,
            tag,
            add_reason,
            delete_reason,
            |work, id, max_lsn| {
                let written = self.write_blocks(id, max_lsn, work, |add| {
                    feed(add)?;
                    crate::fault("store::rewrite-bundle").map_err(io_err(work))?;
                    self.check_not_abandoned()
                })?;
                let kept = written.as_ref().map_or(0, |(info, _)| info.docs);
                Ok((written, kept))
            },
        )
    }

    /// Writes `sources` (live, served) as one new segment with `build`, which gets the work
    /// directory, the new id and its `max_lsn`, writes and bundles the segment, and returns
    /// it (`None`: nothing was left) with how many records it kept. Then, in one catalog save,
    /// adds it (with `add_reason`) and deletes the sources (with `delete_reason` and the new
    /// id); then serves it and removes the sources' files. A source deleted meanwhile
    /// (retention) drops the rewrite: the copy would bring it back.
    fn rewrite_with(
        &self,
        sources: &[CatalogEntry],
        tag: &str,
        add_reason: &str,
        delete_reason: &str,
        build: impl FnOnce(&Path, &str, u64) -> Result<(Option<(SegmentInfo, u64)>, u64), StoreError>,
    ) -> Result<Rewritten, StoreError> {
        let _one_at_a_time = self.rewriting.lock();
        {
            let catalog = self.lock_catalog();
            let live = catalog.live();
            if !sources
                .iter()
                .all(|src| live.iter().any(|l| l.segment == src.segment))
            {
                return Ok(Rewritten::SourcesGone);
            }
        }
        let max_lsn = sources.iter().map(|e| e.max_lsn).max().unwrap_or(0);
        // The next catalog sequence number makes the id unique even if the same LSNs are
        // rewritten again later.
        let seq = self.lock_catalog().entries.last().map_or(1, |e| e.seq + 1);
        // Indexers beside others mark their rewrites: two may rewrite the same sources at
        // once, and the one whose save comes second removes its output, which must not be
        // the other's.
        let id = match self.lsn_base >> crate::catalog::LSN_BITS {
            0 => format!("{max_lsn:020}-{tag}{seq}"),
            n => format!("{max_lsn:020}-{tag}{seq}x{n}"),
        };
        let mut output = RewriteOutput::new(self, &id);
        let work = output.work.clone();
        let names: Vec<&str> = sources.iter().map(|e| e.segment.as_str()).collect();
        let (written, kept) = build(&work, &id, max_lsn)?;
        // Held until the output is swapped in: a refresh in between would serve it and drop
        // its sources first, and the swap would then serve it twice.
        let mut held = self.lock_catalog();
        let entry = {
            let catalog = &mut *held;
            // Under the catalog lock: `abandon_rewrite` takes it after raising the flag, so
            // a rewrite either is recorded before it looks or sees the flag here.
            self.check_not_abandoned()?;
            let mut catch_ups = 0;
            loop {
                let live = catalog.live();
                let sources_live = sources
                    .iter()
                    .all(|src| live.iter().any(|l| l.segment == src.segment));
                if !sources_live {
                    tracing::info!(index = %self.name, "a rewrite's source was deleted meanwhile; dropping the rewrite");
                    return Ok(Rewritten::SourcesGone);
                }
                let before = catalog.entries.len();
                let entry = written
                    .as_ref()
                    .map(|(info, _)| catalog.add_with_reason(info.clone(), add_reason).clone());
                for src in &names {
                    let why = match &entry {
                        Some(_) => format!("{delete_reason} {id}"),
                        None => format!("{add_reason}: nothing left"),
                    };
                    catalog.delete(src, &why);
                }
                match self.save_catalog(catalog) {
                    Ok(()) => {
                        output.recorded = true;
                        break entry;
                    }
                    Err(crate::CatalogError::Moved(_)) if catch_ups < MAX_CATCH_UPS => {
                        // Another indexer appended: on top of its chain, if the sources are
                        // still there.
                        catalog.entries.truncate(before);
                        catch_ups += 1;
                        self.catch_up(catalog)?;
                    }
                    Err(e) => {
                        // Not recorded: the sources stay live and served. Kept in memory, the
                        // entries would be saved by the next catalog update while the segment
                        // is not served (and its file may be gone by then).
                        catalog.entries.truncate(before);
                        // A save that may have been recorded keeps the new file (see
                        // finish_seal).
                        output.recorded = matches!(e, crate::CatalogError::Unconfirmed(_));
                        return Err(StoreError::Catalog(e.to_string()));
                    }
                }
            }
        };
        {
            // Opened first, then swapped in one step: a search between the two saw neither
            // the sources nor the rewrite (an export during idle recompression missed a
            // window's records of the segment being replaced).
            let opened = entry.as_ref().and_then(|e| self.open_segment(e.clone()));
            let mut sealed = self.sealed.write();
            sealed.retain(|s| !names.contains(&s.entry.segment.as_str()));
            sealed.extend(opened);
        }
        drop(held);
        for src in &names {
            let removed = crate::fault("store::remove")
                .map_err(|e| e.to_string())
                .and_then(|()| self.files.remove(src).map_err(|e| e.to_string()));
            if let Err(e) = removed {
                tracing::warn!(segment = %src, error = %e, "cannot remove a replaced segment's file; it is removed at next start");
            }
        }
        if work.exists() {
            fs::remove_dir_all(&work).map_err(io_err(&work))?;
        }
        self.segments_written.fetch_add(1, Ordering::Relaxed);
        tracing::info!(index = %self.name, segment = %id, sources = names.len(), docs = kept, bytes = written.map_or(0, |w| w.1), reason = add_reason, "rewrote segments");
        Ok(entry.map_or(Rewritten::Emptied, Rewritten::Into))
    }

    fn lock_rewrite_output(&self) -> MutexGuard<'_, Option<String>> {
        self.rewrite_output.lock()
    }

    /// Gives up a rewrite once the server is stopping (its output goes with its
    /// [`RewriteOutput`]; its sources stay as they are).
    fn check_not_abandoned(&self) -> Result<(), StoreError> {
        if self.rewrites_abandoned.load(Ordering::Acquire) {
            return Err(StoreError::Stopping);
        }
        Ok(())
    }

    /// At shutdown: a merge or recompression still running (a large one takes seconds, and
    /// tantivy cannot be interrupted) is abandoned. Its sources stay catalogued and served, so
    /// nothing is lost; what it wrote so far is removed now rather than at the next start, so
    /// that a stopped data directory holds only catalogued segments. Removing its work
    /// directory also makes the rewrite fail at the next file it creates there.
    pub(crate) fn abandon_rewrite(&self) {
        self.rewrites_abandoned.store(true, Ordering::Release);
        // A rewrite that checked the flag before it was raised has saved the catalog by now.
        drop(self.lock_catalog());
        let Some(id) = self.lock_rewrite_output().clone() else {
            return;
        };
        let work = self.rewrite_work(&id);
        let remove = || {
            if work.exists() {
                if let Err(e) = fs::remove_dir_all(&work) {
                    tracing::debug!(path = %work.display(), error = %e, "removing an abandoned rewrite's directory");
                }
            }
            let catalogued = self.lock_catalog().live().iter().any(|e| e.segment == id);
            if !catalogued {
                let _ = self.files.remove(&id);
            }
            // A bundle being written when the flag went up leaves a temporary file, which
            // `segments verify` would name after the stop.
            for name in self.files.leftovers().unwrap_or_default() {
                if name
                    .strip_prefix(id.as_str())
                    .is_some_and(|r| r.starts_with('.'))
                {
                    let _ = self.files.remove_leftover(&name);
                }
            }
        };
        remove();
        // Give the thread a moment to notice and clean up after itself (a file it had open may
        // be written to the end); the process may exit right after this returns.
        let deadline = Instant::now() + ABANDON_GRACE;
        while self.lock_rewrite_output().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        remove();
        tracing::info!(index = %self.name, segment = %id, "stopping: abandoned a segment rewrite in progress (its sources stay)");
    }

    /// Erasure reaches unsealed records by sealing them first: the hot tier lives in memory
    /// and the WAL, so a deletion there would come back with a crash. Counts the hot tier's
    /// matches of `query` and starts its seal; the caller then waits for the seal and rewrites
    /// the segment like any other. Returns `Ok(None)` while records are uncommitted or another
    /// seal runs (retry after the indexer's next commit), else how many hot records matched.
    pub fn seal_for_erasure<E: From<StoreError>>(
        self: &Arc<Self>,
        count: impl Fn(&PartReader) -> Result<u64, E>,
    ) -> Result<Option<u64>, E> {
        let mut matches = 0;
        {
            let hot = self.hot.read();
            for part in hot.data.parts() {
                matches += count(&part)?;
            }
        }
        if matches == 0 {
            return Ok(Some(0));
        }
        Ok(self.seal("erasure")?.map(|_| matches))
    }

    /// Whether a seal is under way (its records are in neither the hot index nor a segment
    /// that erasure can rewrite yet).
    pub fn sealing_in_progress(&self) -> bool {
        !self.sealing.read().is_empty()
    }
}

/// Raw bytes of `kept` of the records of `sources`, in proportion (the catalog's figure is
/// informative).
fn kept_raw_bytes(sources: &[CatalogEntry], kept: u64) -> u64 {
    let docs: u64 = sources.iter().map(|e| e.docs).sum();
    sources.iter().map(|e| e.raw_bytes).sum::<u64>() * kept / docs.max(1)
}

/// The first run of `factor` segments, adjacent in LSN order, of the same size class (a power
/// of `factor` in records) and together at most `max_docs`: merging like with like keeps the
/// number of times a record is rewritten logarithmic, as in tantivy's own merge policy.
fn pick_merge(
    live: &[CatalogEntry],
    factor: usize,
    max_docs: u64,
    kind: impl Fn(&CatalogEntry) -> Option<u8>,
) -> Option<Vec<CatalogEntry>> {
    if factor < 2 {
        return None;
    }
    let mut by_lsn: Vec<&CatalogEntry> = live.iter().collect();
    by_lsn.sort_by_key(|e| e.max_lsn);
    let class = |docs: u64| (docs.max(1) as f64).log(factor as f64).floor() as u32;
    by_lsn.windows(factor).find_map(|w| {
        let first = class(w[0].docs);
        let total: u64 = w.iter().map(|e| e.docs).sum();
        let first_kind = kind(w[0]);
        let fits = total <= max_docs
            && first_kind.is_some()
            && w.iter()
                .all(|e| class(e.docs) == first && kind(e) == first_kind);
        fits.then(|| w.iter().map(|e| (*e).clone()).collect())
    })
}

/// The catalog fields of a freshly written one-segment index in `dir`, bundled into `file`.
fn sealed_info(
    index: &Index,
    dir: &Path,
    files: &dyn SegmentFiles,
    patterns: &crate::PatternBook,
    id: &str,
    raw_bytes: u64,
    max_lsn: u64,
) -> Result<(SegmentInfo, u64), String> {
    let metas = index
        .searchable_segment_metas()
        .map_err(|e| e.to_string())?;
    let reader = reader_of(index).map_err(|e| e.to_string())?;
    let searcher = reader.searcher();
    let (mut min_ts, mut max_ts, mut docs) = (i64::MAX, i64::MIN, 0u64);
    for seg in searcher.segment_readers() {
        let col = seg
            .fast_fields()
            .i64("timestamp")
            .map_err(|e| e.to_string())?;
        if seg.num_docs() > 0 {
            min_ts = min_ts.min(col.min_value());
            max_ts = max_ts.max(col.max_value());
        }
        docs += seg.num_docs() as u64;
    }
    drop(searcher);
    drop(reader);
    SegmentSummary::compute(index, patterns)
        .map_err(|e| e.to_string())?
        .write(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let names = bundle_names(dir, &metas, &[])?;
    let written = files.write(id, dir, &names).map_err(|e| e.to_string())?;
    Ok((
        SegmentInfo {
            segment: id.to_string(),
            min_timestamp: min_ts,
            max_timestamp: max_ts,
            docs,
            raw_bytes,
            file_bytes: written.bytes,
            sha256: written.sha256,
            max_lsn,
        },
        written.bytes,
    ))
}

/// The files of a freshly written segment directory that go into its bundle: `meta.json`, the
/// summary, `extra`, and only the files of the index's live segments (a directory can hold
/// files tantivy has not collected yet, which would otherwise be carried along forever).
fn bundle_names(
    dir: &Path,
    metas: &[tantivy::SegmentMeta],
    extra: &[&str],
) -> Result<Vec<String>, String> {
    let prefixes: Vec<String> = metas.iter().map(|m| m.id().uuid_string()).collect();
    let mut names = vec!["meta.json".to_string(), SUMMARY_FILE.to_string()];
    names.extend(extra.iter().map(|e| e.to_string()));
    for file in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let name = file
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            names.push(name);
        }
    }
    Ok(names)
}

/// Writes the doc store of every segment of `index` again with `settings`' compressor and
/// block size, replacing the old file; `dir` holds the index, which is being built (nothing
/// reads it yet).
fn rewrite_store(index: &Index, dir: &Path, settings: &IndexSettings) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("recompressing the doc store: {e}");
    for segment in index.searchable_segments().map_err(|e| err(&e))? {
        let path = segment.relative_path(tantivy::index::SegmentComponent::Store);
        let tmp = path.with_extension("store-recompressed");
        {
            let reader = tantivy::SegmentReader::open(&segment).map_err(|e| err(&e))?;
            let store = reader.get_store_reader(1).map_err(|e| err(&e))?;
            let write =
                tantivy::Directory::open_write(index.directory(), &tmp).map_err(|e| err(&e))?;
            let mut writer = tantivy::store::StoreWriter::new(
                write,
                settings.docstore_compression,
                settings.docstore_blocksize,
                false,
            )
            .map_err(|e| err(&e))?;
            for doc in 0..reader.max_doc() {
                let bytes = store.get_document_bytes(doc).map_err(|e| err(&e))?;
                writer.store_bytes(bytes.as_slice()).map_err(|e| err(&e))?;
            }
            writer.close().map_err(|e| err(&e))?;
        }
        // No fsync: `dir` is a rewrite's scratch directory, and what is durable is the
        // segment bundle made of it (synced before it is catalogued); a crash leaves only
        // scratch, removed at the next start.
        fs::rename(dir.join(&tmp), dir.join(&path)).map_err(|e| err(&e))?;
    }
    Ok(())
}

/// How long a shutdown waits for an abandoned rewrite to notice before it removes its output
/// again and goes on.
const ABANDON_GRACE: Duration = Duration::from_secs(2);

/// Whether the background thread in `slot` (a seal's, a merge's) is still at work.
fn running(slot: &Option<std::thread::JoinHandle<()>>) -> bool {
    slot.as_ref().is_some_and(|t| !t.is_finished())
}

/// The output of the rewrite in progress. However the rewrite ends, its work directory goes,
/// and so does its segment file unless the catalog recorded it; meanwhile its id is where
/// [`IndexHandle::abandon_rewrite`] finds it.
struct RewriteOutput<'h> {
    handle: &'h IndexHandle,
    id: String,
    work: PathBuf,
    /// The catalog lists the new segment: its file stays.
    recorded: bool,
}

impl<'h> RewriteOutput<'h> {
    fn new(handle: &'h IndexHandle, id: &str) -> Self {
        *handle.lock_rewrite_output() = Some(id.to_string());
        RewriteOutput {
            handle,
            id: id.to_string(),
            work: handle.rewrite_work(id),
            recorded: false,
        }
    }
}

impl Drop for RewriteOutput<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            let _ = self.handle.files.remove(&self.id);
        }
        if self.work.exists() {
            let _ = fs::remove_dir_all(&self.work);
        }
        *self.handle.lock_rewrite_output() = None;
    }
}

/// Work for the background thread of an index (one at a time).
enum Background {
    Merge(Vec<CatalogEntry>),
    Recompress(Box<(CatalogEntry, IndexSettings)>),
    Upgrade(Box<CatalogEntry>),
    RecompressBlocks(Box<CatalogEntry>),
}

/// How long an index of the `blocks` layout must have been quiet before its record segments
/// are rewritten as block segments, when idle recompression is off (else its delay): a
/// rewrite takes a core for seconds per million records, better spent on ingest meanwhile.
const UPGRADE_IDLE: Duration = Duration::from_secs(5);

/// The zstd level of a doc store's settings (`None`: not zstd, or tantivy's default).
fn zstd_level(settings: &IndexSettings) -> Option<i32> {
    match settings.docstore_compression {
        Compressor::Zstd(z) => z.compression_level,
        _ => None,
    }
}

/// How sealed and merged segments are stored: zstd at `level` in large blocks,
/// documents in arrival order (about time order). Sorting by stream (host, app) was measured
/// in v2 (300 MB e2e): the doc store shrank by 0.007 bytes per raw byte, but reading records
/// in time order (exports, pages of hits) then decompressed a different block for nearly
/// every record, and an export took 11× as long.
fn zstd_settings(cfg: &StoreConfig, level: i32) -> IndexSettings {
    IndexSettings {
        docstore_compression: Compressor::Zstd(ZstdCompressor {
            compression_level: Some(level),
        }),
        docstore_blocksize: cfg.docstore_block_bytes,
        ..IndexSettings::default()
    }
}

/// Removes a scratch directory (a hot tier of blocks, a segment being built) that is no longer
/// wanted; one left behind is removed at the next start.
fn remove_scratch(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a scratch directory; it is removed at the next start");
        }
    }
}

/// A new, empty hot tier. Records: in memory, LZ4 doc store in small blocks, documents in
/// arrival order. Blocks: nothing until the first record opens its writer.
fn new_hot(schema: &LogSchema, layout: crate::Layout) -> tantivy::Result<Hot> {
    if layout == crate::Layout::Blocks {
        return Ok(Hot {
            data: HotData::Blocks(Vec::new()),
            opened: Instant::now(),
        });
    }
    let settings = IndexSettings {
        docstore_compression: Compressor::Lz4,
        docstore_blocksize: HOT_BLOCK_BYTES,
        ..IndexSettings::default()
    };
    let index = Index::builder()
        .schema(schema.schema.clone())
        .settings(settings)
        .create_in_ram()?;
    LogSchema::register_tokenizers(index.tokenizers());
    let reader = reader_of(&index)?;
    Ok(Hot {
        data: HotData::Records { index, reader },
        opened: Instant::now(),
    })
}

/// Opens a v1 on-disk hot index, to upgrade it.
fn open_v1(dir: &Path, schema: &LogSchema) -> tantivy::Result<Index> {
    let directory = MmapDirectory::open(dir)?;
    // A v1 index keeps its own schema (words indexed whole, before ids were folded); it is
    // sealed as it is and searched with the plain queries.
    let index = if Index::exists(&directory)? {
        Index::open(directory)?
    } else {
        Index::create(directory, schema.schema.clone(), IndexSettings::default())?
    };
    LogSchema::register_tokenizers(index.tokenizers());
    Ok(index)
}

/// Decompressed doc store blocks a reader keeps per segment. tantivy's default (100) costs
/// 25 MiB per sealed segment with 256 KiB blocks, and an export or a wide search fills every
/// cache; hits of one page mostly share a few blocks, so a few MiB per segment suffice.
const DOC_CACHE_BYTES: usize = 4 << 20;

fn reader_of(index: &Index) -> tantivy::Result<IndexReader> {
    let block = index.settings().docstore_blocksize.max(1);
    index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .doc_store_cache_num_blocks((DOC_CACHE_BYTES / block).max(2))
        .try_into()
}

/// tantivy splits the writer's memory budget between its indexing threads and wants at least
/// 15 MB each; below 32 MB a second thread mostly adds segments to merge.
const MIN_BYTES_PER_INDEXING_THREAD: usize = 32 << 20;

pub(crate) fn new_writer(index: &Index, memory_bytes: usize) -> tantivy::Result<IndexWriter> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (memory_bytes / MIN_BYTES_PER_INDEXING_THREAD).clamp(1, cores);
    let writer: IndexWriter = index.writer_with_num_threads(threads, memory_bytes)?;
    let mut policy = LogMergePolicy::default();
    policy.set_max_docs_before_merge(HOT_MERGE_MAX_DOCS);
    writer.set_merge_policy(Box::new(policy));
    Ok(writer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Indexer, Store, StoreConfig};
    use logsift_core::entry::Entry;
    use logsift_core::Format;

    /// Two erasures of one segment at once: one rewrites it, the other finds it replaced and
    /// does nothing (its caller searches again); the index stays whole. Before, both took the
    /// same new id and wrote into the same directory.
    #[test]
    fn concurrent_erasures_of_one_segment_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(StoreConfig::manual(dir.path().join("indexes"))).unwrap());
        let mut indexer = Indexer::new(store.clone());
        for lsn in 1..=100u64 {
            let raw = format!(r#"{{"message":"record {lsn}"}}"#);
            let entry = Entry {
                format: Format::Json,
                received_at: 1_700_000_000_000_000_000,
                index: "logs",
                source: "test",
                raw: raw.as_bytes(),
            };
            indexer.apply(lsn, &entry.encode()).unwrap();
        }
        indexer.commit().unwrap();
        store.seal_all_and_wait();
        let handle = store.get("logs").unwrap();
        let segment = handle.segments()[0].segment.clone();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let outcomes: Vec<Rewritten> = std::thread::scope(|s| {
            let runs: Vec<_> = [0u32..10, 10..20]
                .into_iter()
                .map(|docs| {
                    let (handle, segment, barrier) = (&handle, &segment, barrier.clone());
                    s.spawn(move || {
                        let docs: Vec<u32> = docs.collect();
                        barrier.wait();
                        handle.erase_from_segment(segment, &docs, "test").unwrap()
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let done = outcomes
            .iter()
            .filter(|o| matches!(o, Rewritten::Into(_)))
            .count();
        let gone = outcomes
            .iter()
            .filter(|o| matches!(o, Rewritten::SourcesGone))
            .count();
        assert_eq!((done, gone), (1, 1), "{outcomes:?}");
        let live = handle.segments();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].docs, 90);
        let report = crate::verify_index(
            &dir.path().join("indexes").join("logs"),
            &crate::SegmentStorage::Local,
            &crate::Metastore::Files,
        );
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn v1_commit_payloads_parse_and_damage_is_refused() {
        assert_eq!(parse_payload("lsn=360 raw=5200"), Ok((360, 5200)));
        assert_eq!(parse_payload("raw=1 lsn=2"), Ok((2, 1)));
        assert_eq!(parse_payload("v=1 lsn=7 raw=0"), Ok((7, 0)));
        for damaged in [
            "",
            "lsn=360",
            "raw=5200",
            "lsn=36x raw=5200",
            "lsn=-1 raw=5200",
            "lsn=360 raw=5200 lsn=361",
            "lsn=360 raw=5200 junk",
            "lsn=360 raw=5200 seq=4",
            "v=2 lsn=360 raw=5200",
        ] {
            assert!(parse_payload(damaged).is_err(), "{damaged:?}");
        }
    }

    /// The golden v1 data directory's on-disk hot index, copied into a fresh index directory
    /// with its `meta.json` payload replaced by `payload` (`None`: kept as written).
    fn v1_hot_index(payload: Option<Option<&str>>) -> (tempfile::TempDir, PathBuf) {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/golden/v1/data/indexes/logs/hot");
        let dir = tempfile::tempdir().unwrap();
        let hot = dir.path().join("indexes/logs/hot");
        fs::create_dir_all(&hot).unwrap();
        for file in fs::read_dir(&golden).unwrap() {
            let file = file.unwrap();
            fs::copy(file.path(), hot.join(file.file_name())).unwrap();
        }
        if let Some(payload) = payload {
            let meta_path = hot.join("meta.json");
            let mut meta: serde_json::Value =
                serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
            meta["payload"] = payload.map_or(serde_json::Value::Null, Into::into);
            fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
        }
        (dir, hot)
    }

    #[test]
    fn a_v1_hot_index_with_its_golden_payload_is_sealed_up_to_its_lsn() {
        let (dir, hot) = v1_hot_index(None);
        let store = Store::open(StoreConfig::manual(dir.path().join("indexes"))).unwrap();
        let handle = store.get("logs").unwrap();
        // The golden payload is `lsn=360 raw=5200`.
        assert_eq!(handle.committed_lsn(), 360);
        let segments = handle.segments();
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].max_lsn, 360);
        assert!(
            !hot.exists(),
            "the upgraded directory is removed once sealed"
        );
    }

    #[test]
    fn a_damaged_or_missing_v1_commit_payload_stops_the_index_and_keeps_its_files() {
        for payload in [Some("lsn=oops raw=5200"), Some("raw=5200"), None] {
            let (dir, hot) = v1_hot_index(Some(payload));
            let before = fs::read(hot.join("meta.json")).unwrap();
            let err = Store::open(StoreConfig::manual(dir.path().join("indexes")))
                .err()
                .unwrap_or_else(|| panic!("{payload:?} opened"));
            assert!(
                matches!(&err, StoreError::CommitPayload { index, path, .. } if index == "logs" && *path == hot),
                "{payload:?}: {err}"
            );
            assert_eq!(fs::read(hot.join("meta.json")).unwrap(), before);
        }
    }

    #[test]
    fn a_v1_hot_index_that_never_committed_needs_no_payload() {
        let dir = tempfile::tempdir().unwrap();
        let hot = dir.path().join("indexes/logs/hot");
        fs::create_dir_all(&hot).unwrap();
        let fresh = open_v1(&hot, &LogSchema::new()).unwrap();
        assert!(fresh.load_metas().unwrap().payload.is_none());
        drop(fresh);
        let store = Store::open(StoreConfig::manual(dir.path().join("indexes"))).unwrap();
        assert!(store.get("logs").unwrap().segments().is_empty());
        assert!(!hot.exists());
    }
}
