//! Prometheus label sets as Loki's protobuf push carries them: `{host="a", app="b\"c"}`.

use crate::DecodeError;

/// Parses a label set. Names follow Prometheus (`[a-zA-Z_][a-zA-Z0-9_]*`); values are
/// double-quoted with `\\`, `\"` and `\n` escapes, the only ones Prometheus writes.
pub fn parse_labels(text: &str) -> Result<Vec<(String, String)>, DecodeError> {
    let bad = |what: &str, at: usize| {
        DecodeError::Invalid(format!(
            "bad label set {:?}: {what} at byte {at}",
            shorten(text)
        ))
    };
    let b = text.as_bytes();
    let mut pos = skip_ws(b, 0);
    if b.get(pos) != Some(&b'{') {
        return Err(bad("expected '{'", pos));
    }
    pos = skip_ws(b, pos + 1);
    let mut out = Vec::new();
    if b.get(pos) == Some(&b'}') {
        return finish(b, pos + 1, out).map_err(|at| bad("unexpected text after '}'", at));
    }
    loop {
        let start = pos;
        while b.get(pos).is_some_and(|&c| {
            c == b'_' || c.is_ascii_alphabetic() || (pos > start && c.is_ascii_digit())
        }) {
            pos += 1;
        }
        if pos == start {
            return Err(bad("expected a label name", pos));
        }
        let name = &text[start..pos];
        pos = skip_ws(b, pos);
        if b.get(pos) != Some(&b'=') {
            return Err(bad("expected '='", pos));
        }
        pos = skip_ws(b, pos + 1);
        if b.get(pos) != Some(&b'"') {
            return Err(bad("expected '\"'", pos));
        }
        pos += 1;
        let mut value = String::new();
        loop {
            // Everything up to the next quote or backslash is copied as is; both are ASCII,
            // so the slice boundaries are char boundaries.
            let run = b[pos.min(b.len())..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\')
                .ok_or_else(|| bad("unterminated value", b.len()))?;
            value.push_str(&text[pos..pos + run]);
            pos += run;
            if b[pos] == b'"' {
                pos += 1;
                break;
            }
            match b.get(pos + 1) {
                Some(b'\\') => value.push('\\'),
                Some(b'"') => value.push('"'),
                Some(b'n') => value.push('\n'),
                _ => return Err(bad("unknown escape", pos)),
            }
            pos += 2;
        }
        out.push((name.to_string(), value));
        pos = skip_ws(b, pos);
        match b.get(pos) {
            Some(b',') => pos = skip_ws(b, pos + 1),
            Some(b'}') => {
                return finish(b, pos + 1, out).map_err(|at| bad("unexpected text after '}'", at))
            }
            _ => return Err(bad("expected ',' or '}'", pos)),
        }
        // Prometheus allows a trailing comma.
        if b.get(pos) == Some(&b'}') {
            return finish(b, pos + 1, out).map_err(|at| bad("unexpected text after '}'", at));
        }
    }
}

fn finish(
    b: &[u8],
    pos: usize,
    out: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, usize> {
    let end = skip_ws(b, pos);
    if end == b.len() {
        Ok(out)
    } else {
        Err(end)
    }
}

fn skip_ws(b: &[u8], mut pos: usize) -> usize {
    while b.get(pos).is_some_and(u8::is_ascii_whitespace) {
        pos += 1;
    }
    pos
}

/// At most 64 bytes of `text` for an error message: label sets can be long.
fn shorten(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn parses_prometheus_label_sets() {
        assert_eq!(parse_labels("{}").unwrap(), pairs(&[]));
        assert_eq!(
            parse_labels(r#" { host="web-1", app = "api",_x9="a\"b\\c\nd", } "#).unwrap(),
            pairs(&[("host", "web-1"), ("app", "api"), ("_x9", "a\"b\\c\nd")])
        );
        assert_eq!(
            parse_labels(r#"{job="é ü"}"#).unwrap(),
            pairs(&[("job", "é ü")])
        );
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        for bad in [
            "",
            "host=\"a\"",
            "{9a=\"b\"}",
            "{a=b}",
            "{a=\"b}",
            "{a=\"b\" c=\"d\"}",
            "{a=\"\\x\"}",
            "{a=\"b\"} x",
            "{a=\"b\\",
            "{,}",
        ] {
            assert!(parse_labels(bad).is_err(), "{bad:?}");
        }
    }
}
