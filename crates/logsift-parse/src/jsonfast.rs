//! A single-pass JSON object reader for the common case, twice as fast as going through
//! serde_json (which reads every nested value twice here: once as `RawValue`, once to flatten or
//! decode it).
//!
//! It accepts a subset of what serde_json accepts and gives up ([`GiveUp`]) on anything else:
//! invalid JSON, lone surrogate escapes, nesting deeper than [`MAX_DEPTH`]. The caller then lets
//! serde_json decide and word the error, so the fast path never changes a verdict or a message.
//! Its records equal the serde_json path's (see `fast_path_matches_serde_path` and the `json`
//! fuzz target).

use std::borrow::Cow;

use logsift_core::{FieldValue, Record};

use crate::json::{has_nested_slots, slot_of, Builder, MAX_FLATTEN_DEPTH};
use crate::ParseOptions;

/// The fast path gave up on the line; serde_json takes over.
#[derive(Debug)]
pub(crate) struct GiveUp;

/// Below serde_json's recursion limit (128), so that anything deeper goes to serde_json and
/// gets its error.
const MAX_DEPTH: usize = 100;

pub(crate) fn build_record<'a>(text: &'a str, opts: &ParseOptions) -> Result<Record<'a>, GiveUp> {
    let mut builder = Builder::new(text, opts);
    let mut p = Reader {
        s: text,
        b: text.as_bytes(),
        pos: 0,
    };
    p.ws();
    p.expect(b'{')?;
    p.object_members(&mut builder, 1, true)?;
    p.ws();
    if p.pos != p.b.len() {
        return Err(GiveUp);
    }
    Ok(builder.finish())
}

/// Whether `text` is one JSON object the fast path reads (whitespace around it allowed),
/// scanned without building a record. `true` means [`build_record`] succeeds on it; `false`
/// decides nothing (serde_json may still accept it). Nesting is checked a level more strictly
/// than in `build_record`, so that `true` never says more than it would.
pub(crate) fn is_object(text: &str) -> bool {
    let mut p = Reader {
        s: text,
        b: text.as_bytes(),
        pos: 0,
    };
    p.ws();
    if p.b.get(p.pos) != Some(&b'{') || p.skip(1).is_err() {
        return false;
    }
    p.ws();
    p.pos == p.b.len()
}

struct Reader<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), GiveUp> {
        if self.b.get(self.pos) == Some(&c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(GiveUp)
        }
    }

    /// Reads the members of an object whose `{` was just consumed, pushing them into
    /// `builder.fields`; nested objects are flattened into `path.key` names. `depth` is the
    /// object's nesting level (1 for the line itself). Returns how many fields it pushed.
    fn object_members(
        &mut self,
        builder: &mut Builder<'a, '_>,
        depth: usize,
        top: bool,
    ) -> Result<usize, GiveUp> {
        let before = builder.fields.len();
        self.ws();
        if self.b.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(0);
        }
        let base = builder.path.len();
        loop {
            self.ws();
            let key = self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            let index = builder.fields.len();
            let value_start = self.pos;
            // Objects down to MAX_FLATTEN_DEPTH levels below the line are flattened.
            if self.b.get(self.pos) == Some(&b'{') && depth <= MAX_FLATTEN_DEPTH {
                self.pos += 1;
                builder.path.truncate(base);
                if !top {
                    builder.path.push('.');
                }
                builder.path.push_str(&key);
                let nested = top && has_nested_slots(&key);
                let pushed = self.object_members(builder, depth + 1, false)?;
                builder.path.truncate(base);
                if pushed == 0 {
                    // `{}` / `{ }`: kept whole.
                    let raw = &self.s[value_start..self.pos];
                    self.push(builder, top, key, FieldValue::Json(raw));
                } else if nested {
                    builder.note_nested(index);
                }
            } else {
                let value = self.value(depth)?;
                let slot = if top { slot_of(&key) } else { None };
                self.push(builder, top, key, value);
                builder.note_top_level(slot, index);
            }
            self.ws();
            match self.b.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(builder.fields.len() - before);
                }
                _ => return Err(GiveUp),
            }
        }
    }

    fn push(
        &self,
        builder: &mut Builder<'a, '_>,
        top: bool,
        key: Cow<'a, str>,
        value: FieldValue<'a>,
    ) {
        if top {
            builder.fields.push_cow(key, value);
        } else {
            builder.fields.push_joined(&[&builder.path, &key], value);
        }
    }

    /// A value that is not flattened: strings decoded, numbers and literals typed, arrays and
    /// (too deep) objects kept as their JSON text.
    fn value(&mut self, depth: usize) -> Result<FieldValue<'a>, GiveUp> {
        let start = self.pos;
        let value = match self.b.get(self.pos) {
            Some(b'"') => FieldValue::Str(self.string()?),
            Some(b'{' | b'[') => {
                self.skip(depth)?;
                FieldValue::Json(&self.s[start..self.pos])
            }
            Some(b't') => self.literal(b"true", FieldValue::Bool(true))?,
            Some(b'f') => self.literal(b"false", FieldValue::Bool(false))?,
            Some(b'n') => self.literal(b"null", FieldValue::Null)?,
            Some(b'-' | b'0'..=b'9') => {
                self.number()?;
                FieldValue::Number(&self.s[start..self.pos])
            }
            _ => return Err(GiveUp),
        };
        Ok(value)
    }

    fn literal(&mut self, word: &[u8], value: FieldValue<'a>) -> Result<FieldValue<'a>, GiveUp> {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(GiveUp)
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), GiveUp> {
        if self.b.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.b.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(GiveUp),
        }
        if self.b.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            self.digits_required()?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.b.get(self.pos) {
                self.pos += 1;
            }
            self.digits_required()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.b.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
    }

    fn digits_required(&mut self) -> Result<(), GiveUp> {
        let start = self.pos;
        self.digits();
        if self.pos == start {
            Err(GiveUp)
        } else {
            Ok(())
        }
    }

    /// Skips (and validates) an array or object at `depth`.
    fn skip(&mut self, depth: usize) -> Result<(), GiveUp> {
        if depth >= MAX_DEPTH {
            return Err(GiveUp);
        }
        let close = match self.b.get(self.pos) {
            Some(b'{') => b'}',
            Some(b'[') => b']',
            _ => return Err(GiveUp),
        };
        self.pos += 1;
        self.ws();
        if self.b.get(self.pos) == Some(&close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if close == b'}' {
                self.skip_string()?;
                self.ws();
                self.expect(b':')?;
                self.ws();
            }
            match self.b.get(self.pos) {
                Some(b'{' | b'[') => self.skip(depth + 1)?,
                Some(b'"') => self.skip_string()?,
                _ => {
                    self.value(depth + 1)?;
                }
            }
            self.ws();
            match self.b.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(&c) if c == close => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(GiveUp),
            }
        }
    }

    /// The end of the run of plain string bytes starting at `pos`: the index of the next `"`,
    /// `\` or control character (which JSON forbids unescaped).
    fn plain_run_end(&self, pos: usize) -> Result<usize, GiveUp> {
        let rest = self.b.get(pos..).ok_or(GiveUp)?;
        let n = special_byte(rest).ok_or(GiveUp)?;
        if rest[n] < 0x20 {
            return Err(GiveUp);
        }
        Ok(pos + n)
    }

    fn skip_string(&mut self) -> Result<(), GiveUp> {
        self.string().map(drop)
    }

    /// A string at `pos` (its opening quote), borrowed unless it has escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, GiveUp> {
        self.expect(b'"')?;
        let start = self.pos;
        let end = self.plain_run_end(start)?;
        if self.b[end] == b'"' {
            self.pos = end + 1;
            return Ok(Cow::Borrowed(&self.s[start..end]));
        }
        let mut out = String::with_capacity(end - start + 16);
        let mut pos = start;
        let mut run_end = end;
        loop {
            out.push_str(&self.s[pos..run_end]);
            if self.b[run_end] == b'"' {
                self.pos = run_end + 1;
                return Ok(Cow::Owned(out));
            }
            // A backslash.
            let esc = *self.b.get(run_end + 1).ok_or(GiveUp)?;
            pos = run_end + 2;
            match esc {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let hi = self.hex4(pos)?;
                    pos += 4;
                    let code = match hi {
                        0xD800..=0xDBFF => {
                            // A high surrogate must be followed by `\u` and a low one; lone
                            // surrogates are left to serde_json.
                            if self.b.get(pos..pos + 2) != Some(b"\\u") {
                                return Err(GiveUp);
                            }
                            let lo = self.hex4(pos + 2)?;
                            if !(0xDC00..=0xDFFF).contains(&lo) {
                                return Err(GiveUp);
                            }
                            pos += 6;
                            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                        }
                        0xDC00..=0xDFFF => return Err(GiveUp),
                        c => c,
                    };
                    out.push(char::from_u32(code).ok_or(GiveUp)?);
                }
                _ => return Err(GiveUp),
            }
            run_end = self.plain_run_end(pos)?;
        }
    }

    fn hex4(&self, pos: usize) -> Result<u32, GiveUp> {
        let digits = self.b.get(pos..pos + 4).ok_or(GiveUp)?;
        digits.iter().try_fold(0u32, |acc, &c| {
            let d = (c as char).to_digit(16).ok_or(GiveUp)?;
            Ok(acc * 16 + d)
        })
    }
}

/// The index of the first `"`, `\\` or control byte in `b`: eight bytes at a time (SWAR), since
/// most JSON strings are short and a call into memchr per string costs more than it saves.
fn special_byte(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = b.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // A byte is flagged when it is below 0x20, or equal to `"` or `\\` (zero after XOR).
        // Only the lowest flagged byte is exact, and that is the one taken.
        let below = x.wrapping_sub(ONES * 0x20) & !x;
        let quote =
            (x ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES) & !(x ^ (ONES * u64::from(b'"')));
        let slash =
            (x ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES) & !(x ^ (ONES * u64::from(b'\\')));
        let mask = (below | quote | slash) & HIGHS;
        if mask != 0 {
            return Some(base + (mask.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c < 0x20 || c == b'"' || c == b'\\')
        .map(|i| base + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: ParseOptions = ParseOptions {
        received_at_ns: 0,
        default_offset_secs: 0,
        logfmt: false,
    };

    /// Lines the fast path must read exactly as serde_json does, and lines it must give up on.
    #[test]
    fn special_byte_matches_a_plain_scan() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let len = (rng % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    // Mostly printable, sometimes special or high bytes.
                    match rng % 16 {
                        0 => b'"',
                        1 => b'\\',
                        2 => (rng >> 8) as u8 % 0x20,
                        3 => 0x80 | (rng >> 8) as u8,
                        _ => b'a' + (rng >> 8) as u8 % 26,
                    }
                })
                .collect();
            let plain = bytes
                .iter()
                .position(|&c| c < 0x20 || c == b'"' || c == b'\\');
            assert_eq!(special_byte(&bytes), plain, "{bytes:?}");
        }
    }

    #[test]
    fn fast_path_matches_serde_path() {
        let agree = [
            r#"{"ts":"2024-01-02T03:04:05.5Z","level":"WARN","msg":"disk \"sda\" full","n":12.50,"ok":true,"none":null,"tags":[1, {"a":[]}],"req":{"id":"x","h":{"a":1}},"empty":{},"sp":{ }}"#,
            r#" { "a" : { "b" : { } , "c" : -0.5e+3 } , "\u00e9\ud83d\ude00" : "\/\b\f\n\r\t" } "#,
            r#"{"time":"2020-01-01T00:00:00Z","@timestamp":"2021-01-01T00:00:00Z","msg":"a","msg":"b"}"#,
            r#"{"level":"chatty","time":"yesterday","message":{"a":1},"host":""}"#,
            r#"{"a":"\u0000","b":[[[[]]]],"c":{"d":{"e":{"f":"g"}}}}"#,
            r#"{}"#,
            r#"{"host":{"name":"a","ip":"x"},"log":{"level":"warn"},"log.level":"error","service":{"name":{}},"hostname":"b"}"#,
            r#"{"host":{ },"service":{"name":"s","name":"t"},"log":{"logger":"l","level":{"x":1}}}"#,
            r#"{"msg":{"a":"b"},"time":{"x":"2024-01-01T00:00:00Z"},"level":{"y":"warn"}}"#,
        ];
        for line in agree {
            let fast = build_record(line, &OPTS).expect(line);
            let serde = crate::json::build_record_serde(line, &OPTS).expect(line);
            assert_eq!(fast, serde, "{line}");
        }
        let give_up = [
            r#"{"a":"\ud800"}"#,
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            r#"{"a":"x	y"}"#,
            r#"{"a":1} x"#,
            r#"{"a":tru}"#,
            r#"{"a":1.}"#,
            r#"{"a":[1 2]}"#,
            r#"[1]"#,
        ];
        for line in agree {
            assert!(is_object(line), "{line}");
        }
        for line in give_up {
            assert!(build_record(line, &OPTS).is_err(), "{line}");
            assert!(!is_object(line), "{line}");
        }
        let deep = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH + 5),
            "]".repeat(MAX_DEPTH + 5)
        );
        assert!(build_record(&format!("{{\"a\":{deep}}}"), &OPTS).is_err());
        assert!(!is_object(&format!("{{\"a\":{deep}}}")));
        // At the fast path's depth limit, the scan is as strict or stricter.
        for n in MAX_DEPTH - 3..MAX_DEPTH + 3 {
            let line = format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
            assert!(
                !is_object(&line) || build_record(&line, &OPTS).is_ok(),
                "{n}"
            );
            let line = format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
            assert!(
                !is_object(&line) || build_record(&line, &OPTS).is_ok(),
                "{n}"
            );
        }
    }
}
