//! Data directories written by earlier versions of the on-disk format must stay readable.
//!
//! `tests/golden/v<N>/` holds a small data directory (WAL, sealed and merged segments,
//! hash-chained catalog; v1 also an on-disk hot index, v2 segment summaries, v3 block
//! segments, v4 block segments of layout version 2, v5 of layout version 3, v6 of layout
//! version 4, v7 of layout version 5) written by the build that introduced format version N. Every later build must
//! serve it with the same answers and pass `segments verify` on it, and a `blocks` server
//! rewrites the record segments of v1 and v2 as blocks. The directory is written once, by the
//! ignored tests below, and never rewritten: a format change adds a new version next to the
//! old ones.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{segments_verify, send_tcp, Server, BIN};

/// Segments of 100 records, merged two at a time: the directory holds every kind of part.
const GOLDEN_CONFIG: &str = "[index]\nseal_docs = 100\nmerge_factor = 2\n";

fn golden_dir(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(version)
}

/// The JSON records: n in 0..300, one second apart from 2025-01-01T00:00:00Z.
fn json_batch(batch: usize) -> String {
    (batch * 100..(batch + 1) * 100)
        .map(|n| {
            format!(
                "{{\"timestamp\":\"2025-01-01T00:{:02}:{:02}Z\",\"host\":\"gold-{}\",\"level\":\"{}\",\"user\":\"u{}\",\"msg\":\"golden record n{n} word{}\"}}\n",
                n / 60,
                n % 60,
                n % 3,
                ["info", "warning", "error"][n % 3],
                n % 10,
                n % 7
            )
        })
        .collect()
}

/// 60 RFC 5424 lines over syslog TCP, one second apart from 2025-01-01T01:00:00Z.
fn syslog_lines() -> String {
    (0..60)
        .map(|i| {
            format!(
                "<34>1 2025-01-01T01:00:{i:02}Z gold-syslog goldapp 42 ID7 [meta seq=\"{i}\"] golden syslog s{i}\n"
            )
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if !name.ends_with(".lock") {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The layouts a golden directory is served with: each as written, and (records first,
/// then rewritten once quiet) as block segments.
const RECORDS: &str = "layout = \"records\"\n";
const BLOCKS: &str = "layout = \"blocks\"\nidle_recompress_ms = 300\n";

/// Writes `tests/golden/v2` with this build. Run once, by hand, when a format version is
/// introduced: `cargo test --test golden -- --ignored write_golden_v2`. (v1 was written the
/// same way by the v1 build.)
#[test]
#[ignore = "writes the golden data directory; run by hand once per format version"]
fn write_golden_v2() {
    write_golden("v2", RECORDS);
}

/// `tests/golden/v3`: block segments (with pattern ids in their headers), written the same
/// way with `layout = "blocks"`.
#[test]
#[ignore = "writes the golden data directory; run by hand once per format version"]
fn write_golden_v3() {
    write_golden("v3", BLOCKS);
}

/// `tests/golden/v4`: block segments of layout version 2 (block filters of 16 bits and 11
/// probes per id, drawn independently) whose summaries note their bodies' zstd level.
#[test]
#[ignore = "writes the golden data directory; run by hand once per format version"]
fn write_golden_v4() {
    write_golden("v4", BLOCKS);
}

/// `tests/golden/v5`: block segments of layout version 3, whose lines are stored without the
/// timestamps they spell (two more header columns say where and how, `timetext.rs`).
#[test]
#[ignore = "writes the golden data directory; run by hand once per format version"]
fn write_golden_v5() {
    write_golden("v5", BLOCKS);
}

/// `tests/golden/v6`: block segments of layout version 4, whose block index counts the words
/// most records of a block hold in a `most` field, by the records that lack them.
#[test]
#[ignore = "writes the golden data directory; run by hand once per format version"]
fn write_golden_v6() {
    write_golden("v6", BLOCKS);
}

/// `tests/golden/v7`: block segments of layout version 5, whose block index splits a word's
/// frequency into two digits (`high` field) and may keep the hot tier's index segments.
#[test]
#[ignore = "writes the golden data directory; run by hand once per format version"]
fn write_golden_v7() {
    write_golden("v7", BLOCKS);
}

fn write_golden(version: &str, layout: &str) {
    let target = golden_dir(version);
    assert!(
        !target.exists(),
        "{} exists: golden data is never rewritten",
        target.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &(GOLDEN_CONFIG.to_string() + layout));
    for batch in 0..3 {
        let (status, body) = s.ingest("logs", json_batch(batch), "application/x-ndjson");
        assert_eq!(status, 200, "{body}");
        s.wait_total("golden", &[("limit", "0")], (batch as u64 + 1) * 100);
    }
    send_tcp(s.syslog_tcp, syslog_lines().as_bytes());
    s.wait_total("golden", &[("limit", "0")], 360);
    // Wait for the three segments of 100 to become one of 200 and one of 100 (block
    // segments are not merged: three of 100).
    let merged = layout == RECORDS;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = s.get("/api/v1/segments");
        let docs: Vec<u64> = body["indexes"][0]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["docs"].as_u64().unwrap())
            .collect();
        if (docs.contains(&200) || !merged) && docs.iter().sum::<u64>() >= 300 {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let data = s.data_dir.clone();
    assert!(s.stop().success());
    copy_dir(&data, &target.join("data"));
}

/// Every segment of every index of `s`, with its layout.
fn segment_layouts(s: &Server) -> Vec<(String, String)> {
    let (_, body) = s.get("/api/v1/segments");
    body["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["segments"].as_array().unwrap().iter())
        .map(|e| {
            (
                e["segment"].as_str().unwrap().to_string(),
                e["layout"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

fn check_golden(version: &str, layout: &str) {
    let source = golden_dir(version).join("data");
    assert!(
        source.exists(),
        "{} is missing: golden data is part of the repository",
        source.display()
    );
    // Serve a copy: opening may legitimately write (WAL, hot index), the original must not
    // change.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&source, &data);

    let verify = Command::new(BIN)
        .args(["segments", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{out}");

    let config = GOLDEN_CONFIG.to_string() + layout;
    let s = Server::start_in(dir.path(), &config);
    answers(&s, false);
    // New records go on top of the old ones.
    let (status, _) = s.ingest(
        "logs",
        "{\"msg\":\"golden newcomer\"}\n",
        "application/x-ndjson",
    );
    assert_eq!(status, 200);
    s.wait_total("golden", &[("limit", "0")], 361);
    // A v1 on-disk hot index was sealed at open, as a link of the catalog chain; after a
    // graceful stop everything is in verified segments.
    let had_hot = source.join("indexes/logs/hot").exists();
    let data = s.data_dir.clone();
    assert!(s.stop().success());
    let index_dir = data.join("indexes/logs");
    assert!(!index_dir.join("hot").exists());
    let catalog = std::fs::read_to_string(index_dir.join("catalog.json")).unwrap();
    assert_eq!(
        catalog.contains("upgrade: v1 hot index sealed"),
        had_hot,
        "{catalog}"
    );
    let (ok, out) = segments_verify(&data);
    assert!(ok, "{out}");
    let s = Server::start_in(dir.path(), &config);
    s.wait_total("golden", &[("limit", "0")], 361);
    if layout != BLOCKS {
        return;
    }
    // A quiet `blocks` server rewrites the record segments as blocks, one at a time, with
    // the same answers, and the catalog chain says so.
    let deadline = Instant::now() + Duration::from_secs(90);
    while segment_layouts(&s).iter().any(|(_, l)| l != "blocks") {
        assert!(
            Instant::now() < deadline,
            "record segments left: {:?}",
            segment_layouts(&s)
        );
        // Each look is audited: the audit index must be left quiet for a while too (longer
        // than the second between two starts of background work).
        std::thread::sleep(Duration::from_millis(2500));
    }
    answers(&s, true);
    let rewritten = |c: &str| c.contains("rewritten as blocks");
    let catalog = std::fs::read_to_string(index_dir.join("catalog.json")).unwrap();
    // Only v1 and v2 hold record segments.
    assert_eq!(
        rewritten(&catalog),
        matches!(version, "v1" | "v2"),
        "{catalog}"
    );
    assert!(s.stop().success());
    let (ok, out) = segments_verify(&data);
    assert!(ok, "{out}");
}

/// The answers every golden directory gives, whatever its layout; `newcomer`: with the
/// record the check adds (received now, so the newest).
fn answers(s: &Server, newcomer: bool) {
    let golden = if newcomer { 361 } else { 360 };
    let total = |q: &str, params: &[(&str, &str)]| {
        let mut p = vec![("limit", "0")];
        p.extend_from_slice(params);
        let (status, body) = s.search(q, &p);
        assert_eq!(status, 200, "{q}: {body}");
        body["total"].as_u64().unwrap()
    };
    assert_eq!(total("golden", &[]), golden);
    assert_eq!(total("host:gold-1", &[]), 100);
    assert_eq!(total("word3", &[]), 43);
    assert_eq!(total("\"golden syslog\"", &[]), 60);
    assert_eq!(total("app:goldapp AND msgid:ID7", &[]), 60);
    assert_eq!(total("fields.user:u7", &[]), 30);
    assert_eq!(total("severity:error", &[]), 100);
    assert_eq!(
        total(
            "golden",
            &[
                ("start", "2025-01-01T00:01:00Z"),
                ("end", "2025-01-01T00:02:00Z")
            ]
        ),
        60
    );
    let (_, body) = s.search("n123", &[]);
    let hit = &body["hits"][0];
    assert_eq!(hit["host"], "gold-0", "{body}");
    assert_eq!(hit["timestamp"], "2025-01-01T00:02:03.000000000Z", "{body}");
    assert_eq!(hit["message"], "golden record n123 word4", "{body}");
    // Newest first across hot index and segments, and every record exactly once.
    let (_, all) = s.search("golden", &[("limit", "1000")]);
    let hits = all["hits"].as_array().unwrap();
    assert_eq!(hits.len() as u64, golden);
    let newest = if newcomer {
        "golden newcomer"
    } else {
        "golden syslog s59"
    };
    assert_eq!(hits[0]["message"], newest, "{all}");
    let ids: std::collections::HashSet<&str> =
        hits.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len() as u64, golden);
    // Context from a merged segment, within the same host and app.
    let id = hit["id"].as_str().unwrap();
    let (status, context) = s.get(&format!("/api/v1/context?id={id}&before=2&after=2"));
    assert_eq!(status, 200, "{context}");
    assert_eq!(context["before"].as_array().unwrap().len(), 2, "{context}");
}

#[test]
fn golden_v1_data_dir_is_served_and_verified() {
    check_golden("v1", RECORDS);
}

#[test]
fn golden_v2_data_dir_is_served_and_verified() {
    check_golden("v2", RECORDS);
}

#[test]
fn golden_v2_data_dir_is_rewritten_as_blocks() {
    check_golden("v2", BLOCKS);
}

#[test]
fn golden_v1_data_dir_is_rewritten_as_blocks() {
    check_golden("v1", BLOCKS);
}

#[test]
fn golden_v3_data_dir_is_served_and_verified() {
    check_golden("v3", BLOCKS);
}

#[test]
fn golden_v4_data_dir_is_served_and_verified() {
    check_golden("v4", BLOCKS);
}

#[test]
fn golden_v5_data_dir_is_served_and_verified() {
    check_golden("v5", BLOCKS);
}

#[test]
fn golden_v6_data_dir_is_served_and_verified() {
    check_golden("v6", BLOCKS);
}

#[test]
fn golden_v7_data_dir_is_served_and_verified() {
    check_golden("v7", BLOCKS);
}
