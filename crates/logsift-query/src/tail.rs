//! Following new records: each poll returns the matches with an id above what the client has
//! seen, per index, oldest id first. Ids are WAL LSNs, so "above" means "received later", and
//! a record becomes visible here once its index commits (within `index.commit_interval_ms`).
//!
//! The client pulls at its own pace, so a slow client costs nothing to ingest; a poll returns
//! at most `limit` records and the next poll continues from the last one returned.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::ops::Bound;

use logsift_store::{PartReader, Store};
use serde_json::Value;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery};
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader, Term};

use crate::blocks::{BlockHit, BlockQuery};
use crate::lang::Ast;
use crate::parts::{hit_of, HitAt};
use crate::{compile, resolve_indexes, search_error, Budget, QueryError};

/// Where a tail is: the highest id delivered (or present at the start) per index.
#[derive(Debug, Clone, Default)]
pub struct TailCursor {
    after: BTreeMap<String, u64>,
}

impl TailCursor {
    /// Starts after everything already committed in `indexes` (empty: every index but the
    /// built-in ones), so that only new records are delivered.
    pub fn now(store: &Store, indexes: &[String]) -> Result<TailCursor, QueryError> {
        let after = resolve_indexes(store, indexes)?
            .iter()
            .map(|h| (h.name().to_string(), h.committed_lsn()))
            .collect();
        Ok(TailCursor { after })
    }
}

/// The next at most `limit` new matches of `ast` in `indexes`, in id order, advancing `cursor`.
pub fn poll(
    store: &Store,
    ast: &Ast,
    indexes: &[String],
    cursor: &mut TailCursor,
    limit: usize,
    budget: &Budget,
) -> Result<Vec<Value>, QueryError> {
    let schema = store.schema();
    let mut found: Vec<(u64, i64, usize, HitAt)> = Vec::new();
    let handles = resolve_indexes(store, indexes)?;
    let mut readers = Vec::with_capacity(handles.len());
    for (pos, handle) in handles.iter().enumerate() {
        budget.check()?;
        // An index created after the tail started: everything in it is new.
        let after = cursor
            .after
            .get(handle.name().as_str())
            .copied()
            .unwrap_or(0);
        let matches = budget.wrap(compile(store, handle, ast, None, None)?);
        let newer: Box<dyn Query> = Box::new(RangeQuery::new(
            Bound::Excluded(Term::from_field_u64(schema.id, after)),
            Bound::Unbounded,
        ));
        let query = BooleanQuery::new(vec![(Occur::Must, matches), (Occur::Must, newer)]);
        // New records land in the hot index, but a seal may have moved some into a segment
        // since the last poll: look in every part (the id range keeps this cheap).
        for (reader, _) in handle.parts(None, None) {
            let at = readers.len();
            match &reader {
                PartReader::Records(searcher) => {
                    let top = searcher
                        .search(&query, &LowestIds { limit })
                        .map_err(search_error(handle))?;
                    found.extend(
                        top.into_iter()
                            .map(|(id, ts, addr)| (id, ts, at, HitAt::Doc(addr))),
                    );
                }
                PartReader::Blocks(blocks) => {
                    let parse = store.parse_options(handle.name().as_str(), 0);
                    let top = lowest_ids_in_blocks(blocks, ast, &parse, after, limit)?;
                    found.extend(
                        top.into_iter()
                            .map(|h| (h.id, h.timestamp, at, HitAt::Line(Box::new(h)))),
                    );
                }
            }
            budget.check()?;
            readers.push((pos, reader));
        }
    }
    found.sort_unstable_by_key(|f| f.0);
    found.truncate(limit);
    let mut hits = Vec::with_capacity(found.len());
    for (id, ts, at, addr) in found {
        let (pos, reader) = &readers[at];
        let handle = &handles[*pos];
        let key = crate::collector::SortKey { timestamp: ts, id };
        hits.push(hit_of(store, handle.name().as_str(), reader, key, &addr)?);
        let seen = cursor.after.entry(handle.name().to_string()).or_insert(0);
        *seen = (*seen).max(id);
    }
    Ok(hits)
}

/// The `limit` matches of `ast` in a block segment with the lowest ids above `after`.
fn lowest_ids_in_blocks(
    blocks: &logsift_store::blocks::BlockSegment,
    ast: &Ast,
    parse: &logsift_parse::ParseOptions,
    after: u64,
    limit: usize,
) -> Result<Vec<BlockHit>, QueryError> {
    let mut query = BlockQuery::new(blocks, ast, parse, None, None)?;
    let mut order: Vec<usize> = query.candidates();
    order.retain(|&o| blocks.blocks[o].last_id > after);
    order.sort_by_key(|&o| blocks.blocks[o].first_id);
    // Max-heap on id: the top is the one to evict.
    let mut heap: BinaryHeap<(u64, usize)> = BinaryHeap::new();
    let mut kept: Vec<BlockHit> = Vec::new();
    for ord in order {
        let full = limit == 0
            || (heap.len() >= limit
                && heap
                    .peek()
                    .is_some_and(|(id, _)| blocks.blocks[ord].first_id > *id));
        if full {
            break;
        }
        query.matches_in(ord, crate::blocks::Need::Lines, |block, r, _| {
            if r.id <= after {
                return;
            }
            let hit = || BlockHit::of(block, r);
            if heap.len() < limit {
                heap.push((r.id, kept.len()));
                kept.push(hit());
            } else if let Some(mut top) = heap.peek_mut() {
                if r.id < top.0 {
                    kept[top.1] = hit();
                    top.0 = r.id;
                }
            }
        })?;
    }
    // Every slot of `kept` is in the heap: a replaced hit reuses its slot.
    Ok(kept)
}

/// Keeps the `limit` matches with the lowest ids.
struct LowestIds {
    limit: usize,
}

type IdFruit = Vec<(u64, i64, DocAddress)>;

struct LowestIdsSegment {
    segment: SegmentOrdinal,
    ids: Column<u64>,
    timestamps: Column<i64>,
    limit: usize,
    /// Max-heap on id: the top is the one to evict.
    heap: BinaryHeap<(u64, Reverse<DocId>)>,
}

impl Collector for LowestIds {
    type Fruit = IdFruit;
    type Child = LowestIdsSegment;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<LowestIdsSegment> {
        let fast = reader.fast_fields();
        Ok(LowestIdsSegment {
            segment,
            ids: fast.u64("id")?,
            timestamps: fast.i64("timestamp")?,
            limit: self.limit,
            heap: BinaryHeap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<IdFruit>) -> tantivy::Result<IdFruit> {
        let mut all: IdFruit = fruits.into_iter().flatten().collect();
        all.sort_unstable_by_key(|f| f.0);
        all.truncate(self.limit);
        Ok(all)
    }
}

impl SegmentCollector for LowestIdsSegment {
    type Fruit = IdFruit;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if self.limit == 0 {
            return;
        }
        let id = self.ids.first(doc).unwrap_or(0);
        if self.heap.len() < self.limit {
            self.heap.push((id, Reverse(doc)));
        } else if let Some(mut top) = self.heap.peek_mut() {
            if id < top.0 {
                *top = (id, Reverse(doc));
            }
        }
    }

    fn harvest(self) -> IdFruit {
        let segment = self.segment;
        let timestamps = self.timestamps;
        self.heap
            .into_iter()
            .map(|(id, Reverse(doc))| {
                (
                    id,
                    timestamps.first(doc).unwrap_or(0),
                    DocAddress::new(segment, doc),
                )
            })
            .collect()
    }
}
