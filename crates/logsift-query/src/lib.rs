//! Searching: compiles a query string and time range into a tantivy query per index, collects
//! the newest (or oldest) matches of every index with an exact total, and merges them by time.
//!
//! The query language is ours ([`lang`]): parsed once per request, with errors that name the
//! column, then compiled per index ([`compile`]) because tokenizers belong to the index.
//! Histograms, top terms and context ([`agg`]) reuse the same compilation and time filter.
//! Every search runs under a [`Budget`] (deadline and cancel flag) so it stops when its
//! client no longer waits.

pub mod agg;
mod budget;
mod collector;
mod compile;
pub mod lang;
pub mod tail;

use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use logsift_store::{IndexHandle, Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, RangeQuery};
use tantivy::{DocAddress, TantivyDocument, Term};

pub use budget::Budget;
use collector::{SortKey, TopByTime};
use lang::Ast;

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
    pub budget: Budget,
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
    #[error("the query took longer than its time limit and was stopped; narrow the time range or the query")]
    Timeout,
    #[error("the query was cancelled")]
    Cancelled,
    #[error("{0}")]
    NotFound(String),
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
pub(crate) fn resolve_indexes(
    store: &Store,
    names: &[String],
) -> Result<Vec<Arc<IndexHandle>>, QueryError> {
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

/// Parses a query string; an empty query or `*` matches everything.
pub fn parse_query(text: &str) -> Result<Ast, QueryError> {
    lang::parse(text).map_err(|e| QueryError::BadQuery(e.to_string()))
}

/// The tantivy query of `ast` within `[start, end)` for one index, under `budget`.
pub(crate) fn compile(
    store: &Store,
    handle: &IndexHandle,
    ast: &Ast,
    start: Option<i64>,
    end: Option<i64>,
    budget: &Budget,
) -> Result<Box<dyn Query>, QueryError> {
    let schema = store.schema();
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    if *ast != Ast::All {
        let compiler = compile::Compiler {
            schema,
            index: handle.index(),
        };
        clauses.push((Occur::Must, compiler.compile(ast)?));
    }
    if start.is_some() || end.is_some() {
        let lower = start.map_or(Bound::Unbounded, |s| {
            Bound::Included(Term::from_field_i64(schema.timestamp, s))
        });
        let upper = end.map_or(Bound::Unbounded, |e| {
            Bound::Excluded(Term::from_field_i64(schema.timestamp, e))
        });
        clauses.push((Occur::Must, Box::new(RangeQuery::new(lower, upper))));
    }
    let query: Box<dyn Query> = match clauses.len() {
        0 => Box::new(AllQuery),
        1 => clauses
            .pop()
            .map(|(_, q)| q)
            .unwrap_or_else(|| Box::new(AllQuery)),
        _ => Box::new(BooleanQuery::new(clauses)),
    };
    Ok(budget.wrap(query))
}

/// Checks that `[start, end)` is not empty or reversed.
pub(crate) fn check_range(start: Option<i64>, end: Option<i64>) -> Result<(), QueryError> {
    if let (Some(s), Some(e)) = (start, end) {
        if s >= e {
            return Err(QueryError::BadRequest("start must be before end".into()));
        }
    }
    Ok(())
}

pub(crate) fn search_error(
    handle: &IndexHandle,
) -> impl FnOnce(tantivy::TantivyError) -> QueryError + '_ {
    move |source| QueryError::Search {
        index: handle.name().to_string(),
        source,
    }
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
    check_range(req.start, req.end)?;
    let ast = parse_query(&req.query)?;
    let after = req.cursor.as_deref().map(parse_cursor).transpose()?;
    let handles = resolve_indexes(store, &req.indexes)?;
    let collector = TopByTime {
        limit: req.limit,
        order: req.order,
        after,
    };

    let mut total = 0u64;
    let mut remaining = 0u64;
    // (key, position in `searchers`, searcher-local address)
    let mut candidates: Vec<(SortKey, usize, DocAddress)> = Vec::new();
    // Every part of every index that may hold records in the range (hot, sealing, sealed
    // segments whose time range overlaps), with the position of its index in `handles`.
    let mut searchers = Vec::new();
    for (pos, handle) in handles.iter().enumerate() {
        req.budget.check()?;
        let query = compile(store, handle, &ast, req.start, req.end, &req.budget)?;
        for searcher in handle.searchers(req.start, req.end) {
            let fruit = searcher
                .search(&*query, &collector)
                .map_err(search_error(handle))?;
            // A search stopped by its budget has partial counts: never answer them as exact.
            req.budget.check()?;
            total += fruit.total;
            remaining += fruit.after_cursor;
            let at = searchers.len();
            candidates.extend(fruit.top.into_iter().map(|(key, addr)| (key, at, addr)));
            searchers.push((pos, searcher));
        }
    }
    collector::sort_keys(&mut candidates, req.order, |c| c.0);
    candidates.truncate(req.limit);

    let mut hits = Vec::with_capacity(candidates.len());
    for (key, at, addr) in &candidates {
        let (pos, searcher) = &searchers[*at];
        let index = handles[*pos].name().as_str();
        let doc: TantivyDocument = searcher.doc(*addr).map_err(|source| QueryError::Search {
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
