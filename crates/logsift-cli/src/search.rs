use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::client::{ScopeArgs, ServerArgs};
use crate::output::{unless_broken_pipe, ColorChoice, Printer};

/// Long enough for any query the server lets run (its own limit stops it first).
const SEARCH_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Query: words and "phrases" match the message; field:value (host, app, severity, ...);
    /// AND, OR, NOT and parentheses. Empty or * matches everything.
    #[arg(default_value = "*")]
    query: String,
    #[command(flatten)]
    conn: ServerArgs,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Most records to print.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Oldest first instead of newest first.
    #[arg(long)]
    asc: bool,
    /// One JSON hit per line instead of readable lines.
    #[arg(long)]
    json: bool,
    /// Colour readable lines by severity: auto (when stdout is a terminal and NO_COLOR is
    /// unset), always, never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

pub fn run(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let mut query: Vec<(&str, String)> = vec![
        ("q", args.query.clone()),
        ("limit", args.limit.to_string()),
        ("sort", if args.asc { "asc" } else { "desc" }.to_string()),
    ];
    query.extend(args.scope.params());
    let api = args.conn.api()?;
    let body = api.get_json("/api/v1/search", &query, SEARCH_TIMEOUT)?;
    let hits = body["hits"].as_array().cloned().unwrap_or_default();
    let mut printer = Printer::new(args.json, args.color);
    let complete = unless_broken_pipe(|| {
        for hit in &hits {
            printer.hit(hit)?;
        }
        printer.flush()
    })
    .context("writing results")?;
    if !complete {
        return Ok(ExitCode::SUCCESS);
    }
    let total = body["total"].as_u64().unwrap_or(0);
    if body["partial"].as_bool() == Some(true) {
        let covered = |k: &str| body["covered"][k].as_str().unwrap_or("?").to_string();
        eprintln!(
            "partial answer: the server's query time limit stopped the search; it covers \
             {} to {} completely and found at least {total} matches (narrow the range or the \
             query for all of them)",
            covered("start"),
            covered("end"),
        );
    } else if !args.json && total as usize > hits.len() {
        eprintln!(
            "{} of {total} matches shown (use --limit for more)",
            hits.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
