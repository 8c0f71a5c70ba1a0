//! Searching a block segment (`logsift_store::blocks`): a query becomes a block plan, which
//! names the blocks that may hold a match from the block index and the id filters, and a
//! record check ([`Matcher`]) over the records of those blocks.
//!
//! The plan is a superset: each leaf asks for the words a matching record must hold, so a
//! block without them holds no match. Negations, ranges and prefixes plan to every block and
//! are left to the check. A single word known to the block index (a message word, a keyword
//! value, a field word, a severity) is exact at block level: its total is the sum of its
//! frequency over the blocks wholly inside the time range, and only the blocks that supply
//! hits are read.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use logsift_store::blocks::{
    hash_word, BlockSegment, DecodedBlock, FIELD_KEY_MARK, FIELD_TYPED_MARK, FIELD_WORD_MARK,
    KEYWORD_MARK,
};
use logsift_store::tokens;
use tantivy::postings::Postings;
use tantivy::schema::IndexRecordOption;
use tantivy::{DocSet, Term, TERMINATED};

use crate::lang::{Ast, Keyword, Leaf, Target};
use crate::matcher::Matcher;
use crate::QueryError;

/// Which blocks may hold matches.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    All,
    /// A word of the block index (already marked for keywords and fields).
    Word(String),
    /// A high-entropy token, found through the bloom filters.
    Id(u64),
    And(Vec<Plan>),
    Or(Vec<Plan>),
}

/// What [`search`] found.
#[derive(Debug, Default)]
pub struct BlockHits {
    /// Exact number of matching records in the range.
    pub total: u64,
    /// The newest `limit` matches as (timestamp, id, raw line), newest first.
    pub hits: Vec<(i64, u64, Vec<u8>)>,
    /// Blocks the plan named, and blocks read and checked.
    pub candidates: usize,
    pub blocks_read: usize,
}

/// The newest `limit` records of `segment` in `[start, end)` (`None`: open) that match `ast`,
/// and their exact total.
pub fn search(
    segment: &BlockSegment,
    ast: &Ast,
    parse: &logsift_parse::ParseOptions,
    start: Option<i64>,
    end: Option<i64>,
    limit: usize,
) -> Result<BlockHits, QueryError> {
    let mut analyzer = tokens::word_analyzer();
    let plan = simplify(plan(ast, &mut analyzer));
    let n = segment.blocks.len();
    let in_range = |ord: usize| {
        let b = &segment.blocks[ord];
        start.is_none_or(|s| b.ts_max >= s) && end.is_none_or(|e| b.ts_min < e)
    };
    let inside = |ord: usize| {
        let b = &segment.blocks[ord];
        start.is_none_or(|s| b.ts_min >= s) && end.is_none_or(|e| b.ts_max < e)
    };
    let exact = exact_word(ast);
    let mut freqs: Option<Vec<u32>> = None;
    let candidates: Vec<bool> = match (&plan, exact) {
        (Plan::Word(w), true) => {
            let f = word_freqs(segment, w)?;
            let c = f.iter().map(|&x| x > 0).collect();
            freqs = Some(f);
            c
        }
        (Plan::All, true) => vec![true; n],
        _ => eval(segment, &plan)?,
    };
    let mut order: Vec<usize> = (0..n).filter(|&o| candidates[o] && in_range(o)).collect();
    order.sort_by_key(|&o| Reverse(segment.blocks[o].ts_max));
    let mut out = BlockHits {
        candidates: order.len(),
        ..BlockHits::default()
    };
    // Blocks whose count is known without reading them.
    let counted = |ord: usize| -> Option<u64> {
        if !inside(ord) {
            return None;
        }
        match (&freqs, exact) {
            (Some(f), _) => Some(u64::from(f[ord])),
            (None, true) => Some(u64::from(segment.blocks[ord].records)),
            _ => None,
        }
    };
    let mut matcher = Matcher::new(ast);
    let mut block = DecodedBlock::default();
    let required: Vec<memchr::memmem::Finder<'static>> = required_words(ast, &mut analyzer)
        .iter()
        .map(|w| memchr::memmem::Finder::new(w.as_bytes()).into_owned())
        .collect();
    let mut lower = Vec::new();
    // Min-heap of the newest `limit` (timestamp, id) with their lines.
    let mut top: BinaryHeap<Reverse<(i64, u64, Vec<u8>)>> = BinaryHeap::new();
    let full_enough = |top: &BinaryHeap<Reverse<(i64, u64, Vec<u8>)>>, ts_max: i64| {
        limit > 0 && top.len() >= limit && top.peek().is_some_and(|Reverse(t)| t.0 > ts_max)
    };
    for &ord in &order {
        let known = counted(ord);
        if let Some(k) = known {
            out.total += k;
            if limit == 0 || full_enough(&top, segment.blocks[ord].ts_max) {
                continue;
            }
        }
        segment
            .read_block(ord, &mut block)
            .map_err(|e| QueryError::BadRequest(e.to_string()))?;
        out.blocks_read += 1;
        if !required.is_empty() {
            lower.clear();
            lower.extend(block.data.iter().map(u8::to_ascii_lowercase));
        }
        for r in &block.records {
            if start.is_some_and(|s| r.timestamp < s) || end.is_some_and(|e| r.timestamp >= e) {
                continue;
            }
            if !required.is_empty() && lacks_words(&required, &lower[r.raw.clone()]) {
                continue;
            }
            let opts = logsift_parse::ParseOptions {
                received_at_ns: r.received_at,
                ..*parse
            };
            let raw = block.raw(r);
            let record = logsift_parse::parse(r.format, raw, &opts);
            if !matcher.matches(&record, block.source(r)) {
                continue;
            }
            if known.is_none() {
                out.total += 1;
            }
            if limit == 0 {
                continue;
            }
            let key = (r.timestamp, r.id);
            if top.len() < limit {
                top.push(Reverse((key.0, key.1, raw.to_vec())));
            } else if top.peek().is_some_and(|Reverse(t)| (t.0, t.1) < key) {
                top.pop();
                top.push(Reverse((key.0, key.1, raw.to_vec())));
            }
        }
    }
    let mut hits: Vec<_> = top.into_iter().map(|Reverse(h)| h).collect();
    hits.sort_by_key(|h| Reverse((h.0, h.1)));
    out.hits = hits;
    Ok(out)
}

/// Words every match holds in its message or fields: those of the positive message and
/// `fields.*` words and phrases the whole query requires (its leaf, or its AND's leaves).
fn required_words(ast: &Ast, analyzer: &mut tantivy::tokenizer::TextAnalyzer) -> Vec<String> {
    let mut out = Vec::new();
    let leaves: Vec<&Ast> = match ast {
        Ast::And(items) => items.iter().collect(),
        other => vec![other],
    };
    for leaf in leaves {
        if let Ast::Leaf(Leaf::Word { target, text } | Leaf::Phrase { target, text }) = leaf {
            if matches!(target, Target::Message | Target::Json(_)) {
                // A fields word may match a typed value, whose text need not be a word.
                if matches!(target, Target::Json(_)) && typed(text).is_some() {
                    continue;
                }
                let mut stream = analyzer.token_stream(text);
                stream.process(&mut |t| {
                    if t.text.is_ascii() {
                        out.push(t.text.clone());
                    }
                });
            }
        }
    }
    out
}

/// Whether a line (lowercased) certainly lacks one of `required`, so that it cannot match
/// and need not be parsed. Only ASCII lines without escapes are judged: a `\u0041` in JSON or
/// a non-ASCII letter that lowercases to ASCII (the Kelvin sign) could hide a word from a
/// plain search, so such lines are always parsed.
fn lacks_words(required: &[memchr::memmem::Finder<'static>], lower: &[u8]) -> bool {
    if !lower.is_ascii() || memchr::memchr(b'\\', lower).is_some() {
        return false;
    }
    required.iter().any(|f| f.find(lower).is_none())
}

/// Whether the query is one leaf whose plan word is exact at block level: a record holds the
/// word iff it matches, so the word's frequency in a block is the block's count.
fn exact_word(ast: &Ast) -> bool {
    let single = |text: &str| {
        let mut n = 0;
        let mut entropy = false;
        let mut analyzer = tokens::word_analyzer();
        let mut stream = analyzer.token_stream(text);
        stream.process(&mut |t| {
            n += 1;
            entropy |= tokens::is_high_entropy(&t.text);
        });
        n == 1 && !entropy
    };
    match ast {
        Ast::All => true,
        Ast::Leaf(Leaf::Word { target, text }) | Ast::Leaf(Leaf::Phrase { target, text }) => {
            match target {
                Target::Message => single(text),
                // A field word may also match a typed value: not one word.
                Target::Json(_) => single(text) && typed(text).is_none(),
                Target::Keyword(_) => !text.is_empty(),
            }
        }
        Ast::Leaf(Leaf::Severity { min, max }) => min == max,
        _ => false,
    }
}

fn word_freqs(segment: &BlockSegment, word: &str) -> Result<Vec<u32>, QueryError> {
    let mut out = vec![0u32; segment.blocks.len()];
    let term = Term::from_field_text(segment.schema.words, word);
    for reader in segment.searcher.segment_readers() {
        let inverted = reader
            .inverted_index(segment.schema.words)
            .map_err(|e| QueryError::BadRequest(e.to_string()))?;
        if let Some(mut postings) = inverted
            .read_postings(&term, IndexRecordOption::WithFreqs)
            .map_err(|e| QueryError::BadRequest(e.to_string()))?
        {
            let mut doc = postings.doc();
            while doc != TERMINATED {
                if let Some(slot) = out.get_mut(doc as usize) {
                    *slot = postings.term_freq();
                }
                doc = postings.advance();
            }
        }
    }
    Ok(out)
}

fn eval(segment: &BlockSegment, plan: &Plan) -> Result<Vec<bool>, QueryError> {
    let n = segment.blocks.len();
    Ok(match plan {
        Plan::All => vec![true; n],
        Plan::Word(w) => word_freqs(segment, w)?.into_iter().map(|f| f > 0).collect(),
        Plan::Id(h) => {
            if segment.may_hold_id(*h) {
                (0..n).map(|o| segment.block_may_hold_id(o, *h)).collect()
            } else {
                vec![false; n]
            }
        }
        Plan::And(items) => {
            let mut acc = vec![true; n];
            // Words first: they are exact lists, filters are scans.
            let mut items: Vec<&Plan> = items.iter().collect();
            items.sort_by_key(|p| matches!(p, Plan::Id(_)));
            for item in items {
                if !acc.iter().any(|&b| b) {
                    break;
                }
                if let Plan::Id(h) = item {
                    if !segment.may_hold_id(*h) {
                        acc.fill(false);
                        break;
                    }
                    for (o, slot) in acc.iter_mut().enumerate() {
                        *slot = *slot && segment.block_may_hold_id(o, *h);
                    }
                    continue;
                }
                let set = eval(segment, item)?;
                for (a, b) in acc.iter_mut().zip(set) {
                    *a &= b;
                }
            }
            acc
        }
        Plan::Or(items) => {
            let mut acc = vec![false; n];
            for item in items {
                let set = eval(segment, item)?;
                for (a, b) in acc.iter_mut().zip(set) {
                    *a |= b;
                }
            }
            acc
        }
    })
}

fn simplify(plan: Plan) -> Plan {
    match plan {
        Plan::And(items) => {
            let mut kept: Vec<Plan> = items
                .into_iter()
                .map(simplify)
                .filter(|p| *p != Plan::All)
                .collect();
            match kept.len() {
                0 => Plan::All,
                1 => kept.pop().unwrap_or(Plan::All),
                _ => Plan::And(kept),
            }
        }
        Plan::Or(items) => {
            let mut kept: Vec<Plan> = items.into_iter().map(simplify).collect();
            if kept.contains(&Plan::All) {
                return Plan::All;
            }
            if kept.len() == 1 {
                return kept.pop().unwrap_or(Plan::All);
            }
            Plan::Or(kept)
        }
        other => other,
    }
}

/// The typed term a `fields.*` query word also matches, as the block writer spells it.
fn typed(text: &str) -> Option<String> {
    if let Ok(i) = text.parse::<i64>() {
        Some(format!("i:{i}"))
    } else if let Ok(u) = text.parse::<u64>() {
        Some(format!("u:{u}"))
    } else if let Ok(f) = text.parse::<f64>() {
        Some(format!("f:{f}"))
    } else {
        text.parse::<bool>().ok().map(|b| format!("b:{b}"))
    }
}

fn plan(ast: &Ast, analyzer: &mut tantivy::tokenizer::TextAnalyzer) -> Plan {
    match ast {
        Ast::All | Ast::Not(_) => Plan::All,
        Ast::And(items) => Plan::And(items.iter().map(|a| plan(a, analyzer)).collect()),
        Ast::Or(items) => Plan::Or(items.iter().map(|a| plan(a, analyzer)).collect()),
        Ast::Leaf(leaf) => leaf_plan(leaf, analyzer),
    }
}

fn words_plan(
    analyzer: &mut tantivy::tokenizer::TextAnalyzer,
    text: &str,
    skip_last: bool,
    mark: impl Fn(&str) -> String,
) -> Plan {
    let mut words = Vec::new();
    let mut stream = analyzer.token_stream(text);
    stream.process(&mut |t| words.push(t.text.clone()));
    if skip_last {
        // A prefix's last word may be the start of any word or id.
        words.pop();
    }
    Plan::And(
        words
            .iter()
            .map(|w| {
                if tokens::is_high_entropy(w) {
                    Plan::Id(hash_word(mark(w).as_bytes()))
                } else {
                    Plan::Word(mark(w))
                }
            })
            .collect(),
    )
}

fn keyword_word(k: Keyword, value: &str) -> String {
    let value = if k == Keyword::Source {
        value.to_string()
    } else {
        value.to_lowercase()
    };
    format!("{KEYWORD_MARK}{}\0{value}", k.name())
}

fn leaf_plan(leaf: &Leaf, analyzer: &mut tantivy::tokenizer::TextAnalyzer) -> Plan {
    match leaf {
        Leaf::Word { target, text } | Leaf::Phrase { target, text } => match target {
            Target::Message => words_plan(analyzer, text, false, str::to_string),
            Target::Keyword(k) if !text.is_empty() => Plan::Word(keyword_word(*k, text)),
            Target::Keyword(_) => Plan::All,
            Target::Json(key) => {
                let words = words_plan(analyzer, text, false, |w| {
                    format!("{FIELD_WORD_MARK}{key}\0{w}")
                });
                match typed(text) {
                    Some(t) => Plan::Or(vec![
                        words,
                        Plan::Word(format!("{FIELD_TYPED_MARK}{key}\0{t}")),
                    ]),
                    None => words,
                }
            }
        },
        Leaf::Prefix { target, prefix } => match target {
            Target::Message => words_plan(analyzer, prefix, true, str::to_string),
            Target::Json(key) => {
                let words = words_plan(analyzer, prefix, true, |w| {
                    format!("{FIELD_WORD_MARK}{key}\0{w}")
                });
                Plan::And(vec![words, Plan::Word(format!("{FIELD_KEY_MARK}{key}"))])
            }
            Target::Keyword(_) => Plan::All,
        },
        Leaf::Exists {
            target: Target::Json(key),
        }
        | Leaf::Range {
            target: Target::Json(key),
            ..
        } => Plan::Word(format!("{FIELD_KEY_MARK}{key}")),
        Leaf::Exists { .. } | Leaf::Range { .. } => Plan::All,
        Leaf::Severity { min, max } => Plan::Or(
            (*min..=*max)
                .map(|c| Plan::Word(format!("{KEYWORD_MARK}severity\0{c}")))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use logsift_core::Format;
    use logsift_store::blocks::{BlockRecord, BlockWriter};

    use super::*;

    const RECEIVED: i64 = 1_764_547_200_000_000_000;

    /// A block segment answers every query as a scan of its records with the matcher does:
    /// same total, same newest hits, for records of many streams over many blocks.
    #[test]
    fn block_search_agrees_with_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let parse = logsift_parse::ParseOptions {
            received_at_ns: RECEIVED,
            logfmt: true,
            ..Default::default()
        };
        let hosts = ["web-01", "web-02", "db-1", "cache"];
        let words = ["GET", "POST", "timeout", "upstream", "timed", "out", "ok"];
        let mut lines: Vec<(Format, String)> = Vec::new();
        for i in 0..3000u64 {
            let host = hosts[(i % 4) as usize];
            let w1 = words[(i * 7 % 7) as usize];
            let w2 = words[(i * 3 % 7) as usize];
            if i % 3 == 0 {
                lines.push((
                    Format::Json,
                    format!(
                        r#"{{"message":"{w1} {w2} req {i:08x}","host":"{host}","level":"{}","status":{},"ok":{}}}"#,
                        ["info", "error", "warning"][(i % 3) as usize],
                        200 + (i % 5) * 100,
                        i % 2 == 0
                    ),
                ));
            } else {
                lines.push((
                    Format::Syslog,
                    format!(
                        "<{}>1 2026-12-02T12:{:02}:{:02}Z {host} app{} - - - {w1} {w2} upstream timed out user=u{} id=a1b2c3{i:04}",
                        8 + i % 8,
                        (i / 60) % 60,
                        i % 60,
                        i % 3,
                        i % 11
                    ),
                ));
            }
        }
        let mut writer = BlockWriter::new(3);
        let mut parsed = Vec::new();
        for (id, (format, raw)) in lines.iter().enumerate() {
            let record = logsift_parse::parse(*format, raw.as_bytes(), &parse);
            let ts = record.timestamp.unwrap_or(RECEIVED);
            writer.add(
                &BlockRecord {
                    id: id as u64,
                    timestamp: ts,
                    received_at: RECEIVED,
                    format: *format,
                    source: "test",
                    raw: raw.as_bytes(),
                },
                &record,
            );
            parsed.push((ts, id as u64, record));
        }
        let segment = writer.finish(&dir.path().join("seg")).unwrap();
        assert_eq!(segment.num_records(), 3000);
        assert!(segment.blocks.len() >= 3000 / 128);
        let mid = parsed[1500].0;
        let mut reads = Vec::new();
        for q in [
            "*",
            "GET",
            "get OR post",
            "\"upstream timed out\"",
            "\"timed out\"",
            "\"out upstream\"",
            "\"get get\"",
            "host:web-01",
            "host:web-01 -GET",
            "severity:error",
            "severity:<=warning",
            "fields.status:500",
            "fields.ok:true",
            "fields.user:u3",
            "fields.level:*",
            "a1b2c30017",
            "a1b2c3001*",
            "0000000c",
            "nothing-here",
            "app:app1",
            "-timeout",
        ] {
            let ast = crate::lang::parse(q).unwrap();
            for (start, end) in [(None, None), (Some(mid), None), (None, Some(mid))] {
                let found = search(&segment, &ast, &parse, start, end, 10).unwrap();
                let mut matcher = Matcher::new(&ast);
                let expected: BTreeSet<(i64, u64)> = parsed
                    .iter()
                    .filter(|(ts, _, _)| {
                        start.is_none_or(|s| *ts >= s) && end.is_none_or(|e| *ts < e)
                    })
                    .filter(|(_, _, r)| matcher.matches(r, "test"))
                    .map(|(ts, id, _)| (*ts, *id))
                    .collect();
                assert_eq!(found.total, expected.len() as u64, "{q} {start:?} {end:?}");
                let newest: Vec<(i64, u64)> = expected.iter().rev().take(10).copied().collect();
                let got: Vec<(i64, u64)> = found.hits.iter().map(|h| (h.0, h.1)).collect();
                assert_eq!(got, newest, "{q} {start:?} {end:?}");
                for (_, id, raw) in &found.hits {
                    assert_eq!(raw, lines[*id as usize].1.as_bytes());
                }
                if start.is_none() && end.is_none() {
                    reads.push((q, found.total, found.blocks_read));
                }
            }
        }
        let read = |q: &str| reads.iter().find(|r| r.0 == q).map(|r| (r.1, r.2));
        let blocks = segment.blocks.len();
        // A needle reads its block (and the rare false positive), not the segment.
        assert_eq!(read("a1b2c30017").map(|r| r.0), Some(1));
        assert!(read("a1b2c30017").unwrap().1 <= 3, "{reads:?}");
        // A word in every record is counted from the index: only the newest blocks are read.
        assert_eq!(read("GET"), Some((3000, read("GET").unwrap().1)));
        assert!(read("GET").unwrap().1 <= 8, "{reads:?} of {blocks} blocks");
        assert!(read("host:web-01").unwrap().1 <= 8, "{reads:?}");
        assert_eq!(read("nothing-here"), Some((0, 0)));
    }
}
