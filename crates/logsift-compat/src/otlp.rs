//! OTLP/HTTP logs (`POST /v1/logs`): an `ExportLogsServiceRequest` in protobuf or in OTLP's
//! JSON mapping (lowerCamelCase keys, 64-bit integers as strings, trace and span ids as hex).
//!
//! Each `LogRecord` becomes one record: a string body is the message (any other body is kept
//! under `body`); `service.name` is the app and `host.name` the host; the severity number
//! maps onto syslog severities; trace and span ids are kept as hex in `trace_id` and
//! `span_id`. Resource, scope and record attributes go under `resource`, `scope` and
//! `attributes`, searchable as `fields.resource.*` and `fields.attributes.*`.

use prost::Message;
use serde_json::{Map, Value};

use crate::{timestamp, to_line, Admit, DecodeError};

// The OTLP messages are `opentelemetry-proto`'s (prost-generated from the OpenTelemetry
// protos), re-exported here so that callers need not name that crate.
pub use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
pub use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
pub use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
pub use opentelemetry_proto::tonic::resource::v1::Resource;

/// `google.rpc.Status`, the body of an OTLP/HTTP error answer. Not part of the OpenTelemetry
/// protos (nor of `opentelemetry-proto`), and two fields: declared here rather than taking a
/// crate of Google's types for it.
#[derive(Clone, PartialEq, Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The protobuf answer to an export: empty when every record was taken, else a partial
/// success naming how many were rejected and why.
pub fn response_protobuf(rejected: i64, error_message: &str) -> Vec<u8> {
    ExportLogsServiceResponse {
        partial_success: (rejected > 0).then(|| ExportLogsPartialSuccess {
            rejected_log_records: rejected,
            error_message: error_message.to_string(),
        }),
    }
    .encode_to_vec()
}

/// The same answer in OTLP's JSON mapping.
pub fn response_json(rejected: i64, error_message: &str) -> Vec<u8> {
    let value = if rejected > 0 {
        serde_json::json!({"partialSuccess": {
            "rejectedLogRecords": rejected.to_string(),
            "errorMessage": error_message,
        }})
    } else {
        serde_json::json!({})
    };
    to_line(&value)
}

/// A `google.rpc.Status` in protobuf, the body of an OTLP/HTTP error answer.
pub fn status_protobuf(code: i32, message: &str) -> Vec<u8> {
    Status {
        code,
        message: message.to_string(),
    }
    .encode_to_vec()
}

/// Decodes a protobuf export request.
pub fn decode_protobuf(body: &[u8]) -> Result<ExportLogsServiceRequest, DecodeError> {
    ExportLogsServiceRequest::decode(body).map_err(|e| DecodeError::Protobuf {
        message: "ExportLogsServiceRequest",
        detail: e.to_string(),
    })
}

/// Decodes an export request in OTLP's JSON mapping. Field names are taken in lowerCamelCase
/// (the spec's) and in snake_case (what some hand-written senders use); unknown fields are
/// ignored, as protobuf's JSON mapping does.
pub fn decode_json(body: &[u8]) -> Result<ExportLogsServiceRequest, DecodeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    let obj = object(&value, "ExportLogsServiceRequest")?;
    Ok(ExportLogsServiceRequest {
        resource_logs: list(obj, "resourceLogs", "resource_logs")?
            .iter()
            .map(json_resource_logs)
            .collect::<Result<_, _>>()?,
    })
}

/// The size of `request` in protobuf: a floor for what its strings and bytes hold in memory.
pub fn request_bytes(request: &ExportLogsServiceRequest) -> usize {
    request.encoded_len()
}

/// The records of a request, one per `LogRecord`, in request order, each offered to `admit`
/// before it is kept (the resource and scope are copied into every record).
pub fn records<E>(
    request: &ExportLogsServiceRequest,
    admit: Admit<'_, E>,
) -> Result<Vec<Vec<u8>>, E> {
    let mut out = Vec::new();
    for rl in &request.resource_logs {
        let resource = rl
            .resource
            .as_ref()
            .map(|r| attributes_object(&r.attributes))
            .unwrap_or_default();
        let host = resource.get("host.name").and_then(Value::as_str);
        let app = resource.get("service.name").and_then(Value::as_str);
        for sl in &rl.scope_logs {
            let scope = sl.scope.as_ref().map(|s| {
                let mut m = Map::new();
                if !s.name.is_empty() {
                    m.insert("name".into(), Value::String(s.name.clone()));
                }
                if !s.version.is_empty() {
                    m.insert("version".into(), Value::String(s.version.clone()));
                }
                if !s.attributes.is_empty() {
                    m.insert(
                        "attributes".into(),
                        Value::Object(attributes_object(&s.attributes)),
                    );
                }
                m
            });
            for lr in &sl.log_records {
                let record = record(lr, &resource, host, app, scope.as_ref());
                admit(record.len())?;
                out.push(record);
            }
        }
    }
    Ok(out)
}

fn record(
    lr: &LogRecord,
    resource: &Map<String, Value>,
    host: Option<&str>,
    app: Option<&str>,
    scope: Option<&Map<String, Value>>,
) -> Vec<u8> {
    let mut obj = Map::new();
    let time = if lr.time_unix_nano != 0 {
        lr.time_unix_nano
    } else {
        lr.observed_time_unix_nano
    };
    if let Some(ts) = timestamp(time) {
        obj.insert("timestamp".into(), Value::String(ts));
    }
    if let Some(ts) = timestamp(lr.observed_time_unix_nano) {
        obj.insert("observed_timestamp".into(), Value::String(ts));
    }
    match lr.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => {
            obj.insert("message".into(), Value::String(s.clone()));
        }
        Some(other) => {
            obj.insert("body".into(), any_to_json(other));
        }
        None => {}
    }
    // A record's own attributes name its host or service more precisely than the resource's.
    let attributes = attributes_object(&lr.attributes);
    let own = |key: &str| attributes.get(key).and_then(Value::as_str);
    if let Some(h) = own("host.name").or(host).filter(|h| !h.is_empty()) {
        obj.insert("host".into(), Value::String(h.to_string()));
    }
    if let Some(a) = own("service.name").or(app).filter(|a| !a.is_empty()) {
        obj.insert("app".into(), Value::String(a.to_string()));
    }
    if let Some(level) = severity_name(lr.severity_number) {
        obj.insert("level".into(), Value::String(level.to_string()));
    }
    if lr.severity_number != 0 {
        obj.insert("severity_number".into(), Value::from(lr.severity_number));
    }
    if !lr.severity_text.is_empty() {
        obj.insert(
            "severity_text".into(),
            Value::String(lr.severity_text.clone()),
        );
    }
    if !lr.trace_id.is_empty() {
        obj.insert("trace_id".into(), Value::String(hex::encode(&lr.trace_id)));
    }
    if !lr.span_id.is_empty() {
        obj.insert("span_id".into(), Value::String(hex::encode(&lr.span_id)));
    }
    if lr.flags != 0 {
        obj.insert("flags".into(), Value::from(lr.flags));
    }
    if !lr.event_name.is_empty() {
        obj.insert("event_name".into(), Value::String(lr.event_name.clone()));
    }
    if !attributes.is_empty() {
        obj.insert("attributes".into(), Value::Object(attributes));
    }
    if !resource.is_empty() {
        obj.insert("resource".into(), Value::Object(resource.clone()));
    }
    if let Some(scope) = scope.filter(|s| !s.is_empty()) {
        obj.insert("scope".into(), Value::Object(scope.clone()));
    }
    to_line(&Value::Object(obj))
}

/// OpenTelemetry severity numbers (1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN, 17-20 ERROR,
/// 21-24 FATAL) as syslog severity names. FATAL is `crit`, as for the bunyan/pino levels.
pub fn severity_name(number: i32) -> Option<&'static str> {
    Some(match number {
        1..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warning",
        17..=20 => "error",
        21..=24 => "crit",
        _ => return None,
    })
}

/// Attributes as a JSON object; a repeated key keeps its last value.
fn attributes_object(kvs: &[KeyValue]) -> Map<String, Value> {
    kvs.iter()
        .map(|kv| {
            let value = kv
                .value
                .as_ref()
                .and_then(|v| v.value.as_ref())
                .map_or(Value::Null, any_to_json);
            (kv.key.clone(), value)
        })
        .collect()
}

fn any_to_json(v: &any_value::Value) -> Value {
    use any_value::Value as V;
    match v {
        V::StringValue(s) => Value::String(s.clone()),
        V::BoolValue(b) => Value::Bool(*b),
        V::IntValue(i) => Value::from(*i),
        // NaN and infinities have no JSON number; keep their text.
        V::DoubleValue(d) => serde_json::Number::from_f64(*d)
            .map_or_else(|| Value::String(d.to_string()), Value::Number),
        V::ArrayValue(a) => Value::Array(
            a.values
                .iter()
                .map(|v| v.value.as_ref().map_or(Value::Null, any_to_json))
                .collect(),
        ),
        V::KvlistValue(kv) => Value::Object(attributes_object(&kv.values)),
        V::BytesValue(b) => Value::String(hex::encode(b)),
    }
}

// OTLP JSON → the protobuf structs.

fn object<'v>(v: &'v Value, what: &str) -> Result<&'v Map<String, Value>, DecodeError> {
    v.as_object()
        .ok_or_else(|| DecodeError::Invalid(format!("OTLP JSON: {what} is not an object")))
}

fn field<'v>(obj: &'v Map<String, Value>, camel: &str, snake: &str) -> Option<&'v Value> {
    obj.get(camel)
        .or_else(|| obj.get(snake))
        .filter(|v| !v.is_null())
}

fn list<'v>(
    obj: &'v Map<String, Value>,
    camel: &str,
    snake: &str,
) -> Result<&'v [Value], DecodeError> {
    match field(obj, camel, snake) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(DecodeError::Invalid(format!(
            "OTLP JSON: {camel} is not an array"
        ))),
    }
}

fn string(obj: &Map<String, Value>, camel: &str, snake: &str) -> Result<String, DecodeError> {
    match field(obj, camel, snake) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(DecodeError::Invalid(format!(
            "OTLP JSON: {camel} is not a string"
        ))),
    }
}

/// A 64-bit integer: a string of digits (as protobuf's JSON mapping writes them) or a number.
fn integer(obj: &Map<String, Value>, camel: &str, snake: &str) -> Result<i128, DecodeError> {
    let bad = || DecodeError::Invalid(format!("OTLP JSON: {camel} is not an integer"));
    match field(obj, camel, snake) {
        None => Ok(0),
        Some(Value::String(s)) => s.parse().map_err(|_| bad()),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

fn unsigned<T: TryFrom<i128>>(
    obj: &Map<String, Value>,
    camel: &str,
    snake: &str,
) -> Result<T, DecodeError> {
    T::try_from(integer(obj, camel, snake)?)
        .map_err(|_| DecodeError::Invalid(format!("OTLP JSON: {camel} is out of range")))
}

fn hex_id(obj: &Map<String, Value>, camel: &str, snake: &str) -> Result<Vec<u8>, DecodeError> {
    let text = string(obj, camel, snake)?;
    hex::decode(&text)
        .map_err(|_| DecodeError::Invalid(format!("OTLP JSON: {camel} {text:?} is not hex")))
}

fn json_resource_logs(v: &Value) -> Result<ResourceLogs, DecodeError> {
    let obj = object(v, "a resourceLogs entry")?;
    let resource = match field(obj, "resource", "resource") {
        None => None,
        Some(r) => {
            let r = object(r, "resource")?;
            Some(Resource {
                attributes: json_attributes(r)?,
                dropped_attributes_count: unsigned(
                    r,
                    "droppedAttributesCount",
                    "dropped_attributes_count",
                )?,
                // Not read into records; ignored in JSON as before the generated structs.
                entity_refs: Vec::new(),
            })
        }
    };
    Ok(ResourceLogs {
        resource,
        scope_logs: list(obj, "scopeLogs", "scope_logs")?
            .iter()
            .map(json_scope_logs)
            .collect::<Result<_, _>>()?,
        schema_url: string(obj, "schemaUrl", "schema_url")?,
    })
}

fn json_scope_logs(v: &Value) -> Result<ScopeLogs, DecodeError> {
    let obj = object(v, "a scopeLogs entry")?;
    let scope = match field(obj, "scope", "scope") {
        None => None,
        Some(s) => {
            let s = object(s, "scope")?;
            Some(InstrumentationScope {
                name: string(s, "name", "name")?,
                version: string(s, "version", "version")?,
                attributes: json_attributes(s)?,
                dropped_attributes_count: unsigned(
                    s,
                    "droppedAttributesCount",
                    "dropped_attributes_count",
                )?,
            })
        }
    };
    Ok(ScopeLogs {
        scope,
        log_records: list(obj, "logRecords", "log_records")?
            .iter()
            .map(json_log_record)
            .collect::<Result<_, _>>()?,
        schema_url: string(obj, "schemaUrl", "schema_url")?,
    })
}

fn json_log_record(v: &Value) -> Result<LogRecord, DecodeError> {
    let obj = object(v, "a logRecords entry")?;
    // Enums may be written by name in protobuf's JSON mapping.
    let severity_number = match field(obj, "severityNumber", "severity_number") {
        Some(Value::String(s)) if s.starts_with("SEVERITY_NUMBER_") => severity_from_enum_name(s)
            .ok_or_else(|| {
            DecodeError::Invalid(format!("OTLP JSON: unknown severityNumber {s:?}"))
        })?,
        _ => unsigned::<i32>(obj, "severityNumber", "severity_number")?,
    };
    Ok(LogRecord {
        time_unix_nano: unsigned(obj, "timeUnixNano", "time_unix_nano")?,
        observed_time_unix_nano: unsigned(obj, "observedTimeUnixNano", "observed_time_unix_nano")?,
        severity_number,
        severity_text: string(obj, "severityText", "severity_text")?,
        body: field(obj, "body", "body").map(json_any_value).transpose()?,
        attributes: json_attributes(obj)?,
        dropped_attributes_count: unsigned(
            obj,
            "droppedAttributesCount",
            "dropped_attributes_count",
        )?,
        flags: unsigned(obj, "flags", "flags")?,
        trace_id: hex_id(obj, "traceId", "trace_id")?,
        span_id: hex_id(obj, "spanId", "span_id")?,
        event_name: string(obj, "eventName", "event_name")?,
    })
}

fn severity_from_enum_name(name: &str) -> Option<i32> {
    const NAMES: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    let rest = name.strip_prefix("SEVERITY_NUMBER_")?;
    if rest == "UNSPECIFIED" {
        return Some(0);
    }
    let level = rest.trim_end_matches(|c: char| c.is_ascii_digit());
    let step: i32 = match &rest[level.len()..] {
        "" => 1,
        n => n.parse().ok().filter(|n| (2..=4).contains(n))?,
    };
    let base = NAMES.iter().position(|n| *n == level)? as i32;
    Some(base * 4 + step)
}

fn json_attributes(obj: &Map<String, Value>) -> Result<Vec<KeyValue>, DecodeError> {
    list(obj, "attributes", "attributes")?
        .iter()
        .map(json_key_value)
        .collect()
}

fn json_key_value(v: &Value) -> Result<KeyValue, DecodeError> {
    let obj = object(v, "an attribute")?;
    Ok(KeyValue {
        key: string(obj, "key", "key")?,
        value: field(obj, "value", "value")
            .map(json_any_value)
            .transpose()?,
    })
}

fn json_any_value(v: &Value) -> Result<AnyValue, DecodeError> {
    use any_value::Value as V;
    let obj = object(v, "an AnyValue")?;
    let bad = |what: &str| DecodeError::Invalid(format!("OTLP JSON: {what}"));
    let value = if let Some(s) = field(obj, "stringValue", "string_value") {
        V::StringValue(
            s.as_str()
                .ok_or_else(|| bad("stringValue is not a string"))?
                .to_string(),
        )
    } else if let Some(b) = field(obj, "boolValue", "bool_value") {
        V::BoolValue(
            b.as_bool()
                .ok_or_else(|| bad("boolValue is not a boolean"))?,
        )
    } else if field(obj, "intValue", "int_value").is_some() {
        V::IntValue(
            i64::try_from(integer(obj, "intValue", "int_value")?)
                .map_err(|_| bad("intValue is out of range"))?,
        )
    } else if let Some(d) = field(obj, "doubleValue", "double_value") {
        V::DoubleValue(match d {
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| bad("doubleValue is not a number"))?,
            // The JSON mapping writes non-finite doubles as strings.
            Value::String(s) => s.parse().map_err(|_| bad("doubleValue is not a number"))?,
            _ => return Err(bad("doubleValue is not a number")),
        })
    } else if let Some(a) = field(obj, "arrayValue", "array_value") {
        let a = object(a, "arrayValue")?;
        V::ArrayValue(ArrayValue {
            values: list(a, "values", "values")?
                .iter()
                .map(json_any_value)
                .collect::<Result<_, _>>()?,
        })
    } else if let Some(kv) = field(obj, "kvlistValue", "kvlist_value") {
        let kv = object(kv, "kvlistValue")?;
        V::KvlistValue(KeyValueList {
            values: list(kv, "values", "values")?
                .iter()
                .map(json_key_value)
                .collect::<Result<_, _>>()?,
        })
    } else if let Some(b) = field(obj, "bytesValue", "bytes_value") {
        let text = b
            .as_str()
            .ok_or_else(|| bad("bytesValue is not a string"))?;
        V::BytesValue(base64_decode(text).ok_or_else(|| bad("bytesValue is not base64"))?)
    } else {
        return Ok(AnyValue { value: None });
    };
    Ok(AnyValue { value: Some(value) })
}

/// Standard or URL-safe base64, padded or not: protobuf's JSON mapping of `bytes`.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// How the messages of a gRPC request are compressed (its `grpc-encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcEncoding {
    Identity,
    Gzip,
    Zstd,
}

impl GrpcEncoding {
    /// The encodings logsift accepts, as `grpc-accept-encoding` lists them.
    pub const ACCEPTED: &'static str = "identity,gzip,zstd";

    pub fn from_header(value: &str) -> Option<GrpcEncoding> {
        match value {
            "identity" => Some(GrpcEncoding::Identity),
            "gzip" => Some(GrpcEncoding::Gzip),
            "zstd" => Some(GrpcEncoding::Zstd),
            _ => None,
        }
    }
}

/// The one message of a unary gRPC request body: a flag byte (1: compressed with the
/// request's `grpc-encoding`), a big-endian u32 length, the bytes. Decompression stops one byte
/// past `limit`, so a small bomb cannot expand without bound.
pub fn unframe_grpc(
    body: &[u8],
    encoding: GrpcEncoding,
    limit: usize,
) -> Result<Vec<u8>, DecodeError> {
    unframe_grpc_admitted(body, encoding, limit, |_| Ok(()))
}

/// [`unframe_grpc`] that also calls `admit(bytes)` before it allocates the message's buffer or
/// grows it (see [`crate::read_admitted`]), so that the caller charges the memory a
/// compressed message takes before it is taken.
pub fn unframe_grpc_admitted<E: From<DecodeError>>(
    body: &[u8],
    encoding: GrpcEncoding,
    limit: usize,
    mut admit: impl FnMut(usize) -> Result<(), E>,
) -> Result<Vec<u8>, E> {
    use std::io::Read;
    let bad = DecodeError::Frame;
    if body.len() < 5 {
        return Err(bad(format!(
            "a gRPC request needs a 5-byte message prefix; the body has {} bytes",
            body.len()
        ))
        .into());
    }
    let (prefix, rest) = body.split_at(5);
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if rest.len() < len {
        return Err(bad(format!(
            "the gRPC message prefix announces {len} bytes; the body has {}",
            rest.len()
        ))
        .into());
    }
    if rest.len() > len {
        return Err(
            bad("Export is unary: the body holds more than one gRPC message".to_string()).into(),
        );
    }
    let io = |e: std::io::Error| E::from(bad(format!("cannot decompress the gRPC message: {e}")));
    let out = match (prefix[0], encoding) {
        (0, _) => {
            admit(rest.len())?;
            return Ok(rest.to_vec());
        }
        (1, GrpcEncoding::Identity) => {
            return Err(bad(
                "the message is flagged compressed but grpc-encoding is identity".to_string(),
            )
            .into())
        }
        (1, GrpcEncoding::Gzip) => crate::read_admitted(
            flate2::read::GzDecoder::new(rest).take(limit as u64 + 1),
            &mut admit,
            io,
        )?,
        (1, GrpcEncoding::Zstd) => {
            let decoder = zstd::stream::read::Decoder::new(rest).map_err(io)?;
            crate::read_admitted(decoder.take(limit as u64 + 1), &mut admit, io)?
        }
        (flag, _) => return Err(bad(format!("unknown gRPC message flag {flag}")).into()),
    };
    if out.len() > limit {
        return Err(DecodeError::TooLarge {
            decoded: out.len(),
            limit,
        }
        .into());
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `message` as one gRPC length-prefixed message; `flag` 1 says it is compressed.
    pub(crate) fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    /// The memory of a compressed message is asked for before it is taken: a refusal stops
    /// the decompression with the caller's error, far below the size limit.
    #[test]
    fn grpc_decompression_is_admitted_step_by_step() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b'a'; 16 << 20]).unwrap();
        let bomb = framed(1, &gz.finish().unwrap());
        let mut asked = 0;
        let e = unframe_grpc_admitted(&bomb, GrpcEncoding::Gzip, 64 << 20, |bytes| {
            asked = bytes;
            if bytes > 1 << 20 {
                Err(DecodeError::Invalid(format!("{bytes} over budget")))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(e.to_string().ends_with("over budget"), "{e}");
        assert!(asked < 2 << 20, "{asked}");
        let plain = framed(0, b"hello");
        let out = unframe_grpc_admitted(&plain, GrpcEncoding::Gzip, 64, |bytes| {
            assert_eq!(bytes, 5);
            Ok::<_, DecodeError>(())
        })
        .unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn grpc_messages_unframe_plain_and_compressed() {
        let msg = b"hello protobuf".repeat(10);
        let plain = unframe_grpc(&framed(0, &msg), GrpcEncoding::Identity, 1 << 20);
        assert_eq!(plain.unwrap(), msg);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &msg).unwrap();
        let gz = gz.finish().unwrap();
        let gunzipped = unframe_grpc(&framed(1, &gz), GrpcEncoding::Gzip, 1 << 20);
        assert_eq!(gunzipped.unwrap(), msg);
        let zst = zstd::encode_all(&msg[..], 3).unwrap();
        let unzstd = unframe_grpc(&framed(1, &zst), GrpcEncoding::Zstd, 1 << 20);
        assert_eq!(unzstd.unwrap(), msg);
    }

    #[test]
    fn malformed_grpc_frames_are_refused() {
        let msg = b"abc";
        let mut two = framed(0, msg);
        two.extend(framed(0, msg));
        let mut short = framed(0, msg);
        short.pop();
        for (body, enc, want) in [
            (vec![0, 0, 0], GrpcEncoding::Identity, "5-byte"),
            (short, GrpcEncoding::Identity, "announces 3 bytes"),
            (two, GrpcEncoding::Identity, "unary"),
            (framed(1, msg), GrpcEncoding::Identity, "identity"),
            (framed(1, msg), GrpcEncoding::Gzip, "decompress"),
            (framed(7, msg), GrpcEncoding::Identity, "flag 7"),
        ] {
            let e = unframe_grpc(&body, enc, 1 << 20).unwrap_err();
            assert_eq!(e.reason(), "bad_grpc_frame");
            assert!(e.to_string().contains(want), "{e} lacks {want}");
        }
        // A compressed message that expands past the limit is refused without being held.
        let bomb = zstd::encode_all(&vec![0u8; 1 << 20][..], 3).unwrap();
        let e = unframe_grpc(&framed(1, &bomb), GrpcEncoding::Zstd, 4096).unwrap_err();
        assert!(
            matches!(e, DecodeError::TooLarge { limit: 4096, .. }),
            "{e}"
        );
    }
    use logsift_core::{FieldValue, Severity};
    use logsift_parse::{parse_json, ParseOptions};

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
        }
    }

    fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    fn sample() -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s("checkout")),
                        kv("host.name", s("web-7")),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "app.payments".into(),
                        ..Default::default()
                    }),
                    log_records: vec![LogRecord {
                        time_unix_nano: 1_714_557_600_000_000_042,
                        severity_number: 17,
                        severity_text: "ERROR".into(),
                        body: Some(AnyValue {
                            value: Some(s("card declined")),
                        }),
                        attributes: vec![
                            kv("user.id", any_value::Value::IntValue(42)),
                            kv("retry", any_value::Value::BoolValue(false)),
                        ],
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn protobuf_records_carry_fields() {
        let bytes = sample().encode_to_vec();
        let request = decode_protobuf(&bytes).unwrap();
        assert_eq!(request, sample());
        let lines = records(&request, &mut crate::admit_all).unwrap();
        assert_eq!(lines.len(), 1);
        let r = parse_json(&lines[0], &ParseOptions::default());
        assert_eq!(r.parse_error, None);
        assert_eq!(r.message, "card declined");
        assert_eq!(r.host.as_deref(), Some("web-7"));
        assert_eq!(r.app.as_deref(), Some("checkout"));
        assert_eq!(r.severity, Some(Severity::Error));
        assert_eq!(r.timestamp, Some(1_714_557_600_000_000_042));
        assert_eq!(
            r.fields.get("trace_id"),
            Some(&FieldValue::Str("abababababababababababababababab".into()))
        );
        assert_eq!(
            r.fields.get("span_id"),
            Some(&FieldValue::Str("0102030405060708".into()))
        );
        assert_eq!(
            r.fields.get("attributes.user.id"),
            Some(&FieldValue::Number("42"))
        );
        assert_eq!(
            r.fields.get("scope.name"),
            Some(&FieldValue::Str("app.payments".into()))
        );
        assert!(decode_protobuf(b"\x0a\x05\x0a").is_err());
    }

    #[test]
    fn json_mapping_matches_protobuf() {
        let json = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}},{"key":"host.name","value":{"stringValue":"web-7"}}]},
            "scopeLogs":[{"scope":{"name":"app.payments"},"logRecords":[{"timeUnixNano":"1714557600000000042","severityNumber":17,"severityText":"ERROR",
            "body":{"stringValue":"card declined"},"attributes":[{"key":"user.id","value":{"intValue":"42"}},{"key":"retry","value":{"boolValue":false}}],
            "traceId":"abababababababababababababababab","spanId":"0102030405060708"}]}]}]}"#;
        assert_eq!(decode_json(json).unwrap(), sample());
        for bad in [
            &br#"{"resourceLogs":{}}"#[..],
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"xyz"}]}]}]}"#,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"-1"}]}]}]}"#,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"intValue":"1e3"}}]}]}]}"#,
            br#"[]"#,
        ] {
            assert!(
                matches!(decode_json(bad), Err(DecodeError::Invalid(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(decode_json(b"{]"), Err(DecodeError::Json(_))));
    }

    #[test]
    fn severities_and_bodies() {
        assert_eq!(severity_name(0), None);
        assert_eq!(severity_name(9), Some("info"));
        assert_eq!(severity_name(24), Some("crit"));
        assert_eq!(severity_from_enum_name("SEVERITY_NUMBER_WARN"), Some(13));
        assert_eq!(severity_from_enum_name("SEVERITY_NUMBER_ERROR3"), Some(19));
        assert_eq!(severity_from_enum_name("SEVERITY_NUMBER_BOGUS"), None);
        assert_eq!(base64_decode("aGk="), Some(b"hi".to_vec()));
        let mut req = sample();
        let lr = &mut req.resource_logs[0].scope_logs[0].log_records[0];
        lr.body = Some(AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![kv("event", s("login"))],
            })),
        });
        lr.time_unix_nano = 0;
        lr.observed_time_unix_nano = 1_000_000_000_000_000_000;
        let line = &records(&req, &mut crate::admit_all).unwrap()[0];
        let r = parse_json(line, &ParseOptions::default());
        assert_eq!(
            r.fields.get("body.event"),
            Some(&FieldValue::Str("login".into()))
        );
        assert_eq!(r.timestamp, Some(1_000_000_000_000_000_000));
    }
}
