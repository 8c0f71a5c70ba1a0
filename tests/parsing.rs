//! Parsing settings and parse-error accounting, seen from outside.

mod common;

use common::{client, send_tcp, Server};

#[test]
fn logfmt_extraction_is_per_index() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), "[indexes.app]\nlogfmt = true\n");
    let line = "<14>1 2024-05-01T10:00:00Z web-01 api 42 - - request done user=alice status=500 path=\"/v1/pay now\"\n";
    for index in ["app", "logs"] {
        let (status, body) = s.ingest(index, line, "text/plain");
        assert_eq!(status, 200, "{body}");
    }
    s.wait_total("request", &[], 2);
    let body = s.wait_total("fields.user:alice", &[], 1);
    let hit = &body["hits"][0];
    assert_eq!(hit["index"], "app");
    assert_eq!(hit["fields"]["status"], "500");
    assert_eq!(hit["fields"]["path"], "/v1/pay now");
    assert_eq!(
        s.search("fields.user:alice", &[("index", "logs")]).1["total"],
        0
    );
}

#[test]
fn parse_errors_are_counted_per_listener_and_reason() {
    let s = Server::start();
    send_tcp(s.json_tcp, b"{\"broken\": \n[1,2]\n{\"fine\":true}\n");
    let (status, _) = s.ingest("logs", "{\"also broken\"\n", "application/x-ndjson");
    assert_eq!(status, 200);
    send_tcp(s.syslog_tcp, b"<999>1 bad pri\n");
    s.wait_total("parse_error:*", &[], 4);
    let metrics = client()
        .get(format!("{}/metrics", s.http))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for want in [
        "logsift_parse_errors_total{listener=\"json-tcp\",reason=\"json_syntax\"} 1",
        "logsift_parse_errors_total{listener=\"json-tcp\",reason=\"json_not_object\"} 1",
        "logsift_parse_errors_total{listener=\"http\",reason=\"json_syntax\"} 1",
        "logsift_parse_errors_total{listener=\"syslog-tcp\",reason=\"syslog_pri\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == want),
            "missing {want:?} in\n{metrics}"
        );
    }
}
