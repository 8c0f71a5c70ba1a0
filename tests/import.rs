//! `logsift import` of the files a team already has: rotated syslog files (plain and gzip)
//! whose RFC 3164 timestamps carry no year, and a zstd NDJSON export with a broken and an
//! oversized line.

mod common;

use std::io::Write;
use std::process::Command;

use common::{run_tool, Server, BIN};

fn syslog_lines(host: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "<38>Jun  3 10:{:02}:{:02} {host} sshd[{i}]: imported line {i} from {host}\n",
                i / 60,
                i % 60
            )
        })
        .collect()
}

#[test]
fn import_detects_formats_dates_by_file_time_and_sums_up_rejects() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();

    let plain = dir.path().join("messages.1");
    std::fs::write(&plain, syslog_lines("alpha", 500)).unwrap();
    run_tool(
        "touch",
        &["-d", "2023-06-10 12:00:00", plain.to_str().unwrap()],
        None,
    );

    let gz = dir.path().join("messages.2.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(syslog_lines("beta", 300).as_bytes()).unwrap();
    enc.finish().unwrap();
    run_tool(
        "touch",
        &["-d", "2022-07-01 00:00:00", gz.to_str().unwrap()],
        None,
    );

    let mut ndjson = String::new();
    for i in 0..200 {
        ndjson.push_str(&format!(
            "{{\"@timestamp\":\"2024-01-02T03:04:{:02}Z\",\"host\":\"gamma\",\"log.level\":\"warn\",\"message\":\"imported json {i}\"}}\n",
            i % 60
        ));
    }
    ndjson.push_str("{\"message\": \"imported json broken\n");
    ndjson.push_str(&format!(
        "{{\"message\":\"imported {}\"}}\n",
        "x".repeat(300_000)
    ));
    let zst = dir.path().join("export.ndjson.zst");
    std::fs::write(&zst, zstd::encode_all(ndjson.as_bytes(), 3).unwrap()).unwrap();

    let out = Command::new(BIN)
        .args(["import", "--server", &s.http])
        .arg(&plain)
        .arg(&gz)
        .arg(&zst)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    // Exit 2: everything importable was imported, but some lines were rejected.
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("imported 1001 records from 3 files"), "{log}");
    assert!(
        log.contains("1 × rejected: line of N bytes exceeds max_line_bytes N"),
        "{log}"
    );
    assert!(
        log.contains("export.ndjson.zst:202:"),
        "the rejected line is named: {log}"
    );
    assert!(
        log.contains("1 × stored with a parse error") && log.contains("export.ndjson.zst:201:"),
        "{log}"
    );

    s.wait_total("imported", &[("limit", "0")], 1001);
    // RFC 3164 lines are dated in the year their file was written.
    s.wait_total(
        "host:alpha",
        &[
            ("start", "2023-06-03T00:00:00Z"),
            ("end", "2023-06-04T00:00:00Z"),
            ("limit", "0"),
        ],
        500,
    );
    s.wait_total(
        "host:beta",
        &[
            ("start", "2022-06-03T00:00:00Z"),
            ("end", "2022-06-04T00:00:00Z"),
            ("limit", "0"),
        ],
        300,
    );
    let (_, hit) = s.search("app:sshd AND \"imported line 42 from alpha\"", &[]);
    assert_eq!(
        hit["hits"][0]["timestamp"], "2023-06-03T10:00:42.000000000Z",
        "{hit}"
    );
    s.wait_total("host:gamma AND severity:warning", &[("limit", "0")], 200);
    s.wait_total("parse_error:*", &[("limit", "0")], 1);
}
