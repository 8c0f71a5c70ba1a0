//! Aggregations over the matches of a query, computed from fast fields only (no stored
//! documents are read): a date histogram with per-severity counts, the top values of a keyword
//! field, and the records around a hit from the same host and app.
//!
//! Memory is bounded: a histogram has at most [`MAX_BUCKETS`] buckets, and segments hand back
//! only their non-empty buckets; a terms aggregation holds one 4-byte counter per distinct
//! value of the field in a segment (the field's dictionary size) while it counts, and at most
//! `max_values` distinct values (strings) per segment and per request after that. Values past
//! that cap are counted in `other_count` and the answer says it is approximate.
//!
//! Like searches, both run over the parts of the indexes in parallel, newest first, and when
//! the time limit cuts them short they answer what the finished parts counted, with the
//! range those cover completely.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::Instant;

use logsift_core::time::format_rfc3339;
use logsift_core::Severity;
use logsift_store::{
    IndexHandle, KeywordCounts, PartReader, SegmentSummary, Store, SUMMARY_BUCKET_NS,
};
use serde::Serialize;
use serde_json::Value;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::query::{BooleanQuery, ExistsQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::COLLECT_BLOCK_BUFFER_LEN;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader, Term};

use crate::blocks::{BlockQuery, Need};
use crate::collector::{SortKey, TopByTime};
use crate::lang::Ast;
use crate::parts::{self, blocks_page, hit_of, Coverage, Covered, HitAt, PartPage};
use crate::{
    check_range, parse_query, range_split, resolve_indexes, search_error, Budget, Compiled,
    QueryError, SegmentRef, Segments, SortOrder,
};

/// Most buckets one histogram may have.
pub const MAX_BUCKETS: usize = 10_000;
/// Most values one terms answer may list.
pub const MAX_TERMS: usize = 10_000;
/// Distinct values a terms request keeps by default (`query.terms_max_values`).
pub const DEFAULT_TERMS_MAX_VALUES: usize = 100_000;
/// Most records on either side of a context answer.
pub const MAX_CONTEXT: usize = 1_000;

const NS_PER_MS: i64 = 1_000_000;
/// Automatic bucket sizes, in ms: round numbers a person reads at a glance.
const ROUND_INTERVALS_MS: [i64; 12] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 1_800_000, 3_600_000, 10_800_000,
    43_200_000, 86_400_000,
];
/// The automatic size is the smallest round size giving at most this many buckets.
const TARGET_BUCKETS: i64 = 120;
/// Slot of records without a severity in the per-bucket counters.
const NO_SEVERITY: usize = 8;

/// Keyword fields with a fast column (`source` has none), the ones `terms` can count.
pub const TERMS_FIELDS: [&str; 7] = [
    "host",
    "app",
    "severity",
    "facility",
    "procid",
    "msgid",
    "parse_error",
];

/// Parses an interval like `500ms`, `30s`, `5m`, `3h`, `1d` into ms.
pub fn parse_interval(s: &str) -> Result<i64, QueryError> {
    let bad = || {
        QueryError::BadRequest(format!(
            "interval {s:?} is not a duration like 500ms, 30s, 5m, 3h or 1d"
        ))
    };
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(bad()),
    }
}

/// The automatic bucket size for a span of `span_ns`.
pub fn auto_interval_ms(span_ns: i64) -> i64 {
    let span_ms = (span_ns.max(1) + NS_PER_MS - 1) / NS_PER_MS;
    for size in ROUND_INTERVALS_MS {
        if (span_ms + size - 1) / size <= TARGET_BUCKETS {
            return size;
        }
    }
    // Longer than 120 days: whole days.
    let day = 86_400_000;
    let days = (span_ms + TARGET_BUCKETS * day - 1) / (TARGET_BUCKETS * day);
    days * day
}

#[derive(Debug, Clone, Default)]
pub struct HistogramRequest {
    pub query: String,
    pub indexes: Vec<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Bucket size; automatic (about 60-120 buckets of a round size) when absent.
    pub interval_ms: Option<i64>,
    pub budget: Budget,
    /// Which parts to count, when processes share the count (see [`Segments`]).
    pub segments: Segments,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistogramBucket {
    /// RFC 3339; buckets are aligned to multiples of the interval since the epoch.
    pub start: String,
    pub count: u64,
    /// Counts by severity name; `none` for records without one. Empty severities are left out.
    pub by_severity: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistogramResponse {
    pub buckets: Vec<HistogramBucket>,
    pub interval_ms: i64,
    /// The sum of the bucket counts; exact when `total_exact`.
    pub total: u64,
    pub total_exact: bool,
    /// The time limit stopped the count before every part was counted: buckets inside
    /// `covered` are exact, the others are lower bounds.
    pub partial: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covered: Option<Covered>,
    pub took_ms: u64,
    /// With [`Segments::Only`] or [`Segments::Except`]: named segments not served here.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_segments: Vec<SegmentRef>,
}

pub fn histogram(store: &Store, req: &HistogramRequest) -> Result<HistogramResponse, QueryError> {
    let started = Instant::now();
    check_range(req.start, req.end)?;
    let ast = parse_query(&req.query)?;
    let handles = resolve_indexes(store, &req.indexes)?;
    req.budget.check()?;
    let mut parts = parts::collect(&handles, req.start, req.end, SortOrder::Desc)?;
    let missing_segments = crate::select_segments(&mut parts, &handles, &req.segments);
    // Without a range, the data's own (of every document, deleted or not: only used to place
    // buckets).
    let bounds = parts.iter().fold(None, |b: Option<(i64, i64)>, p| {
        Some(b.map_or((p.min_ts, p.max_ts), |(lo, hi)| {
            (lo.min(p.min_ts), hi.max(p.max_ts))
        }))
    });
    let (start, end) = match (req.start, req.end) {
        (Some(s), Some(e)) => (s, e),
        (s, e) => match bounds {
            Some((lo, hi)) => (s.unwrap_or(lo), e.unwrap_or(hi.saturating_add(1))),
            None => (s.unwrap_or(0), e.unwrap_or(0)),
        },
    };
    let interval_ms = match req.interval_ms {
        Some(ms) if ms <= 0 => {
            return Err(QueryError::BadRequest("interval must be positive".into()))
        }
        Some(ms) => ms,
        None => auto_interval_ms(end.saturating_sub(start)),
    };
    let interval = interval_ms.saturating_mul(NS_PER_MS);
    if end <= start {
        // No data (or the data's range does not reach the requested start).
        return Ok(HistogramResponse {
            buckets: Vec::new(),
            interval_ms,
            total: 0,
            total_exact: true,
            partial: false,
            covered: None,
            took_ms: started.elapsed().as_millis() as u64,
            missing_segments,
        });
    }
    let origin = start.div_euclid(interval).saturating_mul(interval);
    let n = (end as i128 - origin as i128 + interval as i128 - 1) / interval as i128;
    if n > MAX_BUCKETS as i128 {
        return Err(QueryError::BadRequest(format!(
            "an interval of {interval_ms} ms over this range makes {n} buckets; the maximum is \
             {MAX_BUCKETS}: choose a larger interval or a shorter range"
        )));
    }
    let n = n as usize;
    // The collector reads every match's timestamp anyway; see `range_split` for where the
    // range is applied.
    let ((query_start, query_end), _) = range_split(&ast, Some(start), Some(end));
    let collector = HistogramCollector {
        origin,
        interval,
        buckets: n,
        start,
        end,
    };
    parts.retain(|p| p.max_ts >= start && p.min_ts < end);
    let queries = Compiled::new(store, &handles, &ast, query_start, query_end)?;
    let match_all = ast == Ast::All && interval % SUMMARY_BUCKET_NS == 0;
    let (counts, done) = parts::run(
        &parts,
        &req.budget,
        vec![[0u64; 9]; n],
        |part, budget| {
            if let Some(summary) = part.whole_summary(match_all, Some(start), Some(end)) {
                return Ok(histogram_of_summary(summary, origin, interval));
            }
            match &part.reader {
                PartReader::Records(searcher) => {
                    let query = budget.wrap(queries.get(part.handle).box_clone());
                    searcher
                        .search(&*query, &collector)
                        .map_err(search_error(&handles[part.handle]))
                }
                PartReader::Blocks(blocks) => {
                    let mut counts = collector.counter();
                    let parse = store.parse_options(handles[part.handle].name().as_str(), 0);
                    let mut query = BlockQuery::new(blocks, &ast, &parse, Some(start), Some(end))?
                        .with_patterns(store.patterns(), &ast)?;
                    query.scan(budget, Need::Header, |_, r, _| {
                        counts.count(Some(r.timestamp), r.severity.map(u64::from));
                    })?;
                    Ok(counts.nonempty())
                }
            }
        },
        |counts, _, fruit| {
            for (bucket, c) in fruit {
                if let Some(slot) = counts.get_mut(bucket as usize) {
                    for (a, b) in slot.iter_mut().zip(c) {
                        *a += b;
                    }
                }
            }
        },
    )?;
    let coverage = Coverage::of(&parts, &done, SortOrder::Desc, Some(start), Some(end));
    if coverage == Coverage::Nothing {
        return Err(QueryError::Timeout);
    }
    let mut total = 0;
    let buckets = counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let count: u64 = c.iter().sum();
            total += count;
            let by_severity = c
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(code, n)| {
                    let name = Severity::from_code(code as u8).map_or("none", Severity::name);
                    (name, *n)
                })
                .collect();
            HistogramBucket {
                start: format_rfc3339(origin.saturating_add(interval.saturating_mul(i as i64))),
                count,
                by_severity,
            }
        })
        .collect();
    let partial = coverage != Coverage::Complete;
    Ok(HistogramResponse {
        buckets,
        interval_ms,
        total,
        total_exact: !partial,
        partial,
        covered: coverage.covered(),
        took_ms: started.elapsed().as_millis() as u64,
        missing_segments,
    })
}

/// A sealed segment's histogram from its minute counts (`interval` a whole number of
/// minutes, so `origin`, a multiple of it, is a minute boundary): what
/// [`HistogramCollector`] would count over every record of it.
fn histogram_of_summary(summary: &SegmentSummary, origin: i64, interval: i64) -> HistogramFruit {
    let mut out: HistogramFruit = Vec::new();
    for (minute, counts) in &summary.minutes {
        let Ok(bucket) = u32::try_from(minute.saturating_sub(origin).div_euclid(interval)) else {
            continue;
        };
        match out.last_mut() {
            Some((b, slot)) if *b == bucket => {
                for (a, c) in slot.iter_mut().zip(counts) {
                    *a += c;
                }
            }
            _ => out.push((bucket, *counts)),
        }
    }
    out
}

struct HistogramCollector {
    origin: i64,
    interval: i64,
    buckets: usize,
    /// Only records timestamped in `[start, end)` count.
    start: i64,
    end: i64,
}

/// Non-empty buckets only: (bucket, counts by severity code, then no severity).
type HistogramFruit = Vec<(u32, [u64; 9])>;

impl HistogramCollector {
    fn counter(&self) -> BucketCounts {
        BucketCounts {
            origin: self.origin,
            interval: self.interval,
            start: self.start,
            end: self.end,
            counts: vec![[0; 9]; self.buckets],
        }
    }
}

/// One part's counts per bucket and severity, whatever reads its records (columns of a
/// record index, headers of a block segment).
struct BucketCounts {
    origin: i64,
    interval: i64,
    start: i64,
    end: i64,
    counts: Vec<[u64; 9]>,
}

struct HistogramSegment {
    timestamps: Column<i64>,
    severities: Column<u64>,
    counts: BucketCounts,
}

impl Collector for HistogramCollector {
    type Fruit = HistogramFruit;
    type Child = HistogramSegment;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<HistogramSegment> {
        let fast = reader.fast_fields();
        Ok(HistogramSegment {
            timestamps: fast.i64("timestamp")?,
            severities: fast.u64("severity_code")?,
            counts: self.counter(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<HistogramFruit>) -> tantivy::Result<HistogramFruit> {
        let mut merged: BTreeMap<u32, [u64; 9]> = BTreeMap::new();
        for (bucket, counts) in fruits.into_iter().flatten() {
            let slot = merged.entry(bucket).or_insert([0; 9]);
            for (a, b) in slot.iter_mut().zip(counts) {
                *a += b;
            }
        }
        Ok(merged.into_iter().collect())
    }
}

impl BucketCounts {
    fn count(&mut self, ts: Option<i64>, severity: Option<u64>) {
        let Some(ts) = ts.filter(|ts| *ts >= self.start && *ts < self.end) else {
            return;
        };
        let bucket = (ts.saturating_sub(self.origin)).div_euclid(self.interval);
        let severity = severity.map_or(NO_SEVERITY, |c| (c as usize).min(NO_SEVERITY));
        // The range check above keeps `ts` inside the buckets; this one is for safety.
        if let Some(slot) = usize::try_from(bucket)
            .ok()
            .and_then(|b| self.counts.get_mut(b))
        {
            slot[severity] += 1;
        }
    }

    fn nonempty(self) -> HistogramFruit {
        self.counts
            .into_iter()
            .enumerate()
            .filter(|(_, c)| c.iter().any(|n| *n > 0))
            .map(|(i, c)| (i as u32, c))
            .collect()
    }
}

impl SegmentCollector for HistogramSegment {
    type Fruit = HistogramFruit;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let ts = self.timestamps.first(doc);
        let severity = self.severities.first(doc);
        self.counts.count(ts, severity);
    }

    /// A whole-corpus histogram visits every record: reading the columns a block at a time
    /// saves a dynamic call per value.
    fn collect_block(&mut self, docs: &[DocId]) {
        for chunk in docs.chunks(COLLECT_BLOCK_BUFFER_LEN) {
            let mut ts = [None; COLLECT_BLOCK_BUFFER_LEN];
            let mut sev = [None; COLLECT_BLOCK_BUFFER_LEN];
            let (ts, sev) = (&mut ts[..chunk.len()], &mut sev[..chunk.len()]);
            self.timestamps.first_vals(chunk, ts);
            self.severities.first_vals(chunk, sev);
            for (&t, &s) in ts.iter().zip(sev.iter()) {
                self.counts.count(t, s);
            }
        }
    }

    fn harvest(self) -> HistogramFruit {
        self.counts.nonempty()
    }
}

#[derive(Debug, Clone)]
pub struct TermsRequest {
    pub query: String,
    pub indexes: Vec<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub field: String,
    pub size: usize,
    /// Most distinct values counted per segment and per request: the memory bound.
    pub max_values: usize,
    pub budget: Budget,
    /// Which parts to count, when processes share the count (see [`Segments`]).
    pub segments: Segments,
}

impl Default for TermsRequest {
    fn default() -> Self {
        TermsRequest {
            query: String::new(),
            indexes: Vec::new(),
            start: None,
            end: None,
            field: String::new(),
            size: 10,
            max_values: DEFAULT_TERMS_MAX_VALUES,
            budget: Budget::default(),
            segments: Segments::All,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TermsBucket {
    /// The value as it was received (not lowercased).
    pub value: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TermsResponse {
    pub field: String,
    /// Most frequent first; ties by value.
    pub buckets: Vec<TermsBucket>,
    /// Matches with a value that is not among `buckets`.
    pub other_count: u64,
    /// Matches without a value for the field.
    pub missing: u64,
    /// Every match: the buckets, `other_count` and `missing` add up to it. Exact when
    /// `total_exact`, else a lower bound.
    pub total: u64,
    pub total_exact: bool,
    /// Not every match was counted by value: see `partial_reasons`.
    pub partial: bool,
    /// `time_limit`: only the parts searched before the time limit were counted, and
    /// `covered` is the range they cover completely. `values_cap`: more distinct values than
    /// `query.terms_max_values` were met; the values past the cap are in `other_count`, so a
    /// frequent value met late may be missing from `buckets` and counts are lower bounds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partial_reasons: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covered: Option<Covered>,
    pub took_ms: u64,
    /// With [`Segments::Only`] or [`Segments::Except`]: named segments not served here.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_segments: Vec<SegmentRef>,
}

pub fn terms(store: &Store, req: &TermsRequest) -> Result<TermsResponse, QueryError> {
    let started = Instant::now();
    if !TERMS_FIELDS.contains(&req.field.as_str()) {
        return Err(QueryError::BadRequest(format!(
            "field must be one of {}, not {:?}",
            TERMS_FIELDS.join(", "),
            req.field
        )));
    }
    if req.size == 0 || req.size > MAX_TERMS {
        return Err(QueryError::BadRequest(format!(
            "size must be between 1 and {MAX_TERMS}, not {}",
            req.size
        )));
    }
    if req.max_values == 0 {
        return Err(QueryError::BadRequest(
            "max_values (query.terms_max_values) must be at least 1".into(),
        ));
    }
    let mut answers = terms_of_fields(store, req, &[req.field.as_str()])?;
    let mut answer = answers.pop().expect("one answer per field");
    answer.took_ms = started.elapsed().as_millis() as u64;
    Ok(answer)
}

/// The terms of each of `fields` (of [`TERMS_FIELDS`]; `req.field` is not looked at) among
/// the matches of `req`, counted in one pass over the records: `compare` weighs three fields
/// in each of two ranges, and reading each block's header once for the three took a third of
/// the time of three passes.
pub(crate) fn terms_of_fields(
    store: &Store,
    req: &TermsRequest,
    fields: &[&str],
) -> Result<Vec<TermsResponse>, QueryError> {
    check_range(req.start, req.end)?;
    let ast = parse_query(&req.query)?;
    let handles = resolve_indexes(store, &req.indexes)?;
    req.budget.check()?;
    let queries = Compiled::new(store, &handles, &ast, req.start, req.end)?;
    let mut parts = parts::collect(&handles, req.start, req.end, SortOrder::Desc)?;
    let missing_segments = crate::select_segments(&mut parts, &handles, &req.segments);
    let collectors: Vec<TermsCollector> = fields
        .iter()
        .map(|field| TermsCollector {
            field: field.to_string(),
            max_values: req.max_values,
        })
        .collect();
    let match_all = ast == Ast::All;
    let fresh = || -> Vec<TermsFruit> { fields.iter().map(|_| TermsFruit::default()).collect() };
    let (counted, done) = parts::run(
        &parts,
        &req.budget,
        fresh(),
        |part, budget| {
            let summary = part.whole_summary(match_all, req.start, req.end);
            let summarised: Option<Vec<&KeywordCounts>> = summary.and_then(|s| {
                fields
                    .iter()
                    .map(|field| match *field {
                        "host" => s.hosts.as_ref(),
                        "app" => s.apps.as_ref(),
                        _ => None,
                    })
                    .collect()
            });
            if let Some(values) = summarised {
                return Ok(values
                    .into_iter()
                    .map(|v| terms_of_summary(v, part.reader.num_docs(), req.max_values))
                    .collect::<Vec<TermsFruit>>());
            }
            match &part.reader {
                PartReader::Records(searcher) => collectors
                    .iter()
                    .map(|collector| {
                        let query = budget.wrap(queries.get(part.handle).box_clone());
                        searcher
                            .search(&*query, collector)
                            .map_err(search_error(&handles[part.handle]))
                    })
                    .collect(),
                PartReader::Blocks(blocks) => {
                    let parse = store.parse_options(handles[part.handle].name().as_str(), 0);
                    let mut query = BlockQuery::new(blocks, &ast, &parse, req.start, req.end)?
                        .with_patterns(store.patterns(), &ast)?;
                    let mut total = 0u64;
                    let mut missing = vec![0u64; fields.len()];
                    let mut counts: Vec<HashMap<String, u64>> =
                        fields.iter().map(|_| HashMap::new()).collect();
                    // The stream and severity are in a block's header; other fields are not.
                    let need = if fields
                        .iter()
                        .all(|f| matches!(*f, "host" | "app" | "severity"))
                    {
                        Need::Header
                    } else {
                        Need::Record
                    };
                    query.scan(budget, need, |block, r, record| {
                        total += 1;
                        for (i, field) in fields.iter().enumerate() {
                            let value = match (*field, record) {
                                ("host", _) => block.host.as_deref().map(Cow::Borrowed),
                                ("app", _) => block.app.as_deref().map(Cow::Borrowed),
                                ("severity", _) => r
                                    .severity
                                    .and_then(Severity::from_code)
                                    .map(|s| Cow::Borrowed(s.name())),
                                (field, Some(record)) => record_value(record, field),
                                (_, None) => None,
                            };
                            // Looked up before an owned key is made: most records repeat a
                            // value already counted.
                            match value {
                                Some(v) => match counts[i].get_mut(v.as_ref()) {
                                    Some(n) => *n += 1,
                                    None => {
                                        counts[i].insert(v.into_owned(), 1);
                                    }
                                },
                                None => missing[i] += 1,
                            }
                        }
                    })?;
                    Ok(counts
                        .into_iter()
                        .zip(missing)
                        .map(|(counts, missing)| {
                            let values = KeywordCounts {
                                values: counts.into_iter().collect(),
                                missing,
                            };
                            terms_of_summary(&values, total, req.max_values)
                        })
                        .collect())
                }
            }
        },
        |into, _, fruits| {
            for (into, fruit) in into.iter_mut().zip(fruits) {
                into.absorb(fruit, req.max_values);
            }
        },
    )?;
    let coverage = Coverage::of(&parts, &done, SortOrder::Desc, req.start, req.end);
    if coverage == Coverage::Nothing {
        return Err(QueryError::Timeout);
    }
    Ok(fields
        .iter()
        .zip(counted)
        .map(|(field, counted)| TermsResponse {
            missing_segments: missing_segments.clone(),
            ..terms_answer(field, counted, &coverage, &parts, req)
        })
        .collect())
}

/// The answer of a terms count of `field` over `parts` (`counted`, as far as `coverage`).
fn terms_answer(
    field: &str,
    counted: TermsFruit,
    coverage: &Coverage,
    parts: &[parts::Part],
    req: &TermsRequest,
) -> TermsResponse {
    let mut all: Vec<(String, u64)> = counted.counts.into_iter().collect();
    all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let other_count = all.iter().skip(req.size).map(|(_, n)| n).sum::<u64>() + counted.overflow;
    all.truncate(req.size);
    let mut partial_reasons = Vec::new();
    if *coverage != Coverage::Complete {
        partial_reasons.push("time_limit");
    }
    if counted.capped {
        partial_reasons.push("values_cap");
    }
    let covered = match coverage {
        Coverage::Partial { .. } => coverage.covered(),
        // Capped but complete in time: everything in the range was counted.
        _ if counted.capped => {
            let lo = req
                .start
                .unwrap_or_else(|| parts.iter().map(|p| p.min_ts).min().unwrap_or(0));
            let hi = req.end.unwrap_or_else(|| {
                parts
                    .iter()
                    .map(|p| p.max_ts.saturating_add(1))
                    .max()
                    .unwrap_or(0)
            });
            Some(Covered::new(lo, hi))
        }
        _ => None,
    };
    TermsResponse {
        field: field.to_string(),
        buckets: all
            .into_iter()
            .map(|(value, count)| TermsBucket { value, count })
            .collect(),
        other_count,
        missing: counted.missing,
        total: counted.total,
        total_exact: *coverage == Coverage::Complete,
        partial: !partial_reasons.is_empty(),
        partial_reasons,
        covered,
        took_ms: 0,
        missing_segments: Vec::new(),
    }
}

/// The value of keyword field `field` (one of [`TERMS_FIELDS`]) of a parsed record, as the
/// record index's column holds it.
fn record_value<'r>(record: &'r logsift_core::Record<'_>, field: &str) -> Option<Cow<'r, str>> {
    let borrowed = |v: &'r Option<Cow<'_, str>>| v.as_deref().map(Cow::Borrowed);
    match field {
        "host" => borrowed(&record.host),
        "app" => borrowed(&record.app),
        "procid" => borrowed(&record.procid),
        "msgid" => borrowed(&record.msgid),
        "severity" => record.severity.map(|s| Cow::Borrowed(s.name())),
        "facility" => record.facility.map(|f| Cow::Borrowed(f.name())),
        "parse_error" => borrowed(&record.parse_error),
        _ => None,
    }
}

/// A sealed segment's terms from its summary's value counts: what [`TermsSegment`] would
/// harvest over every record of it.
fn terms_of_summary(values: &KeywordCounts, docs: u64, max_values: usize) -> TermsFruit {
    let mut seen: Vec<&(String, u64)> = values.values.iter().collect();
    let mut fruit = TermsFruit {
        total: docs,
        missing: values.missing,
        ..TermsFruit::default()
    };
    if seen.len() > max_values {
        seen.select_nth_unstable_by(max_values, |a, b| b.1.cmp(&a.1));
        fruit.overflow = seen[max_values..].iter().map(|(_, n)| n).sum();
        fruit.capped = true;
        seen.truncate(max_values);
    }
    fruit.counts = seen.into_iter().cloned().collect();
    fruit
}

struct TermsCollector {
    field: String,
    max_values: usize,
}

#[derive(Default)]
struct TermsFruit {
    total: u64,
    missing: u64,
    /// At most `max_values` entries.
    counts: HashMap<String, u64>,
    /// Matches whose value was past the cap.
    overflow: u64,
    capped: bool,
}

impl TermsFruit {
    /// Adds `other`'s counts; values not yet held are added while fewer than `max_values`
    /// are, most frequent first, and counted as overflow after that.
    fn absorb(&mut self, other: TermsFruit, max_values: usize) {
        self.total += other.total;
        self.missing += other.missing;
        self.overflow += other.overflow;
        self.capped |= other.capped;
        let mut incoming: Vec<(String, u64)> = other.counts.into_iter().collect();
        incoming.sort_unstable_by_key(|v| std::cmp::Reverse(v.1));
        for (value, n) in incoming {
            if let Some(slot) = self.counts.get_mut(&value) {
                *slot += n;
            } else if self.counts.len() < max_values {
                self.counts.insert(value, n);
            } else {
                self.overflow += n;
                self.capped = true;
            }
        }
    }
}

struct TermsSegment {
    column: Option<StrColumn>,
    /// Counts by term ordinal of this segment's dictionary; a segment has fewer than 2^32
    /// documents.
    by_ord: Vec<u32>,
    total: u64,
    missing: u64,
    max_values: usize,
}

impl Collector for TermsCollector {
    type Fruit = TermsFruit;
    type Child = TermsSegment;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<TermsSegment> {
        let column = reader.fast_fields().str(&self.field)?;
        let terms = column.as_ref().map_or(0, |c| c.num_terms());
        Ok(TermsSegment {
            column,
            by_ord: vec![0; terms],
            total: 0,
            missing: 0,
            max_values: self.max_values,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<TermsFruit>) -> tantivy::Result<TermsFruit> {
        let mut merged = TermsFruit::default();
        for f in fruits {
            merged.absorb(f, self.max_values);
        }
        Ok(merged)
    }
}

impl SegmentCollector for TermsSegment {
    type Fruit = TermsFruit;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.total += 1;
        let ord = self.column.as_ref().and_then(|c| c.ords().first(doc));
        match ord.and_then(|o| self.by_ord.get_mut(o as usize)) {
            Some(slot) => *slot += 1,
            None => self.missing += 1,
        }
    }

    fn harvest(self) -> TermsFruit {
        let mut fruit = TermsFruit {
            total: self.total,
            missing: self.missing,
            ..TermsFruit::default()
        };
        let Some(column) = &self.column else {
            return fruit;
        };
        let mut seen: Vec<(u64, u64)> = self
            .by_ord
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(ord, n)| (ord as u64, u64::from(*n)))
            .collect();
        if seen.len() > self.max_values {
            // Only the most frequent values of the segment become strings.
            seen.select_nth_unstable_by(self.max_values, |a, b| b.1.cmp(&a.1));
            fruit.overflow = seen[self.max_values..].iter().map(|(_, n)| n).sum();
            fruit.capped = true;
            seen.truncate(self.max_values);
        }
        let mut value = String::new();
        for (ord, n) in seen {
            value.clear();
            // An unreadable dictionary entry is counted under an empty value rather than
            // dropped, so that the totals still add up.
            let _ = column.ord_to_str(ord, &mut value);
            *fruit.counts.entry(value.clone()).or_insert(0) += n;
        }
        fruit
    }
}

#[derive(Debug, Clone, Default)]
pub struct ContextRequest {
    /// The id of the hit in the middle.
    pub id: u64,
    pub before: usize,
    pub after: usize,
    pub budget: Budget,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContextResponse {
    /// Older records of the same host and app, oldest first.
    pub before: Vec<Value>,
    pub hit: Value,
    /// Newer records of the same host and app, oldest first.
    pub after: Vec<Value>,
    pub took_ms: u64,
}

/// The string value of a fast keyword column for one document.
fn str_value(reader: &SegmentReader, field: &str, doc: DocId) -> Option<String> {
    let column = reader.fast_fields().str(field).ok()??;
    let ord = column.ords().first(doc)?;
    let mut out = String::new();
    column.ord_to_str(ord, &mut out).ok()?.then_some(out)
}

pub fn context(store: &Store, req: &ContextRequest) -> Result<ContextResponse, QueryError> {
    let started = Instant::now();
    if req.before > MAX_CONTEXT || req.after > MAX_CONTEXT {
        return Err(QueryError::BadRequest(format!(
            "before and after must be at most {MAX_CONTEXT}"
        )));
    }
    let schema = store.schema();
    // Ids live in a fast column only (see the store's schema): an inclusive range of one.
    let by_id = RangeQuery::new(
        Bound::Included(Term::from_field_u64(schema.id, req.id)),
        Bound::Included(Term::from_field_u64(schema.id, req.id)),
    );
    let find = TopByTime {
        limit: 1,
        order: SortOrder::Desc,
        after: None,
        start: None,
        end: None,
    };
    // Ids are unique across indexes and their parts (WAL LSNs): the first holding it is the one.
    for handle in store.list() {
        req.budget.check()?;
        let readers: Vec<PartReader> = handle.parts(None, None).into_iter().map(|p| p.0).collect();
        let Some(found) = find_by_id(&handle, &readers, &by_id, &find, req.id)? else {
            continue;
        };
        let Found {
            part,
            key,
            at,
            host,
            app,
        } = found;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (name, field, value) in [("host", schema.host, &host), ("app", schema.app, &app)] {
            match value {
                Some(value) => {
                    // Keyword terms are lowercased at indexing (see the store's schema).
                    let term = Term::from_field_text(field, &value.to_lowercase());
                    clauses.push((
                        Occur::Must,
                        Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
                    ));
                }
                None => clauses.push((
                    Occur::MustNot,
                    Box::new(ExistsQuery::new(name.into(), false)),
                )),
            }
        }
        if clauses.iter().all(|(o, _)| *o == Occur::MustNot) {
            clauses.push((Occur::Must, Box::new(tantivy::query::AllQuery)));
        }
        let neighbours = req.budget.wrap(Box::new(BooleanQuery::new(clauses)));
        // A block holds records of one stream: the neighbours' blocks are the stream's.
        let stream = logsift_store::stream_key(host.as_deref(), app.as_deref());
        // Neighbours may sit in any part of the index: collect from each, keep the nearest.
        let side = |order: SortOrder, limit: usize| -> Result<Vec<Value>, QueryError> {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let collector = TopByTime {
                limit,
                order,
                after: Some(key),
                start: None,
                end: None,
            };
            let mut near: Vec<(SortKey, usize, HitAt)> = Vec::new();
            for (i, reader) in readers.iter().enumerate() {
                let page: PartPage = match reader {
                    PartReader::Records(s) => s
                        .search(&*neighbours, &collector)
                        .map(PartPage::from)
                        .map_err(search_error(&handle))?,
                    PartReader::Blocks(blocks) => {
                        let page = crate::blocks::Page {
                            order,
                            after: Some((key.timestamp, key.id)),
                            limit,
                            stream: Some(stream),
                            budget: Some(req.budget.clone()),
                            ..crate::blocks::Page::default()
                        };
                        blocks_page(store, &handle, blocks, &Ast::All, &page)?
                    }
                };
                req.budget.check()?;
                near.extend(page.top.into_iter().map(|(k, a)| (k, i, a)));
            }
            crate::collector::sort_keys(&mut near, order, |n| n.0);
            near.truncate(limit);
            near.into_iter()
                .map(|(k, i, a)| hit_of(store, handle.name().as_str(), &readers[i], k, &a))
                .collect()
        };
        let mut before = side(SortOrder::Desc, req.before)?;
        before.reverse();
        let after = side(SortOrder::Asc, req.after)?;
        return Ok(ContextResponse {
            before,
            hit: hit_of(store, handle.name().as_str(), &readers[part], key, &at)?,
            after,
            took_ms: started.elapsed().as_millis() as u64,
        });
    }
    Err(QueryError::NotFound(format!("no record has id {}", req.id)))
}

/// A record found by its id: its part, key, where it is, and its host and app.
struct Found {
    part: usize,
    key: SortKey,
    at: HitAt,
    host: Option<String>,
    app: Option<String>,
}

/// The record with id `id` in one of `readers` (parts of `handle`'s index), if any.
fn find_by_id(
    handle: &IndexHandle,
    readers: &[PartReader],
    by_id: &dyn Query,
    find: &TopByTime,
    id: u64,
) -> Result<Option<Found>, QueryError> {
    for (part, reader) in readers.iter().enumerate() {
        match reader {
            PartReader::Records(searcher) => {
                let fruit = searcher.search(by_id, find).map_err(search_error(handle))?;
                if let Some((key, addr)) = fruit.top.into_iter().next() {
                    let segment = searcher.segment_reader(addr.segment_ord);
                    return Ok(Some(Found {
                        part,
                        key,
                        at: HitAt::Doc(addr),
                        host: str_value(segment, "host", addr.doc_id),
                        app: str_value(segment, "app", addr.doc_id),
                    }));
                }
            }
            PartReader::Blocks(blocks) => {
                let mut block = logsift_store::blocks::DecodedBlock::default();
                for (ord, info) in blocks.blocks.iter().enumerate() {
                    if id < info.first_id || id > info.last_id {
                        continue;
                    }
                    blocks.read_header(ord, &mut block)?;
                    let Some(at) = block.records.iter().position(|r| r.id == id) else {
                        continue;
                    };
                    blocks.read_lines(ord, &mut block)?;
                    let r = &block.records[at];
                    // A block's records share its stream: host and app are the header's.
                    return Ok(Some(Found {
                        part,
                        key: SortKey {
                            timestamp: r.timestamp,
                            id,
                        },
                        host: block.host.clone(),
                        app: block.app.clone(),
                        at: HitAt::Line(Box::new(crate::blocks::BlockHit::of(&block, r))),
                    }));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_and_auto_sizes_are_round() {
        assert_eq!(parse_interval("1m").unwrap(), 60_000);
        assert_eq!(parse_interval("500ms").unwrap(), 500);
        assert_eq!(parse_interval("2d").unwrap(), 172_800_000);
        for bad in ["", "m", "1", "1w", "0s", "-1s", "1.5m"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
        let min = 60 * NS_PER_MS * 1000;
        assert_eq!(auto_interval_ms(min), 1_000); // 60 buckets of 1 s
        assert_eq!(auto_interval_ms(15 * min), 10_000); // 90 of 10 s
        assert_eq!(auto_interval_ms(240 * min), 300_000); // 48 of 5 m
        assert_eq!(auto_interval_ms(24 * 60 * min), 1_800_000); // 48 of 30 m
        assert_eq!(auto_interval_ms(0), 1_000);
        let year = 365 * 24 * 60 * min;
        assert_eq!(auto_interval_ms(year), 4 * 86_400_000);
    }
}
