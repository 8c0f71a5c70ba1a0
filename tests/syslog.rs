//! Syslog in over TCP and UDP, from real clients (`logger`, `nc`) and raw sockets.

mod common;

use common::{messages, run_tool, send_tcp, send_udp, Server};

#[test]
fn logger_over_tcp_and_udp_is_searchable() {
    let s = Server::start();
    let tcp_port = s.syslog_tcp.port().to_string();
    let udp_port = s.syslog_udp.port().to_string();
    run_tool(
        "logger",
        &[
            "--tcp",
            "-P",
            &tcp_port,
            "-n",
            "127.0.0.1",
            "-t",
            "backup",
            "-p",
            "daemon.err",
            "disk full on /var",
        ],
        None,
    );
    run_tool(
        "logger",
        &[
            "-d",
            "-P",
            &udp_port,
            "-n",
            "127.0.0.1",
            "-t",
            "ntpd",
            "clock step over udp",
        ],
        None,
    );
    run_tool(
        "logger",
        &[
            "--tcp",
            "--octet-count",
            "--rfc5424",
            "-P",
            &tcp_port,
            "-n",
            "127.0.0.1",
            "-t",
            "octets",
            "octet counted from logger",
        ],
        None,
    );

    let body = s.wait_total("disk", &[], 1);
    let hit = &body["hits"][0];
    assert_eq!(hit["message"], "disk full on /var");
    assert_eq!(hit["app"], "backup");
    assert_eq!(hit["severity"], "error");
    assert_eq!(hit["facility"], "daemon");
    assert!(hit["source"]
        .as_str()
        .unwrap()
        .starts_with("syslog-tcp 127.0.0.1:"));

    let body = s.wait_total("clock AND app:ntpd", &[], 1);
    assert!(body["hits"][0]["source"]
        .as_str()
        .unwrap()
        .starts_with("syslog-udp "));

    let body = s.wait_total("\"octet counted\"", &[], 1);
    let hit = &body["hits"][0];
    assert_eq!(hit["app"], "octets");
    assert_eq!(hit["fields"]["timeQuality.tzKnown"], "1");
}

#[test]
fn raw_rfc5424_and_rfc3164_lines_over_nc() {
    let s = Server::start();
    let lines = concat!(
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - BOM'su root' failed for lonvick on /dev/pts/8\n",
        "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.\n",
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] An application event log entry\n",
        "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8\n",
        "<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!\n",
    );
    run_tool(
        "nc",
        &["-N", "127.0.0.1", &s.syslog_tcp.port().to_string()],
        Some(lines.as_bytes()),
    );
    s.wait_total("*", &[], 5);

    let body = s.wait_total("host:mymachine.example.com AND msgid:ID47", &[], 2);
    assert_eq!(
        body["hits"][0]["app"], "evntslog",
        "newest first: 22:14:15.003 is the same instant, higher id wins"
    );
    assert_eq!(
        body["hits"][0]["fields"]["exampleSDID@32473.eventID"],
        "1011"
    );
    assert_eq!(
        body["hits"][0]["timestamp"],
        "2003-10-11T22:14:15.003000000Z"
    );

    let body = s.wait_total("do-nuts", &[], 1);
    let hit = &body["hits"][0];
    assert_eq!(hit["timestamp"], "2003-08-24T12:14:15.000003000Z");
    assert_eq!(hit["procid"], "8710");
    assert_eq!(hit["severity"], "notice");
    assert_eq!(hit["facility"], "local4");

    let body = s.wait_total("lonvick AND app:su AND host:mymachine", &[], 1);
    assert_eq!(body["hits"][0]["severity"], "crit");
    assert_eq!(body["hits"][0]["facility"], "auth");
    let body = s.wait_total("BFG", &[], 1);
    assert_eq!(body["hits"][0]["host"], "10.0.0.99");
}

#[test]
fn octet_counted_frames_keep_embedded_newlines_and_oversized_frames_keep_sync() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), "[ingest]\nmax_line_bytes = 1024\n");
    let framed = |msg: &str| format!("{} {}", msg.len(), msg);
    let first =
        "<14>1 2024-05-01T10:00:00Z web-01 app - - - first line\nsecond line of the same record";
    let big = format!(
        "<14>1 2024-05-01T10:00:01Z web-01 app - - - {}",
        "x".repeat(3000)
    );
    let last = "<14>1 2024-05-01T10:00:02Z web-01 app - - - after the giant";
    let stream = format!("{}{}{}", framed(first), framed(&big), framed(last));
    send_tcp(s.syslog_tcp, stream.as_bytes());

    let body = s.wait_total("host:web-01", &[("sort", "asc")], 2);
    assert_eq!(
        messages(&body),
        vec![
            "first line\nsecond line of the same record",
            "after the giant"
        ]
    );

    // Newline framing on another connection: the oversized line is dropped, its neighbours kept.
    let stream = format!("plain before\n{}\nplain after\n", "y".repeat(5000));
    send_tcp(s.syslog_tcp, stream.as_bytes());
    let body = s.wait_total("plain", &[("sort", "asc")], 2);
    assert_eq!(messages(&body), vec!["plain before", "plain after"]);
    let (_, metrics) = (
        0,
        common::client()
            .get(format!("{}/metrics", s.http))
            .send()
            .unwrap()
            .text()
            .unwrap(),
    );
    assert!(
        metrics.lines().any(|l| l == "logsift_frame_errors_total 2"),
        "{metrics}"
    );
}

#[test]
fn malformed_bytes_are_stored_verbatim_and_the_connection_survives() {
    let s = Server::start();
    let mut stream = Vec::new();
    stream.extend_from_slice(b"<999>1 not really syslog\n");
    stream.extend_from_slice(b"bytes \xff\xfe that are not utf-8 marker1\n");
    stream.extend_from_slice(b"\x00\x01\x02 control marker2\r\n");
    stream.extend_from_slice(b"<13>Nov 27 07:17:19 host app: still fine marker3\n");
    send_tcp(s.syslog_tcp, &stream);
    send_udp(s.syslog_udp, b"\xff\xff\xff marker4");
    let body = s.wait_total("marker1 OR marker2 OR marker3 OR marker4", &[], 4);
    let msgs = messages(&body);
    assert!(
        msgs.iter()
            .any(|m| m.contains("bytes \u{fffd}\u{fffd} that are not utf-8")),
        "{msgs:?}"
    );
    let body = s.wait_total("parse_error:*", &[], 1);
    assert_eq!(body["hits"][0]["raw"], "<999>1 not really syslog");
    // The server is still healthy and other clients are served.
    assert_eq!(s.get("/health/ready").0, 200);
}
