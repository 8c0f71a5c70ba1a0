//! Log patterns of a query's matches (#19). [`patterns`] counts the matches of a range by the
//! pattern id the indexer stored with each record, with counts per time bucket, first and last
//! seen and the newest record of each; [`compare`] ranks the patterns, hosts, apps and
//! severities whose share of the matches changed most between a window and its baseline.
//!
//! Both read columns only (pattern id, timestamp, record id), never stored records (but for
//! the one example per listed pattern). Over a match-everything query both take a sealed
//! segment from its summary's per-pattern counts (count, first and last seen, newest record,
//! records per bucket of a minute or more) when the summary answers exactly: the segment lies
//! wholly inside the range, or the range's edges (and a listing's interval) are whole buckets
//! of the summary's. That costs O(segments + patterns × buckets); columns are read only for
//! the segments a range cuts elsewhere and the hot tier.
//!
//! Records stored without a pattern id (segments written before patterns were mined, block
//! segments, built-in indexes) are counted as `without_pattern` and listed by neither.

use std::collections::HashMap;
use std::time::Instant;

use logsift_core::time::format_rfc3339;
use logsift_store::{PartReader, SegmentSummary, Store, PATTERN_FIELD};
use serde::Serialize;
use serde_json::Value;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

use crate::agg::{auto_interval_ms, terms_of_fields, TermsRequest};
use crate::blocks::{BlockQuery, Need};
use crate::collector::SortKey;
use crate::lang::Ast;
use crate::parts::{self, Coverage, Covered, HitAt, Part};
use crate::{
    check_range, parse_query, range_split, resolve_indexes, search_error, Budget, Compiled,
    QueryError, SortOrder,
};

/// Most patterns one answer lists.
pub const MAX_PATTERNS: usize = 1_000;
/// Most time buckets of each pattern's counts: every pattern met in a part keeps a counter per
/// bucket while the part is counted (up to about 20,000 patterns, the miner's bound, times
/// this times 4 bytes), so the bound is far below a histogram's. The automatic interval gives
/// at most about 120.
pub const MAX_PATTERN_BUCKETS: usize = 150;
const NS_PER_MS: i64 = 1_000_000;
/// Values of each of host, app and severity that `compare` weighs (the most frequent in each
/// range).
const COMPARE_VALUES: usize = 1_000;

#[derive(Debug, Clone, Default)]
pub struct PatternsRequest {
    pub query: String,
    pub indexes: Vec<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Patterns listed, most frequent first.
    pub size: usize,
    /// Bucket size of each pattern's counts; automatic (about 60–120 buckets) when absent.
    pub interval_ms: Option<i64>,
    pub budget: Budget,
}

#[derive(Debug, Clone, Serialize)]
pub struct PatternRow {
    pub id: u32,
    /// Its template now (`<*>` for each variable part); `null` if this server does not know
    /// the id (a segment from elsewhere whose summary lacks it).
    pub template: Option<String>,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// Matches per bucket, from `buckets_start`, `interval_ms` apart.
    pub counts: Vec<u64>,
    /// The newest matching record, as a search hit.
    pub example: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PatternsResponse {
    pub patterns: Vec<PatternRow>,
    /// Every match: the listed patterns, `other_count` and `without_pattern` add up to it.
    pub total: u64,
    /// Matches of patterns not listed.
    pub other_count: u64,
    /// Matches stored without a pattern id.
    pub without_pattern: u64,
    /// Distinct patterns among the matches.
    pub distinct: u64,
    pub interval_ms: i64,
    /// Start of the first bucket, RFC 3339 (`null` when nothing matched).
    pub buckets_start: Option<String>,
    pub total_exact: bool,
    pub partial: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covered: Option<Covered>,
    pub took_ms: u64,
}

/// The top patterns of the matches of `req`.
pub fn patterns(store: &Store, req: &PatternsRequest) -> Result<PatternsResponse, QueryError> {
    let started = Instant::now();
    check_size(req.size)?;
    check_range(req.start, req.end)?;
    let ast = parse_query(&req.query)?;
    let handles = resolve_indexes(store, &req.indexes)?;
    req.budget.check()?;
    let parts = parts::collect(&handles, req.start, req.end, SortOrder::Desc)?;
    let bounds = parts.iter().fold(None, |b: Option<(i64, i64)>, p| {
        Some(b.map_or((p.min_ts, p.max_ts), |(lo, hi)| {
            (lo.min(p.min_ts), hi.max(p.max_ts))
        }))
    });
    let (start, end) = match (req.start, req.end, bounds) {
        (Some(s), Some(e), _) => (s, e),
        (s, e, Some((lo, hi))) => (s.unwrap_or(lo), e.unwrap_or(hi.saturating_add(1))),
        (s, e, None) => (s.unwrap_or(0), e.unwrap_or(0)),
    };
    let interval_ms = match req.interval_ms {
        Some(ms) if ms <= 0 => {
            return Err(QueryError::BadRequest("interval must be positive".into()))
        }
        Some(ms) => ms,
        None => auto_interval_ms(end.saturating_sub(start)),
    };
    let interval = interval_ms.saturating_mul(NS_PER_MS);
    let origin = start.div_euclid(interval).saturating_mul(interval);
    let n = if end > start {
        (end as i128 - origin as i128 + interval as i128 - 1) / interval as i128
    } else {
        0
    };
    if n > MAX_PATTERN_BUCKETS as i128 {
        return Err(QueryError::BadRequest(format!(
            "an interval of {interval_ms} ms over this range makes {n} buckets; patterns count \
             at most {MAX_PATTERN_BUCKETS}: choose a larger interval or a shorter range"
        )));
    }
    let frame = Frame {
        start,
        end,
        origin,
        interval,
        buckets: n as usize,
    };
    let counted = count(store, &handles, &ast, parts, frame, true, &req.budget)?;
    let mut rows: Vec<(&u32, &Stat)> = counted.acc.by.iter().filter(|(id, _)| **id != 0).collect();
    rows.sort_unstable_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
    let distinct = rows.len() as u64;
    let listed: u64 = rows.iter().take(req.size).map(|(_, s)| s.count).sum();
    let without_pattern = counted.acc.by.get(&0).map_or(0, |s| s.count);
    let mut patterns = Vec::new();
    for (id, stat) in rows.into_iter().take(req.size) {
        let example = match stat.newest {
            Some((key, part, Example::Doc(addr))) => {
                Some(counted.parts[part].hit(store, &handles, key, &HitAt::Doc(addr))?)
            }
            Some((key, part, Example::Block)) => {
                let p = &counted.parts[part];
                match &p.reader {
                    PartReader::Blocks(segment) => match block_hit(segment, key)? {
                        Some(hit) => {
                            Some(p.hit(store, &handles, key, &HitAt::Line(Box::new(hit)))?)
                        }
                        None => None,
                    },
                    PartReader::Records(_) => None,
                }
            }
            None => None,
        };
        let mut counts: Vec<u64> = stat.buckets.iter().map(|&c| u64::from(c)).collect();
        counts.resize(frame.buckets, 0);
        patterns.push(PatternRow {
            id: *id,
            template: template(store, &counted.parts, *id),
            count: stat.count,
            first_seen: format_rfc3339(stat.first),
            last_seen: format_rfc3339(stat.last),
            counts,
            example,
        });
    }
    let total = counted.acc.total;
    let partial = counted.coverage != Coverage::Complete;
    Ok(PatternsResponse {
        patterns,
        total,
        other_count: total - listed - without_pattern,
        without_pattern,
        distinct,
        interval_ms,
        buckets_start: (total > 0).then(|| format_rfc3339(origin)),
        total_exact: !partial,
        partial,
        covered: counted.coverage.covered(),
        took_ms: started.elapsed().as_millis() as u64,
    })
}

#[derive(Debug, Clone)]
pub struct CompareRequest {
    pub query: String,
    pub indexes: Vec<String>,
    /// The window (ns): what happened.
    pub start: i64,
    pub end: i64,
    /// The baseline (ns); by default the window's length just before it.
    pub baseline_start: Option<i64>,
    pub baseline_end: Option<i64>,
    /// Patterns listed; hosts, apps and severities list at most 10 each.
    pub size: usize,
    /// Distinct hosts, apps or severities counted per range (`query.terms_max_values`).
    pub max_values: usize,
    pub budget: Budget,
}

impl Default for CompareRequest {
    fn default() -> Self {
        CompareRequest {
            query: String::new(),
            indexes: Vec::new(),
            start: 0,
            end: 0,
            baseline_start: None,
            baseline_end: None,
            size: 20,
            max_values: crate::agg::DEFAULT_TERMS_MAX_VALUES,
            budget: Budget::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Range {
    pub start: String,
    pub end: String,
    /// Matches in the range.
    pub total: u64,
}

/// One pattern or value whose share of the matches changed.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// `new` (none in the baseline), `rose`, `fell` or `gone` (none in the window).
    pub kind: &'static str,
    /// The pattern id (patterns only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// The template (patterns) or the value (hosts, apps, severities).
    pub value: Option<String>,
    pub count: u64,
    pub baseline_count: u64,
    /// Its share of the window's and the baseline's matches.
    pub share: f64,
    pub baseline_share: f64,
    /// How many times more often it is met in the window than in the baseline, against what
    /// the volume of the two ranges leads to expect (`volume_scale` of the response; each count
    /// plus one half, so that a new pattern gets a finite ratio).
    pub ratio: f64,
    /// The log-likelihood ratio (G²) of its window and baseline counts against that
    /// expectation: how unlikely the change is by chance. About 4 is p = 0.05, 11 is p = 0.001.
    pub score: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompareResponse {
    pub window: Range,
    pub baseline: Range,
    /// How many times more matches a typical pattern has in the window than in the baseline
    /// (the median ratio of the patterns met in both): what counts as "unchanged", so that an
    /// incident's extra lines, or a busier hour, do not make every other pattern move.
    pub volume_scale: f64,
    /// Patterns, largest change first (highest score).
    pub patterns: Vec<Change>,
    /// Values over-represented in the window, largest change first.
    pub hosts: Vec<Change>,
    pub apps: Vec<Change>,
    pub severities: Vec<Change>,
    pub total_exact: bool,
    pub partial: bool,
    pub took_ms: u64,
}

/// What changed in `[start, end)` against the baseline.
pub fn compare(store: &Store, req: &CompareRequest) -> Result<CompareResponse, QueryError> {
    let started = Instant::now();
    check_size(req.size)?;
    check_range(Some(req.start), Some(req.end))?;
    let length = req.end - req.start;
    let (b_start, b_end) = match (req.baseline_start, req.baseline_end) {
        (Some(s), Some(e)) => (s, e),
        (Some(s), None) => (s, s.saturating_add(length)),
        (None, Some(e)) => (e.saturating_sub(length), e),
        (None, None) => (req.start.saturating_sub(length), req.start),
    };
    check_range(Some(b_start), Some(b_end))
        .map_err(|_| QueryError::BadRequest("baseline_start must be before baseline_end".into()))?;
    let ast = parse_query(&req.query)?;
    let handles = resolve_indexes(store, &req.indexes)?;
    req.budget.check()?;
    let mut exact = true;
    let mut by_range = Vec::new();
    for (start, end) in [(req.start, req.end), (b_start, b_end)] {
        let parts = parts::collect(&handles, Some(start), Some(end), SortOrder::Desc)?;
        let frame = Frame {
            start,
            end,
            origin: start,
            interval: 1,
            buckets: 0,
        };
        let counted = count(store, &handles, &ast, parts, frame, false, &req.budget)?;
        exact &= counted.coverage == Coverage::Complete;
        by_range.push(counted);
    }
    let (window, baseline) = (&by_range[0], &by_range[1]);
    let (n_w, n_b) = (window.acc.total, baseline.acc.total);
    let mut ids: Vec<u32> = window
        .acc
        .by
        .keys()
        .chain(baseline.acc.by.keys())
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let count = |acc: &Acc, id: u32| acc.by.get(&id).map_or(0, |s| s.count);
    let scale = volume_scale(
        ids.iter()
            .filter(|id| **id != 0)
            .map(|&id| (count(&window.acc, id), count(&baseline.acc, id))),
        n_w,
        n_b,
        length as f64 / (b_end - b_start) as f64,
    );
    let mut patterns: Vec<Change> = ids
        .into_iter()
        .filter(|id| *id != 0)
        .map(|id| {
            let (a, b) = (count(&window.acc, id), count(&baseline.acc, id));
            let template =
                template(store, &window.parts, id).or_else(|| template(store, &baseline.parts, id));
            Change {
                id: Some(id),
                value: template,
                ..change(a, n_w, b, n_b, scale)
            }
        })
        .filter(|c| c.score > 0.0)
        .collect();
    rank(&mut patterns, req.size);
    // Hosts, apps and severities of each range, counted in one pass over its records.
    const DIMENSIONS: [&str; 3] = ["host", "app", "severity"];
    let mut by_range: Vec<Vec<HashMap<String, u64>>> = Vec::new();
    for (start, end) in [(req.start, req.end), (b_start, b_end)] {
        let answers = terms_of_fields(
            store,
            &TermsRequest {
                query: req.query.clone(),
                indexes: req.indexes.clone(),
                start: Some(start),
                end: Some(end),
                field: String::new(),
                size: COMPARE_VALUES,
                max_values: req.max_values,
                budget: req.budget.clone(),
                segments: Default::default(),
            },
            &DIMENSIONS,
        )?;
        by_range.push(
            answers
                .into_iter()
                .map(|t| {
                    exact &= t.total_exact && !t.partial;
                    t.buckets
                        .into_iter()
                        .map(|b| (b.value, b.count))
                        .collect::<HashMap<String, u64>>()
                })
                .collect(),
        );
    }
    let dimension = |d: usize| -> Vec<Change> {
        let (window, baseline) = (&by_range[0][d], &by_range[1][d]);
        let mut out: Vec<Change> = window
            .iter()
            .map(|(value, &a)| {
                let b = baseline.get(value).copied().unwrap_or(0);
                Change {
                    value: Some(value.clone()),
                    ..change(a, n_w, b, n_b, scale)
                }
            })
            // Over-represented values only: what the window has more of.
            .filter(|c| c.score > 0.0 && matches!(c.kind, "new" | "rose"))
            .collect();
        rank(&mut out, 10);
        out
    };
    let hosts = dimension(0);
    let apps = dimension(1);
    let severities = dimension(2);
    Ok(CompareResponse {
        window: Range {
            start: format_rfc3339(req.start),
            end: format_rfc3339(req.end),
            total: n_w,
        },
        baseline: Range {
            start: format_rfc3339(b_start),
            end: format_rfc3339(b_end),
            total: n_b,
        },
        volume_scale: scale,
        patterns,
        hosts,
        apps,
        severities,
        total_exact: exact,
        partial: !exact,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

fn check_size(size: usize) -> Result<(), QueryError> {
    if size == 0 || size > MAX_PATTERNS {
        return Err(QueryError::BadRequest(format!(
            "size must be between 1 and {MAX_PATTERNS}, not {size}"
        )));
    }
    Ok(())
}

/// Highest score first (ties: larger count, then value), at most `size`.
fn rank(changes: &mut Vec<Change>, size: usize) {
    changes.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| b.count.cmp(&a.count))
            .then_with(|| a.value.cmp(&b.value))
    });
    changes.truncate(size);
}

/// How many times more matches a typical pattern has in the window than in the baseline: the
/// median ratio of the patterns met in both (at least [`SCALE_MIN_COUNT`] times in all), so
/// that a few patterns that changed (an incident's) do not move it, and a range that simply
/// has more traffic does not make everything "rose". With fewer than three such patterns, the
/// ratio of all matches; without matches, of the ranges' lengths.
fn volume_scale(pairs: impl Iterator<Item = (u64, u64)>, n_w: u64, n_b: u64, lengths: f64) -> f64 {
    let mut ratios: Vec<f64> = pairs
        .filter(|&(a, b)| a > 0 && b > 0 && a + b >= SCALE_MIN_COUNT)
        .map(|(a, b)| a as f64 / b as f64)
        .collect();
    if ratios.len() >= 3 {
        ratios.sort_by(f64::total_cmp);
        let mid = ratios.len() / 2;
        return if ratios.len() % 2 == 1 {
            ratios[mid]
        } else {
            (ratios[mid - 1] + ratios[mid]) / 2.0
        };
    }
    if n_w > 0 && n_b > 0 {
        n_w as f64 / n_b as f64
    } else {
        lengths
    }
}

/// Patterns met fewer times than this in both ranges together say little about the volume.
const SCALE_MIN_COUNT: u64 = 5;

/// The change of something met `a` times among `n_w` matches of the window and `b` times
/// among `n_b` of the baseline, when a typical pattern has `scale` times more in the window.
fn change(a: u64, n_w: u64, b: u64, n_b: u64, scale: f64) -> Change {
    let share = |x: u64, n: u64| if n == 0 { 0.0 } else { x as f64 / n as f64 };
    // Under "nothing changed" a record of it is in the window with this probability.
    let p = scale / (1.0 + scale);
    let expected = (a + b) as f64 * p;
    let kind = match (a, b) {
        (_, 0) => "new",
        (0, _) => "gone",
        _ if a as f64 >= expected => "rose",
        _ => "fell",
    };
    Change {
        kind,
        id: None,
        value: None,
        count: a,
        baseline_count: b,
        share: share(a, n_w),
        baseline_share: share(b, n_b),
        ratio: (a as f64 + 0.5) / (b as f64 + 0.5) / scale,
        score: g_squared(a, b, p),
    }
}

/// G² of `a` of `a + b` records in the window where `p` of them were expected there:
/// 2 Σ O ln(O / E) over the window's and the baseline's counts.
fn g_squared(a: u64, b: u64, p: f64) -> f64 {
    let n = (a + b) as f64;
    if n == 0.0 || !(p > 0.0 && p < 1.0) {
        return 0.0;
    }
    let term = |o: f64, e: f64| if o > 0.0 { o * (o / e).ln() } else { 0.0 };
    // Rounding can leave -1e-12 for an unchanged count.
    (2.0 * (term(a as f64, n * p) + term(b as f64, n * (1.0 - p)))).max(0.0)
}

/// The record of block segment `segment` with key `key`, read again (an example kept by key
/// while counting rather than copied each time a newer one came).
fn block_hit(
    segment: &logsift_store::blocks::BlockSegment,
    key: SortKey,
) -> Result<Option<crate::blocks::BlockHit>, QueryError> {
    let mut block = logsift_store::blocks::DecodedBlock::default();
    for (ord, b) in segment.blocks.iter().enumerate() {
        let holds = (b.first_id..=b.last_id).contains(&key.id)
            && (b.ts_min..=b.ts_max).contains(&key.timestamp);
        if !holds {
            continue;
        }
        // Blocks of streams that interleave cover each other's id and time ranges: the
        // header says whether the record is here, and only its block's lines are read (reading
        // every candidate whole was nine tenths of a pattern list's time).
        segment.read_header(ord, &mut block)?;
        if let Some(i) = block.records.iter().position(|r| r.id == key.id) {
            segment.read_lines(ord, &mut block)?;
            return Ok(Some(crate::blocks::BlockHit::of(&block, &block.records[i])));
        }
    }
    Ok(None)
}

/// The template of `id`: this server's current one, else the one a segment's summary kept.
fn template(store: &Store, parts: &[Part], id: u32) -> Option<String> {
    if let Some(t) = store.patterns().template(id) {
        return Some(t.to_string());
    }
    parts.iter().find_map(|p| {
        let counts = p.summary.as_ref()?.patterns.as_ref()?;
        let i = counts.binary_search_by_key(&id, |c| c.id).ok()?;
        counts[i].template.clone()
    })
}

/// Where counted records go: only `[start, end)`; `buckets` buckets of `interval` ns from
/// `origin` (none when 0).
#[derive(Debug, Clone, Copy)]
struct Frame {
    start: i64,
    end: i64,
    origin: i64,
    interval: i64,
    buckets: usize,
}

#[derive(Debug, Clone)]
struct Stat {
    count: u64,
    first: i64,
    last: i64,
    /// Per bucket, empty until the first count (most patterns meet few segments); saturating.
    buckets: Vec<u32>,
    /// The newest record: its key, part (in the request's parts) and address there.
    newest: Option<(SortKey, usize, Example)>,
}

/// Where an example record is in its part.
#[derive(Debug, Clone, Copy)]
enum Example {
    Doc(DocAddress),
    /// In a block segment: found again by its key (its id is unique).
    Block,
}

/// Matches by pattern id (0: stored without one). Fx-hashed: a count visits every matching
/// record, and SipHash was a tenth of counting a whole corpus.
#[derive(Debug, Default)]
struct Acc {
    by: rustc_hash::FxHashMap<u32, Stat>,
    total: u64,
}

impl Acc {
    fn count(&mut self, frame: &Frame, pattern: u32, ts: i64, newest: Option<(SortKey, Example)>) {
        self.total += 1;
        let s = self.by.entry(pattern).or_insert(Stat {
            count: 0,
            first: ts,
            last: ts,
            buckets: Vec::new(),
            newest: None,
        });
        s.count += 1;
        s.first = s.first.min(ts);
        s.last = s.last.max(ts);
        if frame.buckets > 0 {
            if s.buckets.is_empty() {
                s.buckets.resize(frame.buckets, 0);
            }
            let bucket = ts.saturating_sub(frame.origin).div_euclid(frame.interval);
            if let Some(slot) = usize::try_from(bucket)
                .ok()
                .and_then(|b| s.buckets.get_mut(b))
            {
                *slot = slot.saturating_add(1);
            }
        }
        if let Some((key, addr)) = newest {
            if s.newest.is_none_or(|(k, _, _)| key > k) {
                s.newest = Some((key, 0, addr));
            }
        }
    }

    /// Adds `other`, whose examples are in part `part`.
    fn absorb(&mut self, other: Acc, part: usize) {
        self.total += other.total;
        for (id, mut o) in other.by {
            if let Some(n) = o.newest.as_mut() {
                n.1 = part;
            }
            match self.by.get_mut(&id) {
                None => {
                    self.by.insert(id, o);
                }
                Some(s) => {
                    s.count += o.count;
                    s.first = s.first.min(o.first);
                    s.last = s.last.max(o.last);
                    if s.buckets.is_empty() {
                        s.buckets = o.buckets;
                    } else {
                        for (a, b) in s.buckets.iter_mut().zip(o.buckets) {
                            *a = a.saturating_add(b);
                        }
                    }
                    if o.newest
                        .is_some_and(|(k, _, _)| s.newest.is_none_or(|(sk, _, _)| k > sk))
                    {
                        s.newest = o.newest;
                    }
                }
            }
        }
    }

    /// A part's counts in `frame` from its summary, when the summary has what they need:
    /// `inside` (every record of the part lies in the frame) or frame edges on whole pattern
    /// buckets of the summary; bucket counts when the frame's interval is a whole number of
    /// them; and, for `examples`, each pattern's newest record (only whole parts: the newest
    /// in a cut range is not known).
    fn of_summary(
        summary: &SegmentSummary,
        frame: &Frame,
        inside: bool,
        examples: bool,
    ) -> Option<Acc> {
        let counts = summary.patterns.as_ref()?;
        if examples && !inside {
            return None;
        }
        let bucket_ms = summary.pattern_bucket_ms;
        if frame.buckets > 0 || !inside {
            let size = bucket_ms?.saturating_mul(NS_PER_MS);
            // The frame's origin is a multiple of its interval, so whole-bucket intervals
            // start on bucket edges too.
            if size <= 0
                || (frame.buckets > 0 && frame.interval % size != 0)
                || (!inside && (frame.start % size != 0 || frame.end % size != 0))
            {
                return None;
            }
        }
        let total = if inside {
            summary.docs
        } else {
            summary
                .minutes
                .iter()
                .filter(|(m, _)| *m >= frame.start && *m < frame.end)
                .map(|(_, by)| by.iter().sum::<u64>())
                .sum()
        };
        let mut acc = Acc {
            by: rustc_hash::FxHashMap::with_capacity_and_hasher(
                counts.len() + 1,
                Default::default(),
            ),
            total,
        };
        let mut with = 0;
        for c in counts {
            let newest = if examples {
                Some((
                    SortKey {
                        timestamp: c.last,
                        id: c.last_id?,
                    },
                    0,
                    Example::Block,
                ))
            } else {
                None
            };
            let mut stat = Stat {
                count: c.count,
                first: c.first,
                last: c.last,
                buckets: Vec::new(),
                newest,
            };
            if let Some(ms) = bucket_ms.filter(|_| frame.buckets > 0 || !inside) {
                let size = ms * NS_PER_MS;
                let mut n = 0;
                let (mut first, mut last) = (i64::MAX, i64::MIN);
                for (at, records) in c.bucket_counts(ms) {
                    if !inside && (at < frame.start || at >= frame.end) {
                        continue;
                    }
                    n += records;
                    first = first.min(at);
                    last = last.max(at.saturating_add(size - 1));
                    if frame.buckets > 0 {
                        if stat.buckets.is_empty() {
                            stat.buckets.resize(frame.buckets, 0);
                        }
                        let bucket = at.saturating_sub(frame.origin).div_euclid(frame.interval);
                        if let Some(slot) = usize::try_from(bucket)
                            .ok()
                            .and_then(|b| stat.buckets.get_mut(b))
                        {
                            *slot = slot.saturating_add(u32::try_from(records).unwrap_or(u32::MAX));
                        }
                    }
                }
                if n == 0 {
                    continue;
                }
                stat.count = n;
                stat.first = stat.first.max(first);
                stat.last = stat.last.min(last);
            }
            with += stat.count;
            acc.by.insert(c.id, stat);
        }
        if acc.total > with {
            let (lo, hi) = summary
                .minutes
                .first()
                .zip(summary.minutes.last())
                .map_or((0, 0), |(a, b)| (a.0, b.0));
            acc.by.insert(
                0,
                Stat {
                    count: acc.total - with,
                    first: lo.max(if inside { lo } else { frame.start }),
                    last: hi.min(if inside { hi } else { frame.end - 1 }),
                    buckets: Vec::new(),
                    newest: None,
                },
            );
        }
        Some(acc)
    }
}

struct Counted {
    acc: Acc,
    coverage: Coverage,
    parts: Vec<Part>,
}

/// Counts the matches of `ast` in `frame` by pattern over `parts`.
fn count(
    store: &Store,
    handles: &[std::sync::Arc<logsift_store::IndexHandle>],
    ast: &Ast,
    mut parts: Vec<Part>,
    frame: Frame,
    examples: bool,
    budget: &Budget,
) -> Result<Counted, QueryError> {
    parts.retain(|p| p.max_ts >= frame.start && p.min_ts < frame.end);
    let ((query_start, query_end), _) = range_split(ast, Some(frame.start), Some(frame.end));
    let queries = Compiled::new(store, handles, ast, query_start, query_end)?;
    let collector = PatternCollector { frame, examples };
    let match_all = *ast == Ast::All;
    let (acc, done) = parts::run(
        &parts,
        budget,
        Acc::default(),
        |part, budget| {
            if let Some(summary) = part.summary_of_all(match_all) {
                let inside = part.inside(Some(frame.start), Some(frame.end));
                let blocks = matches!(part.reader, PartReader::Blocks(_));
                if let Some(acc) = Acc::of_summary(summary, &frame, inside, examples && blocks)
                    .filter(|_| blocks || !examples)
                {
                    return Ok(acc);
                }
            }
            match &part.reader {
                PartReader::Records(searcher) => {
                    let query = budget.wrap(queries.get(part.handle).box_clone());
                    searcher
                        .search(&*query, &collector)
                        .map_err(search_error(&handles[part.handle]))
                }
                PartReader::Blocks(blocks) => {
                    let parse = store.parse_options(handles[part.handle].name().as_str(), 0);
                    let mut query =
                        BlockQuery::new(blocks, ast, &parse, Some(frame.start), Some(frame.end))?
                            .with_patterns(store.patterns(), ast)?;
                    let mut acc = Acc::default();
                    query.scan(budget, Need::Header, |_, r, _| {
                        if r.timestamp >= frame.start && r.timestamp < frame.end {
                            let key = SortKey {
                                timestamp: r.timestamp,
                                id: r.id,
                            };
                            let example = examples.then_some((key, Example::Block));
                            acc.count(&frame, r.pattern, r.timestamp, example);
                        }
                    })?;
                    Ok(acc)
                }
            }
        },
        |into, i, acc| into.absorb(acc, i),
    )?;
    let coverage = Coverage::of(
        &parts,
        &done,
        SortOrder::Desc,
        Some(frame.start),
        Some(frame.end),
    );
    if coverage == Coverage::Nothing {
        return Err(QueryError::Timeout);
    }
    Ok(Counted {
        acc,
        coverage,
        parts,
    })
}

struct PatternCollector {
    frame: Frame,
    examples: bool,
}

struct PatternSegment {
    ord: SegmentOrdinal,
    timestamps: Column<i64>,
    ids: Column<u64>,
    /// `None` in segments written before patterns were mined.
    patterns: Option<Column<u64>>,
    frame: Frame,
    examples: bool,
    acc: Acc,
}

impl Collector for PatternCollector {
    type Fruit = Acc;
    type Child = PatternSegment;

    fn for_segment(
        &self,
        ord: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<PatternSegment> {
        let fast = reader.fast_fields();
        let patterns = if reader.schema().get_field(PATTERN_FIELD).is_ok() {
            Some(fast.u64(PATTERN_FIELD)?)
        } else {
            None
        };
        Ok(PatternSegment {
            ord,
            timestamps: fast.i64("timestamp")?,
            ids: fast.u64("id")?,
            patterns,
            frame: self.frame,
            examples: self.examples,
            acc: Acc::default(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Acc>) -> tantivy::Result<Acc> {
        let mut merged = Acc::default();
        for f in fruits {
            merged.absorb(f, 0);
        }
        Ok(merged)
    }
}

impl SegmentCollector for PatternSegment {
    type Fruit = Acc;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let Some(ts) = self
            .timestamps
            .first(doc)
            .filter(|t| *t >= self.frame.start && *t < self.frame.end)
        else {
            return;
        };
        let pattern = self
            .patterns
            .as_ref()
            .and_then(|c| c.first(doc))
            .map_or(0, |p| p as u32);
        let newest = self.examples.then(|| {
            let key = SortKey {
                timestamp: ts,
                id: self.ids.first(doc).unwrap_or(0),
            };
            (key, Example::Doc(DocAddress::new(self.ord, doc)))
        });
        self.acc.count(&self.frame, pattern, ts, newest);
    }

    fn harvest(self) -> Acc {
        self.acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g_squared_is_zero_when_as_expected_and_grows_with_the_change() {
        assert!(g_squared(10, 10, 0.5).abs() < 1e-9);
        assert!(g_squared(20, 10, 2.0 / 3.0).abs() < 1e-9);
        let small = g_squared(12, 10, 0.5);
        let large = g_squared(40, 10, 0.5);
        assert!(small > 0.0 && large > small, "{small} {large}");
        // A new pattern of 50 against none is far past chance, and a gone one as much.
        assert!(g_squared(50, 0, 0.5) > 50.0);
        assert!((g_squared(0, 50, 0.5) - g_squared(50, 0, 0.5)).abs() < 1e-9);
        assert_eq!(g_squared(0, 0, 0.5), 0.0);
    }

    #[test]
    fn changes_are_named_by_direction_against_the_volume() {
        assert_eq!(change(5, 100, 0, 100, 1.0).kind, "new");
        assert_eq!(change(0, 100, 5, 100, 1.0).kind, "gone");
        assert_eq!(change(20, 100, 5, 100, 1.0).kind, "rose");
        assert_eq!(change(5, 100, 20, 100, 1.0).kind, "fell");
        // Twice the traffic: twice the lines is no change.
        let c = change(40, 200, 20, 100, 2.0);
        assert!(c.score < 1e-9, "{}", c.score);
        assert!((c.share - 0.2).abs() < 1e-9 && (c.baseline_share - 0.2).abs() < 1e-9);
        assert!(c.ratio > 0.95 && c.ratio < 1.05, "{}", c.ratio);
    }

    #[test]
    fn the_volume_scale_is_not_moved_by_the_few_patterns_that_changed() {
        // Three steady patterns and an incident's new one with many lines.
        let pairs = [(100, 100), (52, 50), (30, 31), (400, 0), (9, 1)];
        let s = volume_scale(pairs.into_iter(), 591, 182, 1.0);
        assert!((s - 1.02).abs() < 0.01, "{s}");
        // Busier everywhere: the scale follows.
        let s = volume_scale([(200, 100), (100, 50), (60, 31)].into_iter(), 360, 181, 1.0);
        assert!((s - 2.0).abs() < 0.01, "{s}");
        // Too few patterns in both: the totals decide, then the lengths.
        assert!((volume_scale([(10, 0)].into_iter(), 30, 10, 1.0) - 3.0).abs() < 1e-9);
        assert!((volume_scale(std::iter::empty(), 0, 0, 0.5) - 0.5).abs() < 1e-9);
    }
}
