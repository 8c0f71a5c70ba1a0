use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Query: words and "phrases" match the message; field:value (host, app, severity, ...);
    /// AND, OR, NOT and parentheses. Empty or * matches everything.
    #[arg(default_value = "*")]
    query: String,
    /// Server to ask.
    #[arg(long, default_value = "http://127.0.0.1:9480", env = "LOGSIFT_SERVER")]
    server: String,
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
}

pub fn run(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let url = format!("{}/api/v1/search", args.server.trim_end_matches('/'));
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
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .context("building HTTP client")?;
    let response = client
        .get(&url)
        .query(&query)
        .send()
        .with_context(|| format!("cannot reach {url}; is `logsift serve` running?"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        bail!("search failed ({status}): {message}");
    }
    let hits = body["hits"].as_array().cloned().unwrap_or_default();
    let mut out = io::BufWriter::new(io::stdout().lock());
    let written = (|| -> io::Result<()> {
        for hit in &hits {
            if args.json {
                serde_json::to_writer(&mut out, hit)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", readable(hit))?;
            }
        }
        out.flush()
    })();
    match written {
        // `logsift search ... | head` closing the pipe early is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        Err(e) => return Err(e).context("writing results"),
        Ok(()) => {}
    }
    if !args.json {
        let total = body["total"].as_u64().unwrap_or(0);
        if total as usize > hits.len() {
            eprintln!(
                "{} of {total} matches shown (use --limit for more)",
                hits.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `time severity host app[procid]: message`, one line per record.
fn readable(hit: &Value) -> String {
    let s = |k: &str| hit[k].as_str().unwrap_or("-");
    let app = match hit["procid"].as_str() {
        Some(pid) => format!("{}[{pid}]", s("app")),
        None => s("app").to_string(),
    };
    let message = s("message").replace('\n', "\\n");
    format!(
        "{} {:<7} {} {}: {}",
        s("timestamp"),
        s("severity"),
        s("host"),
        app,
        message
    )
}
