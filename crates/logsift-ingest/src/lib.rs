//! From bytes on a socket to records in the WAL and the indexer.
//!
//! [`Pipeline`] owns two threads: the WAL writer, which assigns LSNs, group-commits appends and
//! answers durable requests only after fsync; and the indexer, which applies WAL entries to the
//! store and commits at least every `commit_interval_ms`. Both queues between them are bounded:
//! when the indexer falls behind, the WAL writer blocks, its queue fills, and senders wait.
//!
//! The listeners (syslog TCP and UDP, JSON lines TCP) frame bytes and hand entries to the
//! pipeline; HTTP ingest lives in `logsift-server` and uses the same [`PipelineHandle`].

pub mod accept;
pub mod listeners;
pub mod metrics;
mod pipeline;
pub mod tls;

pub use listeners::Lifecycle;
pub use metrics::IngestMetrics;
pub use pipeline::{
    Ack, Admission, AppendError, FsyncPolicy, Pipeline, PipelineConfig, PipelineHandle,
    Reservation, StartReport, ENTRY_OVERHEAD_BYTES, RETRY_AFTER_SECS,
};
