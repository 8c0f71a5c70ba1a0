//! JSON lines: one object per line, common keys mapped onto the record, the rest flattened
//! into `fields`.
//!
//! serde_json does the validation and string unescaping; values are captured as `&RawValue` so
//! that numbers and arrays keep their exact text and strings without escapes stay borrowed.

use std::borrow::Cow;
use std::fmt;

use logsift_core::{FieldValue, Record, Severity};
use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::timefmt::{epoch_number_to_ns, parse_iso8601};
use crate::{failed, ParseOptions};

/// Nesting deeper than this is kept as JSON text: flattening re-reads each nested object, and
/// unbounded recursion on hostile input would be a stack overflow.
const MAX_FLATTEN_DEPTH: usize = 16;

pub(crate) fn parse<'a>(line: &'a [u8], opts: &ParseOptions) -> Record<'a> {
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(e) => {
            let reason = format!("json: invalid UTF-8 at column {}", e.valid_up_to() + 1);
            return failed(line, Cow::Owned(reason));
        }
    };
    match text.trim_start().as_bytes().first() {
        Some(b'{') => {}
        Some(_) => {
            return failed(
                line,
                Cow::Borrowed("json: top-level value is not an object"),
            )
        }
        None => return failed(line, Cow::Borrowed("json: empty line")),
    }
    let entries = match top_level_entries(text) {
        Ok(entries) => entries,
        Err(e) => return failed(line, Cow::Owned(describe(&e))),
    };
    build_record(entries, opts)
}

/// `json: expected value at column 7`: serde_json's text without the line number, which is
/// always 1 for a line.
fn describe(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let head = text.split(" at line ").next().unwrap_or(&text);
    format!("json: {head} at column {}", e.column())
}

type Entry<'a> = (Cow<'a, str>, &'a RawValue);

fn top_level_entries(text: &str) -> Result<Vec<Entry<'_>>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let entries = de.deserialize_map(EntriesVisitor)?;
    de.end()?;
    Ok(entries)
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Vec<Entry<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(key) = map.next_key_seed(CowStr)? {
            entries.push((key, map.next_value::<&RawValue>()?));
        }
        Ok(entries)
    }
}

/// Deserializes a string borrowed from the input when it has no escapes.
struct CowStr;

impl<'de> DeserializeSeed<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

fn decode_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    CowStr.deserialize(&mut de).ok()
}

fn field_value(raw: &RawValue) -> FieldValue<'_> {
    let text = raw.get();
    match text.as_bytes().first() {
        // A string serde_json accepted as raw but cannot decode (lone surrogate escape) is
        // still kept, as written.
        Some(b'"') => decode_str(raw).map_or(FieldValue::Json(text), FieldValue::Str),
        Some(b't') => FieldValue::Bool(true),
        Some(b'f') => FieldValue::Bool(false),
        Some(b'n') => FieldValue::Null,
        Some(b'[' | b'{') => FieldValue::Json(text),
        _ => FieldValue::Number(text),
    }
}

/// Pushes `key: raw` into `fields`, flattening objects into `key.subkey` entries.
fn push_flat<'a>(
    fields: &mut Vec<(Cow<'a, str>, FieldValue<'a>)>,
    key: Cow<'a, str>,
    raw: &'a RawValue,
    depth: usize,
) {
    if raw.get().starts_with('{') && raw.get() != "{}" && depth < MAX_FLATTEN_DEPTH {
        let mut de = serde_json::Deserializer::from_str(raw.get());
        let seed = FlattenInto {
            prefix: &key,
            fields,
            depth: depth + 1,
        };
        if de.deserialize_map(seed).is_ok() {
            return;
        }
    }
    fields.push((key, field_value(raw)));
}

struct FlattenInto<'p, 'f, 'a> {
    prefix: &'p str,
    fields: &'f mut Vec<(Cow<'a, str>, FieldValue<'a>)>,
    depth: usize,
}

impl<'a> Visitor<'a> for FlattenInto<'_, '_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(CowStr)? {
            let raw: &'a RawValue = map.next_value()?;
            let mut full = String::with_capacity(self.prefix.len() + 1 + key.len());
            full.push_str(self.prefix);
            full.push('.');
            full.push_str(&key);
            push_flat(self.fields, Cow::Owned(full), raw, self.depth);
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Timestamp,
    Severity,
    Message,
    Host,
    App,
}

/// The record field a top-level key maps to, and its rank among that field's aliases
/// (lower wins).
fn slot_of(key: &str) -> Option<(Slot, u8)> {
    Some(match key {
        "@timestamp" => (Slot::Timestamp, 0),
        "timestamp" => (Slot::Timestamp, 1),
        "time" => (Slot::Timestamp, 2),
        "ts" => (Slot::Timestamp, 3),
        "level" => (Slot::Severity, 0),
        "severity" => (Slot::Severity, 1),
        "lvl" => (Slot::Severity, 2),
        "message" => (Slot::Message, 0),
        "msg" => (Slot::Message, 1),
        "log" => (Slot::Message, 2),
        "host" => (Slot::Host, 0),
        "hostname" => (Slot::Host, 1),
        "service" => (Slot::App, 0),
        "app" => (Slot::App, 1),
        "logger" => (Slot::App, 2),
        _ => return None,
    })
}

enum Mapped<'a> {
    Timestamp(i64),
    Severity(Severity),
    Text(Cow<'a, str>),
}

fn interpret<'a>(slot: Slot, raw: &'a RawValue, opts: &ParseOptions) -> Option<Mapped<'a>> {
    let text = raw.get();
    let is_string = text.starts_with('"');
    let is_number = text
        .as_bytes()
        .first()
        .is_some_and(|c| c.is_ascii_digit() || *c == b'-');
    match slot {
        Slot::Timestamp if is_string => {
            let s = decode_str(raw)?;
            let s = s.trim();
            let iso = parse_iso8601(s.as_bytes(), false, opts.default_offset_secs)
                .filter(|&(_, len)| len == s.len())
                .map(|(ns, _)| ns);
            iso.or_else(|| epoch_number_to_ns(s)).map(Mapped::Timestamp)
        }
        Slot::Timestamp if is_number => epoch_number_to_ns(text).map(Mapped::Timestamp),
        Slot::Severity if is_string => Severity::from_name(&decode_str(raw)?).map(Mapped::Severity),
        Slot::Severity if is_number => numeric_level(text).map(Mapped::Severity),
        Slot::Message | Slot::Host | Slot::App if is_string => {
            let s = decode_str(raw)?;
            // An empty host or app says nothing; keep it as a plain field.
            (slot == Slot::Message || !s.is_empty()).then_some(Mapped::Text(s))
        }
        _ => None,
    }
}

/// Syslog codes 0-7, and the bunyan/pino levels (10 trace .. 60 fatal) that Node.js loggers
/// write as numbers.
fn numeric_level(text: &str) -> Option<Severity> {
    let n: u64 = text.parse().ok()?;
    match n {
        0..=7 => Severity::from_code(n as u8),
        10 | 20 => Some(Severity::Debug),
        30 => Some(Severity::Info),
        40 => Some(Severity::Warning),
        50 => Some(Severity::Error),
        60 => Some(Severity::Critical),
        _ => None,
    }
}

fn build_record<'a>(entries: Vec<Entry<'a>>, opts: &ParseOptions) -> Record<'a> {
    // Per slot: (alias rank, entry index, value). Equal rank means a duplicate key: last wins.
    let mut best: [Option<(u8, usize, Mapped<'a>)>; 5] = Default::default();
    for (index, (key, raw)) in entries.iter().enumerate() {
        let Some((slot, rank)) = slot_of(key) else {
            continue;
        };
        let current = &mut best[slot as usize];
        if current.as_ref().is_some_and(|(r, _, _)| *r < rank) {
            continue;
        }
        if let Some(value) = interpret(slot, raw, opts) {
            *current = Some((rank, index, value));
        }
    }
    let mut record = Record::default();
    let mut taken = [usize::MAX; 5];
    for (i, entry) in best.into_iter().enumerate() {
        let Some((_, index, value)) = entry else {
            continue;
        };
        taken[i] = index;
        match value {
            Mapped::Timestamp(ns) => record.timestamp = Some(ns),
            Mapped::Severity(s) => record.severity = Some(s),
            Mapped::Text(text) => match i {
                i if i == Slot::Message as usize => record.message = text,
                i if i == Slot::Host as usize => record.host = Some(text),
                _ => record.app = Some(text),
            },
        }
    }
    record.fields.reserve(entries.len());
    for (index, (key, raw)) in entries.into_iter().enumerate() {
        if !taken.contains(&index) {
            push_flat(&mut record.fields, key, raw, 0);
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use logsift_core::time::parse_rfc3339;

    const OPTS: ParseOptions = ParseOptions {
        received_at_ns: 0,
        default_offset_secs: 0,
    };

    fn p(line: &str) -> Record<'_> {
        crate::parse_json(line.as_bytes(), &OPTS)
    }

    fn field<'r>(r: &'r Record<'_>, key: &str) -> Option<&'r FieldValue<'r>> {
        r.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[test]
    fn maps_common_keys() {
        let r = p(
            r#"{"ts":"2024-01-02T03:04:05.5Z","level":"WARN","msg":"disk \"sda\" full","host":"web1","service":"api","n":12.50,"ok":true,"none":null,"tags":[1, 2],"req":{"id":"x","h":{"a":1}},"empty":{}}"#,
        );
        assert_eq!(r.parse_error, None);
        assert_eq!(r.timestamp, parse_rfc3339("2024-01-02T03:04:05.5Z"));
        assert_eq!(r.severity, Some(Severity::Warning));
        assert_eq!(r.message, "disk \"sda\" full");
        assert_eq!(r.host.as_deref(), Some("web1"));
        assert_eq!(r.app.as_deref(), Some("api"));
        assert!(matches!(r.host, Some(Cow::Borrowed(_))));
        assert_eq!(field(&r, "n"), Some(&FieldValue::Number("12.50")));
        assert_eq!(field(&r, "ok"), Some(&FieldValue::Bool(true)));
        assert_eq!(field(&r, "none"), Some(&FieldValue::Null));
        assert_eq!(field(&r, "tags"), Some(&FieldValue::Json("[1, 2]")));
        assert_eq!(field(&r, "req.id"), Some(&FieldValue::Str("x".into())));
        assert_eq!(field(&r, "req.h.a"), Some(&FieldValue::Number("1")));
        assert_eq!(field(&r, "empty"), Some(&FieldValue::Json("{}")));
        assert_eq!(r.fields.len(), 7);
    }

    #[test]
    fn alias_rank_and_duplicates() {
        let r = p(
            r#"{"time":"2020-01-01T00:00:00Z","@timestamp":"2021-01-01T00:00:00Z","msg":"a","msg":"b"}"#,
        );
        assert_eq!(r.timestamp, parse_rfc3339("2021-01-01T00:00:00Z"));
        assert_eq!(r.message, "b");
        // The losing alias is not dropped.
        assert_eq!(
            field(&r, "time"),
            Some(&FieldValue::Str("2020-01-01T00:00:00Z".into()))
        );
        assert_eq!(field(&r, "msg"), Some(&FieldValue::Str("a".into())));
    }

    #[test]
    fn uninterpretable_mapped_keys_stay_fields() {
        let r = p(r#"{"level":"chatty","time":"yesterday","message":{"a":1},"host":""}"#);
        assert_eq!((r.severity, r.timestamp, &r.host), (None, None, &None));
        assert_eq!(r.message, "");
        assert_eq!(field(&r, "level"), Some(&FieldValue::Str("chatty".into())));
        assert_eq!(field(&r, "message.a"), Some(&FieldValue::Number("1")));
    }

    #[test]
    fn epoch_and_numeric_levels() {
        let r = p(r#"{"ts":1716723772.6014807,"level":30}"#);
        assert_eq!(r.timestamp, parse_rfc3339("2024-05-26T11:42:52.6014807Z"));
        assert_eq!(r.severity, Some(Severity::Info));
        let r = p(r#"{"timestamp":1716723772601,"severity":3}"#);
        assert_eq!(r.timestamp, parse_rfc3339("2024-05-26T11:42:52.601Z"));
        assert_eq!(r.severity, Some(Severity::Error));
    }

    #[test]
    fn errors_keep_the_line() {
        for (line, reason) in [
            ("[1,2]", "json: top-level value is not an object"),
            ("", "json: empty line"),
            (r#"{"a": }"#, "json: expected value at column 7"),
            (r#"{"a":1} x"#, "json: trailing characters at column 9"),
            (r#"{"a":1"#, "json: EOF while parsing an object at column 6"),
        ] {
            let r = p(line);
            assert_eq!(r.parse_error.as_deref(), Some(reason), "{line}");
            assert_eq!(r.message, line);
        }
        let r = crate::parse_json(b"{\"a\":\"\xff\"}", &OPTS);
        assert_eq!(
            r.parse_error.as_deref(),
            Some("json: invalid UTF-8 at column 7")
        );
    }

    #[test]
    fn deep_nesting_does_not_recurse_forever() {
        let depth = 120;
        let line = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        let r = p(&line);
        assert_eq!(r.parse_error, None);
        assert_eq!(r.fields.len(), 1);
        assert!(matches!(r.fields[0].1, FieldValue::Json(_)));
    }
}
