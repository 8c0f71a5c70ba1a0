#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20): `fuzz/run.sh 20`.
#
# With cargo-fuzz (installed here if missing) and libFuzzer. cargo-fuzz needs nightly-only
# rustc flags (-Z sanitizer, sancov passes); on a stable toolchain RUSTC_BOOTSTRAP=1 unlocks
# them. If cargo-fuzz cannot be installed or built, the same checks run as a bounded
# random-input loop instead (src/random_loop.rs), so the script always exercises the targets.
# Crash inputs land in fuzz/artifacts/<target>/; turn each into a regression test in
# the crate whose decoder it broke (crates/logsift-parse, -compat, -query, -wal, -store, -core).
set -euo pipefail
seconds="${1:-20}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
targets=(syslog json framing auto es_bulk loki otlp query entry wal segment)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"

libfuzzer_ok=1
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz >&2 || libfuzzer_ok=0
fi
# The sanitizer runtime may be missing from a stable toolchain: fall back to no sanitizer.
sanitizer=(-s address)
if [ "$libfuzzer_ok" = 1 ]; then
    if ! RUSTC_BOOTSTRAP=1 cargo fuzz build "${sanitizer[@]}" -O >&2; then
        sanitizer=(-s none)
        RUSTC_BOOTSTRAP=1 cargo fuzz build "${sanitizer[@]}" -O >&2 || libfuzzer_ok=0
    fi
fi

if [ "$libfuzzer_ok" = 1 ]; then
    for t in "${targets[@]}"; do
        mkdir -p "corpus/$t"
        echo "fuzz: $t for ${seconds}s (libFuzzer, sanitizer ${sanitizer[1]})" >&2
        # -rss_limit_mb: a parser must not need much memory for any input.
        RUSTC_BOOTSTRAP=1 cargo fuzz run "${sanitizer[@]}" -O "$t" "corpus/$t" -- \
            -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=1024 -print_final_stats=1
    done
else
    echo "fuzz: cargo-fuzz unavailable on this toolchain; running the bounded random-input loop" >&2
    cargo run --release --no-default-features --features random-loop --bin random-loop -- "$seconds" "${targets[@]}"
fi
