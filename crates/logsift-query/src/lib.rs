//! Searching: compiles a query string and time range into a tantivy query per index, collects
//! the newest (or oldest) matches of every index with an exact total, and merges them by time.
//!
//! The query language is tantivy's Lucene-style parser for now, with `message` as the default
//! field and AND between terms; our own parser with error positions replaces it later.

mod collector;

use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use logsift_store::{IndexHandle, Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery};
use tantivy::{DocAddress, TantivyDocument, Term};

use collector::{SortKey, TopByTime};

/// A hard ceiling on one page, so that a single request cannot ask for unbounded memory.
pub const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    Desc,
    Asc,
}

impl SortOrder {
    pub fn parse(s: &str) -> Result<Self, QueryError> {
        match s {
            "desc" => Ok(SortOrder::Desc),
            "asc" => Ok(SortOrder::Asc),
            other => Err(QueryError::BadRequest(format!(
                "sort must be 'desc' or 'asc', not {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub query: String,
    /// Indexes to search; empty means every index except the built-in `_` ones.
    pub indexes: Vec<String>,
    /// Inclusive lower bound, ns since the epoch.
    pub start: Option<i64>,
    /// Exclusive upper bound, ns since the epoch.
    pub end: Option<i64>,
    pub limit: usize,
    pub order: SortOrder,
    /// Continue after this position (from a previous answer's `next_cursor`).
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchResponse {
    pub hits: Vec<Value>,
    /// Exact number of matches in the time range (independent of cursor and limit).
    pub total: u64,
    pub next_cursor: Option<String>,
    pub took_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("invalid query: {0}")]
    BadQuery(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("index {0:?} does not exist")]
    UnknownIndex(String),
    #[error("search failed in index {index}: {source}")]
    Search {
        index: String,
        source: tantivy::TantivyError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Cursors are `<timestamp ns>_<id>` of the last hit of the previous page: stable because
/// (timestamp, id) is unique and the order is total.
fn parse_cursor(s: &str) -> Result<SortKey, QueryError> {
    let bad = || QueryError::BadRequest(format!("cursor {s:?} is not one this server returned"));
    let (ts, id) = s.split_once('_').ok_or_else(bad)?;
    Ok(SortKey {
        timestamp: ts.parse().map_err(|_| bad())?,
        id: id.parse().map_err(|_| bad())?,
    })
}

fn format_cursor(key: SortKey) -> String {
    format!("{}_{}", key.timestamp, key.id)
}

/// The indexes a request reads, resolved against the store.
fn resolve_indexes(store: &Store, names: &[String]) -> Result<Vec<Arc<IndexHandle>>, QueryError> {
    if names.is_empty() {
        return Ok(store
            .list()
            .into_iter()
            .filter(|h| !h.name().is_builtin())
            .collect());
    }
    names
        .iter()
        .map(|n| {
            store
                .get(n)
                .ok_or_else(|| QueryError::UnknownIndex(n.clone()))
        })
        .collect()
}

fn compile(
    store: &Store,
    handle: &IndexHandle,
    req: &SearchRequest,
) -> Result<Box<dyn Query>, QueryError> {
    let schema = store.schema();
    let text = req.query.trim();
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    if !text.is_empty() && text != "*" {
        let mut parser = QueryParser::for_index(handle.index(), vec![schema.message]);
        parser.set_conjunction_by_default();
        let q = parser
            .parse_query(text)
            .map_err(|e| QueryError::BadQuery(e.to_string()))?;
        clauses.push((Occur::Must, q));
    }
    if req.start.is_some() || req.end.is_some() {
        let lower = req.start.map_or(Bound::Unbounded, |s| {
            Bound::Included(Term::from_field_i64(schema.timestamp, s))
        });
        let upper = req.end.map_or(Bound::Unbounded, |e| {
            Bound::Excluded(Term::from_field_i64(schema.timestamp, e))
        });
        clauses.push((Occur::Must, Box::new(RangeQuery::new(lower, upper))));
    }
    Ok(match clauses.len() {
        0 => Box::new(AllQuery),
        1 => clauses
            .pop()
            .map(|(_, q)| q)
            .unwrap_or_else(|| Box::new(AllQuery)),
        _ => Box::new(BooleanQuery::new(clauses)),
    })
}

/// Runs one search over the requested indexes.
pub fn search(store: &Store, req: &SearchRequest) -> Result<SearchResponse, QueryError> {
    let started = Instant::now();
    if req.limit > MAX_LIMIT {
        return Err(QueryError::BadRequest(format!(
            "limit {} exceeds the maximum of {MAX_LIMIT}",
            req.limit
        )));
    }
    if let (Some(s), Some(e)) = (req.start, req.end) {
        if s >= e {
            return Err(QueryError::BadRequest("start must be before end".into()));
        }
    }
    let after = req.cursor.as_deref().map(parse_cursor).transpose()?;
    let handles = resolve_indexes(store, &req.indexes)?;
    let collector = TopByTime {
        limit: req.limit,
        order: req.order,
        after,
    };

    let mut total = 0u64;
    let mut remaining = 0u64;
    // (key, index position, searcher-local address)
    let mut candidates: Vec<(SortKey, usize, DocAddress)> = Vec::new();
    let mut searchers = Vec::with_capacity(handles.len());
    for (pos, handle) in handles.iter().enumerate() {
        let query = compile(store, handle, req)?;
        let searcher = handle.searcher();
        let fruit = searcher
            .search(&*query, &collector)
            .map_err(|source| QueryError::Search {
                index: handle.name().to_string(),
                source,
            })?;
        total += fruit.total;
        remaining += fruit.after_cursor;
        candidates.extend(fruit.top.into_iter().map(|(key, addr)| (key, pos, addr)));
        searchers.push(searcher);
    }
    collector::sort_keys(&mut candidates, req.order, |c| c.0);
    candidates.truncate(req.limit);

    let mut hits = Vec::with_capacity(candidates.len());
    for (key, pos, addr) in &candidates {
        let index = handles[*pos].name().as_str();
        let doc: TantivyDocument =
            searchers[*pos]
                .doc(*addr)
                .map_err(|source| QueryError::Search {
                    index: index.to_string(),
                    source,
                })?;
        hits.push(store.hit_json(index, key.id, key.timestamp, &doc));
    }
    let next_cursor = if remaining > candidates.len() as u64 {
        candidates.last().map(|(key, _, _)| format_cursor(*key))
    } else {
        None
    };
    Ok(SearchResponse {
        hits,
        total,
        next_cursor,
        took_ms: started.elapsed().as_millis() as u64,
    })
}
