//! Search semantics checked against a model: a generated data set with known timestamps, and
//! the expected hits computed by filtering the same list in plain Rust.

mod common;

use common::{messages, Server, BIN};
use serde_json::Value;

struct Rec {
    minute: u32,
    host: &'static str,
    level: &'static str,
    message: String,
}

const HOSTS: [&str; 3] = ["web-01", "web-02", "db-01"];
const LEVELS: [&str; 4] = ["info", "info", "warning", "error"];

fn dataset() -> Vec<Rec> {
    (0..240)
        .map(|i: u32| {
            let host = HOSTS[(i % 7 % 3) as usize];
            let level = LEVELS[(i % 4) as usize];
            let message = match i % 5 {
                0 => format!("disk full on /var/lib/data{i}"),
                1 => format!("connection reset by peer id{i}"),
                2 => format!("request served in {i} ms"),
                3 => format!("disk quota exceeded for user{i}"),
                _ => format!("cache miss key{i}"),
            };
            Rec {
                minute: i,
                host,
                level,
                message,
            }
        })
        .collect()
}

fn ts(minute: u32) -> String {
    format!("2024-05-01T{:02}:{:02}:00Z", 8 + minute / 60, minute % 60)
}

fn seeded() -> (Server, Vec<Rec>) {
    let s = Server::start();
    let data = dataset();
    let mut body = String::new();
    // Shuffled arrival order: the answer must still be sorted by timestamp.
    for r in data.iter().rev() {
        body.push_str(&serde_json::json!({"timestamp": ts(r.minute), "host": r.host, "level": r.level, "message": r.message}).to_string());
        body.push('\n');
    }
    let (status, answer) = s.ingest("logs", body, "application/x-ndjson");
    assert_eq!(status, 200, "{answer}");
    s.wait_total("*", &[], data.len() as u64);
    (s, data)
}

fn expect(data: &[Rec], pred: impl Fn(&Rec) -> bool) -> Vec<String> {
    let mut hits: Vec<&Rec> = data.iter().filter(|r| pred(r)).collect();
    hits.sort_by_key(|r| std::cmp::Reverse(r.minute));
    hits.into_iter().map(|r| r.message.clone()).collect()
}

fn all_pages(s: &Server, q: &str, params: &[(&str, &str)], page: usize) -> (u64, Vec<String>) {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let limit = page.to_string();
    let mut total = None;
    loop {
        let mut p: Vec<(&str, &str)> = params.to_vec();
        p.push(("limit", &limit));
        if let Some(c) = &cursor {
            p.push(("cursor", c));
        }
        let (status, body) = s.search(q, &p);
        assert_eq!(status, 200, "{body}");
        let t = body["total"].as_u64().unwrap();
        assert_eq!(*total.get_or_insert(t), t, "total is stable across pages");
        out.extend(messages(&body));
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (t, out),
        }
        assert!(out.len() <= t as usize, "pagination must end");
    }
}

#[test]
fn words_phrases_fields_and_time_ranges_match_the_model() {
    let (s, data) = seeded();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            "disk",
            vec![],
            expect(&data, |r| r.message.contains("disk")),
        ),
        (
            "\"disk full\"",
            vec![],
            expect(&data, |r| r.message.starts_with("disk full")),
        ),
        (
            "disk AND host:web-01",
            vec![],
            expect(&data, |r| r.message.contains("disk") && r.host == "web-01"),
        ),
        (
            "disk -quota",
            vec![],
            expect(&data, |r| r.message.starts_with("disk full")),
        ),
        (
            "severity:error",
            vec![],
            expect(&data, |r| r.level == "error"),
        ),
        (
            "host:db-01 OR host:web-02",
            vec![],
            expect(&data, |r| r.host != "web-01"),
        ),
        (
            "(reset OR cache) AND severity:warning",
            vec![],
            expect(&data, |r| {
                (r.message.contains("reset") || r.message.contains("cache")) && r.level == "warning"
            }),
        ),
        (
            "*",
            vec![
                ("start", "2024-05-01T09:00:00Z"),
                ("end", "2024-05-01T09:30:00Z"),
            ],
            expect(&data, |r| (60..90).contains(&r.minute)),
        ),
        (
            "disk",
            vec![("start", "2024-05-01T10:00:00Z")],
            expect(&data, |r| r.minute >= 120 && r.message.contains("disk")),
        ),
        ("nothing-matches-this", vec![], vec![]),
    ];
    for (q, params, want) in cases {
        let (status, body) = s.search(q, &[params.as_slice(), &[("limit", "1000")]].concat());
        assert_eq!(status, 200, "{q}: {body}");
        assert_eq!(
            body["total"].as_u64().unwrap() as usize,
            want.len(),
            "total of {q} {params:?}"
        );
        assert_eq!(messages(&body), want, "hits of {q} {params:?}");
    }
}

#[test]
fn limits_sorting_and_cursor_pages_are_exact() {
    let (s, data) = seeded();
    let (status, body) = s.search("disk", &[("limit", "5")]);
    assert_eq!(status, 200);
    let want = expect(&data, |r| r.message.contains("disk"));
    assert_eq!(body["total"].as_u64().unwrap() as usize, want.len());
    assert_eq!(messages(&body), want[..5]);

    let (status, body) = s.search("disk", &[("limit", "3"), ("sort", "asc")]);
    assert_eq!(status, 200);
    let mut asc = want.clone();
    asc.reverse();
    assert_eq!(messages(&body), asc[..3]);

    let (total, paged) = all_pages(&s, "*", &[], 7);
    assert_eq!(total as usize, data.len());
    assert_eq!(
        paged,
        expect(&data, |_| true),
        "pages concatenate to the full answer, no gaps or repeats"
    );
    let (_, paged) = all_pages(&s, "severity:info", &[("sort", "asc")], 11);
    let mut want = expect(&data, |r| r.level == "info");
    want.reverse();
    assert_eq!(paged, want);
}

#[test]
fn pages_are_exact_across_many_sealed_segments_searched_in_parallel() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), "[index]\nseal_docs = 60\n");
    let data = dataset();
    // Every record twice (equal timestamps, told apart by id), in an arrival order that
    // scatters times, so that segments overlap in time.
    let arrival: Vec<&Rec> = (0..2 * data.len())
        .map(|k| &data[(k * 97) % data.len()])
        .collect();
    let mut sent = 0u64;
    for batch in arrival.chunks(60) {
        let mut body = String::new();
        for r in batch {
            body.push_str(&serde_json::json!({"timestamp": ts(r.minute), "host": r.host, "level": r.level, "message": r.message}).to_string());
            body.push('\n');
        }
        let (status, answer) = s.ingest("logs", body, "application/x-ndjson");
        assert_eq!(status, 200, "{answer}");
        sent += batch.len() as u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            // Sealed, whether or not merges have joined segments since.
            let (_, segments) = s.get("/api/v1/segments");
            let sealed: u64 = segments["indexes"][0]["segments"]
                .as_array()
                .map_or(0, |a| a.iter().filter_map(|e| e["docs"].as_u64()).sum());
            if sealed >= sent {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not sealed: {segments}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let twice = |want: Vec<String>| -> Vec<String> {
        want.into_iter().flat_map(|m| [m.clone(), m]).collect()
    };
    let (total, paged) = all_pages(&s, "*", &[], 7);
    assert_eq!(total as usize, 2 * data.len());
    assert_eq!(paged, twice(expect(&data, |_| true)));
    let (total, paged) = all_pages(&s, "disk", &[("sort", "asc")], 13);
    let mut want = twice(expect(&data, |r| r.message.contains("disk")));
    want.reverse();
    assert_eq!(total as usize, want.len());
    assert_eq!(paged, want);
    let (status, body) = s.search(
        "severity:error",
        &[
            ("start", "2024-05-01T09:00:00Z"),
            ("end", "2024-05-01T10:30:00Z"),
            ("limit", "1000"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total_exact"], true);
    assert_eq!(
        messages(&body),
        twice(expect(&data, |r| r.level == "error"
            && (60..150).contains(&r.minute)))
    );
}

#[test]
fn bad_queries_and_parameters_answer_400_with_a_message() {
    let (s, _) = seeded();
    for params in [
        vec![("q", "disk(")],
        vec![("q", "*"), ("start", "yesterday")],
        vec![("q", "*"), ("sort", "sideways")],
        vec![("q", "*"), ("limit", "99999999")],
        vec![("q", "*"), ("cursor", "garbage")],
        vec![("q", "*"), ("start", "now"), ("end", "now-1h")],
    ] {
        let (q, rest) = (params[0].1, &params[1..]);
        let (status, body) = s.search(q, rest);
        assert_eq!(status, 400, "{params:?}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
}

#[test]
fn cli_search_prints_readable_lines_and_json() {
    let (s, data) = seeded();
    let out = std::process::Command::new(BIN)
        .args([
            "search",
            "disk AND host:web-01",
            "--server",
            &s.http,
            "--start",
            "2024-05-01T00:00:00Z",
            "--limit",
            "1000",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let want = expect(&data, |r| r.message.contains("disk") && r.host == "web-01");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), want.len());
    for (line, msg) in lines.iter().zip(&want) {
        assert!(
            line.contains(" web-01 ") && line.ends_with(msg.as_str()),
            "{line:?} vs {msg:?}"
        );
    }

    let out = std::process::Command::new(BIN)
        .args([
            "search",
            "severity:error",
            "--server",
            &s.http,
            "--json",
            "--limit",
            "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let hits: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hits.len(), 2);
    assert!(hits
        .iter()
        .all(|h| h["severity"] == "error" && h["id"].is_string() && h["raw"].is_string()));

    let out = std::process::Command::new(BIN)
        .args(["search", "disk(", "--server", &s.http])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("400"));
}
