//! Segments on S3-compatible object storage (`[storage] url = "s3://..."`, issue #18), against
//! a real S3-protocol server (`s3s-fs`, see `common::s3`): sealed segments are uploaded and
//! served, come back from the store when the local cache is gone, are verified against the
//! store, and a store that is down holds seals back without losing a record.

mod common;

use common::s3::S3;
use common::{all_messages, segments_verify_config, wait_until, Server};

const BUCKET: &str = "logs-bucket";
const PREFIX: &str = "prod/eu";

/// Seals a quiet index quickly, so each batch below becomes a segment.
const SEAL_QUICKLY: &str = "[index]\nseal_idle_ms = 300\n";

fn config(s3: &S3) -> String {
    format!("{SEAL_QUICKLY}{}", s3.storage_config(BUCKET, PREFIX))
}

fn ingest_batch(s: &Server, batch: u32, n: u32) {
    let body: String = (0..n)
        .map(|i| {
            format!(
                "{{\"msg\":\"stored remotely b{batch}r{i}\",\"host\":\"web-{}\"}}\n",
                i % 4
            )
        })
        .collect();
    let (status, resp) = s.ingest("logs", body, "application/x-ndjson");
    assert_eq!(status, 200, "{resp}");
}

fn each_once(s: &Server, batches: u32, n: u32) {
    let found = all_messages(s, "stored");
    assert_eq!(found.len() as u32, batches * n, "records found");
    assert!(found.values().all(|&c| c == 1), "a record was found twice");
}

#[test]
fn segments_live_in_the_object_store_and_come_back_from_it_without_the_local_cache() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(&dir.path().join("s3"), BUCKET);
    let cfg = config(&s3);
    let s = Server::start_in(dir.path(), &cfg);
    for batch in 0..3 {
        ingest_batch(&s, batch, 200);
        s.wait_sealed("logs", u64::from(batch + 1) * 200);
    }
    let objects = s3.segments(BUCKET, PREFIX, "logs");
    assert_eq!(objects.len(), 3, "one object per seal: {objects:?}");
    // Nothing of the segments is kept as the index's own files; only the cache has copies.
    let local = dir.path().join("data/indexes/logs/segments");
    assert!(!local.exists(), "{} exists", local.display());
    each_once(&s, 3, 200);
    assert_eq!(s.stop().code(), Some(0));

    // A new machine: the same data directory's catalog and WAL, no cached segment.
    std::fs::remove_dir_all(dir.path().join("data/segment-cache")).unwrap();
    let s = Server::start_in(dir.path(), &cfg);
    each_once(&s, 3, 200);
    let (_, hits) = s.search("b1r7", &[]);
    assert_eq!(hits["total"], 1, "{hits}");
    let cached = std::fs::read_dir(dir.path().join("data/segment-cache/logs"))
        .unwrap()
        .count();
    assert_eq!(cached, 3, "every served segment was downloaded");
    assert_eq!(s.stop().code(), Some(0));

    let (ok, out) = segments_verify_config(dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("logs: ok, 3 segments"), "{out}");

    // A flipped byte in the store is named, even though the cached copy is intact.
    let victim = &objects[1];
    let mut bytes = std::fs::read(victim).unwrap();
    bytes[100] ^= 0x20;
    std::fs::write(victim, bytes).unwrap();
    let (ok, out) = segments_verify_config(dir.path());
    assert!(!ok, "{out}");
    let id = victim.file_stem().unwrap().to_string_lossy().into_owned();
    assert!(
        out.contains(&format!("segment {id}: sha256")) && out.contains("altered"),
        "{out}"
    );
    // The stored object's own checksums are checked too, from the same one download.
    assert!(
        out.contains(&format!("{id}.lsseg: not a logsift segment"))
            && out.contains("fails its checksum"),
        "{out}"
    );
}

#[test]
fn while_the_object_store_is_down_seals_wait_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3::start(&dir.path().join("s3"), BUCKET);
    let cfg = config(&s3);
    let s = Server::start_in(dir.path(), &cfg);
    ingest_batch(&s, 0, 100);
    s.wait_sealed("logs", 100);

    s3.pause();
    // Acknowledged: in the WAL. Searchable from memory while the seal cannot upload.
    ingest_batch(&s, 1, 100);
    s.wait_total("stored", &[("limit", "0")], 200);
    wait_until(60, || {
        (!s.log().contains("sealing failed; will retry"))
            .then(|| "no failed seal logged yet".to_string())
    });
    assert_eq!(
        s.sealed_docs("logs"),
        100,
        "a segment was catalogued without its object"
    );
    each_once(&s, 2, 100);

    s3.resume();
    s.wait_sealed("logs", 200);
    assert_eq!(s3.segments(BUCKET, PREFIX, "logs").len(), 2);

    // A crash right after: the catalog, the WAL and the store agree on every record.
    s.kill9();
    let s = Server::start_in(dir.path(), &cfg);
    each_once(&s, 2, 100);
}

/// A segment larger than one upload part goes up in parts and comes back byte for byte; the
/// store's listing, sizes, hashes and removal see it. Through the store crate's interface,
/// with parts of S3's smallest size so that the file stays small.
#[test]
fn a_large_segment_is_uploaded_in_parts_and_read_back_whole() {
    use logsift_store::{ObjectStorage, S3Options, SegmentFiles};
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(&dir.path().join("s3"), BUCKET);
    let part = 5 << 20;
    let storage = std::sync::Arc::new(
        ObjectStorage::s3(
            &format!("s3://{BUCKET}/{PREFIX}"),
            &S3Options {
                endpoint: format!("http://{}", s3.addr),
                region: "us-east-1".into(),
                access_key_id: common::s3::ACCESS_KEY.into(),
                secret_access_key: common::s3::SECRET_KEY.into(),
                allow_http: true,
                part_bytes: part,
            },
            &dir.path().join("cache"),
        )
        .unwrap(),
    );
    let files = storage.for_index("big").unwrap();
    // Two and a half parts of bytes that do not repeat.
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let data: Vec<u8> = (0..part * 5 / 2)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(src.join("payload.bin"), &data).unwrap();
    let id = "00000000000000000042";
    let written = files.write(id, &src, &["payload.bin".to_string()]).unwrap();
    assert!(written.bytes > (part * 2) as u64);

    assert_eq!(files.list().unwrap(), vec![id.to_string()]);
    assert!(files.leftovers().unwrap().is_empty());
    assert_eq!(files.size(id).unwrap(), Some(written.bytes));
    assert_eq!(files.sha256(id).unwrap(), written.sha256);
    // Read back from the store, not from the copy the upload left in the cache.
    std::fs::remove_file(dir.path().join("cache/big").join(format!("{id}.lsseg"))).unwrap();
    let bundle = files.open(id).unwrap();
    bundle.verify_files().unwrap();
    assert_eq!(
        bundle.file_sizes(),
        vec![("payload.bin".to_string(), data.len() as u64)]
    );
    assert_eq!(files.sha256_served(id).unwrap(), written.sha256);

    files.remove(id).unwrap();
    files.remove(id).unwrap();
    assert!(files.list().unwrap().is_empty());
    assert_eq!(files.size(id).unwrap(), None);
}
