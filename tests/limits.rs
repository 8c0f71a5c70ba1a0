//! Nothing a sender does hurts the server: slow headers, slow bodies, floods of connections,
//! idle connections, oversized bodies and lines, hostile queries. Each test checks the limit
//! bites and that another client is served meanwhile.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{client, send_tcp, Server};

/// Whether the server closed `s` within `within` (a read returns end of stream or an error).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn health_ok(s: &Server) -> bool {
    client()
        .get(format!("{}/health/live", s.http))
        .timeout(Duration::from_secs(5))
        .send()
        .is_ok_and(|r| r.status() == 200)
}

fn http_addr(s: &Server) -> String {
    s.http.trim_start_matches("http://").to_string()
}

#[test]
fn slowloris_headers_are_cut_off_and_others_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), "[http]\nheader_read_timeout_ms = 1000\n");
    let mut slow = TcpStream::connect(http_addr(&s)).unwrap();
    slow.write_all(b"GET /api/v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let started = Instant::now();
    // Trickle a header byte every 100 ms: each arrives well within any per-read timeout.
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut cut = false;
    for i in 0..50 {
        if slow.write_all(b"X").is_err() {
            cut = true;
            break;
        }
        if i == 3 {
            assert!(health_ok(&s), "another client is served meanwhile");
        }
        let mut b = [0u8; 256];
        match slow.read(&mut b) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // Closed, reset, or answered (a 408): either way the connection is over.
            _ => {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the slow client was never disconnected");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "cut after {took:?}");
    assert!(health_ok(&s));
    // A connection that never sends a byte is closed too.
    let mut silent = TcpStream::connect(http_addr(&s)).unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(4)));
    assert!(s.metric("logsift_http_timeouts_total") >= 1.0);
}

#[test]
fn slow_bodies_are_cut_off_with_408() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), "[http]\nbody_read_timeout_ms = 1000\n");
    let mut slow = TcpStream::connect(http_addr(&s)).unwrap();
    slow.write_all(
        b"POST /api/v1/logs/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{\"msg\":",
    )
    .unwrap();
    // Keep the body trickling: the deadline is for the whole body, not for each read.
    let trickle = {
        let mut w = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..30 {
                if w.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = vec![0u8; 512];
    let n = slow
        .read(&mut answer)
        .expect("an answer before the body ends");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    trickle.join().unwrap();
    assert!(health_ok(&s));
}

#[test]
fn a_flood_of_connections_is_refused_beyond_the_limit_and_the_rest_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        tmp.path(),
        "[ingest]\nmax_connections_per_listener = 4\n[http]\nmax_connections = 4\n",
    );
    // Syslog TCP: four held connections, then a flood of twenty more.
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(s.syslog_tcp).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut flood: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(s.syslog_tcp).unwrap())
        .collect();
    for f in &mut flood {
        assert!(
            closed_within(f, Duration::from_secs(5)),
            "a connection over the limit was kept"
        );
    }
    // The held connections are still served.
    held[0]
        .write_all(b"<13>1 2024-05-01T10:00:00Z web-01 app - - - still served\n")
        .unwrap();
    s.wait_total("\"still served\"", &[], 1);
    // A slot freed is a slot usable again.
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    send_tcp(
        s.syslog_tcp,
        b"<13>1 2024-05-01T10:00:01Z web-01 app - - - after the flood\n",
    );
    s.wait_total("\"after the flood\"", &[], 1);
    drop(held);

    // HTTP: four idle connections take every slot; a fifth is closed at once. The searches
    // above used HTTP connections whose close the server may not have seen yet on a loaded
    // machine, taking a slot: then one of the four is refused, and the four are tried again.
    let mut idle: Vec<TcpStream> = Vec::new();
    for attempt in 0.. {
        idle = (0..4)
            .map(|_| TcpStream::connect(http_addr(&s)).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let refused = idle
            .iter_mut()
            .any(|c| closed_within(c, Duration::from_millis(100)));
        if !refused {
            break;
        }
        assert!(attempt < 20, "idle HTTP connections keep being refused");
        idle.clear();
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut extra = TcpStream::connect(http_addr(&s)).unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(5)));
    // An open one still answers.
    idle[0]
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    idle[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 256];
    let n = idle[0].read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.metric("logsift_tcp_connections_refused_total") >= 20.0);
    assert!(s.metric("logsift_http_connections_refused_total") >= 1.0);
}

#[test]
fn idle_tcp_connections_are_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), "[ingest]\nidle_timeout_ms = 500\n");
    let mut idle = TcpStream::connect(s.json_tcp).unwrap();
    // A partial line sent before going quiet is kept.
    idle.write_all(b"{\"msg\":\"half then quiet\"}").unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(5)));
    s.wait_total("\"half then quiet\"", &[], 1);
    assert!(s.metric("logsift_tcp_idle_closed_total") >= 1.0);
}

#[test]
fn oversized_bodies_and_lines_are_refused_while_others_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        tmp.path(),
        "[http]\nmax_body_bytes = 65536\n[ingest]\nmax_line_bytes = 1024\n",
    );
    let (st, body) = s.ingest("logs", vec![b'a'; 100_000], "text/plain");
    assert_eq!(st, 413, "{body}");
    let long = format!(
        "{{\"msg\":\"{}\"}}\n{{\"msg\":\"short one\"}}\n",
        "x".repeat(5000)
    );
    let (st, body) = s.ingest("logs", long, "application/x-ndjson");
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    let mut tcp = format!(
        "<13>1 2024-05-01T10:00:00Z h a - - - {}\n",
        "y".repeat(5000)
    )
    .into_bytes();
    tcp.extend_from_slice(b"<13>1 2024-05-01T10:00:00Z h a - - - after the long line\n");
    send_tcp(s.syslog_tcp, &tcp);
    s.wait_total("\"short one\" OR \"after the long line\"", &[], 2);
    assert!(s.metric("logsift_frame_errors_total") >= 1.0);
}

#[test]
fn hostile_queries_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), "[query]\nquery_timeout_ms = 2000\n");
    let body: String = (0..500)
        .map(|i| format!("{{\"msg\":\"word{i} common\",\"latency\":{i}}}\n"))
        .collect();
    assert_eq!(s.ingest("logs", body, "application/x-ndjson").0, 200);
    s.wait_total("common", &[], 500);
    let deep = format!("{}a{}", "(".repeat(5000), ")".repeat(5000));
    let many = vec!["a"; 5000].join(" OR ");
    let not_chain = format!("{}a", "NOT ".repeat(3000));
    let cases: Vec<(&str, String)> = vec![
        ("deep nesting", deep),
        ("too many clauses", many),
        ("a chain of NOT", not_chain),
        (
            "huge range",
            "fields.latency:[-99999999999999999999999 TO 99999999999999999999999]".into(),
        ),
        ("inverted range", "fields.latency:[900 TO 1]".into()),
        ("regex-like", "/(a+)+$/ OR message:/.*.*.*.*x/".into()),
        ("prefix of everything", "w* OR c* OR *".into()),
        ("unterminated phrase", "\"never ends".into()),
        ("control bytes", "\u{0}\u{1}\u{7f}".into()),
        ("huge time range", "common".into()),
    ];
    for (what, q) in cases {
        let started = Instant::now();
        let params: &[(&str, &str)] = if what == "huge time range" {
            &[("start", "0"), ("end", "99999999999")]
        } else {
            &[]
        };
        let (st, answer) = s.search(&q, params);
        let took = started.elapsed();
        assert!(st == 200 || st == 400, "{what}: {st} {answer}");
        if st == 400 {
            assert_eq!(answer["error"]["code"], "bad_query", "{what}: {answer}");
        }
        assert!(took < Duration::from_secs(5), "{what} took {took:?}");
    }
    // Answers whose size the client picks are capped before any memory is taken.
    for path in [
        "/api/v1/search?q=*&limit=1000000000",
        "/api/v1/histogram?q=*&interval=1s&start=0&end=99999999999",
        "/api/v1/context?id=1&before=100000000",
    ] {
        let started = Instant::now();
        let (st, answer) = s.get(path);
        assert_eq!(st, 400, "{path}: {answer}");
        assert!(started.elapsed() < Duration::from_secs(5), "{path}");
    }
    assert!(health_ok(&s));
}

/// Posts `body` to `/api/v1/{index}/ingest` with `Content-Encoding: encoding`.
fn post_encoded(
    s: &Server,
    index: &str,
    encoding: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let resp = client()
        .post(format!("{}/api/v1/{index}/ingest", s.http))
        .header("content-encoding", encoding)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or_default())
}

/// Issue #17: a 65 KB gzip body inflated to 64 MiB and one allocation per line, and was
/// accepted against an in-flight budget charged on wire bytes. What a body decompresses to,
/// and what its lines will hold, is charged before it is held.
#[test]
fn decompression_bombs_are_refused_at_the_inflight_budget_and_others_are_served() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), "[ingest]\ninflight_bytes = 2097152\n");
    let line = format!("{{\"msg\":\"bomb {}\"}}\n", "x".repeat(1000));
    // 16 MiB of lines, eight times the budget, in a few KB of gzip and of zstd.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..(16 << 20) / line.len() {
        gz.write_all(line.as_bytes()).unwrap();
    }
    let gzip_bomb = gz.finish().unwrap();
    assert!(gzip_bomb.len() < 100_000, "{}", gzip_bomb.len());
    let zstd_bomb = zstd::encode_all(line.repeat((16 << 20) / line.len()).as_bytes(), 3).unwrap();
    // A body well under the budget whose one-byte lines each cost an entry: 1 MiB of "a\n"
    // is half a million records.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&b"a\n".repeat(1 << 19)).unwrap();
    let tiny_lines = gz.finish().unwrap();

    for (what, encoding, body, needle) in [
        ("gzip bomb", "gzip", gzip_bomb, "the decompressed body"),
        ("zstd bomb", "zstd", zstd_bomb, "the decompressed body"),
        ("tiny lines", "gzip", tiny_lines, "the body's lines"),
    ] {
        let (status, answer) = post_encoded(&s, "logs", encoding, body);
        assert_eq!(status, 413, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], "over_budget", "{what}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle) && message.contains("ingest.inflight_bytes = 2097152"),
            "{what}: {message}"
        );
    }
    // A body declared larger than the whole budget is refused before it is read.
    let (status, answer) = s.ingest("logs", line.repeat(3 << 10), "application/x-ndjson");
    assert_eq!(status, 413, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the request body would hold"),
        "{message}"
    );
    assert_eq!(
        s.metric("logsift_http_bad_requests_total{api=\"ingest\",reason=\"over_budget\"}"),
        4.0
    );
    assert!(health_ok(&s));
    // Nothing of the bombs was stored, the budget was given back, and a normal compressed
    // request is served.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..200 {
        writeln!(gz, "{{\"msg\":\"after the bombs {i}\"}}").unwrap();
    }
    let (status, answer) = post_encoded(&s, "logs", "gzip", gz.finish().unwrap());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 200);
    s.wait_total("\"after the bombs\"", &[], 200);
    let (_, all) = s.search("bomb", &[]);
    assert_eq!(all["total"], 0, "{all}");
    s.wait_metric("logsift_ingest_inflight_bytes", 0.0);
}

/// Issue #17: a chunked body (no Content-Length) was reserved one line's worth and read whole,
/// up to `http.max_body_bytes`, before the rest of it was charged, so chunked uploads at once
/// held many times the in-flight budget. Each growth of the body is charged as it arrives.
#[test]
fn chunked_bodies_are_charged_as_they_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        tmp.path(),
        "[ingest]\ninflight_bytes = 2097152\nmax_line_bytes = 65536\n",
    );
    let line = format!("{{\"msg\":\"chunked {}\"}}\n", "y".repeat(200));
    let body = std::sync::Arc::new(line.repeat((24 << 20) / line.len()).into_bytes());
    let url = format!("{}/api/v1/chunked/ingest", s.http);
    let uploads: Vec<_> = (0..16)
        .map(|_| {
            let (body, url) = (body.clone(), url.clone());
            std::thread::spawn(move || {
                // A reader of unknown length: reqwest sends it chunked, with no Content-Length.
                let reader = std::io::Cursor::new(body.to_vec());
                client()
                    .post(url)
                    .header("content-type", "application/x-ndjson")
                    .body(reqwest::blocking::Body::new(reader))
                    .send()
                    .map(|r| r.status().as_u16())
                    // The server may answer and close before the upload is through.
                    .unwrap_or(0)
            })
        })
        .collect();
    for upload in uploads {
        let status = upload.join().unwrap();
        assert!([413, 429, 0].contains(&status), "{status}");
    }
    // Read whole, 16 uploads of 24 MiB held 384 MiB at once.
    let peak_mib = s.proc_status_kb("VmHWM") >> 10;
    assert!(peak_mib < 200, "peak RSS {peak_mib} MiB");
    s.wait_metric("logsift_ingest_inflight_bytes", 0.0);
    let (status, answer) = s.ingest("chunked", line.repeat(100), "application/x-ndjson");
    assert_eq!(status, 200, "{answer}");
    s.wait_total("chunked", &[("index", "chunked")], 100);
}

/// Issue #17: Loki stream labels and OTLP resource attributes are copied into every record
/// made from a push, so a JSON push of 200 KB decoded to 200 MB of records, and as much again
/// of WAL entries, before its size was looked at. Each record is charged as it is made: such
/// pushes are refused at the in-flight budget, the server's memory stays small, and a normal
/// push is served after them.
#[test]
fn pushes_whose_labels_repeat_into_every_record_are_refused_at_the_budget() {
    use serde_json::json;
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), "[ingest]\ninflight_bytes = 2097152\n");
    let big = "x".repeat(100_000);
    let ns = |i: usize| format!("{}", 1_714_557_600_000_000_000u64 + i as u64);
    let loki = json!({"streams": [{
        "stream": {"host": "h1", "big": big},
        "values": (0..2000).map(|i| json!([ns(i), format!("line {i}")])).collect::<Vec<_>>(),
    }]});
    let otlp = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "big", "value": {"stringValue": big}}]},
        "scopeLogs": [{"logRecords": (0..2000)
            .map(|i| json!({"timeUnixNano": ns(i), "body": {"stringValue": format!("line {i}")}}))
            .collect::<Vec<_>>()}],
    }]});
    let push = |path: &str, body: &serde_json::Value| {
        let resp = client()
            .post(format!("{}{path}", s.http))
            .header("content-type", "application/json")
            .header("x-logsift-index", "pushes")
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    };
    for (path, body) in [("/loki/api/v1/push", &loki), ("/v1/logs", &otlp)] {
        assert!(serde_json::to_vec(body).unwrap().len() < 300_000);
        let (status, text) = push(path, body);
        assert_eq!(status, 413, "{path}: {text}");
        assert!(
            text.contains("the decoded records")
                && text.contains("ingest.inflight_bytes = 2097152"),
            "{path}: {text}"
        );
    }
    // Decoded whole, each push held 2000 records of 100 KB and their entries: 400 MB.
    let peak_mib = s.proc_status_kb("VmHWM") >> 10;
    assert!(peak_mib < 200, "peak RSS {peak_mib} MiB");
    s.wait_metric("logsift_ingest_inflight_bytes", 0.0);
    let small = json!({"streams": [{
        "stream": {"host": "h2", "env": "prod"},
        "values": (0..50).map(|i| json!([ns(i), format!("after the pushes {i}")])).collect::<Vec<_>>(),
    }]});
    let (status, text) = push("/loki/api/v1/push", &small);
    assert_eq!(status, 204, "{text}");
    s.wait_total("\"after the pushes\"", &[("index", "pushes")], 50);
    let (_, all) = s.search("line", &[("index", "pushes")]);
    assert_eq!(all["total"], 0, "{all}");
}

/// Issue #17: any ingest token could create indexes without limit, and an index that could
/// not be created lost its acknowledged records. New indexes beyond `index.max_indexes` are
/// refused before anything is acknowledged; everything acknowledged survives a crash.
#[test]
fn indexes_beyond_max_indexes_are_refused_before_acknowledging() {
    let tmp = tempfile::tempdir().unwrap();
    let config = "[index]\nmax_indexes = 2\n";
    let s = Server::start_in(tmp.path(), config);
    let line = |i: &str| format!("{{\"msg\":\"limited {i}\"}}\n");
    assert_eq!(s.ingest("one", line("a"), "application/x-ndjson").0, 200);
    assert_eq!(s.ingest("two", line("b"), "application/x-ndjson").0, 200);
    let (st, answer) = s.ingest("three", line("c"), "application/x-ndjson");
    assert_eq!(st, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "too_many_indexes", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"three\"") && message.contains("index.max_indexes"),
        "{message}"
    );
    // The compatible routes are held to the same limit.
    let bulk = "{\"index\":{\"_index\":\"four\"}}\n{\"message\":\"limited d\"}\n";
    let resp = client()
        .post(format!("{}/_bulk", s.http))
        .header("content-type", "application/x-ndjson")
        .body(bulk)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // Existing indexes are still written.
    assert_eq!(s.ingest("one", line("e"), "application/x-ndjson").0, 200);
    assert_eq!(s.metric("logsift_ingest_index_limit_refused_total"), 2.0);
    let (_, listed) = s.get("/api/v1/indexes");
    let names: Vec<&str> = listed["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .filter(|n| !n.starts_with('_'))
        .collect();
    assert_eq!(names, ["one", "two"], "{listed}");
    // Everything acknowledged is there after a crash, and nothing refused is.
    let data_dir = s.data_dir.clone();
    s.kill9();
    let s = Server::start_with(tmp.path(), &data_dir, config);
    s.wait_total("limited", &[("index", "one")], 2);
    s.wait_total("limited", &[("index", "two")], 1);
    assert_eq!(s.search("limited", &[]).1["total"], 3);
}

/// The binary allocates with jemalloc, whose options `src/main.rs` sets at build time: a
/// background thread returns freed pages after a second (the e2e benchmark's idle RSS rests on
/// it). Were the options no longer read (a renamed symbol, another allocator), no such thread
/// would run.
#[test]
fn the_allocator_returns_freed_memory_from_a_background_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), "");
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", s.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect();
    assert!(
        threads.iter().any(|t| t == "jemalloc_bg_thd"),
        "threads: {threads:?}"
    );
}

/// A request that finds the in-flight budget full waits up to `http.admission_wait_ms` for
/// room (its body unread), and is admitted once room is made; with no wait it is refused at
/// once with 429 and `Retry-After`.
#[test]
fn a_request_waits_for_room_in_a_full_budget_before_it_is_refused() {
    /// A chunked body that takes most of the budget, holds it for a while, then breaks off
    /// (a whole one would not fit the budget once decoded, which takes more than its bytes).
    struct Holder {
        left: Vec<u8>,
    }
    impl Read for Holder {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.left.len() <= 1000 {
                std::thread::sleep(Duration::from_millis(1500));
                return Err(std::io::Error::other("the holder gives up"));
            }
            let n = buf.len().min(self.left.len() - 1000).min(64 * 1024);
            buf[..n].copy_from_slice(&self.left[..n]);
            self.left.drain(..n);
            Ok(n)
        }
    }
    for wait_ms in [5000, 0] {
        let tmp = tempfile::tempdir().unwrap();
        let s = Server::start_in(
            tmp.path(),
            &format!(
                "[ingest]\ninflight_bytes = 1048576\nmax_line_bytes = 65536\n\
                 [http]\nadmission_wait_ms = {wait_ms}\n"
            ),
        );
        let url = format!("{}/api/v1/waits/ingest", s.http);
        let holder = {
            let url = url.clone();
            let line = format!("{{\"msg\":\"holder {}\"}}\n", "h".repeat(200));
            let left = line.repeat(700_000 / line.len()).into_bytes();
            std::thread::spawn(move || {
                client()
                    .post(url)
                    .header("content-type", "application/x-ndjson")
                    .body(reqwest::blocking::Body::new(Holder { left }))
                    .send()
                    .map(|r| r.status().as_u16())
            })
        };
        common::wait_until(10, || {
            let held = s.metric("logsift_ingest_inflight_bytes");
            (held < 690_000.0).then(|| format!("{held} bytes in flight, not the holder's"))
        });
        // 380 KB do not fit beside the holder's 700, and fit the budget decoded.
        let line = format!("{{\"msg\":\"waiter {}\"}}\n", "w".repeat(200));
        let lines = 380_000 / line.len();
        let started = Instant::now();
        let resp = client()
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .body(line.repeat(lines))
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").is_some();
        let text = resp.text().unwrap_or_default();
        let _ = holder.join().unwrap();
        if wait_ms > 0 {
            assert_eq!(status, 200, "{text}");
            assert!(
                started.elapsed() >= Duration::from_millis(500),
                "it had to wait"
            );
            s.wait_total("waiter", &[("index", "waits")], lines as u64);
        } else {
            assert_eq!(status, 429, "{text}");
            assert!(retry_after, "{text}");
        }
    }
}
