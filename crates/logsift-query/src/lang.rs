//! The query language: a Lucene-style syntax parsed into an [`Ast`] with errors that name the
//! column (1-based, in characters) where something else was expected.
//!
//! ```text
//! query    := or_expr?                      (empty or `*` alone matches everything)
//! or_expr  := and_expr ("OR" and_expr)*
//! and_expr := unary (("AND")? unary)*       (juxtaposition is AND)
//! unary    := "NOT" unary | "-" unary | "+" unary | primary
//! primary  := "(" or_expr ")" | field ":" value | "phrase" | word | word* | *
//! value    := "phrase" | word | word* | * | [a TO b] | {a TO b} | >=v | <=v | >v | <v
//! ```
//!
//! Severity comparisons use the syslog code, where a lower code is more severe:
//! `severity:<=warning` is "warning or worse" (code ≤ 4: warning, error, crit, alert, emerg),
//! `severity:>=error` is "error or milder" (code ≥ 3). Ranges `[a TO b]` on severity take names
//! or codes in either order.
//!
//! Hostile input is bounded before any work is done: [`MAX_QUERY_BYTES`], [`MAX_DEPTH`] nested
//! groups or negations and [`MAX_CLAUSES`] leaf clauses.

use std::fmt;
use std::ops::Bound;

use logsift_core::Severity;
use nom::branch::alt;
use nom::bytes::complete::tag;
use nom::character::complete::{char, multispace0, satisfy};
use nom::combinator::recognize;
use nom::multi::many0_count;
use nom::sequence::pair;
use nom::{IResult, Parser};

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Deepest nesting of parentheses and negations.
pub const MAX_DEPTH: usize = 32;
/// Most leaf clauses (words, phrases, field clauses) in one query.
pub const MAX_CLAUSES: usize = 256;

/// A query error: what was expected (or what is wrong) and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based, counted in characters.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.message, self.column)
    }
}

impl std::error::Error for ParseError {}

/// Keyword fields: whole values, matched case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    Host,
    App,
    Facility,
    Procid,
    Msgid,
    Source,
    ParseError,
}

impl Keyword {
    pub fn name(self) -> &'static str {
        match self {
            Keyword::Host => "host",
            Keyword::App => "app",
            Keyword::Facility => "facility",
            Keyword::Procid => "procid",
            Keyword::Msgid => "msgid",
            Keyword::Source => "source",
            Keyword::ParseError => "parse_error",
        }
    }
}

/// What a clause searches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Message,
    Keyword(Keyword),
    /// `fields.<key>`; the key with its dots (`fields.user.id` → `user.id`).
    Json(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    /// A word (tokenized for the message and `fields.*`, whole for keywords).
    Word { target: Target, text: String },
    /// A quoted phrase: its tokens in order (message, `fields.*`), or a whole keyword value.
    Phrase { target: Target, text: String },
    /// `prefix*`.
    Prefix { target: Target, prefix: String },
    /// `field:*`.
    Exists { target: Target },
    /// `[a TO b]`, `{a TO b}`, `>=a`, ...: numbers when both bounds are numbers on `fields.*`,
    /// strings otherwise.
    Range {
        target: Target,
        lower: Bound<String>,
        upper: Bound<String>,
    },
    /// Severity codes `min..=max` (0 = emerg ... 7 = debug).
    Severity { min: u8, max: u8 },
    /// `pattern:<id>`: records given log pattern `id` at ingest. Records stored without one
    /// (before patterns were mined, block segments, built-in indexes) never match.
    Pattern { id: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ast {
    /// Matches every record (`*`, or an empty query).
    All,
    Leaf(Leaf),
    And(Vec<Ast>),
    Or(Vec<Ast>),
    Not(Box<Ast>),
}

/// Parses `src` into an AST, or says where it stops making sense.
pub fn parse(src: &str) -> Result<Ast, ParseError> {
    if src.len() > MAX_QUERY_BYTES {
        return Err(ParseError {
            column: 1,
            message: format!(
                "query is {} bytes long; the maximum is {MAX_QUERY_BYTES}",
                src.len()
            ),
        });
    }
    let mut p = QueryParser {
        src,
        depth: 0,
        clauses: 0,
    };
    let rest = ws(src);
    if rest.is_empty() {
        return Ok(Ast::All);
    }
    let (rest, ast) = p.or_expr(rest)?;
    let rest = ws(rest);
    if !rest.is_empty() {
        let what = if rest.starts_with(')') {
            "unbalanced ')'".to_string()
        } else {
            format!(
                "expected AND, OR or the end of the query, found {}",
                found(rest)
            )
        };
        return Err(p.err(rest, what));
    }
    Ok(ast)
}

type PResult<'a, T> = Result<(&'a str, T), ParseError>;

struct QueryParser<'a> {
    src: &'a str,
    depth: usize,
    clauses: usize,
}

/// Skips white space.
fn ws(i: &str) -> &str {
    multispace0::<&str, nom::error::Error<&str>>(i)
        .map(|(rest, _)| rest)
        .unwrap_or(i)
}

/// A short description of what starts `rest`, for error messages.
fn found(rest: &str) -> String {
    match rest.chars().next() {
        None => "the end of the query".to_string(),
        Some(c) => {
            let word: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace())
                .take(20)
                .collect();
            if word.chars().count() > 1 && c.is_alphanumeric() {
                format!("'{word}'")
            } else {
                format!("'{c}'")
            }
        }
    }
}

/// An operator keyword (`AND`, `OR`, `NOT`) standing alone: followed by white space, a
/// parenthesis, a quote, or the end.
fn keyword<'a>(i: &'a str, kw: &'static str) -> Option<&'a str> {
    let (rest, _) = tag::<&str, &str, nom::error::Error<&str>>(kw)
        .parse(i)
        .ok()?;
    match rest.chars().next() {
        None => Some(rest),
        Some(c) if c.is_whitespace() || c == '(' || c == ')' || c == '"' => Some(rest),
        _ => None,
    }
}

/// A field name: a letter or `_`, then letters, digits, `_`, `.`, `-`, `@`.
fn field_name(i: &str) -> IResult<&str, &str> {
    recognize(pair(
        satisfy(|c| c.is_ascii_alphabetic() || c == '_'),
        many0_count(satisfy(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@')
        })),
    ))
    .parse(i)
}

/// Characters that end a bare word.
fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '"')
}

/// A bare word with `\` escapes; `trailing_star` says whether it ended in an unescaped `*`.
struct Word {
    text: String,
    trailing_star: bool,
}

impl<'a> QueryParser<'a> {
    fn column(&self, rest: &str) -> usize {
        let consumed = self.src.len().saturating_sub(rest.len());
        self.src
            .get(..consumed)
            .map_or(consumed, |s| s.chars().count())
            + 1
    }

    fn err(&self, rest: &str, message: impl Into<String>) -> ParseError {
        ParseError {
            column: self.column(rest),
            message: message.into(),
        }
    }

    fn enter(&mut self, at: &str) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(
                at,
                format!("query nests deeper than {MAX_DEPTH} levels of parentheses or negations"),
            ));
        }
        Ok(())
    }

    fn leaf(&mut self, at: &str, leaf: Leaf) -> Result<Ast, ParseError> {
        self.clauses += 1;
        if self.clauses > MAX_CLAUSES {
            return Err(self.err(at, format!("query has more than {MAX_CLAUSES} clauses")));
        }
        Ok(Ast::Leaf(leaf))
    }

    fn or_expr(&mut self, i: &'a str) -> PResult<'a, Ast> {
        let (mut rest, first) = self.and_expr(i)?;
        let mut items = vec![first];
        loop {
            let after_ws = ws(rest);
            let Some(after_or) = keyword(after_ws, "OR") else {
                break;
            };
            let start = ws(after_or);
            if start.is_empty() || start.starts_with(')') {
                return Err(self.err(
                    start,
                    format!("expected a term after OR, found {}", found(start)),
                ));
            }
            let (r, next) = self.and_expr(start)?;
            items.push(next);
            rest = r;
        }
        Ok((rest, flatten(items, Ast::Or)))
    }

    fn and_expr(&mut self, i: &'a str) -> PResult<'a, Ast> {
        let (mut rest, first) = self.unary(i)?;
        let mut items = vec![first];
        loop {
            let next = ws(rest);
            if next.is_empty() || next.starts_with(')') || keyword(next, "OR").is_some() {
                break;
            }
            let start = match keyword(next, "AND") {
                Some(after) => {
                    let start = ws(after);
                    if start.is_empty() || start.starts_with(')') {
                        return Err(self.err(
                            start,
                            format!("expected a term after AND, found {}", found(start)),
                        ));
                    }
                    start
                }
                None => next,
            };
            let (r, item) = self.unary(start)?;
            items.push(item);
            rest = r;
        }
        Ok((rest, flatten(items, Ast::And)))
    }

    fn unary(&mut self, i: &'a str) -> PResult<'a, Ast> {
        let negation = match keyword(i, "NOT") {
            Some(after) => Some(ws(after)),
            None => i.strip_prefix('-'),
        };
        if let Some(operand) = negation {
            if operand.is_empty()
                || operand.starts_with(char::is_whitespace)
                || operand.starts_with(')')
            {
                return Err(self.err(
                    operand,
                    format!("expected a term to negate, found {}", found(operand)),
                ));
            }
            self.enter(i)?;
            let (rest, inner) = self.unary(operand)?;
            self.depth -= 1;
            return Ok((rest, Ast::Not(Box::new(inner))));
        }
        if let Some(operand) = i.strip_prefix('+') {
            return self.unary(operand);
        }
        self.primary(i)
    }

    fn primary(&mut self, i: &'a str) -> PResult<'a, Ast> {
        if let Ok((inner, _)) = char::<&str, nom::error::Error<&str>>('(').parse(i) {
            self.enter(i)?;
            let inner = ws(inner);
            if inner.starts_with(')') {
                return Err(self.err(inner, "expected a term inside '()'"));
            }
            if inner.is_empty() {
                return Err(self.err(inner, "expected a term or ')', found the end of the query"));
            }
            let (rest, ast) = self.or_expr(inner)?;
            let rest = ws(rest);
            let Some(rest) = rest.strip_prefix(')') else {
                return Err(self.err(rest, format!("expected ')', found {}", found(rest))));
            };
            self.depth -= 1;
            return Ok((rest, ast));
        }
        for kw in ["AND", "OR"] {
            if keyword(i, kw).is_some() {
                return Err(self.err(i, format!("expected a term, found the operator {kw}")));
            }
        }
        if i.starts_with('"') {
            let (rest, text) = self.phrase(i)?;
            let ast = self.leaf(
                i,
                Leaf::Phrase {
                    target: Target::Message,
                    text,
                },
            )?;
            return Ok((rest, ast));
        }
        if let Ok((after, name)) = field_name(i) {
            if let Some(value) = after.strip_prefix(':') {
                return self.field_clause(i, name, value);
            }
        }
        let (rest, word) = self.word(i)?;
        if word.text.is_empty() && word.trailing_star {
            return Ok((rest, Ast::All));
        }
        let leaf = if word.trailing_star {
            Leaf::Prefix {
                target: Target::Message,
                prefix: word.text,
            }
        } else {
            Leaf::Word {
                target: Target::Message,
                text: word.text,
            }
        };
        let ast = self.leaf(i, leaf)?;
        Ok((rest, ast))
    }

    /// `"..."` with `\"` and `\\` escapes.
    fn phrase(&self, i: &'a str) -> PResult<'a, String> {
        let mut out = String::new();
        let mut chars = i.char_indices().skip(1);
        while let Some((pos, c)) = chars.next() {
            match c {
                '"' => return Ok((&i[pos + 1..], out)),
                '\\' => match chars.next() {
                    Some((_, e)) => out.push(e),
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(self.err(
            &i[i.len()..],
            format!(
                "expected '\"' to close the phrase opened at column {}",
                self.column(i)
            ),
        ))
    }

    /// A bare word up to white space, a parenthesis or a quote; `\` escapes the next character.
    /// `*` is allowed only at the end (a prefix).
    fn word(&self, i: &'a str) -> PResult<'a, Word> {
        let mut text = String::new();
        let mut trailing_star = false;
        let mut end = i.len();
        let mut chars = i.char_indices().peekable();
        while let Some((pos, c)) = chars.next() {
            if trailing_star {
                return Err(self.err(
                    &i[pos - 1..],
                    "'*' is only supported at the end of a word (a prefix)",
                ));
            }
            if ends_word(c) {
                end = pos;
                break;
            }
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) => text.push(e),
                    None => {
                        return Err(self.err(&i[pos..], "expected a character after '\\'"));
                    }
                },
                '*' => {
                    trailing_star = true;
                    // The word ends here unless another character follows (an error above).
                    if chars.peek().is_none_or(|(_, n)| ends_word(*n)) {
                        end = pos + 1;
                        break;
                    }
                }
                c => text.push(c),
            }
        }
        if text.is_empty() && !trailing_star {
            return Err(self.err(i, format!("expected a term, found {}", found(i))));
        }
        Ok((
            &i[end..],
            Word {
                text,
                trailing_star,
            },
        ))
    }

    fn target(&self, at: &str, name: &str) -> Result<Option<Target>, ParseError> {
        Ok(Some(match name {
            "message" | "msg" => Target::Message,
            "host" => Target::Keyword(Keyword::Host),
            "app" => Target::Keyword(Keyword::App),
            "facility" => Target::Keyword(Keyword::Facility),
            "procid" => Target::Keyword(Keyword::Procid),
            "msgid" => Target::Keyword(Keyword::Msgid),
            "source" => Target::Keyword(Keyword::Source),
            "parse_error" => Target::Keyword(Keyword::ParseError),
            "severity" | "level" => return Ok(None),
            other => match other.strip_prefix("fields.") {
                Some(key) if !key.is_empty() && !key.ends_with('.') => {
                    Target::Json(key.to_string())
                }
                _ => {
                    return Err(self.err(
                        at,
                        format!(
                            "unknown field '{other}'; expected message, host, app, severity, \
                             facility, procid, msgid, source, parse_error, pattern or fields.<key>"
                        ),
                    ))
                }
            },
        }))
    }

    /// `name:value`; `at` is where the field name starts, `v` where the value starts.
    fn field_clause(&mut self, at: &'a str, name: &str, v: &'a str) -> PResult<'a, Ast> {
        if name == "pattern" {
            return self.pattern_clause(at, v);
        }
        let target = self.target(at, name)?;
        if v.is_empty() || v.starts_with(char::is_whitespace) || v.starts_with(')') {
            return Err(self.err(
                v,
                format!("expected a value after '{name}:', found {}", found(v)),
            ));
        }
        if v.starts_with('(') {
            return Err(self.err(
                v,
                format!("grouping values as '{name}:(...)' is not supported; write '({name}:a OR {name}:b)'"),
            ));
        }
        let (rest, value) = self.value(v)?;
        let leaf = match target {
            Some(target) => self.typed_leaf(v, name, target, value)?,
            None => self.severity_leaf(v, value)?,
        };
        let ast = self.leaf(at, leaf)?;
        Ok((rest, ast))
    }

    /// `pattern:<id>`, the id a hit's `pattern_id` or `/api/v1/patterns` gives.
    fn pattern_clause(&mut self, at: &'a str, v: &'a str) -> PResult<'a, Ast> {
        let digits = v.bytes().take_while(u8::is_ascii_digit).count();
        let rest = &v[digits..];
        let ends =
            rest.is_empty() || rest.starts_with(char::is_whitespace) || rest.starts_with(')');
        let id = v[..digits].parse::<u32>().ok().filter(|id| *id > 0);
        match id {
            Some(id) if ends => {
                let ast = self.leaf(at, Leaf::Pattern { id })?;
                Ok((rest, ast))
            }
            _ => Err(self.err(
                v,
                format!(
                    "pattern takes a pattern id (a number from 1 to {}), found {}",
                    u32::MAX,
                    found(v)
                ),
            )),
        }
    }

    fn value(&self, v: &'a str) -> PResult<'a, Value> {
        if v.starts_with('[') || v.starts_with('{') {
            return self.range(v);
        }
        if v.starts_with('"') {
            let (rest, text) = self.phrase(v)?;
            return Ok((rest, Value::Phrase(text)));
        }
        let cmp = alt((
            tag::<&str, &str, nom::error::Error<&str>>(">="),
            tag("<="),
            tag(">"),
            tag("<"),
        ))
        .parse(v);
        if let Ok((after, op)) = cmp {
            let (rest, bound) = self.bound(after)?;
            let Some(bound) = bound else {
                return Err(self.err(after, format!("expected a value after '{op}', found '*'")));
            };
            let (lower, upper) = match op {
                ">=" => (Bound::Included(bound), Bound::Unbounded),
                ">" => (Bound::Excluded(bound), Bound::Unbounded),
                "<=" => (Bound::Unbounded, Bound::Included(bound)),
                _ => (Bound::Unbounded, Bound::Excluded(bound)),
            };
            return Ok((rest, Value::Range(lower, upper)));
        }
        let (rest, word) = self.word(v)?;
        Ok((
            rest,
            match (word.text.is_empty(), word.trailing_star) {
                (true, _) => Value::Any,
                (false, true) => Value::Prefix(word.text),
                (false, false) => Value::Word(word.text),
            },
        ))
    }

    /// One bound of a range or comparison: a phrase, a word, or `*` (unbounded → `None`).
    fn bound(&self, i: &'a str) -> PResult<'a, Option<String>> {
        if i.starts_with('"') {
            let (rest, text) = self.phrase(i)?;
            return Ok((rest, Some(text)));
        }
        let end = i
            .find(|c: char| c.is_whitespace() || matches!(c, ']' | '}' | '(' | ')' | '"'))
            .unwrap_or(i.len());
        if end == 0 {
            return Err(self.err(i, format!("expected a value, found {}", found(i))));
        }
        let text = &i[..end];
        Ok((&i[end..], (text != "*").then(|| text.to_string())))
    }

    /// `[a TO b]` (inclusive) or `{a TO b}` (exclusive); the two kinds of bracket may be mixed.
    fn range(&self, v: &'a str) -> PResult<'a, Value> {
        let inclusive_low = v.starts_with('[');
        let i = ws(&v[1..]);
        let (i, low) = self.bound(i)?;
        let i = ws(i);
        let Some(i) = keyword(i, "TO") else {
            return Err(self.err(i, format!("expected TO in the range, found {}", found(i))));
        };
        let i = ws(i);
        let (i, high) = self.bound(i)?;
        let i = ws(i);
        let inclusive_high = match i.chars().next() {
            Some(']') => true,
            Some('}') => false,
            _ => {
                return Err(self.err(
                    i,
                    format!(
                        "expected ']' or '}}' to close the range, found {}",
                        found(i)
                    ),
                ))
            }
        };
        let bound = |b: Option<String>, inclusive: bool| match b {
            None => Bound::Unbounded,
            Some(s) if inclusive => Bound::Included(s),
            Some(s) => Bound::Excluded(s),
        };
        Ok((
            &i[1..],
            Value::Range(bound(low, inclusive_low), bound(high, inclusive_high)),
        ))
    }

    fn typed_leaf(
        &self,
        v: &str,
        name: &str,
        target: Target,
        value: Value,
    ) -> Result<Leaf, ParseError> {
        Ok(match value {
            Value::Any => Leaf::Exists { target },
            Value::Word(text) => Leaf::Word { target, text },
            Value::Phrase(text) => Leaf::Phrase { target, text },
            Value::Prefix(prefix) => Leaf::Prefix { target, prefix },
            Value::Range(lower, upper) => {
                if target == Target::Message {
                    return Err(self.err(
                        v,
                        format!("ranges apply to fields.<key>, severity and keyword fields, not '{name}'"),
                    ));
                }
                Leaf::Range {
                    target,
                    lower,
                    upper,
                }
            }
        })
    }

    fn severity_code(&self, at: &str, name: &str) -> Result<u8, ParseError> {
        Severity::from_name(name)
            .map(Severity::code)
            .ok_or_else(|| {
                self.err(
                    at,
                    format!(
                        "unknown severity '{name}'; expected emerg, alert, crit, error, warning, \
                     notice, info, debug or a code 0-7"
                    ),
                )
            })
    }

    fn severity_leaf(&self, v: &str, value: Value) -> Result<Leaf, ParseError> {
        Ok(match value {
            Value::Any => Leaf::Severity { min: 0, max: 7 },
            Value::Word(name) | Value::Phrase(name) => {
                let code = self.severity_code(v, &name)?;
                Leaf::Severity {
                    min: code,
                    max: code,
                }
            }
            Value::Prefix(_) => return Err(self.err(
                v,
                "severity takes a name (error), a comparison (<=warning) or a range, not a prefix",
            )),
            Value::Range(lower, upper) => {
                let code = |b: Bound<String>| -> Result<Bound<u8>, ParseError> {
                    Ok(match b {
                        Bound::Unbounded => Bound::Unbounded,
                        Bound::Included(s) => Bound::Included(self.severity_code(v, &s)?),
                        Bound::Excluded(s) => Bound::Excluded(self.severity_code(v, &s)?),
                    })
                };
                let (lower, upper) = (code(lower)?, code(upper)?);
                let lo = match lower {
                    Bound::Unbounded => 0,
                    Bound::Included(c) => c,
                    Bound::Excluded(c) => c.saturating_add(1),
                };
                let hi = match upper {
                    Bound::Unbounded => 7,
                    Bound::Included(c) => c,
                    Bound::Excluded(c) => match c.checked_sub(1) {
                        Some(c) => c,
                        // `<emerg`: nothing is more severe than emerg.
                        None => return Ok(Leaf::Severity { min: 1, max: 0 }),
                    },
                };
                // `[warning TO error]` and `[error TO warning]` mean the same: names are not
                // obviously ordered, so accept either.
                Leaf::Severity {
                    min: lo.min(hi),
                    max: lo.max(hi),
                }
            }
        })
    }
}

/// A field value before it is checked against the field.
enum Value {
    /// `*`: the field exists.
    Any,
    Word(String),
    Phrase(String),
    Prefix(String),
    Range(Bound<String>, Bound<String>),
}

fn flatten(mut items: Vec<Ast>, make: fn(Vec<Ast>) -> Ast) -> Ast {
    if items.len() == 1 {
        items.pop().unwrap_or(Ast::All)
    } else {
        make(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str) -> Ast {
        Ast::Leaf(Leaf::Word {
            target: Target::Message,
            text: text.into(),
        })
    }

    fn kw(k: Keyword, text: &str) -> Ast {
        Ast::Leaf(Leaf::Word {
            target: Target::Keyword(k),
            text: text.into(),
        })
    }

    fn sev(min: u8, max: u8) -> Ast {
        Ast::Leaf(Leaf::Severity { min, max })
    }

    fn not(a: Ast) -> Ast {
        Ast::Not(Box::new(a))
    }

    #[test]
    fn parses_the_documented_syntax() {
        use Bound::*;
        let cases: Vec<(&str, Ast)> = vec![
            ("", Ast::All),
            ("  *  ", Ast::All),
            ("disk", word("disk")),
            ("disk full", Ast::And(vec![word("disk"), word("full")])),
            ("disk AND full", Ast::And(vec![word("disk"), word("full")])),
            ("disk OR full", Ast::Or(vec![word("disk"), word("full")])),
            (
                "a b OR c",
                Ast::Or(vec![Ast::And(vec![word("a"), word("b")]), word("c")]),
            ),
            (
                "a AND (b OR c)",
                Ast::And(vec![word("a"), Ast::Or(vec![word("b"), word("c")])]),
            ),
            (
                "disk -quota",
                Ast::And(vec![word("disk"), not(word("quota"))]),
            ),
            ("NOT disk", not(word("disk"))),
            ("NOT(disk)", not(word("disk"))),
            ("a NOT b", Ast::And(vec![word("a"), not(word("b"))])),
            ("and or", Ast::And(vec![word("and"), word("or")])),
            (
                "\"disk full\"",
                Ast::Leaf(Leaf::Phrase {
                    target: Target::Message,
                    text: "disk full".into(),
                }),
            ),
            (
                r#""say \"hi\"""#,
                Ast::Leaf(Leaf::Phrase {
                    target: Target::Message,
                    text: "say \"hi\"".into(),
                }),
            ),
            ("host:web-01", kw(Keyword::Host, "web-01")),
            (
                "host:\"Web 01\"",
                Ast::Leaf(Leaf::Phrase {
                    target: Target::Keyword(Keyword::Host),
                    text: "Web 01".into(),
                }),
            ),
            (
                "parse_error:*",
                Ast::Leaf(Leaf::Exists {
                    target: Target::Keyword(Keyword::ParseError),
                }),
            ),
            (
                "fields.user.id:42",
                Ast::Leaf(Leaf::Word {
                    target: Target::Json("user.id".into()),
                    text: "42".into(),
                }),
            ),
            ("severity:error", sev(3, 3)),
            ("severity:ERR", sev(3, 3)),
            ("severity:<=warning", sev(0, 4)),
            ("severity:<warning", sev(0, 3)),
            ("severity:>=err", sev(3, 7)),
            ("severity:>notice", sev(6, 7)),
            ("severity:[crit TO warning]", sev(2, 4)),
            ("severity:[warning TO crit]", sev(2, 4)),
            ("severity:*", sev(0, 7)),
            (
                "fields.latency:[100 TO 500}",
                Ast::Leaf(Leaf::Range {
                    target: Target::Json("latency".into()),
                    lower: Included("100".into()),
                    upper: Excluded("500".into()),
                }),
            ),
            (
                "fields.latency:>=-1.5",
                Ast::Leaf(Leaf::Range {
                    target: Target::Json("latency".into()),
                    lower: Included("-1.5".into()),
                    upper: Unbounded,
                }),
            ),
            (
                "host:{a TO *]",
                Ast::Leaf(Leaf::Range {
                    target: Target::Keyword(Keyword::Host),
                    lower: Excluded("a".into()),
                    upper: Unbounded,
                }),
            ),
            (
                "dis*",
                Ast::Leaf(Leaf::Prefix {
                    target: Target::Message,
                    prefix: "dis".into(),
                }),
            ),
            (
                "app:ng*",
                Ast::Leaf(Leaf::Prefix {
                    target: Target::Keyword(Keyword::App),
                    prefix: "ng".into(),
                }),
            ),
            (r"a\(b", word("a(b")),
            ("10:30", word("10:30")),
            (
                "(reset OR cache) AND severity:warning",
                Ast::And(vec![Ast::Or(vec![word("reset"), word("cache")]), sev(4, 4)]),
            ),
            ("-(-a)", not(not(word("a")))),
        ];
        for (q, want) in cases {
            assert_eq!(parse(q), Ok(want), "{q}");
        }
    }

    #[test]
    fn errors_name_what_was_expected_and_the_column() {
        let cases: Vec<(&str, usize, &str)> = vec![
            ("disk(", 6, "expected a term or ')'"),
            ("(a OR b", 8, "expected ')'"),
            ("(a OR b c", 10, "expected ')'"),
            ("a)", 2, "unbalanced ')'"),
            ("a AND", 6, "expected a term after AND"),
            ("a OR ", 6, "expected a term after OR"),
            ("OR a", 1, "found the operator OR"),
            ("\"disk full", 11, "close the phrase opened at column 1"),
            ("x \"unclosed", 12, "close the phrase opened at column 3"),
            ("foo:bar", 1, "unknown field 'foo'"),
            ("host:", 6, "expected a value after 'host:'"),
            ("severity:loud", 10, "unknown severity 'loud'"),
            ("host:[a TO b", 13, "expected ']' or '}'"),
            ("host:[a b]", 9, "expected TO"),
            ("message:[a TO b]", 9, "ranges apply to"),
            ("a*b", 2, "'*' is only supported at the end"),
            ("- a", 2, "expected a term to negate"),
            ("()", 2, "expected a term inside"),
            ("é foo:bar", 3, "unknown field"),
        ];
        for (q, column, msg) in cases {
            let err = parse(q).expect_err(q);
            assert_eq!(err.column, column, "{q}: {err}");
            assert!(err.message.contains(msg), "{q}: {err}");
        }
    }

    #[test]
    fn hostile_input_is_bounded() {
        let deep = format!(
            "{}a{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let err = parse(&deep).unwrap_err();
        assert!(err.message.contains("nests deeper"), "{err}");
        assert_eq!(err.column, MAX_DEPTH + 1);
        let ok = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(parse(&ok), Ok(word("a")));
        let negations = "-".repeat(MAX_DEPTH + 1) + "a";
        assert!(parse(&negations)
            .unwrap_err()
            .message
            .contains("nests deeper"));
        let huge = "a ".repeat(MAX_QUERY_BYTES);
        assert!(parse(&huge)
            .unwrap_err()
            .message
            .contains("maximum is 4096"));
        let many = "a ".repeat(MAX_CLAUSES + 1);
        let err = parse(&many).unwrap_err();
        assert!(err.message.contains("clauses"), "{err}");
        assert_eq!(err.column, 2 * MAX_CLAUSES + 1);
        // Unclosed groups at the depth limit do not recurse further.
        assert!(parse(&"(".repeat(4000)).is_err());
    }
}
