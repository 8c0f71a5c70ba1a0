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

use logsift_store::{IndexHandle, Store};
use serde_json::Value;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery};
use tantivy::{DocAddress, Term};

use crate::collector::{sort_keys, SortKey, TopByTime};
use crate::{
    check_range, compile, format_cursor, parse_cursor, parse_query, parts, resolve_indexes,
    search_error, Budget, QueryError, SortOrder,
};

/// Records read per window at most: bounds memory (keys plus one batch of documents).
const BATCH: usize = 2_000;
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

    while lo < range_end {
        if req.budget.cancelled() {
            return Err(QueryError::Cancelled);
        }
        let hi = lo.saturating_add(width).min(range_end);
        let parts = parts::collect(&handles, Some(lo), Some(hi), SortOrder::Asc)?;
        let queries = handles
            .iter()
            .map(|h| {
                let q = compile(store, h, &ast, Some(lo), Some(hi))?;
                Ok(Box::new(BooleanQuery::new(vec![
                    (Occur::Must, q),
                    (Occur::Must, id_range.box_clone()),
                ])) as Box<dyn Query>)
            })
            .collect::<Result<Vec<_>, QueryError>>()?;
        let collector = TopByTime {
            limit: BATCH,
            order: SortOrder::Asc,
            after: cursor,
            start: None,
            end: None,
        };
        let mut top: Vec<(SortKey, usize, DocAddress)> = Vec::new();
        let mut remaining = 0u64;
        for (at, part) in parts.iter().enumerate() {
            let fruit = part
                .searcher
                .search(&*queries[part.handle], &collector)
                .map_err(search_error(&handles[part.handle]))?;
            remaining += fruit.after_cursor;
            top.extend(fruit.top.into_iter().map(|(k, a)| (k, at, a)));
            sort_keys(&mut top, SortOrder::Asc, |t| t.0);
            top.truncate(BATCH);
        }
        for (key, at, addr) in &top {
            if req.budget.cancelled() {
                return Err(QueryError::Cancelled);
            }
            let hit = parts[*at].hit(store, &handles, *key, *addr)?;
            let c = format_cursor(*key);
            emit(&hit, &c)?;
            position.records += 1;
            position.cursor = Some(c);
            cursor = Some(*key);
        }
        if remaining > top.len() as u64 {
            // The window holds more than a batch: go on inside it, from the cursor, and try a
            // narrower one next.
            lo = cursor.map_or(lo, |c| c.timestamp.max(lo));
            width = (width / 2).max(1);
        } else {
            lo = hi;
            // Sparse windows grow fast, dense ones slowly, aiming at about a batch each.
            width = if top.len() < BATCH / 4 {
                width.saturating_mul(4)
            } else {
                width.saturating_mul(2).min(width.saturating_add(width / 2))
            };
        }
    }
    Ok(position)
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
