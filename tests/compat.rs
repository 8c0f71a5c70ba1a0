//! Existing shippers, unchanged, against the real binary: the Python `elasticsearch` client's
//! bulk helper, the OpenTelemetry Python SDK's OTLP/HTTP log exporter, a Loki push in
//! snappy-compressed protobuf built from Loki's `push.proto` messages, and one in JSON sent
//! by curl. Each checks that the records are searchable with the right fields.
//!
//! The Python clients live in a virtualenv that `tests/run-all.sh` installs (it exports
//! `LOGSIFT_PYTHON`); without it these tests fail and say how to install it.

mod common;

use common::{client, create_token, run_python, run_tool, Server};
use logsift_compat::loki::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use prost::Message;
use serde_json::{json, Value};

fn hit<'a>(body: &'a Value, message: &str) -> &'a Value {
    body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .find(|h| h["message"] == message)
        .unwrap_or_else(|| panic!("no hit with message {message:?} in {body}"))
}

const ES_SCRIPT: &str = r#"
import json, sys
from elasticsearch import Elasticsearch, helpers
es = Elasticsearch(sys.argv[1], http_compress=True, request_timeout=30)
info = es.info()
assert info["version"]["number"].startswith("8."), info
docs = [
    {"_index": "web-logs", "_id": "first",
     "_source": {"@timestamp": "2024-05-01T10:00:00.250Z", "message": "GET /cart 500",
                 "host": {"name": "web-1"}, "service": {"name": "shop"},
                 "log": {"level": "error"}, "http": {"response": {"status_code": 500}}}},
]
docs += [
    {"_index": "web-logs", "_op_type": "create",
     "_source": {"@timestamp": "2024-05-01T10:00:01Z", "message": f"bulk line {i}",
                 "host.name": "web-2", "log.level": "info", "labels": {"batch": "b7"}}}
    for i in range(250)
]
docs.append({"_op_type": "delete", "_index": "web-logs", "_id": "first"})
ok, errors = helpers.bulk(es, docs, chunk_size=100, raise_on_error=False, stats_only=False)
print(json.dumps({"ok": ok, "errors": errors}))
"#;

#[test]
fn elasticsearch_python_client_bulk_helper() {
    let s = Server::start();
    let out = run_python(ES_SCRIPT, &[&s.http]);
    let result: Value = serde_json::from_str(out.trim()).expect("script output");
    assert_eq!(result["ok"], 251, "{result}");
    // The delete is refused per item, as Elasticsearch refuses an action it cannot apply.
    let errors = result["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{result}");
    assert_eq!(errors[0]["delete"]["status"], 400);
    assert_eq!(
        errors[0]["delete"]["error"]["type"],
        "illegal_argument_exception"
    );

    s.wait_total("*", &[("index", "web-logs")], 251);
    let body = s.wait_total("host:web-1", &[("index", "web-logs")], 1);
    let first = hit(&body, "GET /cart 500");
    assert_eq!(first["host"], "web-1");
    assert_eq!(first["app"], "shop");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["index"], "web-logs");
    assert_eq!(first["timestamp"], "2024-05-01T10:00:00.250000000Z");
    assert_eq!(first["fields"]["http.response.status_code"], 500);
    assert!(first["source"].as_str().unwrap().starts_with("es-bulk "));
    s.wait_total(
        "host:web-2 AND severity:info AND fields.labels.batch:b7",
        &[],
        250,
    );
    s.wait_total("fields.http.response.status_code:500", &[], 1);
}

/// Bulk-sends events `argv[2]..argv[3]` with action `argv[4]` and ids derived from them, as
/// shippers that deduplicate do (`argv[5]` changes their text), and prints how many
/// succeeded and the answer of each refused one.
const ES_CREATE_SCRIPT: &str = r#"
import json, sys
from elasticsearch import Elasticsearch, helpers
es = Elasticsearch(sys.argv[1], request_timeout=30)
docs = [{"_index": "events", "_op_type": sys.argv[4], "_id": f"evt-{i}",
         "_source": {"message": f"event {i}{sys.argv[5]}", "host": {"name": "dedup-host"}}}
        for i in range(int(sys.argv[2]), int(sys.argv[3]))]
ok, errors = helpers.bulk(es, docs, chunk_size=20, raise_on_error=False, stats_only=False)
print(json.dumps({"ok": ok, "errors": [next(iter(e.values())) for e in errors]}))
"#;

fn es_send(s: &Server, from: u32, to: u32, op: &str, text: &str) -> (u64, Vec<Value>) {
    let out = run_python(
        ES_CREATE_SCRIPT,
        &[&s.http, &from.to_string(), &to.to_string(), op, text],
    );
    let result: Value = serde_json::from_str(out.trim()).expect("script output");
    let errors = result["errors"].as_array().unwrap().clone();
    (result["ok"].as_u64().unwrap(), errors)
}

#[test]
fn elasticsearch_create_with_a_stored_id_conflicts_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), "");
    assert_eq!(es_send(&s, 0, 50, "create", ""), (50, vec![]));
    // A retry that overlaps: the 25 stored ids conflict, as in Elasticsearch, the rest land.
    let (ok, errors) = es_send(&s, 25, 75, "create", "");
    assert_eq!(ok, 25);
    assert_eq!(errors.len(), 25);
    for e in &errors {
        assert_eq!(e["status"], 409, "{e}");
        assert_eq!(e["error"]["type"], "version_conflict_engine_exception");
        let id = e["_id"].as_str().unwrap();
        let n: u32 = id.strip_prefix("evt-").unwrap().parse().unwrap();
        assert!((25..50).contains(&n), "{id}");
        assert!(e["error"]["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!("[{id}]")));
    }
    // `index` of a known id: the same document again (a retry) succeeds without being stored
    // twice; another one is stored beside it (Elasticsearch would overwrite, logsift appends).
    // A later `create` of that id conflicts.
    assert_eq!(es_send(&s, 100, 101, "index", ""), (1, vec![]));
    assert_eq!(es_send(&s, 100, 101, "index", ""), (1, vec![]));
    assert_eq!(es_send(&s, 100, 101, "index", " v2"), (1, vec![]));
    assert_eq!(es_send(&s, 100, 101, "index", " v2"), (1, vec![]));
    let (ok, errors) = es_send(&s, 100, 101, "create", "");
    assert_eq!((ok, errors[0]["status"].clone()), (0, json!(409)));
    s.wait_total("host:dedup-host", &[("index", "events")], 77);
    s.wait_total("\"event 100 v2\"", &[("index", "events")], 1);
    assert_eq!(s.metric("logsift_es_bulk_conflicts_total"), 26.0);
    assert_eq!(s.metric("logsift_es_bulk_unchanged_total"), 2.0);

    // An id repeated within one bulk: the second create conflicts, as the actions apply in
    // order.
    let body = "{\"create\":{\"_index\":\"events\",\"_id\":\"twice\"}}\n{\"message\":\"twice 1\",\"host\":\"dedup-host\"}\n\
                {\"create\":{\"_index\":\"events\",\"_id\":\"twice\"}}\n{\"message\":\"twice 2\",\"host\":\"dedup-host\"}\n";
    let answer: Value = client()
        .post(format!("{}/_bulk", s.http))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["errors"], true, "{answer}");
    assert_eq!(answer["items"][0]["create"]["status"], 201, "{answer}");
    assert_eq!(answer["items"][1]["create"]["status"], 409, "{answer}");
    s.wait_total("host:dedup-host", &[("index", "events")], 78);

    // The ids outlive a kill -9: the whole retry conflicts, nothing is stored twice.
    s.kill9();
    let s = Server::start_in(dir.path(), "");
    let (ok, errors) = es_send(&s, 0, 75, "create", "");
    assert_eq!((ok, errors.len()), (0, 75));
    assert!(errors.iter().all(|e| e["status"] == 409));
    assert_eq!(es_send(&s, 75, 80, "create", ""), (5, vec![]));
    assert_eq!(es_send(&s, 100, 101, "index", " v2"), (1, vec![]));
    let body = s.wait_total("host:dedup-host", &[("index", "events")], 83);
    assert_eq!(body["total"], 83);
}

#[test]
fn elasticsearch_probes_and_bulk_errors() {
    let s = Server::start();
    let c = client();
    // What shippers ask before they send anything.
    let resp = c.get(format!("{}/", s.http)).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-elastic-product"], "Elasticsearch");
    let info: Value = resp.json().unwrap();
    assert!(info["version"]["number"]
        .as_str()
        .unwrap()
        .starts_with("8."));
    let resp = c.head(format!("{}/", s.http)).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-elastic-product"], "Elasticsearch");
    for path in [
        "/_license",
        "/_ilm/policy/filebeat",
        "/_index_template/filebeat-8.17.0",
        "/_template/logstash",
        "/_nodes/_all/http",
        "/_cluster/health",
    ] {
        let resp = c.get(format!("{}{path}", s.http)).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "GET {path}");
        assert_eq!(resp.headers()["x-elastic-product"], "Elasticsearch");
    }
    for path in ["/_ilm/policy/filebeat", "/_index_template/filebeat-8.17.0"] {
        let resp = c
            .put(format!("{}{path}", s.http))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .unwrap();
        let answer: Value = resp.json().unwrap();
        assert_eq!(answer["acknowledged"], true, "PUT {path}");
    }
    let license: Value = c
        .get(format!("{}/_license", s.http))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(license["license"]["status"], "active");

    // Per-item errors: the URL names the index, an action's `_index` wins over it, a bad
    // document or index name fails only its item.
    let body = concat!(
        "{\"index\":{}}\n{\"message\":\"to the url index\"}\n",
        "{\"create\":{\"_index\":\"filebeat-8.17.0\",\"_id\":\"x1\"}}\n{\"message\":\"to the action index\"}\n",
        "{\"index\":{}}\n{\"message\": broken\n",
        "{\"index\":{\"_index\":\"Upper\"}}\n{\"message\":\"bad index\"}\n",
        "{\"update\":{\"_id\":\"x1\"}}\n{\"doc\":{}}\n",
    );
    let resp = c
        .post(format!("{}/app-logs/_bulk", s.http))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-elastic-product"], "Elasticsearch");
    let answer: Value = resp.json().unwrap();
    assert_eq!(answer["errors"], true);
    assert!(answer["took"].is_u64());
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["index"]["_index"], "app-logs");
    assert_eq!(items[0]["index"]["status"], 201);
    assert_eq!(items[0]["index"]["result"], "created");
    assert!(items[0]["index"]["_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    assert_eq!(items[1]["create"]["_index"], "filebeat-8-17-0");
    assert_eq!(items[1]["create"]["_id"], "x1");
    assert_eq!(items[1]["create"]["status"], 201);
    assert_eq!(items[2]["index"]["status"], 400);
    assert_eq!(
        items[2]["index"]["error"]["type"],
        "document_parsing_exception"
    );
    assert_eq!(
        items[3]["index"]["error"]["type"],
        "invalid_index_name_exception"
    );
    assert_eq!(items[4]["update"]["status"], 400);
    s.wait_total("\"to the url index\"", &[("index", "app-logs")], 1);
    s.wait_total(
        "\"to the action index\"",
        &[("index", "filebeat-8-17-0")],
        1,
    );
    assert_eq!(s.metric("logsift_es_bulk_docs_total"), 2.0);
    assert_eq!(s.metric("logsift_es_bulk_item_errors_total"), 3.0);

    // A malformed action line fails the whole request, shaped as Elasticsearch shapes it.
    let resp = c
        .post(format!("{}/_bulk", s.http))
        .header("content-type", "application/x-ndjson")
        .body("{\"upsert\":{}}\n{}\n")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.headers()["x-elastic-product"], "Elasticsearch");
    let answer: Value = resp.json().unwrap();
    assert_eq!(answer["status"], 400);
    assert_eq!(answer["error"]["type"], "illegal_argument_exception");
    assert!(answer["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("Malformed action/metadata line [1]"));
    // zstd bodies, like gzip ones.
    let ndjson = b"{\"index\":{}}\n{\"message\":\"zstd compressed\"}\n";
    let resp = c
        .post(format!("{}/_bulk", s.http))
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "zstd")
        .body(zstd::encode_all(&ndjson[..], 1).unwrap())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    s.wait_total("\"zstd compressed\"", &[("index", "logs")], 1);
    let metrics = c
        .get(format!("{}/metrics", s.http))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(
            "logsift_http_bad_requests_total{api=\"es-bulk\",reason=\"illegal_argument_exception\"} 1"
        ),
        "{metrics}"
    );
}

const OTEL_SCRIPT: &str = r#"
import logging, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

# argv: endpoint, gzip|none, http|grpc
if sys.argv[3] == "grpc":
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    compression = grpc.Compression.Gzip if sys.argv[2] == "gzip" else grpc.Compression.NoCompression
    exporter = OTLPLogExporter(endpoint=sys.argv[1], insecure=True, compression=compression, timeout=30)
else:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    compression = Compression.Gzip if sys.argv[2] == "gzip" else Compression.NoCompression
    exporter = OTLPLogExporter(endpoint=sys.argv[1] + "/v1/logs", compression=compression, timeout=30)

trace.set_tracer_provider(TracerProvider())
provider = LoggerProvider(resource=Resource.create({"service.name": "checkout", "host.name": "otel-host-1", "deployment.environment": "staging"}))
provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
log = logging.getLogger("payments")
log.propagate = False
log.addHandler(handler)
log.setLevel(logging.DEBUG)
with trace.get_tracer("shop").start_as_current_span("charge") as span:
    log.error("card declined for order %s", "A-17", extra={"order.id": "A-17", "amount": 42})
    print(format(span.get_span_context().trace_id, "032x"), format(span.get_span_context().span_id, "016x"))
for i in range(20):
    log.warning("slow provider %d", i)
log.debug("debug detail")
provider.force_flush()
provider.shutdown()
"#;

/// Runs [`OTEL_SCRIPT`] once against `endpoint` and checks that its 22 records arrived with
/// the SDK's fields mapped, `before` being the number of records the server held.
fn otel_sdk_exports(s: &Server, endpoint: &str, compression: &str, protocol: &str, before: u64) {
    let ids = run_python(OTEL_SCRIPT, &[endpoint, compression, protocol]);
    let mut ids = ids.split_whitespace();
    let (trace_id, span_id) = (ids.next().unwrap(), ids.next().unwrap());

    s.wait_total("*", &[], before + 22);
    let body = s.wait_total(&format!("fields.trace_id:{trace_id}"), &[], 1);
    let h = hit(&body, "card declined for order A-17");
    assert_eq!(h["host"], "otel-host-1");
    assert_eq!(h["app"], "checkout");
    assert_eq!(h["severity"], "error");
    assert_eq!(h["fields"]["trace_id"], trace_id);
    assert_eq!(h["fields"]["span_id"], span_id);
    assert_eq!(h["fields"]["attributes.order.id"], "A-17");
    assert_eq!(h["fields"]["attributes.amount"], 42);
    assert_eq!(h["fields"]["resource.deployment.environment"], "staging");
    let listener = if protocol == "grpc" {
        "otlp-grpc "
    } else {
        "otlp "
    };
    assert!(h["source"].as_str().unwrap().starts_with(listener), "{h}");
    let runs = before / 22 + 1;
    s.wait_total("severity:warning AND app:checkout AND slow", &[], 20 * runs);
    s.wait_total("severity:debug AND host:otel-host-1", &[], runs);
}

#[test]
fn opentelemetry_python_sdk_exports_logs() {
    let s = Server::start();
    otel_sdk_exports(&s, &s.http, "gzip", "http", 0);
    // Uncompressed protobuf too, and JSON with the same mapping.
    otel_sdk_exports(&s, &s.http, "none", "http", 22);
    let json_body = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": "1714557600000000000",
            "severityNumber": 13,
            "body": {"stringValue": "from otlp json"},
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174"
        }]}]
    }]});
    let resp = client()
        .post(format!("{}/v1/logs", s.http))
        .header("content-type", "application/json")
        .body(json_body.to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.json::<Value>().unwrap(), json!({}));
    let body = s.wait_total("app:json-svc AND severity:warning", &[], 1);
    assert_eq!(
        body["hits"][0]["timestamp"],
        "2024-05-01T10:00:00.000000000Z"
    );
    assert_eq!(
        body["hits"][0]["fields"]["trace_id"],
        "5b8efff798038103d269b633813fc60c"
    );
}

#[test]
fn opentelemetry_python_sdk_exports_logs_over_grpc() {
    let s = Server::start();
    let endpoint = s.otlp_grpc.to_string();
    otel_sdk_exports(&s, &endpoint, "gzip", "grpc", 0);
    otel_sdk_exports(&s, &endpoint, "none", "grpc", 22);
}

/// Calls `Export` with grpcio's own stub (and raw bytes where a stub cannot send them) and
/// prints one JSON line per call: the gRPC status code the client saw.
const GRPC_STATUS_SCRIPT: &str = r#"
import json, sys, grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.common.v1 import common_pb2

addr, ingest, search = sys.argv[1], sys.argv[2], sys.argv[3]
channel = grpc.insecure_channel(addr)
stub = logs_service_pb2_grpc.LogsServiceStub(channel)
record = logs_pb2.LogRecord(body=common_pb2.AnyValue(string_value="raw grpc record"), severity_number=17)
request = logs_service_pb2.ExportLogsServiceRequest(
    resource_logs=[logs_pb2.ResourceLogs(scope_logs=[logs_pb2.ScopeLogs(log_records=[record])])])
def bearer(token):
    return [("authorization", "Bearer " + token)]
def call(label, fn):
    try:
        answer = fn()
        print(json.dumps({"call": label, "code": "OK", "answer": str(answer)}))
    except grpc.RpcError as e:
        print(json.dumps({"call": label, "code": e.code().name, "details": e.details()}))
call("no token", lambda: stub.Export(request, timeout=30))
call("search token", lambda: stub.Export(request, metadata=bearer(search), timeout=30))
call("ingest token", lambda: stub.Export(request, metadata=bearer(ingest), timeout=30))
call("other index", lambda: stub.Export(request, metadata=bearer(ingest) + [("x-logsift-index", "secret")], timeout=30))
raw = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
call("garbage", lambda: raw(b"\xff\xff\xff", metadata=bearer(ingest), timeout=30))
call("unknown method", lambda: channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")(b"", metadata=bearer(ingest), timeout=30))
"#;

#[test]
fn otlp_grpc_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ingest = create_token(&data, &["ingest"], &["logs"]);
    let search = create_token(&data, &["search"], &[]);
    let admin = create_token(&data, &["admin"], &[]);
    let s = Server::start_in(dir.path(), "");
    let out = run_python(
        GRPC_STATUS_SCRIPT,
        &[&s.otlp_grpc.to_string(), &ingest, &search],
    );
    let calls: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let code = |label: &str| -> &Value {
        let call = calls
            .iter()
            .find(|c| c["call"] == label)
            .unwrap_or_else(|| panic!("no {label:?} in {out}"));
        &call["code"]
    };
    assert_eq!(code("no token"), "UNAUTHENTICATED", "{out}");
    assert_eq!(code("search token"), "PERMISSION_DENIED", "{out}");
    assert_eq!(code("ingest token"), "OK", "{out}");
    assert_eq!(code("other index"), "PERMISSION_DENIED", "{out}");
    assert_eq!(code("garbage"), "INVALID_ARGUMENT", "{out}");
    assert_eq!(code("unknown method"), "UNIMPLEMENTED", "{out}");

    // Exactly the one accepted record is stored, and the refusals are counted.
    let found = s.wait_total_as(&admin, "*", &[], 1);
    assert_eq!(found["hits"][0]["message"], "raw grpc record");
    assert_eq!(found["hits"][0]["severity"], "error");
    let metrics = s.metrics_text(Some(&admin));
    assert!(
        metrics.contains(
            "logsift_http_bad_requests_total{api=\"otlp-grpc\",reason=\"bad_protobuf\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn loki_push_protobuf_and_json() {
    let s = Server::start();
    let request = PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{host="loki-host", service_name="billing", level="error", env="prod"}"#
                .into(),
            entries: (0..30)
                .map(|i| EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: 1_714_557_600 + i,
                        nanos: 500,
                    }),
                    line: format!("invoice {i} failed"),
                    structured_metadata: vec![LabelPairAdapter {
                        name: "trace_id".into(),
                        value: format!("t{i}"),
                    }],
                })
                .collect(),
            hash: 0,
        }],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap();
    let resp = client()
        .post(format!("{}/loki/api/v1/push", s.http))
        .header("content-type", "application/x-protobuf")
        .header("x-logsift-index", "loki")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let found = s.wait_total(
        "host:loki-host AND app:billing AND severity:error AND fields.labels.env:prod",
        &[("index", "loki")],
        30,
    );
    let h = hit(&found, "invoice 7 failed");
    assert_eq!(h["timestamp"], "2024-05-01T10:00:07.000000500Z");
    assert_eq!(h["fields"]["metadata.trace_id"], "t7");
    assert!(h["source"].as_str().unwrap().starts_with("loki "));

    let json_push = r#"{"streams":[{"stream":{"job":"varlogs","hostname":"curl-host","level":"warn"},"values":[["1714557600000000000","disk 91% full"],["1714557601000000000","disk 92% full",{"mount":"/var"}]]}]}"#;
    let out = run_tool(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
            &format!("{}/loki/api/v1/push", s.http),
        ],
        Some(json_push.as_bytes()),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "204");
    let found = s.wait_total(
        "host:curl-host AND app:varlogs AND severity:warning",
        &[],
        2,
    );
    assert_eq!(
        hit(&found, "disk 92% full")["fields"]["metadata.mount"],
        "/var"
    );
    s.wait_total("fields.metadata.mount:\"/var\"", &[], 1);
    assert_eq!(s.metric("logsift_loki_entries_total"), 32.0);
}

#[test]
fn malformed_compat_bodies_are_refused_and_counted() {
    let s = Server::start();
    let c = client();
    let post = |path: &str, content_type: &str, body: Vec<u8>| {
        let resp = c
            .post(format!("{}{path}", s.http))
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.bytes().unwrap().to_vec())
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();

    let (status, body) = post(
        "/loki/api/v1/push",
        "application/x-protobuf",
        b"\x05not snappy".to_vec(),
    );
    assert_eq!(status, 400, "{}", text(&body));
    assert!(text(&body).contains("snappy"), "{}", text(&body));
    let not_protobuf = snap::raw::Encoder::new()
        .compress_vec(b"\xff\xff\xff\xff")
        .unwrap();
    let (status, body) = post("/loki/api/v1/push", "application/x-protobuf", not_protobuf);
    assert_eq!(status, 400);
    assert!(text(&body).contains("protobuf"), "{}", text(&body));
    let (status, _) = post(
        "/loki/api/v1/push",
        "application/json",
        b"{\"streams\":".to_vec(),
    );
    assert_eq!(status, 400);
    let bad_labels = PushRequest {
        streams: vec![StreamAdapter {
            labels: "{host=unquoted}".into(),
            entries: vec![],
            hash: 0,
        }],
    };
    let (status, body) = post(
        "/loki/api/v1/push",
        "application/x-protobuf",
        snap::raw::Encoder::new()
            .compress_vec(&bad_labels.encode_to_vec())
            .unwrap(),
    );
    assert_eq!(status, 400);
    assert!(text(&body).contains("label"), "{}", text(&body));
    let (status, _) = post("/loki/api/v1/push", "text/plain", b"hello".to_vec());
    assert_eq!(status, 415);

    let (status, body) = post(
        "/v1/logs",
        "application/x-protobuf",
        b"\x0a\xff\xff\xff".to_vec(),
    );
    assert_eq!(status, 400);
    // A google.rpc.Status in protobuf: field 1 (code) = 3, INVALID_ARGUMENT.
    assert_eq!(&body[..2], b"\x08\x03", "{body:?}");
    let (status, body) = post(
        "/v1/logs",
        "application/json",
        b"{\"resourceLogs\":[{]".to_vec(),
    );
    assert_eq!(status, 400);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["code"], 3);
    assert!(answer["message"].as_str().unwrap().contains("JSON"));
    let (status, _) = post("/v1/logs", "text/plain", b"x".to_vec());
    assert_eq!(status, 415);

    let metrics = c
        .get(format!("{}/metrics", s.http))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        "logsift_http_bad_requests_total{api=\"loki\",reason=\"bad_snappy\"} 1",
        "logsift_http_bad_requests_total{api=\"loki\",reason=\"bad_protobuf\"} 1",
        "logsift_http_bad_requests_total{api=\"loki\",reason=\"bad_json\"} 1",
        "logsift_http_bad_requests_total{api=\"loki\",reason=\"invalid\"} 1",
        "logsift_http_bad_requests_total{api=\"loki\",reason=\"bad_content_type\"} 1",
        "logsift_http_bad_requests_total{api=\"otlp\",reason=\"bad_protobuf\"} 1",
        "logsift_http_bad_requests_total{api=\"otlp\",reason=\"bad_json\"} 1",
        "logsift_http_bad_requests_total{api=\"otlp\",reason=\"bad_content_type\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    // Nothing was stored, and the server still answers.
    let (status, body) = s.search("*", &[]);
    assert_eq!(status, 200);
    assert_eq!(body["total"], 0);
}

/// One `Export` call on a fresh channel; prints the gRPC status code and details as JSON.
const GRPC_ONE_CALL: &str = r#"
import json, sys, grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.common.v1 import common_pb2

channel = grpc.insecure_channel(sys.argv[1])
stub = logs_service_pb2_grpc.LogsServiceStub(channel)
record = logs_pb2.LogRecord(body=common_pb2.AnyValue(string_value="budgeted grpc record"))
request = logs_service_pb2.ExportLogsServiceRequest(
    resource_logs=[logs_pb2.ResourceLogs(scope_logs=[logs_pb2.ScopeLogs(log_records=[record])])])
try:
    stub.Export(request, timeout=30)
    print(json.dumps({"code": "OK"}))
except grpc.RpcError as e:
    print(json.dumps({"code": e.code().name, "details": e.details()}))
"#;

/// gRPC connections and each request running on them count against `http.max_connections`
/// with the HTTP ones (before, the gRPC listener had a budget of its own and 64 streams per
/// connection on top of it).
#[test]
fn grpc_connections_and_streams_share_the_http_connection_budget() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), "[http]\nmax_connections = 3\n");
    let addr = s.http.trim_start_matches("http://").to_string();
    let call = || -> Value {
        let out = run_python(GRPC_ONE_CALL, &[&s.otlp_grpc.to_string()]);
        serde_json::from_str(out.trim()).unwrap()
    };
    let settle = || std::thread::sleep(std::time::Duration::from_millis(300));
    let mut idle: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    settle();
    // Every place is taken by an idle HTTP connection: the gRPC connection is closed at once.
    let answer = call();
    assert_eq!(answer["code"], "UNAVAILABLE", "{answer}");
    // One place: the connection fits, its request does not.
    idle.pop();
    settle();
    let answer = call();
    assert_eq!(answer["code"], "UNAVAILABLE", "{answer}");
    assert!(
        answer["details"]
            .as_str()
            .unwrap_or_default()
            .contains("max_connections"),
        "{answer}"
    );
    // Two places: connection and request.
    idle.pop();
    settle();
    let answer = call();
    assert_eq!(answer["code"], "OK", "{answer}");
    drop(idle);
    settle();
    s.wait_total("budgeted", &[], 1);
    assert!(s.metric("logsift_http_connections_refused_total") >= 2.0);
}
