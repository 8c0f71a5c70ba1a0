//! A block segment being filled, with what its catalog entry and summary need: the hot tier of
//! the `blocks` layout (filled as records arrive, searchable through snapshots at each commit,
//! and already written when it is sealed), and the block segments that seals, erasures and
//! v1 upgrades build from records at hand.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use logsift_core::Record;
use tantivy::Index;

use crate::analyze::Analysis;
use crate::blocks::{BlockError, BlockRecord, BlockSegment, BlockWriter};
use crate::summary::SummaryBuilder;

pub(crate) struct BlockTier {
    writer: BlockWriter,
    summary: SummaryBuilder,
    min_ts: i64,
    max_ts: i64,
    docs: u64,
    raw_bytes: u64,
    /// The zstd level of its bodies.
    level: i32,
}

/// A finished tier: its segment complete in `dir` (block index, bodies, filters, summary).
pub(crate) struct BuiltTier {
    pub dir: PathBuf,
    pub index: Index,
    pub min_ts: i64,
    pub max_ts: i64,
    pub docs: u64,
    pub raw_bytes: u64,
}

impl BlockTier {
    /// A tier writing its segment in `dir` (created). `hot`: filled over time and read through
    /// snapshots (its block index merges as it goes).
    pub fn new(dir: &Path, level: i32, hot: bool) -> Result<Self, BlockError> {
        let writer = if hot {
            BlockWriter::hot(dir, level)?
        } else {
            // Rewrites (idle recompression, upgrades, erasure) run when an index is quiet:
            // blocks twice as large compress 4 % smaller at zstd 9 and make a smaller block
            // index, for twice the lines read per block a search opens; a 256 KiB dictionary
            // trained on 8 MiB takes about a second more and saves about 3 % more.
            BlockWriter::new(dir, level)?
                .with_block_records(crate::blocks::BLOCK_RECORDS * 2)
                .with_dictionary(8 << 20, 256 << 10)
        };
        Ok(BlockTier {
            writer,
            // Every record has its pattern id or 0 (mining off): the summary counts them.
            summary: SummaryBuilder::default().with_patterns(),
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            docs: 0,
            raw_bytes: 0,
            level,
        })
    }

    pub fn dir(&self) -> &Path {
        self.writer.dir()
    }

    /// Adds a record; `parsed` is its line parsed with the index's options.
    pub fn add(&mut self, rec: &BlockRecord<'_>, parsed: &Record<'_>) {
        self.note(
            rec,
            parsed.severity,
            parsed.host.as_deref(),
            parsed.app.as_deref(),
        );
        self.writer.add(rec, parsed);
    }

    /// Adds a record; `a` is the analysis of its line parsed with the index's options.
    pub fn add_analyzed(&mut self, rec: &BlockRecord<'_>, a: &Analysis<'_>) {
        self.note(rec, a.severity, a.host, a.app);
        self.writer.add_analyzed(rec, a);
    }

    fn note(
        &mut self,
        rec: &BlockRecord<'_>,
        severity: Option<logsift_core::Severity>,
        host: Option<&str>,
        app: Option<&str>,
    ) {
        self.summary
            .add(rec.timestamp, severity.map(|s| s.code()), host, app);
        self.summary
            .count_pattern(rec.pattern, rec.timestamp, rec.id);
        self.min_ts = self.min_ts.min(rec.timestamp);
        self.max_ts = self.max_ts.max(rec.timestamp);
        self.docs += 1;
        self.raw_bytes += rec.raw.len() as u64;
    }

    /// Compresses with `dictionary` from the first block instead of training one.
    pub fn with_trained_dictionary(mut self, dictionary: Vec<u8>) -> Self {
        self.writer = self.writer.with_trained_dictionary(dictionary);
        self
    }

    /// The dictionary its bodies are compressed with, once decided (empty before, or if none).
    pub fn dictionary(&self) -> &[u8] {
        self.writer.dictionary()
    }

    /// Records added.
    pub fn docs(&self) -> u64 {
        self.docs
    }

    /// Everything added so far, readable (see [`BlockWriter::snapshot`]).
    pub fn snapshot(&mut self) -> Result<Vec<Arc<BlockSegment>>, BlockError> {
        self.writer.snapshot()
    }

    /// Completes the segment and writes its summary beside it (with the templates `patterns`
    /// spells).
    pub fn finish(self, patterns: &crate::PatternBook) -> Result<BuiltTier, BlockError> {
        let dir = self.writer.dir().to_path_buf();
        let index = self.writer.finish()?;
        let mut summary = self.summary.finish(patterns);
        summary.body_zstd_level = Some(self.level);
        summary.write(&dir).map_err(|source| BlockError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(BuiltTier {
            dir,
            index,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            docs: self.docs,
            raw_bytes: self.raw_bytes,
        })
    }
}
