//! Offline checks of what is on disk, without opening anything for writing: what
//! `logsift segments list` and `logsift segments verify` print.

use std::fs;
use std::path::Path;

use crate::catalog::{Catalog, CatalogEntry};
use crate::segment::{sha256_file, BundleDirectory, SEGMENT_EXT};

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
pub fn list_segments(dir: &Path) -> Result<Vec<CatalogEntry>, String> {
    let catalog = Catalog::load(dir).map_err(|e| e.to_string())?;
    Ok(catalog.live().into_iter().cloned().collect())
}

/// Rehashes every segment file of the index in `dir` and walks the catalog's chain.
pub fn verify_index(dir: &Path) -> VerifyReport {
    let index = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut report = VerifyReport {
        index,
        ..Default::default()
    };
    let catalog = match Catalog::load(dir) {
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
    let segments_dir = dir.join("segments");
    let live = catalog.live();
    for entry in &live {
        report.segments_checked += 1;
        let path = segments_dir.join(format!("{}.{SEGMENT_EXT}", entry.segment));
        let name = &entry.segment;
        match fs::metadata(&path) {
            Err(_) => {
                report.problems.push(format!(
                    "segment {name}: file {} is missing",
                    path.display()
                ));
                continue;
            }
            Ok(m) if m.len() != entry.file_bytes => report.problems.push(format!(
                "segment {name}: file is {} bytes, the catalog says {}",
                m.len(),
                entry.file_bytes
            )),
            Ok(_) => {}
        }
        match sha256_file(&path) {
            Ok(sha) if sha != entry.sha256 => report.problems.push(format!(
                "segment {name}: sha256 {sha} differs from the catalog's {} (altered or replaced)",
                entry.sha256
            )),
            Ok(_) => {}
            Err(e) => report.problems.push(format!("segment {name}: {e}")),
        }
        match BundleDirectory::open(&path).and_then(|d| d.verify_files()) {
            Ok(()) => {}
            Err(e) => report.problems.push(format!("segment {name}: {e}")),
        }
    }
    if let Ok(files) = fs::read_dir(&segments_dir) {
        for file in files.flatten() {
            let path = file.path();
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if !live.iter().any(|e| e.segment == id) {
                report.problems.push(format!(
                    "file {} is not in the catalog (not served)",
                    path.display()
                ));
            }
        }
    }
    report
}
