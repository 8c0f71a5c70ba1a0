//! Every matching record of a range, oldest first, in constant memory: what exports read.
//!
//! A search page counts every match of its whole range, so paging through millions of
//! records with cursors would visit the range again for every page. An export instead walks
//! the range in time windows sized to hold about one batch: each window's matches after the
//! cursor are collected (at most a batch), sorted, read and handed out, and the next window
//! starts where the cursor stands. Window widths adapt to the density of matches, so every
//! record is visited a small constant number of times and memory stays at one batch.
//!
//! Records received after the export began are left out (`max_id`), so the exported set is
//! fixed: the same request gives the same bytes, which is what lets an interrupted export be
//! resumed from a cursor and its manifest cover the whole file.

use std::ops::Bound;
use std::sync::Arc;

use logsift_store::{IndexHandle, PartReader, Store};
use serde_json::Value;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery};
use tantivy::Term;

use crate::collector::{sort_keys, SortKey, TopByTime};
use crate::parts::{blocks_page, HitAt, PartPage};
use crate::{
    check_range, format_cursor, parse_cursor, parse_query, parts, resolve_indexes, search_error,
    Budget, Compiled, QueryError, SortOrder,
};

/// Records read per window at most: bounds memory (keys plus one batch of documents).
const BATCH: usize = 2_000;
/// The first id window's width inside one timestamp.
const ID_WINDOW: u64 = 4 * BATCH as u64;
/// The first window's width when the range is open-ended or huge: one minute.
const FIRST_WINDOW_NS: i64 = 60_000_000_000;

#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    pub query: String,
    /// Empty: every index except the built-in `_` ones.
    pub indexes: Vec<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Leave out records with a higher id; `None`: the highest committed now.
    pub max_id: Option<u64>,
    /// Start after this cursor (a previous export's position).
    pub after: Option<String>,
    /// Only its cancel flag is looked at: an export has no time limit.
    pub budget: Budget,
}

/// Where an export stands.
#[derive(Debug, Clone)]
pub struct ExportPosition {
    pub records: u64,
    /// The cursor of the last record handed out (resume from here).
    pub cursor: Option<String>,
    pub max_id: u64,
    /// Matches the windows' collectors looked at: a small multiple of `records` when the
    /// walk is linear.
    pub visited: u64,
}

/// The highest record id committed in any of the requested indexes: what `max_id` pins.
pub fn committed_max_id(store: &Store, indexes: &[String]) -> Result<u64, QueryError> {
    Ok(resolve_indexes(store, indexes)?
        .iter()
        .map(|h| h.committed_lsn())
        .max()
        .unwrap_or(0))
}

/// Hands every matching record (as a hit, with its cursor) to `emit`, oldest first, and
/// returns where it ended. `emit` returning an error stops the export with it.
pub fn export(
    store: &Store,
    req: &ExportRequest,
    mut emit: impl FnMut(&Value, &str) -> Result<(), QueryError>,
) -> Result<ExportPosition, QueryError> {
    check_range(req.start, req.end)?;
    let ast = parse_query(&req.query)?;
    let handles = resolve_indexes(store, &req.indexes)?;
    let max_id = match req.max_id {
        Some(m) => m,
        None => committed_max_id(store, &req.indexes)?,
    };
    let mut cursor: Option<SortKey> = req.after.as_deref().map(parse_cursor).transpose()?;
    let mut position = ExportPosition {
        records: 0,
        cursor: req.after.clone(),
        max_id,
        visited: 0,
    };
    let schema = store.schema();
    let id_range: Box<dyn Query> = Box::new(RangeQuery::new(
        Bound::Unbounded,
        Bound::Included(Term::from_field_u64(schema.id, max_id)),
    ));

    // The data's own bounds close an open range, so windows have somewhere to stop.
    let Some((data_min, data_max)) = data_bounds(&handles, req.start, req.end)? else {
        return Ok(position);
    };
    let range_end = req
        .end
        .unwrap_or(data_max.saturating_add(1))
        .min(data_max.saturating_add(1));
    let mut lo = req.start.unwrap_or(data_min).max(data_min);
    if let Some(c) = cursor {
        lo = lo.max(c.timestamp);
    }
    let mut width = FIRST_WINDOW_NS.min(range_end.saturating_sub(lo)).max(1);
    // Within a window of one timestamp, records are ordered by id alone, so it is walked in
    // windows of ids the same way: the first id not walked yet, and the id window's width.
    let mut ids_at: Option<(i64, u64)> = None;
    let mut id_width = ID_WINDOW;

    while lo < range_end {
        if req.budget.cancelled() {
            return Err(QueryError::Cancelled);
        }
        let hi = lo.saturating_add(width).min(range_end);
        let parts = parts::collect(&handles, Some(lo), Some(hi), SortOrder::Asc)?;
        // Without id windows, every record sharing a timestamp would be collected again for
        // each batch of them: quadratic in how many share it.
        let id_window = (hi - lo == 1).then(|| {
            let from = match ids_at {
                Some((ts, next)) if ts == lo => next,
                _ => cursor
                    .filter(|c| c.timestamp == lo)
                    .map_or(0, |c| c.id.saturating_add(1)),
            };
            (from, from.saturating_add(id_width - 1).min(max_id))
        });
        let ids = match id_window {
            Some((from, to)) => Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_u64(schema.id, from)),
                Bound::Included(Term::from_field_u64(schema.id, to)),
            )) as Box<dyn Query>,
            None => id_range.box_clone(),
        };
        let matches = Compiled::new(store, &handles, &ast, Some(lo), Some(hi))?;
        let collector = TopByTime {
            limit: BATCH,
            order: SortOrder::Asc,
            after: cursor,
            start: None,
            end: None,
        };
        let mut top: Vec<(SortKey, usize, HitAt)> = Vec::new();
        let mut remaining = 0u64;
        for (at, part) in parts.iter().enumerate() {
            let fruit = match &part.reader {
                PartReader::Records(searcher) => {
                    let query = BooleanQuery::new(vec![
                        (Occur::Must, matches.get(part.handle).box_clone()),
                        (Occur::Must, ids.box_clone()),
                    ]);
                    searcher
                        .search(&query, &collector)
                        .map(PartPage::from)
                        .map_err(search_error(&handles[part.handle]))?
                }
                PartReader::Blocks(blocks) => {
                    let page = crate::blocks::Page {
                        start: Some(lo),
                        end: Some(hi),
                        order: SortOrder::Asc,
                        after: cursor.map(|c| (c.timestamp, c.id)),
                        limit: BATCH,
                        ids: Some(id_window.unwrap_or((0, max_id))),
                        ..crate::blocks::Page::default()
                    };
                    blocks_page(store, &handles[part.handle], blocks, &ast, &page)?
                }
            };
            remaining += fruit.after_cursor;
            position.visited += fruit.total;
            top.extend(fruit.top.into_iter().map(|(k, a)| (k, at, a)));
            sort_keys(&mut top, SortOrder::Asc, |t| t.0);
            top.truncate(BATCH);
        }
        for (key, at, addr) in &top {
            if req.budget.cancelled() {
                return Err(QueryError::Cancelled);
            }
            let mut hit = parts[*at].hit(store, &handles, *key, addr)?;
            // A pattern's template generalises as records arrive: an export must be the same
            // bytes when it is resumed or run again, so it keeps the id, never the text.
            if let Some(fields) = hit.as_object_mut() {
                fields.remove("pattern");
            }
            let c = format_cursor(*key);
            emit(&hit, &c)?;
            position.records += 1;
            position.cursor = Some(c);
            cursor = Some(*key);
        }
        let more = remaining > top.len() as u64;
        if let Some((from, to)) = id_window {
            let next = if more {
                id_width = (id_width / 2).max(1);
                cursor.map_or(from, |c| c.id.saturating_add(1))
            } else {
                id_width = grow(id_width as i64, top.len()) as u64;
                to.saturating_add(1)
            };
            if more || to < max_id {
                ids_at = Some((lo, next));
                continue;
            }
            ids_at = None;
            id_width = ID_WINDOW;
            lo = hi;
            width = 2;
        } else if more {
            // The window holds more than a batch: go on inside it from the cursor, in one
            // about as wide as the part the batch covered (one timestamp, if that was all).
            let old_lo = lo;
            lo = cursor.map_or(lo, |c| c.timestamp.max(lo));
            width = (lo - old_lo).clamp(1, (width / 2).max(1));
        } else {
            lo = hi;
            width = grow(width, top.len());
        }
    }
    Ok(position)
}

/// The next window after one that held `found` records: sparse windows grow fast, dense ones
/// slowly, aiming at about a batch each.
fn grow(width: i64, found: usize) -> i64 {
    if found < BATCH / 4 {
        width.saturating_mul(4)
    } else {
        width.saturating_mul(2).min(width.saturating_add(width / 2))
    }
}

fn data_bounds(
    handles: &[Arc<IndexHandle>],
    start: Option<i64>,
    end: Option<i64>,
) -> Result<Option<(i64, i64)>, QueryError> {
    let parts = parts::collect(handles, start, end, SortOrder::Asc)?;
    Ok(parts.iter().fold(None, |acc, p| match acc {
        None => Some((p.min_ts, p.max_ts)),
        Some((lo, hi)) => Some((lo.min(p.min_ts), hi.max(p.max_ts))),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use logsift_core::entry::Entry;
    use logsift_core::Format;
    use logsift_store::{Indexer, StoreConfig};

    fn store(dir: &std::path::Path) -> Arc<Store> {
        Arc::new(Store::open(StoreConfig::manual(dir.join("indexes"))).expect("open store"))
    }

    /// Many records with one timestamp (a burst logged within one clock tick, or lines
    /// without a timestamp of their own imported at once) are exported in id order, each
    /// once, and each is collected a bounded number of times, not once per batch before it.
    #[test]
    fn records_sharing_a_timestamp_are_walked_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let mut indexer = Indexer::new(store.clone());
        const SAME: u64 = 10 * BATCH as u64 + 17;
        let mut lsn = 0;
        let mut add = |ts: &str, n: u64, indexer: &mut Indexer| {
            for i in 0..n {
                lsn += 1;
                let raw = format!(r#"{{"timestamp":"{ts}","message":"burst {i}"}}"#);
                let entry = Entry {
                    format: Format::Json,
                    received_at: 1_700_000_000_000_000_000,
                    index: "logs",
                    source: "test",
                    raw: raw.as_bytes(),
                };
                indexer.apply(lsn, &entry.encode()).expect("apply");
            }
        };
        add("2026-01-01T00:00:00Z", 3, &mut indexer);
        add("2026-01-01T00:00:01Z", SAME, &mut indexer);
        add("2026-01-01T00:00:02Z", 3, &mut indexer);
        indexer.commit().expect("commit");
        let mut ids = Vec::new();
        let position = export(
            &store,
            &ExportRequest {
                query: "burst".into(),
                ..ExportRequest::default()
            },
            |hit, _| {
                ids.push(hit["id"].as_str().unwrap().parse::<u64>().unwrap());
                Ok(())
            },
        )
        .expect("export");
        let total = SAME + 6;
        assert_eq!(position.records, total);
        assert_eq!(ids, (1..=total).collect::<Vec<_>>());
        // Finding the dense timestamp costs two passes over it, then each id window holds about
        // a batch. Before, every batch collected all the timestamp's records again: over 10×
        // here, and growing with SAME / BATCH.
        assert!(
            position.visited <= 4 * total,
            "{} matches visited to export {total}",
            position.visited
        );
    }
}
