use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use logsift_core::{Format, IndexName};
use logsift_ingest::listeners::{spawn_tcp, spawn_udp, StreamListenerConfig};
use logsift_ingest::{Metrics, Pipeline, PipelineConfig};
use logsift_server::{AppState, ServerConfig};
use logsift_store::{Store, StoreConfig};

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
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tantivy=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cfg = Config::load(args.config.as_deref())?;
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

    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let store = Arc::new(Store::open(StoreConfig {
        dir: cfg.data_dir.join("indexes"),
        writer_memory_bytes: cfg.index.writer_memory_bytes,
        default_offset_secs: cfg.timezone_offset_secs()?,
        docstore_block_bytes: cfg.index.docstore_block_bytes,
    })?);
    let metrics = Arc::new(Metrics::default());
    let pipeline = Pipeline::start(
        PipelineConfig {
            wal_dir: cfg.data_dir.join("wal"),
            wal_max_file_bytes: cfg.wal.max_file_bytes,
            fsync: cfg.fsync_policy()?,
            group_commit_interval_ms: cfg.wal.group_commit_interval_ms,
            commit_interval_ms: cfg.index.commit_interval_ms,
            wal_queue_requests: 1024,
            index_queue_batches: 64,
        },
        store.clone(),
        metrics.clone(),
    )?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("logsift-io")
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(serve(&cfg, store, metrics, &pipeline));
    // Drain only after the listeners are gone, so nothing new arrives while we flush.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    pipeline.shutdown();
    served?;
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    cfg: &Config,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    pipeline: &Pipeline,
) -> anyhow::Result<()> {
    let max_line = cfg.ingest.max_line_bytes;
    let mut tasks = Vec::new();
    let mut ready = Vec::new();

    let http = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("binding HTTP on {}", cfg.http.listen))?;
    ready.push(format!("http={}", http.local_addr()?));
    if let Some(addr) = cfg.syslog.tcp {
        let lc = StreamListenerConfig {
            name: "syslog-tcp",
            format: Format::Syslog,
            index: IndexName::new(&cfg.syslog.index)?,
            max_line_bytes: max_line,
        };
        let (local, task) = spawn_tcp(addr, lc, pipeline.handle())
            .await
            .with_context(|| format!("binding syslog TCP on {addr}"))?;
        ready.push(format!("syslog-tcp={local}"));
        tasks.push(task);
    }
    if let Some(addr) = cfg.syslog.udp {
        let (local, task) = spawn_udp(
            addr,
            IndexName::new(&cfg.syslog.index)?,
            max_line,
            pipeline.handle(),
        )
        .await
        .with_context(|| format!("binding syslog UDP on {addr}"))?;
        ready.push(format!("syslog-udp={local}"));
        tasks.push(task);
    }
    if let Some(addr) = cfg.json.tcp {
        let lc = StreamListenerConfig {
            name: "json-tcp",
            format: Format::Json,
            index: IndexName::new(&cfg.json.index)?,
            max_line_bytes: max_line,
        };
        let (local, task) = spawn_tcp(addr, lc, pipeline.handle())
            .await
            .with_context(|| format!("binding JSON TCP on {addr}"))?;
        ready.push(format!("json-tcp={local}"));
        tasks.push(task);
    }

    let state = AppState {
        store,
        pipeline: pipeline.handle(),
        metrics,
        cfg: Arc::new(ServerConfig {
            max_body_bytes: cfg.http.max_body_bytes,
            max_line_bytes: max_line,
        }),
    };
    let app = logsift_server::router(state);
    // One machine-readable line on stdout, so scripts and tests can find ports chosen with :0.
    println!("logsift ready {}", ready.join(" "));
    tracing::info!(data_dir = %cfg.data_dir.display(), "{}", ready.join(" "));

    axum::serve(
        http,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("HTTP server")?;
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM; a second one exits at once (the WAL still holds
/// everything that was acknowledged).
async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutting down: draining queues and committing (signal again to exit at once)");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
