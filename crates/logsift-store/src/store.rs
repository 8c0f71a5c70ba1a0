use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::analyze::{Analysis, Analyzed, Analyzer};
use crate::handle::IndexHandle;
use crate::LogSchema;
use logsift_core::entry::{Entry, EntryError};
use logsift_core::{IndexName, IndexNameError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("index {index}: {source}")]
    Tantivy {
        index: String,
        source: tantivy::TantivyError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    IndexName(#[from] IndexNameError),
    #[error("catalog or segment: {0}")]
    Catalog(String),
    #[error("index {index}: the v1 hot index {path} has a damaged commit payload ({why}); it is left as found and the index cannot open until it is repaired or removed")]
    CommitPayload {
        index: String,
        path: PathBuf,
        why: String,
    },
    #[error("undecodable WAL entry {lsn}: {source}")]
    Entry { lsn: u64, source: EntryError },
    #[error(
        "an earlier write failure is still being recovered from; nothing is committed until then"
    )]
    Pending,
    #[error("the server is stopping; the rewrite was abandoned and its sources stay as they are")]
    Stopping,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `<data>/indexes`: one sub-directory per index.
    pub dir: PathBuf,
    /// tantivy's indexing memory budget per index, before it flushes a segment.
    pub writer_memory_bytes: usize,
    /// Zone east of UTC for timestamps that carry none (RFC 3164).
    pub default_offset_secs: i32,
    /// Doc store block size of sealed segments: larger compresses better, costs more per
    /// fetched hit.
    pub docstore_block_bytes: usize,
    /// zstd level of sealed segments' doc stores (1–22) when they are sealed or merged:
    /// low, since it is paid while ingesting.
    pub sealed_zstd_level: i32,
    /// The level sealed segments are recompressed to once their index is quiet for
    /// `idle_recompress_ms` (0: never).
    pub idle_zstd_level: i32,
    pub idle_recompress_ms: u64,
    /// Sealed segments are merged `merge_factor` at a time (of similar size, adjacent in
    /// time); below 2, never.
    pub merge_factor: usize,
    /// No merge produces a segment of more records than this.
    pub merge_max_docs: u64,
    /// Settings of named indexes; others use `IndexOptions::default()`.
    pub index_options: BTreeMap<String, IndexOptions>,
    /// The hot index is sealed into a segment once it holds this many records...
    pub seal_docs: u64,
    /// ...or once it is this old and holds any...
    pub seal_after_ms: u64,
    /// ...or once nothing was added to it for this long (0: never), so that a quiet index
    /// leaves nothing unsealed in memory and the WAL.
    pub seal_idle_ms: u64,
    /// Where sealed segment files are kept.
    pub segments: crate::SegmentStorage,
    /// Where each index's catalog is kept.
    pub metastore: crate::Metastore,
    /// How seals lay out the segments they write.
    pub layout: Layout,
    /// Where the pattern miner's state is kept (`<data>/patterns.state`); `None`: records get
    /// no pattern id.
    pub patterns_state: Option<PathBuf>,
    /// A searcher's store (`logsift serve --role searcher`): it serves the segments the
    /// shared metastore lists, refreshed by [`Store::refresh`], and writes nothing: no records,
    /// seals, merges, retention or clean-up of files it does not know (an indexer may be
    /// publishing them).
    pub read_only: bool,
    /// The first record id of this process's range (`crate::lsn_base` of its indexer number;
    /// 0 for a lone writer): its WAL's positions start there, and what it has sealed is the
    /// highest id in its range that the catalog lists.
    pub lsn_base: u64,
}

/// How a seal lays out a segment. Segments of both layouts are read whatever the setting, so
/// it can change between starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Layout {
    /// One tantivy document per record (merged, recompressed at idle).
    #[default]
    Records,
    /// One tantivy document per block of up to 128 records of one stream, the lines in zstd
    /// frames beside the index (`crate::blocks`). Not merged or recompressed.
    Blocks,
}

/// When a hot tier is sealed (see [`IndexHandle::seal_due`]).
pub(crate) struct SealPolicy {
    pub docs: u64,
    pub after: std::time::Duration,
    pub idle: Option<std::time::Duration>,
}

impl StoreConfig {
    /// A store in `dir` that seals, merges and recompresses only when told to (tests,
    /// benchmarks, tools): no size, age or idle seals, no background merges, zstd level 1 in
    /// 64 KiB blocks, a 32 MiB writer. Change what a use needs with `..StoreConfig::manual(dir)`.
    pub fn manual(dir: PathBuf) -> Self {
        StoreConfig {
            dir,
            writer_memory_bytes: 32 << 20,
            default_offset_secs: 0,
            docstore_block_bytes: 65536,
            sealed_zstd_level: 1,
            idle_zstd_level: 0,
            idle_recompress_ms: 0,
            merge_factor: 0,
            merge_max_docs: 0,
            index_options: BTreeMap::new(),
            seal_docs: u64::MAX,
            seal_after_ms: u64::MAX,
            seal_idle_ms: 0,
            segments: crate::SegmentStorage::Local,
            metastore: crate::Metastore::Files,
            layout: Layout::Records,
            patterns_state: None,
            read_only: false,
            lsn_base: 0,
        }
    }

    /// How records of `index` received at `received_at_ns` are parsed.
    pub(crate) fn parse_options(
        &self,
        index: &str,
        received_at_ns: i64,
    ) -> logsift_parse::ParseOptions {
        logsift_parse::ParseOptions {
            received_at_ns,
            default_offset_secs: self.default_offset_secs,
            logfmt: self.index_options.get(index).is_some_and(|o| o.logfmt),
        }
    }

    pub(crate) fn seal_policy(&self) -> SealPolicy {
        SealPolicy {
            docs: self.seal_docs.max(1),
            after: std::time::Duration::from_millis(self.seal_after_ms),
            idle: (self.seal_idle_ms > 0)
                .then(|| std::time::Duration::from_millis(self.seal_idle_ms)),
        }
    }
}

/// Per-index parsing settings. They must stay the same for the life of the data: hits are
/// rebuilt by parsing the stored bytes again with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexOptions {
    /// Extract `key=value` pairs from plain syslog messages into `fields`.
    pub logfmt: bool,
    /// Sealed segments whose newest record is older than this are deleted.
    pub retention_age_secs: Option<u64>,
    /// The oldest sealed segments are deleted while all of them together exceed this.
    pub retention_bytes: Option<u64>,
    /// Time ranges that retention must not delete from.
    pub legal_holds: Vec<LegalHold>,
}

/// A time range (ns, `[start, end)`) whose records retention keeps, whatever their age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegalHold {
    pub start: i64,
    pub end: i64,
    pub reason: String,
}

/// All indexes under the data directory.
pub struct Store {
    cfg: StoreConfig,
    schema: LogSchema,
    /// An empty in-memory index with the schema and tokenizers, shared by every index: what
    /// queries are compiled against.
    query_index: tantivy::Index,
    /// Where [`Self::start_merges`] starts looking: after the index it last started.
    next_rewrite: AtomicUsize,
    /// Merges and recompressions running at once in the whole store: one per two cores. Each
    /// takes about a core while it runs; ingest and seals need the rest. Read once: the
    /// core count comes from cgroup files.
    max_rewrites: usize,
    indexes: RwLock<BTreeMap<IndexName, Arc<IndexHandle>>>,
    /// Holds placed through the API (the configured ones are in `cfg.index_options`).
    holds: Mutex<crate::holds::Holds>,
    /// Filled by the [`Indexer`], which mines the patterns.
    patterns: Arc<crate::PatternBook>,
}

impl Store {
    /// Opens every index found under `cfg.dir`.
    pub fn open(cfg: StoreConfig) -> Result<Self, StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        fs::create_dir_all(&cfg.dir).map_err(io(&cfg.dir))?;
        let schema = LogSchema::new();
        let query_index = tantivy::Index::create_in_ram(schema.schema.clone());
        LogSchema::register_tokenizers(query_index.tokenizers());
        // Indexes whose catalog is in a shared metastore get their local directory here, so
        // that a new machine serves what was sealed elsewhere.
        let shared = cfg
            .metastore
            .indexes()
            .map_err(|e| StoreError::Catalog(e.to_string()))?;
        for name in shared {
            if IndexName::new_builtin(&name).is_ok() {
                let dir = cfg.dir.join(&name);
                fs::create_dir_all(&dir).map_err(io(&dir))?;
            }
        }
        let patterns: Arc<crate::PatternBook> = Arc::default();
        let mut indexes = BTreeMap::new();
        for entry in fs::read_dir(&cfg.dir).map_err(io(&cfg.dir))? {
            let entry = entry.map_err(io(&cfg.dir))?;
            if !entry.file_type().map_err(io(&cfg.dir))?.is_dir() {
                continue;
            }
            let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| IndexName::new_builtin(n).ok())
            else {
                tracing::warn!(path = %entry.path().display(), "ignoring a directory that is not a valid index name");
                continue;
            };
            let handle = IndexHandle::open_or_create(
                &entry.path(),
                name.clone(),
                &schema,
                &query_index,
                &cfg,
                &patterns,
            )?;
            tracing::info!(index = %name, committed_lsn = handle.committed_lsn(), docs = handle.num_docs(), "opened index");
            indexes.insert(name, Arc::new(handle));
        }
        let holds_path = cfg.dir.parent().unwrap_or(&cfg.dir).join("holds.json");
        let shared = match &cfg.metastore {
            crate::Metastore::Postgres(pg) => Some(pg.clone()),
            crate::Metastore::Files => None,
        };
        let holds = crate::holds::Holds::load(holds_path, shared, !cfg.read_only)?;
        Ok(Store {
            cfg,
            schema,
            query_index,
            next_rewrite: AtomicUsize::new(0),
            max_rewrites: (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1),
            indexes: RwLock::new(indexes),
            holds: Mutex::new(holds),
            patterns,
        })
    }

    pub fn schema(&self) -> &LogSchema {
        &self.schema
    }

    /// How records of `index` received at `received_at_ns` are parsed.
    pub fn parse_options(&self, index: &str, received_at_ns: i64) -> logsift_parse::ParseOptions {
        self.cfg.parse_options(index, received_at_ns)
    }

    /// The template text of each pattern id.
    pub fn patterns(&self) -> &Arc<crate::PatternBook> {
        &self.patterns
    }

    /// The JSON hit of one record of `index`, from what a segment stored of it.
    pub fn hit_json_of(
        &self,
        index: &str,
        id: u64,
        timestamp: i64,
        stored: &crate::Stored<'_>,
    ) -> serde_json::Value {
        crate::document::hit_json_of(self, index, id, timestamp, stored)
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn get(&self, name: &str) -> Option<Arc<IndexHandle>> {
        let indexes = self.indexes.read();
        indexes.get(name).cloned()
    }

    pub fn get_or_create(&self, name: &IndexName) -> Result<Arc<IndexHandle>, StoreError> {
        if let Some(h) = self.get(name.as_str()) {
            return Ok(h);
        }
        let mut indexes = self.indexes.write();
        if let Some(h) = indexes.get(name) {
            return Ok(h.clone());
        }
        let handle = Arc::new(IndexHandle::open_or_create(
            &self.cfg.dir.join(name.as_str()),
            name.clone(),
            &self.schema,
            &self.query_index,
            &self.cfg,
            &self.patterns,
        )?);
        tracing::info!(index = %name, "created index");
        indexes.insert(name.clone(), handle.clone());
        Ok(handle)
    }

    /// Every index, in name order.
    pub fn list(&self) -> Vec<Arc<IndexHandle>> {
        let indexes = self.indexes.read();
        indexes.values().cloned().collect()
    }

    /// The names of the indexes that hold users' logs (not the built-in ones such as
    /// `_audit`), in name order.
    pub fn user_index_names(&self) -> Vec<String> {
        let indexes = self.indexes.read();
        indexes
            .keys()
            .filter(|n| !n.is_builtin())
            .map(|n| n.to_string())
            .collect()
    }

    /// Applies every index's retention settings to its sealed segments. Returns how many
    /// segments were deleted.
    pub fn enforce_retention(&self, now_ns: i64) -> usize {
        let mut deleted = 0;
        for handle in self.list() {
            let Some(opts) = self.cfg.index_options.get(handle.name().as_str()) else {
                continue;
            };
            if opts.retention_age_secs.is_none() && opts.retention_bytes.is_none() {
                continue;
            }
            let mut opts = opts.clone();
            opts.legal_holds = match self.holds_of(handle.name().as_str()) {
                Ok(holds) => holds,
                Err(e) => {
                    // Nothing is deleted without knowing what is held.
                    tracing::warn!(index = %handle.name(), error = %e, "retention waits: the holds cannot be read");
                    continue;
                }
            };
            match handle.enforce_retention(now_ns, &opts) {
                Ok(n) => deleted += n,
                Err(e) => {
                    tracing::error!(index = %handle.name(), error = %e, "retention failed; will retry")
                }
            }
        }
        deleted
    }

    /// Every hold on `index`: configured and placed through the API (read again from the
    /// metastore when holds live there; an error when it cannot be read).
    pub fn holds_of(&self, index: &str) -> Result<Vec<LegalHold>, StoreError> {
        let mut out = self
            .cfg
            .index_options
            .get(index)
            .map(|o| o.legal_holds.clone())
            .unwrap_or_default();
        let mut holds = self.holds.lock();
        out.extend(
            holds
                .current()?
                .iter()
                .filter(|h| h.covers_index(index))
                .map(|h| h.as_legal_hold()),
        );
        Ok(out)
    }

    /// The holds placed through the API.
    pub fn api_holds(&self) -> Result<Vec<crate::HoldRecord>, StoreError> {
        Ok(self.holds.lock().current()?.to_vec())
    }

    pub fn add_hold(&self, hold: crate::HoldRecord) -> Result<(), StoreError> {
        self.holds.lock().add(hold)
    }

    pub fn release_hold(&self, id: &str) -> Result<Option<crate::HoldRecord>, StoreError> {
        self.holds.lock().release(id)
    }

    /// Starts background merges of small sealed segments (or recompressions of quiet ones),
    /// at most one per index and `max_rewrites` in the whole store at once. Returns how
    /// many started.
    ///
    /// The store-wide cap is what keeps many indexes from rewriting together: a thousand
    /// indexes going quiet in the same second each started a thread with its own tantivy
    /// writer (measured: 198 at once, 46 MiB of RSS that fragmentation then kept). The next
    /// call (the pipeline calls this every second) starts the ones left waiting.
    pub fn start_merges(&self) -> usize {
        let handles = self.list();
        let mut running = handles.iter().filter(|h| h.merge_running()).count();
        let mut started = 0;
        // Round robin: the indexes after the last one started go first, so that a busy index
        // (or `_audit`, first by name) cannot keep the others waiting.
        let first = self.next_rewrite.load(Ordering::Relaxed) % handles.len().max(1);
        for (pos, h) in handles
            .iter()
            .enumerate()
            .cycle()
            .skip(first)
            .take(handles.len())
        {
            if running >= self.max_rewrites {
                break;
            }
            if h.maybe_merge(
                self.cfg.merge_factor,
                self.cfg.merge_max_docs,
                std::time::Duration::from_millis(self.cfg.idle_recompress_ms),
            ) {
                running += 1;
                started += 1;
                self.next_rewrite.store(pos + 1, Ordering::Relaxed);
            }
        }
        started
    }

    /// A refresh from the metastore (a searcher's, see [`StoreConfig::read_only`], or an
    /// indexer's beside others): every index serves the segments its catalog in the
    /// metastore lists now; an index that appeared is opened.
    /// A catalog whose head is the one held is not loaded again. Returns how many segments
    /// were opened and how many dropped.
    pub fn refresh(&self) -> Result<(usize, usize), StoreError> {
        let catalog_err = |e: crate::CatalogError| StoreError::Catalog(e.to_string());
        let (mut opened, mut dropped) = (0, 0);
        for (name, head) in self
            .cfg
            .metastore
            .heads(&self.cfg.dir)
            .map_err(catalog_err)?
        {
            let Ok(index) = IndexName::new_builtin(&name) else {
                continue;
            };
            let dir = self.cfg.dir.join(&name);
            let Some(handle) = self.get(&name) else {
                // Under the lock: the indexer may be creating the same index for a record.
                let mut indexes = self.indexes.write();
                if indexes.contains_key(&index) {
                    continue;
                }
                let handle = IndexHandle::open_or_create(
                    &dir,
                    index.clone(),
                    &self.schema,
                    &self.query_index,
                    &self.cfg,
                    &self.patterns,
                )?;
                opened += handle.segments().len();
                tracing::info!(index = %index, segments = handle.segments().len(), "serving a new index from the metastore");
                indexes.insert(index, Arc::new(handle));
                continue;
            };
            if head.as_ref() == Some(&handle.catalog_head()) {
                continue;
            }
            let catalog = self.cfg.metastore.load(&dir, &name).map_err(catalog_err)?;
            if catalog.head() == handle.catalog_head() {
                continue;
            }
            let (o, d) = handle.refresh(catalog);
            if o + d > 0 {
                tracing::info!(index = %index, opened = o, dropped = d, "refreshed the served segments from the metastore");
            }
            opened += o;
            dropped += d;
        }
        Ok((opened, dropped))
    }

    /// Rehashes every sealed segment of every index on a background thread, quarantining
    /// the ones whose bytes changed since they were sealed. Started once after opening: a
    /// full check of a large store takes a while, and serving need not wait for it.
    pub fn spawn_integrity_check(self: &Arc<Self>) {
        let store = self.clone();
        let spawned = std::thread::Builder::new()
            .name("logsift-check".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let mut segments = 0;
                let mut failed = 0;
                for handle in store.list() {
                    segments += handle.segments().len();
                    failed += handle.check_segments();
                }
                tracing::info!(
                    segments,
                    failed,
                    secs = started.elapsed().as_secs_f64(),
                    "checked the sha256 of every sealed segment"
                );
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the segment integrity check");
        }
    }

    /// Waits for every merge in progress.
    pub fn wait_for_merges(&self) {
        for handle in self.list() {
            handle.wait_for_merge();
        }
    }

    /// At shutdown, before [`Self::seal_all_and_wait`]: merges and recompressions running
    /// now are abandoned and their output removed (see `IndexHandle::abandon_rewrite`), and no
    /// rewrite is recorded from now on; erasures have stopped with the HTTP server.
    pub fn abandon_rewrites(&self) {
        for handle in self.list() {
            handle.abandon_rewrite();
        }
    }

    /// Graceful shutdown: seals every hot tier that holds committed records and waits for
    /// every seal, so that what was committed is in sealed segments (covered by
    /// `segments verify`) and the WAL can be truncated. A seal that fails now is not retried:
    /// its records stay in the WAL for the next start.
    /// Hot-tier writers open now (see [`MAX_OPEN_WRITERS`]).
    pub fn open_writers(&self) -> usize {
        self.list().iter().filter(|h| h.writer_open()).count()
    }

    pub fn seal_all_and_wait(&self) {
        for handle in self.list() {
            handle.wait_for_seal();
            handle.stop_retrying();
            if let Err(e) = handle.seal("shutdown") {
                tracing::error!(index = %handle.name(), error = %e, "cannot seal at shutdown; the records stay in the WAL for the next start");
            }
        }
        for handle in self.list() {
            handle.wait_for_seal();
        }
    }

    /// Segments written so far by seals, merges and rewrites (of every index): background
    /// work that ends after the last record.
    pub fn segments_written(&self) -> u64 {
        self.list().iter().map(|h| h.segments_written()).sum()
    }

    /// The highest LSN any index has committed (in this process's range, and at least its
    /// base): new LSNs must start above it.
    pub fn max_committed_lsn(&self) -> u64 {
        self.list()
            .iter()
            .map(|h| h.committed_lsn())
            .max()
            .unwrap_or(0)
            .max(self.cfg.lsn_base)
    }
}

/// Hot-tier writers open at once before the quietest are sealed early (each costs about
/// 5–6 MiB and a handful of threads, measured with tantivy 0.27).
pub const MAX_OPEN_WRITERS: usize = 8;
/// A tier written to more recently than this is never sealed for the writer limit: the busy
/// indexes keep their writers.
const WRITER_IDLE: Duration = Duration::from_millis(250);

/// Entries of a batch parsed and analysed by a [`Preparer`], for [`Indexer::apply_prepared`].
#[derive(Default)]
pub struct Prepared {
    analyzed: Analyzed,
    /// Per entry of the batch, its place in `analyzed` (`u32::MAX`: apply parses it itself).
    places: Vec<u32>,
}

impl Prepared {
    /// Bytes its buffers hold, used or not.
    pub fn held_bytes(&self) -> usize {
        self.analyzed.held_bytes() + self.places.capacity() * 4
    }

    fn get(&self, i: usize) -> Option<Analysis<'_>> {
        match self.places.get(i) {
            Some(&p) if p != u32::MAX => Some(self.analyzed.get(p as usize)),
            _ => None,
        }
    }
}

/// Does the part of applying WAL entries that needs no index, for a batch at a time, on a
/// thread of its own: decoding, parsing and finding the words of records that go to blocks.
/// The indexer thread then only joins them to their blocks; parsing and finding words were
/// most of its time, and it bounded ingest (see `docs/block-index.md`).
pub struct Preparer {
    store: Arc<Store>,
    analyzer: Analyzer,
}

impl Preparer {
    pub fn new(store: Arc<Store>) -> Self {
        Preparer {
            store,
            analyzer: Analyzer::default(),
        }
    }

    /// Prepares the entries `payloads` (a batch, in order) into `out` (cleared first). Only
    /// records of the `blocks` layout are prepared: the `records` layout builds its documents
    /// from the parse itself, on tantivy's indexing threads.
    pub fn prepare<'p>(
        &mut self,
        payloads: impl IntoIterator<Item = &'p [u8]>,
        out: &mut Prepared,
    ) {
        out.analyzed.clear();
        out.places.clear();
        if self.store.cfg.layout != Layout::Blocks {
            // Nothing to prepare: `apply` finds no place and parses each entry itself.
            return;
        }
        for payload in payloads {
            let place = match Entry::decode(payload) {
                Ok(entry) => {
                    let opts = self.store.parse_options(entry.index, entry.received_at);
                    let record = logsift_parse::parse(entry.format, entry.raw, &opts);
                    self.analyzer
                        .analyze(&record, entry.source, &mut out.analyzed);
                    out.analyzed.len() as u32 - 1
                }
                // Undecodable entries are reported by `apply`.
                _ => u32::MAX,
            };
            out.places.push(place);
        }
    }
}

/// Applies WAL entries to the store, in LSN order, and commits them. Single-threaded by design:
/// one indexer owns all writers, so commit payloads always describe a prefix of the WAL.
///
/// When a write to an index fails (disk full, I/O error), the uncommitted documents of every
/// index are dropped and the indexer becomes *pending*: further entries are only counted, and
/// nothing is committed, until [`Indexer::reapply`] has added everything above the committed
/// positions again from the WAL. So a failure can delay records, never lose or duplicate them.
pub struct Indexer {
    store: Arc<Store>,
    /// The highest LSN applied, skipped as already committed, or deferred while pending.
    applied_lsn: u64,
    dirty: BTreeMap<IndexName, Arc<IndexHandle>>,
    /// Indexes that entries were applied for but that could not be created (thread or file
    /// limits, I/O): [`Indexer::reapply_from`] creates them before anything commits again.
    uncreated: std::collections::BTreeSet<IndexName>,
    reapply_pending: bool,
    /// The last [`Indexer::truncatable_lsn`] computed while no failure was pending.
    truncatable: u64,
    /// The pattern miner, when records get pattern ids.
    mining: Option<crate::patterns::Mining>,
}

/// What one [`Indexer::apply`] did with its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Added; with the category of its parse error (see `logsift_parse::parse_error_reason`)
    /// when the line did not parse as its format and was stored verbatim.
    Indexed { parse_error: Option<&'static str> },
    /// The index already had it committed before a restart (WAL replay).
    AlreadyCommitted,
    /// A failure is pending recovery: the entry will be added by [`Indexer::reapply`].
    Deferred,
}

impl Indexer {
    pub fn new(store: Arc<Store>) -> Self {
        let mining = store.cfg.patterns_state.as_ref().map(|path| {
            crate::patterns::Mining::open(path, store.patterns.clone(), store.max_committed_lsn())
        });
        Indexer {
            store,
            applied_lsn: 0,
            dirty: BTreeMap::new(),
            uncreated: std::collections::BTreeSet::new(),
            reapply_pending: false,
            truncatable: 0,
            mining,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Parses and indexes one WAL entry. Entries must come in increasing LSN order, and must
    /// already be readable in the WAL (for [`Indexer::reapply`]).
    pub fn apply(&mut self, lsn: u64, payload: &[u8]) -> Result<Applied, StoreError> {
        self.apply_with(lsn, payload, None)
    }

    /// [`Indexer::apply`] for the `i`th entry of a batch that a [`Preparer`] prepared into
    /// `prepared`: its parse and words are taken from there.
    pub fn apply_prepared(
        &mut self,
        lsn: u64,
        payload: &[u8],
        prepared: &Prepared,
        i: usize,
    ) -> Result<Applied, StoreError> {
        self.apply_with(lsn, payload, prepared.get(i))
    }

    fn apply_with(
        &mut self,
        lsn: u64,
        payload: &[u8],
        analysis: Option<Analysis<'_>>,
    ) -> Result<Applied, StoreError> {
        debug_assert!(lsn > self.applied_lsn, "entries must arrive in LSN order");
        self.applied_lsn = lsn;
        let entry = Entry::decode(payload).map_err(|source| StoreError::Entry { lsn, source })?;
        let name = IndexName::new_builtin(entry.index)?;
        let handle = match self.store.get_or_create(&name) {
            Ok(handle) => handle,
            Err(e) => {
                // The entry was acknowledged and `applied_lsn` now covers it: a commit from here
                // on would let the WAL be truncated past a record that is in no index. Pending
                // stops every commit until `reapply_from` has created the index and re-added
                // its entries from the WAL.
                let already_pending = self.reapply_pending;
                self.uncreated.insert(name);
                self.fail();
                return if already_pending {
                    Ok(Applied::Deferred)
                } else {
                    Err(e)
                };
            }
        };
        if lsn <= handle.committed_lsn() {
            if !self.reapply_pending {
                self.learn_sealed(lsn, &entry);
            }
            return Ok(Applied::AlreadyCommitted);
        }
        if !self.reapply_pending && !handle.writer_open() {
            // Not applied yet while room is made: the commit this may run must not cover it.
            self.applied_lsn = lsn - 1;
            let made = self.make_room_for_writer();
            self.applied_lsn = lsn;
            made?;
        }
        self.dirty.entry(name).or_insert_with(|| handle.clone());
        if self.reapply_pending {
            return Ok(Applied::Deferred);
        }
        match self.add(&handle, lsn, &entry, analysis) {
            Ok(parse_error) => Ok(Applied::Indexed { parse_error }),
            Err(e) => {
                self.fail();
                Err(e)
            }
        }
    }

    /// A replay meets a record its index has sealed, above what the saved miner state holds:
    /// the miner learns from it as it did the first time, so later records get the ids they
    /// had.
    fn learn_sealed(&mut self, lsn: u64, entry: &Entry<'_>) {
        let Some(mining) = self.mining.as_mut() else {
            return;
        };
        if mining.needs(lsn, entry.index) {
            let opts = self.store.parse_options(entry.index, entry.received_at);
            let record = logsift_parse::parse(entry.format, entry.raw, &opts);
            mining.assign(lsn, entry.index, &record.message);
        }
    }

    fn add(
        &mut self,
        handle: &IndexHandle,
        lsn: u64,
        entry: &Entry<'_>,
        analysis: Option<Analysis<'_>>,
    ) -> Result<Option<&'static str>, StoreError> {
        if let Some(a) = analysis {
            let pattern = match self.mining.as_mut() {
                Some(m) => m.assign(lsn, entry.index, a.message),
                None => 0,
            };
            handle.add_analyzed(lsn, entry, &a, pattern)?;
            return Ok(a.parse_error);
        }
        let opts = self.store.parse_options(entry.index, entry.received_at);
        let record = logsift_parse::parse(entry.format, entry.raw, &opts);
        let pattern = match self.mining.as_mut() {
            Some(m) => m.assign(lsn, entry.index, &record.message),
            None => 0,
        };
        handle.add_record(lsn, entry, &record, pattern)?;
        Ok(record
            .parse_error
            .as_deref()
            .map(logsift_parse::parse_error_reason))
    }

    /// Drops every uncommitted document and waits for a re-apply from the WAL.
    fn fail(&mut self) {
        for handle in self.dirty.values() {
            handle.reset_writer();
        }
        self.reapply_pending = true;
    }

    /// Records an LSN the indexer saw but could not decode, so that commits still cover it
    /// and the WAL can be truncated past it.
    pub fn skip(&mut self, lsn: u64) {
        self.applied_lsn = self.applied_lsn.max(lsn);
    }

    pub fn has_uncommitted(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Whether a failure waits for [`Indexer::reapply_from`]; nothing commits meanwhile.
    pub fn needs_reapply(&self) -> bool {
        self.reapply_pending
    }

    /// Commits every index with new documents to its hot tier (searchable from then on) and
    /// starts the seals that are due. Returns the LSN through which the WAL may be truncated:
    /// everything at or below it is sealed (see [`Indexer::truncatable_lsn`]). On failure
    /// everything uncommitted is dropped and must come back through [`Indexer::reapply_from`].
    pub fn commit(&mut self) -> Result<u64, StoreError> {
        if self.reapply_pending {
            return Err(StoreError::Pending);
        }
        // Before the records become visible: their hits name their patterns' templates.
        if let Some(m) = self.mining.as_mut() {
            m.publish();
        }
        while let Some((name, handle)) = self.dirty.pop_first() {
            if let Err(e) = handle.commit(self.applied_lsn) {
                self.dirty.insert(name, handle);
                self.fail();
                return Err(e);
            }
        }
        Ok(self.maintain())
    }

    /// Housekeeping between batches (at least every second): starts the seals that are due
    /// (size, age, idle, WAL bound) and retries failed ones. Returns what
    /// [`Indexer::truncatable_lsn`] returns.
    pub fn maintain(&mut self) -> u64 {
        if self.reapply_pending || !self.dirty.is_empty() {
            return self.truncatable_lsn();
        }
        if let Some(m) = self.mining.as_mut() {
            m.checkpoint(self.applied_lsn, false);
        }
        let policy = self.store.cfg.seal_policy();
        for handle in self.store.list() {
            // Backpressure: a hot tier twice the seal size while the previous seal still runs
            // means sealing falls behind; the indexer waits for it (its queue then fills, and
            // ingest slows down) rather than letting the tier's memory grow without bound.
            if handle.hot_docs() >= policy.docs.saturating_mul(2) {
                handle.wait_for_seal();
            }
            handle.retry_failed_seal();
            if let Some(why) = handle.seal_due(&policy, self.applied_lsn) {
                // A failed seal loses nothing: the tier stays searchable in memory and its
                // records stay in the WAL.
                if let Err(e) = handle.seal(why) {
                    tracing::error!(index = %handle.name(), error = %e, "cannot start sealing; will retry");
                }
            }
        }
        self.limit_open_writers(WRITER_IDLE, MAX_OPEN_WRITERS);
        self.truncatable_lsn()
    }

    /// Before a writer opens: at [`MAX_OPEN_WRITERS`], commit and seal the quietest tiers at
    /// once (a burst of new index names comes faster than tiers go idle).
    fn make_room_for_writer(&mut self) -> Result<(), StoreError> {
        if self.store.open_writers() < MAX_OPEN_WRITERS {
            return Ok(());
        }
        // A seal needs its tier committed.
        self.commit()?;
        self.limit_open_writers(Duration::ZERO, MAX_OPEN_WRITERS - 1);
        Ok(())
    }

    /// Every open hot-tier writer costs megabytes whatever it holds (tantivy sizes its tables
    /// and starts its threads up front), so a flood of new index names, or many quiet indexes
    /// written now and then, would multiply that. Past `cap`, the tiers idle longest (and for
    /// at least `min_idle`) are sealed early, which closes their writers.
    fn limit_open_writers(&mut self, min_idle: Duration, cap: usize) {
        let mut open: Vec<_> = self
            .store
            .list()
            .into_iter()
            .filter(|h| h.writer_open())
            .collect();
        if open.len() <= cap {
            return;
        }
        open.sort_by_key(|h| std::cmp::Reverse(h.idle_for()));
        let excess = open.len() - cap;
        for handle in open.iter().take(excess) {
            if handle.idle_for() < min_idle {
                break;
            }
            if let Err(e) = handle.seal("writers") {
                tracing::error!(index = %handle.name(), error = %e, "cannot start sealing; will retry");
            }
        }
    }

    /// The LSN through which the WAL may be truncated: below the first record that is not in
    /// a sealed segment yet, in any index; everything applied when all is sealed. While a
    /// failure is pending, records applied since are in no tier: the last value stands.
    pub fn truncatable_lsn(&mut self) -> u64 {
        if self.reapply_pending {
            return self.truncatable;
        }
        self.truncatable = self
            .store
            .list()
            .iter()
            .filter_map(|h| h.first_unsealed_lsn())
            .map(|first| first - 1)
            .fold(self.applied_lsn, u64::min);
        // The records the saved miner state has not learnt from must be replayable.
        if let Some(m) = &self.mining {
            self.truncatable = self.truncatable.min(m.saved_lsn());
        }
        self.truncatable
    }

    /// Saves the pattern miner's state now if it changed (a graceful stop), so that the WAL
    /// need not keep records for it. Does nothing while a failure is pending.
    pub fn save_patterns(&mut self) {
        if self.reapply_pending || !self.dirty.is_empty() {
            return;
        }
        if let Some(m) = self.mining.as_mut() {
            m.checkpoint(self.applied_lsn, true);
        }
    }

    /// Recovers from a failure: `scan` must feed every WAL entry in LSN order; those above
    /// their index's committed position and not above what was applied are added again.
    /// Returns the number added; on error the indexer stays pending, to be retried.
    pub fn reapply_from(
        &mut self,
        scan: impl FnOnce(&mut dyn FnMut(u64, &[u8])) -> Result<(), String>,
    ) -> Result<u64, String> {
        while let Some(name) = self.uncreated.pop_first() {
            match self.store.get_or_create(&name) {
                Ok(handle) => {
                    self.dirty.insert(name, handle);
                }
                Err(e) => {
                    let e = format!("cannot create index {name}: {e}");
                    self.uncreated.insert(name);
                    self.fail();
                    return Err(e);
                }
            }
        }
        let mut added = 0u64;
        let mut failure: Option<String> = None;
        let through = self.applied_lsn;
        let dirty: Vec<Arc<IndexHandle>> = self.dirty.values().cloned().collect();
        let mut visit = |lsn: u64, payload: &[u8]| {
            if failure.is_some() || lsn > through {
                return;
            }
            let entry = match Entry::decode(payload) {
                Ok(e) => e,
                Err(_) => return,
            };
            let Some(handle) = dirty
                .iter()
                .find(|h| h.name().as_str() == entry.index && lsn > h.committed_lsn())
            else {
                // Not added again, but the miner may not have learnt from it yet (it was
                // deferred or met during a pending replay): it learns in WAL order.
                self.learn_sealed(lsn, &entry);
                return;
            };
            match self.add(handle, lsn, &entry, None) {
                Ok(_) => added += 1,
                Err(e) => failure = Some(e.to_string()),
            }
        };
        let scanned = scan(&mut visit);
        match failure.or(scanned.err()) {
            Some(e) => {
                self.fail();
                Err(e)
            }
            None => {
                self.reapply_pending = false;
                Ok(added)
            }
        }
    }

    pub fn applied_lsn(&self) -> u64 {
        self.applied_lsn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logsift_core::Format;

    fn open(dir: &Path) -> Arc<Store> {
        Arc::new(
            Store::open(StoreConfig {
                writer_memory_bytes: 15_000_000,
                docstore_block_bytes: 4096,
                ..StoreConfig::manual(dir.to_path_buf())
            })
            .unwrap(),
        )
    }

    fn entry(index: &str, raw: &str) -> Vec<u8> {
        Entry {
            format: Format::Json,
            received_at: 1,
            index,
            source: "test",
            raw: raw.as_bytes(),
        }
        .encode()
    }

    /// The prepare thread's path (`Preparer` then `apply_prepared`) applies a batch as
    /// `apply` does, entry by entry: the same outcomes, parse errors and records per index,
    /// whatever the batch holds (another index, an undecodable entry, a line that does not
    /// parse).
    #[test]
    fn prepared_batches_apply_as_entries_do() {
        let blocks = |dir: &Path| {
            Arc::new(
                Store::open(StoreConfig {
                    layout: Layout::Blocks,
                    ..StoreConfig::manual(dir.to_path_buf())
                })
                .unwrap(),
            )
        };
        let mut batch = vec![
            entry("logs", r#"{"msg":"one","host":"a"}"#),
            entry("other", r#"{"msg":"two","host":"b"}"#),
            b"not an entry".to_vec(),
            entry("logs", r#"{"msg": broken"#),
            entry("logs", r#"{"msg":"three","host":"a","n":7}"#),
        ];
        batch.extend((0..300).map(|i| entry("logs", &format!(r#"{{"msg":"m {i}"}}"#))));
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (plain, prepared) = (blocks(d1.path()), blocks(d2.path()));
        let mut by_entry = Indexer::new(plain.clone());
        let mut by_batch = Indexer::new(prepared.clone());
        let mut preparer = Preparer::new(prepared.clone());
        let mut out = Prepared::default();
        preparer.prepare(batch.iter().map(Vec::as_slice), &mut out);
        // Every decodable entry was analysed there, not left to `apply`.
        assert_eq!(out.analyzed.len(), batch.len() - 1);
        let outcome = |r: Result<Applied, StoreError>| match r {
            Ok(a) => format!("{a:?}"),
            Err(e) => format!("error: {e}"),
        };
        let mut outcomes = Vec::new();
        for (i, payload) in batch.iter().enumerate() {
            let lsn = i as u64 + 1;
            let expected = outcome(by_entry.apply(lsn, payload));
            assert_eq!(
                outcome(by_batch.apply_prepared(lsn, payload, &out, i)),
                expected,
                "entry {i}"
            );
            outcomes.push(expected);
        }
        assert!(outcomes[2].starts_with("error: "), "{}", outcomes[2]);
        assert!(
            outcomes[3].contains("parse_error: Some("),
            "{}",
            outcomes[3]
        );
        by_entry.commit().unwrap();
        by_batch.commit().unwrap();
        for index in ["logs", "other"] {
            let docs = |s: &Store| s.get(index).map(|h| h.num_docs());
            assert_eq!(docs(&prepared), docs(&plain), "{index}");
        }
        assert_eq!(plain.get("logs").unwrap().num_docs(), 303);
    }

    /// Issue #17: the LSN was marked applied before the index was created; when creating it
    /// failed, the next commit let the WAL be truncated past an acknowledged record.
    #[test]
    fn an_index_that_cannot_be_created_holds_its_record_back_until_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut indexer = Indexer::new(store.clone());
        let wal = [
            (1, entry("logs", r#"{"msg":"one"}"#)),
            (2, entry("blocked", r#"{"msg":"two"}"#)),
            (3, entry("logs", r#"{"msg":"three"}"#)),
        ];
        // A file where the index directory must go: creating the index fails.
        let blocker = dir.path().join("blocked");
        fs::write(&blocker, b"not a directory").unwrap();
        assert!(indexer.apply(1, &wal[0].1).is_ok());
        assert!(indexer.apply(2, &wal[1].1).is_err());
        assert!(indexer.apply(3, &wal[2].1).is_ok());
        assert!(matches!(indexer.commit(), Err(StoreError::Pending)));
        assert!(
            indexer.truncatable_lsn() < 2,
            "the WAL may not be truncated past the record of the uncreated index"
        );
        let scan = |visit: &mut dyn FnMut(u64, &[u8])| {
            for (lsn, payload) in &wal {
                visit(*lsn, payload);
            }
            Ok(())
        };
        // Still blocked: re-applying fails and keeps everything pending.
        assert!(indexer.reapply_from(scan).is_err());
        assert!(indexer.needs_reapply());
        fs::remove_file(&blocker).unwrap();
        assert_eq!(indexer.reapply_from(scan), Ok(3));
        assert_eq!(indexer.commit().unwrap(), 0, "nothing is sealed yet");
        let blocked = store.get("blocked").expect("created on re-apply");
        assert_eq!(blocked.committed_lsn(), 3);
        assert_eq!(blocked.num_docs(), 1);
        assert_eq!(store.get("logs").unwrap().num_docs(), 2);
    }

    /// Issue #17: each new index opened a writer (about 6 MiB and a handful of threads) that
    /// stayed open until its tier went idle, so a burst of new index names multiplied them.
    #[test]
    fn a_burst_of_new_indexes_keeps_few_writers_open_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut indexer = Indexer::new(store.clone());
        let names: Vec<String> = (0..3 * MAX_OPEN_WRITERS)
            .map(|i| format!("burst{i}"))
            .collect();
        for (i, name) in names.iter().enumerate() {
            let lsn = i as u64 + 1;
            indexer
                .apply(lsn, &entry(name, &format!(r#"{{"msg":"record {lsn}"}}"#)))
                .unwrap();
            assert!(
                store.open_writers() <= MAX_OPEN_WRITERS,
                "{} writers open after {} indexes",
                store.open_writers(),
                i + 1
            );
        }
        indexer.commit().unwrap();
        store.seal_all_and_wait();
        for name in &names {
            assert_eq!(store.get(name).unwrap().num_docs(), 1, "{name}");
        }
        assert_eq!(
            indexer.truncatable_lsn(),
            names.len() as u64,
            "everything is sealed once all is sealed"
        );
    }

    /// A read-only store (a searcher's) follows the catalog another store writes: it serves
    /// segments sealed after it opened and stops serving deleted ones, and it removes
    /// nothing, not even a segment file the catalog does not list (a writer may be about to
    /// publish it).
    #[test]
    fn a_read_only_store_follows_the_writers_catalog_and_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut index_options = BTreeMap::new();
        index_options.insert(
            "logs".to_string(),
            IndexOptions {
                retention_bytes: Some(1),
                ..IndexOptions::default()
            },
        );
        let writer = Arc::new(
            Store::open(StoreConfig {
                layout: Layout::Blocks,
                index_options,
                ..StoreConfig::manual(dir.path().to_path_buf())
            })
            .unwrap(),
        );
        let mut indexer = Indexer::new(writer.clone());
        let mut lsn = 0;
        let mut seal_batch = |n: u64| {
            for _ in 0..n {
                lsn += 1;
                let raw = format!(r#"{{"msg":"followed {lsn}"}}"#);
                indexer.apply(lsn, &entry("logs", &raw)).unwrap();
            }
            indexer.commit().unwrap();
            writer.seal_all_and_wait();
        };
        seal_batch(10);
        let stray = dir.path().join("logs/segments/99999999999999999999.lsseg");
        fs::write(&stray, b"an upload not yet published").unwrap();
        let reader = Store::open(StoreConfig {
            read_only: true,
            ..StoreConfig::manual(dir.path().to_path_buf())
        })
        .unwrap();
        assert!(stray.exists(), "a read-only store removed an unlisted file");
        let followed = reader.get("logs").unwrap();
        assert_eq!(followed.num_docs(), 10);
        assert_eq!(reader.refresh().unwrap(), (0, 0), "nothing moved");

        seal_batch(15);
        assert_eq!(followed.num_docs(), 10, "served before the refresh");
        assert_eq!(reader.refresh().unwrap(), (1, 0));
        assert_eq!(followed.num_docs(), 25);
        assert_eq!(
            followed.catalog_head(),
            writer.get("logs").unwrap().catalog_head()
        );
        assert_eq!(followed.committed_lsn(), 25);

        assert_eq!(writer.enforce_retention(logsift_core::time::now_ns()), 2);
        assert_eq!(reader.refresh().unwrap(), (0, 2));
        assert_eq!(followed.num_docs(), 0);
        assert!(followed.segments().is_empty());
        assert!(followed.chain_problems().is_empty());
        assert!(stray.exists());
    }

    /// Record segments (written by v1, or with `layout = "records"`) are rewritten as block
    /// segments once a `blocks` store is quiet: the same records, ids, times and lines, and
    /// the catalog chain says so.
    #[test]
    fn record_segments_are_rewritten_as_blocks_when_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let config = |layout| StoreConfig {
            layout,
            idle_recompress_ms: 1,
            ..StoreConfig::manual(dir.path().to_path_buf())
        };
        let mut written = Vec::new();
        {
            let store = Arc::new(Store::open(config(Layout::Records)).unwrap());
            let mut indexer = Indexer::new(store.clone());
            for lsn in 1..=700u64 {
                let raw = format!(
                    r#"{{"message":"request {lsn} done","host":"h{}","level":"{}","time":"2026-12-02T12:{:02}:00Z"}}"#,
                    lsn % 3,
                    ["info", "error"][(lsn % 2) as usize],
                    lsn % 60
                );
                indexer.apply(lsn, &entry("logs", &raw)).unwrap();
                written.push(raw);
            }
            indexer.commit().unwrap();
            store.seal_all_and_wait();
            let h = store.get("logs").unwrap();
            assert!(h
                .sealed_parts(None, None)
                .iter()
                .all(|(_, p)| matches!(p, crate::PartReader::Records(_))));
        }
        let store = Arc::new(Store::open(config(Layout::Blocks)).unwrap());
        let h = store.get("logs").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(store.start_merges(), 1);
        store.wait_for_merges();
        assert_eq!(store.start_merges(), 0, "nothing left to rewrite");
        let parts = h.sealed_parts(None, None);
        assert_eq!(parts.len(), 1);
        let (entry, crate::PartReader::Blocks(segment)) = &parts[0] else {
            panic!("still a record segment");
        };
        assert_eq!(entry.reason, "rewritten as blocks");
        assert_eq!(entry.docs, 700);
        let mut lines = Vec::new();
        let mut block = crate::blocks::DecodedBlock::default();
        for ord in 0..segment.blocks.len() {
            segment.read_block(ord, &mut block).unwrap();
            for r in &block.records {
                let raw = String::from_utf8(block.raw(r).to_vec()).unwrap();
                assert_eq!(written[r.id as usize - 1], raw, "record {}", r.id);
                lines.push(r.id);
            }
        }
        lines.sort_unstable();
        assert_eq!(lines, (1..=700).collect::<Vec<u64>>());
        assert!(h.chain_problems().is_empty());
    }

    /// The hot tier of blocks compresses at the sealed level, and its seal keeps those
    /// bodies: a quiet index rewrites them at the idle level, once, with the same records.
    #[test]
    fn quiet_block_segments_are_recompressed_at_the_idle_level() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Store::open(StoreConfig {
                layout: Layout::Blocks,
                docstore_block_bytes: 4096,
                sealed_zstd_level: 1,
                idle_zstd_level: 9,
                idle_recompress_ms: 1,
                ..StoreConfig::manual(dir.path().to_path_buf())
            })
            .unwrap(),
        );
        let mut indexer = Indexer::new(store.clone());
        let mut written = Vec::new();
        for lsn in 1..=500u64 {
            let raw = format!(
                r#"{{"message":"request {lsn} done in {} ms","host":"h{}","level":"{}"}}"#,
                lsn % 17,
                lsn % 3,
                ["info", "warning"][(lsn % 2) as usize]
            );
            indexer.apply(lsn, &entry("logs", &raw)).unwrap();
            written.push(raw);
        }
        indexer.commit().unwrap();
        store.seal_all_and_wait();
        let h = store.get("logs").unwrap();
        // The sealed segment's summary (the hot tier's parts have none).
        let level = |h: &IndexHandle| {
            h.parts(None, None)
                .into_iter()
                .find_map(|(_, summary)| summary)
                .and_then(|s| s.body_zstd_level)
        };
        assert_eq!(level(&h), Some(1));
        std::thread::sleep(Duration::from_millis(20));
        // Searches during the rewrite see every record: the segment or its rewrite, never
        // neither.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (h, stop) = (h.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut looks = 0u64;
                while !stop.load(Ordering::Relaxed) || looks == 0 {
                    let seen: u64 = h
                        .parts(None, None)
                        .iter()
                        .map(|(p, _)| match p {
                            crate::PartReader::Blocks(b) => b.num_records(),
                            crate::PartReader::Records(r) => r.num_docs(),
                        })
                        .sum();
                    assert_eq!(seen, 500, "after {looks} looks");
                    looks += 1;
                }
                looks
            })
        };
        assert_eq!(store.start_merges(), 1);
        store.wait_for_merges();
        stop.store(true, Ordering::Relaxed);
        assert!(watcher.join().expect("every look saw every record") > 0);
        assert_eq!(store.start_merges(), 0, "recompressed once");
        let parts = h.sealed_parts(None, None);
        let (entry, crate::PartReader::Blocks(segment)) = &parts[0] else {
            panic!("not a block segment");
        };
        assert_eq!(entry.reason, "recompressed at zstd level 9");
        assert_eq!(entry.docs, 500);
        let mut block = crate::blocks::DecodedBlock::default();
        let mut seen = 0;
        for ord in 0..segment.blocks.len() {
            segment.read_block(ord, &mut block).unwrap();
            for r in &block.records {
                assert_eq!(block.raw(r), written[r.id as usize - 1].as_bytes());
                seen += 1;
            }
        }
        assert_eq!(seen, 500);
        assert_eq!(level(&h), Some(9));
    }

    /// Issue #17: an index-name flood left a thousand one-record indexes that all went quiet
    /// in the same second, and each started its own recompression thread with a tantivy
    /// writer (198 at once, 46 MiB of RSS kept afterwards). Rewrites now take turns across
    /// the store, and segments below one doc store block are not recompressed at all.
    #[test]
    fn quiet_indexes_take_turns_to_recompress_and_tiny_segments_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Store::open(StoreConfig {
                writer_memory_bytes: 15_000_000,
                docstore_block_bytes: 4096,
                idle_zstd_level: 9,
                idle_recompress_ms: 1,
                ..StoreConfig::manual(dir.path().to_path_buf())
            })
            .unwrap(),
        );
        let mut indexer = Indexer::new(store.clone());
        let mut lsn = 0;
        for i in 0..4 {
            for n in 0..100 {
                lsn += 1;
                let raw = format!(
                    r#"{{"msg":"record {n} of a busy index, long enough to fill blocks"}}"#
                );
                indexer
                    .apply(lsn, &entry(&format!("big{i}"), &raw))
                    .unwrap();
            }
            lsn += 1;
            indexer
                .apply(lsn, &entry(&format!("tiny{i}"), r#"{"msg":"one"}"#))
                .unwrap();
        }
        indexer.commit().unwrap();
        store.seal_all_and_wait();
        std::thread::sleep(Duration::from_millis(20));
        let mut started = 0;
        loop {
            let now = store.start_merges();
            assert!(now <= store.max_rewrites, "{now} rewrites started at once");
            let running = store.list().iter().filter(|h| h.merge_running()).count();
            assert!(
                running <= store.max_rewrites,
                "{running} rewrites running at once"
            );
            if now == 0 {
                break;
            }
            started += now;
            store.wait_for_merges();
        }
        assert_eq!(
            started, 4,
            "one recompression per busy index, none for the tiny ones"
        );
        for h in store.list() {
            let segments = h.segments();
            assert_eq!(segments.len(), 1, "{}", h.name());
            let recompressed = segments[0].reason.starts_with("recompressed at");
            let big = h.name().as_str().starts_with("big");
            assert_eq!(recompressed, big, "{}: {}", h.name(), segments[0].reason);
        }
    }
}
