//! `logsift tokens create|list|revoke`: edits the tokens file in the data directory, or, when
//! `--config` names a PostgreSQL metastore, the tokens every process of it shares (each copies
//! them into its own tokens file). A running server picks the change up by itself (within a
//! second or two).

use std::path::{Path, PathBuf};
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

    /// The metastore that keeps the tokens, when `--config` names a PostgreSQL one.
    fn metastore(&self) -> anyhow::Result<Option<logsift_store::PgMetastore>> {
        let Some(config) = &self.config else {
            return Ok(None);
        };
        let cfg = crate::Config::load(Some(config))?;
        if cfg.metastore.url.is_empty() {
            return Ok(None);
        }
        logsift_store::PgMetastore::connect_as(&cfg.metastore.url, None)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("metastore: {e}"))
    }

    /// Applies `change` to the tokens where they live, and saves them.
    fn edit<T>(
        &self,
        mut change: impl FnMut(&mut Tokens) -> Result<T, logsift_identity::TokenError>,
    ) -> anyhow::Result<T> {
        let Some(pg) = self.metastore()? else {
            let path = self.path()?;
            let mut tokens = Tokens::load(&path)?;
            let out = change(&mut tokens)?;
            tokens.save(&path)?;
            return Ok(out);
        };
        // Compare and swap: another edit in between is read and applied again.
        loop {
            let stored = pg.tokens_file()?;
            let mut tokens = match &stored {
                Some((_, text)) => Tokens::parse(Path::new(METASTORE_LABEL), text.as_bytes())?,
                None => Tokens::default(),
            };
            let out = change(&mut tokens)?;
            let text = String::from_utf8(tokens.to_text()).context("tokens as text")?;
            if pg.replace_tokens_file(stored.map(|(v, _)| v), &text)? {
                return Ok(out);
            }
        }
    }

    fn load(&self) -> anyhow::Result<Tokens> {
        match self.metastore()? {
            Some(pg) => Ok(match pg.tokens_file()? {
                Some((_, text)) => Tokens::parse(Path::new(METASTORE_LABEL), text.as_bytes())?,
                None => Tokens::default(),
            }),
            None => Ok(Tokens::load(&self.path()?)?),
        }
    }
}

/// How the metastore's copy of the tokens file is named in errors.
const METASTORE_LABEL: &str = "logsift_tokens (metastore)";

/// Copies the metastore's tokens into the tokens file at `path` when they differ (a
/// server's start and its sync thread). With `import`, a file whose tokens the metastore does
/// not have yet (a data directory from before) is stored there first. A file edited here
/// since the last copy (`tokens create --data-dir` on a node of a shared metastore) is
/// replaced all the same, with a warning: the metastore's tokens are the ones in force.
pub fn sync_from_metastore(
    pg: &logsift_store::PgMetastore,
    path: &Path,
    import: bool,
    last: &mut Option<Vec<u8>>,
) -> anyhow::Result<()> {
    let stored = pg.tokens_file()?;
    let local = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
    };
    match (stored, local) {
        (None, Some(local)) if import => {
            Tokens::parse(path, &local)?;
            let text = String::from_utf8(local).context("tokens file as text")?;
            pg.replace_tokens_file(None, &text)?;
            tracing::info!(path = %path.display(), "imported the tokens file into the metastore");
        }
        (Some((_, text)), local) if local.as_deref() != Some(text.as_bytes()) => {
            Tokens::parse(Path::new(METASTORE_LABEL), text.as_bytes())?;
            if last.is_some() && local.as_deref() != last.as_deref() {
                tracing::warn!(path = %path.display(), "the tokens file was edited on this node; with a PostgreSQL metastore the tokens are kept there (logsift tokens ... --config FILE), so the edit is replaced by them");
            }
            Tokens::save_text(path, text.as_bytes())?;
            *last = Some(text.into_bytes());
        }
        (Some((_, text)), _) => *last = Some(text.into_bytes()),
        _ => {}
    }
    Ok(())
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
            let (record, token) = place.edit(|tokens| {
                tokens.create(NewToken {
                    name: name.clone(),
                    roles: roles.clone(),
                    indexes: indexes.clone(),
                    ingest_bytes_per_sec: ingest_rate,
                })
            })?;
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
            let tokens = place.load()?;
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
            let name = place.edit(|tokens| tokens.revoke(&id).map(|t| t.name.clone()))?;
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
