//! The `logsift` binary. Everything lives in `logsift-cli`; this file exists so that the root
//! package owns the binary and its `tests/` can start it via `CARGO_BIN_EXE_logsift`. It also
//! picks the allocator, which only a binary may.

/// jemalloc: the ingest pipeline's threads allocate and free at once, and glibc's arenas made
/// them wait on each other's locks (`logsift-cli/src/memory.rs` has the measurements).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (`_RJEM_MALLOC_CONF` in the environment is applied
/// after them): a background thread returns pages a second after they are freed, with
/// `MADV_DONTNEED` at once. `logsift-cli/src/memory.rs` says why.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: Option<&'static u8> =
    Some(&b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0]);

fn main() -> std::process::ExitCode {
    logsift_cli::main()
}
