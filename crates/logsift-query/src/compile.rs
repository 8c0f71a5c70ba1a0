//! Compiles a parsed query ([`Ast`]) into a tantivy query for one index.
//!
//! Text goes through the tokenizer the field was indexed with (`Index::tokenizer_for_field`),
//! so that a query word becomes exactly the terms the indexer wrote: lowercased words for the
//! message and `fields.*`, the lowercased whole value for keyword fields. Prefixes and ranges
//! are ranges over the term dictionary, which also works inside the JSON `fields` field where a
//! term is `path \0 type value`.

use std::ops::Bound;

use logsift_store::LogSchema;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, ExistsQuery, InvertedIndexRangeQuery, Occur,
    PhrasePrefixQuery, PhraseQuery, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption, Type};
use tantivy::{Index, Term};

use logsift_store::tokens;

use crate::folded::{Check, FoldAware, Place, Verified};
use crate::lang::{Ast, Keyword, Leaf, Target};
use crate::QueryError;

/// `fields` is indexed with dots expanded into path segments (see the store's schema).
const EXPAND_DOTS: bool = true;
/// The byte that ends a JSON path inside a term, and the one between path segments.
const JSON_END_OF_PATH: u8 = 0;
const JSON_PATH_SEGMENT_SEP: u8 = 1;

pub(crate) struct Compiler<'a> {
    pub schema: &'a LogSchema,
    pub index: &'a Index,
    /// The index's parse options, which decide a record's message and `fields`: a folded
    /// token's candidates are verified against the record parsed again.
    pub parse: logsift_parse::ParseOptions,
}

type Q = Box<dyn Query>;

impl Compiler<'_> {
    pub fn compile(&self, ast: &Ast) -> Result<Q, QueryError> {
        Ok(match ast {
            Ast::All => Box::new(AllQuery),
            Ast::Leaf(leaf) => self.leaf(leaf)?,
            Ast::And(items) => {
                let mut clauses = Vec::with_capacity(items.len());
                for item in items {
                    clauses.push(match item {
                        Ast::Not(inner) => (Occur::MustNot, self.compile(inner)?),
                        other => (Occur::Must, self.compile(other)?),
                    });
                }
                // A boolean query of only exclusions matches nothing in tantivy; "all but" is
                // what `-a -b` means.
                if clauses.iter().all(|(o, _)| *o == Occur::MustNot) {
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                Box::new(BooleanQuery::new(clauses))
            }
            Ast::Or(items) => {
                let mut clauses = Vec::with_capacity(items.len());
                for item in items {
                    clauses.push((Occur::Should, self.compile(item)?));
                }
                Box::new(BooleanQuery::new(clauses))
            }
            Ast::Not(inner) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Q),
                (Occur::MustNot, self.compile(inner)?),
            ])),
        })
    }

    fn field(&self, target: &Target) -> Field {
        let s = self.schema;
        match target {
            Target::Message => s.message,
            Target::Json(_) => s.fields,
            Target::Keyword(k) => match k {
                Keyword::Host => s.host,
                Keyword::App => s.app,
                Keyword::Facility => s.facility,
                Keyword::Procid => s.procid,
                Keyword::Msgid => s.msgid,
                Keyword::Source => s.source,
                Keyword::ParseError => s.parse_error,
            },
        }
    }

    /// The tokens `text` becomes in `field`, with their positions: for the message and
    /// `fields`, the words before folding (see [`Self::fold_aware`]).
    fn tokens(&self, field: Field, text: &str) -> Result<Vec<(usize, String)>, QueryError> {
        let mut analyzer = if field == self.schema.message || field == self.schema.fields {
            tokens::word_analyzer()
        } else {
            self.index
                .tokenizer_for_field(field)
                .map_err(|e| QueryError::BadQuery(format!("cannot tokenize: {e}")))?
        };
        let mut out = Vec::new();
        let mut stream = analyzer.token_stream(text);
        stream.process(&mut |t| out.push((t.position, t.text.clone())));
        Ok(out)
    }

    /// A JSON term prefix: `path \0` (no type or value yet).
    fn json_path(&self, key: &str) -> Term {
        Term::from_field_json_path(self.schema.fields, key, EXPAND_DOTS)
    }

    fn term(&self, target: &Target, token: &str) -> Term {
        match target {
            Target::Json(key) => {
                let mut t = self.json_path(key);
                t.append_type_and_str(token);
                t
            }
            other => Term::from_field_text(self.field(other), token),
        }
    }

    fn leaf(&self, leaf: &Leaf) -> Result<Q, QueryError> {
        Ok(match leaf {
            Leaf::Word { target, text } | Leaf::Phrase { target, text } => {
                let tokens = self.tokens(self.field(target), text)?;
                let terms: Vec<(usize, Term)> = tokens
                    .iter()
                    .map(|(pos, tok)| (*pos, self.term(target, tok)))
                    .collect();
                let text_query = self.fold_aware(target, &tokens, false, terms_query(terms));
                match target {
                    // A JSON value may also be a number or a boolean: `fields.status:500`.
                    Target::Json(key) => {
                        match tantivy::json_utils::convert_to_fast_value_and_append_to_json_term(
                            &self.json_path(key),
                            text,
                            true,
                        ) {
                            Some(term) => Box::new(BooleanQuery::new(vec![
                                (Occur::Should, text_query),
                                (
                                    Occur::Should,
                                    Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
                                ),
                            ])),
                            None => text_query,
                        }
                    }
                    _ => text_query,
                }
            }
            Leaf::Prefix { target, prefix } => {
                let tokens = self.tokens(self.field(target), prefix)?;
                let terms: Vec<Term> = tokens.iter().map(|(_, t)| self.term(target, t)).collect();
                let plain = prefix_terms_query(terms);
                self.fold_aware(target, &tokens, true, plain)
            }
            Leaf::Exists { target } => self.exists(target),
            Leaf::Range {
                target,
                lower,
                upper,
            } => {
                if matches!((lower, upper), (Bound::Unbounded, Bound::Unbounded)) {
                    return Ok(self.exists(target));
                }
                match target {
                    Target::Json(key) => self.json_range(key, lower, upper)?,
                    other => {
                        let field = self.field(other);
                        let norm = |b: &Bound<String>| -> Result<Bound<Term>, QueryError> {
                            Ok(match b {
                                Bound::Unbounded => Bound::Unbounded,
                                Bound::Included(s) => Bound::Included(Term::from_field_text(
                                    field,
                                    &self.whole(field, s)?,
                                )),
                                Bound::Excluded(s) => Bound::Excluded(Term::from_field_text(
                                    field,
                                    &self.whole(field, s)?,
                                )),
                            })
                        };
                        Box::new(InvertedIndexRangeQuery::new(norm(lower)?, norm(upper)?))
                    }
                }
            }
            Leaf::Pattern { id } => Box::new(PatternQuery { id: *id }),
            Leaf::Severity { min, max } => {
                let f = self.schema.severity_code;
                if min > max {
                    Box::new(EmptyQuery)
                } else if *min == 0 && *max == 7 {
                    Box::new(ExistsQuery::new("severity_code".into(), false))
                } else if min == max {
                    Box::new(TermQuery::new(
                        Term::from_field_u64(f, *min as u64),
                        IndexRecordOption::Basic,
                    ))
                } else {
                    Box::new(RangeQuery::new(
                        Bound::Included(Term::from_field_u64(f, *min as u64)),
                        Bound::Included(Term::from_field_u64(f, *max as u64)),
                    ))
                }
            }
        })
    }

    /// `plain` for segments that index every word whole; for segments with folded tokens (see
    /// `logsift_store::tokens`), the same query over bucket terms, verified against the record.
    /// A prefix may also be the start of a folded token: those are found through their prefix
    /// terms and verified.
    fn fold_aware(&self, target: &Target, tokens: &[(usize, String)], prefix: bool, plain: Q) -> Q {
        let place = match target {
            Target::Message => Place::Message,
            Target::Json(key) => Place::Field(key.clone()),
            Target::Keyword(_) => return plain,
        };
        let n = tokens.len();
        let folded_at = |i: usize| tokens::is_high_entropy(&tokens[i].1) && !(prefix && i + 1 == n);
        let any_folded = (0..n).any(folded_at);
        if !any_folded && !prefix {
            return plain;
        }
        let check = Check {
            place,
            words: tokens.iter().map(|(_, t)| t.clone()).collect(),
            last_is_prefix: prefix,
            parse: self.parse,
        };
        let verified = |inner: Q| -> Q {
            Box::new(Verified {
                inner,
                check: check.clone(),
                schema: self.schema.clone(),
            })
        };
        let mapped = |last: Option<&str>| -> Vec<(usize, Term)> {
            tokens
                .iter()
                .enumerate()
                .map(|(i, (pos, tok))| {
                    let text = match last {
                        Some(l) if i + 1 == n => l.to_string(),
                        _ if folded_at(i) => tokens::bucket_term(tok),
                        _ => tok.clone(),
                    };
                    (*pos, self.term(target, &text))
                })
                .collect()
        };
        let folded: Q = if prefix {
            // Words of the prefix ending in a whole word, or in a folded token's prefix term
            // (which sits at the folded token's position).
            let words = mapped(None).into_iter().map(|(_, t)| t).collect();
            let last_prefix = tokens.last().map(|(_, t)| tokens::prefix_term(t));
            let ids = mapped(last_prefix.as_deref())
                .into_iter()
                .map(|(_, t)| t)
                .collect();
            let words = if any_folded {
                verified(prefix_terms_query(words))
            } else {
                prefix_terms_query(words)
            };
            Box::new(BooleanQuery::new(vec![
                (Occur::Should, words),
                (Occur::Should, verified(prefix_terms_query(ids))),
            ]))
        } else {
            verified(terms_query(mapped(None)))
        };
        Box::new(FoldAware { plain, folded })
    }

    /// A keyword value as the indexer stored it (lowercased for keyword fields).
    fn whole(&self, field: Field, s: &str) -> Result<String, QueryError> {
        Ok(self
            .tokens(field, s)?
            .into_iter()
            .map(|(_, t)| t)
            .collect::<Vec<_>>()
            .join(" "))
    }

    fn exists(&self, target: &Target) -> Q {
        match target {
            Target::Keyword(Keyword::Source) | Target::Message => {
                // Not fast fields: every term of the field is ≥ the empty string.
                let field = self.field(target);
                Box::new(InvertedIndexRangeQuery::new(
                    Bound::Included(Term::from_field_text(field, "")),
                    Bound::Unbounded,
                ))
            }
            Target::Keyword(k) => Box::new(ExistsQuery::new(k.name().into(), false)),
            Target::Json(key) => {
                // Terms of exactly this path (`path \0 ...`), or of a sub-path (`path \1 ...`).
                let base = self.json_path(key);
                let path_len = base.len_bytes().saturating_sub(1);
                let with_last = |last: u8| {
                    let mut t = base.clone();
                    t.truncate_value_bytes(path_len);
                    t.append_bytes(&[last]);
                    t
                };
                Box::new(BooleanQuery::new(vec![
                    (
                        Occur::Should,
                        Box::new(InvertedIndexRangeQuery::new(
                            Bound::Included(with_last(JSON_END_OF_PATH)),
                            Bound::Excluded(with_last(JSON_END_OF_PATH + 1)),
                        )) as Q,
                    ),
                    (
                        Occur::Should,
                        Box::new(InvertedIndexRangeQuery::new(
                            Bound::Included(with_last(JSON_PATH_SEGMENT_SEP)),
                            Bound::Excluded(with_last(JSON_PATH_SEGMENT_SEP + 1)),
                        )),
                    ),
                ]))
            }
        }
    }

    /// A range on `fields.<key>`: numeric when every bound is a number (matching integer and
    /// float values, which tantivy stores as different term types), else on strings. Unbounded
    /// ends become the ends of the type, so the range never leaks into other paths or types.
    fn json_range(
        &self,
        key: &str,
        lower: &Bound<String>,
        upper: &Bound<String>,
    ) -> Result<Q, QueryError> {
        let path = self.json_path(key);
        if let Some((lo, hi)) = numeric_bounds(lower, upper) {
            let f64_term = |v: f64| {
                let mut t = path.clone();
                t.append_type_and_fast_value::<f64>(v);
                t
            };
            let i64_term = |v: i64| {
                let mut t = path.clone();
                t.append_type_and_fast_value::<i64>(v);
                t
            };
            let f_lo = map_or(lo, f64_term(f64::NEG_INFINITY), f64_term);
            let f_hi = map_or(hi, f64_term(f64::INFINITY), f64_term);
            let (i_lo, i_hi) = integer_bounds(lo, hi);
            return Ok(Box::new(BooleanQuery::new(vec![
                (
                    Occur::Should,
                    Box::new(InvertedIndexRangeQuery::new(
                        i_lo.map(i64_term),
                        i_hi.map(i64_term),
                    )) as Q,
                ),
                (
                    Occur::Should,
                    Box::new(InvertedIndexRangeQuery::new(f_lo, f_hi)),
                ),
            ])));
        }
        let str_term = |s: &str| -> Result<Term, QueryError> {
            let mut t = path.clone();
            t.append_type_and_str(&self.whole(self.schema.fields, s)?);
            Ok(t)
        };
        let lo = match lower {
            Bound::Unbounded => Bound::Included(str_term("")?),
            Bound::Included(s) => Bound::Included(str_term(s)?),
            Bound::Excluded(s) => Bound::Excluded(str_term(s)?),
        };
        let hi = match upper {
            Bound::Unbounded => {
                // No UTF-8 string contains 0xFF, so this is above every string of the path.
                let mut t = path.clone();
                t.append_bytes(&[Type::Str.to_code(), 0xFF]);
                Bound::Excluded(t)
            }
            Bound::Included(s) => Bound::Included(str_term(s)?),
            Bound::Excluded(s) => Bound::Excluded(str_term(s)?),
        };
        Ok(Box::new(InvertedIndexRangeQuery::new(lo, hi)))
    }
}

fn map_or(b: Bound<f64>, unbounded: Term, f: impl Fn(f64) -> Term) -> Bound<Term> {
    match b {
        Bound::Unbounded => Bound::Included(unbounded),
        Bound::Included(x) => Bound::Included(f(x)),
        Bound::Excluded(x) => Bound::Excluded(f(x)),
    }
}

/// Both bounds of a range as numbers, when both are (or are open); NaN is not a number here.
pub(crate) fn numeric_bounds(
    lower: &Bound<String>,
    upper: &Bound<String>,
) -> Option<(Bound<f64>, Bound<f64>)> {
    let num = |b: &Bound<String>| -> Option<Bound<f64>> {
        let parse = |s: &String| s.parse::<f64>().ok().filter(|f| !f.is_nan());
        match b {
            Bound::Unbounded => Some(Bound::Unbounded),
            Bound::Included(s) => parse(s).map(Bound::Included),
            Bound::Excluded(s) => parse(s).map(Bound::Excluded),
        }
    };
    Some((num(lower)?, num(upper)?))
}

/// The integers of a float range as an integer range: bounds round inwards, open ends become
/// the ends of i64.
pub(crate) fn integer_bounds(lo: Bound<f64>, hi: Bound<f64>) -> (Bound<i64>, Bound<i64>) {
    let lo = match lo {
        Bound::Unbounded => Bound::Included(i64::MIN),
        Bound::Included(x) => Bound::Included(ceil_i64(x)),
        Bound::Excluded(x) if x.fract() == 0.0 => Bound::Excluded(clamp_i64(x)),
        Bound::Excluded(x) => Bound::Included(ceil_i64(x)),
    };
    let hi = match hi {
        Bound::Unbounded => Bound::Included(i64::MAX),
        Bound::Included(x) => Bound::Included(floor_i64(x)),
        Bound::Excluded(x) if x.fract() == 0.0 => Bound::Excluded(clamp_i64(x)),
        Bound::Excluded(x) => Bound::Included(floor_i64(x)),
    };
    (lo, hi)
}

fn clamp_i64(x: f64) -> i64 {
    // `as` saturates at the ends of i64, which is what a range bound wants.
    x as i64
}
fn ceil_i64(x: f64) -> i64 {
    clamp_i64(x.ceil())
}
fn floor_i64(x: f64) -> i64 {
    clamp_i64(x.floor())
}

/// One term, or the phrase of several; nothing to look for (a word of only punctuation)
/// matches everything, as it adds no constraint.
fn terms_query(mut terms: Vec<(usize, Term)>) -> Q {
    match terms.len() {
        0 => Box::new(AllQuery),
        1 => match terms.pop() {
            Some((_, t)) => Box::new(TermQuery::new(t, IndexRecordOption::Basic)),
            None => Box::new(AllQuery),
        },
        _ => Box::new(PhraseQuery::new_with_offset(terms)),
    }
}

/// Every run of terms whose last one starts with the last of `terms`; nothing to look for
/// matches everything.
fn prefix_terms_query(mut terms: Vec<Term>) -> Q {
    match terms.len() {
        0 => Box::new(AllQuery),
        1 => match terms.pop() {
            Some(t) => prefix_query(t),
            None => Box::new(AllQuery),
        },
        _ => Box::new(PhrasePrefixQuery::new(terms)),
    }
}

/// Every term that starts with `term`'s value bytes: `[prefix, successor(prefix))`.
fn prefix_query(term: Term) -> Q {
    let mut upper = term.clone();
    let mut bytes = term.serialized_value_bytes().to_vec();
    // The successor: drop trailing 0xFF bytes, then increment the last byte.
    while bytes.last() == Some(&0xFF) {
        bytes.pop();
    }
    let upper = match bytes.last_mut() {
        Some(last) => {
            *last += 1;
            upper.set_bytes(&bytes);
            Bound::Excluded(upper)
        }
        None => Bound::Unbounded,
    };
    Box::new(InvertedIndexRangeQuery::new(Bound::Included(term), upper))
}

/// `pattern:<id>`, over whichever schema the segment has: segments written before patterns were
/// mined have no `pattern` field (and tantivy does not look up a field its schema lacks
/// safely), and none of their records match. The field is a column only: a range of one value
/// over it.
#[derive(Clone, Debug)]
struct PatternQuery {
    id: u32,
}

impl Query for PatternQuery {
    fn weight(
        &self,
        enable_scoring: tantivy::query::EnableScoring<'_>,
    ) -> tantivy::Result<Box<dyn tantivy::query::Weight>> {
        match enable_scoring
            .schema()
            .get_field(logsift_store::PATTERN_FIELD)
        {
            Ok(field) => {
                let id = Term::from_field_u64(field, u64::from(self.id));
                RangeQuery::new(Bound::Included(id.clone()), Bound::Included(id))
                    .weight(enable_scoring)
            }
            Err(_) => EmptyQuery.weight(enable_scoring),
        }
    }
}
