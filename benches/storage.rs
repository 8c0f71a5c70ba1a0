//! Criterion micro-benchmarks of the storage hot paths: `cargo bench --bench storage`.
//!
//! - `wal_append/*`: appending a batch of 1,000 WAL entries (realistic `Entry` encodings of the
//!   e2e corpus, ~250 bytes each), then either handing them to the OS (`flush`) or making
//!   them durable (`sync` = write + fdatasync, once per batch, as group commit does). Reported
//!   in bytes/s. Files are truncated outside the timed part so the disk does not fill up.
//! - `segment_build/*`: a fresh store in a temporary directory, then `Indexer::apply` of N
//!   entries (parse + tantivy document + add) and one `commit`. Reported in records/s.
//!
//! The entries come from the e2e generator (`benches/e2e/gen.rs`), so the mix of RFC 5424,
//! RFC 3164 and JSON lines is the one the load benchmark ships.

#[allow(dead_code)]
#[path = "e2e/gen.rs"]
mod gen;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use logsift_core::entry::Entry;
use logsift_core::Format;
use logsift_store::{Indexer, Store, StoreConfig};
use logsift_wal::{Wal, WalOptions};

/// Encoded WAL entries of a small generated corpus, interleaved across the three channels.
fn entries(count: usize) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let day = now_ns / gen::NS / 86_400;
    // ~260 bytes a line: generate enough for `count` lines.
    let corpus = gen::generate(dir.path(), (count as u64 * 300).max(1_000_000), 7, day)
        .expect("generate corpus");
    let mut lines: Vec<(Format, Vec<u8>)> = Vec::new();
    for (path, ch) in corpus.files.iter().zip(gen::CHANNELS) {
        let text = std::fs::read(path).expect("read corpus");
        let format = match ch {
            gen::Channel::SyslogTcp => Format::Syslog,
            _ => Format::Json,
        };
        lines.extend(
            text.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| (format, l.to_vec())),
        );
    }
    // A deterministic shuffle mixes the channels the way concurrent senders do.
    let mut rng = gen::Rng::new(11);
    for i in (1..lines.len()).rev() {
        lines.swap(i, rng.below(i as u64 + 1) as usize);
    }
    lines
        .iter()
        .cycle()
        .take(count)
        .map(|(format, raw)| {
            Entry {
                format: *format,
                received_at: now_ns,
                index: "logs",
                source: "bench",
                raw,
            }
            .encode()
        })
        .collect()
}

fn wal_append(c: &mut Criterion) {
    const BATCH: usize = 1000;
    let batch = entries(BATCH);
    let bytes: usize = batch.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("wal_append");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.measurement_time(Duration::from_secs(8));
    for durable in [false, true] {
        let name = if durable {
            "batch_1000_sync"
        } else {
            "batch_1000_flush"
        };
        group.bench_function(name, |b| {
            let dir = tempfile::tempdir().expect("temp dir");
            let opts = WalOptions {
                dir: dir.path().to_path_buf(),
                max_file_bytes: 64 << 20,
            };
            let (mut wal, _) = Wal::open(&opts, 1, |_, _| {}).expect("open WAL");
            let mut written = 0u64;
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let mut last = 0;
                    for e in &batch {
                        last = wal.append(e).expect("append");
                    }
                    if durable {
                        wal.sync().expect("sync");
                    } else {
                        wal.flush().expect("flush");
                    }
                    elapsed += started.elapsed();
                    written += bytes as u64;
                    if written > 256 << 20 {
                        wal.truncate_through(last).expect("truncate");
                        written = 0;
                    }
                }
                elapsed
            });
        });
    }
    group.finish();
}

fn segment_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("segment_build");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for n in [10_000usize, 50_000] {
        let batch = entries(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("apply_commit", n), &batch, |b, batch| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let store = Arc::new(
                        Store::open(StoreConfig {
                            writer_memory_bytes: 64 << 20,
                            docstore_block_bytes: 262144,
                            ..StoreConfig::manual(dir.path().join("indexes"))
                        })
                        .expect("open store"),
                    );
                    let mut indexer = Indexer::new(store);
                    let started = Instant::now();
                    for (i, e) in batch.iter().enumerate() {
                        indexer.apply(i as u64 + 1, e).expect("apply");
                    }
                    indexer.commit().expect("commit");
                    elapsed += started.elapsed();
                    drop(indexer);
                }
                elapsed
            });
        });
    }
    group.finish();
}

criterion_group!(benches, wal_append, segment_build);
criterion_main!(benches);
