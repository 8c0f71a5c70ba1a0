//! The server's own log (#21): JSON lines for log shippers with `log_format = "json"`, and no
//! ANSI colour codes in the text log when stderr is not a terminal.

mod common;

use common::Server;

#[test]
fn the_server_log_is_json_lines_when_asked_and_plain_text_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), "log_format = \"json\"");
    let (status, _) = s.ingest("logs", "{\"message\":\"hello\"}\n", "application/x-ndjson");
    assert_eq!(status, 200);
    assert_eq!(s.stop().code(), Some(0));
    let log = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".log"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .unwrap();
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{log}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_string());
    }
    assert!(
        messages
            .iter()
            .any(|m| m.contains("opened index") || m.contains("listening")),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "{log}");

    // Text, written to a file: no escape codes, although NO_COLOR is not set.
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), "");
    let (status, _) = s.ingest("logs", "{\"message\":\"hello\"}\n", "application/x-ndjson");
    assert_eq!(status, 200);
    let text = s.log();
    assert_eq!(s.stop().code(), Some(0));
    assert!(!text.is_empty());
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file:\n{text}"
    );
    assert!(text.lines().all(|l| !l.starts_with('{')), "{text}");
}
