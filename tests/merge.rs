//! Merging sealed segments of the `records` layout (block segments are not merged): every
//! record stays exactly once, the catalog chain records the
//! merge, and a crash in the middle of one loses and duplicates nothing.

mod common;

use std::time::{Duration, Instant};

use common::{all_messages, segments_verify, wait_until, Server};
use serde_json::Value;

/// Segments of 100 records, merged two at a time.
const MERGE_SMALL: &str =
    "[index]\nlayout = \"records\"\nseal_docs = 100\nmerge_factor = 2\nmerge_max_docs = 100000\n";

fn ingest_batch(s: &Server, batch: usize, size: usize) {
    let body: String = (0..size)
        .map(|i| {
            let n = batch * size + i;
            format!(
                "{{\"timestamp\":\"2024-06-01T{:02}:{:02}:{:02}Z\",\"host\":\"db-{}\",\"msg\":\"merge record n{n}\"}}\n",
                n / 3600 % 24,
                n / 60 % 60,
                n % 60,
                n % 5
            )
        })
        .collect();
    let (status, body) = s.ingest("logs", body, "application/x-ndjson");
    assert_eq!(status, 200, "{body}");
}

fn live_segments(s: &Server) -> Vec<Value> {
    let (_, body) = s.get("/api/v1/segments");
    body["indexes"][0]["segments"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn assert_each_once(s: &Server, expected: usize) {
    let found = all_messages(s, "merge");
    let twice: Vec<_> = found.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "records found more than once: {twice:?}");
    let missing: Vec<String> = (0..expected)
        .map(|n| format!("merge record n{n}"))
        .filter(|m| !found.contains_key(m))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "records lost: {missing:?}");
    assert_eq!(found.len(), expected);
}

#[test]
fn merges_keep_every_record_once_and_are_recorded_in_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), MERGE_SMALL);
    for b in 0..12 {
        ingest_batch(&s, b, 100);
        // One commit (and so one seal) per batch.
        s.wait_total("merge", &[("limit", "0")], ((b + 1) * 100) as u64);
    }
    // Merges run every few seconds in the background; wait until one segment came out of
    // two merges (400 records), i.e. the size classes climbed.
    wait_until(60, || {
        let segs = live_segments(&s);
        let sealed: u64 = segs.iter().map(|e| e["docs"].as_u64().unwrap()).sum();
        let largest = segs.iter().map(|e| e["docs"].as_u64().unwrap()).max();
        (sealed != 1200 || largest < Some(400))
            .then(|| format!("no merge to 400 records happened: {segs:?}\n{}", s.log()))
    });
    assert_each_once(&s, 1200);
    // Time filters, aggregations and context still see the merged records.
    s.wait_total(
        "merge",
        &[
            ("start", "2024-06-01T00:00:00Z"),
            ("end", "2024-06-01T00:01:00Z"),
        ],
        60,
    );
    let (_, terms) = s.get("/api/v1/terms?field=host&q=merge");
    assert_eq!(terms["total"], 1200, "{terms}");
    let oldest = s.search("merge", &[("sort", "asc"), ("limit", "1")]).1["hits"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, context) = s.get(&format!("/api/v1/context?id={oldest}&after=3"));
    assert_eq!(status, 200, "{context}");
    assert_eq!(context["after"].as_array().unwrap().len(), 3, "{context}");

    let data = s.data_dir.clone();
    assert!(s.stop().success());
    // The chain says what was merged into what; verify walks it and rehashes every file.
    let catalog: Value =
        serde_json::from_slice(&std::fs::read(data.join("indexes/logs/catalog.json")).unwrap())
            .unwrap();
    let entries = catalog["entries"].as_array().unwrap();
    let merged_adds = entries
        .iter()
        .filter(|e| {
            e["action"] == "add" && e["reason"].as_str().unwrap_or("").starts_with("merge of")
        })
        .count();
    let merged_deletes = entries
        .iter()
        .filter(|e| {
            e["action"] == "delete"
                && e["reason"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("merged into")
        })
        .count();
    assert!(merged_adds >= 2, "{catalog}");
    assert_eq!(
        merged_deletes,
        merged_adds * 2,
        "two sources per merge: {catalog}"
    );
    let files = std::fs::read_dir(data.join("indexes/logs/segments"))
        .unwrap()
        .count();
    let live = entries.iter().filter(|e| e["action"] == "add").count() - merged_deletes;
    assert_eq!(files, live, "a merged-away segment's file was left behind");
    let (ok, out) = segments_verify(&data);
    assert!(ok, "{out}");

    let s = Server::start_in(dir.path(), MERGE_SMALL);
    assert_each_once(&s, 1200);
}

#[test]
fn kill_9_during_merges_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Larger segments so that merges take long enough to be interrupted.
    let config = "[index]\nlayout = \"records\"\nseal_docs = 2000\nmerge_factor = 2\nmerge_max_docs = 1000000\n";
    let mut sent = 0usize;
    let mut interrupted = 0;
    for _round in 0..8 {
        let s = Server::start_in(dir.path(), config);
        for _ in 0..2 {
            ingest_batch(&s, sent / 2000, 2000);
            sent += 2000;
        }
        s.wait_total("merge", &[("limit", "0")], sent as u64);
        // Kill while a merge is running when one can be caught, else after a short while.
        let deadline = Instant::now() + Duration::from_secs(8);
        let work = s.data_dir.join("indexes/logs");
        while Instant::now() < deadline {
            let merging = std::fs::read_dir(&work)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .any(|e| e.file_name().to_string_lossy().starts_with("merging-"))
                })
                .unwrap_or(false);
            if merging {
                interrupted += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        s.kill9();
    }
    let s = Server::start_in(dir.path(), config);
    assert_each_once(&s, sent);
    // The merges the kills interrupted left no file the catalog does not list.
    let listed: Vec<String> = live_segments(&s)
        .iter()
        .map(|e| format!("{}.lsseg", e["segment"].as_str().unwrap()))
        .collect();
    let data = s.data_dir.clone();
    assert!(s.stop().success());
    let (ok, out) = segments_verify(&data);
    assert!(ok, "{out}");
    for file in std::fs::read_dir(data.join("indexes/logs/segments")).unwrap() {
        let name = file.unwrap().file_name().to_string_lossy().into_owned();
        // A merge still running at the stop may have bundled its output already.
        assert!(
            listed.contains(&name) || name.contains("-m"),
            "unlisted segment file {name}"
        );
    }
    assert!(
        interrupted >= 2,
        "only {interrupted} kills landed during a merge; the test proved little"
    );
}

/// Segments are sealed at a low zstd level (paid while ingesting) and rewritten at a higher
/// one once their index is quiet: the chain records each rewrite, every record stays exactly
/// once, the files verify, and the doc stores say the new level.
#[test]
fn quiet_segments_are_recompressed_at_the_idle_level() {
    // Small doc store blocks, so that each segment has enough of them for tantivy's merge to
    // copy blocks as they are (which it does whatever the zstd level).
    const RECOMPRESS: &str =
        "[index]\nlayout = \"records\"\nseal_docs = 4000\nseal_idle_ms = 200\nmerge_factor = 0\n\
        docstore_block_bytes = 32768\nsealed_zstd_level = 1\nidle_zstd_level = 9\n\
        idle_recompress_ms = 500\n";
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), RECOMPRESS);
    for b in 0..3 {
        ingest_batch(&s, b, 4000);
        s.wait_total("merge", &[("limit", "0")], ((b + 1) * 4000) as u64);
    }
    let catalog_of = |data: &std::path::Path| -> Vec<Value> {
        let catalog: Value =
            serde_json::from_slice(&std::fs::read(data.join("indexes/logs/catalog.json")).unwrap())
                .unwrap();
        catalog["entries"].as_array().unwrap().clone()
    };
    wait_until(60, || {
        let entries = catalog_of(&s.data_dir);
        let recompressed = entries
            .iter()
            .filter(|e| e["reason"] == "recompressed at zstd level 9")
            .count();
        let sealed: u64 = live_segments(&s)
            .iter()
            .map(|e| e["docs"].as_u64().unwrap())
            .sum();
        (recompressed != 3 || sealed != 12000).then(|| {
            format!(
                "not every segment was recompressed: {entries:?}\n{}",
                s.log()
            )
        })
    });
    assert_each_once(&s, 12000);
    // Recompressed once: a quiet index is not rewritten again and again.
    std::thread::sleep(Duration::from_secs(2));
    let entries = catalog_of(&s.data_dir);
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["reason"]
                .as_str()
                .unwrap_or("")
                .starts_with("recompressed at"))
            .count(),
        3,
        "{entries:?}"
    );
    let deletes = entries
        .iter()
        .filter(|e| {
            e["action"] == "delete"
                && e["reason"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("recompressed into")
        })
        .count();
    assert_eq!(deletes, 3, "{entries:?}");
    // Each rewrite really compressed better: its file is smaller than its source's.
    for e in entries.iter().filter(|e| e["action"] == "delete") {
        let into = e["reason"]
            .as_str()
            .unwrap()
            .trim_start_matches("recompressed into ");
        let new = entries.iter().find(|n| n["segment"] == into).unwrap();
        let (before, after) = (
            e["file_bytes"].as_u64().unwrap(),
            new["file_bytes"].as_u64().unwrap(),
        );
        assert!(after < before, "{into}: {after} bytes, its source {before}");
    }
    let data = s.data_dir.clone();
    assert!(s.stop().success());
    let (ok, out) = segments_verify(&data);
    assert!(ok, "{out}");
    // The level is read back from each segment: a restart does not rewrite them again.
    let s = Server::start_in(dir.path(), RECOMPRESS);
    assert_each_once(&s, 12000);
    std::thread::sleep(Duration::from_secs(3));
    let again = catalog_of(&s.data_dir)
        .iter()
        .filter(|e| {
            e["reason"]
                .as_str()
                .unwrap_or("")
                .starts_with("recompressed at")
        })
        .count();
    assert_eq!(again, 3);
}
