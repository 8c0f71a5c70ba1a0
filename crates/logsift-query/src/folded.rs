//! Queries over folded tokens (see `logsift_store::tokens`): the indexer writes ids, long
//! numbers and hex strings as one of 2^18 bucket terms, so a bucket's postings are candidates
//! that must be checked against the record itself.
//!
//! [`Verified`] wraps the candidate query of one leaf and keeps only the documents whose
//! message (or `fields.<key>` value) really holds the words, in sequence, re-parsing the stored
//! raw bytes as a hit is rendered. Checking at the leaf keeps boolean logic exact: `-id` or
//! `a OR id` see only true matches. [`FoldAware`] picks, per searched segment, the plain query
//! (segments written before folding existed index every token whole) or the folded one.

use std::fmt;

use logsift_store::tokens::word_analyzer;
use logsift_store::{LogSchema, Stored};
use tantivy::query::{EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{DocId, DocSet, Score, SegmentReader, TantivyDocument, TERMINATED};

type Q = Box<dyn Query>;

/// The plain query for segments indexed word by word, the folded one for the others (the
/// message and `fields` are always of one kind, [`LogSchema::folds_ids`]).
#[derive(Debug)]
pub(crate) struct FoldAware {
    pub plain: Q,
    pub folded: Q,
}

impl Clone for FoldAware {
    fn clone(&self) -> Self {
        FoldAware {
            plain: self.plain.box_clone(),
            folded: self.folded.box_clone(),
        }
    }
}

impl Query for FoldAware {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        if LogSchema::folds_ids(enable_scoring.schema()) {
            self.folded.weight(enable_scoring)
        } else {
            self.plain.weight(enable_scoring)
        }
    }
}

/// Where the words of a [`Check`] must be.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Place {
    Message,
    /// The values of `fields.<key>` (names are flattened with dots, as the indexer wrote them).
    Field(String),
}

/// What a candidate must hold: `words` (lowercased, as the word analyzer makes them) in a row,
/// the last one only as a prefix when `last_is_prefix`.
#[derive(Clone, Debug)]
pub(crate) struct Check {
    pub place: Place,
    pub words: Vec<String>,
    pub last_is_prefix: bool,
    /// The index's parse options (logfmt extraction decides what `fields` hold); the receive
    /// time is each record's own.
    pub parse: logsift_parse::ParseOptions,
}

impl Check {
    fn holds_in(&self, analyzer: &mut TextAnalyzer, text: &str) -> bool {
        let mut tokens = Vec::new();
        let mut stream = analyzer.token_stream(text);
        stream.process(&mut |t| tokens.push(t.text.clone()));
        let n = self.words.len();
        if n == 0 {
            return true;
        }
        tokens.windows(n).any(|w| {
            w.iter().zip(&self.words).enumerate().all(|(i, (t, q))| {
                if self.last_is_prefix && i == n - 1 {
                    t.starts_with(q.as_str())
                } else {
                    t == q
                }
            })
        })
    }

    /// Whether the stored record `doc` holds the words.
    fn holds(
        &self,
        analyzer: &mut TextAnalyzer,
        schema: &LogSchema,
        doc: &TantivyDocument,
    ) -> bool {
        let stored = Stored::of(schema, doc);
        let opts = logsift_parse::ParseOptions {
            received_at_ns: stored.received_at.unwrap_or(0),
            ..self.parse
        };
        let record = logsift_parse::parse(stored.format, stored.raw, &opts);
        match &self.place {
            Place::Message => self.holds_in(analyzer, &record.message),
            Place::Field(key) => record.fields().any(|(name, value)| {
                name == key.as_str()
                    && match value {
                        logsift_core::FieldValue::Str(s) => self.holds_in(analyzer, s),
                        logsift_core::FieldValue::Json(t) | logsift_core::FieldValue::Number(t) => {
                            self.holds_in(analyzer, t)
                        }
                        logsift_core::FieldValue::Bool(_) | logsift_core::FieldValue::Null => false,
                    }
            }),
        }
    }
}

/// The documents of `inner` that pass `check`.
pub(crate) struct Verified {
    pub inner: Q,
    pub check: Check,
    pub schema: LogSchema,
}

impl Clone for Verified {
    fn clone(&self) -> Self {
        Verified {
            inner: self.inner.box_clone(),
            check: self.check.clone(),
            schema: self.schema.clone(),
        }
    }
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("inner", &self.inner)
            .field("check", &self.check)
            .finish()
    }
}

impl Query for Verified {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(VerifiedWeight {
            inner: self.inner.weight(enable_scoring)?,
            check: self.check.clone(),
            schema: self.schema.clone(),
            searcher: enable_scoring.searcher().cloned(),
        }))
    }
}

struct VerifiedWeight {
    inner: Box<dyn Weight>,
    check: Check,
    schema: LogSchema,
    /// Reads candidates through the searcher's store readers, whose block caches outlive one
    /// query: looking up the same id again (as one does during an incident) decompresses
    /// nothing.
    searcher: Option<tantivy::Searcher>,
}

/// Doc store blocks a verifying scorer keeps decompressed when it has no searcher to read
/// through: candidates of one bucket are spread over the segment, so a small cache is all
/// that helps.
const VERIFY_CACHE_BLOCKS: usize = 2;

impl Weight for VerifiedWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let inner = self.inner.scorer(reader, boost)?;
        let cached = self.searcher.as_ref().and_then(|searcher| {
            let ord = searcher
                .segment_readers()
                .iter()
                .position(|r| r.segment_id() == reader.segment_id())?;
            Some((searcher.clone(), ord as u32))
        });
        let store = match cached {
            Some((searcher, ord)) => Store::Searcher(searcher, ord),
            None => Store::Own(reader.get_store_reader(VERIFY_CACHE_BLOCKS)?),
        };
        let mut scorer = VerifiedScorer {
            inner,
            store,
            check: self.check.clone(),
            schema: self.schema.clone(),
            analyzer: word_analyzer(),
        };
        let first = scorer.inner.doc();
        if first != TERMINATED && !scorer.passes(first) {
            scorer.advance();
        }
        Ok(Box::new(scorer))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) != doc {
            return Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} does not match"
            )));
        }
        Ok(Explanation::new("verified", scorer.score()))
    }
}

enum Store {
    /// The searcher and the segment's ordinal in it.
    Searcher(tantivy::Searcher, u32),
    Own(tantivy::store::StoreReader),
}

struct VerifiedScorer {
    inner: Box<dyn Scorer>,
    store: Store,
    check: Check,
    schema: LogSchema,
    /// Built once per segment, not per candidate.
    analyzer: TextAnalyzer,
}

impl VerifiedScorer {
    fn passes(&mut self, doc: DocId) -> bool {
        // A record that cannot be read is not a match; integrity checks report the damage.
        let read = match &self.store {
            Store::Searcher(searcher, ord) => {
                searcher.doc::<TantivyDocument>(tantivy::DocAddress::new(*ord, doc))
            }
            Store::Own(store) => store.get::<TantivyDocument>(doc),
        };
        match read {
            Ok(d) => self.check.holds(&mut self.analyzer, &self.schema, &d),
            Err(_) => false,
        }
    }
}

impl DocSet for VerifiedScorer {
    fn advance(&mut self) -> DocId {
        loop {
            let doc = self.inner.advance();
            if doc == TERMINATED || self.passes(doc) {
                return doc;
            }
        }
    }

    fn seek(&mut self, target: DocId) -> DocId {
        let doc = self.inner.seek(target);
        if doc == TERMINATED || self.passes(doc) {
            doc
        } else {
            self.advance()
        }
    }

    fn doc(&self) -> DocId {
        self.inner.doc()
    }

    fn size_hint(&self) -> u32 {
        self.inner.size_hint()
    }

    fn cost(&self) -> u64 {
        // Each candidate is a doc store read and a parse: make intersections lead with
        // anything cheaper.
        self.inner.cost().saturating_mul(64)
    }
}

impl Scorer for VerifiedScorer {
    fn score(&mut self) -> Score {
        self.inner.score()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(words: &[&str], prefix: bool) -> Check {
        Check {
            place: Place::Message,
            words: words.iter().map(|w| w.to_string()).collect(),
            last_is_prefix: prefix,
            parse: Default::default(),
        }
    }

    #[test]
    fn words_must_follow_each_other_and_a_prefix_only_starts_the_last() {
        let text = "GET /users/Req7f3a9c01 took 250ms";
        assert!(check(&["req7f3a9c01"], false).holds_in(&mut word_analyzer(), text));
        assert!(check(&["users", "req7f3a9c01"], false).holds_in(&mut word_analyzer(), text));
        assert!(!check(&["get", "req7f3a9c01"], false).holds_in(&mut word_analyzer(), text));
        assert!(!check(&["req7f3a9c0"], false).holds_in(&mut word_analyzer(), text));
        assert!(check(&["req7f3a9c0"], true).holds_in(&mut word_analyzer(), text));
        assert!(check(&["users", "req7"], true).holds_in(&mut word_analyzer(), text));
        assert!(!check(&["req7", "took"], true).holds_in(&mut word_analyzer(), text));
    }
}
