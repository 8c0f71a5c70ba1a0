//! Whether one parsed record matches a query, without an index.
//!
//! The block index of #16 (`docs/block-index.md`) finds candidate blocks of records and must
//! then check each record against the whole query; an in-memory hot tier and alert rules
//! evaluated on new records need the same check. [`Matcher`] answers it with exactly the
//! meaning [`crate::compile`] gives a query over an index: words are the lowercased tokens of
//! the word analyzer, in a row for phrases; keyword fields match whole lowercased values (the
//! source as written); `fields.<key>` matches the words of string values, and numbers and
//! booleans by typed value; ranges and `exists` follow the terms the indexer writes. The tests
//! hold the two to the same answers over real logs.

use std::cmp::Ordering;
use std::ops::Bound;

use logsift_core::{FieldValue, Record};
use tantivy::tokenizer::{TextAnalyzer, TokenStream};

use crate::lang::{Ast, Keyword, Leaf, Target};

/// A query compiled for checking records one at a time. Cheap to clone: each thread that
/// checks records keeps its own (it holds word buffers).
#[derive(Clone)]
pub struct Matcher {
    root: Node,
    /// The message's words of the record being checked, made once per record on first use
    /// (all of them when `message_done`, else up to where a phrase was found).
    message_words: Words,
    message_done: bool,
    scratch: Words,
    /// The pattern id of the record being checked.
    pattern: u32,
}

/// The words of a text as the index analyses it, in one buffer that is reused from record to
/// record: a `String` per word cost two allocator calls per word of every record checked,
/// which was half of a phrase search's time over block segments.
#[derive(Clone, Debug, Default)]
struct Words {
    text: String,
    ends: Vec<usize>,
    /// The scanner's buffer for the word being found.
    word: String,
}

impl Words {
    fn fill(&mut self, text: &str) {
        self.fill_until(text, |_| false);
    }

    /// Fills with the words of `text` (as the word analyzer finds them:
    /// `logsift_store::tokens::for_each_word`) until `stop` (asked after each word) says so;
    /// whether it did. A phrase is usually found a few words in: the rest need not be
    /// analysed.
    fn fill_until(&mut self, text: &str, mut stop: impl FnMut(&Words) -> bool) -> bool {
        self.text.clear();
        self.ends.clear();
        let mut word = std::mem::take(&mut self.word);
        let stopped = logsift_store::tokens::for_each_word_until(text, &mut word, |w| {
            self.text.push_str(w);
            self.ends.push(self.text.len());
            stop(self)
        });
        self.word = word;
        stopped
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.get(i))
    }
}

#[derive(Clone, Debug)]
enum Node {
    All,
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Leaf(Check),
}

/// A typed JSON value as the indexer writes it for a number or a boolean.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Typed {
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

#[derive(Clone, Debug)]
enum Check {
    /// Message words in a row; the last only as a prefix when `prefix`.
    MessageWords {
        words: Vec<String>,
        prefix: bool,
    },
    MessageExists,
    MessageRange((Bound<String>, Bound<String>)),
    /// The words of `fields.<key>`'s string values, or its typed value.
    FieldWords {
        key: String,
        words: Vec<String>,
        prefix: bool,
        typed: Option<Typed>,
    },
    FieldExists(String),
    FieldNumRange {
        key: String,
        ints: (Bound<i64>, Bound<i64>),
        floats: (Bound<f64>, Bound<f64>),
    },
    FieldStrRange {
        key: String,
        range: (Bound<String>, Bound<String>),
    },
    /// A keyword's whole value (lowercased except `source`); a prefix of it when `prefix`.
    Keyword {
        keyword: Keyword,
        value: String,
        prefix: bool,
    },
    KeywordExists(Keyword),
    KeywordRange {
        keyword: Keyword,
        range: (Bound<String>, Bound<String>),
    },
    Severity {
        min: u8,
        max: u8,
    },
    /// `pattern:<id>`: the record's pattern id, when the caller knows it (a block segment's
    /// header); records checked without one never match, like records stored without one.
    Pattern(u32),
}

impl Matcher {
    pub fn new(ast: &Ast) -> Matcher {
        let mut analyzer = logsift_store::tokens::word_analyzer();
        let root = node(ast, &mut analyzer);
        Matcher {
            root,
            message_words: Words::default(),
            message_done: false,
            scratch: Words::default(),
            pattern: 0,
        }
    }

    /// Whether `record`, received through `source`, matches the query.
    pub fn matches(&mut self, record: &Record<'_>, source: &str) -> bool {
        self.matches_with_pattern(record, source, 0)
    }

    /// [`Self::matches`] for a record of pattern id `pattern` (0: none).
    pub fn matches_with_pattern(
        &mut self,
        record: &Record<'_>,
        source: &str,
        pattern: u32,
    ) -> bool {
        self.pattern = pattern;
        self.message_done = false;
        let root = std::mem::replace(&mut self.root, Node::All);
        let found = self.eval(&root, record, source);
        self.root = root;
        found
    }

    fn eval(&mut self, node: &Node, record: &Record<'_>, source: &str) -> bool {
        match node {
            Node::All => true,
            Node::And(items) => items.iter().all(|n| self.eval(n, record, source)),
            Node::Or(items) => items.iter().any(|n| self.eval(n, record, source)),
            Node::Not(inner) => !self.eval(inner, record, source),
            Node::Leaf(check) => self.check(check, record, source),
        }
    }

    fn message(&mut self, record: &Record<'_>) -> &Words {
        if !self.message_done {
            self.message_words.fill(&record.message);
            self.message_done = true;
        }
        &self.message_words
    }

    fn check(&mut self, check: &Check, record: &Record<'_>, source: &str) -> bool {
        match check {
            Check::MessageWords { words, prefix } if self.message_done => {
                in_a_row(&self.message_words, words, *prefix)
            }
            Check::MessageWords { words, prefix } => {
                let n = words.len();
                let found = n == 0
                    || self.message_words.fill_until(&record.message, |w| {
                        w.len() >= n && ends_with_phrase(w, words, *prefix)
                    });
                // Analysed to the end only if the phrase was not found.
                self.message_done = !found;
                found
            }
            Check::MessageExists => !self.message(record).is_empty(),
            Check::MessageRange(range) => self
                .message(record)
                .iter()
                .any(|w| within_str(range, &as_term(w))),
            Check::FieldWords {
                key,
                words,
                prefix,
                typed,
            } => record.fields().any(|(name, value)| {
                if name != key.as_str() {
                    return false;
                }
                match (value, typed) {
                    (FieldValue::Str(s), _) => self.text_holds(s, words, *prefix),
                    (FieldValue::Json(t), _) => self.text_holds(t, words, *prefix),
                    (FieldValue::Number(n), Some(q)) => typed_number(n) == Some(*q),
                    (FieldValue::Bool(b), Some(Typed::Bool(q))) => b == q,
                    _ => false,
                }
            }),
            Check::FieldExists(key) => record.fields().any(|(name, value)| {
                let under = name == key.as_str()
                    || (name.len() > key.len()
                        && name.starts_with(key.as_str())
                        && name.as_bytes()[key.len()] == b'.');
                under
                    && match value {
                        FieldValue::Str(s) => self.has_words(s),
                        FieldValue::Json(t) => self.has_words(t),
                        FieldValue::Number(n) => typed_number(n).is_some(),
                        FieldValue::Bool(_) => true,
                        FieldValue::Null => false,
                    }
            }),
            Check::FieldNumRange { key, ints, floats } => {
                record.fields().any(|(name, value)| match value {
                    FieldValue::Number(n) if name == key.as_str() => match typed_number(n) {
                        Some(Typed::I64(i)) => within(ints, &i),
                        Some(Typed::F64(f)) => within(floats, &f),
                        // The compiled range has no u64 terms: such values are above i64.
                        _ => false,
                    },
                    _ => false,
                })
            }
            Check::FieldStrRange { key, range } => record.fields().any(|(name, value)| {
                let text = match value {
                    FieldValue::Str(s) if name == key.as_str() => s.as_ref(),
                    FieldValue::Json(t) if name == key.as_str() => t,
                    _ => return false,
                };
                let mut words = std::mem::take(&mut self.scratch);
                words.fill(text);
                let found = words.iter().any(|w| within_str(range, &as_term(w)));
                self.scratch = words;
                found
            }),
            Check::Keyword {
                keyword,
                value,
                prefix,
            } => keyword_value(record, source, *keyword).is_some_and(|v| {
                let v = normal_keyword(*keyword, v);
                if *prefix {
                    v.starts_with(value.as_str())
                } else {
                    v == *value
                }
            }),
            Check::KeywordExists(keyword) => keyword_value(record, source, *keyword).is_some(),
            Check::KeywordRange { keyword, range } => keyword_value(record, source, *keyword)
                .is_some_and(|v| within_str(range, &normal_keyword(*keyword, v))),
            Check::Severity { min, max } => record
                .severity
                .is_some_and(|s| (*min..=*max).contains(&s.code())),
            Check::Pattern(id) => self.pattern == *id,
        }
    }

    /// Whether every record whose message holds the runs of one of `templates` (each run as
    /// whole consecutive whitespace-separated tokens) matches: what a log pattern's constant
    /// text vouches for (`logsift_store::patterns::PatternBook::runs`). Words never span
    /// whitespace, so a run's words are words of the message in a row. Only message words,
    /// phrases and prefixes are vouched for; a negation, a keyword or a field needs the record.
    pub fn vouched_by(&mut self, templates: &[Vec<String>]) -> bool {
        if templates.is_empty() {
            return false;
        }
        templates.iter().all(|runs| {
            // Each run analysed once, whatever the number of leaves.
            let words: Vec<Words> = runs
                .iter()
                .map(|run| {
                    let mut w = Words::default();
                    w.fill(run);
                    w
                })
                .collect();
            sure(&self.root, &words)
        })
    }

    /// Whether some record's pattern could vouch for a match ([`Self::vouched_by`]): a query
    /// of message words, phrases and prefixes joined by `AND` and `OR`, of at most
    /// [`MAX_VOUCHED_LEAVES`] leaves (deciding costs a pass over every template per leaf).
    pub fn vouchable(&self) -> bool {
        fn of(node: &Node, leaves: &mut usize) -> bool {
            match node {
                Node::All => true,
                Node::And(items) | Node::Or(items) => items.iter().all(|n| of(n, leaves)),
                Node::Not(_) => false,
                Node::Leaf(check) => {
                    *leaves += 1;
                    matches!(check, Check::MessageWords { .. } | Check::MessageExists)
                }
            }
        }
        let mut leaves = 0;
        of(&self.root, &mut leaves) && leaves <= MAX_VOUCHED_LEAVES
    }

    fn text_holds(&mut self, text: &str, words: &[String], prefix: bool) -> bool {
        let mut tokens = std::mem::take(&mut self.scratch);
        tokens.fill(text);
        let found = in_a_row(&tokens, words, prefix);
        self.scratch = tokens;
        found
    }

    fn has_words(&mut self, text: &str) -> bool {
        let mut word = std::mem::take(&mut self.scratch.word);
        let any = logsift_store::tokens::for_each_word_until(text, &mut word, |_| true);
        self.scratch.word = word;
        any
    }
}

/// Queries with more leaves are not vouched for by patterns ([`Matcher::vouchable`]).
pub const MAX_VOUCHED_LEAVES: usize = 16;

/// Whether every message holding `runs` (their words, each run's in a row) matches `node`.
fn sure(node: &Node, runs: &[Words]) -> bool {
    match node {
        Node::All => true,
        Node::And(items) => items.iter().all(|n| sure(n, runs)),
        Node::Or(items) => items.iter().any(|n| sure(n, runs)),
        Node::Not(_) => false,
        Node::Leaf(Check::MessageWords { words, prefix }) => {
            words.is_empty() || runs.iter().any(|w| in_a_row(w, words, *prefix))
        }
        Node::Leaf(Check::MessageExists) => runs.iter().any(|w| !w.is_empty()),
        Node::Leaf(_) => false,
    }
}

fn words(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    stream.process(&mut |t| out.push(t.text.clone()));
    out
}

/// Whether `words` occur in `tokens` one after the other; no words match anything, as a
/// query of only punctuation adds no constraint.
fn in_a_row(tokens: &Words, words: &[String], prefix: bool) -> bool {
    let n = words.len();
    (n..=tokens.len()).any(|end| phrase_at(tokens, end - n, words, prefix))
}

/// Whether the last words of `tokens` are `words` (at least as many).
fn ends_with_phrase(tokens: &Words, words: &[String], prefix: bool) -> bool {
    phrase_at(tokens, tokens.len() - words.len(), words, prefix)
}

/// Whether `words` occur in `tokens` from word `start` on (which leaves room for them).
fn phrase_at(tokens: &Words, start: usize, words: &[String], prefix: bool) -> bool {
    let n = words.len();
    words.iter().enumerate().all(|(i, q)| {
        let t = tokens.get(start + i);
        if prefix && i + 1 == n {
            t.starts_with(q.as_str())
        } else {
            t == q
        }
    })
}

/// A JSON number as the indexer types it: i64 if it is one, else u64, else f64.
fn typed_number(text: &str) -> Option<Typed> {
    if let Ok(i) = text.parse::<i64>() {
        Some(Typed::I64(i))
    } else if let Ok(u) = text.parse::<u64>() {
        Some(Typed::U64(u))
    } else {
        text.parse::<f64>().ok().map(Typed::F64)
    }
}

/// The typed value a query word also matches in `fields.*` (`fields.status:500`), as tantivy
/// converts it: a number (normalised like the indexer's), else a boolean.
fn typed_query(text: &str) -> Option<Typed> {
    typed_number(text).or_else(|| text.parse::<bool>().ok().map(Typed::Bool))
}

fn keyword_value<'r>(record: &'r Record<'_>, source: &'r str, keyword: Keyword) -> Option<&'r str> {
    match keyword {
        Keyword::Host => record.host.as_deref(),
        Keyword::App => record.app.as_deref(),
        Keyword::Procid => record.procid.as_deref(),
        Keyword::Msgid => record.msgid.as_deref(),
        Keyword::Facility => record.facility.map(|f| f.name()),
        Keyword::Source => Some(source),
        Keyword::ParseError => record.parse_error.as_deref(),
    }
}

/// A keyword value as its term: lowercased, except `source`, which is indexed as written.
fn normal_keyword(keyword: Keyword, value: &str) -> String {
    if keyword == Keyword::Source {
        value.to_string()
    } else {
        value.to_lowercase()
    }
}

/// The term the indexer wrote for a word: string ranges run over terms, and a folded id's term
/// is its bucket (so ranges do not see ids, in the index or here; a query needs the same answer
/// from every kind of segment).
fn as_term(word: &str) -> std::borrow::Cow<'_, str> {
    if logsift_store::tokens::is_high_entropy(word) {
        std::borrow::Cow::Owned(logsift_store::tokens::bucket_term(word))
    } else {
        std::borrow::Cow::Borrowed(word)
    }
}

fn within<T: PartialOrd>(range: &(Bound<T>, Bound<T>), v: &T) -> bool {
    let lo = match &range.0 {
        Bound::Unbounded => true,
        Bound::Included(b) => v >= b,
        Bound::Excluded(b) => v > b,
    };
    let hi = match &range.1 {
        Bound::Unbounded => true,
        Bound::Included(b) => v <= b,
        Bound::Excluded(b) => v < b,
    };
    lo && hi
}

/// String ranges compare bytes, as the term dictionary orders them.
fn within_str(range: &(Bound<String>, Bound<String>), v: &str) -> bool {
    let cmp = |b: &String| v.as_bytes().cmp(b.as_bytes());
    let lo = match &range.0 {
        Bound::Unbounded => true,
        Bound::Included(b) => cmp(b) != Ordering::Less,
        Bound::Excluded(b) => cmp(b) == Ordering::Greater,
    };
    let hi = match &range.1 {
        Bound::Unbounded => true,
        Bound::Included(b) => cmp(b) != Ordering::Greater,
        Bound::Excluded(b) => cmp(b) == Ordering::Less,
    };
    lo && hi
}

fn node(ast: &Ast, analyzer: &mut TextAnalyzer) -> Node {
    match ast {
        Ast::All => Node::All,
        Ast::And(items) => Node::And(items.iter().map(|a| node(a, analyzer)).collect()),
        Ast::Or(items) => Node::Or(items.iter().map(|a| node(a, analyzer)).collect()),
        Ast::Not(inner) => Node::Not(Box::new(node(inner, analyzer))),
        Ast::Leaf(leaf) => leaf_node(leaf, analyzer),
    }
}

fn leaf_node(leaf: &Leaf, analyzer: &mut TextAnalyzer) -> Node {
    let check = match leaf {
        Leaf::Word { target, text } | Leaf::Phrase { target, text } => match target {
            Target::Message => Check::MessageWords {
                words: words(analyzer, text),
                prefix: false,
            },
            Target::Json(key) => Check::FieldWords {
                key: key.clone(),
                words: words(analyzer, text),
                prefix: false,
                typed: typed_query(text),
            },
            Target::Keyword(k) => match keyword_term(*k, text) {
                Some(value) => Check::Keyword {
                    keyword: *k,
                    value,
                    prefix: false,
                },
                None => return Node::All,
            },
        },
        Leaf::Prefix { target, prefix } => match target {
            Target::Message => Check::MessageWords {
                words: words(analyzer, prefix),
                prefix: true,
            },
            Target::Json(key) => Check::FieldWords {
                key: key.clone(),
                words: words(analyzer, prefix),
                prefix: true,
                typed: None,
            },
            Target::Keyword(k) => match keyword_term(*k, prefix) {
                Some(value) => Check::Keyword {
                    keyword: *k,
                    value,
                    prefix: true,
                },
                None => return Node::All,
            },
        },
        Leaf::Exists { target } => exists(target),
        Leaf::Range {
            target,
            lower,
            upper,
        } => {
            if matches!((lower, upper), (Bound::Unbounded, Bound::Unbounded)) {
                return Node::Leaf(exists(target));
            }
            match target {
                Target::Json(key) => json_range(key, lower, upper, analyzer),
                // The parser refuses message ranges; over its words if one is ever built.
                Target::Message => {
                    let norm = |b: &Bound<String>, a: &mut TextAnalyzer| {
                        map_bound(b, |s| words(a, s).join(" "))
                    };
                    Check::MessageRange((norm(lower, analyzer), norm(upper, analyzer)))
                }
                Target::Keyword(k) => {
                    let norm = |b: &Bound<String>| map_bound(b, |s| normal_keyword(*k, s));
                    Check::KeywordRange {
                        keyword: *k,
                        range: (norm(lower), norm(upper)),
                    }
                }
            }
        }
        Leaf::Severity { min, max } => Check::Severity {
            min: *min,
            max: *max,
        },
        Leaf::Pattern { id } => Check::Pattern(*id),
    };
    Node::Leaf(check)
}

/// The term a keyword query makes: `None` (matches everything) when the keyword tokenizer
/// makes no token of it.
fn keyword_term(keyword: Keyword, text: &str) -> Option<String> {
    // The keyword tokenizer keeps the whole value as one token, and makes none of "".
    (!text.is_empty()).then(|| normal_keyword(keyword, text))
}

fn exists(target: &Target) -> Check {
    match target {
        Target::Message => Check::MessageExists,
        Target::Keyword(k) => Check::KeywordExists(*k),
        Target::Json(key) => Check::FieldExists(key.clone()),
    }
}

fn map_bound<T>(b: &Bound<String>, f: impl FnOnce(&str) -> T) -> Bound<T> {
    match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(s) => Bound::Included(f(s)),
        Bound::Excluded(s) => Bound::Excluded(f(s)),
    }
}

/// `fields.<key>` ranges: numeric when both bounds are numbers (integers and floats, as the
/// compiled query's i64 and f64 ranges), over the words of string values otherwise.
fn json_range(
    key: &str,
    lower: &Bound<String>,
    upper: &Bound<String>,
    analyzer: &mut TextAnalyzer,
) -> Check {
    if let Some((lo, hi)) = crate::compile::numeric_bounds(lower, upper) {
        return Check::FieldNumRange {
            key: key.to_string(),
            ints: crate::compile::integer_bounds(lo, hi),
            floats: (lo, hi),
        };
    }
    let norm = |b: &Bound<String>, a: &mut TextAnalyzer| map_bound(b, |s| words(a, s).join(" "));
    Check::FieldStrRange {
        key: key.to_string(),
        range: (norm(lower, analyzer), norm(upper, analyzer)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use logsift_core::entry::Entry;
    use logsift_core::Format;
    use logsift_store::LogSchema;
    use tantivy::collector::DocSetCollector;
    use tantivy::{Index, IndexWriter};

    use super::*;
    use crate::compile::Compiler;

    const RECEIVED: i64 = 1_764_547_200_000_000_000;
    const SOURCE: &str = "syslog-tcp 127.0.0.1:5140";

    pub(crate) fn corpus_dir() -> Option<PathBuf> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
        if dir.is_dir() {
            Some(dir)
        } else {
            eprintln!("skipping: {} is absent", dir.display());
            None
        }
    }

    /// Real lines of every shape the corpus has, and a few that exercise typed values.
    pub(crate) fn lines(dir: &std::path::Path) -> Vec<(Format, Vec<u8>)> {
        let mut out = Vec::new();
        let mut files: Vec<PathBuf> = Vec::new();
        for sub in ["json", "syslog"] {
            for e in std::fs::read_dir(dir.join(sub)).unwrap() {
                files.push(e.unwrap().path());
            }
        }
        for e in std::fs::read_dir(dir.join("loghub")).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                for f in std::fs::read_dir(&p).unwrap() {
                    let f = f.unwrap().path();
                    if f.extension().is_some_and(|x| x == "log") {
                        files.push(f);
                    }
                }
            }
        }
        files.sort();
        for f in files {
            let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
            let tsv = f.extension().is_some_and(|x| x == "tsv");
            let format = match f.extension().and_then(|x| x.to_str()) {
                Some("jsonl") => Format::Json,
                Some("tsv") => Format::Auto,
                _ => Format::Syslog,
            };
            for line in text.lines().skip(tsv as usize).take(150) {
                let raw = if tsv {
                    line.split('\t').next().unwrap_or("")
                } else {
                    line
                };
                out.push((format, raw.as_bytes().to_vec()));
            }
        }
        for extra in [
            r#"{"message":"typed one","status":500,"ratio":0.25,"ok":true,"big":18446744073709551615,"user":{"id":"u-17","name":"Ann Lee"}}"#,
            r#"{"message":"typed two","status":"500","ratio":-3,"ok":false,"tags":["a","b"],"empty":"","nothing":null}"#,
            r#"{"message":"typed three","status":404,"ratio":1e3,"user.id":"U-18"}"#,
        ] {
            out.push((Format::Json, extra.as_bytes().to_vec()));
        }
        out
    }

    /// Queries made from the records themselves, so that most match something, plus fixed
    /// ones for every leaf kind and combination.
    pub(crate) fn queries(records: &[Record<'_>]) -> Vec<String> {
        let mut analyzer = logsift_store::tokens::word_analyzer();
        let mut out: Vec<String> = [
            "*",
            "typed",
            "fields.status:500",
            "fields.status:\"500\"",
            "fields.ok:true",
            "fields.ok:false",
            "fields.ratio:>0",
            "fields.ratio:[-3 TO 0.25]",
            "fields.ratio:{-3 TO 1000]",
            "fields.big:>1",
            "fields.user:*",
            "fields.user.id:*",
            "fields.user.id:u-17",
            "fields.empty:*",
            "fields.nothing:*",
            "fields.tags:a",
            "fields.user.name:[a TO m]",
            "fields.status:[400 TO 499]",
            "severity:error",
            "severity:<=warning",
            "severity:*",
            "host:*",
            "-host:*",
            "app:ss*",
            "host:[a TO m]",
            "host:{m TO *]",
            "facility:local4",
            "parse_error:*",
            "-parse_error:*",
            "source:\"syslog-tcp 127.0.0.1:5140\"",
            "source:syslog-tcp",
            "message:*",
            "-message:*",
            "session AND -closed",
            "session OR failed",
            "\"session opened\"",
            "sess*",
            "\"session op*\"",
            "-(a OR the)",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (i, r) in records.iter().enumerate().step_by(7) {
            let words = words(&mut analyzer, &r.message);
            if let Some(w) = words.get(i % words.len().max(1)) {
                out.push(w.clone());
                if w.len() > 3 {
                    out.push(format!("{}*", &w[..3]));
                }
                out.push(format!("-{w}"));
            }
            if words.len() >= 2 {
                let at = (i / 7) % (words.len() - 1);
                out.push(format!("\"{} {}\"", words[at], words[at + 1]));
                out.push(format!("{} OR -{}", words[at], words[at + 1]));
            }
            if let Some(h) = &r.host {
                if h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    out.push(format!("host:{h}"));
                    out.push(format!("host:{h} AND {}", words.first().map_or("x", |w| w)));
                }
            }
            for (name, value) in r.fields() {
                if !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                {
                    continue;
                }
                match value {
                    FieldValue::Str(s) => {
                        let w = super::words(&mut analyzer, s);
                        if let Some(w) = w.first() {
                            out.push(format!("fields.{name}:{w}"));
                            out.push(format!("fields.{name}:[{w} TO *]"));
                        }
                    }
                    FieldValue::Number(n) => {
                        out.push(format!("fields.{name}:{n}"));
                        out.push(format!("fields.{name}:[{n} TO *]"));
                        out.push(format!("fields.{name}:<{n}"));
                    }
                    _ => {}
                }
                out.push(format!("fields.{name}:*"));
                break;
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The matcher and the compiled tantivy query agree on every record, for every query.
    #[test]
    fn matches_what_the_index_finds() {
        let Some(dir) = corpus_dir() else { return };
        let lines = lines(&dir);
        let parse = logsift_parse::ParseOptions {
            received_at_ns: RECEIVED,
            logfmt: true,
            ..Default::default()
        };
        let schema = LogSchema::new();
        let index = Index::create_in_ram(schema.schema.clone());
        LogSchema::register_tokenizers(index.tokenizers());
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 50 << 20).unwrap();
        let records: Vec<Record<'_>> = lines
            .iter()
            .map(|(format, raw)| logsift_parse::parse(*format, raw, &parse))
            .collect();
        for (lsn, ((format, raw), record)) in lines.iter().zip(&records).enumerate() {
            let entry = Entry {
                format: *format,
                received_at: RECEIVED,
                index: "main",
                source: SOURCE,
                raw,
            };
            writer
                .add_document(logsift_store::build_document(
                    &schema, lsn as u64, &entry, record, 0,
                ))
                .unwrap();
        }
        writer.commit().unwrap();
        let reader = index.reader().unwrap();
        let searcher = reader.searcher();
        let compiler = Compiler {
            schema: &schema,
            index: &index,
            parse,
        };
        let queries = queries(&records);
        assert!(queries.len() > 300, "{} queries", queries.len());
        let (mut checked, mut nonempty) = (0, 0);
        for q in &queries {
            let Ok(ast) = crate::lang::parse(q) else {
                continue;
            };
            let compiled = compiler.compile(&ast).unwrap();
            let mut expected = BTreeSet::new();
            for addr in searcher.search(&compiled, &DocSetCollector).unwrap() {
                let column = searcher.segment_reader(addr.segment_ord).fast_fields();
                let ids = column.u64("id").unwrap();
                expected.insert(ids.first(addr.doc_id).unwrap() as usize);
            }
            let mut matcher = Matcher::new(&ast);
            let found: BTreeSet<usize> = records
                .iter()
                .enumerate()
                .filter(|(_, r)| matcher.matches(r, SOURCE))
                .map(|(i, _)| i)
                .collect();
            if found != expected {
                let show = |set: &BTreeSet<usize>| {
                    set.iter()
                        .take(3)
                        .map(|i| String::from_utf8_lossy(&lines[*i].1).into_owned())
                        .collect::<Vec<_>>()
                };
                let only_index: BTreeSet<usize> = expected.difference(&found).copied().collect();
                let only_matcher: BTreeSet<usize> = found.difference(&expected).copied().collect();
                panic!(
                    "{q:?}: index {} records, matcher {}; only the index: {:?}; only the matcher: {:?}",
                    expected.len(),
                    found.len(),
                    show(&only_index),
                    show(&only_matcher)
                );
            }
            checked += 1;
            nonempty += usize::from(!found.is_empty() && found.len() < records.len());
        }
        eprintln!(
            "{checked} queries over {} records agree ({nonempty} match some but not all)",
            records.len()
        );
        assert!(
            nonempty * 2 > checked,
            "too few selective queries: {nonempty} of {checked}"
        );
    }
}
