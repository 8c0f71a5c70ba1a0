//! Catalogs in PostgreSQL (`[metastore] url = "postgres://..."`, issue #18), against a real
//! PostgreSQL 15 cluster made by the test (`common::pg`): with segments in an S3-protocol
//! server too, a new node on an empty data directory serves everything sealed before; a data
//! directory's `catalog.json` moves into the table; and while PostgreSQL is down, seals wait
//! and nothing acknowledged is lost.

mod common;

use common::pg::Pg;
use common::s3::S3;
use common::{all_messages, segments_verify_config, wait_until, Server};

const SEAL_QUICKLY: &str = "[index]\nseal_idle_ms = 300\n";

fn metastore(pg: &Pg) -> String {
    format!("[metastore]\nurl = \"{}\"\n", pg.url())
}

fn ingest_batch(s: &Server, batch: u32, n: u32) {
    let body: String = (0..n)
        .map(|i| format!("{{\"msg\":\"catalogued b{batch}r{i}\"}}\n"))
        .collect();
    let (status, resp) = s.ingest("logs", body, "application/x-ndjson");
    assert_eq!(status, 200, "{resp}");
}

/// A PostgreSQL cluster, an S3-protocol server, and the config overlay that uses both, with
/// segments under `prefix`.
fn cluster(dir: &std::path::Path, prefix: &str) -> (Pg, S3, String) {
    let pg = Pg::start(&dir.join("pg"));
    let s3 = S3::start(&dir.join("s3"), "segments");
    let config = format!(
        "{SEAL_QUICKLY}{}{}",
        metastore(&pg),
        s3.storage_config("segments", prefix)
    );
    (pg, s3, config)
}

/// Two server directories under `dir`.
fn nodes(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (a, b) = (dir.join("node-a"), dir.join("node-b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    (a, b)
}

fn each_once(s: &Server, records: usize) {
    let found = all_messages(s, "catalogued");
    assert_eq!(found.len(), records, "records found");
    assert!(found.values().all(|&c| c == 1), "a record was found twice");
}

#[test]
fn with_catalogs_in_postgresql_and_segments_in_s3_a_new_node_serves_what_was_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, _s3, config) = cluster(dir.path(), "cluster");
    let (node_a, node_b) = nodes(dir.path());
    let s = Server::start_in(&node_a, &config);
    for batch in 0..3 {
        ingest_batch(&s, batch, 150);
        s.wait_sealed("logs", u64::from(batch + 1) * 150);
    }
    assert_eq!(
        pg.sql("SELECT count(*) FROM logsift_catalog WHERE index_name = 'logs'"),
        "3"
    );
    assert!(
        !node_a.join("data/indexes/logs/catalog.json").exists(),
        "the catalog went to a file"
    );
    assert_eq!(s.stop().code(), Some(0));

    // Another machine: nothing of node A's disk, the same PostgreSQL and object store.
    let s = Server::start_in(&node_b, &config);
    each_once(&s, 450);
    let (_, hits) = s.search("b2r149", &[]);
    assert_eq!(hits["total"], 1, "{hits}");
    // Node B's records get ids above every catalogued one, so they are sealed, not skipped.
    ingest_batch(&s, 3, 150);
    s.wait_sealed("logs", 600);
    each_once(&s, 600);
    assert_eq!(s.stop().code(), Some(0));

    let (ok, text) = segments_verify_config(&node_b);
    assert!(ok, "{text}");
    assert!(text.contains("logs: ok, 4 segments"), "{text}");
}

#[test]
fn a_catalog_file_moves_into_postgresql_and_while_it_is_down_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = Pg::start(&dir.path().join("pg"));
    // First without a metastore: the catalog is catalog.json.
    let s = Server::start_in(dir.path(), SEAL_QUICKLY);
    ingest_batch(&s, 0, 100);
    s.wait_sealed("logs", 100);
    assert_eq!(s.stop().code(), Some(0));
    assert!(dir.path().join("data/indexes/logs/catalog.json").exists());

    let config = format!("{SEAL_QUICKLY}{}", metastore(&pg));
    let s = Server::start_in(dir.path(), &config);
    assert_eq!(
        pg.sql("SELECT count(*) FROM logsift_catalog WHERE index_name = 'logs'"),
        "1",
        "catalog.json was imported"
    );
    each_once(&s, 100);

    pg.pause();
    ingest_batch(&s, 1, 100);
    s.wait_total("catalogued", &[("limit", "0")], 200);
    wait_until(60, || {
        (!s.log().contains("sealing failed; will retry"))
            .then(|| "no failed seal logged yet".to_string())
    });
    assert_eq!(s.sealed_docs("logs"), 100);
    each_once(&s, 200);

    pg.resume();
    s.wait_sealed("logs", 200);
    assert_eq!(
        pg.sql("SELECT count(*) FROM logsift_catalog WHERE index_name = 'logs'"),
        "2"
    );
    s.kill9();
    let s = Server::start_in(dir.path(), &config);
    each_once(&s, 200);
}

/// A second server on the same PostgreSQL is refused at start while the first runs: record
/// ids are each process's WAL positions, so a second writer's records could be taken for
/// sealed ones. Once the first stops, the second starts and serves what the first sealed.
#[test]
fn a_second_writer_is_refused_at_start_until_the_first_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, _s3, config) = cluster(dir.path(), "one-writer");
    let (node_a, node_b) = nodes(dir.path());
    let a = Server::start_in(&node_a, &config);
    ingest_batch(&a, 0, 50);
    a.wait_sealed("logs", 50);

    let (code, stderr) = serve_until_exit(&node_a.join("test-config.toml"), &node_b.join("data"));
    assert_ne!(code, Some(0));
    assert!(stderr.contains("writer lease"), "{stderr}");
    assert_eq!(
        pg.sql("SELECT count(*) FROM logsift_catalog WHERE index_name = 'logs'"),
        "1"
    );

    assert_eq!(a.stop().code(), Some(0));
    let b = Server::start_in(&node_b, &config);
    each_once(&b, 50);
    assert_eq!(b.stop().code(), Some(0));

    // A database written by a later catalog layout is refused by name, as an unknown
    // `catalog.json` version is.
    assert_eq!(
        pg.sql("SELECT value FROM logsift_meta WHERE key = 'catalog_format_version'"),
        "1"
    );
    pg.sql("UPDATE logsift_meta SET value = '2' WHERE key = 'catalog_format_version'");
    let (code, stderr) = serve_until_exit(&node_a.join("test-config.toml"), &node_b.join("data"));
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("catalog format version 2, this build reads 1"),
        "{stderr}"
    );
}

/// Starts `logsift serve` and waits (30 s at most) for it to exit; its exit code and stderr.
fn serve_until_exit(config: &std::path::Path, data: &std::path::Path) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["--http", "127.0.0.1:0", "--syslog-tcp", "127.0.0.1:0"])
        .args(["--syslog-udp", "127.0.0.1:0", "--json-tcp", "127.0.0.1:0"])
        .args(["--otlp-grpc", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("logsift serve kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}
