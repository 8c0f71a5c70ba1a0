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
/// Pattern bucket sizes a summary chooses from, ms: the round sizes of a histogram from a
/// minute up, each a divisor of the larger ones but 10 minutes (of 1 h and up), so that a
/// listing's automatic interval is a whole number of them.
const PATTERN_BUCKETS_MS: [i64; 8] = [
    60_000, 300_000, 600_000, 1_800_000, 3_600_000, 10_800_000, 43_200_000, 86_400_000,
];
/// Pattern buckets one summary keeps, at most: one per this many records, within bounds (a
/// served segment keeps its summary in memory; a pair costs about 6 bytes of JSON, so at most
/// about 0.1 byte per record, under 0.001 of the raw bytes). One per 16 records made summaries
/// of 300 KB in segments of a million records of the e2e corpus (200 patterns).
const PATTERN_BUCKET_RECORDS: u64 = 64;
const PATTERN_BUCKETS_MIN: u64 = 4_096;
const PATTERN_BUCKETS_MAX: u64 = 65_536;
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
    /// The bucket of [`PatternCount::buckets`], ms: a round size from a minute up, the
    /// smallest that keeps the segment's pattern buckets within a budget; `None` for summaries
    /// written before patterns were counted by time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_bucket_ms: Option<i64>,
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
    /// The id of its newest record (the one at `last`; the highest id on a tie): a listing's
    /// example, found again by its key without reading the records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_id: Option<u64>,
    /// Its records per bucket of the summary's `pattern_bucket_ms`, ascending, as flattened
    /// pairs (bucket number since the epoch less the previous pair's, records): what a
    /// pattern listing's per-bucket counts and a comparison's ranges need, without the records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<u64>,
}

impl PatternCount {
    /// Its `(bucket start ns, records)`, ascending, for buckets of `bucket_ms`.
    pub fn bucket_counts(&self, bucket_ms: i64) -> impl Iterator<Item = (i64, u64)> + '_ {
        let bucket_ns = bucket_ms.saturating_mul(1_000_000);
        let mut at = 0u64;
        self.buckets.chunks_exact(2).map(move |pair| {
            at = at.saturating_add(pair[0]);
            ((at as i64).saturating_mul(bucket_ns), pair[1])
        })
    }
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
            let ids = fast.u64("id")?;
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
                    b.count_pattern(id as u32, t, ids.first(doc).unwrap_or(0));
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
    /// Pattern id → its counts; `None`: the segment stores no pattern ids.
    patterns: Option<HashMap<u32, PatternStat>>,
    /// Records by (pattern id << 32 | minute since the epoch): Fx-hashed, one lookup per record.
    pattern_minutes: rustc_hash::FxHashMap<u64, u64>,
}

#[derive(Debug, Clone, Copy)]
struct PatternStat {
    count: u64,
    first: i64,
    last: i64,
    last_id: u64,
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
            pattern_minutes: Default::default(),
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

    /// Counts record `record` (its id) of pattern `id` (0: none, not counted) at `timestamp`.
    pub fn count_pattern(&mut self, id: u32, timestamp: i64, record: u64) {
        if let (Some(by), true) = (self.patterns.as_mut(), id != 0) {
            let e = by.entry(id).or_insert(PatternStat {
                count: 0,
                first: timestamp,
                last: timestamp,
                last_id: record,
            });
            e.count += 1;
            e.first = e.first.min(timestamp);
            if (timestamp, record) > (e.last, e.last_id) {
                e.last = timestamp;
                e.last_id = record;
            }
            // Minutes before the epoch or past u32 are left out of the buckets; the listing
            // then reads such a segment's records.
            if let Ok(minute) = u32::try_from(timestamp.div_euclid(SUMMARY_BUCKET_NS)) {
                *self
                    .pattern_minutes
                    .entry(u64::from(id) << 32 | u64::from(minute))
                    .or_insert(0) += 1;
            }
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
        let (patterns, bucket_ms) = match self.patterns {
            Some(by) => {
                let (buckets, bucket_ms) = pattern_buckets(self.pattern_minutes, self.docs, &by);
                (Some(pattern_counts(by, buckets, patterns)), bucket_ms)
            }
            None => (None, None),
        };
        SegmentSummary {
            format_version: FORMAT_VERSION,
            docs: self.docs,
            minutes: self.minutes.into_iter().collect(),
            hosts: finish(self.hosts, self.host_missing),
            apps: finish(self.apps, self.app_missing),
            pattern_bucket_ms: bucket_ms,
            patterns,
            body_zstd_level: None,
        }
    }
}

/// Each pattern's flattened bucket pairs (see [`PatternCount::buckets`]) at the smallest
/// size of [`PATTERN_BUCKETS_MS`] within the segment's budget, and that size; none (`None`)
/// if a pattern's minutes were not all counted or even whole days are too many.
fn pattern_buckets(
    minutes: rustc_hash::FxHashMap<u64, u64>,
    docs: u64,
    by: &HashMap<u32, PatternStat>,
) -> (HashMap<u32, Vec<u64>>, Option<i64>) {
    let counted: u64 = minutes.values().sum();
    if counted != by.values().map(|s| s.count).sum::<u64>() {
        return (HashMap::new(), None);
    }
    let budget = (docs / PATTERN_BUCKET_RECORDS).clamp(PATTERN_BUCKETS_MIN, PATTERN_BUCKETS_MAX);
    let mut keyed: Vec<(u64, u64)> = minutes.into_iter().collect();
    for size_ms in PATTERN_BUCKETS_MS {
        let minutes_per = (size_ms / 60_000) as u64;
        if minutes_per > 1 {
            // Re-key by the larger bucket, then add up neighbours (sorted, equal keys adjoin).
            for (key, _) in keyed.iter_mut() {
                let minute = *key & u64::from(u32::MAX);
                *key = (*key & !u64::from(u32::MAX)) | (minute / minutes_per * minutes_per);
            }
        }
        keyed.sort_unstable_by_key(|p| p.0);
        keyed.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 += later.1;
            }
            same
        });
        if keyed.len() as u64 > budget {
            continue;
        }
        let mut out: HashMap<u32, Vec<u64>> = HashMap::new();
        let mut previous: Option<(u32, u64)> = None;
        for (key, count) in keyed {
            let id = (key >> 32) as u32;
            let bucket = (key & u64::from(u32::MAX)) / minutes_per;
            let at = match previous {
                Some((p, b)) if p == id => b,
                _ => 0,
            };
            out.entry(id).or_default().extend([bucket - at, count]);
            previous = Some((id, bucket));
        }
        return (out, Some(size_ms));
    }
    (HashMap::new(), None)
}

/// The summary's pattern counts, ascending by id, with the templates of the most frequent.
fn pattern_counts(
    by: HashMap<u32, PatternStat>,
    mut buckets: HashMap<u32, Vec<u64>>,
    patterns: &crate::PatternBook,
) -> Vec<PatternCount> {
    let mut counts: Vec<PatternCount> = by
        .into_iter()
        .map(|(id, s)| PatternCount {
            id,
            count: s.count,
            first: s.first,
            last: s.last,
            template: None,
            last_id: Some(s.last_id),
            buckets: buckets.remove(&id).unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = SUMMARY_BUCKET_NS;
    /// 2026-03-01T00:00:00Z.
    const T0: i64 = 1_772_323_200 * 1_000_000_000;

    fn summary(records: impl IntoIterator<Item = (u32, i64, u64)>) -> SegmentSummary {
        let mut b = SummaryBuilder::default().with_patterns();
        for (pattern, ts, id) in records {
            b.add(ts, Some(6), Some("h"), Some("a"));
            b.count_pattern(pattern, ts, id);
        }
        b.finish(&crate::PatternBook::default())
    }

    #[test]
    fn pattern_buckets_are_minutes_when_they_fit_and_count_every_record() {
        // Two patterns over 90 minutes, a record every 20 s; one record without a pattern.
        let mut records: Vec<(u32, i64, u64)> = (0..270u64)
            .map(|i| (1 + (i % 2) as u32, T0 + i as i64 * 20_000_000_000, i))
            .collect();
        records.push((0, T0, 999));
        let s = summary(records);
        assert_eq!(s.pattern_bucket_ms, Some(60_000));
        let patterns = s.patterns.as_ref().unwrap();
        assert_eq!(patterns.len(), 2);
        for p in patterns {
            let buckets: Vec<(i64, u64)> = p.bucket_counts(60_000).collect();
            assert_eq!(buckets.len(), 90, "{p:?}");
            assert_eq!(buckets[0].0, T0);
            assert_eq!(buckets[89].0, T0 + 89 * MINUTE);
            assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), p.count);
            assert!(buckets.iter().all(|b| b.1 == 1 || b.1 == 2), "{buckets:?}");
        }
        // The newest record of each, by time then id.
        assert_eq!(patterns[0].last_id, Some(268));
        assert_eq!(patterns[1].last_id, Some(269));
    }

    #[test]
    fn pattern_buckets_grow_until_they_fit_the_budget() {
        // 100 patterns, each in every minute of a day: 144,000 minute buckets, far over the
        // budget of 4,096 (the least; a bucket per 64 records would be 2,250); 30-minute
        // buckets make 4,800, hours 2,400.
        let records = (0..100u32).flat_map(|p| {
            (0..1440i64).map(move |m| {
                (
                    p + 1,
                    T0 + m * MINUTE + i64::from(p),
                    u64::from(p) << 20 | m as u64,
                )
            })
        });
        let s = summary(records);
        assert_eq!(s.pattern_bucket_ms, Some(3_600_000));
        for p in s.patterns.as_ref().unwrap() {
            let buckets: Vec<(i64, u64)> = p.bucket_counts(3_600_000).collect();
            assert_eq!(buckets.len(), 24);
            assert!(buckets
                .iter()
                .all(|b| b.1 == 60 && (b.0 - T0) % (60 * MINUTE) == 0));
        }
        // Stored as small deltas after the first bucket.
        let json = serde_json::to_string(&s).unwrap();
        let back: SegmentSummary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let patterns = serde_json::to_string(&s.patterns).unwrap();
        assert!(
            patterns.len() < 100 * (24 * 6 + 120),
            "{} bytes",
            patterns.len()
        );
    }

    #[test]
    fn summaries_without_pattern_buckets_still_read() {
        let json = r#"{"format_version":1,"docs":2,"minutes":[[0,[0,0,0,0,0,0,2,0,0]]],
            "hosts":null,"apps":null,
            "patterns":[{"id":3,"count":2,"first":0,"last":5,"template":null}]}"#;
        let s: SegmentSummary = serde_json::from_str(json).unwrap();
        assert_eq!(s.pattern_bucket_ms, None);
        let p = &s.patterns.unwrap()[0];
        assert_eq!((p.last_id, p.buckets.len()), (None, 0));
    }
}
