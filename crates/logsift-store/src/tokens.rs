//! The text analyzer of the message and `fields`: tantivy's `default` (split on
//! non-alphanumerics, drop tokens over 40 bytes, lowercase) with high-entropy tokens folded into
//! buckets.
//!
//! Why: ids, trace ids, long numbers and hex strings are nearly unique per record. Each one
//! costs a term dictionary entry and a postings list at every commit and again at every merge,
//! and they are most of the terms (issue #16: ~1.7 single-record terms per record, the largest
//! part of indexing CPU). Folding them into 2^18 bucket terms keeps the dictionary small; a
//! query for such a token reads its bucket and verifies each candidate against the record
//! (see `logsift-query`'s verified term), so answers stay exact. A bucket plays the role of
//! VictoriaLogs' per-block bloom filters, inside tantivy.
//!
//! Each folded token also leaves a prefix term (its first [`PREFIX_CHARS`] characters), so a
//! prefix query can still reach ids (`req7*`): it reads prefix terms and verifies.

use tantivy::tokenizer::{
    LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer, Token, TokenFilter, TokenStream,
    Tokenizer,
};

/// The tokenizer name the schema gives the message and `fields`.
pub const TEXT_TOKENIZER: &str = "logsift_text";

/// First byte of a bucket term. The simple tokenizer only emits alphanumeric characters, so no
/// word can start with it.
pub const BUCKET_MARK: char = '\u{1}';
/// First byte of a prefix term.
pub const PREFIX_MARK: char = '\u{2}';
/// Characters of a folded token kept in its prefix term.
pub const PREFIX_CHARS: usize = 3;
const BUCKET_BITS: u32 = 18;

/// Whether the indexer folds `token` (already lowercased) into a bucket: at least 6 bytes and
/// at least one digit. Words stay words; numbers of up to five digits (ports, status codes,
/// durations) stay terms; ids, hashes, timestamps and counters are folded.
pub fn is_high_entropy(token: &str) -> bool {
    token.len() >= 6 && token.bytes().any(|b| b.is_ascii_digit())
}

/// The bucket term of a folded token: the mark and 5 hex digits of a stable hash.
pub fn bucket_term(token: &str) -> String {
    // FNV-1a: stable across versions and platforms, unlike the std hasher; segments written
    // today must find their buckets in any later build.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in token.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let bucket = (h ^ (h >> 32)) & ((1 << BUCKET_BITS) - 1);
    format!("{BUCKET_MARK}{bucket:05x}")
}

/// The prefix term of a folded token, or of a query prefix of up to [`PREFIX_CHARS`] chars.
pub fn prefix_term(token: &str) -> String {
    let mut s = String::with_capacity(PREFIX_CHARS * 4 + 1);
    s.push(PREFIX_MARK);
    s.extend(token.chars().take(PREFIX_CHARS));
    s
}

/// The analyzer registered as [`TEXT_TOKENIZER`].
pub fn text_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(FoldHighEntropy)
        .build()
}

/// The analyzer of `default`, used to tokenize record text when verifying candidates: the
/// words a folded term stood for.
pub fn word_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .build()
}

/// Tokens [`word_analyzer`] drops: this many bytes or more, as the tokenizer found them.
const LONG_TOKEN_BYTES: usize = 40;

/// Calls `f` with each word of `text`, exactly as [`word_analyzer`] yields them (maximal runs
/// of alphanumeric characters, runs of [`LONG_TOKEN_BYTES`] or more dropped, lowercased
/// character by character): a slice of `text` when it is lowercase ASCII already, else
/// lowercased into `buf`. Without the analyzer's token stream: runs of ASCII are found byte by
/// byte, and a word is copied at most once. Tokenizing through the stream
/// (tantivy's `SimpleTokenizer`, then `LowerCaser`, each token a `String`) was 45 % of the
/// prepare thread in a perf of the e2e ingest.
pub fn for_each_word(text: &str, buf: &mut String, mut f: impl FnMut(&str)) {
    for_each_word_until(text, buf, |w| {
        f(w);
        false
    });
}

/// [`for_each_word`] until `f` returns `true` (then `true`; `false` if it never did).
pub fn for_each_word_until(text: &str, buf: &mut String, mut f: impl FnMut(&str) -> bool) -> bool {
    let bytes = text.as_bytes();
    // The character at `i` (a char boundary) and its length, when it is alphanumeric.
    let alnum_at = |i: usize| -> Option<usize> {
        let b = bytes[i];
        if b < 0x80 {
            return b.is_ascii_alphanumeric().then_some(1);
        }
        let c = text[i..].chars().next()?;
        c.is_alphanumeric().then(|| c.len_utf8())
    };
    let mut i = 0;
    while i < bytes.len() {
        let Some(len) = alnum_at(i) else {
            // Step over the separator, whole if it is not ASCII.
            i += text[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let start = i;
        let mut ascii = len == 1;
        let mut upper = bytes[start].is_ascii_uppercase();
        i += len;
        while i < bytes.len() {
            match alnum_at(i) {
                Some(len) => {
                    ascii &= len == 1;
                    upper |= bytes[i].is_ascii_uppercase();
                    i += len;
                }
                None => break,
            }
        }
        let token = &text[start..i];
        if token.len() >= LONG_TOKEN_BYTES {
            continue;
        }
        // Most words are lowercase ASCII already: `f` gets them in place, uncopied.
        let word = if ascii && !upper {
            token
        } else {
            buf.clear();
            if ascii {
                buf.push_str(token);
                buf.make_ascii_lowercase();
            } else {
                for c in token.chars() {
                    buf.extend(c.to_lowercase());
                }
            }
            buf.as_str()
        };
        if f(word) {
            return true;
        }
    }
    false
}

#[derive(Clone)]
pub struct FoldHighEntropy;

impl TokenFilter for FoldHighEntropy {
    type Tokenizer<T: Tokenizer> = FoldHighEntropyTokenizer<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> Self::Tokenizer<T> {
        FoldHighEntropyTokenizer { inner: tokenizer }
    }
}

#[derive(Clone)]
pub struct FoldHighEntropyTokenizer<T> {
    inner: T,
}

impl<T: Tokenizer> Tokenizer for FoldHighEntropyTokenizer<T> {
    type TokenStream<'a> = FoldHighEntropyStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        FoldHighEntropyStream {
            tail: self.inner.token_stream(text),
            pending_prefix: None,
        }
    }
}

pub struct FoldHighEntropyStream<S> {
    tail: S,
    /// The prefix term still to emit at the position of the last folded token.
    pending_prefix: Option<String>,
}

impl<S: TokenStream> TokenStream for FoldHighEntropyStream<S> {
    fn advance(&mut self) -> bool {
        if let Some(prefix) = self.pending_prefix.take() {
            self.tail.token_mut().text = prefix;
            return true;
        }
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        if is_high_entropy(&token.text) {
            self.pending_prefix = Some(prefix_term(&token.text));
            token.text = bucket_term(&token.text);
        }
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<(usize, String)> {
        let mut analyzer = text_analyzer();
        let mut out = Vec::new();
        let mut stream = analyzer.token_stream(text);
        stream.process(&mut |t| out.push((t.position, t.text.clone())));
        out
    }

    #[test]
    fn ids_fold_into_a_bucket_and_a_prefix_at_their_position_words_stay() {
        let out = tokens("GET /users/Req7f3a9c01 took 250 ms port 54321 sha256");
        let texts: Vec<&str> = out.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts[0], "get");
        assert_eq!(texts[1], "users");
        assert_eq!(texts[2], bucket_term("req7f3a9c01"));
        assert_eq!(texts[3], "\u{2}req");
        assert_eq!(
            out[2].0, out[3].0,
            "the prefix term shares the id's position"
        );
        assert_eq!(&texts[4..8], &["took", "250", "ms", "port"]);
        assert_eq!(texts[8], "54321", "five digits stay a word");
        assert_eq!(texts[9], bucket_term("sha256"));
        assert_eq!(
            out[4].0,
            out[2].0 + 1,
            "positions continue after a folded token"
        );
    }

    fn analyzer_words(text: &str) -> Vec<String> {
        let mut analyzer = word_analyzer();
        let mut out = Vec::new();
        let mut stream = analyzer.token_stream(text);
        stream.process(&mut |t| out.push(t.text.clone()));
        out
    }

    fn scanned_words(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_word(text, &mut String::new(), |w| out.push(w.to_string()));
        out
    }

    #[test]
    fn the_word_scanner_yields_what_the_word_analyzer_does() {
        let long = "x".repeat(39);
        let mut texts: Vec<String> = [
            "",
            " ",
            "GET /users/Req7f3a9c01 took 250 ms",
            "İstanbul ΣΑΣ Straße \u{212a}elvin ½ ٣٤ 日本語 a_b-c",
            "KELVIN \u{212a} sign, ǅ titlecase, Ⅻ numeral, ﬁ ligature, e\u{301} combining",
            "tab\tsep\u{a0}nbsp\u{2028}ls\u{1f}us\u{0}nul",
            "\u{fffd}\u{fffd}bad utf8 stand-ins",
            "ends with a word",
            "ÄÖÜ äöü ÀÉÎÕÙ",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Around the 40-byte limit, in ASCII and in two-byte characters.
        for n in [38, 39, 40, 41] {
            texts.push(format!("{} {} {}", "a".repeat(n), "é".repeat(n / 2), long));
            texts.push(format!("{}é", "B".repeat(n - 2)));
        }
        // Every character of the first two planes between two words, alone and in a word.
        let mut all = String::new();
        for c in (0u32..0x2_0000).filter_map(char::from_u32) {
            all.push('a');
            all.push(c);
            all.push(' ');
            all.push(c);
            all.push(' ');
        }
        texts.push(all);
        for text in &texts {
            assert_eq!(scanned_words(text), analyzer_words(text), "{text:?}");
        }
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        // Pinned: segments on disk depend on these values.
        assert_eq!(bucket_term("req7f3a9c01"), "\u{1}3105f");
        assert_eq!(
            bucket_term("req7f3a9c01"),
            bucket_term("REQ7F3A9C01".to_lowercase().as_str())
        );
        let distinct: std::collections::HashSet<String> = (0..10_000)
            .map(|i| bucket_term(&format!("id{i:08}")))
            .collect();
        assert!(
            distinct.len() > 9_000,
            "{} buckets for 10k ids",
            distinct.len()
        );
    }
}
