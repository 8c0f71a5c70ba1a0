use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use logsift_core::time::format_rfc3339;

#[derive(Debug, Args)]
pub struct SegmentsArgs {
    #[command(subcommand)]
    command: SegmentsCommand,
}

#[derive(Debug, Subcommand)]
enum SegmentsCommand {
    /// List the sealed segments of every index (or one), from the catalogs on disk.
    List(Target),
    /// Rehash every segment file and walk each catalog's hash chain; exit 1 on any problem.
    Verify(Target),
}

#[derive(Debug, Args)]
struct Target {
    /// The server's data directory (works offline; the server may be running). Default: the
    /// config's `data_dir`, else `./data`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The server's config file: where its data directory is, and where its segments are
    /// stored (`[storage]`), so that `verify` rehashes segments in an object store.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Only this index.
    #[arg(long)]
    index: Option<String>,
}

/// Where `t`'s data directory, segment files and catalogs are.
struct Place {
    data_dir: PathBuf,
    segments: logsift_store::SegmentStorage,
    metastore: logsift_store::Metastore,
}

fn place(t: &Target) -> anyhow::Result<Place> {
    match &t.config {
        Some(file) => {
            let cfg = crate::config::Config::load(Some(file))?;
            Ok(Place {
                data_dir: t.data_dir.clone().unwrap_or_else(|| cfg.data_dir.clone()),
                segments: cfg.segment_storage()?,
                metastore: cfg.metastore(false)?,
            })
        }
        None => Ok(Place {
            data_dir: t
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("./data")),
            segments: logsift_store::SegmentStorage::Local,
            metastore: logsift_store::Metastore::Files,
        }),
    }
}

fn index_dirs(t: &Target, data_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let root = data_dir.join("indexes");
    if let Some(name) = &t.index {
        logsift_core::IndexName::new_builtin(name)?;
        let dir = root.join(name);
        anyhow::ensure!(
            dir.is_dir(),
            "index {name:?} does not exist under {}",
            root.display()
        );
        return Ok(vec![dir]);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .with_context(|| format!("reading {}", root.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn name_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn run(args: SegmentsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SegmentsCommand::List(t) => {
            println!(
                "{:<16} {:<22} {:<7} {:>10} {:>12} {:>12}  {:<30} {:<30} sha256",
                "index", "segment", "layout", "docs", "raw bytes", "file bytes", "from", "to"
            );
            let at = place(&t)?;
            for dir in index_dirs(&t, &at.data_dir)? {
                for e in
                    logsift_store::list_segments(&dir, &at.metastore).map_err(anyhow::Error::msg)?
                {
                    let layout = logsift_store::segment_layout(&dir, &at.segments, &e.segment);
                    println!(
                        "{:<16} {:<22} {:<7} {:>10} {:>12} {:>12}  {:<30} {:<30} {}",
                        name_of(&dir),
                        e.segment,
                        layout.unwrap_or("-"),
                        e.docs,
                        e.raw_bytes,
                        e.file_bytes,
                        format_rfc3339(e.min_timestamp),
                        format_rfc3339(e.max_timestamp),
                        e.sha256
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SegmentsCommand::Verify(t) => {
            let mut bad = false;
            let at = place(&t)?;
            for dir in index_dirs(&t, &at.data_dir)? {
                let report = logsift_store::verify_index(&dir, &at.segments, &at.metastore);
                if report.problems.is_empty() {
                    println!(
                        "{}: ok, {} segments, catalog head {}",
                        report.index, report.segments_checked, report.catalog_head
                    );
                } else {
                    bad = true;
                    for p in &report.problems {
                        println!("{}: {p}", report.index);
                    }
                }
            }
            Ok(if bad {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
