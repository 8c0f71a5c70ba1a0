use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::client::Api;
use crate::output::{unless_broken_pipe, ColorChoice, Printer};

/// Long enough for any query the server lets run (its own limit stops it first).
const SEARCH_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Query: words and "phrases" match the message; field:value (host, app, severity, ...);
    /// AND, OR, NOT and parentheses. Empty or * matches everything.
    #[arg(default_value = "*")]
    query: String,
    /// Server to ask.
    #[arg(long, default_value = "http://127.0.0.1:9480", env = "LOGSIFT_SERVER")]
    server: String,
    /// API token (a search token will do), sent as Bearer; needed once the server has tokens.
    #[arg(long, env = "LOGSIFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Index to search (repeat or comma-separate for several) [default: all].
    #[arg(long)]
    index: Vec<String>,
    /// Start of the time range: RFC 3339, epoch seconds, or relative like now-15m.
    #[arg(long)]
    start: Option<String>,
    /// End of the time range (exclusive), same forms as --start.
    #[arg(long)]
    end: Option<String>,
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
    if !args.index.is_empty() {
        query.push(("index", args.index.join(",")));
    }
    if let Some(s) = &args.start {
        query.push(("start", s.clone()));
    }
    if let Some(e) = &args.end {
        query.push(("end", e.clone()));
    }
    let api = Api::new(&args.server, args.token.as_deref())?;
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
