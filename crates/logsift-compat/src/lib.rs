//! Decoders for what existing shippers send, so that a fleet can point them at logsift
//! unchanged: Elasticsearch `_bulk` bodies ([`es`]), Loki push requests in JSON or
//! snappy-compressed protobuf ([`loki`]) and OTLP/HTTP log exports in protobuf or JSON
//! ([`otlp`]).
//!
//! Each decoder turns untrusted bytes into JSON records: one JSON object per log entry, whose
//! keys are the ones the JSON line parser maps onto a record (`timestamp`, `message`, `host`,
//! `app`, `level`) plus the protocol's own metadata (labels, attributes, trace ids) as nested
//! objects that become `fields.*`. The server stores those bytes as JSON lines, so a record
//! from Loki or OTLP is parsed, replayed and displayed exactly like one sent as NDJSON.
//!
//! Every protocol is decoded through one trait, [`ShipperDecoder`] ([`EsBulk`], [`LokiPush`],
//! [`OtlpLogs`]), which asks the caller's [`Budget`] for memory before it is held; the free
//! functions of each module are the steps those decoders take.
//!
//! Not here: HTTP, budgets, durability (the server's ingest path owns them), and the mapping
//! of JSON keys to record fields (`logsift-parse` owns it). Decoding never panics on any
//! input; the `fuzz/` targets hold it to that.

mod decoder;
pub mod es;
pub mod es_ids;
mod labels;
pub mod loki;
pub mod otlp;

pub use decoder::{Budget, EsBulk, LokiPush, OtlpLogs, ShipperDecoder, Unbounded};
pub use labels::parse_labels;

/// Why a request body could not be decoded; answered 400 (or 413 for [`DecodeError::TooLarge`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body is not a valid protobuf {message}: {detail}")]
    Protobuf {
        message: &'static str,
        detail: String,
    },
    #[error("body is not valid snappy (block format): {0}")]
    Snappy(String),
    #[error("{0}")]
    Invalid(String),
    /// A gRPC request body that is not one well-formed length-prefixed message.
    #[error("{0}")]
    Frame(String),
    #[error("body decodes to {decoded} bytes, over the limit of {limit} bytes")]
    TooLarge { decoded: usize, limit: usize },
    /// An Elasticsearch bulk body that is not a sequence of actions, with the exception type
    /// Elasticsearch names it by.
    #[error("{0}")]
    Bulk(es::BulkError),
}

impl DecodeError {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Json(_) => "bad_json",
            DecodeError::Protobuf { .. } => "bad_protobuf",
            DecodeError::Snappy(_) => "bad_snappy",
            DecodeError::Invalid(_) => "invalid",
            DecodeError::Frame(_) => "bad_grpc_frame",
            DecodeError::TooLarge { .. } => "too_large",
            // Elasticsearch's own type: shippers log it, and the metric keeps its name.
            DecodeError::Bulk(e) => e.error_type,
        }
    }
}

/// Offered the size of each record a decoder has made, before the record is kept and before
/// the next one is made; an error stops decoding and is returned as is. Labels and resource
/// attributes are copied into every record of their stream, so a push of a few hundred KB can
/// decode to gigabytes: the caller charges each record to its budget here (or refuses), so
/// that what a push makes the server hold is bounded before it is held. [`admit_all`] admits
/// everything.
pub type Admit<'a, E> = &'a mut dyn FnMut(usize) -> Result<(), E>;

/// An [`Admit`] for callers with no budget of their own (tests, fuzzing, tools).
pub fn admit_all(_: usize) -> Result<(), DecodeError> {
    Ok(())
}

/// About what parsing `body` as JSON into a `serde_json::Value` tree holds besides the body:
/// 64 bytes per value (the value itself, its place in an array or map, allocation slack) plus
/// the strings' bytes (at most the body's). Counted from the structural characters outside
/// strings, without parsing, so that the caller can charge the tree before it is built: a
/// 3 MB Loki push of 200 k tiny entries parses into some 40 MB of values.
pub fn json_tree_bytes(body: &[u8]) -> usize {
    const PER_VALUE: usize = 64;
    let mut values = 1usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' | b',' | b':' => values += 1,
                _ => {}
            }
        }
    }
    values.saturating_mul(PER_VALUE).saturating_add(body.len())
}

/// Reads a decompressing `reader` to its end into one buffer, calling `admit(capacity)` before
/// every growth of the buffer with the capacity it is about to take, so that the caller can
/// charge (or refuse) the memory of a decompression bomb before it is allocated, not after.
/// The buffer grows in steps of a quarter of its size (at least 64 KiB): geometric, so reading
/// stays linear, yet never holding much more than was admitted.
pub fn read_admitted<E>(
    mut reader: impl std::io::Read,
    mut admit: impl FnMut(usize) -> Result<(), E>,
    io_error: impl Fn(std::io::Error) -> E,
) -> Result<Vec<u8>, E> {
    const MIN_STEP: usize = 64 * 1024;
    let mut out: Vec<u8> = Vec::new();
    let mut filled = 0;
    loop {
        if filled == out.len() {
            let grown = out.len() + (out.len() / 4).max(MIN_STEP);
            admit(grown)?;
            out.reserve_exact(grown - out.len());
            out.resize(grown, 0);
        }
        match reader.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
    out.truncate(filled);
    Ok(out)
}

/// A record as a compact JSON object, the bytes that get stored.
fn to_line(value: &serde_json::Value) -> Vec<u8> {
    // Serializing a `Value` only fails for maps with non-string keys, which it cannot hold.
    serde_json::to_vec(value).unwrap_or_default()
}

/// `ns` as RFC 3339 with nanoseconds, or `None` for 0 (protobuf's "unset") and for instants
/// past what an i64 of nanoseconds holds (year 2262).
fn timestamp(ns: u64) -> Option<String> {
    let ns = i64::try_from(ns).ok().filter(|&ns| ns > 0)?;
    Some(logsift_core::time::format_rfc3339(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_tree_bytes_counts_values_outside_strings() {
        assert_eq!(json_tree_bytes(b"1"), 64 + 1);
        // Four values: the array and its three elements.
        assert_eq!(json_tree_bytes(b"[1,2,3]"), 4 * 64 + 7);
        // Commas, colons and brackets inside strings (escaped quotes included) are text.
        let text = br#"{"a":"x,\",[{:"}"#;
        assert_eq!(json_tree_bytes(text), 3 * 64 + text.len());
        // The real tree of many tiny entries stays under the estimate.
        let push = format!(
            r#"{{"streams":[{{"stream":{{"a":"b"}},"values":[{}]}}]}}"#,
            vec![r#"["1","x"]"#; 1000].join(",")
        );
        assert!(
            json_tree_bytes(push.as_bytes()) > 1000 * 3 * std::mem::size_of::<serde_json::Value>()
        );
    }

    #[test]
    fn read_admitted_asks_before_it_grows_and_stops_at_a_refusal() {
        let data = vec![7u8; 300_000];
        let mut asked = Vec::new();
        let out = read_admitted(
            &data[..],
            |cap| {
                asked.push(cap);
                Ok::<_, String>(())
            },
            |e| e.to_string(),
        )
        .unwrap();
        assert_eq!(out, data);
        assert!(asked.windows(2).all(|w| w[0] < w[1]), "{asked:?}");
        assert!(*asked.last().unwrap() < 2 * data.len(), "{asked:?}");

        // A bomb is refused at the first growth past the allowance: nothing beyond it is held.
        let mut largest = 0;
        let e = read_admitted(
            std::io::repeat(0u8),
            |cap| {
                largest = cap;
                if cap > 1 << 20 {
                    Err(format!("{cap} over"))
                } else {
                    Ok(())
                }
            },
            |e| e.to_string(),
        )
        .unwrap_err();
        assert!(e.ends_with("over"), "{e}");
        assert!(largest < (1 << 20) * 2);
    }
}
