use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// The embedded default configuration: `config/logsift.toml`.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/logsift.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub shutdown_timeout_ms: u64,
    pub http: HttpConfig,
    pub syslog: SyslogConfig,
    pub json: JsonConfig,
    pub ingest: IngestConfig,
    pub wal: WalConfig,
    pub index: IndexConfig,
    pub query: QueryConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub indexes: BTreeMap<String, IndexSection>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The Ed25519 key export manifests are signed with (32 bytes, hex); absent: generated at
    /// first start into `<data_dir>/keys/export.key`.
    pub signing_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSection {
    #[serde(default)]
    pub logfmt: bool,
    /// Delete sealed segments whose newest record is older than this many seconds.
    pub retention_age_secs: Option<u64>,
    /// Delete the oldest sealed segments while all of them take more than this.
    pub retention_bytes: Option<u64>,
    #[serde(default)]
    pub legal_holds: Vec<HoldSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldSection {
    /// RFC 3339; absent: from the beginning of time.
    pub start: Option<String>,
    /// RFC 3339, exclusive; absent: with no end. A hold with neither covers the whole index.
    pub end: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    pub tcp: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
    pub index: String,
    pub timezone: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonConfig {
    pub tcp: Option<SocketAddr>,
    pub index: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub max_line_bytes: usize,
    pub inflight_bytes: usize,
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    pub fsync: String,
    pub group_commit_interval_ms: u64,
    pub max_file_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    pub commit_interval_ms: u64,
    pub seal_docs: u64,
    pub seal_interval_ms: u64,
    pub writer_memory_bytes: usize,
    pub docstore_block_bytes: usize,
    pub sealed_zstd_level: i32,
    pub merge_factor: usize,
    pub merge_max_docs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    pub query_timeout_ms: u64,
    pub max_concurrent_queries: usize,
    pub terms_max_values: usize,
}

/// Overlays `over` onto `base`, table by table, so a user file only names what it changes.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

impl Config {
    /// The embedded defaults, overlaid with `file` if given, validated.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut value: toml::Value =
            toml::from_str(DEFAULT_CONFIG).context("embedded default config")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config {}", path.display()))?;
            let over: toml::Value = toml::from_str(&text)
                .with_context(|| format!("parsing config {}", path.display()))?;
            merge(&mut value, over);
        }
        let cfg: Config = value.try_into().with_context(|| {
            format!(
                "invalid config{}",
                file.map(|p| format!(" {}", p.display()))
                    .unwrap_or_default()
            )
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        const MIN_WRITER_MEMORY: usize = 15_000_000;
        if self.ingest.inflight_bytes < self.ingest.max_line_bytes {
            bail!(
                "ingest.inflight_bytes ({}) must be at least ingest.max_line_bytes ({})",
                self.ingest.inflight_bytes,
                self.ingest.max_line_bytes
            );
        }
        if self.shutdown_timeout_ms == 0 {
            bail!("shutdown_timeout_ms must be positive");
        }
        if self.index.writer_memory_bytes < MIN_WRITER_MEMORY {
            bail!(
                "index.writer_memory_bytes is {}; the minimum is {MIN_WRITER_MEMORY}",
                self.index.writer_memory_bytes
            );
        }
        if self.index.commit_interval_ms == 0 || self.index.commit_interval_ms > 60_000 {
            bail!(
                "index.commit_interval_ms must be between 1 and 60000, not {}",
                self.index.commit_interval_ms
            );
        }
        if self.ingest.max_line_bytes < 64 || self.ingest.max_line_bytes > 16 << 20 {
            bail!(
                "ingest.max_line_bytes must be between 64 and 16777216, not {}",
                self.ingest.max_line_bytes
            );
        }
        if self.http.max_body_bytes < self.ingest.max_line_bytes {
            bail!(
                "http.max_body_bytes ({}) must be at least ingest.max_line_bytes ({})",
                self.http.max_body_bytes,
                self.ingest.max_line_bytes
            );
        }
        if !(1..=22).contains(&self.index.sealed_zstd_level) {
            bail!(
                "index.sealed_zstd_level must be between 1 and 22, not {}",
                self.index.sealed_zstd_level
            );
        }
        if !(4096..=16 << 20).contains(&self.index.docstore_block_bytes) {
            bail!(
                "index.docstore_block_bytes must be between 4096 and 16777216, not {}",
                self.index.docstore_block_bytes
            );
        }
        if self.query.query_timeout_ms == 0 {
            bail!("query.query_timeout_ms must be positive");
        }
        if self.query.max_concurrent_queries == 0 {
            bail!("query.max_concurrent_queries must be at least 1");
        }
        if self.query.terms_max_values == 0 {
            bail!("query.terms_max_values must be at least 1");
        }
        self.fsync_policy()?;
        self.timezone_offset_secs()?;
        for name in self.indexes.keys() {
            logsift_core::IndexName::new(name).with_context(|| format!("[indexes.{name}]"))?;
        }
        self.index_options()?;
        logsift_core::IndexName::new(&self.syslog.index).context("syslog.index")?;
        logsift_core::IndexName::new(&self.json.index).context("json.index")?;
        Ok(())
    }

    /// Per-index settings for the store, validated.
    pub fn index_options(&self) -> anyhow::Result<BTreeMap<String, logsift_store::IndexOptions>> {
        let mut out = BTreeMap::new();
        for (name, s) in &self.indexes {
            let mut holds = Vec::new();
            for (i, h) in s.legal_holds.iter().enumerate() {
                let at = |v: &str| {
                    logsift_core::time::parse_rfc3339(v).with_context(|| {
                        format!("[indexes.{name}] legal_holds[{i}]: {v:?} is not an RFC 3339 time")
                    })
                };
                let start = h.start.as_deref().map(at).transpose()?.unwrap_or(i64::MIN);
                let end = h.end.as_deref().map(at).transpose()?.unwrap_or(i64::MAX);
                if start >= end {
                    bail!("[indexes.{name}] legal_holds[{i}]: start must be before end");
                }
                holds.push(logsift_store::LegalHold {
                    start,
                    end,
                    reason: h.reason.clone(),
                });
            }
            out.insert(
                name.clone(),
                logsift_store::IndexOptions {
                    logfmt: s.logfmt,
                    retention_age_secs: s.retention_age_secs,
                    retention_bytes: s.retention_bytes,
                    legal_holds: holds,
                },
            );
        }
        Ok(out)
    }

    pub fn fsync_policy(&self) -> anyhow::Result<logsift_ingest::FsyncPolicy> {
        use logsift_ingest::FsyncPolicy::*;
        Ok(match self.wal.fsync.as_str() {
            "batch" => Batch,
            "always" => Always,
            "never" => Never,
            other => bail!("wal.fsync must be batch, always or never, not {other:?}"),
        })
    }

    /// `syslog.timezone` as seconds east of UTC.
    pub fn timezone_offset_secs(&self) -> anyhow::Result<i32> {
        let tz = self.syslog.timezone.trim();
        if tz.eq_ignore_ascii_case("utc") || tz == "Z" {
            return Ok(0);
        }
        let bad =
            || anyhow::anyhow!("syslog.timezone must be UTC or an offset like +02:00, not {tz:?}");
        let (sign, rest) = match tz.as_bytes().first() {
            Some(b'+') => (1, &tz[1..]),
            Some(b'-') => (-1, &tz[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').ok_or_else(bad)?;
        let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(sign * (h * 3600 + m * 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let cfg = Config::load(None).unwrap();
        assert_eq!(cfg.http.listen.to_string(), "127.0.0.1:9480");
        assert_eq!(cfg.timezone_offset_secs().unwrap(), 0);
    }

    #[test]
    fn user_file_overrides_only_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[syslog]\ntimezone = \"-05:30\"\n").unwrap();
        let cfg = Config::load(Some(&path)).unwrap();
        assert_eq!(cfg.timezone_offset_secs().unwrap(), -(5 * 3600 + 30 * 60));
        assert_eq!(cfg.syslog.index, "logs");
    }

    #[test]
    fn bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[wal]\nfsync = \"sometimes\"\n").unwrap();
        assert!(format!("{:#}", Config::load(Some(&path)).unwrap_err()).contains("wal.fsync"));
        std::fs::write(&path, "[http]\nlisten = \"nowhere\"\n").unwrap();
        assert!(Config::load(Some(&path)).is_err());
        std::fs::write(&path, "[query]\nmax_concurrent_queries = 0\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(err.contains("query.max_concurrent_queries"), "{err}");
        std::fs::write(&path, "typo_key = 1\n").unwrap();
        assert!(format!("{:#}", Config::load(Some(&path)).unwrap_err()).contains("typo_key"));
        std::fs::write(&path, "[index]\nsealed_zstd_level = 30\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(err.contains("index.sealed_zstd_level"), "{err}");
    }

    #[test]
    fn a_hold_without_a_range_covers_the_whole_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[indexes.audit]\nlegal_holds = [{ reason = \"case 7\" }, { start = \"2026-01-01T00:00:00Z\", reason = \"open-ended\" }]\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&path)).unwrap();
        let holds = &cfg.index_options().unwrap()["audit"].legal_holds;
        assert_eq!((holds[0].start, holds[0].end), (i64::MIN, i64::MAX));
        assert_eq!(holds[1].start, 1_767_225_600_000_000_000);
        assert_eq!(holds[1].end, i64::MAX);
    }
}
