//! One shape for every shipper's decoder: [`ShipperDecoder`] turns a request body into what
//! the server stores, asking a [`Budget`] for the memory it is about to hold as it goes.
//!
//! The decoders differ in what they hold besides the body (a decompressed copy, a parsed tree,
//! a protobuf message, records that repeat their stream's labels) and in when they know its
//! size. Each one says so through the budget, before allocating, so that the caller can charge
//! or refuse every step without knowing the protocol; a server, a test or a tool drives all of
//! them the same way.

use crate::es::{self, BulkItem};
use crate::otlp::{self, GrpcEncoding};
use crate::{loki, DecodeError};

/// The memory a decoder holds for one request, as the caller counts it. All sizes are in
/// bytes and count what the request holds at once, the body included.
pub trait Budget {
    /// What stops decoding; decoders' own errors become one too.
    type Error: From<DecodeError>;

    /// What the request is charged for now (at least the body, as the caller charged it
    /// before decoding).
    fn covered(&self) -> usize;

    /// Charges the request for holding `total` bytes at once, before the decoder allocates
    /// what is new in them; `what` names that, for the refusal's message.
    fn cover(&mut self, total: usize, what: &'static str) -> Result<(), Self::Error>;

    /// Records follow, made while `held` bytes are held besides them; that may be more than
    /// [`Budget::covered`] (a message decoded since the last cover), and is charged with the
    /// first record.
    fn begin_records(&mut self, held: usize);

    /// Offered the size of each record before it is kept and before the next one is made.
    fn admit(&mut self, len: usize) -> Result<(), Self::Error>;
}

/// A [`Budget`] that grants everything: for callers with no budget of their own (tests,
/// fuzzing, tools), and for decoders that hold nothing worth charging.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unbounded;

impl Budget for Unbounded {
    type Error = DecodeError;

    fn covered(&self) -> usize {
        0
    }

    fn cover(&mut self, _total: usize, _what: &'static str) -> Result<(), DecodeError> {
        Ok(())
    }

    fn begin_records(&mut self, _held: usize) {}

    fn admit(&mut self, _len: usize) -> Result<(), DecodeError> {
        Ok(())
    }
}

/// A decoder of one shipper's request bodies (one protocol in one encoding, picked by the
/// caller from the request's Content-Type and the like).
pub trait ShipperDecoder {
    /// What a body decodes to; it may borrow from the body.
    type Output<'b>;

    /// Decodes `body`, which is already decompressed per its `Content-Encoding`. Malformed
    /// input is a [`DecodeError`] converted into the budget's error; a refusal of the budget
    /// stops decoding and is returned as is.
    fn decode<'b, B: Budget>(
        &self,
        body: &'b [u8],
        budget: &mut B,
    ) -> Result<Self::Output<'b>, B::Error>;
}

/// Elasticsearch `_bulk` bodies into their actions, in body order (see [`es::parse_bulk`]).
/// Documents are borrowed from the body and the actions are small, so nothing is charged;
/// the caller decides per action what to store.
#[derive(Debug, Clone, Copy, Default)]
pub struct EsBulk;

impl ShipperDecoder for EsBulk {
    type Output<'b> = Vec<BulkItem<'b>>;

    fn decode<'b, B: Budget>(
        &self,
        body: &'b [u8],
        _budget: &mut B,
    ) -> Result<Vec<BulkItem<'b>>, B::Error> {
        Ok(es::parse_bulk(body).map_err(DecodeError::Bulk)?)
    }
}

/// Loki push requests into JSON records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LokiPush {
    /// `application/json`.
    Json,
    /// Snappy-compressed protobuf (`application/x-protobuf`, Loki's default), whose
    /// decompressed size may be at most `max_decoded_bytes`.
    Protobuf { max_decoded_bytes: usize },
}

impl ShipperDecoder for LokiPush {
    type Output<'b> = Vec<Vec<u8>>;

    fn decode<B: Budget>(&self, body: &[u8], budget: &mut B) -> Result<Vec<Vec<u8>>, B::Error> {
        match *self {
            LokiPush::Json => {
                // What is charged stays held beside the streams parsed from the body (their
                // entries are parsed one at a time).
                let held = budget
                    .covered()
                    .saturating_add(loki::json_streams_bytes(body));
                budget.cover(held, "the parsed push")?;
                budget.begin_records(held);
                loki::decode_json(body, &mut |len| budget.admit(len))
            }
            LokiPush::Protobuf { max_decoded_bytes } => {
                let len = loki::snappy_len(body)?;
                // The body stays held while it is decompressed beside it, and the message
                // while it is decoded.
                let held = budget.covered().saturating_add(len);
                budget.cover(held, "the decompressed push")?;
                budget.begin_records(held.saturating_add(len));
                loki::decode_protobuf(body, max_decoded_bytes, &mut |len| budget.admit(len))
            }
        }
    }
}

/// OTLP log export requests into JSON records, one per `LogRecord`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpLogs {
    /// OTLP/HTTP, `application/x-protobuf`.
    Protobuf,
    /// OTLP/HTTP, `application/json` (OTLP's JSON mapping).
    Json,
    /// OTLP/gRPC: one length-prefixed message, compressed per `encoding` when its flag says
    /// so, of at most `max_message_bytes` once decompressed.
    Grpc {
        encoding: GrpcEncoding,
        max_message_bytes: usize,
    },
}

impl ShipperDecoder for OtlpLogs {
    type Output<'b> = Vec<Vec<u8>>;

    fn decode<B: Budget>(&self, body: &[u8], budget: &mut B) -> Result<Vec<Vec<u8>>, B::Error> {
        let request = match *self {
            OtlpLogs::Protobuf => otlp::decode_protobuf(body)?,
            OtlpLogs::Json => {
                // The body stays held beside the JSON tree parsed from it.
                let tree = crate::json_tree_bytes(body);
                budget.cover(budget.covered().saturating_add(tree), "the parsed request")?;
                otlp::decode_json(body)?
            }
            OtlpLogs::Grpc {
                encoding,
                max_message_bytes,
            } => {
                // The framed body stays held while its message is decompressed beside it.
                let wire = body.len();
                let message =
                    otlp::unframe_grpc_admitted(body, encoding, max_message_bytes, |capacity| {
                        budget.cover(
                            wire.saturating_add(capacity),
                            "the decompressed gRPC message",
                        )
                    })?;
                otlp::decode_protobuf(&message)?
            }
        };
        // What is charged (the body, or the gRPC message beside its frame) stays held beside
        // the request decoded from it.
        let held = budget
            .covered()
            .saturating_add(otlp::request_bytes(&request));
        budget.begin_records(held);
        otlp::records(&request, &mut |len| budget.admit(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::tests::framed as grpc_frame;
    use logsift_parse::{parse_json, ParseOptions};
    use prost::Message;

    /// Counts as a server's budget does, with a ceiling, and remembers what it was asked.
    #[derive(Debug, Default)]
    struct Recorder {
        limit: usize,
        covered: usize,
        covers: Vec<(usize, &'static str)>,
        held: Option<usize>,
        admitted: Vec<usize>,
    }

    impl Recorder {
        fn new(body: usize, limit: usize) -> Recorder {
            Recorder {
                limit,
                covered: body,
                ..Default::default()
            }
        }
    }

    impl Budget for Recorder {
        type Error = DecodeError;

        fn covered(&self) -> usize {
            self.covered
        }

        fn cover(&mut self, total: usize, what: &'static str) -> Result<(), DecodeError> {
            self.covers.push((total, what));
            if total > self.limit {
                return Err(DecodeError::Invalid(format!("{what}: {total} over budget")));
            }
            self.covered = total;
            Ok(())
        }

        fn begin_records(&mut self, held: usize) {
            self.held = Some(held);
        }

        fn admit(&mut self, len: usize) -> Result<(), DecodeError> {
            self.admitted.push(len);
            let total = self.held.expect("records begun") + self.admitted.iter().sum::<usize>();
            if total > self.limit {
                return Err(DecodeError::Invalid(format!(
                    "records: {total} over budget"
                )));
            }
            Ok(())
        }
    }

    fn messages(records: &[Vec<u8>]) -> Vec<String> {
        records
            .iter()
            .map(|r| {
                let parsed = parse_json(r, &ParseOptions::default());
                assert_eq!(parsed.parse_error, None, "{}", String::from_utf8_lossy(r));
                parsed.message.to_string()
            })
            .collect()
    }

    /// Drives any decoder the way the server does, with an ample budget.
    fn decode<D: ShipperDecoder>(decoder: &D, body: &[u8]) -> Result<usize, DecodeError>
    where
        for<'b> D::Output<'b>: AsRef<[Vec<u8>]>,
    {
        let mut budget = Recorder::new(body.len(), usize::MAX);
        decoder
            .decode(body, &mut budget)
            .map(|out| out.as_ref().len())
    }

    #[test]
    fn es_bulk_through_the_trait() {
        let body = b"{\"index\":{\"_index\":\"web\",\"_id\":\"1\"}}\n{\"msg\":\"a\"}\n{\"delete\":{\"_id\":\"2\"}}\n";
        let items = EsBulk.decode(body, &mut Unbounded).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].op, es::OpType::Index);
        assert_eq!(items[0].index.as_deref(), Some("web"));
        assert_eq!(items[0].doc, Some(&b"{\"msg\":\"a\"}"[..]));
        assert_eq!(items[1].op, es::OpType::Delete);

        // Malformed: refused whole, with the exception type Elasticsearch gives.
        let err = EsBulk
            .decode(b"{\"index\":{}}", &mut Unbounded)
            .unwrap_err();
        assert_eq!(err.reason(), "illegal_argument_exception");
        assert!(
            err.to_string().contains("must be terminated by a newline"),
            "{err}"
        );
        let err = EsBulk
            .decode(b"not json\n{}\n", &mut Unbounded)
            .unwrap_err();
        assert_eq!(err.reason(), "illegal_argument_exception");
        assert!(
            err.to_string()
                .starts_with("Malformed action/metadata line [1]"),
            "{err}"
        );
        let err = EsBulk.decode(b"\n\n", &mut Unbounded).unwrap_err();
        assert_eq!(err.reason(), "action_request_validation_exception");
    }

    #[test]
    fn loki_json_through_the_trait() {
        let body = br#"{"streams":[{"stream":{"app":"shop"},"values":[["1714557600000000000","one"],["1714557601000000000","two"]]}]}"#;
        let mut budget = Recorder::new(body.len(), usize::MAX);
        let records = LokiPush::Json.decode(body, &mut budget).unwrap();
        assert_eq!(messages(&records), ["one", "two"]);
        // The parsed streams are charged before parsing, and the records on top of them.
        let held = body.len() + loki::json_streams_bytes(body);
        assert_eq!(budget.covers, [(held, "the parsed push")]);
        assert_eq!(budget.held, Some(held));
        assert_eq!(
            budget.admitted,
            records.iter().map(Vec::len).collect::<Vec<_>>()
        );

        let err = decode(&LokiPush::Json, b"{\"streams\":").unwrap_err();
        assert!(matches!(err, DecodeError::Json(_)), "{err:?}");
        assert_eq!(err.reason(), "bad_json");
        let err = decode(&LokiPush::Json, br#"{"streams":[{"stream":{}}]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Loki push: a stream has no \"values\" array"
        );
    }

    fn loki_protobuf(lines: &[&str]) -> Vec<u8> {
        let request = loki::PushRequest {
            streams: vec![loki::StreamAdapter {
                labels: r#"{job="varlogs", host="web-1"}"#.into(),
                entries: lines
                    .iter()
                    .map(|line| loki::EntryAdapter {
                        timestamp: Some(loki::Timestamp {
                            seconds: 1_714_557_600,
                            nanos: 0,
                        }),
                        line: line.to_string(),
                        structured_metadata: Vec::new(),
                    })
                    .collect(),
                hash: 0,
            }],
        };
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap()
    }

    #[test]
    fn loki_protobuf_through_the_trait() {
        let body = loki_protobuf(&["one", "two", "three"]);
        let len = loki::snappy_len(&body).unwrap();
        let decoder = LokiPush::Protobuf {
            max_decoded_bytes: 1 << 20,
        };
        let mut budget = Recorder::new(body.len(), usize::MAX);
        let records = decoder.decode(&body, &mut budget).unwrap();
        assert_eq!(messages(&records), ["one", "two", "three"]);
        // The decompressed copy is charged before it is made; the decoded message is held
        // beside the records.
        assert_eq!(budget.covers, [(body.len() + len, "the decompressed push")]);
        assert_eq!(budget.held, Some(body.len() + 2 * len));

        // A budget too small for the decompressed push stops before anything is decoded.
        let mut small = Recorder::new(body.len(), body.len() + len - 1);
        let err = decoder.decode(&body, &mut small).unwrap_err();
        assert!(
            err.to_string().starts_with("the decompressed push"),
            "{err}"
        );
        assert!(small.admitted.is_empty());

        // Malformed: not snappy; snappy but not a push; larger than allowed.
        let err = decode(&decoder, b"\xff\xff\xff\xff\xff\xff").unwrap_err();
        assert_eq!(err.reason(), "bad_snappy");
        let not_a_push = snap::raw::Encoder::new()
            .compress_vec(b"\x0a\x05\x0a")
            .unwrap();
        let err = decode(&decoder, &not_a_push).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("body is not a valid protobuf logproto.PushRequest"),
            "{err}"
        );
        let tight = LokiPush::Protobuf {
            max_decoded_bytes: len - 1,
        };
        assert_eq!(
            decode(&tight, &body).unwrap_err(),
            DecodeError::TooLarge {
                decoded: len,
                limit: len - 1
            }
        );
    }

    fn otlp_request(lines: &[&str]) -> otlp::ExportLogsServiceRequest {
        let body = |s: &str| otlp::AnyValue {
            value: Some(otlp::any_value::Value::StringValue(s.to_string())),
        };
        otlp::ExportLogsServiceRequest {
            resource_logs: vec![otlp::ResourceLogs {
                resource: None,
                scope_logs: vec![otlp::ScopeLogs {
                    scope: None,
                    log_records: lines
                        .iter()
                        .map(|l| otlp::LogRecord {
                            time_unix_nano: 1_714_557_600_000_000_000,
                            body: Some(body(l)),
                            ..Default::default()
                        })
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn otlp_through_the_trait_in_each_encoding() {
        let request = otlp_request(&["one", "two"]);
        let protobuf = request.encode_to_vec();
        let json = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1714557600000000000","body":{"stringValue":"one"}},{"timeUnixNano":"1714557600000000000","body":{"stringValue":"two"}}]}]}]}"#;
        let grpc = OtlpLogs::Grpc {
            encoding: GrpcEncoding::Zstd,
            max_message_bytes: 1 << 20,
        };
        let zstd_framed = grpc_frame(1, &zstd::encode_all(&protobuf[..], 3).unwrap());
        for (decoder, body) in [
            (OtlpLogs::Protobuf, &protobuf[..]),
            (OtlpLogs::Json, &json[..]),
            (grpc, &zstd_framed[..]),
        ] {
            let mut budget = Recorder::new(body.len(), usize::MAX);
            let records = decoder.decode(body, &mut budget).unwrap();
            assert_eq!(messages(&records), ["one", "two"], "{decoder:?}");
            // The decoded request is held beside the records.
            assert_eq!(
                budget.held,
                Some(budget.covered + otlp::request_bytes(&request)),
                "{decoder:?}"
            );
        }
        let mut budget = Recorder::new(json.len(), usize::MAX);
        OtlpLogs::Json.decode(json, &mut budget).unwrap();
        assert_eq!(
            budget.covers,
            [(
                json.len() + crate::json_tree_bytes(json),
                "the parsed request"
            )]
        );

        // Malformed, in each encoding.
        let err = decode(&OtlpLogs::Protobuf, b"\x0a\x05\x0a").unwrap_err();
        assert_eq!(err.reason(), "bad_protobuf");
        assert!(
            err.to_string()
                .starts_with("body is not a valid protobuf ExportLogsServiceRequest"),
            "{err}"
        );
        let err = decode(&OtlpLogs::Json, b"{]").unwrap_err();
        assert_eq!(err.reason(), "bad_json");
        let err = decode(&OtlpLogs::Json, br#"{"resourceLogs":{}}"#).unwrap_err();
        assert_eq!(err.reason(), "invalid");
        let err = decode(&grpc, b"\x00\x00").unwrap_err();
        assert_eq!(err.reason(), "bad_grpc_frame");
        assert!(err.to_string().contains("5-byte message prefix"), "{err}");
        let err = decode(&grpc, &grpc_frame(0, b"\x0a\x05\x0a")).unwrap_err();
        assert_eq!(err.reason(), "bad_protobuf");
    }

    /// A gRPC message that decompresses far beyond the budget is refused while it grows, and
    /// records that do not fit stop decoding at the first one over.
    #[test]
    fn otlp_refusals_stop_decoding() {
        let bomb = zstd::encode_all(&vec![0u8; 8 << 20][..], 19).unwrap();
        let body = grpc_frame(1, &bomb);
        let decoder = OtlpLogs::Grpc {
            encoding: GrpcEncoding::Zstd,
            max_message_bytes: 64 << 20,
        };
        let mut budget = Recorder::new(body.len(), 1 << 20);
        let err = decoder.decode(&body, &mut budget).unwrap_err();
        assert!(
            err.to_string().starts_with("the decompressed gRPC message"),
            "{err}"
        );
        assert!(budget.covers.iter().all(|&(total, _)| total < 2 << 20));

        let request = otlp_request(&["x"; 100]);
        let body = request.encode_to_vec();
        let held = body.len() + otlp::request_bytes(&request);
        let mut budget = Recorder::new(body.len(), held + 10);
        let err = OtlpLogs::Protobuf.decode(&body, &mut budget).unwrap_err();
        assert!(err.to_string().starts_with("records:"), "{err}");
        assert_eq!(budget.admitted.len(), 1);
    }
}
