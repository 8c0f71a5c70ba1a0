//! `key=value` pairs (logfmt) inside free-text syslog messages, for indexes that enable it.
//!
//! `user=bob status=200 msg="disk full" retry=` gives `user`, `status`, `msg` and `retry` (empty).
//! Words without `=` are skipped, so prose around the pairs is fine. Keys are ASCII letters,
//! digits and `_ . - @`; a value is either bare (up to the next whitespace) or double-quoted
//! with `\"`, `\\`, `\n`, `\r`, `\t` escapes. Fields that already exist (RFC 5424 structured
//! data, an earlier pair with the same key) are never overwritten.

use std::borrow::Cow;

use logsift_core::{FieldValue, Record};
use memchr::{memchr2, memchr_iter};

/// Pairs taken from one message at most. Each pair is checked against the existing fields
/// (a linear scan), so this bounds the work a hostile message full of `a=b` can cause.
pub(crate) const MAX_PAIRS: usize = 64;

/// Longer "keys" are not keys (a base64 blob with `=` padding, say).
const MAX_KEY_LEN: usize = 64;

/// Adds the pairs in `record.message` to `record.fields`.
pub(crate) fn extract_into(record: &mut Record<'_>) {
    match record.message {
        Cow::Borrowed(msg) => {
            let fields = &mut record.fields;
            fields.reserve(memchr_iter(b'=', msg.as_bytes()).take(MAX_PAIRS).count(), 0);
            for (key, value) in pairs(msg) {
                if !fields.contains(key) {
                    fields.push(key, FieldValue::Str(value));
                }
            }
        }
        // The message was repaired (invalid UTF-8), so nothing in it lives as long as the line:
        // copy. This is the rare path.
        Cow::Owned(ref msg) => {
            let fields = &mut record.fields;
            for (key, value) in pairs(msg) {
                if !fields.contains(key) {
                    fields.push_copied(key, FieldValue::Str(Cow::Owned(value.into_owned())));
                }
            }
        }
    }
}

fn is_key_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'@')
}

/// The pairs of `msg`, in order, at most [`MAX_PAIRS`] of them. One pass, no backtracking.
pub(crate) fn pairs(msg: &str) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
    let b = msg.as_bytes();
    let mut pos = 0;
    let mut found = 0;
    std::iter::from_fn(move || {
        while found < MAX_PAIRS && pos < b.len() {
            while pos < b.len() && b[pos].is_ascii_whitespace() {
                pos += 1;
            }
            let start = pos;
            while pos < b.len() && is_key_byte(b[pos]) {
                pos += 1;
            }
            let key_end = pos;
            if key_end == start || key_end - start > MAX_KEY_LEN || b.get(pos) != Some(&b'=') {
                // Not a pair: skip the rest of this word.
                while pos < b.len() && !b[pos].is_ascii_whitespace() {
                    pos += 1;
                }
                continue;
            }
            pos += 1;
            let value = if b.get(pos) == Some(&b'"') {
                match quoted(msg, pos + 1) {
                    Some((value, end)) => {
                        pos = end;
                        value
                    }
                    // An unterminated quote: the rest is not logfmt.
                    None => {
                        pos = b.len();
                        return None;
                    }
                }
            } else {
                let v_start = pos;
                while pos < b.len() && !b[pos].is_ascii_whitespace() {
                    pos += 1;
                }
                Cow::Borrowed(&msg[v_start..pos])
            };
            found += 1;
            // Keys are ASCII, so these are char boundaries.
            return Some((&msg[start..key_end], value));
        }
        None
    })
}

/// A quoted value starting after its opening quote: the value (borrowed unless it had escapes)
/// and the index after the closing quote.
fn quoted(msg: &str, start: usize) -> Option<(Cow<'_, str>, usize)> {
    let b = msg.as_bytes();
    let mut pos = start;
    let mut owned: Option<String> = None;
    loop {
        let at = pos + memchr2(b'"', b'\\', b.get(pos..)?)?;
        if b[at] == b'"' {
            let value = match owned {
                None => Cow::Borrowed(&msg[start..at]),
                Some(mut s) => {
                    s.push_str(&msg[pos..at]);
                    Cow::Owned(s)
                }
            };
            return Some((value, at + 1));
        }
        let s = owned.get_or_insert_with(String::new);
        s.push_str(&msg[pos..at]);
        // `\` is ASCII, so `at + 1` is a char boundary; the escaped char may be multi-byte.
        let next = msg[at + 1..].chars().next()?;
        match next {
            'n' => s.push('\n'),
            'r' => s.push('\r'),
            't' => s.push('\t'),
            '"' | '\\' => s.push(next),
            other => {
                s.push('\\');
                s.push(other);
            }
        }
        pos = at + 1 + next.len_utf8();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(msg: &str) -> Vec<(&str, String)> {
        pairs(msg).map(|(k, v)| (k, v.into_owned())).collect()
    }

    #[test]
    fn bare_quoted_empty_and_prose() {
        assert_eq!(
            all(r#"login failed user=bob src=10.0.0.1:22 msg="disk \"sda\" full" retry= done"#),
            [
                ("user", "bob".to_string()),
                ("src", "10.0.0.1:22".to_string()),
                ("msg", "disk \"sda\" full".to_string()),
                ("retry", String::new()),
            ]
        );
        assert!(all("no pairs here = at all =x").is_empty());
        assert_eq!(all("a=b=c"), [("a", "b=c".to_string())]);
        assert_eq!(all("k=\"x\\ty\\q\""), [("k", "x\ty\\q".to_string())]);
    }

    #[test]
    fn unterminated_quote_stops() {
        assert_eq!(all(r#"a=1 b="oops c=3"#), [("a", "1".to_string())]);
        assert_eq!(all(r#"a="\"#), []);
        assert_eq!(all("a=\"\\é\""), [("a", "\\é".to_string())]);
    }

    #[test]
    fn keys_must_look_like_keys() {
        let long = format!("{}=1", "k".repeat(MAX_KEY_LEN + 1));
        assert!(all(&long).is_empty());
        assert!(all("http://x/?a=b").is_empty());
        assert_eq!(
            all("req.id=7 @t=x"),
            [("req.id", "7".to_string()), ("@t", "x".to_string())]
        );
    }

    #[test]
    fn bounded_on_hostile_input() {
        let msg = "a=b ".repeat(10_000);
        assert_eq!(pairs(&msg).count(), MAX_PAIRS);
    }
}
