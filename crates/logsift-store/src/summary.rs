//! Per-segment summaries: what whole-range histograms and `host`/`app` terms need, computed
//! once when a segment is written, so that a match-everything aggregation over a sealed
//! segment costs O(minutes + values) instead of O(records).
//!
//! Stored in the segment bundle as the file [`SUMMARY_FILE`] (JSON, with its own
//! `format_version`; the bundle's per-file CRC and the segment's sha256 cover its bytes).
//! Segments written before summaries existed have none, and are aggregated record by record.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tantivy::{Directory, Index};

/// Name of the summary inside a segment bundle.
pub const SUMMARY_FILE: &str = "logsift-summary.json";
const FORMAT_VERSION: u32 = 1;
/// Minute buckets: histograms whose interval is a whole number of minutes can use them.
pub const SUMMARY_BUCKET_NS: i64 = 60_000_000_000;
/// Past this many distinct values a keyword's counts are left out (terms then reads records).
const MAX_VALUES: usize = 10_000;
/// Template text one summary keeps, at most (the most frequent patterns' first).
const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Severity codes 0–7, then records without one.
pub const SEVERITY_SLOTS: usize = 9;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSummary {
    pub format_version: u32,
    /// Records.
    pub docs: u64,
    /// `(minute start ns, counts by severity code 0–7 then none)`, ascending, non-empty only.
    pub minutes: Vec<(i64, [u64; SEVERITY_SLOTS])>,
    /// Records per `host` value as received (case kept, like `terms`), and how many have none;
    /// `None` when there were more than `MAX_VALUES` values.
    pub hosts: Option<KeywordCounts>,
    pub apps: Option<KeywordCounts>,
    /// Records per pattern id, ascending by id (records without one are not counted); `None`
    /// for segments written before patterns were mined or without a pattern column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patterns: Option<Vec<PatternCount>>,
    /// The zstd level of a block segment's bodies (`None`: a record segment, or a block
    /// segment written before this was noted), so that a quiet index recompresses only what
    /// was written at a lower level than its idle one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_zstd_level: Option<i32>,
}

/// One pattern's records in a segment: the segment's dictionary entry for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternCount {
    pub id: u32,
    pub count: u64,
    /// Timestamps of its first and last record, ns.
    pub first: i64,
    pub last: i64,
    /// Its template when the segment was written (templates generalise later; ids stay).
    pub template: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeywordCounts {
    pub values: Vec<(String, u64)>,
    pub missing: u64,
}

impl SegmentSummary {
    /// Reads every record of a one-segment index (written, not yet bundled) from its columns;
    /// `patterns` spells the templates of the pattern ids found.
    pub fn compute(
        index: &Index,
        patterns: &crate::PatternBook,
    ) -> tantivy::Result<SegmentSummary> {
        let reader = index.reader()?;
        let searcher = reader.searcher();
        let has_patterns = index.schema().get_field(crate::PATTERN_FIELD).is_ok();
        let mut b = SummaryBuilder::default();
        if has_patterns {
            b = b.with_patterns();
        }
        for segment in searcher.segment_readers() {
            let fast = segment.fast_fields();
            let ts = fast.i64("timestamp")?;
            let sev = fast.u64("severity_code")?;
            let pattern = if has_patterns {
                Some(fast.u64(crate::PATTERN_FIELD)?)
            } else {
                None
            };
            let alive = segment.alive_bitset();
            for doc in 0..segment.max_doc() {
                if alive.is_some_and(|a| a.is_deleted(doc)) {
                    continue;
                }
                b.docs += 1;
                let Some(t) = ts.first(doc) else { continue };
                b.count_minute(t, sev.first(doc).map(|c| c.min(u64::from(u8::MAX)) as u8));
                if let Some(id) = pattern.as_ref().and_then(|p| p.first(doc)) {
                    b.count_pattern(id as u32, t);
                }
            }
            // Keyword values by ordinal, then one dictionary lookup per value (not per record).
            count_values(segment, "host", &mut b.hosts, &mut b.host_missing)?;
            count_values(segment, "app", &mut b.apps, &mut b.app_missing)?;
        }
        Ok(b.finish(patterns))
    }

    /// Writes the summary into `dir` (the segment's files before bundling).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(SUMMARY_FILE), bytes)
    }

    /// Reads the summary of a segment's index, if it has one of a version this build reads.
    /// A damaged summary is reported and ignored: the records themselves still answer.
    pub fn read(index: &Index) -> Option<SegmentSummary> {
        Self::read_in(index.directory())
    }

    /// Like [`Self::read`], from the segment's files.
    pub fn read_in(directory: &dyn Directory) -> Option<SegmentSummary> {
        let bytes = directory.atomic_read(Path::new(SUMMARY_FILE)).ok()?;
        match serde_json::from_slice::<SegmentSummary>(&bytes) {
            Ok(s) if s.format_version == FORMAT_VERSION => Some(s),
            Ok(s) => {
                tracing::warn!(
                    version = s.format_version,
                    "ignoring a segment summary of an unknown version"
                );
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unreadable segment summary");
                None
            }
        }
    }
}

/// Records per keyword value. Hashed, not ordered: looked up once per record while a block
/// segment is written, where a `BTreeMap` compares strings at each level (`memcmp` was about
/// a tenth of the indexer thread's time in a perf of the e2e ingest); sorted once when the
/// summary is finished.
type Counts = HashMap<String, u64>;

/// Builds a summary one record at a time, for segments written from parsed records (block
/// segments); [`SegmentSummary::compute`] fills one from a record index's columns.
#[derive(Debug)]
pub(crate) struct SummaryBuilder {
    docs: u64,
    minutes: BTreeMap<i64, [u64; SEVERITY_SLOTS]>,
    hosts: Option<Counts>,
    apps: Option<Counts>,
    host_missing: u64,
    app_missing: u64,
    /// Pattern id → (records, first, last); `None`: the segment stores no pattern ids.
    patterns: Option<HashMap<u32, (u64, i64, i64)>>,
}

impl Default for SummaryBuilder {
    fn default() -> Self {
        SummaryBuilder {
            docs: 0,
            minutes: BTreeMap::new(),
            hosts: Some(Counts::new()),
            apps: Some(Counts::new()),
            host_missing: 0,
            app_missing: 0,
            patterns: None,
        }
    }
}

impl SummaryBuilder {
    /// Counts one record: its timestamp, severity code (0–7) and host and app as received.
    pub fn add(
        &mut self,
        timestamp: i64,
        severity: Option<u8>,
        host: Option<&str>,
        app: Option<&str>,
    ) {
        self.docs += 1;
        self.count_minute(timestamp, severity);
        for (value, counts, missing) in [
            (host, &mut self.hosts, &mut self.host_missing),
            (app, &mut self.apps, &mut self.app_missing),
        ] {
            let Some(map) = counts.as_mut() else { continue };
            match value {
                Some(v) => {
                    if let Some(n) = map.get_mut(v) {
                        *n += 1;
                    } else if map.len() < MAX_VALUES {
                        map.insert(v.to_string(), 1);
                    } else {
                        *counts = None;
                    }
                }
                None => *missing += 1,
            }
        }
    }

    /// Says that the segment stores pattern ids: its summary counts them (none yet).
    pub fn with_patterns(mut self) -> Self {
        self.patterns = Some(HashMap::new());
        self
    }

    /// Counts a record of pattern `id` (0: none, not counted) at `timestamp`.
    pub fn count_pattern(&mut self, id: u32, timestamp: i64) {
        if let (Some(by), true) = (self.patterns.as_mut(), id != 0) {
            let e = by.entry(id).or_insert((0, timestamp, timestamp));
            e.0 += 1;
            e.1 = e.1.min(timestamp);
            e.2 = e.2.max(timestamp);
        }
    }

    /// Counts a record of severity code `severity` (0–7) in the minute of `timestamp`.
    fn count_minute(&mut self, timestamp: i64, severity: Option<u8>) {
        let minute = timestamp.div_euclid(SUMMARY_BUCKET_NS) * SUMMARY_BUCKET_NS;
        let slot = severity.map_or(SEVERITY_SLOTS - 1, |c| (c as usize).min(SEVERITY_SLOTS - 1));
        self.minutes.entry(minute).or_insert([0; SEVERITY_SLOTS])[slot] += 1;
    }

    /// The summary; `patterns` spells the templates of the pattern ids counted.
    pub fn finish(self, patterns: &crate::PatternBook) -> SegmentSummary {
        let finish = |counts: Option<Counts>, missing: u64| {
            counts.map(|c| {
                let mut values: Vec<(String, u64)> = c.into_iter().collect();
                values.sort_unstable();
                KeywordCounts { values, missing }
            })
        };
        SegmentSummary {
            format_version: FORMAT_VERSION,
            docs: self.docs,
            minutes: self.minutes.into_iter().collect(),
            hosts: finish(self.hosts, self.host_missing),
            apps: finish(self.apps, self.app_missing),
            patterns: self.patterns.map(|by| pattern_counts(by, patterns)),
            body_zstd_level: None,
        }
    }
}

/// The summary's pattern counts, ascending by id, with the templates of the most frequent.
fn pattern_counts(
    by: HashMap<u32, (u64, i64, i64)>,
    patterns: &crate::PatternBook,
) -> Vec<PatternCount> {
    let mut counts: Vec<PatternCount> = by
        .into_iter()
        .map(|(id, (count, first, last))| PatternCount {
            id,
            count,
            first,
            last,
            template: None,
        })
        .collect();
    // Templates of the most frequent first, up to a budget: every served segment keeps its
    // summary in memory, and the miner holds every template anyway.
    counts.sort_unstable_by(|a, b| b.count.cmp(&a.count).then(a.id.cmp(&b.id)));
    let mut budget = MAX_TEMPLATE_BYTES;
    for c in &mut counts {
        let Some(t) = patterns.template(c.id) else {
            continue;
        };
        if t.len() > budget {
            break;
        }
        budget -= t.len();
        c.template = Some(t.to_string());
    }
    counts.sort_unstable_by_key(|c| c.id);
    counts
}

/// Adds the records of each value of the keyword column `field` to `counts` (by ordinal, then
/// one dictionary lookup per value); gives up (`None`) past `MAX_VALUES` values.
fn count_values(
    segment: &tantivy::SegmentReader,
    field: &str,
    counts: &mut Option<Counts>,
    missing: &mut u64,
) -> tantivy::Result<()> {
    let Some(map) = counts.as_mut() else {
        return Ok(());
    };
    let Some(column) = segment.fast_fields().str(field)? else {
        *missing += u64::from(segment.num_docs());
        return Ok(());
    };
    let ords = column.ords();
    let mut by_ord = vec![0u64; column.num_terms()];
    let alive = segment.alive_bitset();
    for doc in 0..segment.max_doc() {
        if alive.is_some_and(|a| a.is_deleted(doc)) {
            continue;
        }
        match ords.first(doc) {
            Some(ord) => {
                if let Some(c) = by_ord.get_mut(ord as usize) {
                    *c += 1;
                }
            }
            None => *missing += 1,
        }
    }
    if by_ord.iter().filter(|c| **c > 0).count() + map.len() > MAX_VALUES {
        *counts = None;
        return Ok(());
    }
    let mut value = String::new();
    for (ord, n) in by_ord.into_iter().enumerate() {
        if n == 0 {
            continue;
        }
        value.clear();
        column.ord_to_str(ord as u64, &mut value)?;
        *map.entry(value.clone()).or_insert(0) += n;
    }
    Ok(())
}
