//! The state format pinned by a file written by format version 1 (`tests/golden/state-v1.bin`):
//! today's code must read it, find the same patterns in it, and write the same bytes for the
//! same messages. A format change that breaks this needs a new version and a reader for the
//! old one. `LOGSIFT_BLESS=1 cargo test -p logsift-patterns --test golden` rewrites the file,
//! which is only right when a new format version is introduced.

use std::path::PathBuf;

use logsift_patterns::{Miner, MinerConfig};

const MESSAGES: &[&str] = &[
    "Connection from 10.0.0.1 closed",
    "Connection from 10.0.0.2:8080 closed",
    "session opened for user root by (uid=0)",
    "worker node-12 started job_2015 in 12ms",
    "host.example.com:80 close, 785 bytes sent, lifetime 00:39",
    "host.example.com:80 close, 785 bytes (1.2 KB) sent, lifetime <1 sec",
    "GET /index.html returned 200",
    "state 'Active' reached",
    "ünïcödé ✓ message with tag=\"x\", and a very long token",
];

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/state-v1.bin")
}

fn build() -> Miner {
    // Spelled out rather than `..MinerConfig::default()`: the file pins the format, and a new
    // default must not look like a format change.
    let mut m = Miner::new(MinerConfig {
        similarity: 0.8,
        word_difference: 0.0,
        max_templates: 6,
        max_memory_bytes: 64 << 20,
        max_tokens: 128,
        max_bucket_patterns: 200,
        max_token_text_bytes: 200,
    })
    .expect("valid");
    for msg in MESSAGES {
        m.ingest(msg);
    }
    m
}

#[test]
fn version_1_state_still_reads() {
    let built = build();
    if std::env::var_os("LOGSIFT_BLESS").is_some() {
        std::fs::write(path(), built.to_bytes()).expect("write golden state");
    }
    let golden = std::fs::read(path()).expect("tests/golden/state-v1.bin is in the repository");
    let restored = Miner::from_bytes(&golden).expect("a version 1 state reads");
    assert_eq!(
        restored.patterns().collect::<Vec<_>>(),
        built.patterns().collect::<Vec<_>>()
    );
    assert_eq!(
        built.to_bytes(),
        golden,
        "the same messages give the same bytes"
    );
    let templates: Vec<_> = restored.patterns().map(|p| p.template).collect();
    assert_eq!(templates[0], "Connection from <*> closed");
    assert!(restored.patterns().any(|p| p.catch_all));
}
