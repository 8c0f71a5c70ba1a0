//! The `logsift` binary. Everything lives in `logsift-cli`; this file exists so that the root
//! package owns the binary and its `tests/` can start it via `CARGO_BIN_EXE_logsift`.

fn main() -> std::process::ExitCode {
    logsift_cli::main()
}
