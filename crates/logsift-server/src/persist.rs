//! Small JSON documents of the server's own (saved searches, alert rules and alert state) in
//! the data directory: each file is `{"format": NAME, "version": N, ...}` and is replaced
//! atomically (write a temporary file, fsync it, rename it over the old one, fsync the
//! directory), so a crash leaves either the old document or the new one, never a mix.

use std::path::Path;

use serde_json::Value;

/// Reads `path` as a document of `format` at `version`; `Ok(None)` when the file does not
/// exist yet. A document of another format or a newer version is an error, so that an older
/// binary never overwrites what a newer one wrote.
pub fn read(path: &Path, format: &str, version: u64) -> Result<Option<Value>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    if doc.get("format").and_then(Value::as_str) != Some(format) {
        return Err(format!(
            "{} is not a {format} document (its \"format\" field differs)",
            path.display()
        ));
    }
    match doc.get("version").and_then(Value::as_u64) {
        Some(v) if v == version => Ok(Some(doc)),
        Some(v) => Err(format!(
            "{} has format version {v}; this logsift reads version {version}",
            path.display()
        )),
        None => Err(format!("{} has no format version", path.display())),
    }
}

/// Writes `doc` (an object; `format` and `version` are set here) to `path` atomically and
/// durably. Blocking: call it off the async runtime.
pub fn write(path: &Path, format: &str, version: u64, mut doc: Value) -> Result<(), String> {
    if let Value::Object(map) = &mut doc {
        map.insert("format".into(), Value::from(format));
        map.insert("version".into(), Value::from(version));
    }
    let dir = path
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", path.display()))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("creating the directory of {}: {e}", path.display()))?;
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
    logsift_core::fsutil::write_atomic(path, &bytes).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/doc.json");
        assert_eq!(read(&path, "x", 1).unwrap(), None);
        write(&path, "x", 1, json!({"items": [1, 2]})).unwrap();
        let doc = read(&path, "x", 1).unwrap().unwrap();
        assert_eq!(doc["items"], json!([1, 2]));
        assert!(read(&path, "y", 1)
            .unwrap_err()
            .contains("not a y document"));
        assert!(read(&path, "x", 2).unwrap_err().contains("version 1"));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(read(&path, "x", 1).unwrap_err().contains("not valid JSON"));
    }
}
