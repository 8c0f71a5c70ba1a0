//! `logsift patterns` and `logsift compare`: the top log patterns of a query's matches, and
//! what changed between a window and its baseline, as tables (or the API's JSON).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::client::{ScopeArgs, ServerArgs};
use crate::output::unless_broken_pipe;

/// Long enough for any query the server lets run (its own limit stops it first).
const TIMEOUT: Duration = Duration::from_secs(120);
/// Longest template shown in a table; `--json` has them whole.
const TEMPLATE_CHARS: usize = 100;

#[derive(Debug, Args)]
pub struct PatternsArgs {
    /// Query whose matches are grouped (same language as `logsift search`).
    #[arg(default_value = "*")]
    query: String,
    #[command(flatten)]
    conn: ServerArgs,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Patterns to list, most frequent first.
    #[arg(long, default_value_t = 20)]
    size: usize,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Query whose matches are compared (same language as `logsift search`).
    #[arg(default_value = "*")]
    query: String,
    #[command(flatten)]
    conn: ServerArgs,
    /// Index to read (repeat or comma-separate for several) [default: all].
    #[arg(long)]
    index: Vec<String>,
    /// Start of the window: RFC 3339, epoch seconds, or relative like now-15m [default: 15
    /// minutes before its end].
    #[arg(long)]
    start: Option<String>,
    /// End of the window (exclusive) [default: now].
    #[arg(long)]
    end: Option<String>,
    /// Start of the baseline [default: the window's length before the window].
    #[arg(long)]
    baseline_start: Option<String>,
    /// End of the baseline (exclusive) [default: the window's start].
    #[arg(long)]
    baseline_end: Option<String>,
    /// Patterns to list, largest change first.
    #[arg(long, default_value_t = 10)]
    size: usize,
    /// Print the server's JSON answer instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run_patterns(args: PatternsArgs) -> anyhow::Result<ExitCode> {
    let mut query: Vec<(&str, String)> =
        vec![("q", args.query.clone()), ("size", args.size.to_string())];
    query.extend(args.scope.params());
    let body = args
        .conn
        .api()?
        .get_json("/api/v1/patterns", &query, TIMEOUT)?;
    let out = if args.json {
        format!("{body}\n")
    } else {
        patterns_table(&body)
    };
    print(&out)?;
    warn_partial(&body);
    Ok(ExitCode::SUCCESS)
}

pub fn run_compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let mut query: Vec<(&str, String)> =
        vec![("q", args.query.clone()), ("size", args.size.to_string())];
    if !args.index.is_empty() {
        query.push(("index", args.index.join(",")));
    }
    for (key, value) in [
        ("start", &args.start),
        ("end", &args.end),
        ("baseline_start", &args.baseline_start),
        ("baseline_end", &args.baseline_end),
    ] {
        if let Some(v) = value {
            query.push((key, v.clone()));
        }
    }
    let body = args
        .conn
        .api()?
        .get_json("/api/v1/compare", &query, TIMEOUT)?;
    let out = if args.json {
        format!("{body}\n")
    } else {
        compare_tables(&body)
    };
    print(&out)?;
    warn_partial(&body);
    Ok(ExitCode::SUCCESS)
}

fn print(out: &str) -> anyhow::Result<()> {
    unless_broken_pipe(|| {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()
    })
    .context("writing results")?;
    Ok(())
}

fn warn_partial(body: &Value) {
    if body["partial"].as_bool() == Some(true) {
        eprintln!(
            "partial answer: the server's query time limit stopped counting; the numbers are \
             lower bounds (narrow the range or the query)"
        );
    }
}

fn cut(text: &str) -> String {
    if text.chars().count() <= TEMPLATE_CHARS {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(TEMPLATE_CHARS - 1).collect();
        s.push('…');
        s
    }
}

/// `COUNT  ID  TEMPLATE` per pattern, then what the list leaves out.
fn patterns_table(body: &Value) -> String {
    let mut out = format!("{:>10}  {:>8}  TEMPLATE\n", "COUNT", "ID");
    for p in body["patterns"].as_array().into_iter().flatten() {
        out += &format!(
            "{:>10}  {:>8}  {}\n",
            p["count"].as_u64().unwrap_or(0),
            p["id"].as_u64().unwrap_or(0),
            cut(p["template"].as_str().unwrap_or("?"))
        );
    }
    let num = |k: &str| body[k].as_u64().unwrap_or(0);
    out += &format!(
        "{} matches, {} patterns; {} in patterns not listed, {} without a pattern\n",
        num("total"),
        num("distinct"),
        num("other_count"),
        num("without_pattern")
    );
    out
}

/// What changed: patterns first, then over-represented hosts, apps and severities.
fn compare_tables(body: &Value) -> String {
    let range = |k: &str| {
        format!(
            "{} to {} ({} matches)",
            body[k]["start"].as_str().unwrap_or("?"),
            body[k]["end"].as_str().unwrap_or("?"),
            body[k]["total"].as_u64().unwrap_or(0)
        )
    };
    let mut out = format!(
        "window    {}\nbaseline  {}\n\n",
        range("window"),
        range("baseline")
    );
    let row = |c: &Value, name: String| {
        format!(
            "{:<5} {:>8.1} {:>9} {:>9}  {}\n",
            c["kind"].as_str().unwrap_or("?"),
            c["score"].as_f64().unwrap_or(0.0),
            c["count"].as_u64().unwrap_or(0),
            c["baseline_count"].as_u64().unwrap_or(0),
            name
        )
    };
    out += &format!(
        "{:<5} {:>8} {:>9} {:>9}  PATTERN\n",
        "KIND", "SCORE", "WINDOW", "BASELINE"
    );
    for c in body["patterns"].as_array().into_iter().flatten() {
        let name = format!(
            "[{}] {}",
            c["id"].as_u64().unwrap_or(0),
            cut(c["value"].as_str().unwrap_or("?"))
        );
        out += &row(c, name);
    }
    for (key, title) in [
        ("hosts", "HOST"),
        ("apps", "APP"),
        ("severities", "SEVERITY"),
    ] {
        let list = body[key].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            continue;
        }
        out += &format!(
            "\n{:<5} {:>8} {:>9} {:>9}  {title}\n",
            "KIND", "SCORE", "WINDOW", "BASELINE"
        );
        for c in &list {
            out += &row(c, c["value"].as_str().unwrap_or("?").to_string());
        }
    }
    out
}
