//! JSON lines over HTTP and TCP.

mod common;

use std::io::Write;

use common::{messages, send_tcp, Server};

#[test]
fn ndjson_over_http_is_durable_on_ack_and_reports_bad_lines() {
    let s = Server::start();
    let body = concat!(
        "{\"@timestamp\":\"2024-05-01T10:00:00Z\",\"level\":\"error\",\"message\":\"payment failed\",\"host\":\"web-01\",\"service\":\"checkout\",\"user\":{\"id\":42,\"plan\":\"pro\"},\"tags\":[\"a\",\"b\"]}\n",
        "{\"ts\":1714557601.5,\"lvl\":\"warn\",\"msg\":\"slow query\",\"hostname\":\"db-01\",\"duration_ms\":1234}\n",
        "\n",
        "{\"broken\": \n",
        "[1,2,3]\n",
    );
    let (status, answer) = s.ingest("logs", body, "application/x-ndjson");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 4);
    assert_eq!(answer["rejected"], 0);
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(
        errors
            .iter()
            .map(|e| e["line"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert!(errors.iter().all(|e| e["stored"] == true));

    let body = s.wait_total("*", &[], 4);
    let hit = body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["message"] == "payment failed")
        .unwrap()
        .clone();
    assert_eq!(hit["timestamp"], "2024-05-01T10:00:00.000000000Z");
    assert_eq!(hit["severity"], "error");
    assert_eq!(hit["host"], "web-01");
    assert_eq!(hit["app"], "checkout");
    assert_eq!(hit["fields"]["user.id"], 42);
    assert_eq!(hit["fields"]["tags"], serde_json::json!(["a", "b"]));
    assert!(hit["source"]
        .as_str()
        .unwrap()
        .starts_with("http 127.0.0.1:"));

    let body = s.wait_total("fields.user.plan:pro", &[], 1);
    assert_eq!(messages(&body), vec!["payment failed"]);
    let body = s.wait_total("slow AND host:db-01 AND severity:warning", &[], 1);
    assert_eq!(
        body["hits"][0]["timestamp"],
        "2024-05-01T10:00:01.500000000Z"
    );
    s.wait_total("parse_error:*", &[], 2);
}

#[test]
fn gzip_bodies_other_indexes_and_bad_requests() {
    let s = Server::start();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..500 {
        writeln!(
            gz,
            "{{\"msg\":\"compressed line {i}\",\"host\":\"gz-host\"}}"
        )
        .unwrap();
    }
    let compressed = gz.finish().unwrap();
    let resp = common::client()
        .post(format!("{}/api/v1/audit-trail/ingest", s.http))
        .header("content-encoding", "gzip")
        .header("content-type", "application/x-ndjson")
        .body(compressed)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    s.wait_total("host:gz-host", &[("index", "audit-trail")], 500);
    // The default search covers every user index.
    s.wait_total("compressed", &[], 500);

    let (status, err) = s.ingest("Bad..Name", "x\n", "text/plain");
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "bad_index");
    let (status, err) = s.ingest("_audit", "x\n", "text/plain");
    assert_eq!(status, 400, "built-in indexes are not writable: {err}");
    let resp = common::client()
        .post(format!("{}/api/v1/logs/ingest", s.http))
        .header("content-encoding", "gzip")
        .body("this is not gzip")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let (status, _) = s.search("*", &[("index", "nope")]);
    assert_eq!(status, 404);
}

#[test]
fn json_lines_over_tcp() {
    let s = Server::start();
    let mut lines = String::new();
    for i in 0..100 {
        lines.push_str(&format!("{{\"time\":\"2024-05-01T10:{:02}:00Z\",\"level\":\"info\",\"msg\":\"tcp json {i}\",\"host\":\"api-0{}\"}}\n", i % 60, i % 3));
    }
    lines.push_str("not json\n");
    send_tcp(s.json_tcp, lines.as_bytes());
    s.wait_total("tcp AND json", &[], 100);
    s.wait_total("host:api-01", &[], 33);
    let body = s.wait_total("parse_error:*", &[], 1);
    assert_eq!(messages(&body), vec!["not json"]);
}
