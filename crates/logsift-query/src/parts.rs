//! The parts a query runs over and how they are searched: every tantivy searcher of every
//! requested index (hot, sealing and sealed segments) whose records may fall in the time range,
//! searched in parallel on rayon, in time order, under one [`Budget`].
//!
//! Parts start in the order of the answer (newest data first for `desc`), a fixed number at a
//! time. When the budget runs out, the parts that finished still count and the rest are left
//! out; [`Coverage`] then names the time range that every finished part covers completely,
//! which is a contiguous range at the end the answer starts from, so that a cursor can carry
//! on from its edge.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use logsift_core::time::format_rfc3339;
use logsift_store::{IndexHandle, PartReader};
use serde::Serialize;

use crate::{search_error, Budget, QueryError, SortOrder};

/// One part of an index (a record index or a block segment) and the time range of the
/// records in it.
pub(crate) struct Part {
    /// Position of its index in the request's handles.
    pub handle: usize,
    pub reader: PartReader,
    /// Smallest and largest timestamps of its documents, ns.
    pub min_ts: i64,
    pub max_ts: i64,
    /// The sealed segment's summary, for aggregations that need no record.
    pub summary: Option<Arc<logsift_store::SegmentSummary>>,
    /// The sealed segment's id; `None` for what is in memory.
    pub segment: Option<String>,
}

impl Part {
    /// The part's summary when it may stand in for its records: a match-everything query
    /// whose range (`None`: open) holds every record of the part, and a summary that counts
    /// as many records as the part holds.
    pub(crate) fn whole_summary(
        &self,
        match_all: bool,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Option<&logsift_store::SegmentSummary> {
        let summary = self.summary.as_deref()?;
        (match_all && self.inside(start, end) && summary.docs == self.reader.num_docs())
            .then_some(summary)
    }

    /// The part's summary when a match-everything query may take counts from it: one that
    /// counts as many records as the part holds (none erased since).
    pub(crate) fn summary_of_all(&self, match_all: bool) -> Option<&logsift_store::SegmentSummary> {
        let summary = self.summary.as_deref()?;
        (match_all && summary.docs == self.reader.num_docs()).then_some(summary)
    }

    /// Whether every record of the part lies in `[start, end)` (`None`: open).
    pub(crate) fn inside(&self, start: Option<i64>, end: Option<i64>) -> bool {
        start.is_none_or(|s| self.min_ts >= s) && end.is_none_or(|e| self.max_ts < e)
    }

    /// The hit (as the API shapes it) of the record at `at` in this part.
    pub(crate) fn hit(
        &self,
        store: &logsift_store::Store,
        handles: &[Arc<IndexHandle>],
        key: crate::collector::SortKey,
        at: &HitAt,
    ) -> Result<serde_json::Value, QueryError> {
        let index = handles[self.handle].name().as_str();
        hit_of(store, index, &self.reader, key, at)
    }
}

/// A part's page of matches: its totals and its best hits.
#[derive(Default)]
pub(crate) struct PartPage {
    pub total: u64,
    pub after_cursor: u64,
    pub top: Vec<(crate::collector::SortKey, HitAt)>,
}

impl From<crate::collector::Fruit> for PartPage {
    fn from(f: crate::collector::Fruit) -> Self {
        PartPage {
            total: f.total,
            after_cursor: f.after_cursor,
            top: f.top.into_iter().map(|(k, a)| (k, HitAt::Doc(a))).collect(),
        }
    }
}

/// A page of `ast`'s matches in block segment `blocks` of `handle`'s index.
pub(crate) fn blocks_page(
    store: &logsift_store::Store,
    handle: &IndexHandle,
    blocks: &logsift_store::blocks::BlockSegment,
    ast: &crate::lang::Ast,
    page: &crate::blocks::Page,
) -> Result<PartPage, QueryError> {
    let parse = store.parse_options(handle.name().as_str(), 0);
    let page = crate::blocks::Page {
        patterns: Some(store.patterns().clone()),
        ..page.clone()
    };
    let found = crate::blocks::search(blocks, ast, &parse, &page)?;
    Ok(PartPage {
        total: found.total,
        after_cursor: found.after_cursor,
        top: found
            .hits
            .into_iter()
            .map(|h| {
                let key = crate::collector::SortKey {
                    timestamp: h.timestamp,
                    id: h.id,
                };
                (key, HitAt::Line(Box::new(h)))
            })
            .collect(),
    })
}

/// Where a hit's record is: a document of a record index, or the line a block search kept.
pub(crate) enum HitAt {
    Doc(tantivy::DocAddress),
    Line(Box<crate::blocks::BlockHit>),
}

/// The hit (as the API shapes it) of the record at `at` of `reader`, in `index`.
pub(crate) fn hit_of(
    store: &logsift_store::Store,
    index: &str,
    reader: &PartReader,
    key: crate::collector::SortKey,
    at: &HitAt,
) -> Result<serde_json::Value, QueryError> {
    match (at, reader) {
        (HitAt::Doc(addr), PartReader::Records(searcher)) => {
            let doc: tantivy::TantivyDocument =
                searcher.doc(*addr).map_err(|source| QueryError::Search {
                    index: index.to_string(),
                    source,
                })?;
            let mut stored = logsift_store::Stored::of(store.schema(), &doc);
            // Segments written before patterns were mined have no column: no pattern.
            stored.pattern = searcher
                .segment_reader(addr.segment_ord)
                .fast_fields()
                .u64(logsift_store::PATTERN_FIELD)
                .ok()
                .and_then(|c| c.first(addr.doc_id))
                .map_or(0, |p| p as u32);
            Ok(store.hit_json_of(index, key.id, key.timestamp, &stored))
        }
        (HitAt::Line(line), _) => Ok(store.hit_json_of(
            index,
            key.id,
            key.timestamp,
            &logsift_store::Stored {
                raw: &line.raw,
                received_at: Some(line.received_at),
                source: &line.source,
                format: line.format,
                pattern: line.pattern,
            },
        )),
        (HitAt::Doc(_), PartReader::Blocks(_)) => Err(QueryError::BadRequest(
            "a document address for a block segment".into(),
        )),
    }
}

/// The parts of `handles` that may hold records in `[start, end)`, in the order `order`
/// reads them: newest data first for `Desc`, oldest first for `Asc`. Empty parts are left out.
pub(crate) fn collect(
    handles: &[Arc<IndexHandle>],
    start: Option<i64>,
    end: Option<i64>,
    order: SortOrder,
) -> Result<Vec<Part>, QueryError> {
    let mut parts = Vec::new();
    for (pos, handle) in handles.iter().enumerate() {
        for (reader, summary, segment) in handle.parts_named(start, end) {
            let mut range: Option<(i64, i64)> = None;
            let mut widen = |lo: i64, hi: i64| {
                range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            };
            match &reader {
                PartReader::Records(searcher) => {
                    for segment in searcher.segment_readers() {
                        if segment.num_docs() == 0 {
                            continue;
                        }
                        // Column bounds come from its header: no documents are read.
                        let col = segment
                            .fast_fields()
                            .i64("timestamp")
                            .map_err(search_error(handle))?;
                        widen(col.min_value(), col.max_value());
                    }
                }
                PartReader::Blocks(blocks) => {
                    if let Some((lo, hi)) = blocks.time_range {
                        widen(lo, hi);
                    }
                }
            }
            let Some((min_ts, max_ts)) = range else {
                continue;
            };
            // The store prunes sealed segments by their catalog range; this also prunes the
            // hot and sealing parts.
            if start.is_some_and(|s| max_ts < s) || end.is_some_and(|e| min_ts >= e) {
                continue;
            }
            parts.push(Part {
                handle: pos,
                reader,
                min_ts,
                max_ts,
                summary,
                segment,
            });
        }
    }
    match order {
        SortOrder::Desc => parts.sort_by_key(|p| std::cmp::Reverse((p.max_ts, p.min_ts))),
        SortOrder::Asc => parts.sort_by_key(|p| (p.min_ts, p.max_ts)),
    }
    Ok(parts)
}

/// Searches `parts` in parallel with `search` and folds each complete result into `acc` with
/// `merge`, which gets the part's position. A part whose search the budget cut short is left
/// out (its counts would be short); so are parts not started when the budget ran out. Returns
/// the accumulator and which parts finished.
///
/// Memory is what `acc` holds plus one part's result per thread: `merge` should keep `acc`
/// bounded (top-k, capped maps).
pub(crate) fn run<T, A>(
    parts: &[Part],
    budget: &Budget,
    acc: A,
    search: impl Fn(&Part, &Budget) -> Result<T, QueryError> + Sync,
    merge: impl Fn(&mut A, usize, T) + Sync,
) -> Result<(A, Vec<bool>), QueryError>
where
    T: Send,
    A: Send,
{
    let state = Mutex::new((acc, vec![false; parts.len()]));
    let failure: Mutex<Option<QueryError>> = Mutex::new(None);
    let failed = AtomicBool::new(false);
    // Parts are handed out in order from this counter rather than split up front (as
    // `par_iter` would), so that the finished ones are the first in time order.
    let next = AtomicUsize::new(0);
    let worker = || loop {
        if failed.load(Ordering::Relaxed) || budget.expired() {
            return;
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(part) = parts.get(i) else {
            return;
        };
        let part_budget = budget.for_part();
        match search(part, &part_budget) {
            Ok(_) if part_budget.was_cut() => {}
            Ok(fruit) => {
                let mut guard = state.lock();
                let (acc, done) = &mut *guard;
                merge(acc, i, fruit);
                done[i] = true;
            }
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                failure.lock().get_or_insert(e);
                return;
            }
        }
    };
    let threads = rayon::current_num_threads().min(parts.len());
    if threads <= 1 {
        worker();
    } else {
        rayon::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|_| worker());
            }
        });
    }
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    if budget.cancelled() {
        return Err(QueryError::Cancelled);
    }
    Ok(state.into_inner())
}

/// What an answer covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// Every part was searched.
    Complete,
    /// Every record in `[start, end)` (ns) was searched; records outside it may be missing.
    Partial { start: i64, end: i64 },
    /// No time range was searched completely: there is nothing to answer.
    Nothing,
}

/// The range of a partial answer, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Covered {
    /// RFC 3339, inclusive.
    pub start: String,
    /// RFC 3339, exclusive.
    pub end: String,
}

impl Covered {
    pub(crate) fn new(start: i64, end: i64) -> Covered {
        Covered {
            start: format_rfc3339(start),
            end: format_rfc3339(end),
        }
    }
}

impl Coverage {
    /// The contiguous range at the `order` end of `[start, end)` that no unfinished part
    /// overlaps. Without `start` or `end`, the data's own bounds stand in.
    pub(crate) fn of(
        parts: &[Part],
        done: &[bool],
        order: SortOrder,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Coverage {
        if done.iter().all(|d| *d) {
            return Coverage::Complete;
        }
        if !done.iter().any(|d| *d) {
            return Coverage::Nothing;
        }
        let lo = start.unwrap_or_else(|| parts.iter().map(|p| p.min_ts).min().unwrap_or(0));
        let hi = end.unwrap_or_else(|| {
            parts
                .iter()
                .map(|p| p.max_ts.saturating_add(1))
                .max()
                .unwrap_or(0)
        });
        let missed = parts.iter().zip(done).filter(|(_, d)| !**d).map(|(p, _)| p);
        let (from, to) = match order {
            SortOrder::Desc => {
                let edge = missed.map(|p| p.max_ts.saturating_add(1)).max();
                (edge.map_or(lo, |e| e.max(lo)), hi)
            }
            SortOrder::Asc => {
                let edge = missed.map(|p| p.min_ts).min();
                (lo, edge.map_or(hi, |e| e.min(hi)))
            }
        };
        if from >= to {
            Coverage::Nothing
        } else {
            Coverage::Partial {
                start: from,
                end: to,
            }
        }
    }

    /// Whether a record at `ts` lies in what was covered.
    pub(crate) fn contains(&self, ts: i64) -> bool {
        match *self {
            Coverage::Complete => true,
            Coverage::Partial { start, end } => ts >= start && ts < end,
            Coverage::Nothing => false,
        }
    }

    pub(crate) fn covered(&self) -> Option<Covered> {
        match *self {
            Coverage::Partial { start, end } => Some(Covered::new(start, end)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(min_ts: i64, max_ts: i64) -> Part {
        let index = tantivy::Index::create_in_ram(tantivy::schema::Schema::builder().build());
        Part {
            handle: 0,
            reader: PartReader::Records(index.reader().unwrap().searcher()),
            min_ts,
            max_ts,
            summary: None,
            segment: None,
        }
    }

    #[test]
    fn coverage_is_the_edge_no_unfinished_part_reaches() {
        // Newest first: [90,100], [50,95], [10,60], [0,20].
        let parts = [part(90, 100), part(50, 95), part(10, 60), part(0, 20)];
        let desc =
            |done: &[bool], start, end| Coverage::of(&parts, done, SortOrder::Desc, start, end);
        assert_eq!(desc(&[true; 4], None, None), Coverage::Complete);
        assert_eq!(desc(&[false; 4], None, None), Coverage::Nothing);
        // The first two finished: everything above the third's newest record is covered.
        assert_eq!(
            desc(&[true, true, false, false], None, None),
            Coverage::Partial {
                start: 61,
                end: 101
            }
        );
        assert_eq!(
            desc(&[true, true, false, false], Some(5), Some(98)),
            Coverage::Partial { start: 61, end: 98 }
        );
        // Only the second finished: the first overlaps everything it holds.
        assert_eq!(
            desc(&[false, true, true, true], None, None),
            Coverage::Nothing
        );
        // Finished out of order: the gap decides.
        assert_eq!(
            desc(&[true, false, true, false], None, None),
            Coverage::Partial {
                start: 96,
                end: 101
            }
        );

        let asc_parts = [part(0, 20), part(10, 60), part(50, 95), part(90, 100)];
        assert_eq!(
            Coverage::of(
                &asc_parts,
                &[true, true, false, false],
                SortOrder::Asc,
                None,
                None
            ),
            Coverage::Partial { start: 0, end: 50 }
        );
        let c = Coverage::Partial {
            start: 61,
            end: 101,
        };
        assert!(c.contains(61) && c.contains(100) && !c.contains(60) && !c.contains(101));
    }
}
