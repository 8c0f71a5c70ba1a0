//! `logsift tokens create|list|revoke`: edits the tokens file in the data directory. A running
//! server picks the change up by itself (within a second).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use logsift_identity::{NewToken, Role, Tokens, TOKENS_FILE};

#[derive(Debug, Args)]
pub struct TokensArgs {
    #[command(subcommand)]
    command: TokensCommand,
}

#[derive(Debug, Args)]
struct Place {
    /// The server's data directory [default: data_dir of --config, else ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The server's configuration file, to find its data directory.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl Place {
    fn path(&self) -> anyhow::Result<PathBuf> {
        let dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => crate::Config::load(self.config.as_deref())?.data_dir,
        };
        Ok(dir.join(TOKENS_FILE))
    }
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Create a token and print it once (only its hash is stored): on stdout, alone, so that
    /// `TOKEN=$(logsift tokens create ...)` works.
    Create {
        /// ingest, search, export or admin (admin implies the others, on every index).
        /// Repeat for several.
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<Role>,
        /// Index the token may use; repeat for several [default: every index].
        #[arg(long = "index", value_name = "NAME")]
        indexes: Vec<String>,
        /// A name for lists, logs and the audit trail [default: token-ID].
        #[arg(long)]
        name: Option<String>,
        /// HTTP ingest bytes per second for this token [default: security.token_ingest_bytes_per_sec].
        #[arg(long, value_name = "BYTES")]
        ingest_rate: Option<u64>,
        #[command(flatten)]
        place: Place,
    },
    /// List tokens (never their secrets).
    List {
        /// One JSON object per token.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        place: Place,
    },
    /// Revoke a token by id: requests with it are refused (401) from then on.
    Revoke {
        id: String,
        #[command(flatten)]
        place: Place,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).map_err(|e| e.to_string())
}

pub fn run(args: TokensArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        TokensCommand::Create {
            roles,
            indexes,
            name,
            ingest_rate,
            place,
        } => {
            let path = place.path()?;
            let mut tokens = Tokens::load(&path)?;
            let (record, token) = tokens.create(NewToken {
                name,
                roles,
                indexes,
                ingest_bytes_per_sec: ingest_rate,
            })?;
            tokens.save(&path)?;
            eprintln!(
                "created token {} ({}) with roles {} on {}; it is shown only now:",
                record.id,
                record.name,
                roles_text(&record.roles),
                indexes_text(&record.indexes)
            );
            println!("{token}");
        }
        TokensCommand::List { json, place } => {
            let tokens = Tokens::load(&place.path()?)?;
            for t in &tokens.tokens {
                if json {
                    println!("{}", serde_json::to_string(t).context("token as JSON")?);
                } else {
                    println!(
                        "{}  {:<20} {:<24} {:<24} created {}{}",
                        t.id,
                        t.name,
                        roles_text(&t.roles),
                        indexes_text(&t.indexes),
                        t.created_at,
                        t.revoked_at
                            .as_deref()
                            .map(|r| format!("  REVOKED {r}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        TokensCommand::Revoke { id, place } => {
            let path = place.path()?;
            let mut tokens = Tokens::load(&path)?;
            let name = tokens.revoke(&id)?.name.clone();
            tokens.save(&path)?;
            eprintln!("revoked token {id} ({name})");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn roles_text(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn indexes_text(indexes: &Option<Vec<String>>) -> String {
    match indexes {
        None => "all indexes".to_string(),
        Some(list) => list.join(","),
    }
}
