//! Parsers for the bytes logsift receives: syslog (RFC 5424, RFC 3164 and the variants real
//! devices send), JSON lines, and RFC 6587 framing of TCP streams.
//!
//! Parsing never fails: a line that does not fit its format becomes a record whose `message`
//! is the whole line and whose `parse_error` says why ([`parse_error_reason`] turns that text
//! into a short label for metrics). Records borrow from the line: only unescaped strings get
//! their own allocation, and composed field names (`sd-id.param`, `a.b`) share one buffer per
//! record, so the number of allocations per line does not grow with its number of fields.

use std::borrow::Cow;

use logsift_core::{Format, Record};

pub mod framing;
mod json;
mod jsonfast;
mod logfmt;
mod syslog;
mod timefmt;

/// What a parser needs to know besides the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseOptions {
    /// When the line was received, in ns since the epoch. RFC 3164 timestamps carry no year:
    /// the year that puts them closest to this instant (and at most about a month after it)
    /// is taken, so a December line received in January belongs to last year.
    pub received_at_ns: i64,
    /// Zone of timestamps that carry none (RFC 3164, ISO 8601 without offset), in seconds east
    /// of UTC.
    pub default_offset_secs: i32,
    /// Extract `key=value` / `key="quoted value"` pairs from the message of syslog lines
    /// (RFC 5424 MSG, RFC 3164 CONTENT, plain text) into `fields`. Existing fields win; at
    /// most 64 pairs per line.
    pub logfmt: bool,
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

/// The `parse_error` [`parse`] would give `line`, without building its record when a scan
/// decides: a JSON line that is an object the fast path reads has none. For a route that
/// reports errors to its client and hands the line on to be parsed where it is indexed
/// (parsing every NDJSON line fully there too was 4 % of the server's CPU while ingesting,
/// perf of the e2e ingest).
pub fn parse_error(format: Format, line: &[u8], opts: &ParseOptions) -> Option<Cow<'static, str>> {
    let json = match format {
        Format::Json => true,
        Format::Syslog => false,
        Format::Auto => line.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'{'),
    };
    if json && json::parses_cleanly(trim_line_end(line)) {
        return None;
    }
    parse(format, line, opts).parse_error
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

/// Every label [`parse_error_reason`] can return, so that metrics can be registered up front.
pub const PARSE_ERROR_REASONS: &[&str] = &[
    "syslog_pri",
    "rfc5424_timestamp",
    "rfc5424_header",
    "rfc5424_sd",
    "json_utf8",
    "json_empty",
    "json_not_object",
    "json_syntax",
    "other",
];

/// A short, stable label for a record's `parse_error` text, for counting errors per reason with
/// bounded label cardinality (the text itself carries columns and serde_json's wording).
/// Returns one of [`PARSE_ERROR_REASONS`].
pub fn parse_error_reason(err: &str) -> &'static str {
    if let Some(rest) = err.strip_prefix("rfc5424: ") {
        if rest.starts_with("invalid TIMESTAMP") || rest.starts_with("empty TIMESTAMP") {
            "rfc5424_timestamp"
        } else if rest.starts_with("truncated header") || rest.starts_with("empty ") {
            "rfc5424_header"
        } else {
            // Everything else the RFC 5424 parser reports is about STRUCTURED-DATA (SD-ID,
            // PARAM-NAME, PARAM-VALUE, the SP after it).
            "rfc5424_sd"
        }
    } else if let Some(rest) = err.strip_prefix("json: ") {
        if rest.starts_with("invalid UTF-8") {
            "json_utf8"
        } else if rest.starts_with("empty line") {
            "json_empty"
        } else if rest.starts_with("top-level value is not an object") {
            "json_not_object"
        } else {
            "json_syntax"
        }
    } else if err.starts_with("syslog: invalid PRI") {
        "syslog_pri"
    } else {
        "other"
    }
}

/// [`parse_json`] through serde_json only, without the single-pass fast path. Not for
/// production use: it exists so that tests and fuzz targets can check that both paths give the
/// same record for every line.
#[doc(hidden)]
pub fn parse_json_reference<'a>(line: &'a [u8], opts: &ParseOptions) -> Record<'a> {
    json::parse_reference(trim_line_end(line), opts)
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

/// The bytes as text, borrowed when they are valid UTF-8 (nearly always), repaired otherwise.
/// `from_utf8` first: it has a word-at-a-time ASCII fast path, while `from_utf8_lossy` walks
/// byte by byte even on valid input (it was 18% of RFC 5424 parse time).
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logsift_core::{FieldValue, Severity};

    const OPTS: ParseOptions = ParseOptions {
        received_at_ns: 0,
        default_offset_secs: 0,
        logfmt: false,
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
    fn error_reasons() {
        for (line, format, reason) in [
            ("<999>x", Format::Syslog, "syslog_pri"),
            (
                "<13>1 2003-09-31T22:14:15Z h a - - - x",
                Format::Syslog,
                "rfc5424_timestamp",
            ),
            ("<13>1 - h", Format::Syslog, "rfc5424_header"),
            ("<13>1 - h a - - [x a=b]", Format::Syslog, "rfc5424_sd"),
            ("<13>1 - h a - - -x", Format::Syslog, "rfc5424_sd"),
            ("{\"a\":}", Format::Json, "json_syntax"),
            ("[1]", Format::Json, "json_not_object"),
            ("", Format::Json, "json_empty"),
        ] {
            let r = parse(format, line.as_bytes(), &OPTS);
            let err = r.parse_error.as_deref().unwrap_or_default();
            assert_eq!(parse_error_reason(err), reason, "{line}: {err}");
            assert!(PARSE_ERROR_REASONS.contains(&reason));
        }
        let r = parse_json(b"{\"a\":\"\xff\"}", &OPTS);
        assert_eq!(
            parse_error_reason(r.parse_error.as_deref().unwrap_or_default()),
            "json_utf8"
        );
        assert_eq!(parse_error_reason("something else"), "other");
    }

    #[test]
    fn logfmt_only_when_enabled_and_never_overwrites() {
        let line = br#"<13>1 - h a - - [m k="sd"] k=1 m.k=2 user=bob msg="a b" user=eve"#;
        let off = parse_syslog(line, &OPTS);
        assert_eq!(off.fields.len(), 1);
        let on = parse_syslog(
            line,
            &ParseOptions {
                logfmt: true,
                ..OPTS
            },
        );
        let got: Vec<_> = on.fields().map(|(k, v)| (k, v.clone())).collect();
        let s = |v: &'static str| FieldValue::Str(v.into());
        assert_eq!(
            got,
            [
                ("m.k", s("sd")),
                ("k", s("1")),
                ("user", s("bob")),
                ("msg", s("a b"))
            ]
        );
        assert_eq!(on.message, off.message);
        // RFC 3164 and plain text too; invalid UTF-8 in the message is copied, not borrowed.
        let r = parse_syslog(
            b"<13>Nov  3 12:00:00 h app: a=1 b=\xff",
            &ParseOptions {
                logfmt: true,
                ..OPTS
            },
        );
        assert_eq!(r.fields.get("a"), Some(&s("1")));
        assert_eq!(r.fields.get("b"), Some(&s("\u{fffd}")));
        let r = parse_syslog(
            b"status=500 path=/x",
            &ParseOptions {
                logfmt: true,
                ..OPTS
            },
        );
        assert_eq!(r.fields.len(), 2);
        // Not for JSON, and not for lines that failed to parse.
        let r = parse(
            Format::Auto,
            br#"{"msg":"a=1"}"#,
            &ParseOptions {
                logfmt: true,
                ..OPTS
            },
        );
        assert!(r.fields.is_empty());
        let r = parse_syslog(
            b"<13>1 - h a - - [bad a=1",
            &ParseOptions {
                logfmt: true,
                ..OPTS
            },
        );
        assert!(r.fields.is_empty());
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
            b"\"log\":{\"level\":\"warn\"",
            b"\"host\":{\"name\":",
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
            // The JSON fast path agrees with the serde_json path on every input.
            assert_eq!(
                parse_json(&line, &OPTS),
                parse_json_reference(&line, &OPTS),
                "{:?}",
                String::from_utf8_lossy(&line)
            );
            for format in [Format::Syslog, Format::Json, Format::Auto] {
                let r = parse(format, &line, &OPTS);
                assert_eq!(
                    parse_error(format, &line, &OPTS),
                    r.parse_error,
                    "{format:?} {:?}",
                    String::from_utf8_lossy(&line)
                );
                if let Some(err) = &r.parse_error {
                    assert_ne!(parse_error_reason(err), "other", "{err}");
                }
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
