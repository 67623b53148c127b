//! Builds the running gate from a config — registry, cache, upstreams, listeners,
//! admin — and owns its life: SIGHUP reloads, SIGTERM drains (up to
//! `limits.drain_timeout`) and exits 0, SIGINT exits at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::admin::Admin;
use crate::config::{Backend, Config, ConfigError, RegistryConfig};
use crate::decision_cache::{CacheSettings, DecisionCache};
use crate::filing::Status;
use crate::listener::{Listener, PlainHandshake};
use crate::metrics::{Metrics, MetricsError};
use crate::proxy::{Gate, Runtime};
use crate::registry::sqlite::SqliteRegistry;
use crate::registry::{jsonl, ListFilter, Registry, RegistryError};
use crate::working_days;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("{path}: {message}")]
    Seed { path: PathBuf, message: String },
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("registry.backend = \"postgres\" is not available in this build yet; use \"sqlite\"")]
    PostgresUnsupported,
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Open the registry a config names.
pub async fn open_registry(config: &RegistryConfig) -> Result<Arc<dyn Registry>, AppError> {
    match config.backend {
        Backend::Sqlite => Ok(Arc::new(SqliteRegistry::open(&config.path)?)),
        Backend::Postgres => Err(AppError::PostgresUnsupported),
    }
}

/// Import `path` (JSON Lines) into `registry`, all or nothing.
pub async fn import_file(registry: &dyn Registry, path: &Path) -> Result<usize, AppError> {
    let text = std::fs::read_to_string(path).map_err(|e| AppError::Seed {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let records = jsonl::parse(&text).map_err(|e| AppError::Seed {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    registry.import(records).await.map_err(|e| AppError::Seed {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Set `icpgate_filings{status}`, `icpgate_registry_revision` and
/// `icpgate_filings_overdue_initial_review` from the registry.
pub async fn refresh_filing_gauges(registry: &dyn Registry, metrics: &Metrics) {
    match registry.counts_by_status().await {
        Ok(counts) => {
            for (status, count) in counts {
                metrics
                    .filings
                    .with_label_values(&[status.as_str()])
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
        Err(error) => tracing::warn!(%error, "cannot count filings"),
    }
    if let Ok(revision) = registry.revision().await {
        metrics.registry_revision.set(revision);
    }
    let waiting = ListFilter {
        status: Some(Status::InitialReview),
        ..ListFilter::default()
    };
    match registry.list(&waiting).await {
        Ok(filings) => {
            let now = working_days::unix_seconds(std::time::SystemTime::now());
            let overdue = working_days::overdue_initial_reviews(&filings, now);
            metrics
                .filings_overdue_initial_review
                .set(i64::try_from(overdue).unwrap_or(i64::MAX));
        }
        Err(error) => tracing::warn!(%error, "cannot list filings in initial review"),
    }
}

fn cache_settings(config: &Config) -> CacheSettings {
    CacheSettings {
        ttl: config.cache.ttl,
        negative_ttl: config.cache.negative_ttl,
        stale_if_error: config.cache.stale_if_error,
        max_entries: config.cache.max_entries,
    }
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { key, addr, source })
}

/// A started gate: its bound addresses and the handles to reload or stop it.
pub struct Running {
    pub http: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub gate: Arc<Gate>,
    pub registry: Arc<dyn Registry>,
    config_path: PathBuf,
    stop: watch::Sender<bool>,
    graceful: Arc<GracefulShutdown>,
    /// Accept loops; awaited at shutdown so the drain handle is ours alone.
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

/// Open the registry (seeding it when empty), bind every listener and start serving.
pub async fn start(config: Config) -> Result<Running, AppError> {
    let config = Arc::new(config);
    let registry = open_registry(&config.registry).await?;
    if let Some(seed) = &config.registry.seed {
        if registry.is_empty().await? {
            let count = import_file(registry.as_ref(), seed).await?;
            tracing::info!(count, seed = %seed.display(), "seeded an empty registry");
        }
    }
    let metrics = Arc::new(Metrics::new()?);
    refresh_filing_gauges(registry.as_ref(), &metrics).await;
    let cache = Arc::new(DecisionCache::new(
        Arc::clone(&registry),
        Arc::clone(&metrics),
        cache_settings(&config),
    ));
    let gate = Arc::new(Gate::new(
        cache,
        Runtime::new(Arc::clone(&config)),
        Arc::clone(&metrics),
    ));
    let token = std::env::var(&config.admin.token_env)
        .ok()
        .filter(|t| !t.trim().is_empty());
    if token.is_none() {
        tracing::warn!(env = %config.admin.token_env, "no admin token configured: admin writes will be refused");
    }
    let admin = Arc::new(Admin {
        registry: Arc::clone(&registry),
        gate: Arc::clone(&gate),
        token,
        token_env: config.admin.token_env.clone(),
    });

    let graceful = Arc::new(GracefulShutdown::new());
    let (stop, stop_rx) = watch::channel(false);
    let active = Arc::new(AtomicUsize::new(0));
    let mut running = Running {
        http: None,
        admin: None,
        gate: Arc::clone(&gate),
        registry: Arc::clone(&registry),
        config_path: config.source.clone(),
        stop,
        graceful,
        listeners: Vec::new(),
    };
    if let Some(addr) = config.listen.http {
        let tcp = bind("listen.http", addr).await?;
        running.http = tcp.local_addr().ok();
        let listener = Listener {
            tcp,
            gate: Arc::clone(&gate),
            handshake: Arc::new(PlainHandshake),
            graceful: Arc::clone(&running.graceful),
            shutdown: stop_rx.clone(),
            active: Arc::clone(&active),
        };
        tracing::info!(addr = ?running.http, "listening (http)");
        running.listeners.push(tokio::spawn(listener.run()));
    }
    if let Some(addr) = config.listen.admin {
        let tcp = bind("listen.admin", addr).await?;
        running.admin = tcp.local_addr().ok();
        tracing::info!(addr = ?running.admin, "listening (admin)");
        tokio::spawn(serve_admin(tcp, Arc::clone(&admin), stop_rx.clone()));
    }
    tokio::spawn(refresh_gauges_forever(
        Arc::clone(&registry),
        Arc::clone(&metrics),
        stop_rx,
    ));
    Ok(running)
}

impl Running {
    /// Re-read the config file and swap it in (see `reload`).
    pub fn reload(&self) {
        reload(&self.config_path, &self.gate);
    }

    /// Stop accepting; with `drain`, wait up to `limits.drain_timeout` for in-flight
    /// requests to finish.
    pub async fn shutdown(self, drain: bool) {
        let _ = self.stop.send(true);
        for listener in self.listeners {
            let _ = listener.await;
        }
        let Ok(graceful) = Arc::try_unwrap(self.graceful) else {
            tracing::warn!("connections still being accepted; not draining");
            return;
        };
        if drain {
            let timeout = self.gate.current().config.limits.drain_timeout;
            tracing::info!(?timeout, open = graceful.count(), "draining");
            if tokio::time::timeout(timeout, graceful.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("drain timeout reached; closing the remaining connections");
            }
        }
    }
}

/// Run `icpgate serve` until SIGTERM (drain, exit 0) or SIGINT (exit at once).
pub async fn serve(config_path: &Path) -> Result<(), AppError> {
    let running = start(Config::load(config_path)?).await?;
    let exit = wait_for_signals(&running).await?;
    running.shutdown(exit == Exit::Drain).await;
    tracing::info!("stopped");
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Exit {
    Drain,
    Fast,
}

async fn wait_for_signals(running: &Running) -> Result<Exit, AppError> {
    let mut hangup = signal(SignalKind::hangup()).map_err(AppError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(AppError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(AppError::Signals)?;
    loop {
        tokio::select! {
            _ = hangup.recv() => running.reload(),
            _ = terminate.recv() => return Ok(Exit::Drain),
            _ = interrupt.recv() => return Ok(Exit::Fast),
        }
    }
}

/// Swap in a changed config; a config that fails validation is refused and the
/// running one keeps serving.
fn reload(config_path: &Path, gate: &Gate) {
    let new = match Config::load(config_path) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "reload refused: the running configuration stays in force");
            return;
        }
    };
    let current = gate.current();
    let needs_restart = current.config.restart_required_changes(&new);
    if !needs_restart.is_empty() {
        tracing::warn!(keys = ?needs_restart, "these changes take effect only after a restart");
    }
    gate.runtime.store(Arc::new(Runtime::new(Arc::new(new))));
    tracing::info!(config = %config_path.display(), "configuration reloaded");
}

async fn refresh_gauges_forever(
    registry: Arc<dyn Registry>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = every.tick() => refresh_filing_gauges(registry.as_ref(), &metrics).await,
        }
    }
}

async fn serve_admin(tcp: TcpListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let service = service_fn(move |request| Arc::clone(&admin).serve(request));
            let builder = Builder::new(TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}
