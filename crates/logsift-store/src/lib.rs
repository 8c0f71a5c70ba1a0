//! Storage of records in per-index tantivy indexes under `<data>/indexes/<name>/`.
//!
//! The store turns WAL entries into tantivy documents, commits them with the WAL position they
//! cover (so replay after a crash neither loses nor duplicates a record), and reads hits back.
//! It keeps the raw bytes once (zstd doc store) and derives everything displayed from them by
//! parsing again; keyword fields are fast fields for sorting and aggregations.

pub mod analyze;
mod block_tier;
pub mod blocks;
mod catalog;
mod document;
pub mod files;
mod handle;
mod holds;
pub mod metastore;
pub mod object;
pub mod patterns;
mod runtime;
mod schema;
pub mod segment;
mod store;
mod summary;
pub mod timetext;
pub mod tokens;
mod verify;

static FAULTS_FIRED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An injected I/O failure named `name`, for the crash-consistency tests (`tests/faults.rs`,
/// built with the `fail` crate's `failpoints` feature); a no-op in every other build.
pub(crate) fn fault(name: &str) -> std::io::Result<()> {
    fail::fail_point!(name, |_| {
        FAULTS_FIRED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(std::io::Error::other(format!("injected failure at {name}")))
    });
    let _ = name;
    Ok(())
}

/// How many injected failures have fired in this process (always 0 outside the fault tests).
#[doc(hidden)]
pub fn faults_fired() -> usize {
    FAULTS_FIRED.load(std::sync::atomic::Ordering::SeqCst)
}

pub use catalog::{
    lsn_base, Action, Catalog, CatalogEntry, CatalogError, SegmentInfo, LSN_BITS, MAX_INDEXER,
};
pub use document::{build_document, Stored};
pub use files::{LocalSegments, SegmentFiles, SegmentStorage};
pub use handle::{IndexHandle, PartReader, Rewritten};
pub use holds::HoldRecord;
pub use metastore::{Metastore, PgMetastore};
pub use object::{ObjectStorage, S3Options};
pub use patterns::PatternBook;
pub use schema::{stream_key, LogSchema, KEYWORD_TOKENIZER, PATTERN_FIELD};
pub use store::{
    Applied, IndexOptions, Indexer, Layout, LegalHold, Prepared, Preparer, Store, StoreConfig,
    StoreError,
};
pub use summary::{KeywordCounts, PatternCount, SegmentSummary, SEVERITY_SLOTS, SUMMARY_BUCKET_NS};
pub use verify::{list_segments, segment_layout, verify_index, VerifyReport};
