//! RFC 5424 and RFC 3164 (with the variants real devices send), chosen per line.

use std::borrow::Cow;

use logsift_core::{Facility, FieldValue, Fields, Record, Severity};
use memchr::{memchr, memchr2};

use crate::timefmt::{infer_year, parse_bsd, parse_iso8601};
use crate::{failed, lossy, ParseOptions};

/// The line, and the same bytes as text when they are valid UTF-8 (checked once per line:
/// validating each field separately cost a fifth of the parse time).
struct Line<'a> {
    bytes: &'a [u8],
    text: Option<&'a str>,
}

impl<'a> Line<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Line {
            bytes,
            text: std::str::from_utf8(bytes).ok(),
        }
    }

    /// `part`, a subslice of the line, as text: borrowed from the validated line when its ends
    /// are char boundaries (they are ASCII delimiters, so always), else repaired.
    // Inlined: returned out of line, the `Cow` was written in 8-byte stores and read back in
    // 16-byte loads, a store-forwarding stall per header field.
    #[inline(always)]
    fn cow(&self, part: &'a [u8]) -> Cow<'a, str> {
        let (whole, sub) = (self.bytes.as_ptr_range(), part.as_ptr_range());
        let text = self
            .text
            // Only a true subslice maps to the same range of the text.
            .filter(|_| whole.start <= sub.start && sub.end <= whole.end)
            .and_then(|t| {
                let start = sub.start as usize - whole.start as usize;
                t.get(start..start + part.len())
            });
        match text {
            Some(text) => Cow::Borrowed(text),
            None => lossy(part),
        }
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

pub(crate) fn parse<'a>(line: &'a [u8], opts: &ParseOptions) -> Record<'a> {
    // Built in place: returning a `Record` through several calls copied it each time (about a
    // tenth of RFC 5424 parse time went to memcpy).
    let mut record = Record::default();
    parse_line(line, opts, &mut record);
    if opts.logfmt && record.parse_error.is_none() {
        crate::logfmt::extract_into(&mut record);
    }
    record
}

fn parse_line<'a>(line: &'a [u8], opts: &ParseOptions, record: &mut Record<'a>) {
    // Whitespace before `<PRI>` is transport residue (a stray LF, indentation in a file);
    // before anything else it is part of a plain-text message and kept.
    let start = line
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .filter(|&i| line[i] == b'<')
        .unwrap_or(0);
    let line = &line[start..];
    let (pri, body) = match line.first() {
        Some(b'<') => match parse_pri(line) {
            Some(found) => (Some(found.0), found.1),
            // It announced itself as syslog and broke the grammar at once: worth reporting.
            None => {
                *record = failed(line, Cow::Borrowed("syslog: invalid PRI"));
                return;
            }
        },
        _ => (None, 0),
    };
    if let Some(after_version) = rfc5424_version(line, body) {
        // Without PRI, only a valid TIMESTAMP makes "1 ..." an RFC 5424 line (some relays strip
        // PRI); otherwise it is ordinary text that happens to start with a number.
        // Evaluated only without PRI: with one, the timestamp is read (once) by the parser.
        let timestamp_follows = || {
            line.get(after_version..).is_some_and(|rest| {
                parse_iso8601(rest, true, 0).is_some_and(|(_, len)| rest.get(len) == Some(&b' '))
            })
        };
        if pri.is_some() || timestamp_follows() {
            return parse_rfc5424(&Line::new(line), pri, after_version, record);
        }
    }
    parse_rfc3164(&Line::new(line), pri, body, opts, record)
}

/// `<PRI>`: 1 to 3 digits, at most 191. Returns the value and the index after `>`.
fn parse_pri(line: &[u8]) -> Option<(u8, usize)> {
    let close = memchr(b'>', line.get(..5.min(line.len()))?)?;
    let digits = &line[1..close];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    u8::try_from(value)
        .ok()
        .filter(|&v| v <= 191)
        .map(|v| (v, close + 1))
}

/// RFC 5424 is recognised by its VERSION, `[1-9][0-9]{0,2}` followed by SP, straight after PRI.
/// Returns the index after that SP. (A 4-digit year after PRI, as in some 3164 senders, does
/// not match.)
fn rfc5424_version(line: &[u8], at: usize) -> Option<usize> {
    let rest = line.get(at..)?;
    let n = rest
        .iter()
        .take(4)
        .take_while(|c| c.is_ascii_digit())
        .count();
    let ok = (1..=3).contains(&n) && rest[0] != b'0' && rest.get(n) == Some(&b' ');
    ok.then_some(at + n + 1)
}

fn set_pri(record: &mut Record<'_>, pri: u8) {
    record.severity = Severity::from_code(pri & 7);
    record.facility = Facility::from_code(pri >> 3);
}

/// A space-separated RFC 5424 header field; `None` (NILVALUE) for `-`.
#[inline(always)]
fn nil_or_text<'a>(line: &Line<'a>, field: &'a [u8]) -> Option<Cow<'a, str>> {
    (field != b"-").then(|| line.cow(field))
}

struct Rfc5424Error {
    what: &'static str,
    at: usize,
}

fn parse_rfc5424<'a>(line: &Line<'a>, pri: Option<u8>, start: usize, record: &mut Record<'a>) {
    if let Some(pri) = pri {
        set_pri(record, pri);
    }
    match rfc5424_body(line, start, record) {
        Ok(()) => {}
        Err(e) => {
            // Keep the header fields read so far: they are right, and they make the line findable.
            record.message = line.cow(line.bytes);
            record.fields.clear();
            record.parse_error = Some(Cow::Owned(format!(
                "rfc5424: {} at column {}",
                e.what,
                e.at + 1
            )));
        }
    }
}

fn rfc5424_body<'a>(
    text: &Line<'a>,
    mut pos: usize,
    record: &mut Record<'a>,
) -> Result<(), Rfc5424Error> {
    let line = text.bytes;
    for i in 0..5 {
        let end = memchr(b' ', &line[pos..]).map_or(line.len(), |n| pos + n);
        if end == pos {
            let what = match (i, pos == line.len()) {
                (_, true) => "truncated header",
                (0, _) => "empty TIMESTAMP",
                (1, _) => "empty HOSTNAME",
                (2, _) => "empty APP-NAME",
                (3, _) => "empty PROCID",
                _ => "empty MSGID",
            };
            return Err(Rfc5424Error { what, at: pos });
        }
        let slot = &line[pos..end];
        if i == 0 && slot != b"-" {
            match parse_iso8601(slot, true, 0) {
                Some((ns, len)) if len == slot.len() => record.timestamp = Some(ns),
                _ => {
                    return Err(Rfc5424Error {
                        what: "invalid TIMESTAMP",
                        at: pos,
                    })
                }
            }
        }
        match i {
            1 => record.host = nil_or_text(text, slot),
            2 => record.app = nil_or_text(text, slot),
            3 => record.procid = nil_or_text(text, slot),
            4 => record.msgid = nil_or_text(text, slot),
            _ => {}
        }
        // The header may end after MSGID without STRUCTURED-DATA; lenient senders do that.
        pos = (end + 1).min(line.len());
        if end == line.len() {
            if i < 4 {
                return Err(Rfc5424Error {
                    what: "truncated header",
                    at: end,
                });
            }
            return Ok(());
        }
    }
    // NILVALUE, the common case, needs none of the machinery below.
    let sd_end = if line.get(pos) == Some(&b'-') {
        pos + 1
    } else {
        structured_data(text, pos, &mut record.fields)?
    };
    match line.get(sd_end) {
        None => {}
        Some(b' ') => {
            let msg = &line[sd_end + 1..];
            record.message = text.cow(msg.strip_prefix(BOM).unwrap_or(msg));
        }
        Some(_) => {
            return Err(Rfc5424Error {
                what: "expected SP after STRUCTURED-DATA",
                at: sd_end,
            })
        }
    }
    Ok(())
}

/// Reads the STRUCTURED-DATA starting at `pos` into `fields` and returns the index after it.
/// On error `fields` may hold some params; the caller clears them.
///
/// One walk validates and measures, so that the fields are allocated once at their final size
/// (allocations per line stay independent of the number of params). The params of the usual
/// line fit in a stack buffer and are filled from it; only a line with more than `SD_STACK`
/// params is walked a second time.
fn structured_data<'a>(
    text: &Line<'a>,
    pos: usize,
    fields: &mut Fields<'a>,
) -> Result<usize, Rfc5424Error> {
    let line = text.bytes;
    let (mut count, mut name_bytes) = (0, 0);
    let mut stack = [SdParam::EMPTY; SD_STACK];
    let sd_end = scan_structured_data(line, pos, |p| {
        if let Some(slot) = stack.get_mut(count) {
            *slot = p;
        }
        count += 1;
        name_bytes += p.id.len() + 1 + p.name.len();
    })?;
    if count > 0 {
        fields.reserve(count, name_bytes);
        let mut push = |p: SdParam<'a>| {
            fields.push_joined(&[p.id, p.name], FieldValue::Str(sd_param_value(text, &p)));
        };
        if count <= SD_STACK {
            stack[..count].iter().for_each(|&p| push(p));
        } else {
            scan_structured_data(line, pos, push)?;
        }
    }
    Ok(sd_end)
}

/// How many SD-PARAMs [`rfc5424_body`] keeps on the stack between validating and filling.
const SD_STACK: usize = 16;

/// One SD-PARAM as it stands in the line.
#[derive(Clone, Copy)]
struct SdParam<'a> {
    id: &'a str,
    name: &'a str,
    /// The bytes between the quotes, escapes not yet undone.
    value: &'a [u8],
    escaped: bool,
}

impl SdParam<'_> {
    const EMPTY: SdParam<'static> = SdParam {
        id: "",
        name: "",
        value: b"",
        escaped: false,
    };
}

/// Walks `-` or one or more `[id param="value" ...]` elements starting at `pos`, calling `each`
/// for every param, and returns the index after the structured data.
///
/// The caller validates and measures before filling, so that the record's field buffers are
/// allocated once at their final size: this keeps allocations per line independent of the
/// number of params. Params are kept on the stack in between; only lines with more than
/// `SD_STACK` params are walked twice.
fn scan_structured_data<'a>(
    line: &'a [u8],
    mut pos: usize,
    mut each: impl FnMut(SdParam<'a>),
) -> Result<usize, Rfc5424Error> {
    let err = |what, at| Err(Rfc5424Error { what, at });
    match line.get(pos) {
        Some(b'-') => return Ok(pos + 1),
        Some(b'[') => {}
        _ => return err("expected STRUCTURED-DATA", pos),
    }
    while line.get(pos) == Some(&b'[') {
        pos += 1;
        let id_len = name_len(&line[pos..]);
        // SD-NAMEs are printable ASCII (checked by `name_len`), so this cannot fail.
        let Ok(id) = std::str::from_utf8(&line[pos..pos + id_len]) else {
            return err("invalid SD-ID", pos);
        };
        if id.is_empty() {
            return err("invalid SD-ID", pos);
        }
        pos += id_len;
        loop {
            match line.get(pos) {
                Some(b']') => {
                    pos += 1;
                    break;
                }
                Some(b' ') => pos += 1,
                _ => return err("expected SP or ']' in SD-ELEMENT", pos),
            }
            let name_len = name_len(&line[pos..]);
            let Ok(name) = std::str::from_utf8(&line[pos..pos + name_len]) else {
                return err("invalid PARAM-NAME", pos);
            };
            if name.is_empty() {
                return err("invalid PARAM-NAME", pos);
            }
            pos += name_len;
            if line.get(pos) != Some(&b'=') || line.get(pos + 1) != Some(&b'"') {
                return err("expected '=\"' after PARAM-NAME", pos);
            }
            pos += 2;
            let Some((close, escaped)) = sd_value_end(line, pos) else {
                return err("unterminated PARAM-VALUE", pos);
            };
            each(SdParam {
                id,
                name,
                value: &line[pos..close],
                escaped,
            });
            pos = close + 1;
        }
    }
    Ok(pos)
}

/// Length of an SD-NAME: printable US-ASCII except `=`, SP, `]` and `"`.
fn name_len(b: &[u8]) -> usize {
    b.iter()
        .take_while(|&&c| (33..=126).contains(&c) && !matches!(c, b'=' | b']' | b'"'))
        .count()
}

/// Finds the closing quote of a PARAM-VALUE that starts at `start` (after its opening quote).
/// Returns its index and whether the value contains a backslash.
fn sd_value_end(line: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut pos = start;
    let mut escaped = false;
    loop {
        let at = pos + memchr2(b'"', b'\\', line.get(pos..)?)?;
        if line[at] == b'"' {
            return Some((at, escaped));
        }
        // Whatever follows a backslash cannot close the value: `\"` is an escaped quote, and
        // other pairs are either escapes or kept as written.
        escaped = true;
        pos = at + 2;
    }
}

/// Undoes RFC 5424 6.3.3 escaping: only `\"`, `\\` and `\]` are escapes; any other backslash
/// is kept as written.
fn sd_unescape(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut pos = 0;
    while let Some(n) = memchr(b'\\', &value[pos..]) {
        let at = pos + n;
        out.extend_from_slice(&value[pos..at]);
        match value.get(at + 1) {
            Some(&c @ (b'"' | b'\\' | b']')) => {
                out.push(c);
                pos = at + 2;
            }
            _ => {
                out.push(b'\\');
                pos = at + 1;
            }
        }
    }
    out.extend_from_slice(&value[pos..]);
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn sd_param_value<'a>(line: &Line<'a>, param: &SdParam<'a>) -> Cow<'a, str> {
    if param.escaped {
        Cow::Owned(sd_unescape(param.value))
    } else {
        line.cow(param.value)
    }
}

fn word_end(line: &[u8], pos: usize) -> usize {
    memchr(b' ', &line[pos..]).map_or(line.len(), |n| pos + n)
}

/// Recognises an RFC 3164 TAG word: `app:`, `app[pid]:`, `app[pid]` or a bare `:`.
/// Returns (app, procid).
fn split_tag(word: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (core, colon) = match word.strip_suffix(b":") {
        // A colon inside is an IPv6 address or a time, i.e. a host, not `app:`.
        Some(core) if memchr(b':', core).is_none() => (core, true),
        Some(_) => return None,
        None => (word, false),
    };
    if let Some(inner) = core.strip_suffix(b"]") {
        if let Some(open) = memchr(b'[', inner).filter(|&i| i > 0) {
            return Some((&inner[..open], Some(&inner[open + 1..])));
        }
    }
    colon.then_some((core, None))
}

fn parse_rfc3164<'a>(
    text: &Line<'a>,
    pri: Option<u8>,
    start: usize,
    opts: &ParseOptions,
    record: &mut Record<'a>,
) {
    let line = text.bytes;
    if let Some(pri) = pri {
        set_pri(record, pri);
    }
    let mut pos = start;
    while line.get(pos) == Some(&b' ') {
        pos += 1;
    }
    let rest = &line[pos..];
    let offset = opts.default_offset_secs;
    let mut have_timestamp = true;
    if let Some((civil, year, len)) = parse_bsd(rest) {
        record.timestamp = match year {
            Some(year) => crate::timefmt::Civil { year, ..civil }.to_ns(offset),
            None => infer_year(civil, opts.received_at_ns, offset),
        };
        pos += len;
    } else if let Some((ns, len)) = parse_iso8601(rest, false, offset)
        .filter(|&(_, len)| matches!(rest.get(len), None | Some(b' ')))
    {
        record.timestamp = Some(ns);
        pos += len;
    } else if pri.is_none() {
        // Neither PRI nor a timestamp: not syslog at all, just text.
        record.message = text.cow(line);
        return;
    } else {
        have_timestamp = false;
    }
    while line.get(pos) == Some(&b' ') {
        pos += 1;
    }
    if have_timestamp && pos < line.len() {
        let end = word_end(line, pos);
        // A TAG right after the timestamp means the sender left out HOSTNAME.
        if split_tag(&line[pos..end]).is_none() {
            record.host = Some(text.cow(&line[pos..end]));
            pos = (end + 1).min(line.len());
        }
    }
    if pos < line.len() {
        let end = word_end(line, pos);
        if let Some((app, procid)) = split_tag(&line[pos..end]) {
            record.app = (!app.is_empty()).then(|| text.cow(app));
            record.procid = procid.filter(|p| !p.is_empty()).map(|p| text.cow(p));
            pos = (end + 1).min(line.len());
        }
    }
    record.message = text.cow(&line[pos..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use logsift_core::time::parse_rfc3339;

    fn opts() -> ParseOptions {
        ParseOptions {
            received_at_ns: parse_rfc3339("2026-11-27T08:00:00Z").unwrap(),
            default_offset_secs: 0,
            logfmt: false,
        }
    }

    fn p(line: &str) -> Record<'_> {
        crate::parse_syslog(line.as_bytes(), &opts())
    }

    fn ts(s: &str) -> Option<i64> {
        parse_rfc3339(s)
    }

    fn field<'r>(r: &'r Record<'_>, key: &str) -> Option<&'r FieldValue<'r>> {
        r.fields.get(key)
    }

    #[test]
    fn rfc5424_example_1() {
        let r = p("<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{feff}'su root' failed for lonvick on /dev/pts/8");
        assert_eq!(r.parse_error, None);
        assert_eq!(r.severity, Some(Severity::Critical));
        assert_eq!(r.facility.map(|f| f.name()), Some("auth"));
        assert_eq!(r.timestamp, ts("2003-10-11T22:14:15.003Z"));
        assert_eq!(r.host.as_deref(), Some("mymachine.example.com"));
        assert_eq!(r.app.as_deref(), Some("su"));
        assert_eq!(r.procid, None);
        assert_eq!(r.msgid.as_deref(), Some("ID47"));
        assert_eq!(r.message, "'su root' failed for lonvick on /dev/pts/8");
        assert!(matches!(r.message, Cow::Borrowed(_)));
    }

    #[test]
    fn rfc5424_example_2_offset_and_procid() {
        let r = p("<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.");
        assert_eq!(r.timestamp, ts("2003-08-24T12:14:15.000003Z"));
        assert_eq!(r.severity, Some(Severity::Notice));
        assert_eq!(r.facility.map(|f| f.code()), Some(20));
        assert_eq!(r.procid.as_deref(), Some("8710"));
        assert_eq!(r.msgid, None);
        assert_eq!(r.message, "%% It's time to make the do-nuts.");
    }

    #[test]
    fn rfc5424_structured_data() {
        let r = p(
            r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]"#,
        );
        assert_eq!(r.parse_error, None);
        assert_eq!(r.message, "");
        let keys: Vec<_> = r.fields().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "exampleSDID@32473.iut",
                "exampleSDID@32473.eventSource",
                "exampleSDID@32473.eventID",
                "examplePriority@32473.class"
            ]
        );
        assert_eq!(
            field(&r, "exampleSDID@32473.eventSource"),
            Some(&FieldValue::Str("Application".into()))
        );
    }

    #[test]
    fn rfc5424_sd_escapes() {
        let r = p(r#"<29>2 2016-01-15T01:00:43Z h S prg - [meta a="\]\"\\x" b="c:\d" e=""] msg"#);
        assert_eq!(r.parse_error, None);
        assert_eq!(
            field(&r, "meta.a"),
            Some(&FieldValue::Str(r#"]"\x"#.into()))
        );
        assert_eq!(field(&r, "meta.b"), Some(&FieldValue::Str(r"c:\d".into())));
        assert_eq!(field(&r, "meta.e"), Some(&FieldValue::Str("".into())));
        assert!(matches!(
            field(&r, "meta.e"),
            Some(FieldValue::Str(Cow::Borrowed(_)))
        ));
        assert_eq!(r.message, "msg");
    }

    #[test]
    fn logger_rfc5424_form() {
        let r = p(
            r#"<13>1 2026-11-27T07:17:19.123456+00:00 myhost root 1234 - [timeQuality tzKnown="1" isSynced="0"] hello"#,
        );
        assert_eq!(r.parse_error, None);
        assert_eq!(r.timestamp, ts("2026-11-27T07:17:19.123456Z"));
        assert_eq!(r.severity, Some(Severity::Notice));
        assert_eq!(r.facility.map(|f| f.name()), Some("user"));
        assert_eq!(r.host.as_deref(), Some("myhost"));
        assert_eq!(r.app.as_deref(), Some("root"));
        assert_eq!(r.procid.as_deref(), Some("1234"));
        assert_eq!(
            field(&r, "timeQuality.isSynced"),
            Some(&FieldValue::Str("0".into()))
        );
        assert_eq!(r.message, "hello");
    }

    #[test]
    fn rfc5424_sd_beyond_the_stack_buffer() {
        // Up to SD_STACK params are filled from the stack, more by a second walk: same result.
        for n in [SD_STACK - 1, SD_STACK, SD_STACK + 1, 3 * SD_STACK] {
            let params: String = (0..n).map(|i| format!(r#" p{i}="v\\{i}""#)).collect();
            let line = format!(r#"<13>1 - h a - - [id{params}][x y="z"] m"#);
            let r = p(&line);
            assert_eq!(r.parse_error, None, "{line}");
            assert_eq!(r.fields.len(), n + 1);
            for (i, (name, value)) in r.fields().take(n).enumerate() {
                assert_eq!(name, format!("id.p{i}"));
                assert_eq!(value, &FieldValue::Str(format!(r"v\{i}").into()));
            }
            assert_eq!(field(&r, "x.y"), Some(&FieldValue::Str("z".into())));
            assert_eq!(r.message, "m");
            let bad = format!(r#"<13>1 - h a - - [id{params}][x y="z"]m"#);
            let r = p(&bad);
            assert!(r.parse_error.is_some());
            assert!(r.fields.is_empty());
        }
    }

    #[test]
    fn rfc5424_all_nil() {
        let r = p("<0>1 - - - - - -");
        assert_eq!(r.parse_error, None);
        assert_eq!((r.timestamp, r.host, r.app), (None, None, None));
        assert_eq!(r.severity, Some(Severity::Emergency));
        assert_eq!(r.message, "");
    }

    #[test]
    fn rfc5424_errors_keep_line() {
        for (line, reason) in [
            (
                "<29>1 2003-09-31T22:14:15Z h a - - - x",
                "invalid TIMESTAMP at column 7",
            ),
            ("<29>1 - h a - - [bad", "expected SP or ']'"),
            (r#"<29>1 - h a - - [x a="b] m"#, "unterminated PARAM-VALUE"),
            ("<29>1 - h", "truncated header"),
            ("<29>1 - h a - - x", "expected STRUCTURED-DATA"),
            ("<29>1 - h a - - -x", "expected SP after STRUCTURED-DATA"),
        ] {
            let r = p(line);
            let err = r.parse_error.as_deref().unwrap_or_default();
            assert!(
                err.starts_with("rfc5424: ") && err.contains(reason),
                "{line}: {err}"
            );
            assert_eq!(r.message, line);
            assert_eq!(r.severity, Some(Severity::Notice));
            assert!(r.fields.is_empty());
        }
    }

    #[test]
    fn invalid_utf8_is_lossy_not_an_error() {
        let r = crate::parse_syslog(b"<1>1 - h\xff a - - - caf\xe9", &opts());
        assert_eq!(r.parse_error, None);
        assert_eq!(r.host.as_deref(), Some("h\u{fffd}"));
        assert_eq!(r.message, "caf\u{fffd}");
    }

    #[test]
    fn bad_pri() {
        for line in ["<192>1 - - - - - -", "<>x", "<abc>x", "<1234>x", "<"] {
            let r = p(line);
            assert_eq!(
                r.parse_error.as_deref(),
                Some("syslog: invalid PRI"),
                "{line}"
            );
            assert_eq!(r.message, line);
        }
    }

    #[test]
    fn logger_rfc3164_form() {
        let r = p("<13>Nov 27 07:17:19 myhost root: hello");
        assert_eq!(r.parse_error, None);
        assert_eq!(r.timestamp, ts("2026-11-27T07:17:19Z"));
        assert_eq!(r.severity, Some(Severity::Notice));
        assert_eq!(r.host.as_deref(), Some("myhost"));
        assert_eq!(r.app.as_deref(), Some("root"));
        assert_eq!(r.procid, None);
        assert_eq!(r.message, "hello");
    }

    #[test]
    fn rfc3164_tag_with_pid_and_padded_day() {
        let r = p("<85>Nov  3 15:50:41 ip-172-31-30-110 sudo[6040]: ec2-user : TTY=pts/0");
        assert_eq!(r.timestamp, ts("2026-11-03T15:50:41Z"));
        assert_eq!(r.host.as_deref(), Some("ip-172-31-30-110"));
        assert_eq!(r.app.as_deref(), Some("sudo"));
        assert_eq!(r.procid.as_deref(), Some("6040"));
        assert_eq!(r.message, "ec2-user : TTY=pts/0");
    }

    #[test]
    fn rfc3164_missing_hostname() {
        let r = p("<13>Nov  3 12:00:00 sshd[42]: msg");
        assert_eq!(r.host, None);
        assert_eq!(r.app.as_deref(), Some("sshd"));
        assert_eq!(r.procid.as_deref(), Some("42"));
        assert_eq!(r.message, "msg");
        let r = p("<34>OCT 11 22:14:15 : a message");
        assert_eq!((r.host, r.app), (None, None));
        assert_eq!(r.message, "a message");
    }

    #[test]
    fn rfc3164_no_tag() {
        let r = p("<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!");
        assert_eq!(r.host.as_deref(), Some("10.0.0.99"));
        assert_eq!(r.app, None);
        assert_eq!(r.message, "Use the BFG!");
        let r = p("<14>Aug 30 23:00:05 X4711");
        assert_eq!(r.host.as_deref(), Some("X4711"));
        assert_eq!(r.message, "");
    }

    #[test]
    fn rfc3164_year_inference_and_zone() {
        let jan = ParseOptions {
            received_at_ns: ts("2027-01-01T00:10:00Z").unwrap(),
            default_offset_secs: 3600,
            logfmt: false,
        };
        let r = crate::parse_syslog(b"<13>Dec 31 23:59:00 h a: m", &jan);
        assert_eq!(r.timestamp, ts("2026-12-31T23:59:00+01:00"));
    }

    #[test]
    fn rfc3164_iso_timestamp_and_no_pri() {
        let r = p("<34>2020-10-11T22:14:15.00Z mymachine app[323]: a message");
        assert_eq!(r.timestamp, ts("2020-10-11T22:14:15Z"));
        assert_eq!(r.host.as_deref(), Some("mymachine"));
        assert_eq!(r.procid.as_deref(), Some("323"));
        let r = p("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure;");
        assert_eq!(r.severity, None);
        assert_eq!(r.host.as_deref(), Some("combo"));
        assert_eq!(r.app.as_deref(), Some("sshd(pam_unix)"));
        assert_eq!(r.procid.as_deref(), Some("19939"));
        assert_eq!(r.message, "authentication failure;");
    }

    #[test]
    fn cisco_style_year_and_colon() {
        let r = p("<14>May 21 2017 00:00:00: %ASA-4-102030: Deny udp");
        assert_eq!(r.timestamp, ts("2017-05-21T00:00:00Z"));
        assert_eq!(r.host, None);
        assert_eq!(r.app.as_deref(), Some("%ASA-4-102030"));
        assert_eq!(r.message, "Deny udp");
    }

    #[test]
    fn pri_without_header() {
        let r = p("<27>xapi: [error|xen3] Connection to master died.");
        assert_eq!(r.parse_error, None);
        assert_eq!(r.timestamp, None);
        assert_eq!(r.app.as_deref(), Some("xapi"));
        assert_eq!(r.message, "[error|xen3] Connection to master died.");
        let r = p("<14> 05/21/2017:00:00:00 GMT HOSTNAME");
        assert_eq!((r.host, r.app), (None, None));
        assert_eq!(r.message, "05/21/2017:00:00:00 GMT HOSTNAME");
    }

    #[test]
    fn leading_whitespace_and_missing_pri_on_rfc5424() {
        let r = p("\n   <13>1 2019-02-13T19:48:34+00:00 h root 8449 - - hi");
        assert_eq!((r.host.as_deref(), r.message.as_ref()), (Some("h"), "hi"));
        let r = p("1 2020-05-22T14:59:09.250-03:00 mx rpd 6589 - - bgp: down");
        assert_eq!(r.parse_error, None);
        assert_eq!(r.severity, None);
        assert_eq!(r.timestamp, ts("2020-05-22T17:59:09.250Z"));
        assert_eq!(r.app.as_deref(), Some("rpd"));
        assert_eq!(r.message, "bgp: down");
        let r = p("1 apple a day");
        assert_eq!((r.message.as_ref(), r.app), ("1 apple a day", None));
    }

    #[test]
    fn plain_text_is_kept_whole() {
        for line in ["Use the BFG!", "Error: disk full", "", "   [{ \"c3\":3 }]"] {
            let r = p(line);
            assert_eq!(r.parse_error, None);
            assert_eq!(r.message, line);
            assert_eq!((r.host, r.app, r.timestamp), (None, None, None));
        }
    }
}
