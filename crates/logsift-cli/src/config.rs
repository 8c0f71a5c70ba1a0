use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use logsift_ingest::tls::{ClientAuth, TlsFiles};
use serde::Deserialize;

/// The embedded default configuration: `config/logsift.toml`.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/logsift.toml");

/// How the server writes its own log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people; ANSI colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers (logsift can ingest its own log).
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub shutdown_timeout_ms: u64,
    #[serde(default)]
    pub log_format: LogFormat,
    pub http: HttpConfig,
    pub syslog: SyslogConfig,
    pub json: JsonConfig,
    pub otlp: OtlpConfig,
    pub elasticsearch: ElasticsearchConfig,
    pub ingest: IngestConfig,
    pub wal: WalConfig,
    pub index: IndexConfig,
    pub query: QueryConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub indexes: BTreeMap<String, IndexSection>,
    #[serde(default)]
    pub tls: TlsSection,
    pub security: SecuritySection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub metastore: MetastoreSection,
    #[serde(default)]
    pub node: NodeSection,
    /// Alert rules and where notifications go (`[alerts]`, `[[alerts.rules]]`).
    #[serde(default)]
    pub alerts: logsift_server::alerts::AlertsConfig,
}

/// What this process does (`[node]`, or `logsift serve --role`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    pub role: Role,
    /// How often a searcher reads the metastore for segments published since.
    pub refresh_ms: u64,
    /// Base URLs (`http://host:port`) of searchers that share this process's searches: each
    /// reads the sealed segments rendezvous hashing gives it.
    pub searchers: Vec<String>,
    /// This indexer's number among several writing through one metastore (1 to 127), which
    /// gives its records ids of their own; 0, the default, for a lone writer.
    pub indexer: u16,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            role: Role::All,
            refresh_ms: 1000,
            searchers: Vec::new(),
            indexer: 0,
        }
    }
}

/// The part a process plays with others sharing one metastore and one object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ingest, seal, publish and answer queries: one process does everything.
    All,
    /// The same work as `all`; named for deployments that add searchers beside it.
    Indexer,
    /// Answers queries over the published segments only: no WAL, no listeners, nothing
    /// written but audit records (to the metastore's outbox) and its segment cache.
    Searcher,
}

/// Where each index's catalog is kept: `catalog.json` in its directory (`url` empty), or
/// PostgreSQL.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetastoreSection {
    /// `""` or `postgres://user:password@host:port/database`.
    pub url: String,
}

/// Where sealed segment files are kept: each index's directory under `data_dir` (`url`
/// empty), or an S3-compatible object store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// `""` or `s3://bucket/prefix`.
    pub url: String,
    /// `http(s)://host:port` of an S3-compatible service; empty for AWS.
    pub endpoint: String,
    pub region: String,
    /// Empty: from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub access_key_id: String,
    pub secret_access_key: String,
    pub allow_http: bool,
    /// Local copies of segments, which searches map; default `<data_dir>/segment-cache`.
    pub cache_dir: Option<PathBuf>,
}

impl Config {
    /// A searcher reads what indexers publish: without a shared metastore it would serve
    /// nothing.
    pub fn check_role(&self) -> anyhow::Result<()> {
        if self.node.role == Role::Searcher && self.metastore.url.is_empty() {
            bail!(
                "a searcher (node.role = \"searcher\") needs a shared metastore: set [metastore] url = \"postgres://...\", the one the indexers publish to"
            );
        }
        Ok(())
    }

    /// The metastore the config names, connected; a `writer` (the server) takes the writer
    /// lease, offline commands only read.
    pub fn metastore(&self, writer: bool) -> anyhow::Result<logsift_store::Metastore> {
        if self.metastore.url.is_empty() {
            return Ok(logsift_store::Metastore::Files);
        }
        let pg = logsift_store::PgMetastore::connect_as(
            &self.metastore.url,
            writer.then_some(self.node.indexer),
        )
        .map_err(|e| anyhow::anyhow!("metastore: {e}"))?;
        Ok(logsift_store::Metastore::Postgres(std::sync::Arc::new(pg)))
    }

    /// The segment storage the config names, connected (nothing is requested yet).
    /// How seals lay out segments (`index.layout`).
    pub fn layout(&self) -> anyhow::Result<logsift_store::Layout> {
        match self.index.layout.as_str() {
            "records" => Ok(logsift_store::Layout::Records),
            "blocks" => Ok(logsift_store::Layout::Blocks),
            other => bail!("index.layout must be \"records\" or \"blocks\", not {other:?}"),
        }
    }

    pub fn segment_storage(&self) -> anyhow::Result<logsift_store::SegmentStorage> {
        let s = &self.storage;
        if s.url.is_empty() {
            return Ok(logsift_store::SegmentStorage::Local);
        }
        let cache = s
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("segment-cache"));
        let opts = logsift_store::S3Options {
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
            access_key_id: s.access_key_id.clone(),
            secret_access_key: s.secret_access_key.clone(),
            allow_http: s.allow_http,
            part_bytes: 0,
        };
        let store = logsift_store::ObjectStorage::s3(&s.url, &opts, &cache)
            .map_err(|e| anyhow::anyhow!("storage: {e}"))?;
        Ok(logsift_store::SegmentStorage::Object(std::sync::Arc::new(
            store,
        )))
    }
}

/// PEM files for every listener that has TLS turned on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    /// Without tokens, serve on non-loopback addresses anyway (warns at start).
    pub allow_unauthenticated_remote: bool,
    /// `/metrics` without a token.
    pub metrics_public: bool,
    /// Ingest rate per token (0: unlimited) unless the token has its own.
    pub token_ingest_bytes_per_sec: u64,
    /// Host names the HTTP API answers to while no token exists, besides IP addresses and
    /// localhost (a browser page could otherwise reach it by DNS rebinding).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
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
    pub max_connections: usize,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub admission_wait_ms: u64,
    pub tls: bool,
    pub client_cert: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    pub tcp: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
    pub index: String,
    pub timezone: String,
    /// Syslog over TLS (RFC 5425), with the `[tls]` files.
    pub tls: Option<SocketAddr>,
    pub client_cert: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonConfig {
    pub tcp: Option<SocketAddr>,
    pub index: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// OTLP over gRPC (HTTP/2), served with the `[http]` TLS setting, tokens and limits.
    pub grpc: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// How long a stored `_id` makes a bulk `create` with it conflict (409); 0 turns it off.
    pub id_window_secs: u64,
    /// At most this many ids are remembered; the oldest are forgotten first.
    pub id_window_max: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub max_line_bytes: usize,
    pub inflight_bytes: usize,
    pub min_free_bytes: u64,
    pub max_connections_per_listener: usize,
    pub idle_timeout_ms: u64,
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
    pub seal_idle_ms: u64,
    pub writer_memory_bytes: usize,
    pub docstore_block_bytes: usize,
    pub sealed_zstd_level: i32,
    pub idle_zstd_level: i32,
    pub idle_recompress_ms: u64,
    pub merge_factor: usize,
    pub merge_max_docs: u64,
    pub max_indexes: usize,
    /// `records` or `blocks`: see `logsift_store::Layout`.
    pub layout: String,
    /// Mine log patterns at ingest (#19).
    pub patterns: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    pub query_timeout_ms: u64,
    pub max_concurrent_queries: usize,
    pub terms_max_values: usize,
    /// Open `/api/v1/tail` streams; more are answered 429.
    pub max_tail_clients: usize,
    /// Exports streaming at once; more are answered 429.
    pub max_concurrent_exports: usize,
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
        // An HTTP request is charged for its body and the entries made of it at once (about
        // twice its lines' bytes, plus overhead per line): a budget under this could never
        // admit a request holding one line of the largest size.
        if self.ingest.inflight_bytes < 4 * self.ingest.max_line_bytes {
            bail!(
                "ingest.inflight_bytes ({}) must be at least 4 × ingest.max_line_bytes ({})",
                self.ingest.inflight_bytes,
                self.ingest.max_line_bytes
            );
        }
        if self.shutdown_timeout_ms == 0 {
            bail!("shutdown_timeout_ms must be positive");
        }
        let m = &self.metastore.url;
        if !(m.is_empty() || m.starts_with("postgres://") || m.starts_with("postgresql://")) {
            bail!(
                "metastore.url must be empty (catalogs in data_dir) or postgres://..., not {m:?}"
            );
        }
        self.check_role()?;
        if self.node.indexer > logsift_store::MAX_INDEXER {
            bail!(
                "node.indexer must be 0 (a lone writer) to {}, not {}",
                logsift_store::MAX_INDEXER,
                self.node.indexer
            );
        }
        if self.node.indexer > 0 && self.metastore.url.is_empty() {
            bail!("node.indexer > 0 (several indexers) needs a shared metastore: set [metastore] url = \"postgres://...\"");
        }
        if self.node.refresh_ms == 0 {
            bail!("node.refresh_ms must be positive");
        }
        for url in &self.node.searchers {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("node.searchers must be http(s)://host:port URLs, not {url:?}");
            }
        }
        if !(self.storage.url.is_empty() || self.storage.url.starts_with("s3://")) {
            bail!(
                "storage.url must be empty (segments in data_dir) or s3://bucket/prefix, not {:?}",
                self.storage.url
            );
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
        self.layout()?;
        if !(1..=22).contains(&self.index.sealed_zstd_level) {
            bail!(
                "index.sealed_zstd_level must be between 1 and 22, not {}",
                self.index.sealed_zstd_level
            );
        }
        if !(0..=22).contains(&self.index.idle_zstd_level) {
            bail!(
                "index.idle_zstd_level must be between 0 (never) and 22, not {}",
                self.index.idle_zstd_level
            );
        }
        if !(4096..=16 << 20).contains(&self.index.docstore_block_bytes) {
            bail!(
                "index.docstore_block_bytes must be between 4096 and 16777216, not {}",
                self.index.docstore_block_bytes
            );
        }
        if self.index.max_indexes == 0 {
            bail!("index.max_indexes must be at least 1");
        }
        if self.query.query_timeout_ms == 0 {
            bail!("query.query_timeout_ms must be positive");
        }
        if self.query.max_concurrent_queries == 0 {
            bail!("query.max_concurrent_queries must be at least 1");
        }
        if self.query.max_tail_clients == 0 {
            bail!("query.max_tail_clients must be at least 1");
        }
        if self.query.max_concurrent_exports == 0 {
            bail!("query.max_concurrent_exports must be at least 1");
        }
        if self.query.terms_max_values == 0 {
            bail!("query.terms_max_values must be at least 1");
        }
        if self.http.max_connections == 0 || self.ingest.max_connections_per_listener == 0 {
            bail!(
                "http.max_connections and ingest.max_connections_per_listener must be at least 1"
            );
        }
        for (key, ms) in [
            (
                "http.header_read_timeout_ms",
                self.http.header_read_timeout_ms,
            ),
            ("http.body_read_timeout_ms", self.http.body_read_timeout_ms),
            ("ingest.idle_timeout_ms", self.ingest.idle_timeout_ms),
        ] {
            if ms == 0 {
                bail!("{key} must be positive");
            }
        }
        self.alerts.validate().map_err(|e| anyhow::anyhow!(e))?;
        self.http_tls()?;
        self.syslog_tls()?;
        self.fsync_policy()?;
        self.timezone_offset_secs()?;
        for name in self.indexes.keys() {
            // The built-in _audit index has settings (its retention) like any other.
            if name != "_audit" {
                logsift_core::IndexName::new(name).with_context(|| format!("[indexes.{name}]"))?;
            }
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

    fn tls_files(&self, key: &str, client_cert: &str) -> anyhow::Result<TlsFiles> {
        let client_auth = match client_cert {
            "none" => ClientAuth::None,
            "optional" => ClientAuth::Optional,
            "required" => ClientAuth::Required,
            other => bail!("{key}.client_cert must be none, optional or required, not {other:?}"),
        };
        let (Some(cert_file), Some(key_file)) = (&self.tls.cert_file, &self.tls.key_file) else {
            bail!("{key} uses TLS: set tls.cert_file and tls.key_file (PEM)");
        };
        if client_auth != ClientAuth::None && self.tls.client_ca_file.is_none() {
            bail!("{key}.client_cert = {client_cert:?} needs tls.client_ca_file");
        }
        Ok(TlsFiles {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            client_ca_file: self.tls.client_ca_file.clone(),
            client_auth,
        })
    }

    /// The HTTPS files, when `http.tls` is on.
    pub fn http_tls(&self) -> anyhow::Result<Option<TlsFiles>> {
        if !self.http.tls {
            if self.http.client_cert != "none" {
                bail!("http.client_cert needs http.tls = true");
            }
            return Ok(None);
        }
        self.tls_files("http", &self.http.client_cert).map(Some)
    }

    /// The syslog TLS files, when `syslog.tls` has an address.
    pub fn syslog_tls(&self) -> anyhow::Result<Option<TlsFiles>> {
        if self.syslog.tls.is_none() {
            return Ok(None);
        }
        self.tls_files("syslog", &self.syslog.client_cert).map(Some)
    }

    /// Every address logsift listens on, named by its key.
    pub fn listen_addresses(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut out = vec![("http.listen", self.http.listen)];
        out.extend(self.syslog.tcp.map(|a| ("syslog.tcp", a)));
        out.extend(self.syslog.udp.map(|a| ("syslog.udp", a)));
        out.extend(self.syslog.tls.map(|a| ("syslog.tls", a)));
        out.extend(self.json.tcp.map(|a| ("json.tcp", a)));
        out.extend(self.otlp.grpc.map(|a| ("otlp.grpc", a)));
        out
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
    fn the_audit_trail_has_a_default_retention_that_can_be_changed() {
        let cfg = Config::load(None).unwrap();
        assert_eq!(cfg.indexes["_audit"].retention_age_secs, Some(400 * 86400));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[indexes._audit]\nretention_age_secs = 86400\n").unwrap();
        let cfg = Config::load(Some(&path)).unwrap();
        assert_eq!(cfg.indexes["_audit"].retention_age_secs, Some(86400));
        // Other built-in names are not configurable.
        std::fs::write(&path, "[indexes._other]\nlogfmt = true\n").unwrap();
        assert!(Config::load(Some(&path)).is_err());
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
        std::fs::write(&path, "[ingest]\ninflight_bytes = 524288\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(err.contains("4 × ingest.max_line_bytes"), "{err}");
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
    fn tls_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[http]\ntls = true\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(err.contains("tls.cert_file"), "{err}");
        std::fs::write(
            &path,
            "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n[syslog]\ntls = \"127.0.0.1:6514\"\nclient_cert = \"required\"\n",
        )
        .unwrap();
        let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(err.contains("tls.client_ca_file"), "{err}");
        std::fs::write(
            &path,
            "[syslog]\ntls = \"127.0.0.1:6514\"\nclient_cert = \"maybe\"\n",
        )
        .unwrap();
        let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(err.contains("syslog.client_cert"), "{err}");
        std::fs::write(&path, "[http]\nheader_read_timeout_ms = 0\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(err.contains("http.header_read_timeout_ms"), "{err}");
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
