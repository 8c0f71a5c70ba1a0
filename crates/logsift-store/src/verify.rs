//! Offline checks of what is on disk, without opening anything for writing: what
//! `logsift segments list` and `logsift segments verify` print.

use std::path::Path;
use std::sync::Arc;

use crate::catalog::CatalogEntry;
use crate::files::{LocalSegments, SegmentFiles, SegmentStorage, SEGMENTS_DIR};
use crate::metastore::Metastore;

/// What `verify` found in one index directory.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub index: String,
    pub segments_checked: usize,
    pub catalog_head: String,
    /// One line per problem, naming the segment or catalog entry and what is wrong.
    pub problems: Vec<String>,
}

/// The live segments of the index in `dir`, oldest first.
pub fn list_segments(dir: &Path, metastore: &Metastore) -> Result<Vec<CatalogEntry>, String> {
    let catalog = metastore
        .load(dir, &index_name(dir))
        .map_err(|e| e.to_string())?;
    Ok(catalog.live().into_iter().cloned().collect())
}

/// How segment `id` of the index in `dir` lays out its records, `"blocks"` or `"records"`,
/// read from its bundle's list of files. `None` when the segments are not local (a listing
/// must not download every segment) or the bundle does not open (`verify` says why).
pub fn segment_layout(dir: &Path, storage: &SegmentStorage, id: &str) -> Option<&'static str> {
    if !matches!(storage, SegmentStorage::Local) {
        return None;
    }
    let bundle = LocalSegments::at(&dir.join(SEGMENTS_DIR)).open(id).ok()?;
    let blocks = bundle
        .file_sizes()
        .iter()
        .any(|(name, _)| name == crate::blocks::BODY_FILE);
    Some(if blocks { "blocks" } else { "records" })
}

fn index_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Rehashes every segment file of the index in `dir` (kept in `storage`) and walks the
/// catalog's chain (kept in `metastore`).
pub fn verify_index(dir: &Path, storage: &SegmentStorage, metastore: &Metastore) -> VerifyReport {
    let index = index_name(dir);
    let mut report = VerifyReport {
        index,
        ..Default::default()
    };
    let catalog = match metastore.load(dir, &report.index) {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(format!("catalog: {e}"));
            return report;
        }
    };
    report.catalog_head = catalog.head();
    report.problems.extend(
        catalog
            .verify_chain()
            .into_iter()
            .map(|p| format!("catalog: {p}")),
    );
    let files: Arc<dyn SegmentFiles> = match storage {
        // Offline: look without creating anything.
        SegmentStorage::Local => Arc::new(LocalSegments::at(&dir.join(SEGMENTS_DIR))),
        other => match other.for_index(dir, &report.index) {
            Ok(f) => f,
            Err(e) => {
                report.problems.push(format!("segment storage: {e}"));
                return report;
            }
        },
    };
    let live = catalog.live();
    for entry in &live {
        report.segments_checked += 1;
        let name = &entry.segment;
        match files.size(name) {
            Ok(None) => {
                report.problems.push(format!(
                    "segment {name}: file {} is missing",
                    files.location(name)
                ));
                continue;
            }
            Ok(Some(len)) if len != entry.file_bytes => report.problems.push(format!(
                "segment {name}: file is {len} bytes, the catalog says {}",
                entry.file_bytes
            )),
            Ok(Some(_)) => {}
            Err(e) => report.problems.push(format!("segment {name}: {e}")),
        }
        match files.check(name) {
            Ok((sha, inner)) => {
                if sha != entry.sha256 {
                    report.problems.push(format!(
                        "segment {name}: sha256 {sha} differs from the catalog's {} (altered or replaced)",
                        entry.sha256
                    ));
                }
                if let Err(e) = inner {
                    report.problems.push(format!("segment {name}: {e}"));
                }
            }
            Err(e) => report.problems.push(format!("segment {name}: {e}")),
        }
    }
    // Not being able to list the directory at all is reported by the checks above.
    let unlisted = files
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|id| !live.iter().any(|e| e.segment == *id))
        .map(|id| files.location(&id));
    let leftovers = files
        .leftovers()
        .unwrap_or_default()
        .into_iter()
        .map(|name| format!("{}/{name}", files.root()));
    for path in unlisted.chain(leftovers) {
        report
            .problems
            .push(format!("file {path} is not in the catalog (not served)"));
    }
    report
}
