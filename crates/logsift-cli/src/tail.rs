use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;

use crate::client::ServerArgs;
use crate::output::{unless_broken_pipe, ColorChoice, Printer};

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Query the new records must match (same language as `search`). Empty or * follows
    /// everything.
    #[arg(default_value = "*")]
    query: String,
    #[command(flatten)]
    conn: ServerArgs,
    /// Index to follow (repeat or comma-separate for several) [default: all].
    #[arg(long)]
    index: Vec<String>,
    /// One JSON hit per line instead of readable lines.
    #[arg(long)]
    json: bool,
    /// Colour readable lines by severity: auto (when stdout is a terminal and NO_COLOR is
    /// unset), always, never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

/// Follows `GET /api/v1/tail` until the server ends the stream or stdout is closed. A client
/// the server dropped for falling behind says so on stderr and follows again from now.
pub fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let mut query: Vec<(&str, String)> = vec![("q", args.query.clone())];
    if !args.index.is_empty() {
        query.push(("index", args.index.join(",")));
    }
    let api = args.conn.api()?;
    let mut printer = Printer::new(args.json, args.color);
    loop {
        let mut events = api.events("/api/v1/tail", &query)?;
        loop {
            let Some(event) = events.next_event()? else {
                eprintln!("logsift: the server ended the stream");
                return Ok(ExitCode::SUCCESS);
            };
            match event.event.as_str() {
                "record" => {
                    let hit: Value = serde_json::from_str(&event.data).with_context(|| {
                        format!("the server sent a record that is not JSON: {}", event.data)
                    })?;
                    // Flushed per record: whoever reads wants it now, not when a buffer fills.
                    let open = unless_broken_pipe(|| {
                        printer.hit(&hit)?;
                        printer.flush()
                    })
                    .context("writing records")?;
                    if !open {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                "dropped" => {
                    eprintln!("logsift: {}; following again from now", event.data);
                    break;
                }
                "error" => bail!("the server stopped following: {}", event.data),
                _ => {}
            }
        }
    }
}
