//! Erasure (GDPR requests): removes every record matching a query in a time range from the
//! sealed segments (each affected segment is rewritten without them and the rewrite recorded
//! in the catalog chain with both hashes). Matches still in the in-memory hot tier are sealed
//! first (a deletion in memory would come back from the WAL after a crash). It repeats until a
//! search finds no match, because records arriving or a merge running meanwhile can carry
//! matches into a new segment.
//!
//! What it does not reach: the WAL keeps the raw bytes of erased records until its files are
//! truncated (after the next commits), and exports already taken keep theirs.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use logsift_store::{PartReader, Rewritten, Store};
use serde::Serialize;
use tantivy::collector::{Count, DocSetCollector};

use crate::{check_range, compile, parse_query, resolve_indexes, search_error, QueryError};

/// Passes over an index before giving up (each pass waits for seals and merges first).
const MAX_PASSES: usize = 8;
/// How long erasure waits for the indexer to commit before it can seal the hot tier.
const HOT_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct EraseRequest {
    pub query: String,
    pub indexes: Vec<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Who asked, for the catalog entries.
    pub who: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentRewrite {
    pub index: String,
    pub old_segment: String,
    pub old_sha256: String,
    /// `None` when nothing was left of the segment.
    pub new_segment: Option<String>,
    pub new_sha256: Option<String>,
    pub removed: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct EraseReport {
    pub erased: u64,
    pub rewritten: Vec<SegmentRewrite>,
    /// Of `erased`, the records that were still in the hot tier (sealed first, then erased).
    pub hot: u64,
    pub took_ms: u64,
}

pub fn erase(store: &Store, req: &EraseRequest) -> Result<EraseReport, QueryError> {
    let started = Instant::now();
    check_range(req.start, req.end)?;
    let ast = parse_query(&req.query)?;
    let handles = resolve_indexes(store, &req.indexes)?;
    let mut report = EraseReport::default();
    for handle in &handles {
        let query = compile(store, handle, &ast, req.start, req.end)?;
        let reason = format!(
            "erasure by {}: records matching {:?} in [{}, {})",
            req.who,
            req.query,
            req.start
                .map_or("-".into(), logsift_core::time::format_rfc3339),
            req.end
                .map_or("-".into(), logsift_core::time::format_rfc3339),
        );
        let mut clean = false;
        let parse = store.parse_options(handle.name().as_str(), 0);
        for _ in 0..MAX_PASSES {
            let deadline = Instant::now() + HOT_WAIT;
            loop {
                handle.wait_for_seal();
                let hot_matches = |part: &PartReader| match part {
                    PartReader::Records(searcher) => searcher
                        .search(&*query, &Count)
                        .map(|n| n as u64)
                        .map_err(search_error(handle)),
                    PartReader::Blocks(blocks) => {
                        block_matches(blocks, &ast, &parse, req.start, req.end)
                            .map(|ids| ids.len() as u64)
                    }
                };
                if let Some(n) = handle.seal_for_erasure(hot_matches)? {
                    report.hot += n;
                    break;
                }
                if Instant::now() > deadline {
                    return Err(QueryError::BadRequest(
                        "the index kept receiving records for 30 s; erasure could not find a quiet moment to seal the hot tier; retry".into(),
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            handle.wait_for_seal();
            handle.wait_for_merge();
            for (entry, reader) in handle.sealed_parts(req.start, req.end) {
                let (removed, rewritten) = match reader {
                    PartReader::Records(searcher) => {
                        let docs = searcher
                            .search(&*query, &DocSetCollector)
                            .map_err(search_error(handle))?;
                        if docs.is_empty() {
                            continue;
                        }
                        let ids: Vec<tantivy::DocId> = docs.iter().map(|a| a.doc_id).collect();
                        let done = handle.erase_from_segment(&entry.segment, &ids, &reason)?;
                        (ids.len(), done)
                    }
                    PartReader::Blocks(blocks) => {
                        let ids = block_matches(&blocks, &ast, &parse, req.start, req.end)?;
                        if ids.is_empty() {
                            continue;
                        }
                        let done =
                            handle.erase_from_block_segment(&entry.segment, &ids, &reason)?;
                        (ids.len(), done)
                    }
                };
                let new = match rewritten {
                    Rewritten::Into(e) => Some(e),
                    Rewritten::Emptied => None,
                    // Another erasure or a merge replaced the segment after it was searched:
                    // its matches are found again in the replacement on the next pass.
                    Rewritten::SourcesGone => continue,
                };
                report.erased += removed as u64;
                report.rewritten.push(SegmentRewrite {
                    index: handle.name().to_string(),
                    old_segment: entry.segment.clone(),
                    old_sha256: entry.sha256.clone(),
                    new_segment: new.as_ref().map(|e| e.segment.clone()),
                    new_sha256: new.as_ref().map(|e| e.sha256.clone()),
                    removed: removed as u64,
                });
            }
            let mut left: usize = handle
                .searchers(req.start, req.end)
                .iter()
                .map(|s| s.search(&*query, &Count))
                .sum::<Result<usize, _>>()
                .map_err(search_error(handle))?;
            for (reader, _) in handle.parts(req.start, req.end) {
                if let PartReader::Blocks(blocks) = reader {
                    left += block_matches(&blocks, &ast, &parse, req.start, req.end)?.len();
                }
            }
            if left == 0 {
                clean = true;
                break;
            }
        }
        if !clean {
            return Err(QueryError::BadRequest(format!(
                "index {}: matches kept appearing (records arriving in the range); retry",
                handle.name()
            )));
        }
    }
    report.took_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The ids of the records of a block segment in `[start, end)` that match `ast`.
fn block_matches(
    blocks: &logsift_store::blocks::BlockSegment,
    ast: &crate::lang::Ast,
    parse: &logsift_parse::ParseOptions,
    start: Option<i64>,
    end: Option<i64>,
) -> Result<HashSet<u64>, QueryError> {
    let mut query = crate::blocks::BlockQuery::new(blocks, ast, parse, start, end)?;
    let mut ids = HashSet::new();
    query.scan(
        &crate::Budget::default(),
        crate::blocks::Need::Header,
        |_, r, _| {
            ids.insert(r.id);
        },
    )?;
    Ok(ids)
}
