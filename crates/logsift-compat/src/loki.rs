//! Loki's push API (`POST /loki/api/v1/push`): a protobuf `PushRequest` compressed with
//! snappy's block format (what Promtail, Alloy and the Loki clients send), or the same in JSON.
//!
//! Each entry becomes one record: the line is the message; the `host`, `app` and level labels
//! become the record's host, app and severity; the other labels go under `labels` and
//! structured metadata under `metadata`, both searchable as `fields.labels.*` and
//! `fields.metadata.*`.

use prost::Message;
use serde_json::{Map, Value};

use crate::{parse_labels, timestamp, to_line, Admit, DecodeError};

/// `logproto.PushRequest` from Loki's `push.proto`.
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`: a label set in Prometheus syntax and its entries.
#[derive(Clone, PartialEq, Message)]
pub struct StreamAdapter {
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// Labels that name the record's host, app and severity, in order of preference.
const HOST_LABELS: &[&str] = &["host", "hostname"];
const APP_LABELS: &[&str] = &["app", "service_name", "job"];
const LEVEL_LABELS: &[&str] = &["level", "severity", "detected_level"];

/// The decompressed size a snappy-compressed push announces in its header, so that the
/// caller can charge it before [`decode_protobuf`] allocates it.
pub fn snappy_len(body: &[u8]) -> Result<usize, DecodeError> {
    snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))
}

/// Decodes a snappy-compressed protobuf push into records. `max_decoded_bytes` bounds the
/// decompressed size, checked from the snappy header before anything is allocated; each record
/// is offered to `admit` before it is kept.
pub fn decode_protobuf<E: From<DecodeError>>(
    body: &[u8],
    max_decoded_bytes: usize,
    admit: Admit<'_, E>,
) -> Result<Vec<Vec<u8>>, E> {
    let len = snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    if len > max_decoded_bytes {
        return Err(DecodeError::TooLarge {
            decoded: len,
            limit: max_decoded_bytes,
        }
        .into());
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Snappy(e.to_string()))?;
    let request = PushRequest::decode(&raw[..]).map_err(|e| DecodeError::Protobuf {
        message: "logproto.PushRequest",
        detail: e.to_string(),
    })?;
    let mut out = Vec::new();
    for stream in &request.streams {
        let labels = parse_labels(&stream.labels)?;
        for entry in &stream.entries {
            let ns = entry.timestamp.as_ref().and_then(|t| {
                t.seconds
                    .checked_mul(1_000_000_000)?
                    .checked_add(i64::from(t.nanos))
            });
            let metadata: Vec<_> = entry
                .structured_metadata
                .iter()
                .map(|p| (p.name.as_str(), p.value.as_str()))
                .collect();
            let record = record(&labels, ns, &entry.line, &metadata);
            admit(record.len())?;
            out.push(record);
        }
    }
    Ok(out)
}

/// A push as parsed before its entries: each stream's labels, and its values left as text
/// (borrowed from the body) to be parsed one entry at a time.
#[derive(serde::Deserialize)]
struct JsonPush<'a> {
    #[serde(borrow)]
    streams: Vec<JsonStream<'a>>,
}

#[derive(serde::Deserialize)]
struct JsonStream<'a> {
    #[serde(default)]
    stream: Option<Value>,
    #[serde(borrow, default)]
    values: Option<&'a serde_json::value::RawValue>,
}

/// Hands each element of a JSON array to `each`, one parsed at a time; an error of `each`
/// stops it.
struct EachElement<'f>(&'f mut dyn FnMut(Value) -> Result<(), ()>);

impl<'de> serde::de::Visitor<'de> for EachElement<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a \"values\" array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<Value>()? {
            (self.0)(v).map_err(|()| serde::de::Error::custom("stopped"))?;
        }
        Ok(())
    }
}

/// How much the parsed streams of a push hold besides its body, at most: a stream's place
/// (labels and a reference to its values) is 48 bytes, and the smallest stream,
/// `{"values":[]},`, is 14 bytes of text.
pub fn json_streams_bytes(body: &[u8]) -> usize {
    body.len().saturating_mul(4)
}

/// Decodes a JSON push (`{"streams": [{"stream": {labels}, "values": [["<ns>", "line",
/// {metadata}?], ...]}]}`) into records, each offered to `admit` before it is kept. Entries
/// are parsed one at a time from the body (a tree of the whole push would hold some 200
/// bytes per tiny entry, 40 MB for a 3 MB push); [`json_streams_bytes`] bounds the rest.
pub fn decode_json<E: From<DecodeError>>(
    body: &[u8],
    admit: Admit<'_, E>,
) -> Result<Vec<Vec<u8>>, E> {
    let invalid = |what: &str| DecodeError::Invalid(format!("Loki push: {what}"));
    let push: JsonPush = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => invalid(&format!(
            "expected an object with a \"streams\" array of streams: {e}"
        )),
        _ => DecodeError::Json(e.to_string()),
    })?;
    let mut out = Vec::new();
    for stream in &push.streams {
        let labels: Vec<(String, String)> = match &stream.stream {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(invalid(&format!("label {k:?} is not a string"))),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("\"stream\" is not an object of labels").into()),
        };
        let values = stream
            .values
            .ok_or_else(|| invalid("a stream has no \"values\" array"))?;
        // What stopped the entries: a bad entry or a refused record.
        let mut stop: Option<E> = None;
        let mut each = |v: Value| -> Result<(), ()> {
            let mut entry = || -> Result<(), E> {
                let (ns, line, metadata) = match v.as_array().map(Vec::as_slice) {
                    Some([ts, line, rest @ ..]) if rest.len() <= 1 => (ts, line, rest.first()),
                    _ => return Err(invalid("each value must be [\"<unix ns>\", \"<line>\"] or [\"<unix ns>\", \"<line>\", {metadata}]").into()),
                };
                // Loki writes nanoseconds as a string (they do not fit a double); numbers are
                // taken too when they are exact integers.
                let ns = match ns {
                    Value::String(s) => s.parse::<i64>().ok(),
                    Value::Number(n) => n.as_i64(),
                    _ => None,
                }
                .ok_or_else(|| {
                    invalid(&format!(
                        "timestamp {ns} is not an integer of Unix nanoseconds"
                    ))
                })?;
                let line = line
                    .as_str()
                    .ok_or_else(|| invalid("a log line is not a string"))?;
                let metadata: Vec<(&str, &str)> = match metadata {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Object(map)) => map
                        .iter()
                        .map(|(k, v)| {
                            v.as_str()
                                .map(|s| (k.as_str(), s))
                                .ok_or_else(|| invalid(&format!("metadata {k:?} is not a string")))
                        })
                        .collect::<Result<_, _>>()?,
                    Some(_) => return Err(invalid("structured metadata is not an object").into()),
                };
                let record = record(&labels, Some(ns), line, &metadata);
                admit(record.len())?;
                out.push(record);
                Ok(())
            };
            entry().map_err(|e| stop = Some(e))
        };
        let mut de = serde_json::Deserializer::from_str(values.get());
        let walked = serde::Deserializer::deserialize_seq(&mut de, EachElement(&mut each));
        if let Some(e) = stop {
            return Err(e);
        }
        walked.map_err(|e| invalid(&format!("a stream has no \"values\" array: {e}")))?;
    }
    Ok(out)
}

fn record(
    labels: &[(String, String)],
    ns: Option<i64>,
    line: &str,
    metadata: &[(&str, &str)],
) -> Vec<u8> {
    let mut obj = Map::new();
    if let Some(ts) = ns.and_then(|ns| u64::try_from(ns).ok()).and_then(timestamp) {
        obj.insert("timestamp".into(), Value::String(ts));
    }
    obj.insert("message".into(), Value::String(line.to_string()));
    let pick = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| labels.iter().position(|(k, v)| k == n && !v.is_empty()))
    };
    let host = pick(HOST_LABELS);
    let app = pick(APP_LABELS);
    let level = pick(LEVEL_LABELS);
    for (key, at) in [("host", host), ("app", app), ("level", level)] {
        if let Some(i) = at {
            obj.insert(key.into(), Value::String(labels[i].1.clone()));
        }
    }
    let rest: Map<String, Value> = labels
        .iter()
        .enumerate()
        .filter(|(i, _)| ![host, app, level].contains(&Some(*i)))
        .map(|(_, (k, v))| (k.clone(), Value::String(v.clone())))
        .collect();
    if !rest.is_empty() {
        obj.insert("labels".into(), Value::Object(rest));
    }
    if !metadata.is_empty() {
        let meta = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        obj.insert("metadata".into(), Value::Object(meta));
    }
    to_line(&Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use logsift_core::Severity;
    use logsift_parse::{parse_json, ParseOptions};

    fn parsed(line: &[u8]) -> logsift_core::Record<'_> {
        let r = parse_json(line, &ParseOptions::default());
        assert_eq!(r.parse_error, None, "{}", String::from_utf8_lossy(line));
        r
    }

    #[test]
    fn protobuf_push_maps_labels_to_record_fields() {
        let request = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{job="varlogs", host="web-1", level="warn", env="prod"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: 1_714_557_600,
                        nanos: 123,
                    }),
                    line: "disk almost full".into(),
                    structured_metadata: vec![LabelPairAdapter {
                        name: "trace_id".into(),
                        value: "abc".into(),
                    }],
                }],
                hash: 0,
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap();
        let records = decode_protobuf(&body, 1 << 20, &mut crate::admit_all).unwrap();
        assert_eq!(records.len(), 1);
        let r = parsed(&records[0]);
        assert_eq!(r.message, "disk almost full");
        assert_eq!(r.host.as_deref(), Some("web-1"));
        assert_eq!(r.app.as_deref(), Some("varlogs"));
        assert_eq!(r.severity, Some(Severity::Warning));
        assert_eq!(r.timestamp, Some(1_714_557_600_000_000_123));
        let s = |v: &'static str| logsift_core::FieldValue::Str(v.into());
        assert_eq!(r.fields.get("labels.env"), Some(&s("prod")));
        assert_eq!(r.fields.get("metadata.trace_id"), Some(&s("abc")));
        assert!(!r.fields.contains("labels.job"));

        assert!(matches!(
            decode_protobuf(&body, 10, &mut crate::admit_all),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_protobuf(b"\x05not snappy", 1 << 20, &mut crate::admit_all),
            Err(DecodeError::Snappy(_))
        ));
        let garbage = snap::raw::Encoder::new()
            .compress_vec(b"\xff\xff\xff")
            .unwrap();
        assert!(matches!(
            decode_protobuf(&garbage, 1 << 20, &mut crate::admit_all),
            Err(DecodeError::Protobuf { .. })
        ));
    }

    #[test]
    fn json_push() {
        let body = br#"{"streams":[{"stream":{"service_name":"checkout","hostname":"db-2"},"values":[["1714557600000000000","payment failed"],["1714557601000000000","retry",{"user":"42"}]]}]}"#;
        let records = decode_json(body, &mut crate::admit_all).unwrap();
        assert_eq!(records.len(), 2);
        let r = parsed(&records[1]);
        assert_eq!(r.message, "retry");
        assert_eq!(r.app.as_deref(), Some("checkout"));
        assert_eq!(r.host.as_deref(), Some("db-2"));
        assert_eq!(r.timestamp, Some(1_714_557_601_000_000_000));
        assert!(r.fields.contains("metadata.user"));
        for bad in [
            &br#"{"streams":[{"stream":{"a":1},"values":[]}]}"#[..],
            br#"{"streams":[{"stream":{},"values":[["x","l"]]}]}"#,
            br#"{"streams":[{"stream":{},"values":[["1",2]]}]}"#,
            br#"{"streams":[{"stream":{},"values":[["1"]]}]}"#,
            br#"{"streams":{}}"#,
            br#"{"streams":[{"stream":{}}]}"#,
            br#"[]"#,
        ] {
            assert!(
                matches!(
                    decode_json(bad, &mut crate::admit_all),
                    Err(DecodeError::Invalid(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            decode_json(b"{", &mut crate::admit_all),
            Err(DecodeError::Json(_))
        ));
    }

    /// Issue #17: a label is copied into every record of its stream, so a push of a few
    /// hundred KB could decode to gigabytes before anything was charged. Each record is
    /// offered before it is kept, and the first refusal stops decoding.
    #[test]
    fn records_are_admitted_one_by_one_and_a_refusal_stops_decoding() {
        let label = "x".repeat(100_000);
        let values: Vec<_> = (0..2000)
            .map(|i| serde_json::json!([format!("{}", 1_714_557_600_000_000_000i64 + i), "a"]))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({
            "streams": [{"stream": {"big": label}, "values": values}]
        }))
        .unwrap();
        assert!(body.len() < 200_000, "{}", body.len());
        let mut offered = Vec::new();
        let mut admit = |len: usize| {
            offered.push(len);
            if offered.iter().sum::<usize>() > 1 << 20 {
                return Err(DecodeError::TooLarge {
                    decoded: offered.iter().sum(),
                    limit: 1 << 20,
                });
            }
            Ok(())
        };
        let err = decode_json(&body, &mut admit).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { .. }), "{err:?}");
        assert_eq!(offered.len(), 11, "{offered:?}");
        assert!(offered.iter().all(|&len| len > 100_000), "{offered:?}");
        assert_eq!(
            decode_json(&body, &mut crate::admit_all).unwrap().len(),
            2000
        );
    }
}
