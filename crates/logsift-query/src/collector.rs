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

impl SegmentTop {
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
        self.total += 1;
        let timestamp = self.timestamps.first(doc).unwrap_or(0);
        self.consider(doc, timestamp);
    }

    /// Most matches of a common term rank below the hits kept: reading their timestamps a
    /// block at a time, and their ids only when the timestamp ties, is most of the cost saved.
    fn collect_block(&mut self, docs: &[DocId]) {
        self.total += docs.len() as u64;
        if self.limit == 0 && self.after.is_none() {
            // A count: no timestamp needed.
            self.after_cursor += docs.len() as u64;
            return;
        }
        for chunk in docs.chunks(COLLECT_BLOCK_BUFFER_LEN) {
            let mut block = [None; COLLECT_BLOCK_BUFFER_LEN];
            let block = &mut block[..chunk.len()];
            self.timestamps.first_vals(chunk, block);
            for (&doc, timestamp) in chunk.iter().zip(block.iter()) {
                self.consider(doc, timestamp.unwrap_or(0));
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
            for order in [SortOrder::Desc, SortOrder::Asc] {
                let mut expected: Vec<SortKey> = all
                    .iter()
                    .filter(|(_, w)| filter.is_none_or(|f| f == *w))
                    .map(|(k, _)| *k)
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
                        };
                        let fruit = searcher.search(query, &collector).unwrap();
                        assert_eq!(fruit.total, expected.len() as u64);
                        assert_eq!(fruit.after_cursor, (expected.len() - seen.len()) as u64);
                        let page: Vec<SortKey> = fruit.top.iter().map(|t| t.0).collect();
                        let want = &expected[seen.len()..(seen.len() + limit).min(expected.len())];
                        assert_eq!(page, want, "{order:?} limit {limit} after {after:?}");
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
