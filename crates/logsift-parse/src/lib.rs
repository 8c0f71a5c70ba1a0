//! Parsers for the bytes logsift receives: syslog (RFC 5424, RFC 3164 and the variants real
//! devices send), JSON lines, and RFC 6587 framing of TCP streams.
//!
//! Parsing never fails: a line that does not fit its format becomes a record whose `message`
//! is the whole line and whose `parse_error` says why. Records borrow from the line; only
//! unescaped strings and composed field names (`sd-id.param`, `a.b`) are allocated.

use std::borrow::Cow;

use logsift_core::{Format, Record};

pub mod framing;
mod json;
mod syslog;
mod timefmt;

/// What a parser needs to know besides the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// When the line was received, in ns since the epoch. RFC 3164 timestamps carry no year:
    /// the year that puts them closest to this instant (and at most about a month after it)
    /// is taken, so a December line received in January belongs to last year.
    pub received_at_ns: i64,
    /// Zone of timestamps that carry none (RFC 3164, ISO 8601 without offset), in seconds east
    /// of UTC.
    pub default_offset_secs: i32,
}

/// Parses one line (framing already removed) as `format`.
/// [`Format::Auto`] picks JSON when the first non-space byte is `{`, syslog otherwise.
pub fn parse<'a>(format: Format, line: &'a [u8], opts: &ParseOptions) -> Record<'a> {
    match format {
        Format::Syslog => parse_syslog(line, opts),
        Format::Json => parse_json(line, opts),
        Format::Auto => {
            let first = line.iter().find(|c| !c.is_ascii_whitespace());
            if first == Some(&b'{') {
                parse_json(line, opts)
            } else {
                parse_syslog(line, opts)
            }
        }
    }
}

/// RFC 5424 when the line starts with `<PRI>VERSION SP`, else RFC 3164 and its variants; a line
/// with neither PRI nor timestamp is kept whole as the message (it is plain text, not an error).
pub fn parse_syslog<'a>(line: &'a [u8], opts: &ParseOptions) -> Record<'a> {
    syslog::parse(trim_line_end(line), opts)
}

/// One JSON object per line. Anything else (invalid JSON, invalid UTF-8, a top-level array)
/// becomes a record with `parse_error`.
pub fn parse_json<'a>(line: &'a [u8], opts: &ParseOptions) -> Record<'a> {
    json::parse(trim_line_end(line), opts)
}

/// Drops the line terminator and NUL padding that transports leave behind.
fn trim_line_end(line: &[u8]) -> &[u8] {
    let keep = line
        .iter()
        .rposition(|&c| !matches!(c, b'\r' | b'\n' | 0))
        .map_or(0, |i| i + 1);
    &line[..keep]
}

/// The whole line as the message, with the reason it did not parse.
fn failed<'a>(line: &'a [u8], reason: Cow<'static, str>) -> Record<'a> {
    Record {
        message: lossy(line),
        parse_error: Some(reason),
        ..Record::default()
    }
}

fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use logsift_core::{FieldValue, Severity};

    const OPTS: ParseOptions = ParseOptions {
        received_at_ns: 0,
        default_offset_secs: 0,
    };

    #[test]
    fn auto_detects_json_and_syslog() {
        let r = parse(
            Format::Auto,
            b"  {\"msg\":\"hi\",\"level\":\"error\"}\r\n",
            &OPTS,
        );
        assert_eq!(r.message, "hi");
        assert_eq!(r.severity, Some(Severity::Error));
        let r = parse(Format::Auto, b"<11>1 - - - - - - hi\n\0\0", &OPTS);
        assert_eq!(r.message, "hi");
        assert_eq!(r.severity, Some(Severity::Error));
        let r = parse(Format::Syslog, b"{\"msg\":\"hi\"}", &OPTS);
        assert_eq!(r.message, "{\"msg\":\"hi\"}");
        let r = parse(Format::Json, b"<11>1 - - - - - - hi", &OPTS);
        assert!(r.parse_error.is_some());
    }

    #[test]
    fn trims_terminators_only_at_the_end() {
        assert_eq!(trim_line_end(b"a\r\n\0"), b"a");
        assert_eq!(trim_line_end(b"\r\n"), b"");
        assert_eq!(trim_line_end(b"a\nb\n"), b"a\nb");
    }

    /// A small deterministic generator, so that failures reproduce without a seed file.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Fragments that steer random input into the interesting branches of each parser.
        let pieces: &[&[u8]] = &[
            b"<13>",
            b"<191>1 ",
            b"1 ",
            b"- ",
            b"2003-10-11T22:14:15.003Z ",
            b"Nov  3 12:00:00 ",
            b"[id a=\"",
            b"\\",
            b"\"",
            b"]",
            b" ",
            b"host ",
            b"app[1]: ",
            b":",
            b"{",
            b"}",
            b"\"k\":",
            b"[",
            b",",
            b"1e999",
            b"-0.5",
            b"\xef\xbb\xbf",
            b"\xff",
            b"\0",
            b"\r\n",
            b"\"ts\":1e30",
            b"\"level\":60",
            b"\"@timestamp\":\"9999-99-99\"",
            b"\\ud800",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut line = Vec::new();
        for _ in 0..20_000 {
            line.clear();
            for _ in 0..rng.next() % 12 {
                if rng.next() % 3 == 1 {
                    line.push(rng.next() as u8);
                } else {
                    line.extend_from_slice(pieces[rng.next() as usize % pieces.len()]);
                }
            }
            for format in [Format::Syslog, Format::Json, Format::Auto] {
                let r = parse(format, &line, &OPTS);
                if r.parse_error.is_some() {
                    // The whole line, give or take whitespace before a `<PRI>`.
                    let whole = String::from_utf8_lossy(trim_line_end(&line));
                    assert_eq!(r.message.trim_start(), whole.trim_start());
                }
                for (_, v) in &r.fields {
                    if let FieldValue::Json(j) | FieldValue::Number(j) = v {
                        assert!(!j.is_empty());
                    }
                }
            }
        }
    }
}
