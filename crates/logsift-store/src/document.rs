use std::collections::BTreeMap;

use logsift_core::entry::Entry;
use logsift_core::time::format_rfc3339;
use logsift_core::{FieldValue, Format, Record};
use serde_json::{json, Map, Value};
use tantivy::schema::{OwnedValue, Value as _};
use tantivy::TantivyDocument;

use crate::{LogSchema, Store};

/// Builds the tantivy document of one record. `record` was parsed from `entry.raw`; `pattern`
/// is its pattern id (0: none). Public for `benches/index_cost.rs`, which prices each part of
/// the schema on the same documents.
pub fn build_document(
    schema: &LogSchema,
    lsn: u64,
    entry: &Entry<'_>,
    record: &Record<'_>,
    pattern: u32,
) -> TantivyDocument {
    let mut doc = TantivyDocument::new();
    if pattern != 0 {
        doc.add_u64(schema.pattern, u64::from(pattern));
    }
    doc.add_i64(
        schema.timestamp,
        record.timestamp.unwrap_or(entry.received_at),
    );
    doc.add_i64(schema.received_at, entry.received_at);
    doc.add_u64(schema.id, lsn);
    doc.add_u64(
        schema.stream,
        crate::schema::stream_key(record.host.as_deref(), record.app.as_deref()),
    );
    if let Some(sev) = record.severity {
        doc.add_text(schema.severity, sev.name());
        doc.add_u64(schema.severity_code, sev.code() as u64);
    }
    if let Some(fac) = record.facility {
        doc.add_text(schema.facility, fac.name());
    }
    for (field, value) in [
        (schema.host, &record.host),
        (schema.app, &record.app),
        (schema.procid, &record.procid),
        (schema.msgid, &record.msgid),
    ] {
        if let Some(v) = value {
            doc.add_text(field, v);
        }
    }
    doc.add_text(schema.message, &record.message);
    if !record.fields.is_empty() {
        let mut object = BTreeMap::new();
        for (key, value) in &record.fields {
            if let Some(v) = owned_value(value) {
                object.insert(key.to_string(), v);
            }
        }
        doc.add_object(schema.fields, object);
    }
    doc.add_text(schema.source, entry.source);
    if let Some(err) = &record.parse_error {
        doc.add_text(schema.parse_error, err);
    }
    doc.add_u64(schema.format, entry.format.code() as u64);
    doc.add_bytes(schema.raw, entry.raw);
    doc
}

fn owned_value(value: &FieldValue<'_>) -> Option<OwnedValue> {
    Some(match value {
        FieldValue::Str(s) => OwnedValue::Str(s.to_string()),
        FieldValue::Number(n) => {
            if let Ok(i) = n.parse::<i64>() {
                OwnedValue::I64(i)
            } else if let Ok(u) = n.parse::<u64>() {
                OwnedValue::U64(u)
            } else {
                OwnedValue::F64(n.parse::<f64>().ok()?)
            }
        }
        FieldValue::Bool(b) => OwnedValue::Bool(*b),
        FieldValue::Null => return None,
        FieldValue::Json(text) => OwnedValue::Str(text.to_string()),
    })
}

fn field_json(value: &FieldValue<'_>) -> Value {
    match value {
        FieldValue::Str(s) => Value::String(s.to_string()),
        FieldValue::Number(n) | FieldValue::Json(n) => {
            serde_json::from_str(n).unwrap_or_else(|_| Value::String(n.to_string()))
        }
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::Null => Value::Null,
    }
}

/// What a stored document keeps of its record: the bytes to parse again and how.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    pub raw: &'a [u8],
    /// `None` in documents that lack it (none written by logsift do).
    pub received_at: Option<i64>,
    pub source: &'a str,
    pub format: Format,
    /// The record's pattern id, 0 for none (read from the column by the caller).
    pub pattern: u32,
}

impl<'a> Stored<'a> {
    pub fn of(schema: &LogSchema, doc: &'a TantivyDocument) -> Self {
        Stored {
            raw: doc
                .get_first(schema.raw)
                .and_then(|v| v.as_bytes())
                .unwrap_or_default(),
            received_at: doc.get_first(schema.received_at).and_then(|v| v.as_i64()),
            source: doc
                .get_first(schema.source)
                .and_then(|v| v.as_str())
                .unwrap_or_default(),
            format: doc
                .get_first(schema.format)
                .and_then(|v| v.as_u64())
                .and_then(|c| Format::from_code(c as u8))
                .unwrap_or_default(),
            pattern: 0,
        }
    }
}

/// The JSON hit of one record from what its segment stored of it, as `GET /api/v1/search`
/// answers it. Everything but the id, timestamp and pattern is derived by parsing the stored
/// raw bytes again.
pub(crate) fn hit_json_of(
    store: &Store,
    index: &str,
    id: u64,
    timestamp: i64,
    stored: &Stored<'_>,
) -> Value {
    let Stored {
        raw,
        received_at,
        source,
        format,
        pattern,
    } = *stored;
    let received_at = received_at.unwrap_or(timestamp);
    let opts = store.parse_options(index, received_at);
    let record = logsift_parse::parse(format, raw, &opts);
    let mut fields = Map::new();
    for (key, value) in &record.fields {
        fields.insert(key.to_string(), field_json(value));
    }
    let mut hit = json!({
        "id": id.to_string(),
        "timestamp": format_rfc3339(timestamp),
        "received_at": format_rfc3339(received_at),
        "index": index,
        "severity": record.severity.map(|s| s.name()),
        "facility": record.facility.map(|f| f.name()),
        "host": record.host,
        "app": record.app,
        "procid": record.procid,
        "msgid": record.msgid,
        "message": record.message,
        "source": source,
        "fields": fields,
        "raw": String::from_utf8_lossy(raw),
    });
    if let Some(err) = record.parse_error {
        hit["parse_error"] = Value::String(err.into_owned());
    }
    if pattern != 0 {
        hit["pattern_id"] = Value::from(pattern);
        hit["pattern"] = store
            .patterns()
            .template(pattern)
            .map_or(Value::Null, |t| Value::String(t.to_string()));
    }
    hit
}
