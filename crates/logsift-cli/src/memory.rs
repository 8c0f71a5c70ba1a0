//! Giving memory back to the system once a burst of work is over.
//!
//! The `logsift` binary allocates with jemalloc (`src/main.rs`, configured there at build
//! time; `_RJEM_MALLOC_CONF` in the environment adds to it): each thread caches and frees into
//! arenas without the lock glibc's arenas took, and a background thread returns pages freed a
//! second ago (`dirty_decay_ms:1000`) with `MADV_DONTNEED` at once (`muzzy_decay_ms:0`, rather
//! than leaving them to `MADV_FREE`, which keeps them in the RSS until the kernel is short),
//! so resident memory follows what is in use within about a second. Against glibc with the
//! tuning it needed (4 arenas, a fixed 4 MiB mmap threshold, `malloc_trim`), e2e ingest at
//! 1.1 GB went 49.6/48.7 → 56.0/51.5 MB/s in alternating runs one day and 58.8/55.7/59.0 →
//! 59.8/60.0/59.9 the next, at a peak RSS of 716–817 instead of 800–922 MiB; jemalloc's
//! default 10 s decay was as fast but peaked at 978–993 MiB (README, performance).
//!
//! On top of that decay, every arena is purged at once:
//! - when activity stops (no record indexed and no search answered for a few seconds);
//! - after each seal or merge, which frees a whole hot tier (hundreds of MiB) at once, often
//!   after the last record of a burst;
//! - whenever pages held but not allocated exceed 32 MiB and half of what is allocated
//!   (checked every five seconds from jemalloc's statistics): under steady load (an attack,
//!   an incident) activity never stops for the quiet purge.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

/// How long nothing must have been indexed or searched before memory is purged.
const QUIET: Duration = Duration::from_secs(5);
/// How often the purger looks.
const POLL: Duration = Duration::from_secs(1);
/// How many polls apart the purger reads the allocator's statistics (refreshing them merges
/// every arena's counters under their locks).
const HOARD_POLLS: u32 = 5;

/// Resident bytes not allocated, above which the arenas are purged even while work goes on.
const FREE_FLOOR: usize = 32 << 20;

/// A `size_t` statistic of jemalloc's, after refreshing them all; `None` if it has none
/// (built without statistics, or not the allocator in use).
fn stat(name: &std::ffi::CStr) -> Option<usize> {
    let mut epoch: u64 = 1;
    let mut value: usize = 0;
    let mut len = std::mem::size_of::<usize>();
    // SAFETY: both controls are jemalloc's documented ones: "epoch" takes and gives a u64,
    // the "stats.*" asked for here give a size_t; the pointers and lengths describe them.
    unsafe {
        if tikv_jemalloc_sys::mallctl(
            c"epoch".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            (&mut epoch as *mut u64).cast(),
            std::mem::size_of::<u64>(),
        ) != 0
        {
            return None;
        }
        (tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            (&mut value as *mut usize).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        ) == 0)
            .then_some(value)
    }
}

/// `(resident, allocated)` bytes when the pages held but not allocated exceed [`FREE_FLOOR`]
/// and half of what is allocated. Half, so that a large hot tier being filled is not purged
/// over and over (each purge's pages are faulted in again).
fn hoarded() -> Option<(usize, usize)> {
    let resident = stat(c"stats.resident")?;
    let allocated = stat(c"stats.allocated")?;
    let free = resident.saturating_sub(allocated);
    (free > FREE_FLOOR && free > allocated / 2).then_some((resident, allocated))
}

/// Returns every arena's unused pages to the system now; whether jemalloc did.
fn purge() -> bool {
    // SAFETY: "arena.<MALLCTL_ARENAS_ALL>.purge" takes and gives nothing.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        ) == 0
    }
}

/// Purges the heap each time activity stops, on a thread of its own. Activity is what the
/// counters `indexed` (records) and `searches` (requests) count.
pub fn spawn_trimmer(indexed: Counter, searches: Counter, store: Arc<logsift_store::Store>) {
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
                    let purged = purge();
                    tracing::debug!(purged, "heap purged after a seal or merge");
                } else if let Some((resident, allocated)) =
                    polls.is_multiple_of(HOARD_POLLS).then(hoarded).flatten()
                {
                    let purged = purge();
                    tracing::debug!(
                        purged,
                        resident,
                        allocated,
                        "heap purged: too much of it unused"
                    );
                }
                let now = activity();
                if now != last {
                    last = now;
                    quiet_since = std::time::Instant::now();
                    trimmed = false;
                } else if !trimmed && quiet_since.elapsed() >= QUIET {
                    let purged = purge();
                    tracing::debug!(purged, "heap purged after activity stopped");
                    trimmed = true;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the memory trimming thread");
    }
}
