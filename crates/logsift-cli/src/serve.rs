use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use logsift_core::{Format, IndexName};
use logsift_identity::TOKENS_FILE;
use logsift_ingest::listeners::{spawn_tcp, spawn_udp, StreamListenerConfig};
use logsift_ingest::tls::TlsFiles;
use logsift_ingest::{IngestMetrics, Lifecycle, Pipeline, PipelineConfig, StartReport};
use logsift_server::audit::AuditSink;
use logsift_server::{
    AppState, Auth, AuthConfig, HttpLimits, Protocol, ServerConfig, ServerMetrics,
};
use logsift_store::{Store, StoreConfig};
use prometheus_client::registry::Registry;

use crate::config::Role;
use crate::Config;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file overlaid on the embedded default configuration.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the WAL and indexes live [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP API address [default: 127.0.0.1:9480].
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Syslog TCP address [default: 127.0.0.1:5514].
    #[arg(long, value_name = "ADDR")]
    syslog_tcp: Option<SocketAddr>,
    /// Syslog UDP address [default: 127.0.0.1:5514].
    #[arg(long, value_name = "ADDR")]
    syslog_udp: Option<SocketAddr>,
    /// JSON lines TCP address [default: 127.0.0.1:5170].
    #[arg(long, value_name = "ADDR")]
    json_tcp: Option<SocketAddr>,
    /// Syslog over TLS address (RFC 5425) [default: off]; needs tls.cert_file and key_file.
    #[arg(long, value_name = "ADDR")]
    syslog_tls: Option<SocketAddr>,
    /// OTLP/gRPC address [default: 127.0.0.1:4317].
    #[arg(long, value_name = "ADDR")]
    otlp_grpc: Option<SocketAddr>,
    /// The server's log on stderr: text, or JSON lines for log shippers [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<crate::config::LogFormat>,
    /// What this process does: all, indexer, or searcher (queries over what the metastore
    /// lists) [default: node.role, "all"].
    #[arg(long, value_name = "ROLE")]
    role: Option<Role>,
}

/// Logs to stderr in `format`. Text gets ANSI colours only when `anstream` says stderr wants
/// them (a terminal, no `NO_COLOR`, `TERM` not `dumb`; the same rules as the CLI's output):
/// escape codes in a file or a pipe are noise to whoever reads or ships it.
fn init_logging(format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tantivy=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        crate::config::LogFormat::Json => builder.json().with_current_span(false).init(),
        crate::config::LogFormat::Text => builder
            .with_ansi(
                anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never,
            )
            .init(),
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(args.config.as_deref())?;
    init_logging(args.log_format.unwrap_or(cfg.log_format));
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    if let Some(a) = args.http {
        cfg.http.listen = a;
    }
    if let Some(a) = args.syslog_tcp {
        cfg.syslog.tcp = Some(a);
    }
    if let Some(a) = args.syslog_udp {
        cfg.syslog.udp = Some(a);
    }
    if let Some(a) = args.json_tcp {
        cfg.json.tcp = Some(a);
    }
    if let Some(a) = args.otlp_grpc {
        cfg.otlp.grpc = Some(a);
    }
    if let Some(a) = args.syslog_tls {
        cfg.syslog.tls = Some(a);
        cfg.syslog_tls()?;
    }
    if let Some(role) = args.role {
        cfg.node.role = role;
        cfg.check_role()?;
    }
    let searcher = cfg.node.role == Role::Searcher;

    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let metastore = cfg.metastore(!searcher)?;
    if let logsift_store::Metastore::Postgres(pg) = &metastore {
        // Before tokens are loaded: a new node must know them to start (and to bind other
        // than loopback).
        let path = cfg.data_dir.join(TOKENS_FILE);
        let mut last = None;
        crate::tokens::sync_from_metastore(pg, &path, !searcher, &mut last)
            .context("API tokens from the metastore")?;
        spawn_token_sync(pg.clone(), path, last)?;
    }
    let metrics = Arc::new(IngestMetrics::default());
    let server_metrics = Arc::new(ServerMetrics::new(&metrics));
    let auth = Arc::new(
        Auth::open(
            AuthConfig {
                tokens_file: cfg.data_dir.join(TOKENS_FILE),
                metrics_public: cfg.security.metrics_public,
                token_ingest_bytes_per_sec: cfg.security.token_ingest_bytes_per_sec,
                allowed_hosts: cfg.security.allowed_hosts.clone(),
            },
            server_metrics.clone(),
        )
        .context("loading API tokens")?,
    );
    check_exposure(&cfg, &auth)?;
    // Read before anything is bound, so a bad certificate fails the start, not a client.
    let tls = (
        tls_config(cfg.http_tls()?, &[b"http/1.1"])?,
        tls_config(cfg.syslog_tls()?, &[])?,
        // gRPC is HTTP/2 only; clients insist on ALPN h2 over TLS.
        tls_config(cfg.http_tls()?, &[b"h2"])?,
    );
    let store = Arc::new(Store::open(StoreConfig {
        dir: cfg.data_dir.join("indexes"),
        writer_memory_bytes: cfg.index.writer_memory_bytes,
        default_offset_secs: cfg.timezone_offset_secs()?,
        docstore_block_bytes: cfg.index.docstore_block_bytes,
        sealed_zstd_level: cfg.index.sealed_zstd_level,
        idle_zstd_level: cfg.index.idle_zstd_level,
        idle_recompress_ms: cfg.index.idle_recompress_ms,
        merge_factor: cfg.index.merge_factor,
        merge_max_docs: cfg.index.merge_max_docs,
        seal_docs: cfg.index.seal_docs,
        seal_after_ms: cfg.index.seal_interval_ms,
        seal_idle_ms: cfg.index.seal_idle_ms,
        index_options: cfg.index_options()?,
        segments: cfg.segment_storage()?,
        metastore,
        layout: cfg.layout()?,
        // A searcher mines nothing: pattern ids come with the segments.
        patterns_state: (cfg.index.patterns && !searcher)
            .then(|| cfg.data_dir.join(logsift_store::patterns::STATE_FILE)),
        read_only: searcher,
        lsn_base: if searcher {
            0
        } else {
            logsift_store::lsn_base(cfg.node.indexer)
        },
    })?);
    store.spawn_integrity_check();
    crate::memory::spawn_trimmer(
        metrics.indexed_records.clone(),
        server_metrics.search_requests.clone(),
        store.clone(),
    );
    // Searchers, and indexers beside others, follow what the others publish.
    if searcher || cfg.node.indexer > 0 {
        spawn_refresher(store.clone(), Duration::from_millis(cfg.node.refresh_ms))?;
    }
    let (pipeline, start_report) = if searcher {
        (None, StartReport::default())
    } else {
        let (pipeline, report) = Pipeline::start(
            PipelineConfig {
                wal_dir: cfg.data_dir.join("wal"),
                wal_max_file_bytes: cfg.wal.max_file_bytes,
                fsync: cfg.fsync_policy()?,
                group_commit_interval_ms: cfg.wal.group_commit_interval_ms,
                commit_interval_ms: cfg.index.commit_interval_ms,
                inflight_bytes: cfg.ingest.inflight_bytes,
                min_free_bytes: cfg.ingest.min_free_bytes,
                max_indexes: cfg.index.max_indexes,
            },
            store.clone(),
            metrics.clone(),
        )?;
        (Some(pipeline), report)
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("logsift-io")
        .build()
        .context("starting the async runtime")?;
    let life = Lifecycle::default();
    let signalled = Arc::new(OnceLock::new());
    let served = runtime.block_on(serve(
        &cfg,
        Shared {
            store,
            metrics,
            server_metrics,
            auth,
            tls,
        },
        pipeline.as_ref(),
        Arc::new(start_report),
        &life,
        &signalled,
    ));
    if let Err(e) = served {
        life.shutdown.cancel();
        drop(runtime);
        if let Some(pipeline) = pipeline {
            pipeline.shutdown();
        }
        return Err(e);
    }

    // Stop order: HTTP is done (serve returned), listeners drain what their peers already
    // sent, then the pipeline fsyncs and commits everything queued. All within the deadline.
    let deadline =
        *signalled.get_or_init(Instant::now) + Duration::from_millis(cfg.shutdown_timeout_ms);
    life.tasks.close();
    let drained = runtime.block_on(async {
        tokio::time::timeout_at(deadline.into(), life.tasks.wait())
            .await
            .is_ok()
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Some(pipeline) = pipeline {
            pipeline.shutdown();
        }
        let _ = done_tx.send(());
    });
    let flushed = done_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_ok();
    if drained && flushed {
        tracing::info!("stopped cleanly");
        Ok(ExitCode::SUCCESS)
    } else {
        tracing::error!(
            timeout_ms = cfg.shutdown_timeout_ms,
            listeners_drained = drained,
            pipeline_flushed = flushed,
            "shutdown deadline passed; exiting with work unfinished (acknowledged records are in the WAL)"
        );
        Ok(ExitCode::FAILURE)
    }
}

/// A searcher's view follows the metastore: every `every`, segments published since are
/// opened and those deleted or replaced are dropped. A failed refresh (the metastore or the
/// object store unreachable) keeps serving what was served and is tried again.
fn spawn_refresher(store: Arc<Store>, every: Duration) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("logsift-refresh".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                std::thread::sleep(every);
                match store.refresh() {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("refreshing from the metastore works again");
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot refresh the served segments from the metastore; serving what was served, trying again");
                    }
                    Err(_) => {}
                }
            }
        })
        .context("starting the metastore refresh thread")?;
    Ok(())
}

/// With a PostgreSQL metastore the tokens live there for every process: copied into this
/// node's tokens file whenever they change (within a second), which the server reloads.
fn spawn_token_sync(
    pg: Arc<logsift_store::PgMetastore>,
    path: std::path::PathBuf,
    mut last: Option<Vec<u8>>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("logsift-tokens".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                std::thread::sleep(Duration::from_secs(1));
                match crate::tokens::sync_from_metastore(&pg, &path, false, &mut last) {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("API tokens are read from the metastore again");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot read the API tokens from the metastore; the last ones stay in force");
                    }
                    Err(_) => {}
                }
            }
        })
        .context("starting the token sync thread")?;
    Ok(())
}

/// Without tokens anyone who reaches the HTTP port reads and writes everything, and anyone
/// who reaches a listener writes: only loopback, unless the operator says otherwise.
fn check_exposure(cfg: &Config, auth: &Auth) -> anyhow::Result<()> {
    if auth.enabled() {
        return Ok(());
    }
    let exposed: Vec<String> = cfg
        .listen_addresses()
        .into_iter()
        .filter(|(_, a)| !a.ip().is_loopback())
        .map(|(k, a)| format!("{k} = {a}"))
        .collect();
    if exposed.is_empty() {
        return Ok(());
    }
    if !cfg.security.allow_unauthenticated_remote {
        anyhow::bail!(
            "refusing to listen on non-loopback addresses without authentication ({}): create \
             a token with `logsift tokens create --role admin --data-dir {}`, or set \
             [security] allow_unauthenticated_remote = true to serve everyone who can connect",
            exposed.join(", "),
            cfg.data_dir.display()
        );
    }
    tracing::warn!(
        addresses = %exposed.join(", "),
        "AUTHENTICATION IS OFF on non-loopback addresses (security.allow_unauthenticated_remote = true): \
         anyone who can connect can read, write and delete nothing less than every log"
    );
    if cfg.security.allowed_hosts.is_empty() {
        tracing::warn!(
            "without tokens the HTTP API answers only requests addressed to an IP address or \
             localhost: list the names clients use in [security] allowed_hosts"
        );
    }
    Ok(())
}

fn tls_config(
    files: Option<TlsFiles>,
    alpn: &[&[u8]],
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    files
        .map(|f| logsift_ingest::tls::server_config(&f, alpn))
        .transpose()
        .map_err(Into::into)
}

/// What `serve` hands to the listeners and the HTTP API.
struct Shared {
    store: Arc<Store>,
    metrics: Arc<IngestMetrics>,
    server_metrics: Arc<ServerMetrics>,
    auth: Arc<Auth>,
    /// HTTP, syslog, OTLP/gRPC.
    tls: (TlsConfig, TlsConfig, TlsConfig),
}

type TlsConfig = Option<Arc<rustls::ServerConfig>>;

async fn serve(
    cfg: &Config,
    shared: Shared,
    pipeline: Option<&Pipeline>,
    start: Arc<StartReport>,
    life: &Lifecycle,
    signalled: &Arc<OnceLock<Instant>>,
) -> anyhow::Result<()> {
    let Shared {
        store,
        metrics,
        server_metrics,
        auth,
        tls: (http_tls, syslog_tls, grpc_tls),
    } = shared;
    let max_line = cfg.ingest.max_line_bytes;
    let max_connections = cfg.ingest.max_connections_per_listener;
    let idle_timeout = Duration::from_millis(cfg.ingest.idle_timeout_ms);
    let mut ready = Vec::new();

    let http = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("binding HTTP on {}", cfg.http.listen))?;
    let scheme = if http_tls.is_some() { "https" } else { "http" };
    ready.push(format!("{scheme}={}", http.local_addr()?));
    let http_url = format!("{scheme}://{}", http.local_addr()?);
    // A searcher takes no records: none of the ingest listeners is bound.
    let grpc = match cfg.otlp.grpc.filter(|_| pipeline.is_some()) {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding OTLP/gRPC on {addr}"))?;
            ready.push(format!("otlp-grpc={}", listener.local_addr()?));
            Some(listener)
        }
        None => None,
    };
    // Stream listeners: (name in the ready line and metrics, what the error says, format,
    // index, address, TLS).
    let streams = [
        (
            "syslog-tcp",
            "syslog TCP",
            Format::Syslog,
            &cfg.syslog.index,
            cfg.syslog.tcp,
            None,
        ),
        (
            "syslog-tls",
            "syslog TLS",
            Format::Syslog,
            &cfg.syslog.index,
            cfg.syslog.tls.filter(|_| syslog_tls.is_some()),
            syslog_tls,
        ),
        (
            "json-tcp",
            "JSON TCP",
            Format::Json,
            &cfg.json.index,
            cfg.json.tcp,
            None,
        ),
    ];
    for (name, what, format, index, addr, tls) in streams {
        let (Some(addr), Some(pipeline)) = (addr, pipeline) else {
            continue;
        };
        let lc = StreamListenerConfig {
            name,
            format,
            index: IndexName::new(index)?,
            max_line_bytes: max_line,
            max_connections,
            idle_timeout,
            tls,
        };
        let local = spawn_tcp(addr, lc, pipeline.handle(), life.clone())
            .await
            .with_context(|| format!("binding {what} on {addr}"))?;
        ready.push(format!("{name}={local}"));
    }
    if let (Some(addr), Some(pipeline)) = (cfg.syslog.udp, pipeline) {
        let local = spawn_udp(
            addr,
            IndexName::new(&cfg.syslog.index)?,
            max_line,
            pipeline.handle(),
            life.clone(),
        )
        .await
        .with_context(|| format!("binding syslog UDP on {addr}"))?;
        ready.push(format!("syslog-udp={local}"));
    }

    let exports =
        logsift_server::export::ExportState::open(&cfg.data_dir, cfg.audit.signing_key.as_deref())
            .map_err(|e| anyhow::anyhow!("export signing key: {e}"))?;
    let audit_sink = match (pipeline, &store.config().metastore) {
        (Some(pipeline), metastore) => {
            // Searchers' audit records, into this process's `_audit` index: by one indexer
            // only (the lone writer, or number 1), or two would append the same records.
            let drains = cfg.node.indexer <= 1;
            if let (logsift_store::Metastore::Postgres(pg), true) = (metastore, drains) {
                tokio::spawn(logsift_server::audit::drain_outbox(
                    pg.clone(),
                    pipeline.handle(),
                    server_metrics.clone(),
                    life.shutdown.clone(),
                ));
            }
            AuditSink::Wal(pipeline.handle())
        }
        (None, logsift_store::Metastore::Postgres(pg)) => AuditSink::Outbox(pg.clone()),
        (None, logsift_store::Metastore::Files) => {
            anyhow::bail!("a searcher needs a PostgreSQL metastore for its audit records")
        }
    };
    let audit = Arc::new(logsift_server::audit::Audit::new(
        audit_sink,
        server_metrics.clone(),
    ));
    let es_ids = logsift_compat::es_ids::IdWindow::open(
        &cfg.data_dir.join("es-ids"),
        cfg.elasticsearch.id_window_secs,
        cfg.elasticsearch.id_window_max,
        logsift_core::time::now_ns(),
    )
    .context("loading the Elasticsearch _id window (DATA_DIR/es-ids)")?;
    let alert_settings = cfg.alerts.validate().map_err(|e| anyhow::anyhow!(e))?;
    let alerts = Arc::new(
        logsift_server::alerts::Alerts::open(
            &cfg.data_dir,
            alert_settings,
            store.clone(),
            audit.clone(),
            Duration::from_millis(cfg.query.query_timeout_ms),
            cfg.query.terms_max_values,
        )
        .map_err(|e| anyhow::anyhow!("alerts: {e}"))?,
    );
    let saved = logsift_server::saved::SavedSearches::open(&cfg.data_dir)
        .map_err(|e| anyhow::anyhow!("saved searches: {e}"))?;
    // Rules are evaluated where records arrive: a searcher sees them only once sealed, and
    // several searchers would each notify.
    if pipeline.is_some() {
        alerts.start(&http_url, life.shutdown.clone());
    }
    // Each set is registered by the crate that counts it.
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    server_metrics.register(&mut registry);
    alerts.register_metrics(&mut registry);
    let state = AppState {
        alerts,
        saved: Arc::new(saved),
        exports: Arc::new(exports),
        audit: audit.clone(),
        store,
        pipeline: pipeline.map(Pipeline::handle),
        metrics: server_metrics.clone(),
        registry: Arc::new(registry),
        auth: auth.clone(),
        es_ids: Arc::new(es_ids),
        cfg: Arc::new(ServerConfig {
            max_body_bytes: cfg.http.max_body_bytes,
            max_line_bytes: max_line,
            query_timeout_ms: cfg.query.query_timeout_ms,
            max_concurrent_queries: cfg.query.max_concurrent_queries,
            terms_max_values: cfg.query.terms_max_values,
            max_tail_clients: cfg.query.max_tail_clients,
            max_concurrent_exports: cfg.query.max_concurrent_exports,
            shutdown: life.shutdown.clone(),
            body_read_timeout_ms: cfg.http.body_read_timeout_ms,
            admission_wait_ms: cfg.http.admission_wait_ms,
            searchers: cfg.node.searchers.clone(),
        }),
        start,
        searcher_client: logsift_server::fanout::client(),
    };
    let app = logsift_server::router(state);
    // Handlers go in before "ready" is printed: a SIGTERM sent right after it must drain, not
    // meet the default disposition and kill the process.
    let mut signals = Signals::install().context("installing signal handlers")?;
    // One machine-readable line on stdout, so scripts and tests can find ports chosen with :0.
    println!("logsift ready {}", ready.join(" "));
    tracing::info!(data_dir = %cfg.data_dir.display(), authentication = auth.enabled(), "{}", ready.join(" "));

    let shutdown = life.shutdown.clone();
    let signalled = signalled.clone();
    tokio::spawn(async move {
        signals.recv().await;
        signalled.get_or_init(Instant::now);
        tracing::info!("shutting down: draining connections, fsyncing and committing (signal again to exit at once)");
        shutdown.cancel();
        signals.recv().await;
        tracing::warn!(
            "second signal: exiting without draining; acknowledged records are in the WAL"
        );
        std::process::exit(130);
    });
    let limits = HttpLimits {
        max_connections: cfg.http.max_connections,
        // One budget for the HTTP and gRPC listeners (cloned below with the limits).
        slots: Arc::new(tokio::sync::Semaphore::new(cfg.http.max_connections.max(1))),
        header_read_timeout: Duration::from_millis(cfg.http.header_read_timeout_ms),
        tls: http_tls,
        protocol: Protocol::Http1,
    };
    let grpc = grpc.map(|listener| {
        let limits = HttpLimits {
            tls: grpc_tls,
            protocol: Protocol::Http2,
            ..limits.clone()
        };
        tokio::spawn(logsift_server::serve_http(
            listener,
            app.clone(),
            limits,
            server_metrics.clone(),
            life.shutdown.clone(),
        ))
    });
    logsift_server::serve_http(http, app, limits, server_metrics, life.shutdown.clone()).await;
    if let Some(grpc) = grpc {
        // Its connections drain like the HTTP ones before the pipeline is flushed.
        let _ = grpc.await;
    }
    // Refusals folded into an open window are written now, before the pipeline is flushed;
    // bounded, so that a stuck pipeline cannot hold the shutdown here.
    if tokio::time::timeout(Duration::from_secs(2), audit.flush())
        .await
        .is_err()
    {
        tracing::warn!("could not write the folded audit refusals within 2 s");
    }
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment this is made.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
