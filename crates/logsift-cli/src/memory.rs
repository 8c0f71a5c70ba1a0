//! Giving memory back to the system once a burst of work is over.
//!
//! glibc's allocator keeps what indexing, merges and queries freed in its arenas (one per
//! thread that allocated, up to 8 per core): after an ingest burst the server's resident heap
//! stays near its peak although little of it is in use. Three measures, all glibc-only:
//! - fewer arenas (`M_ARENA_MAX` = twice the cores, at least 4, unless the environment sets
//!   `MALLOC_ARENA_MAX`), so that freed memory is shared by the threads instead of stranded in
//!   one arena each. Not as few as the cores: the ingest pipeline's threads (listeners, WAL,
//!   prepare, indexer, block compression, tantivy's) allocate and free at once, and with two
//!   arenas on two cores the indexer spent a third of its time asleep, a quarter of its
//!   switches waiting for an arena's lock (`perf sched`, `perf record -e sched:sched_switch`
//!   of the e2e ingest); four took e2e ingest at 1.1 GB from 44.1 to 47.0–49.3 MB/s, eight to
//!   45.9–47.8 (alternating runs, one sitting);
//! - a fixed mmap threshold of 4 MiB (`M_MMAP_THRESHOLD`, unless the environment sets
//!   `MALLOC_MMAP_THRESHOLD_`). glibc raises its threshold to the size of each large block
//!   freed (up to 32 MiB), after which decompression buffers of many MiB come from the
//!   arenas: growing one copies it (old and new held at once) and freeing it leaves the pages
//!   resident. Charged to the in-flight budget (64 MiB) at their size, gzip bombs took the
//!   server's RSS up by 185 MiB in the hostile soak; with the threshold fixed at 4 MiB, by
//!   68 MiB (blocks above it are mapped, grown in place by mremap, and unmapped when freed).
//!   At 1 MiB, by 39 MiB, but 300 MB of e2e ingest took 8 % more CPU (every 1–4 MB request
//!   body mapped and faulted in anew); at 4 MiB ingest was within the noise of the default;
//! - `malloc_trim` once activity stops (no record indexed and no search answered for a few
//!   seconds), which returns the free pages of every arena, not only the top of the heap;
//!   after each seal or merge, which frees a whole hot tier (hundreds of MiB) at once, often
//!   after the last record of a burst; and whenever the arenas hold more free memory than
//!   32 MiB and half of what is in use (checked every five seconds with `mallinfo2`).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

/// How long nothing must have been indexed or searched before memory is trimmed.
const QUIET: Duration = Duration::from_secs(5);
/// How often the trimmer looks.
const POLL: Duration = Duration::from_secs(1);
/// How many polls apart the trimmer asks the allocator how much of its heap is free.
/// `mallinfo2` walks every free chunk of every arena under its lock: with a heap of several
/// hundred MiB while ingesting, asking every second took about 1 % of the server's CPU (perf
/// of a 5 GB ingest), all of it in the way of the threads allocating.
const HOARD_POLLS: u32 = 5;

/// Free heap kept by the allocator above which it is trimmed even while work goes on.
const FREE_FLOOR: usize = 32 << 20;

/// `(free, in use)` bytes of glibc's arenas when the free part exceeds [`FREE_FLOOR`] and
/// half of what is in use. Searches over many indexes allocate and free tens of MiB each,
/// and under steady load (an attack, an incident) activity never stops for the quiet trim:
/// measured in the hostile soak, 150 MiB of RSS was free heap. Half of what is in use, so
/// that a large hot tier being filled is not trimmed over and over (each trim's pages are
/// faulted in again).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn hoarded() -> Option<(usize, usize)> {
    // SAFETY: mallinfo2 only reads the allocator's statistics (under its arena locks).
    let info = unsafe { libc::mallinfo2() };
    let (free, used) = (info.fordblks, info.uordblks);
    (free > FREE_FLOOR && free > used / 2).then_some((free, used))
}

/// Caps glibc's arenas and fixes its mmap threshold. Call before threads are started.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            // SAFETY: mallopt only changes allocator parameters; it is called before the
            // runtime's threads exist.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, (cores * 2).max(4) as libc::c_int);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
            }
        }
    }
}

/// Trims the heap each time activity stops, on a thread of its own. Activity is what the
/// counters `indexed` (records) and `searches` (requests) count.
pub fn spawn_trimmer(indexed: Counter, searches: Counter, store: Arc<logsift_store::Store>) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let activity = move || indexed.get() + searches.get();
        let spawned = std::thread::Builder::new()
            .name("memory-trim".into())
            .spawn(move || {
                let mut last = activity();
                let mut quiet_since = std::time::Instant::now();
                let mut last_segments = store.segments_written();
                let mut trimmed = true;
                let mut polls: u32 = 0;
                loop {
                    std::thread::sleep(POLL);
                    polls = polls.wrapping_add(1);
                    let segments = store.segments_written();
                    if segments != last_segments {
                        last_segments = segments;
                        // SAFETY: malloc_trim only releases free pages of the allocator.
                        let released = unsafe { libc::malloc_trim(0) } == 1;
                        tracing::debug!(released, "heap trimmed after a seal or merge");
                    } else if let Some((free, used)) =
                        polls.is_multiple_of(HOARD_POLLS).then(hoarded).flatten()
                    {
                        // SAFETY: as above.
                        let released = unsafe { libc::malloc_trim(0) } == 1;
                        tracing::debug!(released, free, used, "heap trimmed: too much of it free");
                    }
                    let now = activity();
                    if now != last {
                        last = now;
                        quiet_since = std::time::Instant::now();
                        trimmed = false;
                    } else if !trimmed && quiet_since.elapsed() >= QUIET {
                        // SAFETY: malloc_trim only releases free pages of the allocator.
                        let released = unsafe { libc::malloc_trim(0) } == 1;
                        tracing::debug!(released, "heap trimmed after activity stopped");
                        trimmed = true;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the memory trimming thread");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (indexed, searches, store);
}
