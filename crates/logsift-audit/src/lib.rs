//! Verifiable exports: formats, signed manifests, keys and verification. See the README.

use std::borrow::Cow;
use std::fs;
use std::io::Read;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use logsift_core::fsutil::Replace;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Version of the manifest layout; bumped when a field changes meaning.
pub const MANIFEST_VERSION: u32 = 1;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}

// ---- formats ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ndjson,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Result<Self, AuditError> {
        match s {
            "ndjson" | "json" => Ok(Format::Ndjson),
            "csv" => Ok(Format::Csv),
            other => Err(AuditError::Invalid(format!(
                "format must be ndjson or csv, not {other:?}"
            ))),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// The CSV columns, in order. `fields` is the record's extra fields as one JSON object.
pub const CSV_COLUMNS: [&str; 12] = [
    "timestamp",
    "id",
    "index",
    "severity",
    "facility",
    "host",
    "app",
    "procid",
    "msgid",
    "message",
    "fields",
    "raw",
];

/// The CSV writer of an export: `,` between fields, `\n` after each row, a field quoted only
/// when it holds `,`, `"`, `\r` or `\n` (quotes doubled inside). These are the bytes the
/// hand-written quoting before the `csv` crate produced, so manifests of older exports and
/// their sha256 still describe the same bytes.
fn csv_builder() -> csv::WriterBuilder {
    let mut b = csv::WriterBuilder::new();
    b.terminator(csv::Terminator::Any(b'\n'))
        .quote_style(csv::QuoteStyle::Necessary)
        // A row's buffer before it reaches `out`; longer fields pass through in pieces.
        .buffer_capacity(4096);
    b
}

/// One CSV row (header or record), appended to `out` by a `csv::Writer` of its own.
fn csv_row<I, T>(fields: I, out: &mut Vec<u8>)
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    let mut w = csv_builder().from_writer(out);
    // Writing to a Vec cannot fail, and every row has the same 12 fields.
    let _ = w.write_record(fields);
    let _ = w.flush();
}

/// Serializes exported records and keeps the count and sha256 of every byte produced, so
/// that what was sent and what the manifest says are the same thing by construction.
pub struct Encoder {
    format: Format,
    sha: Sha256,
    records: u64,
    bytes: u64,
}

impl Encoder {
    pub fn new(format: Format) -> Self {
        Encoder {
            format,
            sha: Sha256::new(),
            records: 0,
            bytes: 0,
        }
    }

    /// The bytes that open an export (the CSV header), appended to `out`.
    pub fn header(&mut self, out: &mut Vec<u8>) {
        if self.format == Format::Csv {
            let start = out.len();
            csv_row(CSV_COLUMNS, out);
            self.account(&out[start..]);
        }
    }

    /// One hit (as the search API shapes it), appended to `out`.
    pub fn record(&mut self, hit: &Value, out: &mut Vec<u8>) {
        let start = out.len();
        match self.format {
            Format::Ndjson => {
                // Serializing a Value to a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, hit);
                out.push(b'\n');
            }
            Format::Csv => {
                let row = CSV_COLUMNS.map(|col| match &hit[col] {
                    Value::Null => Cow::Borrowed(""),
                    Value::String(s) => Cow::Borrowed(s.as_str()),
                    Value::Object(o) if o.is_empty() => Cow::Borrowed(""),
                    other => Cow::Owned(other.to_string()),
                });
                csv_row(row.iter().map(|f| f.as_bytes()), out);
            }
        }
        self.records += 1;
        self.account(&out[start..]);
    }

    fn account(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.bytes += bytes.len() as u64;
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The sha256 of everything produced, hex.
    pub fn finish(self) -> String {
        hex::encode(self.sha.finalize())
    }
}

// ---- manifest ----

/// A sealed segment the export's range overlapped when it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    pub index: String,
    pub segment: String,
    pub sha256: String,
}

/// What an export contains and where it came from. Field order is the signed byte order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub export_id: String,
    pub query: String,
    pub indexes: Vec<String>,
    /// RFC 3339, inclusive; absent: from the oldest record.
    pub start: Option<String>,
    /// RFC 3339, exclusive; absent: to the newest record.
    pub end: Option<String>,
    /// Records with a higher id (received after the export began) are left out, so that the
    /// export is a fixed set and can be resumed or repeated.
    pub max_id: u64,
    pub format: Format,
    pub records: u64,
    pub bytes: u64,
    /// sha256 of the exported bytes (before any compression the client adds), hex.
    pub sha256: String,
    pub segments: Vec<SegmentRef>,
    /// Index name → the hash at the head of its catalog chain, when the export started.
    pub catalog_heads: Vec<(String, String)>,
    pub server_version: String,
    pub created_at: String,
}

impl Manifest {
    /// The bytes that are signed: the manifest's JSON in field order.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A manifest with its signature, as stored and served.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedManifest {
    pub manifest: Manifest,
    /// Ed25519 signature of `manifest`'s canonical bytes, hex.
    pub signature: String,
    pub key_id: String,
    /// The signer's public key, hex. Verification should pin the server's key instead of
    /// trusting this copy (`logsift export verify --key`).
    pub public_key: String,
}

/// Reads a stored manifest (`FILE.manifest.json`, or the server's answer). The version is read
/// first: a manifest of another version is refused by name, not read as if it were this one
/// (a later layout may give a field another meaning, and its signed bytes are its own).
pub fn parse_signed_manifest(bytes: &[u8]) -> Result<SignedManifest, AuditError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| AuditError::Invalid(format!("not an export manifest: {e}")))?;
    let version = &value["manifest"]["version"];
    if version.is_null() {
        return Err(AuditError::Invalid(
            "not an export manifest: it has no manifest.version".into(),
        ));
    }
    if version.as_u64() != Some(u64::from(MANIFEST_VERSION)) {
        return Err(unknown_version(version));
    }
    serde_json::from_value(value)
        .map_err(|e| AuditError::Invalid(format!("not an export manifest: {e}")))
}

fn unknown_version(version: impl std::fmt::Display) -> AuditError {
    AuditError::Invalid(format!(
        "export manifest version {version} is unknown to this logsift, which reads version \
         {MANIFEST_VERSION}: verify it with the logsift that made it"
    ))
}

// ---- keys ----

/// The server's export signing key.
pub struct Keys {
    signing: SigningKey,
}

impl Keys {
    /// Loads the key at `path` (32 bytes, hex), or creates one with mode 0600 if absent.
    pub fn load_or_generate(path: &Path) -> Result<Keys, AuditError> {
        match fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim()).map_err(|e| {
                    AuditError::Invalid(format!("{}: not a hex key: {e}", path.display()))
                })?;
                let secret: [u8; 32] = bytes.try_into().map_err(|_| {
                    AuditError::Invalid(format!("{}: an Ed25519 key is 32 bytes", path.display()))
                })?;
                Ok(Keys {
                    signing: SigningKey::from_bytes(&secret),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                fs::File::open("/dev/urandom")
                    .and_then(|mut f| f.read_exact(&mut secret))
                    .map_err(io_err(Path::new("/dev/urandom")))?;
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(io_err(dir))?;
                }
                // Owner-only from its creation: the key signs every export manifest.
                Replace::new()
                    .mode(0o600)
                    .write(path, hex::encode(secret).as_bytes())
                    .map_err(|e| io_err(&e.path)(e.source))?;
                Ok(Keys {
                    signing: SigningKey::from_bytes(&secret),
                })
            }
            Err(e) => Err(io_err(path)(e)),
        }
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().to_bytes())
    }

    /// A short, stable name for the key: the first 16 hex digits of the public key's sha256.
    pub fn key_id(&self) -> String {
        key_id_of(&self.signing.verifying_key().to_bytes())
    }

    pub fn sign(&self, manifest: Manifest) -> SignedManifest {
        let signature = self.signing.sign(&manifest.canonical_bytes());
        SignedManifest {
            manifest,
            signature: hex::encode(signature.to_bytes()),
            key_id: self.key_id(),
            public_key: self.public_hex(),
        }
    }
}

fn key_id_of(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

/// Reads a public key as `GET /api/v1/keys` serves it (hex), or a JSON file of that answer.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, AuditError> {
    let text = text.trim();
    let hex_key = if text.starts_with('{') {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| AuditError::Invalid(format!("key file is not JSON: {e}")))?;
        v["keys"][0]["public_key"]
            .as_str()
            .or_else(|| v["public_key"].as_str())
            .ok_or_else(|| AuditError::Invalid("key file has no public_key".into()))?
            .to_string()
    } else {
        text.to_string()
    };
    let bytes = hex::decode(&hex_key)
        .map_err(|e| AuditError::Invalid(format!("public key is not hex: {e}")))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| AuditError::Invalid("an Ed25519 public key is 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|e| AuditError::Invalid(format!("not an Ed25519 public key: {e}")))
}

// ---- verification ----

/// What `verify` checked.
#[derive(Debug, Default)]
pub struct Verified {
    pub records: u64,
    pub bytes: u64,
    pub sha256: String,
    pub compressed: bool,
    /// The signature was checked against the manifest's own copy of the key, not a pinned one.
    pub key_from_manifest: bool,
    /// One line per mismatch; empty means the file is what the manifest says.
    pub problems: Vec<String>,
}

/// Counts records: NDJSON lines, or CSV rows after the header (quoted newlines stay inside
/// their row).
fn count_records(format: Format, bytes: &[u8]) -> u64 {
    match format {
        Format::Ndjson => bytes.iter().filter(|&&b| b == b'\n').count() as u64,
        Format::Csv => {
            let mut rows = 0u64;
            let mut quoted = false;
            for &b in bytes {
                match b {
                    b'"' => quoted = !quoted,
                    b'\n' if !quoted => rows += 1,
                    _ => {}
                }
            }
            rows.saturating_sub(1)
        }
    }
}

/// Checks `file` (plain, or zstd as `logsift export -o x.zst` writes it) against `manifest`,
/// and the signature against `key` (or, without one, the key the manifest carries). A manifest
/// of another version than [`MANIFEST_VERSION`] is an error: its fields are not checked as if
/// they meant what version 1's mean.
pub fn verify(
    file: &Path,
    manifest: &SignedManifest,
    key: Option<&VerifyingKey>,
) -> Result<Verified, AuditError> {
    if manifest.manifest.version != MANIFEST_VERSION {
        return Err(unknown_version(manifest.manifest.version));
    }
    let mut raw = Vec::new();
    fs::File::open(file)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .map_err(io_err(file))?;
    let mut out = Verified::default();
    let bytes = if raw.starts_with(&ZSTD_MAGIC) {
        out.compressed = true;
        match zstd::stream::decode_all(&raw[..]) {
            Ok(b) => b,
            Err(e) => {
                out.problems
                    .push(format!("the file is zstd but does not decompress: {e}"));
                return Ok(out);
            }
        }
    } else {
        raw
    };
    let m = &manifest.manifest;
    out.records = count_records(m.format, &bytes);
    out.bytes = bytes.len() as u64;
    out.sha256 = hex::encode(Sha256::digest(&bytes));
    if out.records != m.records {
        out.problems.push(format!(
            "record count: the file holds {} records, the manifest says {}",
            out.records, m.records
        ));
    }
    if out.bytes != m.bytes {
        out.problems.push(format!(
            "size: the file holds {} bytes, the manifest says {}",
            out.bytes, m.bytes
        ));
    }
    if out.sha256 != m.sha256 {
        out.problems.push(format!(
            "sha256: the file's is {}, the manifest says {} (the content was changed)",
            out.sha256, m.sha256
        ));
    }
    let embedded = parse_public_key(&manifest.public_key);
    let key = match (key, &embedded) {
        (Some(k), _) => *k,
        (None, Ok(k)) => {
            out.key_from_manifest = true;
            *k
        }
        (None, Err(e)) => {
            out.problems.push(format!("the manifest's public key: {e}"));
            return Ok(out);
        }
    };
    if key_id_of(&key.to_bytes()) != manifest.key_id {
        out.problems.push(format!(
            "key: the manifest was signed by key {}, not by the given key {}",
            manifest.key_id,
            key_id_of(&key.to_bytes())
        ));
    }
    let signature = hex::decode(&manifest.signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b));
    match signature {
        None => out
            .problems
            .push("signature: not a hex Ed25519 signature".into()),
        Some(sig) => {
            if key.verify(&m.canonical_bytes(), &sig).is_err() {
                out.problems.push(format!(
                    "signature: does not verify with key {} (the manifest was altered or signed by another key)",
                    key_id_of(&key.to_bytes())
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(records: u64, bytes: u64, sha256: String) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            export_id: "e1".into(),
            query: "error".into(),
            indexes: vec!["logs".into()],
            start: None,
            end: None,
            max_id: 10,
            format: Format::Ndjson,
            records,
            bytes,
            sha256,
            segments: vec![],
            catalog_heads: vec![("logs".into(), "00".into())],
            server_version: "test".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_counts_rows_with_newlines_inside() {
        let mut enc = Encoder::new(Format::Csv);
        let mut out = Vec::new();
        enc.header(&mut out);
        enc.record(
            &json!({"timestamp": "t", "id": "1", "message": "a, \"b\"\nc", "fields": {"k": 1}}),
            &mut out,
        );
        enc.record(&json!({"id": "2", "message": "plain"}), &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("\"a, \"\"b\"\"\nc\""), "{text}");
        assert!(text.contains("\"{\"\"k\"\":1}\""), "{text}");
        assert_eq!(count_records(Format::Csv, &out), 2);
        assert_eq!(enc.records(), 2);
    }

    /// The exact bytes, as the hand-written quoting wrote them before the `csv` crate: an
    /// export's sha256 is over these bytes, so they must not change.
    #[test]
    fn csv_bytes_are_the_same_as_before() {
        let mut enc = Encoder::new(Format::Csv);
        let mut out = Vec::new();
        enc.header(&mut out);
        enc.record(
            &json!({"timestamp": "2026-01-01T00:00:00Z", "id": "7", "index": "logs",
                    "severity": "error", "host": " h ", "app": "#a", "procid": "",
                    "msgid": "x\ry", "message": "a, \"b\"\nc", "fields": {"k": [1, "v"]},
                    "raw": "'single' \\ tab\t"}),
            &mut out,
        );
        enc.record(&json!({"id": "8", "fields": {}, "facility": 3}), &mut out);
        let expected = "timestamp,id,index,severity,facility,host,app,procid,msgid,message,fields,raw\n\
            2026-01-01T00:00:00Z,7,logs,error,, h ,#a,,\"x\ry\",\"a, \"\"b\"\"\nc\",\"{\"\"k\"\":[1,\"\"v\"\"]}\",'single' \\ tab\t\n\
            ,8,,,3,,,,,,,\n";
        assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
        assert_eq!(enc.bytes(), expected.len() as u64);
        assert_eq!(
            enc.finish(),
            hex::encode(Sha256::digest(expected.as_bytes()))
        );
    }

    #[test]
    fn verify_names_a_changed_byte_a_removed_line_and_a_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_generate(&dir.path().join("k/export.key")).unwrap();
        let again = Keys::load_or_generate(&dir.path().join("k/export.key")).unwrap();
        assert_eq!(keys.public_hex(), again.public_hex(), "the key persists");
        let mut enc = Encoder::new(Format::Ndjson);
        let mut out = Vec::new();
        for i in 0..3 {
            enc.record(&json!({"id": i.to_string(), "message": "m"}), &mut out);
        }
        let (records, bytes) = (enc.records(), enc.bytes());
        let signed = keys.sign(manifest(records, bytes, enc.finish()));
        let file = dir.path().join("x.ndjson");
        fs::write(&file, &out).unwrap();
        let pinned = parse_public_key(&keys.public_hex()).unwrap();
        assert!(verify(&file, &signed, Some(&pinned))
            .unwrap()
            .problems
            .is_empty());

        // zstd-compressed copies verify the same.
        let zst = dir.path().join("x.ndjson.zst");
        fs::write(&zst, zstd::encode_all(&out[..], 3).unwrap()).unwrap();
        let v = verify(&zst, &signed, Some(&pinned)).unwrap();
        assert!(v.compressed && v.problems.is_empty(), "{:?}", v.problems);

        let mut flipped = out.clone();
        flipped[5] ^= 1;
        fs::write(&file, &flipped).unwrap();
        let p = verify(&file, &signed, Some(&pinned)).unwrap().problems;
        assert!(p.iter().any(|p| p.starts_with("sha256")), "{p:?}");

        let cut = out[..out.len() - 1]
            .rsplitn(2, |&b| b == b'\n')
            .nth(1)
            .unwrap();
        fs::write(&file, [cut, b"\n"].concat()).unwrap();
        let p = verify(&file, &signed, Some(&pinned)).unwrap().problems;
        assert!(
            p.iter()
                .any(|p| p.contains("holds 2 records, the manifest says 3")),
            "{p:?}"
        );

        fs::write(&file, &out).unwrap();
        let other = Keys::load_or_generate(&dir.path().join("other.key")).unwrap();
        let wrong = parse_public_key(&other.public_hex()).unwrap();
        let p = verify(&file, &signed, Some(&wrong)).unwrap().problems;
        assert!(p.iter().any(|p| p.starts_with("key:")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("signature:")), "{p:?}");

        let mut forged = signed.clone();
        forged.manifest.records = 4;
        let p = verify(&file, &forged, Some(&pinned)).unwrap().problems;
        assert!(p.iter().any(|p| p.starts_with("signature:")), "{p:?}");
    }

    #[test]
    fn a_manifest_of_an_unknown_version_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_generate(&dir.path().join("export.key")).unwrap();
        let file = dir.path().join("x.ndjson");
        fs::write(&file, b"").unwrap();
        let signed = keys.sign(manifest(0, 0, hex::encode(Sha256::digest(b""))));
        let bytes = serde_json::to_vec_pretty(&signed).unwrap();
        let read = parse_signed_manifest(&bytes).unwrap();
        assert!(verify(&file, &read, None).unwrap().problems.is_empty());

        // Signed as version 2 by its own key: refused, not verified as version 1.
        let mut later = manifest(0, 0, hex::encode(Sha256::digest(b"")));
        later.version = 2;
        let later = keys.sign(later);
        let e = verify(&file, &later, None).unwrap_err().to_string();
        assert!(e.contains("manifest version 2 is unknown"), "{e}");
        // A later layout need not deserialize as this one: the version is read first.
        let mut v: Value = serde_json::to_value(&later).unwrap();
        v["manifest"].as_object_mut().unwrap().remove("records");
        let e = parse_signed_manifest(v.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("manifest version 2 is unknown"), "{e}");
        for (bad, want) in [
            (
                json!({"manifest": {"version": "1"}}),
                "version \"1\" is unknown",
            ),
            (json!({"manifest": {}}), "no manifest.version"),
            (json!([]), "no manifest.version"),
        ] {
            let e = parse_signed_manifest(bad.to_string().as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }
}
