//! What a block needs of a record's parse: its stream, severity and time, and its words and
//! ids, hashed. Found apart from the block the record joins, so that the indexer can find them
//! for a batch on another thread while it joins the batch before to its blocks (in a perf of
//! the e2e ingest, parsing, tokenizing and hashing were a fifth of the indexer thread's time;
//! counting the words into their block, which stays on it, 28 %).

use std::fmt::Write as _;

use logsift_core::{FieldValue, Record};

use crate::blocks::{
    hash_word, FIELD_KEY_MARK, FIELD_TYPED_MARK, FIELD_WORD_MARK, KEYWORD_MARK, WORD_SEP,
};
use crate::tokens;

/// The analyses of many records, side by side in a few buffers (no allocation per record once
/// the buffers have grown).
#[derive(Default)]
pub struct Analyzed {
    /// Every word, host and app of every record, one after the other.
    text: String,
    /// (hash, start, end in `text`) of each word.
    words: Vec<(u64, u32, u32)>,
    ids: Vec<u64>,
    records: Vec<Entry>,
}

#[derive(Clone, Copy)]
struct Entry {
    words_end: u32,
    ids_end: u32,
    host: Option<(u32, u32)>,
    app: Option<(u32, u32)>,
    message: (u32, u32),
    severity: Option<logsift_core::Severity>,
    timestamp: Option<i64>,
    parse_error: Option<&'static str>,
}

/// One record's analysis (see [`Analyzed::get`]).
pub struct Analysis<'a> {
    pub host: Option<&'a str>,
    pub app: Option<&'a str>,
    /// The message, which the pattern miner reads on the indexer's thread.
    pub message: &'a str,
    pub severity: Option<logsift_core::Severity>,
    /// From the line; `None`: use the receive time.
    pub timestamp: Option<i64>,
    /// The category of the parse error (`logsift_parse::parse_error_reason`), when the line did
    /// not parse as its format.
    pub parse_error: Option<&'static str>,
    text: &'a str,
    words: &'a [(u64, u32, u32)],
    /// Hashes of the record's high-entropy tokens (ids, hex), for the block's id filter.
    pub ids: &'a [u64],
}

impl<'a> Analysis<'a> {
    /// Each word with its hash ([`hash_word`]), as often as the record holds it.
    pub fn words(&self) -> impl Iterator<Item = (u64, &'a str)> + '_ {
        let text = self.text;
        self.words
            .iter()
            .map(move |&(h, s, e)| (h, &text[s as usize..e as usize]))
    }
}

impl Analyzed {
    pub fn clear(&mut self) {
        self.text.clear();
        self.words.clear();
        self.ids.clear();
        self.records.clear();
    }

    /// Bytes its buffers hold, used or not.
    pub fn held_bytes(&self) -> usize {
        self.text.capacity()
            + self.words.capacity() * std::mem::size_of::<(u64, u32, u32)>()
            + self.ids.capacity() * 8
            + self.records.capacity() * std::mem::size_of::<Entry>()
    }

    /// Records analysed.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The `i`th record's analysis.
    pub fn get(&self, i: usize) -> Analysis<'_> {
        let e = &self.records[i];
        let (words_start, ids_start) = match i.checked_sub(1) {
            Some(p) => (self.records[p].words_end, self.records[p].ids_end),
            None => (0, 0),
        };
        let span = |r: Option<(u32, u32)>| r.map(|(s, e)| &self.text[s as usize..e as usize]);
        Analysis {
            host: span(e.host),
            app: span(e.app),
            message: &self.text[e.message.0 as usize..e.message.1 as usize],
            severity: e.severity,
            timestamp: e.timestamp,
            parse_error: e.parse_error,
            text: &self.text,
            words: &self.words[words_start as usize..e.words_end as usize],
            ids: &self.ids[ids_start as usize..e.ids_end as usize],
        }
    }

    fn put(&mut self, s: &str) -> (u32, u32) {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        (start, self.text.len() as u32)
    }

    fn word(&mut self, word: &str) {
        // A word holding the separator of the block's word text cannot be indexed: a query for
        // it plans to every block, and the record check decides.
        if word.contains(WORD_SEP) {
            return;
        }
        let (s, e) = self.put(word);
        self.words.push((hash_word(word.as_bytes()), s, e));
    }

    /// A word of letters and digits only, which cannot hold the separator.
    fn plain_word(&mut self, word: &str) {
        let (s, e) = self.put(word);
        self.words.push((hash_word(word.as_bytes()), s, e));
    }

    fn id(&mut self, token: &str) {
        self.ids.push(hash_word(token.as_bytes()));
    }
}

/// Finds records' words ([`tokens::for_each_word`]): scratch buffers reused from record to
/// record.
#[derive(Default)]
pub struct Analyzer {
    word: String,
    token: String,
}

impl Analyzer {
    /// Appends the analysis of `parsed` (a line of `source`) to `out`.
    pub fn analyze(&mut self, parsed: &Record<'_>, source: &str, out: &mut Analyzed) {
        let host = parsed.host.as_deref().map(|h| out.put(h));
        let app = parsed.app.as_deref().map(|a| out.put(a));
        let message = out.put(&parsed.message);
        self.words(parsed, source, message, out);
        out.records.push(Entry {
            words_end: out.words.len() as u32,
            ids_end: out.ids.len() as u32,
            host,
            app,
            message,
            severity: parsed.severity,
            timestamp: parsed.timestamp,
            parse_error: parsed
                .parse_error
                .as_deref()
                .map(logsift_parse::parse_error_reason),
        });
    }

    /// The words of `parsed`, whose message `out` holds at `message`.
    fn words(
        &mut self,
        parsed: &Record<'_>,
        source: &str,
        message: (u32, u32),
        out: &mut Analyzed,
    ) {
        let word = &mut self.word;
        let text = parsed.message.as_bytes().as_ptr_range();
        tokens::for_each_word(&parsed.message, &mut self.token, |t| {
            if tokens::is_high_entropy(t) {
                out.id(t);
            } else if text.contains(&t.as_ptr()) {
                // A word spelled as the message spells it: pointed at in `out`'s copy of the
                // message, not copied again (copying every word was a sixth of this thread).
                let start = message.0 + (t.as_ptr() as usize - text.start as usize) as u32;
                let end = start + t.len() as u32;
                out.words.push((hash_word(t.as_bytes()), start, end));
            } else {
                out.plain_word(t);
            }
        });
        for (name, value) in [
            ("host", &parsed.host),
            ("app", &parsed.app),
            ("procid", &parsed.procid),
            ("msgid", &parsed.msgid),
        ] {
            if let Some(v) = value {
                marked(word, KEYWORD_MARK, name, v, true);
                out.word(word);
            }
        }
        if let Some(f) = parsed.facility {
            marked(word, KEYWORD_MARK, "facility", f.name(), true);
            out.word(word);
        }
        if let Some(sev) = parsed.severity {
            marked(word, KEYWORD_MARK, "severity", "", false);
            let _ = write!(word, "{}", sev.code());
            out.word(word);
        }
        if let Some(e) = &parsed.parse_error {
            marked(word, KEYWORD_MARK, "parse_error", e, true);
            out.word(word);
        }
        marked(word, KEYWORD_MARK, "source", source, false);
        out.word(word);
        for (name, value) in parsed.fields() {
            // Key presence, for `fields.a:*` and `fields.a.b:*` alike.
            for (i, _) in name.match_indices('.').chain([(name.len(), "")]) {
                word.clear();
                word.push(FIELD_KEY_MARK);
                word.push_str(&name[..i]);
                out.word(word);
            }
            let text = match value {
                FieldValue::Str(s) => s.as_ref(),
                FieldValue::Json(t) => t,
                FieldValue::Number(n) => {
                    marked(word, FIELD_TYPED_MARK, name, "", false);
                    let typed = if let Ok(i) = n.parse::<i64>() {
                        write!(word, "i:{i}")
                    } else if let Ok(u) = n.parse::<u64>() {
                        write!(word, "u:{u}")
                    } else if let Ok(f) = n.parse::<f64>() {
                        write!(word, "f:{f}")
                    } else {
                        continue;
                    };
                    if typed.is_ok() {
                        out.word(word);
                    }
                    continue;
                }
                FieldValue::Bool(b) => {
                    marked(
                        word,
                        FIELD_TYPED_MARK,
                        name,
                        if *b { "b:true" } else { "b:false" },
                        false,
                    );
                    out.word(word);
                    continue;
                }
                FieldValue::Null => continue,
            };
            tokens::for_each_word(text, &mut self.token, |t| {
                marked(word, FIELD_WORD_MARK, name, t, false);
                // Ids of a field are filtered under their key: a trace id shared by a thousand
                // records' fields must not send a message needle to every one of their blocks.
                if tokens::is_high_entropy(t) {
                    out.id(word);
                } else {
                    out.word(word);
                }
            });
        }
    }
}

/// Pushes `name \0 value` after `mark` into `word`, lowercased (ASCII fast, else Unicode) when
/// `lower`.
fn marked(word: &mut String, mark: char, name: &str, value: &str, lower: bool) {
    word.clear();
    word.push(mark);
    word.push_str(name);
    word.push('\0');
    if !lower {
        word.push_str(value);
    } else if value.is_ascii() {
        word.extend(value.chars().map(|c| c.to_ascii_lowercase()));
    } else {
        word.push_str(&value.to_lowercase());
    }
}
