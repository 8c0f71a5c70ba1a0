//! JSON lines: one object per line, common keys mapped onto the record, the rest flattened
//! into `fields`.
//!
//! serde_json does the validation and string unescaping; values are captured as `&RawValue` so
//! that numbers and arrays keep their exact text and strings without escapes stay borrowed.

use std::borrow::Cow;
use std::fmt;

use logsift_core::{FieldValue, Fields, Record, Severity};
use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::timefmt::{epoch_number_to_ns, parse_iso8601};
use crate::{failed, ParseOptions};
use memchr::memchr_iter;

/// Nesting deeper than this is kept as JSON text: flattening re-reads each nested object, and
/// unbounded recursion on hostile input would be a stack overflow.
pub(crate) const MAX_FLATTEN_DEPTH: usize = 16;

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
    if let Ok(record) = crate::jsonfast::build_record(text, opts) {
        return record;
    }
    // The fast path gave up: invalid JSON, or something it leaves to serde_json (lone
    // surrogates, deep nesting). serde_json decides, and words the error.
    parse_serde(line, text, opts)
}

/// Whether `line` is a JSON object that [`parse`] reads without a `parse_error`, found by
/// scanning it only; `false` decides nothing.
pub(crate) fn parses_cleanly(line: &[u8]) -> bool {
    std::str::from_utf8(line).is_ok_and(crate::jsonfast::is_object)
}

/// The line read by serde_json only; `text` is `line` as checked UTF-8.
fn parse_serde<'a>(line: &'a [u8], text: &'a str, opts: &ParseOptions) -> Record<'a> {
    match build_record_serde(text, opts) {
        Ok(record) => record,
        Err(e) => failed(line, Cow::Owned(describe(&e))),
    }
}

/// [`parse`] without the fast path: the serde_json-based reference it is checked against.
pub(crate) fn parse_reference<'a>(line: &'a [u8], opts: &ParseOptions) -> Record<'a> {
    let Ok(text) = std::str::from_utf8(line) else {
        return parse(line, opts);
    };
    match text.trim_start().as_bytes().first() {
        Some(b'{') => parse_serde(line, text, opts),
        _ => parse(line, opts),
    }
}

/// `json: expected value at column 7`: serde_json's text without the line number, which is
/// always 1 for a line.
fn describe(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let head = text.split(" at line ").next().unwrap_or(&text);
    format!("json: {head} at column {}", e.column())
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

/// Fields are pre-sized from the number of `:` in the line (every field has one), up to this
/// many: beyond it the vector grows by doubling, so a hostile line full of colons inside strings
/// cannot make the parser reserve memory out of proportion to real fields.
const MAX_PRESIZED_FIELDS: usize = 1024;

/// Pushes `key: raw` into `fields`, flattening a non-empty object into `key.sub` entries.
/// `path` is scratch space for the composed names of nested objects.
fn push_top<'a>(fields: &mut Fields<'a>, path: &mut String, key: Cow<'a, str>, raw: &'a RawValue) {
    if is_flattenable(raw) {
        path.clear();
        path.push_str(&key);
        if flatten(fields, path, raw, 1) {
            return;
        }
    }
    fields.push_cow(key, field_value(raw));
}

fn is_flattenable(raw: &RawValue) -> bool {
    raw.get().starts_with('{') && raw.get() != "{}"
}

/// Flattens the object `raw` into `path.key` entries. Returns false (with `fields` as before)
/// when it cannot, in which case the caller keeps `raw` whole.
fn flatten<'a>(
    fields: &mut Fields<'a>,
    path: &mut String,
    raw: &'a RawValue,
    depth: usize,
) -> bool {
    if depth > MAX_FLATTEN_DEPTH {
        return false;
    }
    let before = fields.len();
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let seed = FlattenInto {
        path,
        fields,
        depth,
    };
    // An object with no members (`{ }`) is kept whole, like `{}`.
    if de.deserialize_map(seed).is_ok() && fields.len() > before {
        return true;
    }
    // serde_json already accepted this text as a value, so this is not expected; undo anyway
    // rather than keep half an object.
    fields.truncate(before);
    false
}

struct FlattenInto<'s, 'a> {
    path: &'s mut String,
    fields: &'s mut Fields<'a>,
    depth: usize,
}

impl<'a> Visitor<'a> for FlattenInto<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let base = self.path.len();
        while let Some(key) = map.next_key_seed(CowStr)? {
            let raw: &'a RawValue = map.next_value()?;
            self.path.truncate(base);
            self.path.push('.');
            self.path.push_str(&key);
            if !(is_flattenable(raw) && flatten(self.fields, self.path, raw, self.depth + 1)) {
                self.fields.push_copied(self.path, field_value(raw));
            }
        }
        self.path.truncate(base);
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Timestamp,
    Severity,
    Message,
    Host,
    App,
}

/// The record field a top-level key maps to, and its rank among that field's aliases
/// (lower wins).
pub(crate) fn slot_of(key: &str) -> Option<(Slot, u8)> {
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
        // Elastic Common Schema names, which Beats, Logstash and the ecs-logging libraries
        // write either nested (`{"log":{"level":..}}`) or as dotted top-level keys. ECS
        // `log.logger` is a logger inside the app, not the app: it stays a field.
        "host.name" => (Slot::Host, 2),
        "host.hostname" => (Slot::Host, 3),
        "service.name" => (Slot::App, 3),
        "log.level" => (Slot::Severity, 3),
        _ => return None,
    })
}

/// Whether an object under this top-level key may hold a mapped ECS name (`host.name`, ...).
pub(crate) fn has_nested_slots(key: &str) -> bool {
    matches!(key, "host" | "service" | "log")
}

/// What a mapped key's value gave. Text stays in its field until the winner is known.
enum Mapped {
    Timestamp(i64),
    Severity(Severity),
    Text,
}

fn interpret(slot: Slot, value: &FieldValue<'_>, opts: &ParseOptions) -> Option<Mapped> {
    match (slot, value) {
        (Slot::Timestamp, FieldValue::Str(s)) => {
            let s = s.trim();
            let iso = parse_iso8601(s.as_bytes(), false, opts.default_offset_secs)
                .filter(|&(_, len)| len == s.len())
                .map(|(ns, _)| ns);
            iso.or_else(|| epoch_number_to_ns(s)).map(Mapped::Timestamp)
        }
        (Slot::Timestamp, FieldValue::Number(n)) => epoch_number_to_ns(n).map(Mapped::Timestamp),
        (Slot::Severity, FieldValue::Str(s)) => Severity::from_name(s).map(Mapped::Severity),
        (Slot::Severity, FieldValue::Number(n)) => numeric_level(n).map(Mapped::Severity),
        // An empty host or app says nothing; keep it as a plain field.
        (Slot::Message, FieldValue::Str(_)) => Some(Mapped::Text),
        (Slot::Host | Slot::App, FieldValue::Str(s)) => (!s.is_empty()).then_some(Mapped::Text),
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

/// Per mapped slot, the best candidate so far: (alias rank, index of its field, value).
type Best = [Option<(u8, usize, Mapped)>; 5];

/// Collects a line's fields, whichever parser reads it, and picks the mapped record fields.
/// Every top-level entry goes to `fields` first; the winners of the mapped slots are moved out
/// at the end, so fields keep the line's order and no second list of entries is needed.
pub(crate) struct Builder<'a, 'o> {
    pub(crate) fields: Fields<'a>,
    best: Best,
    opts: &'o ParseOptions,
    /// Scratch for the dotted name of the object being flattened.
    pub(crate) path: String,
}

impl<'a, 'o> Builder<'a, 'o> {
    /// Sized from the line so that parsing it allocates a constant number of times: entries
    /// from the number of `:` (every field has one, capped), names and path from its length
    /// when it has a nested object at all (composed names are rarely longer than the line).
    pub(crate) fn new(text: &str, opts: &'o ParseOptions) -> Self {
        let bytes = text.as_bytes();
        let colons = memchr_iter(b':', bytes).take(MAX_PRESIZED_FIELDS).count();
        let nested = memchr_iter(b'{', bytes).nth(1).is_some();
        let names = if nested { text.len() } else { 0 };
        Builder {
            fields: Fields::with_capacity(colons, names),
            best: Default::default(),
            opts,
            path: String::with_capacity(names),
        }
    }

    /// Notes that a top-level entry was just pushed at `index`; `slot` is [`slot_of`] its key.
    pub(crate) fn note_top_level(&mut self, slot: Option<(Slot, u8)>, index: usize) {
        // A mapped key's scalar value is exactly one entry, at `index`.
        if self.fields.len() != index + 1 {
            return;
        }
        self.note_at(slot, index);
    }

    /// Notes the mapped ECS names among the entries a top-level object (whose key passed
    /// [`has_nested_slots`]) was just flattened into, from `index` on: `host.name` and friends
    /// map like their dotted top-level spelling.
    pub(crate) fn note_nested(&mut self, index: usize) {
        let found: Vec<_> = self
            .fields
            .iter()
            .enumerate()
            .skip(index)
            .filter_map(|(i, (name, _))| slot_of(name).map(|slot| (slot, i)))
            .collect();
        for (slot, i) in found {
            self.note_at(Some(slot), i);
        }
    }

    fn note_at(&mut self, slot: Option<(Slot, u8)>, index: usize) {
        let Some((slot, rank)) = slot else {
            return;
        };
        let current = &mut self.best[slot as usize];
        // Equal rank means a duplicate key: the last interpretable one wins.
        if current.as_ref().is_some_and(|(r, _, _)| *r < rank) {
            return;
        }
        let value = self.fields.value_at(index);
        if let Some(mapped) = value.and_then(|v| interpret(slot, v, self.opts)) {
            *current = Some((rank, index, mapped));
        }
    }

    pub(crate) fn finish(mut self) -> Record<'a> {
        let mut record = Record::default();
        // Move the winners out, last field first so that the earlier indexes stay valid (at
        // most five: pick the highest remaining index each time rather than sort).
        loop {
            let next = self
                .best
                .iter()
                .enumerate()
                .filter_map(|(slot, e)| e.as_ref().map(|(_, index, _)| (*index, slot)))
                .max();
            let Some((index, slot)) = next else {
                break;
            };
            let Some((_, _, mapped)) = self.best[slot].take() else {
                break;
            };
            let Some(value) = self.fields.remove(index) else {
                continue;
            };
            match (mapped, value) {
                (Mapped::Timestamp(ns), _) => record.timestamp = Some(ns),
                (Mapped::Severity(s), _) => record.severity = Some(s),
                (Mapped::Text, FieldValue::Str(text)) => match slot {
                    s if s == Slot::Message as usize => record.message = text,
                    s if s == Slot::Host as usize => record.host = Some(text),
                    _ => record.app = Some(text),
                },
                (Mapped::Text, _) => {}
            }
        }
        record.fields = self.fields;
        record
    }
}

/// Reads the top-level object with serde_json straight into a [`Builder`].
struct TopLevel<'b, 'a, 'o> {
    builder: &'b mut Builder<'a, 'o>,
}

impl<'a> Visitor<'a> for TopLevel<'_, 'a, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.builder;
        while let Some(key) = map.next_key_seed(CowStr)? {
            let raw: &'a RawValue = map.next_value()?;
            let index = b.fields.len();
            let slot = slot_of(&key);
            let object = is_flattenable(raw);
            let nested = object && has_nested_slots(&key);
            push_top(&mut b.fields, &mut b.path, key, raw);
            // An object flattened into a single entry is not the key's scalar value: `{"log":
            // {"level": "x"}}` must not make "x" the message (the fast path agrees).
            if !object {
                b.note_top_level(slot, index);
            }
            if nested {
                b.note_nested(index);
            }
        }
        Ok(())
    }
}

/// The serde_json reading of a line: the reference the fast path must agree with, and the
/// source of error messages when the fast path gives up.
pub(crate) fn build_record_serde<'a>(
    text: &'a str,
    opts: &ParseOptions,
) -> Result<Record<'a>, serde_json::Error> {
    let mut builder = Builder::new(text, opts);
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(TopLevel {
        builder: &mut builder,
    })?;
    de.end()?;
    Ok(builder.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use logsift_core::time::parse_rfc3339;

    const OPTS: ParseOptions = ParseOptions {
        received_at_ns: 0,
        default_offset_secs: 0,
        logfmt: false,
    };

    fn p(line: &str) -> Record<'_> {
        crate::parse_json(line.as_bytes(), &OPTS)
    }

    fn field<'r>(r: &'r Record<'_>, key: &str) -> Option<&'r FieldValue<'r>> {
        r.fields.get(key)
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
    fn maps_ecs_names_nested_and_dotted() {
        // What Filebeat and Logstash send: ECS objects.
        let r = p(
            r#"{"@timestamp":"2024-05-01T10:00:00.123Z","message":"GET /cart 500","host":{"name":"web-3","ip":["10.0.0.3"]},"service":{"name":"shop","version":"1.2"},"log":{"level":"error","logger":"http"},"event":{"dataset":"nginx.access"}}"#,
        );
        assert_eq!(r.parse_error, None);
        assert_eq!(r.timestamp, parse_rfc3339("2024-05-01T10:00:00.123Z"));
        assert_eq!(r.message, "GET /cart 500");
        assert_eq!(r.host.as_deref(), Some("web-3"));
        assert_eq!(r.app.as_deref(), Some("shop"));
        assert_eq!(r.severity, Some(Severity::Error));
        // The winners leave `fields`; the rest of each object stays.
        assert!(!r.fields.contains("host.name"));
        assert!(!r.fields.contains("log.level"));
        assert_eq!(
            field(&r, "log.logger"),
            Some(&FieldValue::Str("http".into()))
        );
        assert_eq!(
            field(&r, "service.version"),
            Some(&FieldValue::Str("1.2".into()))
        );
        assert_eq!(
            field(&r, "event.dataset"),
            Some(&FieldValue::Str("nginx.access".into()))
        );
        // What the ecs-logging libraries write: dotted top-level keys.
        let r = p(
            r#"{"log.level":"warn","service.name":"billing","host.hostname":"db-1","message":"slow"}"#,
        );
        assert_eq!(r.severity, Some(Severity::Warning));
        assert_eq!(r.app.as_deref(), Some("billing"));
        assert_eq!(r.host.as_deref(), Some("db-1"));
        assert!(r.fields.is_empty());
        // Plain names outrank ECS ones, whichever comes first.
        let r =
            p(r#"{"log":{"level":"debug"},"level":"error","host":{"name":"a"},"hostname":"b"}"#);
        assert_eq!(r.severity, Some(Severity::Error));
        assert_eq!(r.host.as_deref(), Some("b"));
        assert_eq!(
            field(&r, "log.level"),
            Some(&FieldValue::Str("debug".into()))
        );
        assert_eq!(field(&r, "host.name"), Some(&FieldValue::Str("a".into())));
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
        assert!(matches!(r.fields().next(), Some((_, FieldValue::Json(_)))));
    }
}
