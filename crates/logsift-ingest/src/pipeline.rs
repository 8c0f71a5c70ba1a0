use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use logsift_core::entry::Entries;
use logsift_store::{Indexer, Store, StoreError};
use logsift_wal::{Wal, WalError, WalOptions};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::IngestMetrics;

/// When the WAL writer calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Durable requests (HTTP) are fsynced before they are answered; everything else at least
    /// every `group_commit_interval_ms`.
    Batch,
    /// Every group of appends is fsynced before the next is taken, whoever waits for it.
    Always,
    /// Never fsync; rely on the OS. For benchmarks only: an acknowledgement then survives a
    /// process crash but not a power loss.
    Never,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub wal_dir: PathBuf,
    pub wal_max_file_bytes: u64,
    pub fsync: FsyncPolicy,
    pub group_commit_interval_ms: u64,
    pub commit_interval_ms: u64,
    /// Bytes of received lines between acceptance and the indexer (in queues, in the WAL
    /// writer, waiting for the indexer). Beyond it TCP waits, HTTP gets 429, UDP drops.
    pub inflight_bytes: usize,
    /// Ingest is refused (HTTP 507, counted for TCP/UDP) while the WAL's file system has less
    /// free space than this, so the disk never fills up under the indexes' feet.
    pub min_free_bytes: u64,
    /// Indexes (not counting built-in `_` ones) that writes may create: a write naming a new
    /// index beyond it is refused before it is acknowledged.
    pub max_indexes: usize,
}

/// How long an HTTP client is told to wait after a 429.
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error, Clone)]
pub enum AppendError {
    #[error("the server is shutting down")]
    Closed,
    #[error("ingest is over its in-flight budget of {budget_bytes} bytes; retry after {RETRY_AFTER_SECS} s")]
    Full { budget_bytes: usize },
    #[error("cannot make records durable: {0}")]
    Storage(String),
    #[error("index {index:?} does not exist and {limit} indexes already do, the limit of index.max_indexes; write to an existing index or raise the limit")]
    TooManyIndexes { index: String, limit: usize },
    #[error("{what} would hold {bytes} bytes in memory, more than the whole in-flight budget ingest.inflight_bytes = {budget_bytes}; send smaller requests")]
    TooLarge {
        what: &'static str,
        bytes: usize,
        budget_bytes: usize,
    },
}

/// What one entry costs in memory beyond its bytes while it is in flight: its `Vec` header,
/// allocator rounding and its slot in the WAL writer's batch. Charged with the bytes, so that
/// a body of many tiny lines cannot hold many times the budget it was charged for.
pub const ENTRY_OVERHEAD_BYTES: usize = 64;

/// The in-flight cost of `entries`: their bytes plus [`ENTRY_OVERHEAD_BYTES`] each.
pub fn entries_cost(entries: &Entries) -> usize {
    entries.total_bytes() + entries.len() * ENTRY_OVERHEAD_BYTES
}

/// What the sender waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Until the entries are fsynced in the WAL (HTTP `ack=durable`, the default). Survives
    /// kill -9 and power loss.
    Durable,
    /// Until the entries are queued in memory (HTTP `ack=received`, TCP, UDP). Written to the
    /// WAL within `group_commit_interval_ms`; lost if the process dies before that.
    Received,
}

/// What the sender does when the in-flight budget is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Wait for room (TCP: while we wait we do not read, and the kernel slows the sender).
    Wait,
    /// Fail at once with [`AppendError::Full`] (UDP drops).
    Try,
    /// Wait this long for room, then fail with [`AppendError::Full`] (HTTP: while a request
    /// waits its body is not read; then it is answered 429 with `Retry-After`).
    Within(std::time::Duration),
}

struct Request {
    entries: Entries,
    /// Held until the indexer has applied the entries: this is what bounds memory.
    permit: OwnedSemaphorePermit,
    /// Present when the sender waits for fsync.
    reply: Option<oneshot::Sender<Result<(), AppendError>>>,
}

enum Message {
    Append(Request),
    Shutdown,
}

struct IndexBatch {
    /// The entries of each request of a WAL round, with the LSN of its first: a request's
    /// entries have consecutive LSNs.
    chunks: Vec<(u64, Entries)>,
    _permits: Vec<OwnedSemaphorePermit>,
}

impl IndexBatch {
    /// Each entry with its LSN, in LSN order.
    fn entries(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.chunks
            .iter()
            .flat_map(|(first, entries)| (*first..).zip(entries.iter()))
    }

    fn is_empty(&self) -> bool {
        self.chunks.iter().all(|(_, e)| e.is_empty())
    }
}

/// A batch with what the prepare thread worked out for it.
struct PreparedBatch {
    batch: IndexBatch,
    prepared: logsift_store::Prepared,
}

/// Batches prepared ahead of the indexer: one being applied while the next is prepared is what
/// runs the two threads side by side; more would only hold memory.
const PREPARED_AHEAD: usize = 2;
/// Largest prepared batch whose buffers are handed back for reuse (after an unusually large
/// batch, memory goes back to the allocator instead).
const SPARE_MAX_BYTES: usize = 32 << 20;

/// A share of the in-flight budget, held from before a request's data is read until the
/// indexer has applied its entries.
pub struct Reservation {
    permit: OwnedSemaphorePermit,
}

/// Decides which writes may create an index, so that the number of indexes stays within
/// `max_indexes`. Names are admitted before their entries are appended (and acknowledged),
/// and stay admitted until the indexer creates them, so that concurrent requests for new
/// names cannot together pass the limit.
struct IndexAdmission {
    store: Arc<Store>,
    max_indexes: usize,
    admitted: parking_lot::Mutex<std::collections::BTreeSet<String>>,
}

impl IndexAdmission {
    fn admit(&self, name: &str) -> Result<(), AppendError> {
        if name.starts_with('_') || self.store.get(name).is_some() {
            return Ok(());
        }
        let mut admitted = self.admitted.lock();
        if admitted.contains(name) {
            return Ok(());
        }
        let existing = self.store.user_index_names();
        admitted.retain(|n| existing.binary_search(n).is_err());
        if existing.len() + admitted.len() >= self.max_indexes {
            return Err(AppendError::TooManyIndexes {
                index: name.to_string(),
                limit: self.max_indexes,
            });
        }
        admitted.insert(name.to_string());
        Ok(())
    }

    /// Admits the index of every entry; consecutive entries mostly share one, looked at once.
    fn admit_all(&self, entries: &Entries) -> Result<(), AppendError> {
        let mut last: Option<&str> = None;
        for payload in entries.iter() {
            // An undecodable entry is the indexer's to count and skip, not a reason to refuse.
            let Ok(entry) = logsift_core::entry::Entry::decode(payload) else {
                continue;
            };
            if last != Some(entry.index) {
                self.admit(entry.index)?;
                last = Some(entry.index);
            }
        }
        Ok(())
    }
}

/// A cheap, cloneable way in: what listeners and HTTP handlers hold.
#[derive(Clone)]
pub struct PipelineHandle {
    indexes: Arc<IndexAdmission>,
    tx: flume::Sender<Message>,
    budget: Arc<Semaphore>,
    budget_kib: u32,
    metrics: Arc<IngestMetrics>,
    refusing: Arc<AtomicBool>,
}

impl PipelineHandle {
    /// Appends encoded entries; see [`Ack`] and [`Admission`] for when it returns.
    pub async fn append(
        &self,
        entries: impl Into<Entries>,
        ack: Ack,
        admission: Admission,
    ) -> Result<(), AppendError> {
        let entries = entries.into();
        if entries.is_empty() {
            return Ok(());
        }
        let reservation = self.reserve(entries_cost(&entries), admission).await?;
        self.append_reserved(entries, reservation, ack, admission)
            .await
    }

    /// Takes `bytes` of the in-flight budget before the data is even read, so that a flood of
    /// large requests is refused before it occupies memory (HTTP reserves its Content-Length).
    pub async fn reserve(
        &self,
        bytes: usize,
        admission: Admission,
    ) -> Result<Reservation, AppendError> {
        let kib = self.kib(bytes);
        let permit = match admission {
            Admission::Wait => self
                .budget
                .clone()
                .acquire_many_owned(kib)
                .await
                .map_err(|_| AppendError::Closed)?,
            Admission::Try => {
                self.budget
                    .clone()
                    .try_acquire_many_owned(kib)
                    .map_err(|e| match e {
                        tokio::sync::TryAcquireError::NoPermits => AppendError::Full {
                            budget_bytes: self.budget_bytes(),
                        },
                        tokio::sync::TryAcquireError::Closed => AppendError::Closed,
                    })?
            }
            Admission::Within(wait) => {
                tokio::time::timeout(wait, self.budget.clone().acquire_many_owned(kib))
                    .await
                    .map_err(|_| AppendError::Full {
                        budget_bytes: self.budget_bytes(),
                    })?
                    .map_err(|_| AppendError::Closed)?
            }
        };
        Ok(Reservation { permit })
    }

    /// Appends entries under a reservation, growing it (per `admission`) or giving back what
    /// the entries do not need.
    pub async fn append_reserved(
        &self,
        entries: impl Into<Entries>,
        mut reservation: Reservation,
        ack: Ack,
        admission: Admission,
    ) -> Result<(), AppendError> {
        let entries = entries.into();
        if entries.is_empty() {
            return Ok(());
        }
        let cost = entries_cost(&entries);
        if admission != Admission::Wait && cost > self.budget_bytes() {
            return Err(AppendError::TooLarge {
                what: "the request's records",
                bytes: cost,
                budget_bytes: self.budget_bytes(),
            });
        }
        let needed = self.kib(cost) as usize;
        let held = reservation.permit.num_permits();
        if needed > held {
            let extra = self.reserve((needed - held) * 1024, admission).await?;
            reservation.permit.merge(extra.permit);
        } else if needed < held {
            drop(reservation.permit.split(held - needed));
        }
        if let Err(e) = self.indexes.admit_all(&entries) {
            self.metrics
                .index_limit_refused
                .inc_by(entries.len() as u64);
            return Err(e);
        }
        let (reply, done) = match ack {
            Ack::Durable => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            Ack::Received => (None, None),
        };
        let msg = Message::Append(Request {
            entries,
            permit: reservation.permit,
            reply,
        });
        self.tx
            .send_async(msg)
            .await
            .map_err(|_| AppendError::Closed)?;
        match done {
            Some(done) => done.await.map_err(|_| AppendError::Closed)?,
            None => Ok(()),
        }
    }

    /// Makes `reservation` cover exactly `bytes` (rounded up to KiB), growing it without
    /// waiting or giving back what it no longer needs. For HTTP bodies, whose memory grows as
    /// they are decompressed and decoded: each step is charged before it is allocated.
    /// `what` names the thing in the error: [`AppendError::TooLarge`] when `bytes` exceeds
    /// the whole budget (it could never be admitted), [`AppendError::Full`] when it exceeds
    /// what is free now.
    pub fn try_cover(
        &self,
        reservation: &mut Reservation,
        bytes: usize,
        what: &'static str,
    ) -> Result<(), AppendError> {
        if bytes > self.budget_bytes() {
            return Err(AppendError::TooLarge {
                what,
                bytes,
                budget_bytes: self.budget_bytes(),
            });
        }
        let needed = self.kib(bytes) as usize;
        let held = reservation.permit.num_permits();
        if needed > held {
            let extra = self
                .budget
                .clone()
                .try_acquire_many_owned((needed - held) as u32)
                .map_err(|e| match e {
                    tokio::sync::TryAcquireError::NoPermits => AppendError::Full {
                        budget_bytes: self.budget_bytes(),
                    },
                    tokio::sync::TryAcquireError::Closed => AppendError::Closed,
                })?;
            reservation.permit.merge(extra);
        } else if needed < held {
            drop(reservation.permit.split(held - needed));
        }
        Ok(())
    }

    /// The whole in-flight budget (`ingest.inflight_bytes`, rounded up to KiB).
    pub fn budget_bytes(&self) -> usize {
        self.budget_kib as usize * 1024
    }

    /// Permits are KiB so that the semaphore's u32 covers any sane budget; a request larger
    /// than the whole budget takes all of it rather than waiting forever.
    fn kib(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.budget_kib)
    }

    pub fn metrics(&self) -> &Arc<IngestMetrics> {
        &self.metrics
    }

    /// Bytes accepted but not yet indexed.
    pub fn inflight_bytes(&self) -> usize {
        (self.budget_kib as usize - self.budget.available_permits()) * 1024
    }

    /// Requests waiting for the WAL writer.
    pub fn wal_queue_len(&self) -> usize {
        self.tx.len()
    }

    /// Whether ingest is being refused because the disk is (nearly) full or failing.
    pub fn is_refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    /// Sets the gauges that are read from the pipeline rather than counted, before the
    /// metrics are exported.
    pub fn refresh_metrics(&self) {
        let m = &self.metrics;
        m.inflight_bytes.set(self.inflight_bytes() as u64);
        m.wal_queue_depth.set(self.wal_queue_len() as u64);
        m.ingest_refusing.set(self.is_refusing() as u64);
    }
}

pub struct Pipeline {
    handle: PipelineHandle,
    /// Returns the WAL when it stops, for the truncation after the final seals.
    wal_thread: Option<JoinHandle<Wal>>,
    prepare_thread: Option<JoinHandle<()>>,
    index_thread: Option<JoinHandle<()>>,
    /// What the WAL may drop: everything at or below it is in sealed segments.
    truncatable: Arc<AtomicU64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not start thread: {0}")]
    Thread(std::io::Error),
}

/// What start-up found in the WAL; shown in logs and `/health/ready`.
#[derive(Debug, Clone, Default)]
pub struct StartReport {
    pub wal_files: usize,
    pub wal_entries: u64,
    pub replayed: u64,
    pub torn_bytes: u64,
    /// Copies (or renamed files) of WAL files found damaged, kept as `*.damaged`.
    pub damaged_files: Vec<PathBuf>,
    /// Damaged ranges replay skipped to reach the valid entries after them, and their bytes.
    pub skipped_ranges: u64,
    pub skipped_bytes: u64,
    pub unreadable_entries: u64,
}

const MAX_KIB: usize = u32::MAX as usize;

impl Pipeline {
    /// Replays the WAL into the store (records already committed are skipped, so nothing is
    /// indexed twice), commits, and starts the WAL writer and indexer threads.
    pub fn start(
        cfg: PipelineConfig,
        store: Arc<Store>,
        metrics: Arc<IngestMetrics>,
    ) -> Result<(Pipeline, StartReport), PipelineError> {
        let mut indexer = Indexer::new(store.clone());
        let mut start = StartReport::default();
        let wal_opts = WalOptions {
            dir: cfg.wal_dir.clone(),
            max_file_bytes: cfg.wal_max_file_bytes,
        };
        let (mut wal, report) =
            Wal::open(&wal_opts, store.max_committed_lsn() + 1, |lsn, payload| {
                if lsn <= indexer.applied_lsn() {
                    return;
                }
                match indexer.apply(lsn, payload) {
                    Ok(logsift_store::Applied::Indexed { .. }) => start.replayed += 1,
                    Ok(_) => {}
                    Err(e @ StoreError::Entry { .. }) => {
                        tracing::error!(lsn, error = %e, "cannot decode WAL entry; skipping it");
                        indexer.skip(lsn);
                        start.unreadable_entries += 1;
                    }
                    // The indexer is now pending: its thread re-applies from the WAL.
                    Err(e) => tracing::error!(lsn, error = %e, "index write failed during replay"),
                }
            })?;
        // A failure here (a full disk, say) must not stop the server: the records stay in
        // the WAL and the indexer thread retries.
        match indexer.commit() {
            Ok(through) => {
                wal.truncate_through(through)?;
            }
            Err(e) => tracing::error!(error = %e, "cannot commit replayed records yet; will retry"),
        }
        start.wal_files = report.files;
        start.wal_entries = report.entries;
        start.torn_bytes = report.torn_bytes;
        start.damaged_files = report.damaged_files;
        start.skipped_ranges = report.skipped_ranges;
        start.skipped_bytes = report.skipped_bytes;
        metrics
            .wal_damaged_files
            .set(start.damaged_files.len() as u64);
        metrics.wal_skipped_bytes.inc_by(start.skipped_bytes);
        tracing::info!(
            files = start.wal_files,
            entries = start.wal_entries,
            replayed = start.replayed,
            torn_bytes = start.torn_bytes,
            damaged_files = start.damaged_files.len(),
            skipped_bytes = start.skipped_bytes,
            next_lsn = wal.next_lsn(),
            "WAL replayed"
        );

        // Requests are few and large; the byte budget, not this count, bounds memory.
        let (tx, rx) = flume::bounded(4096);
        let (index_tx, index_rx) = flume::bounded::<IndexBatch>(1024);
        let truncatable = Arc::new(AtomicU64::new(0));
        let refusing = Arc::new(AtomicBool::new(false));
        let budget_kib = cfg.inflight_bytes.div_ceil(1024).clamp(1, MAX_KIB);
        let wal_thread = {
            let metrics = metrics.clone();
            let truncatable = truncatable.clone();
            let refusing = refusing.clone();
            let cfg = cfg.clone();
            std::thread::Builder::new()
                .name("logsift-wal".into())
                .spawn(move || {
                    WalWriter {
                        wal,
                        cfg,
                        metrics,
                        truncatable,
                        refusing,
                    }
                    .run(rx, index_tx)
                })
                .map_err(PipelineError::Thread)?
        };
        let (prepared_tx, prepared_rx) = flume::bounded::<PreparedBatch>(PREPARED_AHEAD);
        let (spare_tx, spare_rx) = flume::bounded::<logsift_store::Prepared>(PREPARED_AHEAD + 1);
        let prepare_thread = {
            let preparer = logsift_store::Preparer::new(store.clone());
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name("logsift-prepare".into())
                .spawn(move || prepare_loop(preparer, index_rx, prepared_tx, spare_rx, &metrics))
                .map_err(PipelineError::Thread)?
        };
        let index_thread = {
            let metrics = metrics.clone();
            let truncatable = truncatable.clone();
            let interval = Duration::from_millis(cfg.commit_interval_ms);
            let wal_dir = cfg.wal_dir.clone();
            std::thread::Builder::new()
                .name("logsift-indexer".into())
                .spawn(move || {
                    index_loop(
                        indexer,
                        prepared_rx,
                        spare_tx,
                        interval,
                        &wal_dir,
                        &metrics,
                        &truncatable,
                    )
                })
                .map_err(PipelineError::Thread)?
        };
        let handle = PipelineHandle {
            indexes: Arc::new(IndexAdmission {
                store: store.clone(),
                max_indexes: cfg.max_indexes,
                admitted: Default::default(),
            }),
            tx,
            budget: Arc::new(Semaphore::new(budget_kib)),
            budget_kib: budget_kib as u32,
            metrics,
            refusing,
        };
        Ok((
            Pipeline {
                handle,
                wal_thread: Some(wal_thread),
                prepare_thread: Some(prepare_thread),
                index_thread: Some(index_thread),
                truncatable,
            },
            start,
        ))
    }

    pub fn handle(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// Finishes what was queued before this call: everything is fsynced in the WAL, indexed
    /// and sealed into segments when it returns, and the WAL is truncated through what was
    /// sealed (a seal that failed leaves its records in the WAL for the next start).
    pub fn shutdown(mut self) {
        let _ = self.handle.tx.send(Message::Shutdown);
        let wal = self.wal_thread.take().and_then(|t| t.join().ok());
        if let Some(t) = self.prepare_thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.index_thread.take() {
            let _ = t.join();
        }
        if let Some(mut wal) = wal {
            let through = self.truncatable.load(Ordering::Acquire);
            if let Err(e) = wal.truncate_through(through) {
                tracing::warn!(error = %e, "could not truncate the WAL at shutdown");
            }
        }
    }
}

/// Largest amount of request payload the WAL writer takes in one round before it syncs.
const MAX_ROUND_BYTES: usize = 8 << 20;
/// How often free disk space is measured at most.
const DISK_CHECK_INTERVAL: Duration = Duration::from_millis(500);

struct WalWriter {
    wal: Wal,
    cfg: PipelineConfig,
    metrics: Arc<IngestMetrics>,
    truncatable: Arc<AtomicU64>,
    refusing: Arc<AtomicBool>,
}

impl WalWriter {
    fn run(mut self, rx: flume::Receiver<Message>, index_tx: flume::Sender<IndexBatch>) -> Wal {
        let interval = Duration::from_millis(self.cfg.group_commit_interval_ms);
        let mut last_sync = Instant::now();
        let mut dirty = false;
        let mut truncated_through = 0u64;
        let mut shutting_down = false;
        let mut last_disk_check: Option<(Instant, Option<String>)> = None;
        let mut round: Vec<Request> = Vec::new();
        while !shutting_down {
            let first = if dirty && self.cfg.fsync != FsyncPolicy::Never {
                rx.recv_deadline(last_sync + interval)
            } else {
                rx.recv_timeout(Duration::from_secs(1))
            };
            let mut round_bytes = 0;
            match first {
                Ok(Message::Append(req)) => {
                    round_bytes += req.entries.total_bytes();
                    round.push(req);
                }
                Ok(Message::Shutdown) | Err(flume::RecvTimeoutError::Disconnected) => {
                    shutting_down = true
                }
                Err(flume::RecvTimeoutError::Timeout) => {}
            }
            // Group commit: take whatever else is already waiting, up to a bound.
            while !shutting_down && round_bytes < MAX_ROUND_BYTES {
                match rx.try_recv() {
                    Ok(Message::Append(req)) => {
                        round_bytes += req.entries.total_bytes();
                        round.push(req);
                    }
                    Ok(Message::Shutdown) => shutting_down = true,
                    Err(_) => break,
                }
            }
            self.metrics.wal_queue_depth.set(rx.len() as u64);

            let low_space = if round.is_empty() {
                None
            } else {
                self.low_space(&mut last_disk_check)
            };
            let outcome = match low_space {
                Some(reason) => Err(reason),
                None => self.write_round(
                    &mut round,
                    &mut dirty,
                    &mut last_sync,
                    interval,
                    shutting_down,
                ),
            };
            match outcome {
                Ok(firsts) => {
                    if self.refusing.swap(false, Ordering::Relaxed) {
                        tracing::info!("WAL writes succeed again; ingest resumed");
                    }
                    let mut batch = IndexBatch {
                        chunks: Vec::with_capacity(round.len()),
                        _permits: Vec::with_capacity(round.len()),
                    };
                    for (req, first) in round.drain(..).zip(firsts) {
                        if let Some(reply) = req.reply {
                            let _ = reply.send(Ok(()));
                        }
                        if let Some(first) = first {
                            batch.chunks.push((first, req.entries));
                        }
                        batch._permits.push(req.permit);
                    }
                    if !batch.is_empty() && index_tx.send(batch).is_err() {
                        tracing::error!(
                            "indexer stopped; records will be replayed from the WAL at next start"
                        );
                    }
                }
                Err(reason) => {
                    if !self.refusing.swap(true, Ordering::Relaxed) {
                        tracing::error!(%reason, "refusing ingest until the WAL can be written again");
                    }
                    for req in round.drain(..) {
                        let lines = req.entries.len() as u64;
                        self.metrics.ingest_refused_lines.inc_by(lines);
                        if let Some(reply) = req.reply {
                            let _ = reply.send(Err(AppendError::Storage(reason.clone())));
                        }
                    }
                }
            }
            let through = self.truncatable.load(Ordering::Acquire);
            if through > truncated_through {
                match self.wal.truncate_through(through) {
                    Ok(_) => truncated_through = through,
                    Err(e) => tracing::warn!(error = %e, "could not truncate the WAL"),
                }
            }
            self.metrics.wal_disk_bytes.set(self.wal.disk_bytes());
        }
        if dirty {
            if let Err(e) = self.wal.sync() {
                tracing::error!(error = %e, "final WAL sync failed");
            }
        }
        self.wal
    }

    /// Appends a round's entries and syncs if someone waits or the interval is up. On failure
    /// the WAL is rolled back to its last good state: nothing of the round stays in it.
    fn write_round(
        &mut self,
        round: &mut [Request],
        dirty: &mut bool,
        last_sync: &mut Instant,
        interval: Duration,
        shutting_down: bool,
    ) -> Result<Vec<Option<u64>>, String> {
        let mut firsts = Vec::with_capacity(round.len());
        let mut appended = 0u64;
        let mut result = Ok(());
        'append: for req in round.iter() {
            let mut first = None;
            for (i, payload) in req.entries.iter().enumerate() {
                match self.wal.append(payload) {
                    Ok(lsn) => {
                        // The WAL numbers entries one after the other: the request's are
                        // `first..first + len`, which the indexer relies on.
                        debug_assert!(first.is_none_or(|f: u64| lsn == f + i as u64));
                        first.get_or_insert(lsn);
                        self.metrics.wal_bytes.inc_by(payload.len() as u64);
                        appended += 1;
                    }
                    Err(e) => {
                        result = Err(e.to_string());
                        break 'append;
                    }
                }
            }
            firsts.push(first);
        }
        if appended > 0 {
            *dirty = true;
        }
        let someone_waits = round.iter().any(|r| r.reply.is_some());
        let sync_due = *dirty
            && match self.cfg.fsync {
                FsyncPolicy::Never => false,
                FsyncPolicy::Always => true,
                FsyncPolicy::Batch => {
                    someone_waits || shutting_down || last_sync.elapsed() >= interval
                }
            };
        if result.is_ok() {
            result = if sync_due {
                let started = Instant::now();
                let r = self.wal.sync();
                self.metrics
                    .fsync_seconds
                    .observe(started.elapsed().as_secs_f64());
                r.map_err(|e| e.to_string())
            } else {
                // Hand the bytes to the OS so that a process crash does not lose them.
                self.wal.flush().map_err(|e| e.to_string())
            };
        }
        match result {
            Ok(()) => {
                if sync_due {
                    *dirty = false;
                    *last_sync = Instant::now();
                }
                self.metrics.wal_entries.inc_by(appended);
                Ok(firsts)
            }
            Err(e) => {
                self.metrics.wal_errors.inc();
                if let Err(rb) = self.wal.rollback() {
                    tracing::error!(error = %rb, "WAL rollback after a failed write also failed");
                }
                Err(format!("WAL write failed: {e}"))
            }
        }
    }

    /// `Some(reason)` while the WAL's file system has less than `min_free_bytes` free.
    fn low_space(&self, last: &mut Option<(Instant, Option<String>)>) -> Option<String> {
        if self.cfg.min_free_bytes == 0 {
            return None;
        }
        if let Some((at, verdict)) = last {
            if at.elapsed() < DISK_CHECK_INTERVAL {
                return verdict.clone();
            }
        }
        let verdict = match free_bytes(&self.cfg.wal_dir) {
            Some(free) if free < self.cfg.min_free_bytes => Some(format!(
                "only {free} bytes free on the data file system, below ingest.min_free_bytes = {}",
                self.cfg.min_free_bytes
            )),
            _ => None,
        };
        *last = Some((Instant::now(), verdict.clone()));
        verdict
    }
}

/// Free bytes available to this process on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// How often retention looks for sealed segments to delete.
const RETENTION_INTERVAL: Duration = Duration::from_secs(5);

/// How often background merges and recompressions are started. They take turns across the
/// store (see `Store::start_merges`), so the next one waits at most this long.
const MERGE_INTERVAL: Duration = Duration::from_secs(1);

/// How often a failed index write is retried (by re-applying from the WAL).
const REAPPLY_INTERVAL: Duration = Duration::from_secs(1);

/// Prepares each batch the WAL writer hands over (see [`logsift_store::Preparer`]) and passes
/// it on to the indexer, in order. Ends when the WAL writer does; the indexer then finishes.
fn prepare_loop(
    mut preparer: logsift_store::Preparer,
    rx: flume::Receiver<IndexBatch>,
    tx: flume::Sender<PreparedBatch>,
    spare: flume::Receiver<logsift_store::Prepared>,
    metrics: &IngestMetrics,
) {
    loop {
        let batch = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(batch) => batch,
            Err(flume::RecvTimeoutError::Timeout) => {
                // Quiet: the spare buffers go back to the allocator (tens of MiB at most).
                while spare.try_recv().is_ok() {}
                continue;
            }
            Err(flume::RecvTimeoutError::Disconnected) => return,
        };
        // Waiting for the indexer: those not prepared yet, and those prepared.
        metrics.index_queue_depth.set((rx.len() + tx.len()) as u64);
        // The indexer hands applied batches' buffers back: fresh ones, grown anew for every
        // batch, had this thread spend a third of its time having the kernel zero pages.
        let mut prepared = spare.try_recv().unwrap_or_default();
        preparer.prepare(batch.entries().map(|(_, p)| p), &mut prepared);
        if tx.send(PreparedBatch { batch, prepared }).is_err() {
            return;
        }
    }
}

fn index_loop(
    mut indexer: Indexer,
    rx: flume::Receiver<PreparedBatch>,
    spare: flume::Sender<logsift_store::Prepared>,
    interval: Duration,
    wal_dir: &Path,
    metrics: &IngestMetrics,
    truncatable: &AtomicU64,
) {
    let mut last_commit = Instant::now();
    let mut last_reapply = Instant::now();
    let mut last_retention: Option<Instant> = None;
    let mut last_merges: Option<Instant> = None;
    loop {
        if last_retention.is_none_or(|t| t.elapsed() >= RETENTION_INTERVAL) {
            last_retention = Some(Instant::now());
            let deleted = indexer
                .store()
                .enforce_retention(logsift_core::time::now_ns());
            if deleted > 0 {
                metrics.segments_deleted.inc_by(deleted as u64);
            }
        }
        if last_merges.is_none_or(|t| t.elapsed() >= MERGE_INTERVAL) {
            last_merges = Some(Instant::now());
            indexer.store().start_merges();
        }
        let next = if indexer.has_uncommitted() {
            rx.recv_deadline(last_commit + interval)
        } else {
            rx.recv_timeout(Duration::from_secs(1))
        };
        let done = match next {
            Ok(PreparedBatch { batch, prepared }) => {
                for (i, (lsn, payload)) in batch.entries().enumerate() {
                    match indexer.apply_prepared(lsn, payload, &prepared, i) {
                        Ok(logsift_store::Applied::Indexed { parse_error }) => {
                            metrics.indexed_records.inc();
                            if let Some(reason) = parse_error {
                                let source = logsift_core::entry::Entry::decode(payload)
                                    .map(|e| e.source)
                                    .unwrap_or("");
                                metrics.count_parse_error(source, reason);
                            }
                        }
                        Ok(_) => {}
                        Err(e @ StoreError::Entry { .. }) => {
                            metrics.index_errors.inc();
                            tracing::error!(lsn, error = %e, "undecodable entry; skipping it");
                        }
                        Err(e) => {
                            metrics.index_errors.inc();
                            last_reapply = Instant::now();
                            tracing::error!(lsn, error = %e, "index write failed; records will be re-applied from the WAL");
                        }
                    }
                }
                if prepared.held_bytes() <= SPARE_MAX_BYTES {
                    let _ = spare.try_send(prepared);
                }
                false
            }
            Err(flume::RecvTimeoutError::Timeout) => false,
            Err(flume::RecvTimeoutError::Disconnected) => true,
        };
        if indexer.needs_reapply() && (done || last_reapply.elapsed() >= REAPPLY_INTERVAL) {
            last_reapply = Instant::now();
            match indexer
                .reapply_from(|visit| logsift_wal::scan(wal_dir, visit).map_err(|e| e.to_string()))
            {
                Ok(n) => tracing::info!(
                    records = n,
                    "re-applied records from the WAL after a write failure"
                ),
                Err(e) => {
                    metrics.index_errors.inc();
                    tracing::warn!(error = %e, "re-applying from the WAL failed; retrying in a second");
                }
            }
        }
        if !indexer.needs_reapply() && !indexer.has_uncommitted() {
            truncatable.store(indexer.maintain(), Ordering::Release);
        }
        if !indexer.needs_reapply()
            && indexer.has_uncommitted()
            && (done || last_commit.elapsed() >= interval)
        {
            match indexer.commit() {
                Ok(through) => {
                    metrics.index_commits.inc();
                    truncatable.store(through, Ordering::Release);
                }
                Err(e) => {
                    metrics.index_errors.inc();
                    last_reapply = Instant::now();
                    tracing::error!(error = %e, "index commit failed; records will be re-applied from the WAL");
                }
            }
            last_commit = Instant::now();
        }
        if done {
            if indexer.needs_reapply() {
                tracing::error!("stopping with uncommitted records; they stay in the WAL and are replayed at next start");
            }
            // Merges and recompressions in progress are given up (their sources stay), then
            // what was committed is sealed (a hot tier holds committed records only).
            indexer.store().abandon_rewrites();
            indexer.store().seal_all_and_wait();
            indexer.save_patterns();
            truncatable.store(indexer.truncatable_lsn(), Ordering::Release);
            break;
        }
    }
}
