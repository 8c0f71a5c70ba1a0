//! The `logsift` command: flags and configuration, then wiring of the library crates.

mod client;
mod config;
mod export;
mod import;
mod memory;
mod output;
mod patterns;
mod progress;
mod search;
mod segments;
mod serve;
mod tail;
mod tokens;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "logsift",
    version,
    about = "Log ingestion and search: syslog and JSON in, fast search out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: listeners, WAL, indexer and HTTP API.
    Serve(serve::ServeArgs),
    /// Search a running server and print matching records, newest first.
    Search(search::SearchArgs),
    /// Follow new records matching a query on a running server, as they arrive.
    Tail(tail::TailArgs),
    /// The most frequent log patterns among a query's matches (`Connection from <*> closed`).
    Patterns(patterns::PatternsArgs),
    /// What changed: patterns, hosts, apps and severities whose share of the matches rose or
    /// fell most between a window and the baseline before it.
    Compare(patterns::CompareArgs),
    /// Inspect and verify sealed segments on disk.
    Segments(segments::SegmentsArgs),
    /// Export every record matching a query with a signed manifest, or verify an export.
    Export(export::ExportArgs),
    /// Send existing log files (plain, .gz, .zst; syslog or JSON lines) to a running server.
    Import(import::ImportArgs),
    /// Create, list and revoke API tokens (works on the data directory; a running server
    /// picks changes up by itself).
    Tokens(tokens::TokensArgs),
}

/// Runs the command line; the binary's `main` is only this.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Search(args) => search::run(args),
        Command::Tail(args) => tail::run(args),
        Command::Patterns(args) => patterns::run_patterns(args),
        Command::Compare(args) => patterns::run_compare(args),
        Command::Segments(args) => segments::run(args),
        Command::Export(args) => export::run(args),
        Command::Import(args) => import::run(args),
        Command::Tokens(args) => tokens::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("logsift: {e:#}");
            ExitCode::FAILURE
        }
    }
}
