//! What auditors rely on: complete, verifiable exports; the access audit trail; legal holds
//! that retention respects; erasure that removes exactly what was asked and is recorded.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{client, post_json as post, Server, BIN};
use serde_json::{json, Value};

/// Segments of 2000 records, never merged, so that exports cross sealed and hot parts.
const CONFIG: &str = "[index]\nseal_docs = 2000\nmerge_factor = 0\n";

/// `n` records, one second apart from 2024-03-01, every 7th mentioning alice.
fn seed(s: &Server, n: usize, batch: usize) {
    seed_with(s, n, batch, |_| {});
}

/// [`seed`], calling `after` with the number of batches sent after each is searchable.
fn seed_with(s: &Server, n: usize, batch: usize, after: impl Fn(usize)) {
    for b in (0..n).step_by(batch) {
        let body: String = (b..(b + batch).min(n))
            .map(|i| {
                let user = if i % 7 == 0 { "alice" } else { "bob" };
                format!(
                    "{{\"timestamp\":{},\"host\":\"db-{}\",\"level\":\"info\",\"msg\":\"audit record r{i} for {user}, with \\\"quotes\\\" and a comma\"}}\n",
                    1_709_251_200 + i,
                    i % 3
                )
            })
            .collect();
        let (status, answer) = s.ingest("logs", body, "application/x-ndjson");
        assert_eq!(status, 200, "{answer}");
        // Each batch committed on its own, so that seals happen at batch boundaries.
        s.wait_total("audit", &[("limit", "0")], (b + batch).min(n) as u64);
        after(b / batch + 1);
    }
}

/// Every id a search returns, page by page.
fn search_ids(s: &Server, q: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = vec![("limit", "5000"), ("sort", "asc")];
        if let Some(c) = &cursor {
            params.push(("cursor", c.as_str()));
        }
        let (status, body) = s.search(q, &params);
        assert_eq!(status, 200, "{body}");
        ids.extend(
            body["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].as_str().unwrap().to_string()),
        );
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return ids,
        }
    }
}

fn logsift(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn save_key(s: &Server, dir: &Path) -> String {
    let (status, keys) = s.get("/api/v1/keys");
    assert_eq!(status, 200);
    let path = dir.join("server.pub");
    std::fs::write(&path, keys["keys"][0]["public_key"].as_str().unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

fn audit_entries(s: &Server, q: &str) -> Vec<Value> {
    let (status, body) = s.search(q, &[("index", "_audit"), ("limit", "1000")]);
    assert_eq!(status, 200, "{body}");
    body["hits"].as_array().unwrap().clone()
}

fn wait_audit(s: &Server, q: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hits = audit_entries(s, q);
        if hits.len() >= n {
            return hits;
        }
        assert!(Instant::now() < deadline, "audit entries for {q}: {hits:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_export_holds_exactly_what_search_finds_and_verify_catches_any_change() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), CONFIG);
    seed(&s, 9_000, 1_500);
    let expected = search_ids(&s, "alice");
    assert_eq!(expected.len(), 1286);

    let out = dir.path().join("alice.ndjson");
    let out_s = out.to_str().unwrap();
    let (ok, log) = logsift(&["export", "alice", "--server", &s.http, "-o", out_s]);
    assert!(ok, "{log}");
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<String> = lines
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        got, expected,
        "the export is the search's records, oldest first"
    );
    assert!(lines[0]["raw"].as_str().unwrap().contains("alice"));
    assert!(lines
        .windows(2)
        .all(|w| w[0]["timestamp"].as_str() <= w[1]["timestamp"].as_str()));

    let manifest = format!("{out_s}.manifest.json");
    let key = save_key(&s, dir.path());
    let m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(m["manifest"]["records"], 1286);
    assert_eq!(m["manifest"]["query"], "alice");
    assert!(
        !m["manifest"]["segments"].as_array().unwrap().is_empty(),
        "sealed segments are named: {m}"
    );
    let (ok, log) = logsift(&["export", "verify", out_s, &manifest, "--key", &key]);
    assert!(ok && log.contains("ok: matches"), "{log}");

    // A changed byte.
    let mut bytes = text.clone().into_bytes();
    let at = text.find("alice").unwrap();
    bytes[at] = b'A';
    std::fs::write(&out, &bytes).unwrap();
    let (ok, log) = logsift(&["export", "verify", out_s, &manifest, "--key", &key]);
    assert!(!ok && log.contains("FAILED sha256"), "{log}");
    assert!(!log.contains("record count"), "{log}");
    // A removed line.
    let cut: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&out, cut).unwrap();
    let (ok, log) = logsift(&["export", "verify", out_s, &manifest, "--key", &key]);
    assert!(
        !ok && log.contains("holds 1285 records, the manifest says 1286"),
        "{log}"
    );
    // The right file, the wrong key.
    std::fs::write(&out, &text).unwrap();
    let other = tempfile::tempdir().unwrap();
    let s2 = Server::start_in(other.path(), "");
    let wrong = save_key(&s2, other.path());
    let (ok, log) = logsift(&["export", "verify", out_s, &manifest, "--key", &wrong]);
    assert!(!ok && log.contains("FAILED signature"), "{log}");
    assert!(log.contains("FAILED key"), "{log}");
    // A forged count in the manifest.
    let mut forged = m.clone();
    forged["manifest"]["records"] = json!(1285);
    let forged_path = dir.path().join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let (ok, log) = logsift(&[
        "export",
        "verify",
        out_s,
        forged_path.to_str().unwrap(),
        "--key",
        &key,
    ]);
    assert!(!ok && log.contains("FAILED signature"), "{log}");

    // A manifest of a version this logsift does not know is refused by name, not verified
    // as if it were version 1.
    let mut later = forged.clone();
    later["manifest"]["version"] = json!(2);
    let later_path = dir.path().join("later.json");
    std::fs::write(&later_path, later.to_string()).unwrap();
    let (ok, log) = logsift(&["export", "verify", out_s, later_path.to_str().unwrap()]);
    assert!(
        !ok && log.contains("export manifest version 2 is unknown to this logsift"),
        "{log}"
    );

    // CSV, zstd-compressed, over the whole data set.
    let csv = dir.path().join("all.csv.zst");
    let csv_s = csv.to_str().unwrap();
    let (ok, log) = logsift(&[
        "export", "*", "--server", &s.http, "-o", csv_s, "--format", "csv",
    ]);
    assert!(ok, "{log}");
    let (ok, log) = logsift(&[
        "export",
        "verify",
        csv_s,
        &format!("{csv_s}.manifest.json"),
        "--key",
        &key,
    ]);
    assert!(ok && log.contains("9000 records"), "{log}");
    let plain = zstd::decode_all(&std::fs::read(&csv).unwrap()[..]).unwrap();
    assert!(String::from_utf8(plain)
        .unwrap()
        .starts_with("timestamp,id,index,severity"));
}

#[test]
fn an_interrupted_export_resumes_into_one_verifiable_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), CONFIG);
    seed(&s, 6_000, 2_000);
    let full = dir.path().join("full.ndjson");
    let full_s = full.to_str().unwrap();
    let (ok, log) = logsift(&["export", "audit", "--server", &s.http, "-o", full_s]);
    assert!(ok, "{log}");
    let text = std::fs::read_to_string(&full).unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(format!("{full_s}.manifest.json")).unwrap()).unwrap();

    // New records arrive meanwhile: the resumed export still holds the pinned set.
    let (status, _) = s.ingest(
        "logs",
        "{\"timestamp\":1709251300,\"msg\":\"audit record late arrival\"}\n",
        "application/x-ndjson",
    );
    assert_eq!(status, 200);
    s.wait_total("audit", &[("limit", "0")], 6001);

    // The state an interruption after 2,500 records leaves: the file cut after that record
    // and the progress file the CLI keeps.
    let kept: Vec<&str> = text.lines().take(2500).collect();
    let prefix: String = kept.iter().map(|l| format!("{l}\n")).collect();
    let last: Value = serde_json::from_str(kept[2499]).unwrap();
    let part = dir.path().join("part.ndjson");
    let part_s = part.to_str().unwrap();
    // Bytes past the checkpoint (a half-written record) are cut away by --resume.
    std::fs::write(&part, format!("{prefix}{{\"partial")).unwrap();
    let ts = last["timestamp"].as_str().unwrap();
    let ns = chrono_ns(ts);
    let progress = json!({
        "request": {"q": "audit", "format": "ndjson"},
        "max_id": manifest["manifest"]["max_id"],
        "records": 2500,
        "file_bytes": prefix.len(),
        "cursor": format!("{ns}_{}", last["id"].as_str().unwrap()),
    });
    std::fs::write(format!("{part_s}.progress"), progress.to_string()).unwrap();
    // Without --resume the leftover is refused rather than overwritten.
    let (ok, log) = logsift(&["export", "audit", "--server", &s.http, "-o", part_s]);
    assert!(!ok && log.contains("--resume"), "{log}");
    let (ok, log) = logsift(&[
        "export", "audit", "--server", &s.http, "-o", part_s, "--resume",
    ]);
    assert!(ok, "{log}");
    assert_eq!(std::fs::read_to_string(&part).unwrap(), text);
    assert!(!Path::new(&format!("{part_s}.progress")).exists());
    let key = save_key(&s, dir.path());
    let (ok, log) = logsift(&[
        "export",
        "verify",
        part_s,
        &format!("{part_s}.manifest.json"),
        "--key",
        &key,
    ]);
    assert!(ok && log.contains("6000 records"), "{log}");
}

/// ns since the epoch of an RFC 3339 time as hits carry it (`...T..:..:..(.fraction)Z`).
fn chrono_ns(ts: &str) -> i64 {
    let (date, time) = ts.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let frac_ns: i64 = format!("{frac:0<9}")[..9].parse().unwrap();
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1_000_000_000) + frac_ns
}

#[test]
fn every_access_is_in_the_audit_trail_which_ingest_cannot_write() {
    let s = Server::start();
    seed(&s, 50, 50);
    let (status, _) = s.search("alice", &[("start", "2024-03-01T00:00:00Z")]);
    assert_eq!(status, 200);
    let (status, _) = s.get("/api/v1/histogram?q=bob");
    assert_eq!(status, 200);
    let (status, _) = s.get("/api/v1/terms?field=host&q=alice");
    assert_eq!(status, 200);
    let (status, _) = s.search("alice AND (", &[]);
    assert_eq!(status, 400);
    // A tail opened and closed.
    let mut tail = client()
        .get(format!("{}/api/v1/tail?q=alice", s.http))
        .send()
        .unwrap();
    assert_eq!(tail.status(), 200);
    let _ = std::io::Read::read(&mut tail, &mut [0u8; 1]);
    drop(tail);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.ndjson");
    let (ok, log) = logsift(&[
        "export",
        "bob",
        "--server",
        &s.http,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{log}");

    let searches = wait_audit(&s, "fields.action:search", 2);
    let ok_search = searches
        .iter()
        .find(|h| h["fields"]["outcome"] == "ok")
        .expect("the successful search");
    assert_eq!(ok_search["fields"]["query"], "alice");
    assert_eq!(ok_search["fields"]["results"], 8, "{ok_search}");
    assert_eq!(ok_search["fields"]["start"], "2024-03-01T00:00:00Z");
    // Without tokens the caller is named by its address.
    assert!(
        ok_search["fields"]["who"]
            .as_str()
            .unwrap()
            .starts_with("anonymous 127.0.0.1:"),
        "{ok_search}"
    );
    assert!(searches
        .iter()
        .any(|h| h["fields"]["outcome"] == "refused: 400 Bad Request"));
    wait_audit(&s, "fields.action:histogram", 1);
    let terms = wait_audit(&s, "fields.action:terms", 1);
    assert_eq!(terms[0]["fields"]["field"], "host");
    wait_audit(&s, "fields.action:tail", 1);
    let exports: Vec<Value> = wait_audit(&s, "fields.action:export AND fields.outcome:ok", 2)
        .into_iter()
        .filter(|h| h["fields"]["action"] == "export")
        .collect();
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert_eq!(exports[0]["fields"]["results"], 42, "{:?}", exports[0]);
    assert_eq!(exports[0]["fields"]["query"], "bob");
    assert!(exports[0]["fields"]["sha256"].as_str().unwrap().len() == 64);

    // Ingest clients cannot write the trail, and default searches do not see it.
    let (status, body) = s.ingest("_audit", "{\"msg\":\"forged\"}\n", "application/x-ndjson");
    assert_eq!(status, 400, "{body}");
    let (_, all) = s.search("", &[("limit", "0")]);
    assert_eq!(all["total"], 50);
}

#[test]
fn retention_spares_what_a_hold_covers_until_it_is_released() {
    let dir = tempfile::tempdir().unwrap();
    // Records from 2024 are far older than a day: retention deletes every sealed segment
    // unless a hold covers it.
    let config =
        "[index]\nseal_docs = 1000\nmerge_factor = 0\n[indexes.logs]\nretention_age_secs = 86400\n";
    let s = Server::start_in(dir.path(), "[index]\nseal_docs = 1000\nmerge_factor = 0\n");
    // Holds first (placed through the API), then data, then retention (on restart).
    let (status, hold) = post(
        &s,
        "/api/v1/holds",
        json!({"index": "logs", "start": "2024-03-01T00:00:00Z", "end": "2024-03-01T00:10:00Z", "reason": "case 42"}),
    );
    assert_eq!(status, 201, "{hold}");
    let (status, bad) = post(&s, "/api/v1/holds", json!({"index": "logs", "reason": " "}));
    assert_eq!(status, 400, "{bad}");
    // One segment per batch: each batch is sealed before the next is sent (a batch arriving
    // while the previous seal runs would be sealed with the one after it).
    seed_with(&s, 3_000, 1_000, |batches| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.get("/api/v1/segments").1["indexes"][0]["segments"]
            .as_array()
            .map_or(0, |a| a.len())
            < batches
        {
            assert!(Instant::now() < deadline, "batch {batches} was not sealed");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert!(s.stop().success());

    let s = Server::start_in(dir.path(), config);
    let (_, holds) = s.get("/api/v1/holds");
    assert_eq!(holds["holds"][0]["reason"], "case 42", "{holds}");
    // The first segment (records 0-999, 00:00 to 00:16) overlaps the hold; the others go.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, segs) = s.get("/api/v1/segments");
        let live: Vec<u64> = segs["indexes"][0]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["docs"].as_u64().unwrap())
            .collect();
        if live == [1000] {
            break;
        }
        assert!(Instant::now() < deadline, "{segs}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, body) = s.search("audit", &[("limit", "0")]);
    assert_eq!(body["total"], 1000);

    // Erasure is refused while the hold covers the range.
    let (status, refused) = post(&s, "/api/v1/delete", json!({"q": "alice", "index": "logs"}));
    assert_eq!(status, 409, "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("case 42"));

    // Released, the segment goes at the next retention pass.
    let id = hold["id"].as_str().unwrap();
    let resp = client()
        .delete(format!("{}/api/v1/holds/{id}", s.http))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.search("audit", &[("limit", "0")]).1["total"] != 0 {
        assert!(Instant::now() < deadline, "the released segment stayed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let placed = wait_audit(&s, "fields.action:\"holds delete\"", 1);
    assert_eq!(placed[0]["fields"]["reason"], "case 42");
}

#[test]
fn erasure_removes_exactly_the_matches_and_the_chain_records_it() {
    let dir = tempfile::tempdir().unwrap();
    // No idle seal: the last 1,000 records must still be in the hot tier when the erasure
    // comes, however long the searches before it take on a loaded machine.
    let s = Server::start_in(dir.path(), &format!("{CONFIG}seal_idle_ms = 0\n"));
    seed(&s, 5_000, 1_000);
    let all_before: HashSet<String> = search_ids(&s, "audit").into_iter().collect();
    let alice: HashSet<String> = search_ids(&s, "alice").into_iter().collect();
    assert_eq!(alice.len(), 715);
    // The seal at 4,000 records may still be running: wait until both are catalogued.
    let deadline = Instant::now() + Duration::from_secs(60);
    let before: Vec<Value> = loop {
        let (_, segs) = s.get("/api/v1/segments");
        let listed = segs["indexes"][0]["segments"].as_array().unwrap().clone();
        if listed.len() >= 2 {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "two seals never finished: {segs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(before.len(), 2);

    let (status, report) = post(&s, "/api/v1/delete", json!({"q": "alice", "index": "logs"}));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["erased"], 715, "{report}");
    // Matches still in the hot tier are sealed first, then rewritten like the others: one
    // more segment than were sealed before.
    assert!(report["hot"].as_u64().unwrap() > 0, "{report}");
    let rewritten = before.len() + 1;
    assert_eq!(
        report["rewritten"].as_array().unwrap().len(),
        rewritten,
        "{report}"
    );
    assert_eq!(s.search("alice", &[("limit", "0")]).1["total"], 0);
    let all_after: HashSet<String> = search_ids(&s, "audit").into_iter().collect();
    let expected: HashSet<String> = all_before.difference(&alice).cloned().collect();
    assert_eq!(all_after, expected, "exactly the matches are gone");

    let erasures = wait_audit(&s, "fields.action:delete", 1);
    assert_eq!(erasures[0]["fields"]["results"], 715);
    assert_eq!(erasures[0]["fields"]["query"], "alice");
    let data = s.data_dir.clone();
    assert!(s.stop().success());
    // The catalog says what replaced what, and verify still passes.
    let catalog: Value =
        serde_json::from_slice(&std::fs::read(data.join("indexes/logs/catalog.json")).unwrap())
            .unwrap();
    let entries = catalog["entries"].as_array().unwrap();
    let erased_adds = entries
        .iter()
        .filter(|e| {
            e["action"] == "add" && e["reason"].as_str().unwrap_or("").starts_with("erasure by")
        })
        .count();
    assert_eq!(erased_adds, rewritten, "{catalog}");
    assert!(
        entries.iter().any(|e| e["reason"] == "sealed: for erasure"),
        "{catalog}"
    );
    for old in &before {
        let id = old["segment"].as_str().unwrap();
        assert!(
            entries.iter().any(|e| e["action"] == "delete"
                && e["segment"] == id
                && e["reason"].as_str().unwrap().starts_with("erased into")),
            "{id} not recorded as replaced: {catalog}"
        );
    }
    let (ok, log) = logsift(&["segments", "verify", "--data-dir", data.to_str().unwrap()]);
    assert!(ok, "{log}");
    // The erased records stay gone after a restart (the WAL does not bring them back).
    let s = Server::start_in(dir.path(), CONFIG);
    s.wait_total("audit", &[("limit", "0")], (5000 - 715) as u64);
    assert_eq!(s.search("alice", &[("limit", "0")]).1["total"], 0);
}

/// Issue #17: with tokens on, 200 requests without a token, each with a 60 KB query, left 200
/// `_audit` records each holding the whole query. Refusals are still all accounted for: the
/// first in full (its query capped, with its length), the rest folded into one summary.
#[test]
fn a_flood_of_refused_calls_leaves_a_bounded_audit_trail() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = common::create_token(&tmp.path().join("data"), &["admin"], &[]);
    let s = Server::start_in(tmp.path(), "");
    let huge = format!("needle {}", "x".repeat(60_000));
    for _ in 0..200 {
        let (status, _) = s.search(&huge, &[]);
        assert_eq!(status, 401);
    }
    // The summary is written once the 10 s window closes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let refusals = loop {
        let (status, body) = s.search_as(
            &admin,
            "fields.action:search AND fields.outcome:refused*",
            &[("index", "_audit"), ("limit", "1000")],
        );
        assert_eq!(status, 200, "{body}");
        let hits = body["hits"].as_array().unwrap().clone();
        if hits.iter().any(|h| h["fields"]["repeated"].is_number()) {
            break hits;
        }
        assert!(Instant::now() < deadline, "no summary record: {body}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    let full = refusals
        .iter()
        .find(|h| h["fields"]["repeated"].is_null())
        .unwrap();
    let summary = refusals
        .iter()
        .find(|h| h["fields"]["repeated"].is_number())
        .unwrap();
    let query = full["fields"]["query"].as_str().unwrap();
    assert!(query.starts_with("needle xxx") && query.ends_with("…[truncated]"));
    assert!(query.len() < 2100, "{}", query.len());
    assert_eq!(full["fields"]["query_bytes"], huge.len());
    assert_eq!(full["fields"]["outcome"], "refused: 401 Unauthorized");
    assert_eq!(summary["fields"]["repeated"], 199, "{summary}");
    assert_eq!(summary["fields"]["caller"], "peer 127.0.0.1", "{summary}");
    assert_eq!(summary["fields"]["outcome"], "refused: 401 Unauthorized");
    assert_eq!(summary["fields"]["queries"][0], query);
    let stored: usize = refusals
        .iter()
        .map(|h| h["raw"].as_str().unwrap().len())
        .sum();
    assert!(stored < 16 * 1024, "{stored} bytes of audit records");
    let metrics = s.metrics_text(Some(&admin));
    assert!(
        metrics.contains("logsift_audit_refusals_folded_total 199\n"),
        "{metrics}"
    );
    // Calls that are answered are still recorded one by one.
    for _ in 0..3 {
        assert_eq!(s.search_as(&admin, "needle", &[]).0, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = s.search_as(
            &admin,
            // This polling is audited too; it names the index.
            "fields.action:search AND fields.outcome:ok AND fields.query:needle \
             AND NOT fields.index:_audit",
            &[("index", "_audit"), ("limit", "0")],
        );
        if body["total"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "total {}", body["total"]);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Refusals folded into a window that is still open when the server stops are not lost.
#[test]
fn folded_refusals_are_written_at_a_graceful_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = common::create_token(&tmp.path().join("data"), &["admin"], &[]);
    let s = Server::start_in(tmp.path(), "");
    for _ in 0..3 {
        assert_eq!(s.search("folded", &[]).0, 401);
    }
    assert!(s.stop().success());
    let s = Server::start_in(tmp.path(), "");
    let body = s.wait_total_as(
        &admin,
        "fields.action:search AND fields.outcome:refused*",
        &[("index", "_audit")],
        2,
    );
    let repeated: Vec<&Value> = body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["fields"].get("repeated"))
        .collect();
    assert_eq!(repeated, [&json!(2)], "{body}");
}
