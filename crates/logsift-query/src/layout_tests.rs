//! The two segment layouts answer alike: the same records, sealed once as a record index and
//! once as block segments (with later records still in the hot tier of both), give the same
//! hits, pages, totals, histograms, terms, context, exports, tail batches and erasures.

use std::collections::BTreeMap;
use std::sync::Arc;

use logsift_core::entry::Entry;
use logsift_store::{IndexOptions, Indexer, Layout, Store, StoreConfig};
use serde_json::Value;

use crate::agg::{self, ContextRequest, HistogramRequest, TermsRequest, TERMS_FIELDS};
use crate::matcher::tests::{corpus_dir, lines, queries};
use crate::{search, SearchRequest, SortOrder};

pub(crate) const RECEIVED: i64 = 1_764_547_200_000_000_000;

/// A store of `layout` holding `lines` in index `main` (logfmt on), mining patterns: the
/// first two thirds sealed, the rest committed to the hot tier.
pub(crate) fn store(
    dir: &std::path::Path,
    layout: Layout,
    lines: &[(logsift_core::Format, Vec<u8>)],
) -> Arc<Store> {
    let mut index_options = BTreeMap::new();
    index_options.insert(
        "main".to_string(),
        IndexOptions {
            logfmt: true,
            ..IndexOptions::default()
        },
    );
    let store = Arc::new(
        Store::open(StoreConfig {
            layout,
            index_options,
            // Patterns mined: block searches take the records their pattern vouches for
            // without reading them, and must still answer as the record index does.
            patterns_state: Some(dir.join("patterns.state")),
            ..StoreConfig::manual(dir.join("indexes"))
        })
        .unwrap(),
    );
    let mut indexer = Indexer::new(store.clone());
    let sealed = lines.len() * 2 / 3;
    for (i, (format, raw)) in lines.iter().enumerate() {
        let entry = Entry {
            format: *format,
            // Lines without a timestamp of their own spread over a few minutes.
            received_at: RECEIVED + (i as i64 % 600) * 1_000_000_000,
            index: "main",
            source: if i % 3 == 0 {
                "tcp 10.0.0.1"
            } else {
                "udp 10.0.0.2"
            },
            raw,
        };
        indexer.apply(i as u64 + 1, &entry.encode()).unwrap();
        if i + 1 == sealed {
            indexer.commit().unwrap();
            store.seal_all_and_wait();
        } else if i > sealed && i % 97 == 0 {
            // Several commits of the hot tier: a tier of blocks is then read through a block
            // index of several segments, and through open blocks snapshotted more than once.
            indexer.commit().unwrap();
        }
    }
    indexer.commit().unwrap();
    store
}

/// Every page of `query` in `order` over `[start, end)`, walked by cursor.
fn walk(
    store: &Store,
    query: &str,
    order: SortOrder,
    start: Option<i64>,
    end: Option<i64>,
) -> (u64, Vec<Value>) {
    let mut hits = Vec::new();
    let mut cursor = None;
    let mut total = None;
    loop {
        let page = search(
            store,
            &SearchRequest {
                query: query.to_string(),
                start,
                end,
                limit: 193,
                order,
                cursor: cursor.clone(),
                ..SearchRequest::default()
            },
        )
        .unwrap();
        assert!(!page.partial, "{query}");
        total.get_or_insert(page.total);
        hits.extend(page.hits);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(hits.len() < 100_000, "{query}: the cursor does not advance");
    }
    (total.unwrap_or(0), hits)
}

fn without_took(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("took_ms");
    }
    v
}

#[test]
fn records_and_blocks_answer_alike() {
    let Some(dir) = corpus_dir() else { return };
    let lines = lines(&dir);
    let tmp = tempfile::tempdir().unwrap();
    let records = store(&tmp.path().join("records"), Layout::Records, &lines);
    let blocks = store(&tmp.path().join("blocks"), Layout::Blocks, &lines);
    let handle = blocks.get("main").unwrap();
    assert!(
        handle
            .parts(None, None)
            .iter()
            .any(|(p, _)| matches!(p, logsift_store::PartReader::Blocks(_))),
        "the seal wrote a block segment"
    );
    assert_eq!(
        records.get("main").unwrap().num_docs(),
        handle.num_docs(),
        "same records"
    );

    let opts = records.parse_options("main", RECEIVED);
    let parsed: Vec<_> = lines
        .iter()
        .map(|(f, raw)| logsift_parse::parse(*f, raw, &opts))
        .collect();
    let mut all = queries(&parsed);
    // Phrases from the templates of the patterns mined: what patterns vouch for.
    let phrases = crate::vouch_tests::template_queries(&blocks, 29);
    assert!(phrases.len() > 20, "{} template phrases", phrases.len());
    all.extend(phrases);
    // Every seventh query keeps the debug build's run short.
    let picked: Vec<&String> = all.iter().step_by(7).collect();
    let mid = RECEIVED + 300 * 1_000_000_000;
    let mut nonempty = 0;
    for q in &picked {
        if crate::parse_query(q).is_err() {
            continue;
        }
        for (order, start, end) in [
            (SortOrder::Desc, None, None),
            (SortOrder::Asc, None, None),
            (SortOrder::Desc, Some(mid), None),
            (SortOrder::Asc, None, Some(mid)),
        ] {
            let a = walk(&records, q, order, start, end);
            let b = walk(&blocks, q, order, start, end);
            assert_eq!(a.0, b.0, "total of {q} {order:?} {start:?} {end:?}");
            let ids = |h: &[Value]| -> Vec<String> {
                h.iter()
                    .map(|v| format!("{}@{}", v["id"].as_str().unwrap_or(""), v["timestamp"]))
                    .collect()
            };
            assert_eq!(
                ids(&a.1),
                ids(&b.1),
                "ids of {q} {order:?} {start:?} {end:?}"
            );
            assert_eq!(a.1, b.1, "hits of {q} {order:?} {start:?} {end:?}");
            nonempty += usize::from(a.0 > 0);
        }
    }
    assert!(nonempty > 200, "{nonempty} non-empty answers");

    for q in picked.iter().step_by(5).map(|s| s.as_str()).chain(["*"]) {
        if crate::parse_query(q).is_err() {
            continue;
        }
        let hour = 3_600_000_000_000;
        for (interval_ms, start, end) in [
            (None, None, None),
            (Some(60_000), Some(RECEIVED - hour), Some(RECEIVED + hour)),
            (Some(7_000), Some(mid - hour / 8), Some(mid + hour / 8)),
        ] {
            let req = HistogramRequest {
                query: q.to_string(),
                interval_ms,
                start,
                end,
                ..HistogramRequest::default()
            };
            let a = serde_json::to_value(agg::histogram(&records, &req).unwrap()).unwrap();
            let b = serde_json::to_value(agg::histogram(&blocks, &req).unwrap()).unwrap();
            assert_eq!(without_took(a), without_took(b), "histogram of {q}");
        }
        for field in TERMS_FIELDS {
            let req = TermsRequest {
                query: q.to_string(),
                field: field.to_string(),
                size: 50,
                ..TermsRequest::default()
            };
            let a = serde_json::to_value(agg::terms(&records, &req).unwrap()).unwrap();
            let b = serde_json::to_value(agg::terms(&blocks, &req).unwrap()).unwrap();
            assert_eq!(without_took(a), without_took(b), "terms of {field} for {q}");
        }
        let req = crate::export::ExportRequest {
            query: q.to_string(),
            ..crate::export::ExportRequest::default()
        };
        let mut exported = [Vec::new(), Vec::new()];
        for (store, out) in [&records, &blocks].into_iter().zip(exported.iter_mut()) {
            crate::export::export(store, &req, |hit, _| {
                out.push(hit.clone());
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(exported[0], exported[1], "export of {q}");
    }

    // Context around records of every part (sealed and hot).
    for id in (1..=lines.len() as u64).step_by(97) {
        let req = ContextRequest {
            id,
            before: 6,
            after: 6,
            ..ContextRequest::default()
        };
        let a = serde_json::to_value(agg::context(&records, &req).unwrap()).unwrap();
        let b = serde_json::to_value(agg::context(&blocks, &req).unwrap()).unwrap();
        assert_eq!(without_took(a), without_took(b), "context of {id}");
    }

    // A tail that starts before everything gets every record once, in id order.
    for q in ["*", "session", "severity:error"] {
        let ast = crate::parse_query(q).unwrap();
        let mut got = [Vec::new(), Vec::new()];
        for (store, out) in [&records, &blocks].into_iter().zip(got.iter_mut()) {
            let mut cursor = crate::tail::TailCursor::default();
            loop {
                let batch =
                    crate::tail::poll(store, &ast, &[], &mut cursor, 64, &crate::Budget::default())
                        .unwrap();
                if batch.is_empty() {
                    break;
                }
                out.extend(batch);
            }
        }
        assert_eq!(got[0], got[1], "tail of {q}");
    }

    // Erasure removes the same records from both, sealed and hot.
    let erase = crate::erase::EraseRequest {
        query: "session OR failed".into(),
        who: "test".into(),
        ..crate::erase::EraseRequest::default()
    };
    let a = crate::erase::erase(&records, &erase).unwrap();
    let b = crate::erase::erase(&blocks, &erase).unwrap();
    assert!(a.erased > 0);
    assert_eq!(a.erased, b.erased);
    for q in ["*", "session", "failed", "severity:error"] {
        assert_eq!(
            walk(&records, q, SortOrder::Desc, None, None),
            walk(&blocks, q, SortOrder::Desc, None, None),
            "{q} after erasure"
        );
    }
}
