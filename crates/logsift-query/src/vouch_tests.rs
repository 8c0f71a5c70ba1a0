//! Records answered by their log pattern (`blocks::Vouch`) give exactly the answers the
//! record check gives: the same corpus is searched with the pattern templates and without,
//! sealed and in the hot tier, whole and in time ranges, and totals, counts after a cursor and
//! hits must agree for phrases taken from the templates themselves (the queries the shortcut
//! is for), for words, prefixes and negations around them, and for the matcher's own queries.

use std::collections::BTreeSet;

use logsift_store::{Layout, PartReader, Store};

use crate::blocks::{search, Page, Vouched};
use crate::matcher::tests::{corpus_dir, lines};
use crate::SortOrder;

const RECEIVED: i64 = crate::layout_tests::RECEIVED;

/// Phrases of two and three words in a row from the constant runs of the store's patterns,
/// every `step`-th one, and a few queries built around them.
pub(crate) fn template_queries(store: &Store, step: usize) -> Vec<String> {
    let book = store.patterns();
    let mut phrases = BTreeSet::new();
    for id in 1..=book.len() as u32 {
        let Some(templates) = book.runs(id) else {
            continue;
        };
        for run in templates.iter().flatten() {
            let mut words = Vec::new();
            let mut buf = String::new();
            logsift_store::tokens::for_each_word_until(run, &mut buf, |w| {
                words.push(w.to_string());
                false
            });
            for n in [2, 3] {
                for w in words.windows(n) {
                    phrases.insert(w.join(" "));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (i, p) in phrases.iter().enumerate().filter(|(i, _)| i % step == 0) {
        out.push(format!("\"{p}\""));
        let mut words = p.split(' ');
        let (a, b) = (words.next().unwrap(), words.next().unwrap());
        match i % 4 {
            0 => out.push(format!("{a} {b}")),
            1 => out.push(format!("\"{p}\" -{b}x")),
            2 => out.push(format!("\"{p}\" OR nothinghere")),
            _ => out.push(format!("{a} {}*", b.chars().next().unwrap())),
        }
    }
    out
}

#[test]
fn patterns_vouch_for_exactly_the_records_the_check_finds() {
    let Some(dir) = corpus_dir() else {
        return;
    };
    let lines = lines(&dir);
    let tmp = tempfile::tempdir().unwrap();
    let store = crate::layout_tests::store(tmp.path(), Layout::Blocks, &lines);
    let book = store.patterns().clone();
    assert!(book.len() > 50, "{} patterns", book.len());
    let mut queries = template_queries(&store, 7);
    let records: Vec<_> = Vec::new();
    queries.extend(crate::matcher::tests::queries(&records));
    let handle = store.get("main").unwrap();
    let parse = store.parse_options("main", 0);
    let parts: Vec<_> = handle
        .parts(None, None)
        .into_iter()
        .filter_map(|(p, _)| match p {
            PartReader::Blocks(b) => Some(b),
            PartReader::Records(_) => None,
        })
        .collect();
    assert!(parts.len() >= 2, "sealed and hot parts");
    let mid = RECEIVED + 300 * 1_000_000_000;
    let mut vouched = Vouched::default();
    let mut checked = 0;
    for (i, q) in queries.iter().enumerate() {
        // Every other query with blocks counted by word, as over large segments.
        let min_blocks = if i % 2 == 0 { 0 } else { 32 };
        crate::blocks::VOUCH_COUNT_MIN.with(|c| c.set(min_blocks));
        let ast = crate::lang::parse(q).unwrap();
        for part in &parts {
            for (start, end) in [(None, None), (Some(mid), None), (None, Some(mid))] {
                for (order, limit, after) in [
                    (SortOrder::Desc, 10, None),
                    (SortOrder::Asc, 3, Some((mid, 0))),
                    (SortOrder::Desc, 0, None),
                ] {
                    let page = Page {
                        start,
                        end,
                        order,
                        after,
                        limit,
                        ..Page::default()
                    };
                    let plain = search(part, &ast, &parse, &page).unwrap();
                    let with = Page {
                        patterns: Some(book.clone()),
                        ..page
                    };
                    let found = search(part, &ast, &parse, &with).unwrap();
                    let ids = |h: &[crate::blocks::BlockHit]| -> Vec<u64> {
                        h.iter().map(|h| h.id).collect()
                    };
                    assert_eq!(
                        (found.total, found.after_cursor, ids(&found.hits)),
                        (plain.total, plain.after_cursor, ids(&plain.hits)),
                        "{q} {start:?} {end:?} {order:?} {limit}"
                    );
                    for (a, b) in found.hits.iter().zip(&plain.hits) {
                        assert_eq!(a.raw, b.raw, "{q}");
                    }
                    vouched.records += found.vouched.records;
                    vouched.blocks += found.vouched.blocks;
                    vouched.indexed += found.vouched.indexed;
                    checked += 1;
                }
            }
        }
    }
    eprintln!(
        "{vouched:?} over {checked} searches of {} queries",
        queries.len()
    );
    // The shortcut was taken, both ways, or this test shows nothing.
    assert!(
        vouched.records > 1000 && vouched.blocks > 10 && vouched.indexed > 10,
        "{vouched:?} over {checked} searches"
    );
}
