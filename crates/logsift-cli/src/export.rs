//! `logsift export`: every record matching a query, oldest first, into a file (NDJSON or CSV,
//! zstd when the name ends in `.zst`), with the server's signed manifest next to it; and
//! `logsift export verify`, which checks a file against its manifest.
//!
//! While it runs, `FILE.progress` records how far the file is complete (bytes, records and
//! the cursor of the last record, at a zstd frame boundary when compressing). After an
//! interruption, `--resume` cuts the file back to that point and asks the server to go on
//! after the cursor with the same pinned record set; the server regenerates the part already
//! written (without sending it) so that the new manifest covers the whole file.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::client::{ScopeArgs, ServerArgs};
use crate::progress::Meter;

/// How much output goes between two checkpoints (a zstd frame and a progress file update).
const CHECKPOINT_BYTES: usize = 4 << 20;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ExportArgs {
    #[command(subcommand)]
    command: Option<ExportCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum ExportCommand {
    /// Check an export file against its manifest: record count, sha256 and signature.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Query, as for `logsift search`; empty or * exports everything in the range.
    #[arg(default_value = "*")]
    query: String,
    #[command(flatten)]
    conn: ServerArgs,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Output file; `.zst` compresses it. The manifest goes to FILE.manifest.json.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// ndjson (raw bytes and parsed fields per line) or csv.
    #[arg(long, default_value = "ndjson")]
    format: String,
    /// Go on with an interrupted export of the same query into the same file.
    #[arg(long)]
    resume: bool,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The exported file (plain or .zst).
    file: PathBuf,
    /// Its manifest (FILE.manifest.json).
    manifest: PathBuf,
    /// The server's public key (hex, or the JSON of GET /api/v1/keys). Without it the
    /// signature is checked against the key inside the manifest, which proves less.
    #[arg(long)]
    key: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(ExportCommand::Verify(v)) => verify(v),
        None => export(args.run),
    }
}

/// What `FILE.progress` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    request: Value,
    max_id: u64,
    records: u64,
    /// Bytes of the output file that are complete (a frame boundary when compressing).
    file_bytes: u64,
    cursor: Option<String>,
}

fn progress_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".progress");
    PathBuf::from(name)
}

fn manifest_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".manifest.json");
    PathBuf::from(name)
}

/// Replaced atomically and durably, like the output it describes (fsynced at each checkpoint):
/// a crash must not leave progress that is missing, torn or ahead of the file.
fn save_progress(path: &Path, p: &Progress) -> anyhow::Result<()> {
    logsift_core::fsutil::write_atomic(path, &serde_json::to_vec(p)?)?;
    Ok(())
}

/// The cursor (`<ns>_<id>`) of one exported record, read back from its line.
fn cursor_of(format: &str, line: &[u8]) -> Option<String> {
    let (ts, id) = if format == "csv" {
        let text = std::str::from_utf8(line).ok()?;
        let mut cols = text.splitn(3, ',');
        (cols.next()?.to_string(), cols.next()?.to_string())
    } else {
        let v: Value = serde_json::from_slice(line).ok()?;
        (
            v["timestamp"].as_str()?.to_string(),
            v["id"].as_str()?.to_string(),
        )
    };
    let ns = logsift_core::time::parse_rfc3339(&ts)?;
    Some(format!("{ns}_{}", id.parse::<u64>().ok()?))
}

/// Where exported bytes go: the file, through zstd frames when compressing.
enum Sink {
    Plain(File),
    Zstd(Option<zstd::stream::write::Encoder<'static, File>>),
}

impl Sink {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Plain(f) => f.write_all(bytes),
            Sink::Zstd(Some(e)) => e.write_all(bytes),
            Sink::Zstd(None) => Err(std::io::Error::other("encoder closed")),
        }
    }

    /// Makes everything written so far complete on disk; returns the file's length.
    fn checkpoint(&mut self) -> std::io::Result<u64> {
        match self {
            Sink::Plain(f) => {
                f.flush()?;
                f.sync_data()?;
                f.stream_position()
            }
            Sink::Zstd(slot) => {
                // Ending the frame here makes the file so far a valid zstd stream on its own.
                let encoder = slot.take().ok_or_else(|| std::io::Error::other("closed"))?;
                let mut file = encoder.finish()?;
                file.sync_data()?;
                let at = file.stream_position()?;
                *slot = Some(zstd::stream::write::Encoder::new(file, 3)?);
                Ok(at)
            }
        }
    }
}

fn export(args: RunArgs) -> anyhow::Result<ExitCode> {
    let Some(output) = args.output.clone() else {
        bail!("give the output file with -o FILE (FILE.zst to compress)");
    };
    let format = match args.format.as_str() {
        "ndjson" | "json" => "ndjson",
        "csv" => "csv",
        other => bail!("--format must be ndjson or csv, not {other:?}"),
    };
    let compress = output.extension().is_some_and(|e| e == "zst");
    let mut request = json!({ "q": args.query, "format": format });
    for (name, value) in args.scope.params() {
        request[name] = json!(value);
    }
    let progress_file = progress_path(&output);
    let mut resumed: Option<Progress> = None;
    if args.resume {
        let bytes = fs::read(&progress_file).with_context(|| {
            format!(
                "nothing to resume: {} is missing (the export finished, or never started)",
                progress_file.display()
            )
        })?;
        let p: Progress = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is damaged", progress_file.display()))?;
        if p.request != request {
            bail!(
                "{} belongs to another export ({}); resume with the same query, range, indexes and format",
                progress_file.display(),
                p.request
            );
        }
        // Nothing complete yet: start over rather than trust a header-only file.
        resumed = p.cursor.is_some().then_some(p);
    } else if progress_file.exists() {
        bail!(
            "{} exists: an earlier export into this file was interrupted; pass --resume to go on, or delete it",
            progress_file.display()
        );
    }

    let mut body = request.clone();
    if let Some(p) = &resumed {
        body["max_id"] = json!(p.max_id);
        if let Some(c) = &p.cursor {
            body["after"] = json!(c);
        }
    }
    let api = args.conn.api()?;
    let mut response = api.post_stream("/api/v1/export", &body)?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let export_id = header("x-logsift-export-id").context("the server sent no export id")?;
    let max_id: u64 = header("x-logsift-max-id")
        .and_then(|v| v.parse().ok())
        .context("the server sent no max id")?;
    let estimate: u64 = header("x-logsift-estimate")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);

    let file = match &resumed {
        Some(p) => {
            let f = OpenOptions::new()
                .write(true)
                .open(&output)
                .with_context(|| output.display().to_string())?;
            f.set_len(p.file_bytes)?;
            let mut f = f;
            f.seek(SeekFrom::End(0))?;
            f
        }
        None => File::create(&output).with_context(|| output.display().to_string())?,
    };
    let mut sink = if compress {
        Sink::Zstd(Some(zstd::stream::write::Encoder::new(file, 3)?))
    } else {
        Sink::Plain(file)
    };
    let mut progress = resumed.unwrap_or(Progress {
        request: request.clone(),
        max_id,
        records: 0,
        file_bytes: 0,
        cursor: None,
    });
    let already = progress.records;
    let mut meter = Meter::new("records", estimate, already);
    let mut pending: Vec<u8> = Vec::new();
    let mut since_checkpoint = 0usize;
    let mut header_line = format == "csv" && progress.records == 0 && progress.cursor.is_none();
    let mut buf = vec![0u8; 256 * 1024];
    let stream_result: anyhow::Result<()> = loop {
        let n = match response.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(anyhow::anyhow!("the export stream broke: {e}")),
        };
        pending.extend_from_slice(&buf[..n]);
        // Only whole lines are written, so the file always ends on a record.
        let Some(last_nl) = pending.iter().rposition(|&b| b == b'\n') else {
            continue;
        };
        let complete: Vec<u8> = pending.drain(..=last_nl).collect();
        let mut lines = 0u64;
        let mut last_line: &[u8] = &[];
        let mut quoted = false;
        let mut line_start = 0;
        for (i, &b) in complete.iter().enumerate() {
            match b {
                b'"' if format == "csv" => quoted = !quoted,
                b'\n' if !quoted => {
                    if header_line {
                        header_line = false;
                    } else {
                        lines += 1;
                        last_line = &complete[line_start..i];
                    }
                    line_start = i + 1;
                }
                _ => {}
            }
        }
        sink.write_all(&complete)?;
        if lines > 0 {
            progress.records += lines;
            if let Some(c) = cursor_of(format, last_line) {
                progress.cursor = Some(c);
            }
        }
        since_checkpoint += complete.len();
        if since_checkpoint >= CHECKPOINT_BYTES {
            progress.file_bytes = sink.checkpoint()?;
            save_progress(&progress_file, &progress)?;
            since_checkpoint = 0;
        }
        meter.update(progress.records, progress.records);
    };
    progress.file_bytes = sink.checkpoint()?;
    save_progress(&progress_file, &progress)?;
    meter.finish(progress.records, progress.records);
    if let Err(e) = stream_result {
        eprintln!(
            "logsift: export interrupted after {} records ({e}); run the same command with --resume to go on",
            progress.records
        );
        return Ok(ExitCode::FAILURE);
    }
    if let Sink::Zstd(Some(e)) = sink {
        e.finish()?.sync_all()?;
    }
    let manifest = api
        .get_bytes(
            &format!("/api/v1/exports/{export_id}/manifest"),
            Duration::from_secs(30),
        )
        .context("the export ended but its manifest is missing (the server stopped it)")?;
    let mpath = manifest_path(&output);
    // Replaced whole and synced, like the export file it proves: a crash must not leave a
    // torn manifest beside a complete export.
    logsift_core::fsutil::write_atomic(&mpath, &manifest)
        .with_context(|| mpath.display().to_string())?;
    let signed =
        logsift_audit::parse_signed_manifest(&manifest).context("the server's manifest")?;
    if signed.manifest.records != progress.records {
        bail!(
            "the file holds {} records but the server exported {}; run `logsift export verify`",
            progress.records,
            signed.manifest.records
        );
    }
    fs::remove_file(&progress_file).ok();
    eprintln!(
        "exported {} records to {} (manifest {}, sha256 {})",
        progress.records,
        output.display(),
        mpath.display(),
        signed.manifest.sha256
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let text = fs::read(&args.manifest).with_context(|| args.manifest.display().to_string())?;
    let signed = logsift_audit::parse_signed_manifest(&text)
        .with_context(|| args.manifest.display().to_string())?;
    let key = match &args.key {
        Some(path) => {
            let text = fs::read_to_string(path).with_context(|| path.display().to_string())?;
            Some(logsift_audit::parse_public_key(&text)?)
        }
        None => None,
    };
    let v = logsift_audit::verify(&args.file, &signed, key.as_ref())?;
    let m = &signed.manifest;
    println!(
        "export {}: {} records, {} bytes, sha256 {}{}",
        m.export_id,
        v.records,
        v.bytes,
        v.sha256,
        if v.compressed { " (zstd)" } else { "" }
    );
    if v.problems.is_empty() {
        println!(
            "ok: matches the manifest (query {:?}, {} segments, signed by key {}){}",
            m.query,
            m.segments.len(),
            signed.key_id,
            if v.key_from_manifest {
                "; the key was taken from the manifest itself: pass --key with the server's public key to pin it"
            } else {
                ""
            }
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &v.problems {
            println!("FAILED {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}
