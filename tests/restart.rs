//! What was accepted stays: after SIGTERM and after kill -9.

mod common;

use common::{send_tcp, Server};

#[test]
fn everything_is_still_there_after_sigterm_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The default indexing memory: enough for two tantivy indexing threads.
    let config = "[index]\nwriter_memory_bytes = 67108864\n";
    let s = Server::start_in(dir.path(), config);
    let (status, _) = s.ingest(
        "logs",
        "{\"msg\":\"over http before restart\"}\n",
        "application/x-ndjson",
    );
    assert_eq!(status, 200);
    let mut lines = String::new();
    for i in 0..1000 {
        lines.push_str(&format!(
            "<14>Nov 27 07:17:19 web-01 app[1]: tcp line {i} before restart\n"
        ));
    }
    send_tcp(s.syslog_tcp, lines.as_bytes());
    // No waiting for searchability: SIGTERM must drain and commit whatever was received.
    let status = s.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");

    let s = Server::start_in(dir.path(), config);
    s.wait_total("before AND restart", &[], 1001);
    let body = s.wait_total("\"tcp line 999\"", &[], 1);
    assert_eq!(body["hits"][0]["host"], "web-01");
    let status = s.stop();
    assert!(status.success());

    // A third start replays nothing twice.
    let s = Server::start_in(dir.path(), config);
    s.wait_total("before AND restart", &[], 1001);
}

#[test]
fn acknowledged_http_records_survive_kill_9_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), "[index]\ncommit_interval_ms = 60000\n");
    let mut acked = 0;
    for batch in 0..20 {
        let body: String = (0..50)
            .map(|i| format!("{{\"msg\":\"durable batch{batch} rec{i}\"}}\n"))
            .collect();
        let (status, answer) = s.ingest("logs", body, "application/x-ndjson");
        assert_eq!(status, 200, "{answer}");
        acked += answer["accepted"].as_u64().unwrap();
    }
    // With a one-minute commit interval nothing is committed yet: only the WAL has it.
    s.kill9();

    let s = Server::start_in(dir.path(), "");
    s.wait_total("durable", &[], acked);
    assert!(
        s.log().contains(&format!("replayed={acked}")),
        "the records came back through WAL replay:\n{}",
        s.log()
    );
    s.kill9();
    // Replayed records were committed with their WAL position: no duplicates on the next start.
    let s = Server::start_in(dir.path(), "");
    s.wait_total("durable", &[], acked);
    s.wait_total("batch19 AND rec49", &[], 1);
}
