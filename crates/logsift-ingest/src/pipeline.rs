use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use logsift_store::{Indexer, Store, StoreError};
use logsift_wal::{Wal, WalError, WalOptions};
use tokio::sync::oneshot;

use crate::Metrics;

/// When the WAL writer calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Durable requests (HTTP) are fsynced before they are answered; everything else at least
    /// every `group_commit_interval_ms`.
    Batch,
    /// Every append is fsynced before the next one is taken (slowest, for paranoid setups).
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
    /// Requests waiting for the WAL writer; senders wait (TCP) or are refused (UDP) beyond it.
    pub wal_queue_requests: usize,
    /// Batches waiting for the indexer; the WAL writer waits beyond it.
    pub index_queue_batches: usize,
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum AppendError {
    #[error("the server is shutting down")]
    Closed,
    #[error("the ingest queue is full")]
    Full,
    #[error("could not write the WAL: {0}")]
    Wal(String),
}

struct Request {
    entries: Vec<Vec<u8>>,
    /// Present when the sender waits for fsync.
    reply: Option<oneshot::Sender<Result<(), AppendError>>>,
}

enum Message {
    Append(Request),
    Shutdown,
}

/// A cheap, cloneable way in: what listeners and HTTP handlers hold.
#[derive(Clone)]
pub struct PipelineHandle {
    tx: flume::Sender<Message>,
    metrics: Arc<Metrics>,
}

impl PipelineHandle {
    /// Appends encoded entries. With `durable`, returns only once they are fsynced in the WAL;
    /// otherwise once they are queued (waiting while the queue is full).
    pub async fn append(&self, entries: Vec<Vec<u8>>, durable: bool) -> Result<(), AppendError> {
        if entries.is_empty() {
            return Ok(());
        }
        if !durable {
            let msg = Message::Append(Request {
                entries,
                reply: None,
            });
            return self
                .tx
                .send_async(msg)
                .await
                .map_err(|_| AppendError::Closed);
        }
        let (reply, done) = oneshot::channel();
        let msg = Message::Append(Request {
            entries,
            reply: Some(reply),
        });
        self.tx
            .send_async(msg)
            .await
            .map_err(|_| AppendError::Closed)?;
        done.await.map_err(|_| AppendError::Closed)?
    }

    /// Queues entries without waiting; refuses when the queue is full (UDP has no way to push
    /// back on its sender, so it drops and counts instead).
    pub fn try_append(&self, entries: Vec<Vec<u8>>) -> Result<(), AppendError> {
        match self.tx.try_send(Message::Append(Request {
            entries,
            reply: None,
        })) {
            Ok(()) => Ok(()),
            Err(flume::TrySendError::Full(_)) => Err(AppendError::Full),
            Err(flume::TrySendError::Disconnected(_)) => Err(AppendError::Closed),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

pub struct Pipeline {
    handle: PipelineHandle,
    wal_thread: Option<JoinHandle<()>>,
    index_thread: Option<JoinHandle<()>>,
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

impl Pipeline {
    /// Replays the WAL into the store (records already committed are skipped, so nothing is
    /// indexed twice), commits, and starts the WAL writer and indexer threads.
    pub fn start(
        cfg: PipelineConfig,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> Result<Pipeline, PipelineError> {
        let mut indexer = Indexer::new(store.clone());
        let mut replay_error = None;
        let mut replayed = 0u64;
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
                    Ok(logsift_store::Applied::Indexed) => replayed += 1,
                    Ok(logsift_store::Applied::AlreadyCommitted) => {}
                    Err(e) => {
                        tracing::error!(lsn, error = %e, "cannot replay WAL entry; skipping it");
                        indexer.skip(lsn);
                        if replay_error.is_none() {
                            replay_error = Some(e);
                        }
                    }
                }
            })?;
        let through = indexer.commit()?;
        wal.truncate_through(through)?;
        tracing::info!(
            files = report.files,
            entries = report.entries,
            replayed,
            torn_bytes = report.torn_bytes,
            next_lsn = wal.next_lsn(),
            "WAL replayed"
        );

        let (tx, rx) = flume::bounded(cfg.wal_queue_requests);
        let (index_tx, index_rx) = flume::bounded::<Vec<(u64, Vec<u8>)>>(cfg.index_queue_batches);
        let truncatable = Arc::new(AtomicU64::new(0));
        let wal_thread = {
            let metrics = metrics.clone();
            let truncatable = truncatable.clone();
            let cfg = cfg.clone();
            std::thread::Builder::new()
                .name("logsift-wal".into())
                .spawn(move || wal_loop(wal, rx, index_tx, &cfg, &metrics, &truncatable))
                .map_err(PipelineError::Thread)?
        };
        let index_thread = {
            let metrics = metrics.clone();
            let interval = Duration::from_millis(cfg.commit_interval_ms);
            std::thread::Builder::new()
                .name("logsift-indexer".into())
                .spawn(move || index_loop(indexer, index_rx, interval, &metrics, &truncatable))
                .map_err(PipelineError::Thread)?
        };
        Ok(Pipeline {
            handle: PipelineHandle { tx, metrics },
            wal_thread: Some(wal_thread),
            index_thread: Some(index_thread),
        })
    }

    pub fn handle(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// Finishes what was queued before this call: everything is fsynced in the WAL and
    /// committed to the indexes when it returns.
    pub fn shutdown(mut self) {
        let _ = self.handle.tx.send(Message::Shutdown);
        if let Some(t) = self.wal_thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.index_thread.take() {
            let _ = t.join();
        }
    }
}

/// Largest amount of request payload the WAL writer takes in one round before it syncs.
const MAX_ROUND_BYTES: usize = 8 << 20;

fn wal_loop(
    mut wal: Wal,
    rx: flume::Receiver<Message>,
    index_tx: flume::Sender<Vec<(u64, Vec<u8>)>>,
    cfg: &PipelineConfig,
    metrics: &Metrics,
    truncatable: &AtomicU64,
) {
    let interval = Duration::from_millis(cfg.group_commit_interval_ms);
    let mut last_sync = Instant::now();
    let mut dirty = false;
    let mut truncated_through = 0u64;
    let mut shutting_down = false;
    let mut round: Vec<Request> = Vec::new();
    while !shutting_down {
        let first = if dirty && cfg.fsync != FsyncPolicy::Never {
            rx.recv_deadline(last_sync + interval)
        } else {
            rx.recv_timeout(Duration::from_secs(1))
        };
        let mut round_bytes = 0;
        match first {
            Ok(Message::Append(req)) => {
                round_bytes += req.entries.iter().map(Vec::len).sum::<usize>();
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
                    round_bytes += req.entries.iter().map(Vec::len).sum::<usize>();
                    round.push(req);
                }
                Ok(Message::Shutdown) => shutting_down = true,
                Err(_) => break,
            }
        }

        let mut batch = Vec::new();
        let mut failure = None;
        for req in &mut round {
            for payload in req.entries.drain(..) {
                match wal.append(&payload) {
                    Ok(lsn) => {
                        Metrics::add(&metrics.wal_bytes, payload.len() as u64);
                        batch.push((lsn, payload));
                    }
                    Err(e) => {
                        failure.get_or_insert_with(|| e.to_string());
                        break;
                    }
                }
            }
        }
        Metrics::add(&metrics.wal_entries, batch.len() as u64);
        if !batch.is_empty() {
            dirty = true;
        }
        let someone_waits = round.iter().any(|r| r.reply.is_some());
        let sync_due = match cfg.fsync {
            FsyncPolicy::Never => false,
            FsyncPolicy::Always => dirty,
            FsyncPolicy::Batch => {
                dirty && (someone_waits || shutting_down || last_sync.elapsed() >= interval)
            }
        };
        let result = if failure.is_some() {
            Err(failure.take().unwrap_or_default())
        } else if sync_due {
            Metrics::add(&metrics.wal_fsyncs, 1);
            wal.sync().map_err(|e| e.to_string())
        } else {
            // Hand the bytes to the OS so that a process crash does not lose them.
            wal.flush().map_err(|e| e.to_string())
        };
        match &result {
            Ok(()) if sync_due => {
                dirty = false;
                last_sync = Instant::now();
            }
            Ok(()) => {}
            Err(e) => {
                Metrics::add(&metrics.wal_errors, 1);
                tracing::error!(error = %e, "WAL write failed; refusing the affected requests");
            }
        }
        for req in round.drain(..) {
            if let Some(reply) = req.reply {
                let _ = reply.send(result.clone().map_err(AppendError::Wal));
            }
        }
        // Entries are indexed even when fsync failed: they were appended, and the indexer's
        // own commit makes them durable; only the acknowledgement is withheld.
        if !batch.is_empty() && index_tx.send(batch).is_err() {
            tracing::error!("indexer stopped; records will be replayed from the WAL at next start");
        }
        let through = truncatable.load(Ordering::Acquire);
        if through > truncated_through {
            match wal.truncate_through(through) {
                Ok(_) => truncated_through = through,
                Err(e) => tracing::warn!(error = %e, "could not truncate the WAL"),
            }
        }
    }
    if dirty {
        if let Err(e) = wal.sync() {
            tracing::error!(error = %e, "final WAL sync failed");
        }
    }
}

fn index_loop(
    mut indexer: Indexer,
    rx: flume::Receiver<Vec<(u64, Vec<u8>)>>,
    interval: Duration,
    metrics: &Metrics,
    truncatable: &AtomicU64,
) {
    let mut last_commit = Instant::now();
    loop {
        let next = if indexer.has_uncommitted() {
            rx.recv_deadline(last_commit + interval)
        } else {
            rx.recv_timeout(Duration::from_secs(1))
        };
        let done = match next {
            Ok(batch) => {
                for (lsn, payload) in batch {
                    match indexer.apply(lsn, &payload) {
                        Ok(_) => Metrics::add(&metrics.indexed_records, 1),
                        Err(e) => {
                            Metrics::add(&metrics.index_errors, 1);
                            tracing::error!(lsn, error = %e, "cannot index entry; dropping it");
                        }
                    }
                }
                false
            }
            Err(flume::RecvTimeoutError::Timeout) => false,
            Err(flume::RecvTimeoutError::Disconnected) => true,
        };
        if indexer.has_uncommitted() && (done || last_commit.elapsed() >= interval) {
            match indexer.commit() {
                Ok(through) => {
                    Metrics::add(&metrics.index_commits, 1);
                    truncatable.store(through, Ordering::Release);
                }
                Err(e) => {
                    Metrics::add(&metrics.index_errors, 1);
                    tracing::error!(error = %e, "index commit failed; will retry");
                }
            }
            last_commit = Instant::now();
        }
        if done {
            break;
        }
    }
}
