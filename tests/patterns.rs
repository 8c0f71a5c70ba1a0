//! Log patterns (#19): ids given at ingest, kept across restarts and seals, searched with
//! `pattern:<id>`, counted by `/api/v1/patterns` and weighed by `/api/v1/compare`.

mod common;

use std::collections::HashMap;

use common::Server;
use serde_json::Value;

/// JSON lines of three kinds of message, `n` of each, at `ts` (RFC 3339) on `hosts`.
fn lines(n: usize, ts: &str, hosts: &[&str], tag: &str) -> String {
    let mut out = String::new();
    for i in 0..n {
        let host = hosts[i % hosts.len()];
        for msg in [
            format!(
                "Accepted connection from 10.1.{}.{} port {}",
                i % 7,
                i % 250,
                40000 + i
            ),
            format!("GET /api/items/{} completed in {} ms", 1000 + i, 3 + i % 40),
            format!(
                "cache hit ratio {}.{} percent for shard {}",
                80 + i % 19,
                i % 10,
                i % 5
            ),
        ] {
            out.push_str(&format!(
                "{{\"ts\":\"{ts}\",\"host\":\"{host}\",\"app\":\"shop\",\"level\":\"info\",\"msg\":\"{msg} {tag}\"}}\n"
            ));
        }
    }
    out
}

/// Runs the `logsift` command line; its standard output.
fn logsift(args: &[&str]) -> String {
    let out = std::process::Command::new(common::BIN)
        .args(args)
        .output()
        .expect("run logsift");
    assert!(
        out.status.success(),
        "logsift {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn get(s: &Server, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let resp = common::client()
        .get(format!("{}{path}", s.http))
        .query(params)
        .send()
        .expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// Pattern id of each distinct template among the hits of `q`.
fn ids_by_template(s: &Server, q: &str) -> HashMap<String, u64> {
    let (status, body) = s.search(q, &[("limit", "1000")]);
    assert_eq!(status, 200, "{body}");
    let mut out = HashMap::new();
    for hit in body["hits"].as_array().unwrap() {
        let template = hit["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("no pattern: {hit}"));
        let id = hit["pattern_id"].as_u64().unwrap();
        if let Some(old) = out.insert(template.to_string(), id) {
            assert_eq!(old, id, "one template, one id: {template}");
        }
    }
    out
}

/// The `[index]` section that selects each layout; pattern ids work in both.
const RECORDS: &str = "[index]\nlayout = \"records\"\n";
const BLOCKS: &str = "[index]\nlayout = \"blocks\"\n";

#[test]
fn hits_carry_their_pattern_and_patterns_count_the_matches() {
    hits_carry_their_pattern(RECORDS);
}

#[test]
fn hits_carry_their_pattern_and_patterns_count_the_matches_in_blocks() {
    hits_carry_their_pattern(BLOCKS);
}

fn hits_carry_their_pattern(layout: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), layout);
    let (status, body) = s.ingest(
        "app",
        lines(30, "2026-03-01T10:00:00Z", &["web-1", "web-2"], "first"),
        "application/x-ndjson",
    );
    assert_eq!(status, 200, "{body}");
    s.wait_total("first", &[], 90);
    let ids = ids_by_template(&s, "first");
    assert_eq!(ids.len(), 3, "three kinds of message: {ids:?}");
    let accepted = ids
        .iter()
        .find(|(t, _)| t.starts_with("Accepted connection from"))
        .map(|(t, id)| (t.clone(), *id))
        .expect("the connection pattern");
    assert_eq!(accepted.0, "Accepted connection from <*> port <*> first");

    // `pattern:<id>` finds exactly its records, alone and with other terms.
    let id = accepted.1.to_string();
    s.wait_total(&format!("pattern:{id}"), &[], 30);
    s.wait_total(&format!("pattern:{id} AND host:web-1"), &[], 15);
    s.wait_total(&format!("first -pattern:{id}"), &[], 60);
    let (status, body) = s.search("pattern:abc", &[]);
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("pattern id"), "{body}");
    // An id nobody has is no error: nothing has it.
    s.wait_total("pattern:999999", &[], 0);

    let (status, body) = get(&s, "/api/v1/patterns", &[("q", "first"), ("size", "2")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 90, "{body}");
    assert_eq!(body["distinct"], 3, "{body}");
    let rows = body["patterns"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "size caps the list: {body}");
    assert_eq!(body["other_count"], 30, "{body}");
    assert_eq!(body["without_pattern"], 0, "{body}");
    for row in rows {
        assert_eq!(row["count"], 30, "{row}");
        let counts: u64 = row["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum();
        assert_eq!(counts, 30, "the buckets add up: {row}");
        assert_eq!(row["first_seen"], "2026-03-01T10:00:00.000000000Z", "{row}");
        let example = &row["example"];
        assert_eq!(example["pattern_id"], row["id"], "{row}");
        assert_eq!(example["pattern"], row["template"], "{row}");
    }
    let (status, body) = get(&s, "/api/v1/patterns", &[("size", "0")]);
    assert_eq!(status, 400, "{body}");
    // Each listed pattern keeps a counter per bucket while counting: few buckets, or 400.
    let (status, body) = get(
        &s,
        "/api/v1/patterns",
        &[
            ("interval", "1s"),
            ("start", "2026-03-01T00:00:00Z"),
            ("end", "2026-03-02T00:00:00Z"),
        ],
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("at most 150"), "{body}");

    // Exports keep the id, not the template, which generalises as records arrive: an export
    // run again (or resumed) must be the same bytes.
    let exported = common::client()
        .post(format!("{}/api/v1/export", s.http))
        .header("content-type", "application/json")
        .body(r#"{"q":"first","format":"ndjson"}"#)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let lines: Vec<Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 90);
    assert!(lines
        .iter()
        .all(|l| l["pattern_id"].as_u64().is_some() && l.get("pattern").is_none()));
}

#[test]
fn pattern_ids_stay_across_kill_9_graceful_restarts_and_seals() {
    pattern_ids_stay(RECORDS);
}

#[test]
fn pattern_ids_stay_across_kill_9_graceful_restarts_and_seals_in_blocks() {
    pattern_ids_stay(BLOCKS);
}

fn pattern_ids_stay(layout: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = &format!("{layout}seal_idle_ms = 500\n");
    let s = Server::start_in(dir.path(), config);
    let first = lines(20, "2026-03-01T10:00:00Z", &["web-1"], "before");
    let (status, _) = s.ingest("app", first, "application/x-ndjson");
    assert_eq!(status, 200);
    s.wait_total("before", &[], 60);
    // Learnt just after the miner saved its state (it saves at most every 5 s), and sealed:
    // only the WAL can teach a restarted miner this pattern, as a record already sealed.
    let (status, _) = s.ingest(
        "app",
        "{\"msg\":\"disk sdb1 is 97 percent full before\"}\n",
        "application/x-ndjson",
    );
    assert_eq!(status, 200);
    s.wait_sealed("app", 61);
    let ids = ids_by_template(&s, "before");
    assert_eq!(ids.len(), 4, "{ids:?}");
    s.kill9();

    let s = Server::start_in(dir.path(), config);
    s.wait_total("before", &[], 61);
    assert_eq!(ids_by_template(&s, "before"), ids);
    // New records of the same kinds get the same ids (one template, one id, checked per hit),
    // after a kind never seen: had the restarted miner not learnt the disk pattern again, the
    // new kind would take its id.
    let more = "{\"msg\":\"fan 3 stopped spinning before\"}\n".to_string()
        + &lines(20, "2026-03-01T11:00:00Z", &["web-2"], "before")
        + "{\"msg\":\"disk sdb1 is 91 percent full before\"}\n";
    let (status, _) = s.ingest("app", more, "application/x-ndjson");
    assert_eq!(status, 200);
    s.wait_total("before", &[], 123);
    let mut all = ids_by_template(&s, "before");
    let fan = all
        .remove("fan <*> stopped spinning before")
        .expect("the new kind");
    assert_eq!(all, ids);
    assert!(ids.values().all(|id| *id != fan));
    s.wait_sealed("app", 123);
    let status = s.stop();
    assert!(status.success());

    let s = Server::start_in(dir.path(), config);
    for (template, id) in &ids {
        let n = if template.starts_with("disk") { 2 } else { 40 };
        s.wait_total(&format!("pattern:{id}"), &[], n);
    }
    let mut all = ids_by_template(&s, "before");
    all.remove("fan <*> stopped spinning before");
    assert_eq!(all, ids);
    assert!(s.data_dir.join("patterns.state").exists());
}

#[test]
fn compare_puts_a_burst_of_a_new_error_on_a_few_hosts_first() {
    compare_puts_a_burst_first(RECORDS);
}

#[test]
fn compare_puts_a_burst_of_a_new_error_on_a_few_hosts_first_in_blocks() {
    compare_puts_a_burst_first(BLOCKS);
}

fn compare_puts_a_burst_first(layout: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &format!("{layout}seal_idle_ms = 500\n"));
    let hosts = ["web-1", "web-2", "web-3", "web-4", "web-5", "web-6"];
    // A quiet hour, then the same traffic with a burst of a new error on two hosts.
    let mut body = String::new();
    for minute in 0..30 {
        let baseline = minute + 30;
        body += &lines(
            6,
            &format!("2026-03-01T09:{baseline:02}:10Z"),
            &hosts,
            "traffic",
        );
        body += &lines(
            6,
            &format!("2026-03-01T10:{minute:02}:10Z"),
            &hosts,
            "traffic",
        );
    }
    for i in 0..40 {
        let host = ["web-4", "web-5"][i % 2];
        body += &format!(
            "{{\"ts\":\"2026-03-01T10:{:02}:30Z\",\"host\":\"{host}\",\"app\":\"payments\",\"level\":\"error\",\"msg\":\"upstream tls handshake with 10.9.0.{} failed: certificate expired at 2026-02-28\"}}\n",
            10 + i % 10,
            i % 4
        );
    }
    let (status, answer) = s.ingest("app", body, "application/x-ndjson");
    assert_eq!(status, 200, "{answer}");
    let expected = 2 * 30 * 18 + 40;
    s.wait_total("*", &[("start", "2026-03-01T00:00:00Z")], expected);
    let check = |s: &Server| {
        let (status, body) = get(
            s,
            "/api/v1/compare",
            &[
                ("start", "2026-03-01T10:00:00Z"),
                ("end", "2026-03-01T10:30:00Z"),
            ],
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["baseline"]["start"], "2026-03-01T09:30:00.000000000Z",
            "{body}"
        );
        assert_eq!(body["window"]["total"], 30 * 18 + 40, "{body}");
        let first = &body["patterns"][0];
        assert_eq!(first["kind"], "new", "{body}");
        assert!(
            first["value"]
                .as_str()
                .unwrap()
                .starts_with("upstream tls handshake with <*> failed"),
            "{body}"
        );
        assert_eq!(first["count"], 40, "{body}");
        let hosts: Vec<&str> = body["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["value"].as_str())
            .collect();
        assert!(
            hosts.len() >= 2 && hosts[..2].contains(&"web-4") && hosts[..2].contains(&"web-5"),
            "{body}"
        );
        assert_eq!(body["apps"][0]["value"], "payments", "{body}");
        assert_eq!(body["severities"][0]["value"], "error", "{body}");
        // Unchanged kinds are not news.
        for p in body["patterns"].as_array().unwrap() {
            if p["value"].as_str().unwrap().contains("traffic") {
                assert!(p["score"].as_f64().unwrap() < 4.0, "{p}");
            }
        }
        body
    };
    check(&s);
    // Sealed, a match-everything compare reads segment summaries; the answer is the same.
    s.wait_sealed("app", expected);
    check(&s);
    // The command line says the same.
    let out = logsift(&[
        "compare",
        "--server",
        &s.http,
        "--start",
        "2026-03-01T10:00:00Z",
        "--end",
        "2026-03-01T10:30:00Z",
    ]);
    let first_row = out.lines().nth(4).unwrap_or_default();
    assert!(
        first_row.starts_with("new")
            && first_row.contains("upstream tls handshake with <*> failed"),
        "{out}"
    );
    assert!(out.contains("web-4") && out.contains("payments"), "{out}");
    let out = logsift(&["patterns", "--server", &s.http, "--size", "2", "host:web-5"]);
    assert!(
        out.lines().nth(1).unwrap_or_default().contains("traffic"),
        "{out}"
    );
    assert!(
        out.contains("200 matches, 4 patterns; 80 in patterns not listed, 0 without a pattern"),
        "{out}"
    );
    // A query narrows both ranges alike.
    let (status, body) = get(
        &s,
        "/api/v1/compare",
        &[
            ("q", "host:web-4"),
            ("start", "2026-03-01T10:00:00Z"),
            ("end", "2026-03-01T10:30:00Z"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["window"]["total"], 30 * 3 + 20, "{body}");
    assert_eq!(body["patterns"][0]["count"], 20, "{body}");
    let (status, body) = get(
        &s,
        "/api/v1/compare",
        &[
            ("start", "2026-03-01T10:00:00Z"),
            ("end", "2026-03-01T10:30:00Z"),
            ("baseline_start", "2026-03-01T10:00:00Z"),
            ("baseline_end", "2026-03-01T09:00:00Z"),
        ],
    );
    assert_eq!(status, 400, "{body}");
}

/// A sealed segment answers a match-everything listing or comparison from its summary; a
/// query that matches the same records (every line carries `summed`) reads the records. The
/// answers must be the same, whole or cut by a range, at any interval.
#[test]
fn segment_summaries_answer_patterns_and_compare_like_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &format!("{BLOCKS}seal_idle_ms = 500\n"));
    let mut body = String::new();
    let mut expected = 0;
    for hour in 8..11 {
        for minute in (0..60).step_by(7) {
            let ts = format!("2026-03-01T{hour:02}:{minute:02}:{:02}Z", minute % 50);
            body += &lines(1 + minute % 3, &ts, &["web-1", "web-2", "web-3"], "summed");
            expected += 3 * (1 + minute % 3);
            if hour == 10 && minute < 30 {
                body += &format!(
                    "{{\"ts\":\"{ts}\",\"host\":\"web-2\",\"level\":\"error\",\"msg\":\"disk /dev/sd{} is full summed\"}}\n",
                    ["a", "b"][minute % 2]
                );
                expected += 1;
            }
        }
    }
    let (status, answer) = s.ingest("app", body, "application/x-ndjson");
    assert_eq!(status, 200, "{answer}");
    s.wait_sealed("app", expected as u64);
    let same = |path: &str, params: &[(&str, &str)]| {
        let answer = |q: &str| {
            let mut with_q = params.to_vec();
            with_q.push(("q", q));
            let (status, mut body) = get(&s, path, &with_q);
            assert_eq!(status, 200, "{path} {with_q:?}: {body}");
            body.as_object_mut().unwrap().remove("took_ms");
            body
        };
        let (summed, read) = (answer(""), answer("summed"));
        assert_eq!(summed, read, "{path} {params:?}");
        summed
    };
    let whole = same("/api/v1/patterns", &[("size", "10")]);
    assert_eq!(whole["total"], expected, "{whole}");
    assert_eq!(whole["distinct"], 4, "{whole}");
    assert!(whole["patterns"][0]["example"]["id"].is_string(), "{whole}");
    for params in [
        &[("size", "10"), ("interval", "5m")][..],
        &[("size", "10"), ("interval", "90s")],
        &[
            ("start", "2026-03-01T09:30:00Z"),
            ("end", "2026-03-01T10:15:00Z"),
        ],
        &[
            ("start", "2026-03-01T09:30:20Z"),
            ("end", "2026-03-01T10:15:00Z"),
            ("interval", "1m"),
        ],
    ] {
        same("/api/v1/patterns", params);
    }
    for (start, end) in [
        ("2026-03-01T10:00:00Z", "2026-03-01T10:30:00Z"),
        ("2026-03-01T10:00:30Z", "2026-03-01T10:21:00Z"),
    ] {
        let body = same("/api/v1/compare", &[("start", start), ("end", end)]);
        assert_eq!(
            body["patterns"][0]["value"], "disk <*> is full summed",
            "{body}"
        );
        if start == "2026-03-01T10:00:00Z" {
            assert_eq!(body["patterns"][0]["kind"], "new", "{body}");
            assert_eq!(body["patterns"][0]["count"], 5, "{body}");
        }
    }
}
