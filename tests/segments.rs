//! Sealed segments: sealing, reopening, verification, quarantine and crash recovery.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{segments_verify, Server, BIN};
use serde_json::Value;

/// Small segments, never merged, so the tests know which file holds what.
const SEAL_SMALL: &str = "[index]\nlayout = \"records\"\nseal_docs = 100\nmerge_factor = 0\n";
/// The same, sealed as block segments (#16).
const SEAL_SMALL_BLOCKS: &str = "[index]\nseal_docs = 100\nmerge_factor = 0\nlayout = \"blocks\"\n";

fn seed(s: &Server, batches: usize) {
    for b in 0..batches {
        let body: String = (0..50)
            .map(|i| {
                let n = b * 50 + i;
                format!(
                    "{{\"timestamp\":\"2024-05-01T{:02}:{:02}:{:02}Z\",\"host\":\"web-0{}\",\"msg\":\"sealed record n{n}\"}}\n",
                    n / 3600,
                    n / 60 % 60,
                    n % 60,
                    n % 3
                )
            })
            .collect();
        assert_eq!(s.ingest("logs", body, "application/x-ndjson").0, 200);
        // Let each batch be committed on its own, so the hot index fills and seals repeatedly.
        s.wait_total("sealed", &[("limit", "0")], ((b + 1) * 50) as u64);
    }
}

/// The distinct record ids among a search answer's hits.
fn hit_ids(body: &Value) -> std::collections::HashSet<&str> {
    body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect()
}

fn segment_files(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("indexes/logs/segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Seals finish in the background: waits until at least `docs` records are in segments.
fn wait_sealed(s: &Server, docs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sealed_docs(s) < docs {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {docs} records were sealed: {}",
            s.get("/api/v1/segments").1
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn sealed_docs(s: &Server) -> u64 {
    let (_, body) = s.get("/api/v1/segments");
    body["indexes"][0]["segments"]
        .as_array()
        .map_or(0, |a| a.iter().map(|e| e["docs"].as_u64().unwrap()).sum())
}

#[test]
fn sealed_segments_are_searched_survive_restart_and_verify() {
    searched_survive_restart_and_verify(SEAL_SMALL);
}

#[test]
fn block_segments_are_searched_survive_restart_and_verify() {
    searched_survive_restart_and_verify(SEAL_SMALL_BLOCKS);
}

fn searched_survive_restart_and_verify(config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), config);
    seed(&s, 9);
    let body = s.wait_total("sealed", &[("limit", "1000")], 450);
    let ids = hit_ids(&body);
    assert_eq!(
        ids.len(),
        450,
        "every record exactly once across hot and sealed parts"
    );
    wait_sealed(&s, 300);
    // Time pruning: a range that only one segment covers still answers exactly.
    s.wait_total(
        "sealed",
        &[
            ("start", "2024-05-01T00:00:00Z"),
            ("end", "2024-05-01T00:01:00Z"),
        ],
        60,
    );
    s.wait_total("host:web-01", &[("limit", "0")], 150);
    // Aggregations and context see every part too.
    let (_, terms) = s.get("/api/v1/terms?field=host&q=sealed");
    assert_eq!(terms["total"], 450, "{terms}");
    assert!(
        terms["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["count"] == 150),
        "{terms}"
    );
    let (_, histogram) = s.get("/api/v1/histogram?q=sealed&interval=1m");
    assert_eq!(histogram["total"], 450, "{histogram}");
    let oldest = s.search("sealed", &[("sort", "asc"), ("limit", "1")]).1["hits"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, context) = s.get(&format!("/api/v1/context?id={oldest}&after=5"));
    assert_eq!(status, 200, "{context}");
    assert_eq!(context["after"].as_array().unwrap().len(), 5, "{context}");
    let data = s.data_dir.clone();
    assert!(s.stop().success());

    let (ok, out) = segments_verify(&data);
    assert!(ok, "{out}");
    assert!(out.contains("logs: ok"), "{out}");
    let list = Command::new(BIN)
        .args(["segments", "list", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.lines().count() > 3, "{list}");
    // Each segment's layout, read from its file.
    let layout = if config.contains("\"blocks\"") {
        "blocks"
    } else {
        "records"
    };
    for line in list.lines().filter(|l| l.starts_with("logs ")) {
        assert_eq!(line.split_whitespace().nth(2), Some(layout), "{list}");
    }
    assert!(list.lines().any(|l| l.starts_with("logs ")), "{list}");

    let s = Server::start_in(dir.path(), config);
    s.wait_total("sealed", &[("limit", "0")], 450);
    // Every record once, whichever layout its segment has, in both orders.
    for sort in ["desc", "asc"] {
        let body = s.search("sealed", &[("sort", sort), ("limit", "1000")]).1;
        assert_eq!(hit_ids(&body).len(), 450, "{sort}");
    }
}

#[test]
fn verify_names_flipped_truncated_missing_and_substituted_segments_and_the_server_quarantines() {
    verify_names_damage_and_the_server_quarantines(SEAL_SMALL);
}

#[test]
fn verify_names_damaged_block_segments_and_the_server_quarantines() {
    verify_names_damage_and_the_server_quarantines(SEAL_SMALL_BLOCKS);
}

fn verify_names_damage_and_the_server_quarantines(config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), config);
    seed(&s, 10);
    s.wait_total("sealed", &[("limit", "0")], 500);
    wait_sealed(&s, 400);
    let data = s.data_dir.clone();
    let (_, segs) = s.get("/api/v1/segments");
    let entries: Vec<Value> = segs["indexes"][0]["segments"].as_array().unwrap().clone();
    assert!(entries.len() >= 4, "{segs}");
    assert!(s.stop().success());
    let files = segment_files(&data);
    let id = |i: usize| entries[i]["segment"].as_str().unwrap().to_string();

    // A flipped byte in the middle of the largest file of the first segment (its lines: bulk
    // data, not a footer or a directory that opening reads). Files are bundled back to back
    // in name order.
    let sizes = logsift_store::segment::BundleDirectory::open(&files[0])
        .unwrap()
        .file_sizes();
    let largest = (0..sizes.len()).max_by_key(|&i| sizes[i].1).unwrap();
    let offset: u64 = sizes[..largest].iter().map(|(_, n)| n).sum();
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = (offset + sizes[largest].1 / 2) as usize;
    bytes[mid] ^= 0x01;
    std::fs::write(&files[0], &bytes).unwrap();
    // The second cut short, the third deleted, the fourth replaced by a copy of another.
    let len = std::fs::metadata(&files[1]).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&files[1])
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    std::fs::remove_file(&files[2]).unwrap();
    std::fs::copy(&files[1], &files[3]).unwrap();

    let (ok, out) = segments_verify(&data);
    assert!(!ok, "verify must fail:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(&id(0)) && l.contains("sha256")),
        "flip not named:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains(&id(1)) && l.contains("bytes")),
        "truncation not named:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains(&id(2)) && l.contains("missing")),
        "deletion not named:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains(&id(3)) && l.contains("sha256")),
        "substitution not named:\n{out}"
    );

    // The server keeps serving what is intact and says what it set aside: the cut and the
    // missing file at once (their footers fail to open), the flipped and the substituted one
    // once the background check at start has rehashed them.
    let s = Server::start_in(dir.path(), config);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, ready) = s.get("/health/ready");
        let quarantined: Vec<String> = ready["quarantined_segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["segment"].as_str().unwrap().to_string())
            .collect();
        if (0..4).all(|i| quarantined.contains(&id(i))) {
            assert_eq!(quarantined.len(), 4, "{ready}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{ready}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (status, body) = s.search("sealed", &[("limit", "0")]);
    assert_eq!(status, 200);
    let lost: u64 = (0..4).map(|i| entries[i]["docs"].as_u64().unwrap()).sum();
    assert_eq!(body["total"].as_u64().unwrap(), 500 - lost, "{body}");
    // A record segment's flipped byte is in data only the checksum covers; where it lands in a
    // block segment's files decides whether opening it already fails.
    let log = s.log();
    assert!(
        log.contains("quarantining a segment that fails its checksum")
            || (config == SEAL_SMALL_BLOCKS && log.contains("quarantining a segment")),
        "{log}"
    );
}

/// An edited catalog (a reason rewritten after the fact) breaks its hash chain: the server
/// names it in `/health/ready` from the moment it opens the index, while the segments, which
/// pass their own checks, keep serving; `segments verify` names it too.
#[test]
fn a_broken_catalog_chain_is_reported_at_open_and_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), SEAL_SMALL);
    seed(&s, 4);
    wait_sealed(&s, 100);
    let (_, ready) = s.get("/health/ready");
    assert_eq!(
        ready["broken_catalog_chains"],
        serde_json::json!([]),
        "{ready}"
    );
    let data = s.data_dir.clone();
    assert!(s.stop().success());

    let path = data.join("indexes/logs/catalog.json");
    let mut catalog: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    catalog["entries"][0]["reason"] = Value::from("sealed: nothing to see here");
    std::fs::write(&path, serde_json::to_vec(&catalog).unwrap()).unwrap();

    let s = Server::start_in(dir.path(), SEAL_SMALL);
    let (_, ready) = s.get("/health/ready");
    let broken = ready["broken_catalog_chains"].as_array().unwrap();
    assert!(
        broken.iter().any(|b| b["index"] == "logs"),
        "the edit is reported: {ready}"
    );
    s.wait_total("sealed", &[("limit", "0")], 200);
    assert!(s.stop().success());
    let (ok, out) = segments_verify(&data);
    assert!(!ok, "verify must fail on a broken chain: {out}");
}

#[test]
fn an_interrupted_seal_is_rebuilt_from_the_wal_and_orphans_are_not_served() {
    let dir = tempfile::tempdir().unwrap();
    // Never seal on its own: the hot tier holds everything when the process dies.
    let quiet = "[index]\nseal_docs = 100000000\nseal_idle_ms = 0\n";
    let s = Server::start_in(dir.path(), quiet);
    seed(&s, 4);
    let data = s.data_dir.clone();
    assert_eq!(sealed_docs(&s), 0);
    s.kill9();
    // As if the crash hit while a seal was writing its segment: a work directory and a
    // half-written segment file the catalog does not list.
    let index_dir = data.join("indexes/logs");
    std::fs::create_dir_all(index_dir.join("building-00000000000000000200")).unwrap();
    std::fs::write(
        index_dir.join("building-00000000000000000200/meta.json"),
        b"{}",
    )
    .unwrap();
    std::fs::write(
        index_dir.join("segments/00000000000000000200.lsseg"),
        b"partial",
    )
    .unwrap();

    let s = Server::start_in(dir.path(), quiet);
    // The hot tier came back from the WAL: every record exactly once.
    let body = s.wait_total("sealed", &[("limit", "1000")], 200);
    let ids = hit_ids(&body);
    assert_eq!(ids.len(), 200);
    assert!(!index_dir.join("building-00000000000000000200").exists());
    assert!(!index_dir
        .join("segments/00000000000000000200.lsseg")
        .exists());
    // A graceful stop seals the hot tier: everything is then covered by verify, and the WAL
    // holds nothing that is not sealed.
    let data = s.data_dir.clone();
    assert!(s.stop().success());
    let (ok, out) = segments_verify(&data);
    assert!(ok, "{out}");
    let s = Server::start_in(dir.path(), quiet);
    assert_eq!(sealed_docs(&s), 200);
    s.wait_total("sealed", &[("limit", "0")], 200);
    assert!(
        s.log().contains("replayed=0"),
        "nothing left to replay after a graceful stop: {}",
        s.log()
    );
}

#[test]
fn an_idle_hot_tier_is_sealed_and_the_wal_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), "[index]\nseal_idle_ms = 300\n");
    seed(&s, 2);
    wait_sealed(&s, 100);
    // Once sealed, the WAL may drop the records: its files shrink to their headers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.metric("logsift_wal_disk_bytes") > 4096.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the WAL was not truncated after the seal: {} bytes",
            s.metric("logsift_wal_disk_bytes")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (_, body) = s.get("/api/v1/segments");
    let reason = &body["indexes"][0]["segments"][0]["reason"];
    assert_eq!(reason, "sealed: idle", "{body}");
}

#[test]
fn retention_deletes_old_segments_in_the_catalog_chain_except_under_legal_hold() {
    let dir = tempfile::tempdir().unwrap();
    // The seeded records are from 2024: a one-year age limit makes every sealed segment old,
    // and the hold keeps whatever overlaps the first two minutes of that day.
    let config = "[index]\nseal_docs = 100\nmerge_factor = 0\n[indexes.logs]\nretention_age_secs = 31536000\n\
        legal_holds = [{ start = \"2024-05-01T00:00:00Z\", end = \"2024-05-01T00:02:00Z\", reason = \"case 7\" }]\n";
    let s = Server::start_in(dir.path(), config);
    seed(&s, 8);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let segments = loop {
        let (_, body) = s.get("/api/v1/segments");
        let segs = body["indexes"][0]["segments"].as_array().unwrap().clone();
        let all_held = segs.iter().all(|e| {
            e["min_timestamp"].as_i64().unwrap() < 1_714_521_720_000_000_000 // 00:02
        });
        if !segs.is_empty() && all_held {
            break segs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let kept: u64 = segments.iter().map(|e| e["docs"].as_u64().unwrap()).sum();
    assert!(kept >= 120, "the held minutes survive: {segments:?}");
    // What is left: the held segments plus whatever is still in the hot index.
    let (_, body) = s.search("sealed", &[("limit", "0")]);
    let total = body["total"].as_u64().unwrap();
    assert!(total < 400 && total >= kept, "{body}");
    s.wait_total(
        "sealed",
        &[
            ("start", "2024-05-01T00:00:00Z"),
            ("end", "2024-05-01T00:02:00Z"),
        ],
        120,
    );
    assert!(s.metric("logsift_segments_deleted_total") >= 1.0);
    let data = s.data_dir.clone();
    assert!(s.stop().success());
    // The deletions are links in the chain, not gaps: verify still passes.
    let (ok, out) = segments_verify(&data);
    assert!(ok, "{out}");
    let catalog: Value =
        serde_json::from_slice(&std::fs::read(data.join("indexes/logs/catalog.json")).unwrap())
            .unwrap();
    let deletions = catalog["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "delete")
        .count();
    assert!(deletions >= 1);
    assert!(catalog["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["reason"] == "retention: age"));
}

#[test]
fn retention_by_size_deletes_oldest_segments_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), "[index]\nseal_docs = 100\nmerge_factor = 0\n");
    seed(&s, 8);
    let (_, body) = s.get("/api/v1/segments");
    let segs = body["indexes"][0]["segments"].as_array().unwrap().clone();
    assert!(segs.len() >= 3, "{body}");
    // Room for one segment only (stopping may seal one more, so look again afterwards).
    let largest = segs
        .iter()
        .map(|e| e["file_bytes"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(s.stop().success());
    let config = format!(
        "[index]\nseal_docs = 100\nmerge_factor = 0\n[indexes.logs]\nretention_bytes = {largest}\n"
    );
    let s = Server::start_in(dir.path(), &config);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, body) = s.get("/api/v1/segments");
        let left: Vec<Value> = body["indexes"][0]["segments"].as_array().unwrap().clone();
        if left.len() == 1 {
            let catalog: Value = serde_json::from_slice(
                &std::fs::read(s.data_dir.join("indexes/logs/catalog.json")).unwrap(),
            )
            .unwrap();
            let newest = catalog["entries"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["action"] == "add")
                .max_by_key(|e| e["max_timestamp"].as_i64().unwrap())
                .unwrap()
                .clone();
            assert_eq!(
                left[0]["segment"], newest["segment"],
                "the newest one stays"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "size retention did not run: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let catalog: Value = serde_json::from_slice(
        &std::fs::read(s.data_dir.join("indexes/logs/catalog.json")).unwrap(),
    )
    .unwrap();
    assert!(catalog["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["reason"] == "retention: size"));
}

#[test]
fn summaries_answer_whole_segment_histograms_and_terms_like_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), SEAL_SMALL);
    seed(&s, 7);
    wait_sealed(&s, 300);
    // Every sealed segment carries its summary.
    let data = s.data_dir.clone();
    for file in segment_files(&data) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            bytes
                .windows(b"logsift-summary.json".len())
                .any(|w| w == b"logsift-summary.json"),
            "{} has no summary",
            file.display()
        );
    }
    // `*` is answered from the summaries; `sealed` (a word of every record) from the
    // records. Both must agree, bucket by bucket and value by value.
    for interval in ["1m", "5m", "30s"] {
        let all = s
            .get(&format!("/api/v1/histogram?q=*&interval={interval}"))
            .1;
        let word = s
            .get(&format!("/api/v1/histogram?q=sealed&interval={interval}"))
            .1;
        assert_eq!(
            all["buckets"], word["buckets"],
            "{interval}: {all} vs {word}"
        );
        assert_eq!(all["total"], 350, "{all}");
        let ranged = |q: &str| {
            s.get(&format!(
                "/api/v1/histogram?q={q}&interval={interval}&start=2024-05-01T00:01:30Z&end=2024-05-01T00:04:00Z"
            ))
            .1
        };
        assert_eq!(ranged("*")["buckets"], ranged("sealed")["buckets"]);
    }
    for field in ["host", "app", "severity"] {
        let all = s.get(&format!("/api/v1/terms?q=*&field={field}")).1;
        let word = s.get(&format!("/api/v1/terms?q=sealed&field={field}")).1;
        for key in ["buckets", "total", "missing", "other_count"] {
            assert_eq!(all[key], word[key], "{field} {key}: {all} vs {word}");
        }
    }
    let all = s.get("/api/v1/terms?q=*&field=host&size=1").1;
    assert_eq!(all["buckets"].as_array().unwrap().len(), 1, "{all}");
    assert_eq!(
        all["other_count"].as_u64().unwrap() + all["buckets"][0]["count"].as_u64().unwrap(),
        350,
        "{all}"
    );
}
