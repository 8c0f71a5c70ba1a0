use std::cmp::Ordering;
use std::collections::BinaryHeap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::COLLECT_BLOCK_BUFFER_LEN;
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
///
/// With `start`/`end`, only matches timestamped in `[start, end)` count, so the query needs no
/// time filter of its own: tantivy's range filter scans a segment's whole timestamp column
/// when the range cuts through it, while this reads the timestamps of the matches only (which
/// the ranking reads anyway). A rare term in a narrow window then costs what its postings do.
pub(crate) struct TopByTime {
    pub limit: usize,
    pub order: SortOrder,
    pub after: Option<SortKey>,
    pub start: Option<i64>,
    pub end: Option<i64>,
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
    /// `[start, end)` when the segment holds timestamps outside it.
    bounds: Option<(i64, i64)>,
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
        let timestamps = fast.i64("timestamp")?;
        let (start, end) = (self.start.unwrap_or(i64::MIN), self.end.unwrap_or(i64::MAX));
        // Column bounds are a lower and an upper bound of the values: inside them, no record
        // needs checking.
        let inside =
            timestamps.min_value() >= start && (self.end.is_none() || timestamps.max_value() < end);
        Ok(SegmentTop {
            segment,
            timestamps,
            ids: fast.u64("id")?,
            limit: self.limit,
            order: self.order,
            after: self.after,
            bounds: (!inside).then_some((start, end)),
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

impl SegmentTop {
    fn in_bounds(&self, timestamp: i64) -> bool {
        self.bounds
            .is_none_or(|(start, end)| timestamp >= start && timestamp < end)
    }

    /// Counts `doc` past the cursor and keeps it if it ranks among the first `limit`. The id
    /// only breaks timestamp ties, so it is read only when the timestamp cannot decide.
    fn consider(&mut self, doc: DocId, timestamp: i64) {
        use Ordering::{Equal, Greater, Less};
        let mut id = None;
        if let Some(after) = self.after {
            let past = match (self.order, timestamp.cmp(&after.timestamp)) {
                (SortOrder::Desc, Less) | (SortOrder::Asc, Greater) => true,
                (_, Equal) => {
                    let key = SortKey {
                        timestamp,
                        id: *id.insert(self.ids.first(doc).unwrap_or(0)),
                    };
                    match self.order {
                        SortOrder::Desc => key < after,
                        SortOrder::Asc => key > after,
                    }
                }
                _ => false,
            };
            if !past {
                return;
            }
        }
        self.after_cursor += 1;
        if self.limit == 0 {
            return;
        }
        if self.heap.len() >= self.limit {
            if let Some(worst) = self.heap.peek() {
                let worse = matches!(
                    (self.order, timestamp.cmp(&worst.key.timestamp)),
                    (SortOrder::Desc, Less) | (SortOrder::Asc, Greater)
                );
                if worse {
                    return;
                }
            }
        }
        let key = SortKey {
            timestamp,
            id: id.unwrap_or_else(|| self.ids.first(doc).unwrap_or(0)),
        };
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
}

impl SegmentCollector for SegmentTop {
    type Fruit = Fruit;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let timestamp = self.timestamps.first(doc).unwrap_or(0);
        if self.in_bounds(timestamp) {
            self.total += 1;
            self.consider(doc, timestamp);
        }
    }

    /// Most matches of a common term rank below the hits kept: reading their timestamps a
    /// block at a time, and their ids only when the timestamp ties, is most of the cost saved.
    fn collect_block(&mut self, docs: &[DocId]) {
        if self.bounds.is_none() && self.limit == 0 && self.after.is_none() {
            // A count of every match: no timestamp needed.
            self.total += docs.len() as u64;
            self.after_cursor += docs.len() as u64;
            return;
        }
        for chunk in docs.chunks(COLLECT_BLOCK_BUFFER_LEN) {
            let mut block = [None; COLLECT_BLOCK_BUFFER_LEN];
            let block = &mut block[..chunk.len()];
            self.timestamps.first_vals(chunk, block);
            for (&doc, timestamp) in chunk.iter().zip(block.iter()) {
                let timestamp = timestamp.unwrap_or(0);
                if self.in_bounds(timestamp) {
                    self.total += 1;
                    self.consider(doc, timestamp);
                }
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

#[cfg(test)]
mod tests {
    use tantivy::query::{AllQuery, TermQuery};
    use tantivy::schema::{IndexRecordOption, Schema, FAST, STRING};
    use tantivy::{doc, Index, Term};

    use super::*;

    /// Every page of every order, with and without a cursor, against a sort of all matches:
    /// with few distinct timestamps most keys tie on time and the id decides.
    #[test]
    fn pages_match_a_full_sort_with_many_ties() {
        let mut b = Schema::builder();
        let ts = b.add_i64_field("timestamp", FAST);
        let id = b.add_u64_field("id", FAST);
        let word = b.add_text_field("word", STRING);
        let index = Index::create_in_ram(b.build());
        let mut writer = index.writer_with_num_threads(1, 15_000_000).unwrap();
        let mut all = Vec::new();
        for n in 0u64..3000 {
            // Ids are not in timestamp order, and timestamps repeat.
            let key = SortKey {
                timestamp: ((n * 7919) % 37) as i64,
                id: (n * 104_729) % 100_003,
            };
            let w = if n % 3 == 0 { "even" } else { "odd" };
            writer
                .add_document(doc!(ts => key.timestamp, id => key.id, word => w))
                .unwrap();
            all.push((key, w));
            if n % 1000 == 999 {
                writer.commit().unwrap(); // several segments
            }
        }
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let term = TermQuery::new(
            Term::from_field_text(word, "even"),
            IndexRecordOption::Basic,
        );
        for (query, filter) in [
            (&AllQuery as &dyn tantivy::query::Query, None),
            (&term, Some("even")),
        ] {
            for (order, range) in [
                (SortOrder::Desc, None),
                (SortOrder::Asc, None),
                (SortOrder::Desc, Some((10, 20))),
                (SortOrder::Asc, Some((0, 1))),
            ] {
                let mut expected: Vec<SortKey> = all
                    .iter()
                    .filter(|(_, w)| filter.is_none_or(|f| f == *w))
                    .map(|(k, _)| *k)
                    .filter(|k| range.is_none_or(|(s, e)| k.timestamp >= s && k.timestamp < e))
                    .collect();
                sort_keys(&mut expected, order, |k| *k);
                for limit in [0, 1, 7, 100] {
                    let mut after = None;
                    let mut seen = Vec::new();
                    loop {
                        let collector = TopByTime {
                            limit,
                            order,
                            after,
                            start: range.map(|r| r.0),
                            end: range.map(|r| r.1),
                        };
                        let fruit = searcher.search(query, &collector).unwrap();
                        assert_eq!(fruit.total, expected.len() as u64);
                        assert_eq!(fruit.after_cursor, (expected.len() - seen.len()) as u64);
                        let page: Vec<SortKey> = fruit.top.iter().map(|t| t.0).collect();
                        let want = &expected[seen.len()..(seen.len() + limit).min(expected.len())];
                        assert_eq!(
                            page, want,
                            "{order:?} {range:?} limit {limit} after {after:?}"
                        );
                        if limit == 0 || page.is_empty() {
                            break;
                        }
                        after = page.last().copied();
                        seen.extend(page);
                    }
                }
            }
        }
    }
}
