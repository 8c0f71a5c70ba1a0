//! Searching: compiles a query string and time range into a tantivy query per index, collects
//! the newest (or oldest) matches of every index with an exact total, and merges them by time.
//!
//! The query language is ours ([`lang`]): parsed once per request, with errors that name the
//! column, then compiled per index ([`compile`]) because tokenizers belong to the index.
//! Histograms, top terms and context ([`agg`]) reuse the same compilation and time filter.
//! Every search runs under a [`Budget`] (deadline and cancel flag) so it stops when its
//! client no longer waits. The parts of the indexes (hot, sealing, sealed segments) are
//! searched in parallel, newest data first for newest-first answers ([`parts`]); when the
//! time limit cuts a query short, the answer says which time range it covers completely
//! (`partial`, `covered`) and that its total is a lower bound (`total_exact: false`).

pub mod agg;
pub mod blocks;
mod budget;
mod collector;
mod compile;
pub mod erase;
pub mod export;
mod folded;
pub mod lang;
#[cfg(test)]
mod layout_tests;
pub mod matcher;
mod parts;
mod patterns;
pub mod tail;
#[cfg(test)]
mod vouch_tests;

use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use logsift_store::{IndexHandle, PartReader, Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, RangeQuery};
use tantivy::Term;

pub use budget::Budget;
use collector::{SortKey, TopByTime};
use lang::Ast;
use parts::Coverage;
pub use parts::Covered;
pub use patterns::{
    compare, patterns, Change, CompareRequest, CompareResponse, PatternRow, PatternsRequest,
    PatternsResponse, MAX_PATTERNS,
};

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
    /// Which parts to read, when processes share a search (see [`Segments`]).
    pub segments: Segments,
}

/// A sealed segment by its index and id.
pub type SegmentRef = (String, String);

/// Which parts a search reads when it is split between processes (issue #18): the root keeps
/// what is in memory and some sealed segments, and asks searchers for the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Segments {
    /// Everything this process serves.
    #[default]
    All,
    /// Only these sealed segments, nothing in memory: a searcher's share. The answer names
    /// the ones not served here (`missing`), and gives its hits' sort keys (`keys`).
    Only(std::collections::BTreeSet<SegmentRef>),
    /// Everything but these sealed segments: the root's share while searchers read them.
    Except(std::collections::BTreeSet<SegmentRef>),
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SearchResponse {
    pub hits: Vec<Value>,
    /// Number of matches in the time range (independent of cursor and limit): exact when
    /// `total_exact`, else a lower bound (the matches in the parts that were searched).
    pub total: u64,
    pub total_exact: bool,
    pub next_cursor: Option<String>,
    /// The time limit stopped the search before every part was searched. The hits are then
    /// those within `covered`, which every searched part covers completely.
    pub partial: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covered: Option<Covered>,
    pub took_ms: u64,
    /// With [`Segments::Only`]: each hit's sort key, in cursor form, for the root to merge by.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub keys: Vec<String>,
    /// With [`Segments::Only`]: the asked segments this process does not serve (not yet
    /// refreshed, or deleted since), which the root reads itself.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub missing_segments: Vec<SegmentRef>,
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
    /// A block segment that does not read back (damage the checksum check quarantines).
    #[error(transparent)]
    Segment(#[from] logsift_store::blocks::BlockError),
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

/// The indexes a request reads, resolved against the store: the named ones (an unknown name
/// is an error), or every index except the built-in `_` ones.
pub fn resolve_indexes(
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

/// The tantivy query of `ast` over a bare index of the record schema, for benchmarks that
/// price queries without a store (`benches/index_cost.rs` compares it with block segments).
pub fn compile_for_index(
    schema: &logsift_store::LogSchema,
    index: &tantivy::Index,
    ast: &Ast,
    parse: logsift_parse::ParseOptions,
) -> Result<Box<dyn Query>, QueryError> {
    compile::Compiler {
        schema,
        index,
        parse,
    }
    .compile(ast)
}

/// The tantivy query of `ast` within `[start, end)` for one index; wrap it in a budget
/// ([`Budget::wrap`]) to run it.
pub(crate) fn compile(
    store: &Store,
    handle: &IndexHandle,
    ast: &Ast,
    start: Option<i64>,
    end: Option<i64>,
) -> Result<Box<dyn Query>, QueryError> {
    let schema = store.schema();
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    if *ast != Ast::All {
        let compiler = compile::Compiler {
            schema,
            index: handle.index(),
            parse: store.parse_options(handle.name().as_str(), 0),
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
    Ok(query)
}

/// The query of one AST for each of a set of indexes. Indexes differ only in their parse
/// options (the same schema and tokenizers), so each distinct set of options is compiled
/// once: compiled per index, a 256-clause query over a thousand indexes held a thousand
/// copies at once (measured: 150 MiB of heap for one search).
pub(crate) struct Compiled {
    queries: Vec<Box<dyn Query>>,
    /// Position in `queries` of each handle's query.
    of_handle: Vec<usize>,
}

impl Compiled {
    pub(crate) fn new(
        store: &Store,
        handles: &[Arc<IndexHandle>],
        ast: &Ast,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Self, QueryError> {
        let mut options = Vec::new();
        let mut queries = Vec::new();
        let mut of_handle = Vec::with_capacity(handles.len());
        for h in handles {
            let key = store.parse_options(h.name().as_str(), 0);
            let pos = match options.iter().position(|o| *o == key) {
                Some(pos) => pos,
                None => {
                    queries.push(compile(store, h, ast, start, end)?);
                    options.push(key);
                    queries.len() - 1
                }
            };
            of_handle.push(pos);
        }
        Ok(Compiled { queries, of_handle })
    }

    /// The query of the handle at `handle` in the slice given to [`Self::new`].
    pub(crate) fn get(&self, handle: usize) -> &dyn Query {
        &*self.queries[self.of_handle[handle]]
    }
}

/// Where a query's time range is applied: `(in the query, in the collector)`. With terms to
/// match, the collector checks the timestamps of the matches, which it reads anyway; a range
/// filter in the query would scan the whole timestamp column of every segment the range cuts
/// through (1 M values for a rare term with 10 matches). Matching everything, the range filter
/// is the better driver: tantivy scans the column for the range in bulk.
pub(crate) type Range = (Option<i64>, Option<i64>);

pub(crate) fn range_split(ast: &Ast, start: Option<i64>, end: Option<i64>) -> (Range, Range) {
    if *ast == Ast::All {
        ((start, end), (None, None))
    } else {
        ((None, None), (start, end))
    }
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

/// Hits fetched between two looks at the cancel flag while reading stored documents.
const FETCH_CHECK_EVERY: usize = 64;

/// Runs one search over the requested indexes.
///
/// Each part keeps at most `limit` candidates and they are merged into one top-`limit` list
/// as parts finish, so memory is O(limit × threads) whatever the number of parts or matches.
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
    req.budget.check()?;
    let ((query_start, query_end), (start, end)) = range_split(&ast, req.start, req.end);
    let queries = Compiled::new(store, &handles, &ast, query_start, query_end)?;
    let mut parts = parts::collect(&handles, req.start, req.end, req.order)?;
    let missing_segments = select_segments(&mut parts, &handles, &req.segments);
    let count_only = ast == Ast::All && req.limit == 0 && after.is_none();
    let collector = TopByTime {
        limit: req.limit,
        order: req.order,
        after,
        start,
        end,
    };

    #[derive(Default)]
    struct Found {
        total: u64,
        after_cursor: u64,
        /// (key, position in `parts`, where in the part), best first, at most `limit`.
        top: Vec<(SortKey, usize, parts::HitAt)>,
    }
    let (found, done) = parts::run(
        &parts,
        &req.budget,
        Found::default(),
        |part, budget| {
            if count_only && part.inside(req.start, req.end) {
                // Every live document of the part matches: its count is its size, and no
                // timestamp column is read (23 M records: 46 ms, and 140 MiB of mapped
                // columns left resident, before this).
                let docs = part.reader.num_docs();
                return Ok(parts::PartPage {
                    total: docs,
                    after_cursor: docs,
                    top: Vec::new(),
                });
            }
            match &part.reader {
                PartReader::Records(searcher) => {
                    let query = budget.wrap(queries.get(part.handle).box_clone());
                    searcher
                        .search(&*query, &collector)
                        .map(parts::PartPage::from)
                        .map_err(search_error(&handles[part.handle]))
                }
                PartReader::Blocks(blocks) => {
                    let page = blocks::Page {
                        start: req.start,
                        end: req.end,
                        order: req.order,
                        after: after.map(|a| (a.timestamp, a.id)),
                        limit: req.limit,
                        budget: Some(budget.clone()),
                        ..blocks::Page::default()
                    };
                    parts::blocks_page(store, &handles[part.handle], blocks, &ast, &page)
                }
            }
        },
        |found, at, fruit| {
            found.total += fruit.total;
            found.after_cursor += fruit.after_cursor;
            found
                .top
                .extend(fruit.top.into_iter().map(|(key, addr)| (key, at, addr)));
            collector::sort_keys(&mut found.top, req.order, |c| c.0);
            found.top.truncate(req.limit);
        },
    )?;
    let coverage = Coverage::of(&parts, &done, req.order, req.start, req.end);
    if coverage == Coverage::Nothing {
        return Err(QueryError::Timeout);
    }
    let mut candidates = found.top;
    // The best hits overall come first, so the ones inside the covered range are a prefix
    // of them and are also the best `limit` of that range.
    candidates.retain(|(key, _, _)| coverage.contains(key.timestamp));

    let mut hits = Vec::with_capacity(candidates.len());
    for (n, (key, at, addr)) in candidates.iter().enumerate() {
        if n % FETCH_CHECK_EVERY == 0 && req.budget.cancelled() {
            return Err(QueryError::Cancelled);
        }
        hits.push(parts[*at].hit(store, &handles, *key, addr)?);
    }
    let next_cursor = match coverage {
        Coverage::Partial { start, end } if candidates.len() < req.limit => {
            // The covered range holds no more matches: carry on from its edge, where the
            // unsearched parts begin.
            Some(format_cursor(match req.order {
                SortOrder::Desc => SortKey {
                    timestamp: start,
                    id: 0,
                },
                SortOrder::Asc => SortKey {
                    timestamp: end.saturating_sub(1),
                    id: u64::MAX,
                },
            }))
        }
        Coverage::Partial { .. } => candidates.last().map(|(key, _, _)| format_cursor(*key)),
        _ if found.after_cursor > candidates.len() as u64 => {
            candidates.last().map(|(key, _, _)| format_cursor(*key))
        }
        _ => None,
    };
    let partial = coverage != Coverage::Complete;
    let keys = match req.segments {
        Segments::All => Vec::new(),
        _ => candidates
            .iter()
            .map(|(key, _, _)| format_cursor(*key))
            .collect(),
    };
    Ok(SearchResponse {
        hits,
        total: found.total,
        total_exact: !partial,
        next_cursor,
        partial,
        covered: coverage.covered(),
        took_ms: started.elapsed().as_millis() as u64,
        keys,
        missing_segments,
    })
}

/// Keeps the parts `segments` selects. Returns the segments it names that this process does
/// not serve: for [`Segments::Only`], what the asker must read elsewhere; for
/// [`Segments::Except`], segments given away that were replaced or deleted meanwhile.
pub(crate) fn select_segments(
    parts: &mut Vec<parts::Part>,
    handles: &[Arc<logsift_store::IndexHandle>],
    segments: &Segments,
) -> Vec<SegmentRef> {
    let named = |p: &parts::Part| {
        p.segment
            .as_ref()
            .map(|id| (handles[p.handle].name().to_string(), id.clone()))
    };
    let set = match segments {
        Segments::All => return Vec::new(),
        Segments::Except(set) => {
            parts.retain(|p| named(p).is_none_or(|r| !set.contains(&r)));
            set
        }
        Segments::Only(set) => {
            parts.retain(|p| named(p).is_some_and(|r| set.contains(&r)));
            set
        }
    };
    // Served, whatever the range: a segment outside it has no part but is not missing.
    let served: std::collections::BTreeSet<SegmentRef> = handles
        .iter()
        .flat_map(|h| {
            h.sealed_parts(None, None)
                .into_iter()
                .map(|(e, _)| (h.name().to_string(), e.segment))
        })
        .collect();
    set.iter()
        .filter(|r| !served.contains(*r))
        .cloned()
        .collect()
}

/// The smallest and largest timestamps (ns) of what `indexes` hold in `[start, end)`, as a
/// histogram without a range places its buckets: a root fixes them before it shares one.
pub fn data_bounds(
    store: &Store,
    indexes: &[String],
    start: Option<i64>,
    end: Option<i64>,
) -> Result<Option<(i64, i64)>, QueryError> {
    let handles = resolve_indexes(store, indexes)?;
    let parts = parts::collect(&handles, start, end, SortOrder::Desc)?;
    Ok(parts.iter().fold(None, |b: Option<(i64, i64)>, p| {
        Some(b.map_or((p.min_ts, p.max_ts), |(lo, hi)| {
            (lo.min(p.min_ts), hi.max(p.max_ts))
        }))
    }))
}

/// Cursor form of a sort key, for merging answers of several processes.
pub fn parse_sort_key(s: &str) -> Result<(i64, u64), QueryError> {
    parse_cursor(s).map(|k| (k.timestamp, k.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use logsift_store::{IndexOptions, Indexer, StoreConfig};

    /// Issue #17: a query over a thousand indexes was compiled once per index, and a
    /// 256-clause one held a thousand copies at once. It is compiled once per distinct set of
    /// parse options (the only thing in which indexes differ), and each index gets its own.
    #[test]
    fn a_query_over_many_indexes_is_compiled_once_per_set_of_options() {
        let dir = tempfile::tempdir().unwrap();
        let mut index_options = std::collections::BTreeMap::new();
        let logfmt = IndexOptions {
            logfmt: true,
            ..IndexOptions::default()
        };
        index_options.insert("app7".to_string(), logfmt);
        let store = Store::open(StoreConfig {
            index_options,
            ..StoreConfig::manual(dir.path().join("indexes"))
        })
        .unwrap();
        let store = Arc::new(store);
        let mut indexer = Indexer::new(store.clone());
        for i in 0..20u64 {
            let entry = logsift_core::entry::Entry {
                format: logsift_core::Format::Json,
                received_at: 1_700_000_000_000_000_000,
                index: &format!("app{i}"),
                source: "test",
                raw: br#"{"message":"one"}"#,
            };
            indexer.apply(i + 1, &entry.encode()).unwrap();
        }
        indexer.commit().unwrap();
        let handles = resolve_indexes(&store, &[]).unwrap();
        assert_eq!(handles.len(), 20);
        let clauses: Vec<String> = (0..256).map(|i| format!("word{i}")).collect();
        let ast = parse_query(&clauses.join(" OR ")).unwrap();
        let compiled = Compiled::new(&store, &handles, &ast, None, None).unwrap();
        assert_eq!(compiled.queries.len(), 2, "one plain, one with logfmt");
        for (pos, h) in handles.iter().enumerate() {
            let expected = compile(&store, h, &ast, None, None).unwrap();
            assert_eq!(
                format!("{:?}", compiled.get(pos)),
                format!("{expected:?}"),
                "{}",
                h.name()
            );
        }
    }
}
