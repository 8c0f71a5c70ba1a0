//! The query language, histograms, terms, context and query limits, checked end to end against
//! a model: a generated data set with known timestamps, and every expected answer computed by
//! filtering the same list in plain Rust.

mod common;

use std::collections::BTreeMap;

use common::{client, messages, Server};
use serde_json::{json, Value};

const BASE: &str = "2024-05-01T08:00:00Z";
/// 2024-05-01T08:00:00Z in seconds since the epoch.
const BASE_SECS: i64 = 1_714_550_400;
const STEP_SECS: i64 = 37;
const N: usize = 600;

const HOSTS: [&str; 4] = ["web-01", "web-02", "db-01", "Web-03"];
const APPS: [&str; 3] = ["api", "worker", "cron"];
/// (name in the log line, severity code, canonical name)
const LEVELS: [(&str, u8, &str); 7] = [
    ("debug", 7, "debug"),
    ("info", 6, "info"),
    ("info", 6, "info"),
    ("notice", 5, "notice"),
    ("warn", 4, "warning"),
    ("error", 3, "error"),
    ("crit", 2, "crit"),
];
const USERS: [&str; 3] = ["alice", "bob", "carol"];

#[derive(Debug)]
struct Rec {
    i: usize,
    secs: i64,
    host: &'static str,
    app: &'static str,
    level: usize,
    message: String,
    latency: f64,
    user: Option<&'static str>,
}

impl Rec {
    fn code(&self) -> u8 {
        LEVELS[self.level].1
    }
}

fn dataset() -> Vec<Rec> {
    (0..N)
        .map(|i| {
            let message = match i % 5 {
                0 => format!("connection reset by peer from 10.0.{i}"),
                1 => format!("disk full on /var/lib/data{i}"),
                2 => format!("request served in {i} ms"),
                3 => format!("Timeout waiting for upstream api-{i}"),
                _ => format!("cache miss key{i}"),
            };
            let latency = ((i * 13) % 1000) as f64 + if i % 10 == 5 { 0.5 } else { 0.0 };
            Rec {
                i,
                secs: BASE_SECS + i as i64 * STEP_SECS,
                host: HOSTS[(i / 3) % 4],
                app: APPS[i % 3],
                level: i % 7,
                message,
                latency,
                user: (i % 4 == 0).then(|| USERS[(i / 4) % 3]),
            }
        })
        .collect()
}

fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Every timestamp of the data set is on 2024-05-01 or 2024-05-02.
    let day = 1 + days - BASE_SECS / 86_400;
    format!(
        "2024-05-{:02}T{:02}:{:02}:{:02}Z",
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn seeded() -> (Server, Vec<Rec>) {
    let s = Server::start();
    let data = dataset();
    let mut body = String::new();
    // Shuffled arrival order: answers must still be ordered by timestamp.
    for r in data.iter().rev() {
        let mut line = json!({
            "timestamp": rfc3339(r.secs),
            "host": r.host,
            "app": r.app,
            "level": LEVELS[r.level].0,
            "message": r.message,
        });
        if r.latency.fract() == 0.0 {
            line["latency"] = json!(r.latency as i64);
        } else {
            line["latency"] = json!(r.latency);
        }
        if let Some(u) = r.user {
            line["user"] = json!(u);
        }
        body.push_str(&line.to_string());
        body.push('\n');
    }
    let (status, answer) = s.ingest("logs", body, "application/x-ndjson");
    assert_eq!(status, 200, "{answer}");
    s.wait_total("*", &[], data.len() as u64);
    (s, data)
}

fn expect(data: &[Rec], pred: impl Fn(&Rec) -> bool) -> Vec<String> {
    let mut hits: Vec<&Rec> = data.iter().filter(|r| pred(r)).collect();
    hits.sort_by_key(|r| std::cmp::Reverse(r.secs));
    hits.into_iter().map(|r| r.message.clone()).collect()
}

fn get(s: &Server, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let resp = client()
        .get(format!("{}{path}", s.http))
        .query(params)
        .send()
        .expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

#[test]
fn query_language_matches_the_model() {
    let (s, data) = seeded();
    type Pred = Box<dyn Fn(&Rec) -> bool>;
    let cases: Vec<(&str, Pred)> = vec![
        ("*", Box::new(|_| true)),
        ("", Box::new(|_| true)),
        ("disk", Box::new(|r| r.message.contains("disk"))),
        (
            "DISK full",
            Box::new(|r| r.message.starts_with("disk full")),
        ),
        ("conn*", Box::new(|r| r.message.starts_with("connection"))),
        ("tim*", Box::new(|r| r.message.starts_with("Timeout"))),
        ("\"reset by peer\"", Box::new(|r| r.i % 5 == 0)),
        ("\"peer by reset\"", Box::new(|_| false)),
        ("host:WEB-03", Box::new(|r| r.host == "Web-03")),
        ("host:\"web-01\"", Box::new(|r| r.host == "web-01")),
        (
            "host:web*",
            Box::new(|r| r.host.to_lowercase().starts_with("web")),
        ),
        (
            "host:[db-01 TO web-01]",
            Box::new(|r| {
                let h = r.host.to_lowercase();
                h.as_str() >= "db-01" && h.as_str() <= "web-01"
            }),
        ),
        (
            "host:{db-01 TO web-02]",
            Box::new(|r| {
                let h = r.host.to_lowercase();
                h.as_str() > "db-01" && h.as_str() <= "web-02"
            }),
        ),
        ("severity:<=warning", Box::new(|r| r.code() <= 4)),
        ("severity:<warning", Box::new(|r| r.code() < 4)),
        ("severity:>=info", Box::new(|r| r.code() >= 6)),
        (
            "severity:[notice TO error]",
            Box::new(|r| (3..=5).contains(&r.code())),
        ),
        ("severity:err", Box::new(|r| r.code() == 3)),
        ("severity:warning", Box::new(|r| r.code() == 4)),
        ("severity:*", Box::new(|_| true)),
        (
            "fields.latency:[100 TO 200]",
            Box::new(|r| (100.0..=200.0).contains(&r.latency)),
        ),
        (
            "fields.latency:{100 TO 200}",
            Box::new(|r| r.latency > 100.0 && r.latency < 200.0),
        ),
        ("fields.latency:>990", Box::new(|r| r.latency > 990.0)),
        ("fields.latency:<=10.5", Box::new(|r| r.latency <= 10.5)),
        ("fields.latency:[* TO 5}", Box::new(|r| r.latency < 5.0)),
        ("fields.latency:130", Box::new(|r| r.latency == 130.0)),
        ("fields.user:alice", Box::new(|r| r.user == Some("alice"))),
        ("fields.user:*", Box::new(|r| r.user.is_some())),
        ("-fields.user:*", Box::new(|r| r.user.is_none())),
        (
            "fields.user:[alice TO bob]",
            Box::new(|r| matches!(r.user, Some("alice" | "bob"))),
        ),
        (
            "NOT host:db-01 AND app:api",
            Box::new(|r| r.host != "db-01" && r.app == "api"),
        ),
        (
            "(app:api OR app:cron) -severity:debug disk",
            Box::new(|r| {
                (r.app == "api" || r.app == "cron") && r.code() != 7 && r.message.contains("disk")
            }),
        ),
        (
            "app:worker OR (host:db-01 AND severity:error)",
            Box::new(|r| r.app == "worker" || (r.host == "db-01" && r.code() == 3)),
        ),
        (
            "-disk -cache",
            Box::new(|r| !r.message.contains("disk") && !r.message.contains("cache")),
        ),
        ("source:*", Box::new(|_| true)),
        ("host:*", Box::new(|_| true)),
        ("parse_error:*", Box::new(|_| false)),
        ("app:wor*", Box::new(|r| r.app == "worker")),
        (
            "key12*",
            Box::new(|r| r.i % 5 == 4 && r.i.to_string().starts_with("12")),
        ),
    ];
    for (q, pred) in cases {
        let want = expect(&data, pred);
        let (status, body) = s.search(q, &[("limit", "1000")]);
        assert_eq!(status, 200, "{q}: {body}");
        assert_eq!(
            body["total"].as_u64().unwrap() as usize,
            want.len(),
            "total of {q}"
        );
        assert_eq!(messages(&body), want, "hits of {q}");
    }
}

#[test]
fn bad_queries_say_what_was_expected_at_which_column() {
    let (s, _) = seeded();
    let cases = [
        ("disk AND (host:web-01 OR", 25, "expected a term after OR"),
        ("(disk OR cache", 15, "expected ')'"),
        ("disk)", 5, "unbalanced ')'"),
        ("colour:red", 1, "unknown field 'colour'"),
        ("severity:loud", 10, "unknown severity 'loud'"),
        ("\"disk full", 11, "close the phrase opened at column 1"),
        ("host:[a TO b", 13, "expected ']' or '}'"),
        ("di*sk", 3, "only supported at the end"),
    ];
    for path in ["/api/v1/search", "/api/v1/histogram", "/api/v1/terms"] {
        for (q, column, what) in cases {
            let (status, body) = get(&s, path, &[("q", q), ("field", "host")]);
            assert_eq!(status, 400, "{path} {q}: {body}");
            assert_eq!(body["error"]["code"], "bad_query", "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(what) && message.ends_with(&format!("at column {column}")),
                "{path} {q}: {message}"
            );
        }
    }
    // Hostile input is refused before any work: deep nesting, huge queries, too many clauses.
    let deep = format!("{}disk{}", "(".repeat(100), ")".repeat(100));
    let huge = "disk ".repeat(1000);
    let wide = vec!["disk"; 300].join(" OR ");
    for (q, what) in [
        (deep.as_str(), "nests deeper than 32"),
        (huge.as_str(), "the maximum is 4096"),
        (wide.as_str(), "more than 256 clauses"),
        (&"-".repeat(50), "nests deeper"),
    ] {
        let (status, body) = s.search(q, &[]);
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(what),
            "{body}"
        );
    }
}

/// The model's histogram: `(start secs, count, by severity)` per bucket of `interval` seconds
/// aligned to the epoch, over `[start, end)`.
fn model_histogram(
    data: &[Rec],
    start: i64,
    end: i64,
    interval: i64,
    pred: impl Fn(&Rec) -> bool,
) -> Vec<Value> {
    let origin = start.div_euclid(interval) * interval;
    let n = (end - origin + interval - 1) / interval;
    (0..n)
        .map(|b| {
            let lo = origin + b * interval;
            let hi = lo + interval;
            let mut by = BTreeMap::new();
            let mut count = 0;
            for r in data {
                if r.secs >= lo.max(start) && r.secs < hi.min(end) && pred(r) {
                    count += 1;
                    *by.entry(LEVELS[r.level].2).or_insert(0u64) += 1;
                }
            }
            let start = rfc3339(lo).replace('Z', ".000000000Z");
            json!({"start": start, "count": count, "by_severity": by})
        })
        .collect()
}

#[test]
fn histogram_counts_match_the_model() {
    let (s, data) = seeded();
    let last = data.last().unwrap().secs;
    // Explicit range and interval, a start that is not on a bucket boundary.
    let start = BASE_SECS + 125;
    let end = BASE_SECS + 3 * 3600;
    let (status, body) = get(
        &s,
        "/api/v1/histogram",
        &[
            ("q", "disk OR severity:error"),
            ("start", &rfc3339(start)),
            ("end", &rfc3339(end)),
            ("interval", "10m"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["interval_ms"], 600_000);
    let want = model_histogram(&data, start, end, 600, |r| {
        r.message.contains("disk") || r.code() == 3
    });
    assert_eq!(body["buckets"].as_array().unwrap(), &want);
    let want_total: u64 = want.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(body["total"].as_u64().unwrap(), want_total);

    // No range: the data's own; automatic interval: ~6.2 h of data → 5 minute buckets.
    let (status, body) = get(&s, "/api/v1/histogram", &[("q", "*")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["interval_ms"], 300_000, "{body}");
    assert_eq!(body["total"], N as u64);
    let want = model_histogram(&data, BASE_SECS, last + 1, 300, |_| true);
    assert_eq!(body["buckets"].as_array().unwrap(), &want);

    // Too many buckets, or a bad interval: 400 with a message.
    for interval in ["1ms", "1s", "soon", "0m"] {
        let (status, body) = get(
            &s,
            "/api/v1/histogram",
            &[
                ("start", BASE),
                ("end", "2024-05-02T08:00:00Z"),
                ("interval", interval),
            ],
        );
        assert_eq!(status, 400, "{interval}: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
}

fn model_terms(
    data: &[Rec],
    value: impl Fn(&Rec) -> &str,
    pred: impl Fn(&Rec) -> bool,
) -> Vec<(String, u64)> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for r in data.iter().filter(|r| pred(r)) {
        *counts.entry(value(r).to_string()).or_insert(0) += 1;
    }
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

fn buckets(body: &Value) -> Vec<(String, u64)> {
    body["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| {
            (
                b["value"].as_str().unwrap().to_string(),
                b["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn terms_count_values_like_the_model() {
    let (s, data) = seeded();
    let (status, body) = get(&s, "/api/v1/terms", &[("field", "host")]);
    assert_eq!(status, 200, "{body}");
    let want = model_terms(&data, |r| r.host, |_| true);
    assert_eq!(buckets(&body), want, "values keep their case: Web-03");
    assert_eq!(body["field"], "host");
    assert_eq!(body["total"], N as u64);
    assert_eq!(body["other_count"], 0);

    let (status, body) = get(
        &s,
        "/api/v1/terms",
        &[("field", "severity"), ("q", "disk OR cache"), ("size", "2")],
    );
    assert_eq!(status, 200, "{body}");
    let all = model_terms(
        &data,
        |r| LEVELS[r.level].2,
        |r| r.message.contains("disk") || r.message.contains("cache"),
    );
    assert_eq!(buckets(&body), all[..2]);
    let rest: u64 = all[2..].iter().map(|(_, n)| n).sum();
    assert_eq!(body["other_count"].as_u64().unwrap(), rest);
    assert_eq!(
        body["total"].as_u64().unwrap(),
        all.iter().map(|(_, n)| n).sum::<u64>()
    );

    let start = BASE_SECS + 3600;
    let end = BASE_SECS + 2 * 3600;
    let (status, body) = get(
        &s,
        "/api/v1/terms",
        &[
            ("field", "app"),
            ("start", &rfc3339(start)),
            ("end", &rfc3339(end)),
            ("q", "host:web*"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let want = model_terms(
        &data,
        |r| r.app,
        |r| r.secs >= start && r.secs < end && r.host.to_lowercase().starts_with("web"),
    );
    assert_eq!(buckets(&body), want);

    for params in [
        vec![("field", "source")],
        vec![("field", "message")],
        vec![],
        vec![("field", "host"), ("size", "0")],
    ] {
        let (status, body) = get(&s, "/api/v1/terms", &params);
        assert_eq!(status, 400, "{params:?}: {body}");
    }
}

#[test]
fn context_returns_neighbours_from_the_same_host_and_app() {
    let (s, data) = seeded();
    let anchor = &data[301];
    let (status, body) = s.search("data301", &[]);
    assert_eq!(status, 200);
    assert_eq!(messages(&body), vec![anchor.message.clone()]);
    let id = body["hits"][0]["id"].as_str().unwrap().to_string();

    let (status, body) = get(
        &s,
        "/api/v1/context",
        &[("id", &id), ("before", "4"), ("after", "3")],
    );
    assert_eq!(status, 200, "{body}");
    let mut same: Vec<&Rec> = data
        .iter()
        .filter(|r| r.host == anchor.host && r.app == anchor.app)
        .collect();
    same.sort_by_key(|r| r.secs);
    let pos = same.iter().position(|r| r.i == anchor.i).unwrap();
    let msgs = |rs: &[&Rec]| rs.iter().map(|r| r.message.clone()).collect::<Vec<_>>();
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| h["message"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(list(&body["before"]), msgs(&same[pos - 4..pos]));
    assert_eq!(body["hit"]["id"], id);
    assert_eq!(body["hit"]["message"], anchor.message);
    assert_eq!(list(&body["after"]), msgs(&same[pos + 1..pos + 4]));

    // At the very start of the data there is nothing before.
    let (_, first) = s.search("\"10.0.0\"", &[]);
    let first_id = first["hits"][0]["id"].as_str().unwrap().to_string();
    let (status, body) = get(&s, "/api/v1/context", &[("id", &first_id), ("before", "5")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["before"].as_array().unwrap().len(), 0);
    assert_eq!(
        body["after"].as_array().unwrap().len(),
        10,
        "default after=10"
    );

    let (status, body) = get(&s, "/api/v1/context", &[("id", "987654321")]);
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("987654321"));
    for bad in [
        vec![("id", "abc")],
        vec![],
        vec![("id", &id[..]), ("before", "100000")],
    ] {
        let (status, body) = get(&s, "/api/v1/context", &bad);
        assert_eq!(status, 400, "{bad:?}: {body}");
    }
}

#[test]
fn slow_queries_answer_408_and_excess_queries_429() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        tmp.path(),
        "[query]\nquery_timeout_ms = 1\nmax_concurrent_queries = 1\n",
    );
    let data = dataset();
    let mut body = String::new();
    for r in &data {
        body.push_str(
            &json!({"timestamp": rfc3339(r.secs), "host": r.host, "message": r.message})
                .to_string(),
        );
        body.push('\n');
    }
    assert_eq!(s.ingest("logs", body, "application/x-ndjson").0, 200);
    // Searchable after a commit interval (200 ms in tests); not polled, as polling would
    // itself run into the 1 ms limit.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // A wide query takes more than 1 ms in a debug build. All records are in one part (the
    // hot index), so no time range can be covered without searching all of it: each answer
    // is complete or a 408, never a silently partial count.
    let wide = (0..120)
        .map(|i| format!("key{i}* OR data{i}*"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let mut timeouts = 0;
    let mut busy = 0;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let resp = client()
                        .get(format!("{}/api/v1/histogram", s.http))
                        .query(&[("q", wide.as_str()), ("interval", "1m")])
                        .send()
                        .unwrap();
                    let status = resp.status().as_u16();
                    let retry = resp.headers().get("retry-after").cloned();
                    (status, retry, resp.json::<Value>().unwrap_or(Value::Null))
                })
            })
            .collect();
        for h in handles {
            let (status, retry, body) = h.join().unwrap();
            match status {
                408 => {
                    timeouts += 1;
                    assert_eq!(body["error"]["code"], "query_timeout", "{body}");
                    assert!(body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("query_timeout_ms"));
                }
                429 => {
                    busy += 1;
                    assert_eq!(body["error"]["code"], "too_many_queries", "{body}");
                    assert_eq!(retry.unwrap(), "1");
                }
                200 => {
                    assert_eq!(body["partial"], false, "{body}");
                    assert_eq!(body["total_exact"], true, "{body}");
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
    });
    assert!(timeouts >= 1, "at least one query ran and timed out");
    assert!(busy >= 1, "eight at once with one slot: some are refused");
}

/// Records in sealed segments of `PER_PART` records each, part `p` in its own ten minutes
/// from `BASE`. Each message is `WORDS` distinct words `t<p>x<i>x<j>`, so that the prefix
/// query `t*` expands a large term dictionary in every segment: a query slow enough to be
/// cut short or cancelled, on little data.
const PARTS: usize = 24;
const PER_PART: usize = 300;
const WORDS: usize = 100;
/// Merging off: a background merge of four parts would undo "one part per segment".
const PARTS_CONFIG: &str = "[index]\nseal_docs = 300\nmerge_factor = 0\n";

fn part_secs(p: usize, i: usize) -> i64 {
    BASE_SECS + (p * 600 + i) as i64
}

fn part_message(p: usize, i: usize) -> String {
    (0..WORDS)
        .map(|j| format!("t{p}x{i}x{j}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Hit timestamps as the API writes them (RFC 3339 with nine fraction digits), which sort
/// as strings in time order.
fn api_time(secs: i64) -> String {
    rfc3339(secs).replace('Z', ".000000000Z")
}

/// Ingests the parts one at a time, each sealed before the next, so that every sealed
/// segment holds exactly one part's ten minutes.
fn seed_parts(s: &Server) {
    for p in 0..PARTS {
        let mut body = String::new();
        for i in 0..PER_PART {
            let line = json!({
                "timestamp": rfc3339(part_secs(p, i)),
                "host": "parts",
                "message": part_message(p, i),
            });
            body.push_str(&line.to_string());
            body.push('\n');
        }
        let (status, answer) = s.ingest("logs", body, "application/x-ndjson");
        assert_eq!(status, 200, "{answer}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (_, segments) = s.get("/api/v1/segments");
            let sealed = segments["indexes"][0]["segments"]
                .as_array()
                .map_or(0, |a| a.len());
            if sealed > p {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "part {p} was not sealed: {segments}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// The median `took_ms` of three complete searches.
fn median_took(s: &Server, q: &str, params: &[(&str, &str)]) -> u64 {
    let mut took: Vec<u64> = (0..3)
        .map(|_| {
            let (status, body) = s.search(q, params);
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["partial"], false, "{body}");
            body["took_ms"].as_u64().unwrap()
        })
        .collect();
    took.sort_unstable();
    took[1]
}

#[test]
fn a_search_cut_by_its_time_limit_answers_the_range_it_covered() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), PARTS_CONFIG);
    seed_parts(&s);
    // Calibrate on this machine: the time limit goes between the time one segment takes and
    // the time all of them take, so that some segments finish and some do not.
    let one = median_took(
        &s,
        "t*",
        &[
            ("start", &rfc3339(part_secs(5, 0))),
            ("end", &rfc3339(part_secs(6, 0))),
        ],
    )
    .max(1);
    let all = median_took(&s, "t*", &[]);
    assert!(
        all >= 3 * one,
        "one segment took {one} ms and all {PARTS} took {all} ms: too close together to place \
         a time limit between them"
    );
    let limit_ms = ((one * all) as f64).sqrt() as u64;
    assert!(s.stop().success());
    let s = Server::start_in(
        tmp.path(),
        &format!("{PARTS_CONFIG}[query]\nquery_timeout_ms = {limit_ms}\n"),
    );

    // The model: every record's API timestamp and message.
    let model: Vec<(String, String)> = (0..PARTS)
        .flat_map(|p| (0..PER_PART).map(move |i| (p, i)))
        .map(|(p, i)| (api_time(part_secs(p, i)), part_message(p, i)))
        .collect();
    let (mut partials, mut complete, mut timeouts, mut histogram_partials) = (0, 0, 0, 0);
    for _ in 0..10 {
        let (status, body) = s.search("t*", &[("limit", "1000")]);
        match status {
            200 if body["partial"] == true => {
                partials += 1;
                assert_eq!(body["total_exact"], false, "{body}");
                let start = body["covered"]["start"].as_str().expect("covered.start");
                let end = body["covered"]["end"].as_str().expect("covered.end");
                assert!(start < end, "{start} {end}");
                // Newest first: the covered range reaches the newest record.
                assert!(end > model.last().unwrap().0.as_str(), "{end}");
                assert!(
                    start > model[0].0.as_str(),
                    "a partial answer cannot cover everything: {start}"
                );
                let mut want: Vec<&(String, String)> = model
                    .iter()
                    .filter(|(ts, _)| ts.as_str() >= start && ts.as_str() < end)
                    .collect();
                want.sort_by(|a, b| b.0.cmp(&a.0));
                let in_range = want.len() as u64;
                want.truncate(1000);
                let hits = body["hits"].as_array().unwrap();
                for hit in hits {
                    let ts = hit["timestamp"].as_str().unwrap();
                    assert!(
                        ts >= start && ts < end,
                        "hit at {ts} outside {start}..{end}"
                    );
                }
                // Everything in the covered range was searched: its hits are exact.
                let got: Vec<&str> = hits
                    .iter()
                    .map(|h| h["message"].as_str().unwrap())
                    .collect();
                let expected: Vec<&str> = want.iter().map(|(_, m)| m.as_str()).collect();
                assert_eq!(got, expected);
                let total = body["total"].as_u64().unwrap();
                assert!(
                    total >= in_range && total <= model.len() as u64,
                    "total {total} is a lower bound of {} and at least the {in_range} covered",
                    model.len()
                );
                assert!(body["next_cursor"].is_string(), "{body}");
            }
            200 => {
                complete += 1;
                assert_eq!(body["total"], model.len() as u64, "{body}");
                assert_eq!(body["total_exact"], true, "{body}");
                assert!(body.get("covered").is_none(), "{body}");
            }
            408 => {
                timeouts += 1;
                assert_eq!(body["error"]["code"], "query_timeout", "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
        let (status, body) = get(&s, "/api/v1/histogram", &[("q", "t*"), ("interval", "10m")]);
        match status {
            200 if body["partial"] == true => {
                histogram_partials += 1;
                assert_eq!(body["total_exact"], false, "{body}");
                let start = body["covered"]["start"].as_str().expect("covered.start");
                let end = body["covered"]["end"].as_str().expect("covered.end");
                // One bucket per part: those inside the covered range are exact.
                let buckets = body["buckets"].as_array().unwrap();
                assert_eq!(buckets.len(), PARTS, "{body}");
                let mut exact = 0;
                for (p, b) in buckets.iter().enumerate() {
                    let (lo, hi) = (api_time(part_secs(p, 0)), api_time(part_secs(p + 1, 0)));
                    let count = b["count"].as_u64().unwrap();
                    assert!(count <= PER_PART as u64, "{b}");
                    if lo.as_str() >= start && hi.as_str() <= end {
                        assert_eq!(count, PER_PART as u64, "bucket {p} is covered: {body}");
                        exact += 1;
                    }
                }
                assert!(exact >= 1, "{body}");
            }
            200 => assert_eq!(body["total"], model.len() as u64, "{body}"),
            408 => assert_eq!(body["error"]["code"], "query_timeout", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
        if partials >= 3 && histogram_partials >= 1 {
            break;
        }
    }
    eprintln!(
        "time limit {limit_ms} ms (one segment {one} ms, all {all} ms): {partials} partial, \
         {complete} complete, {timeouts} timed out; {histogram_partials} partial histograms"
    );
    assert!(
        partials >= 1,
        "no partial answer with a {limit_ms} ms limit (one segment {one} ms, all {all} ms): \
         {complete} complete, {timeouts} timed out"
    );
    assert!(histogram_partials >= 1, "no partial histogram");
    assert!(s.metric("logsift_query_partial_total") >= (partials + histogram_partials) as f64);
}

#[test]
fn a_client_that_disconnects_stops_its_query_and_frees_its_slot() {
    use std::io::Write;
    use std::time::{Duration, Instant};

    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        tmp.path(),
        &format!("{PARTS_CONFIG}[query]\nmax_concurrent_queries = 1\nquery_timeout_ms = 600000\n"),
    );
    seed_parts(&s);
    let slow = "t* OR t* OR t* OR t*";
    let (status, body) = s.search(slow, &[("limit", "10")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], (PARTS * PER_PART) as u64);
    assert_eq!(s.metric("logsift_query_cancelled_total"), 0.0);

    let addr = s.http.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET /api/v1/search?q=t*%20OR%20t*%20OR%20t*%20OR%20t*&limit=10 HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    wait_until("the query runs", &|| {
        s.metric("logsift_queries_running") == 1.0
    });
    drop(conn);
    wait_until("the query stops", &|| {
        s.metric("logsift_queries_running") == 0.0
    });
    assert_eq!(
        s.metric("logsift_query_cancelled_total"),
        1.0,
        "the query stopped because its client left, not because it was done"
    );
    // Its slot is free: the next query runs instead of being refused.
    let (status, body) = s.search("t1x1x1", &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 1);
}

#[test]
fn terms_past_the_values_cap_say_they_are_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), "[query]\nterms_max_values = 3\n");
    let data = dataset();
    let mut body = String::new();
    for r in &data {
        let line = json!({"timestamp": rfc3339(r.secs), "host": r.host, "app": r.app, "message": r.message});
        body.push_str(&line.to_string());
        body.push('\n');
    }
    assert_eq!(s.ingest("logs", body, "application/x-ndjson").0, 200);
    s.wait_total("*", &[], N as u64);

    // Four hosts, room for three.
    let (status, body) = get(&s, "/api/v1/terms", &[("field", "host"), ("size", "10")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partial"], true, "{body}");
    assert_eq!(body["partial_reasons"], json!(["values_cap"]), "{body}");
    // Every match was counted, some under other_count: the total stays exact.
    assert_eq!(body["total_exact"], true, "{body}");
    assert_eq!(body["total"], N as u64);
    assert!(body["covered"]["start"].is_string(), "{body}");
    let model = model_terms(&data, |r| r.host, |_| true);
    let got = buckets(&body);
    assert!(!got.is_empty() && got.len() <= 3, "{body}");
    for (value, count) in &got {
        let (_, want) = model
            .iter()
            .find(|(v, _)| v == value)
            .expect("a real value");
        assert!(count <= want, "{value}: {count} > {want}");
    }
    let sum: u64 = got.iter().map(|(_, n)| n).sum::<u64>()
        + body["other_count"].as_u64().unwrap()
        + body["missing"].as_u64().unwrap();
    assert_eq!(
        sum, N as u64,
        "buckets, other_count and missing add up to total"
    );

    // Three apps fit: complete and exact.
    let (status, body) = get(&s, "/api/v1/terms", &[("field", "app")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partial"], false, "{body}");
    assert!(body.get("partial_reasons").is_none(), "{body}");
    assert_eq!(buckets(&body), model_terms(&data, |r| r.app, |_| true));
    assert!(s.metric("logsift_query_partial_total") >= 1.0);
}

#[test]
fn tail_delivers_new_matching_records_within_a_second() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let (s, _) = seeded();
    let resp = client()
        .get(format!("{}/api/v1/tail", s.http))
        .query(&[("q", "severity:error AND host:tail-*")])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut event = String::new();
        for line in BufReader::new(resp).lines().map_while(Result::ok) {
            if let Some(e) = line.strip_prefix("event: ") {
                event = e.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let _ = tx.send((event.clone(), data.to_string()));
            }
        }
    });
    // Only new records: nothing of the seeded data arrives.
    assert!(rx.recv_timeout(Duration::from_millis(700)).is_err());
    for n in 0..3 {
        let lines = format!(
            "{}\n{}\n",
            json!({"host": "tail-01", "level": "info", "message": format!("quiet {n}")}),
            json!({"host": "tail-01", "level": "error", "message": format!("loud {n}")}),
        );
        assert_eq!(s.ingest("logs", lines, "application/x-ndjson").0, 200);
        // The promise: searchable (and so tailed) within 1 s of the acknowledgement.
        let sent = Instant::now();
        let (event, data) = rx.recv_timeout(Duration::from_secs(5)).expect("a record");
        let latency = sent.elapsed();
        assert_eq!(event, "record");
        let hit: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(hit["message"], format!("loud {n}"));
        assert!(
            latency < Duration::from_secs(1),
            "delivered {latency:?} after ingest"
        );
    }
    assert!(rx.recv_timeout(Duration::from_millis(700)).is_err());

    // A bad query is refused before the stream starts.
    let (status, body) = get(&s, "/api/v1/tail", &[("q", "host:(")]);
    assert_eq!(status, 400, "{body}");

    // An open tail does not hold up a graceful shutdown.
    let stopping = Instant::now();
    assert!(s.stop().success());
    assert!(stopping.elapsed() < Duration::from_secs(10));
}

/// Ids, long numbers and hex strings are indexed as one of 2^18 bucket terms (issue #16), so
/// different ids share a bucket. Answers must still be exact: ids that collide on purpose,
/// in the message and in `fields`, alone, in phrases, negated and as prefixes, in the hot tier
/// and in a sealed segment after a restart.
#[test]
fn ids_sharing_a_bucket_are_told_apart() {
    use logsift_store::tokens::{bucket_term, is_high_entropy};
    let mut by_bucket: std::collections::HashMap<String, Vec<String>> = Default::default();
    let ids = (0u64..)
        .map(|i| format!("id{:010x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 24))
        .find_map(|id| {
            let same = by_bucket.entry(bucket_term(&id)).or_default();
            same.push(id);
            (same.len() == 3).then(|| same.clone())
        })
        .expect("three ids in one bucket");
    assert!(ids.iter().all(|id| is_high_entropy(id)));
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let lines = [
        json!({"message": format!("user {a} logged in"), "trace": b}),
        json!({"message": format!("user {b} logged out"), "trace": c}),
        json!({"message": format!("job {c} done"), "trace": a}),
        json!({"message": "user nobody logged in", "trace": "none"}),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Server::start_in(dir.path(), "");
    let (status, answer) = s.ingest("logs", body, "application/x-ndjson");
    assert_eq!(status, 200, "{answer}");
    s.wait_total("*", &[], 4);
    let prefix = |id: &str, n: usize| format!("{}*", &id[..n]);
    let cases: Vec<(String, Vec<String>)> = vec![
        (a.clone(), vec![format!("user {a} logged in")]),
        (a.to_uppercase(), vec![format!("user {a} logged in")]),
        (
            format!("\"user {b}\""),
            vec![format!("user {b} logged out")],
        ),
        (format!("\"user {c}\""), vec![]),
        (format!("\"{a} logged out\""), vec![]),
        (
            format!("user -{a}"),
            vec![
                format!("user {b} logged out"),
                "user nobody logged in".into(),
            ],
        ),
        (
            format!("{a} OR {c}"),
            vec![format!("job {c} done"), format!("user {a} logged in")],
        ),
        (format!("fields.trace:{a}"), vec![format!("job {c} done")]),
        (
            format!("fields.trace:{c}"),
            vec![format!("user {b} logged out")],
        ),
        (prefix(a, 9), vec![format!("user {a} logged in")]),
        (
            "id*".into(),
            vec![
                format!("user {a} logged in"),
                format!("user {b} logged out"),
                format!("job {c} done"),
            ],
        ),
        (
            format!("user.{}", prefix(b, 11)),
            vec![format!("user {b} logged out")],
        ),
        (format!("user.{}", prefix(c, 11)), vec![]),
        (
            format!("fields.trace:{}", prefix(b, 11)),
            vec![format!("user {a} logged in")],
        ),
    ];
    let check = |s: &Server, when: &str| {
        for (q, want) in &cases {
            let (status, body) = s.search(q, &[("limit", "10")]);
            assert_eq!(status, 200, "{when} {q}: {body}");
            let mut got = messages(&body);
            got.sort();
            let mut want = want.clone();
            want.sort();
            assert_eq!(got, want, "{when}: hits of {q}");
            assert_eq!(
                body["total"].as_u64(),
                Some(want.len() as u64),
                "{when}: total of {q}"
            );
        }
    };
    check(&s, "hot tier");
    assert!(s.stop().success());
    let s = Server::start_in(dir.path(), "");
    s.wait_total("*", &[], 4);
    check(&s, "sealed");
}
