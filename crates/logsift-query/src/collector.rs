use std::cmp::Ordering;
use std::collections::BinaryHeap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

use crate::SortOrder;

/// Hits are ordered by timestamp, ties broken by id, so that the order is total and a cursor
/// names an exact position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SortKey {
    pub timestamp: i64,
    pub id: u64,
}

pub(crate) fn sort_keys<T>(items: &mut [T], order: SortOrder, key: impl Fn(&T) -> SortKey) {
    match order {
        SortOrder::Desc => items.sort_unstable_by_key(|t| std::cmp::Reverse(key(t))),
        SortOrder::Asc => items.sort_unstable_by_key(|t| key(t)),
    }
}

/// Counts every match and keeps the first `limit` of them in `order` that come after `after`.
pub(crate) struct TopByTime {
    pub limit: usize,
    pub order: SortOrder,
    pub after: Option<SortKey>,
}

pub(crate) struct Fruit {
    pub total: u64,
    pub after_cursor: u64,
    pub top: Vec<(SortKey, DocAddress)>,
}

/// A heap entry ordered so that the heap's top is the worst hit kept, the one to evict.
struct Ranked {
    key: SortKey,
    doc: DocId,
    order: SortOrder,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        match self.order {
            // Newest first: the worst kept hit is the oldest, so it must compare greatest.
            SortOrder::Desc => other.key.cmp(&self.key),
            SortOrder::Asc => self.key.cmp(&other.key),
        }
    }
}

pub(crate) struct SegmentTop {
    segment: SegmentOrdinal,
    timestamps: Column<i64>,
    ids: Column<u64>,
    limit: usize,
    order: SortOrder,
    after: Option<SortKey>,
    total: u64,
    after_cursor: u64,
    heap: BinaryHeap<Ranked>,
}

impl Collector for TopByTime {
    type Fruit = Fruit;
    type Child = SegmentTop;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentTop> {
        let fast = reader.fast_fields();
        Ok(SegmentTop {
            segment,
            timestamps: fast.i64("timestamp")?,
            ids: fast.u64("id")?,
            limit: self.limit,
            order: self.order,
            after: self.after,
            total: 0,
            after_cursor: 0,
            heap: BinaryHeap::with_capacity(self.limit.min(1024) + 1),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Fruit>) -> tantivy::Result<Fruit> {
        let mut total = 0;
        let mut after_cursor = 0;
        let mut top = Vec::new();
        for f in fruits {
            total += f.total;
            after_cursor += f.after_cursor;
            top.extend(f.top);
        }
        sort_keys(&mut top, self.order, |t| t.0);
        top.truncate(self.limit);
        Ok(Fruit {
            total,
            after_cursor,
            top,
        })
    }
}

impl SegmentCollector for SegmentTop {
    type Fruit = Fruit;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.total += 1;
        let key = SortKey {
            timestamp: self.timestamps.first(doc).unwrap_or(0),
            id: self.ids.first(doc).unwrap_or(0),
        };
        if let Some(after) = self.after {
            let past = match self.order {
                SortOrder::Desc => key < after,
                SortOrder::Asc => key > after,
            };
            if !past {
                return;
            }
        }
        self.after_cursor += 1;
        if self.limit == 0 {
            return;
        }
        let ranked = Ranked {
            key,
            doc,
            order: self.order,
        };
        if self.heap.len() < self.limit {
            self.heap.push(ranked);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            // `worst` compares greatest; replace it when the new hit ranks better.
            if ranked < *worst {
                *worst = ranked;
            }
        }
    }

    fn harvest(self) -> Fruit {
        let segment = self.segment;
        let mut top: Vec<(SortKey, DocAddress)> = self
            .heap
            .into_iter()
            .map(|r| (r.key, DocAddress::new(segment, r.doc)))
            .collect();
        sort_keys(&mut top, self.order, |t| t.0);
        Fruit {
            total: self.total,
            after_cursor: self.after_cursor,
            top,
        }
    }
}
