//! Builds the running gate from a config — registry, cache, upstreams, TLS,
//! listeners, admin — and owns its life: SIGHUP reloads (config and certificates),
//! SIGTERM drains (up to `limits.drain_timeout`) and exits 0, SIGINT exits at once.

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
use crate::listener::{Listener, PlainHandshake};
use crate::metrics::{Metrics, MetricsError};
use crate::proxy::{Gate, Runtime};
use crate::registry::sqlite::SqliteRegistry;
use crate::registry::{jsonl, Registry, RegistryError};
use crate::tls::{CertError, CertStore, TlsHandshake};

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
    #[error("tls.certs_dir: {0}")]
    Certificates(#[from] CertError),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("upstreams.{pool}: {source}")]
    UpstreamTls {
        pool: &'static str,
        source: crate::tls::client::ClientTlsError,
    },
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

/// Set `icpgate_filings{status}` and `icpgate_registry_revision` from the registry.
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
}

fn cache_settings(config: &Config) -> CacheSettings {
    CacheSettings {
        ttl: config.cache.ttl,
        negative_ttl: config.cache.negative_ttl,
        stale_if_error: config.cache.stale_if_error,
        max_entries: config.cache.max_entries,
    }
}

/// How often the certificate directory is checked for changes.
const CERTS_POLL: Duration = Duration::from_secs(2);

/// Refuse to start when a TLS upstream pool's trust roots cannot be loaded.
fn check_upstream_tls(config: &Config) -> Result<(), AppError> {
    use crate::config::PoolName;
    for name in [PoolName::Storefront, PoolName::CorporateSite] {
        let pool = config.upstreams.pool(name);
        if pool.tls {
            crate::tls::client::client_config(pool.ca_file.as_deref()).map_err(|source| {
                AppError::UpstreamTls {
                    pool: name.as_str(),
                    source,
                }
            })?;
        }
    }
    Ok(())
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { key, addr, source })
}

/// A started gate: its bound addresses and the handles to reload or stop it.
pub struct Running {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub gate: Arc<Gate>,
    pub registry: Arc<dyn Registry>,
    /// The https listener's certificates, reloaded on SIGHUP and on file changes.
    pub certs: Option<Arc<CertStore>>,
    config_path: PathBuf,
    stop: watch::Sender<bool>,
    graceful: Arc<GracefulShutdown>,
    /// Accept loops; awaited at shutdown so the drain handle is ours alone.
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

/// Open the registry (seeding it when empty), bind every listener and start serving.
pub async fn start(config: Config) -> Result<Running, AppError> {
    crate::tls::install_crypto_provider();
    check_upstream_tls(&config)?;
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
        https: None,
        admin: None,
        gate: Arc::clone(&gate),
        registry: Arc::clone(&registry),
        certs: None,
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
    if let (Some(addr), Some(dir)) = (config.listen.https, &config.tls.certs_dir) {
        start_https(&mut running, addr, dir, &gate, &stop_rx, &active).await?;
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

/// Load the certificates, bind `listen.https` and watch `certs_dir` for changes.
async fn start_https(
    running: &mut Running,
    addr: SocketAddr,
    dir: &Path,
    gate: &Arc<Gate>,
    stop_rx: &watch::Receiver<bool>,
    active: &Arc<AtomicUsize>,
) -> Result<(), AppError> {
    let certs = Arc::new(CertStore::open(dir)?);
    let tcp = bind("listen.https", addr).await?;
    running.https = tcp.local_addr().ok();
    let listener = Listener {
        tcp,
        gate: Arc::clone(gate),
        handshake: Arc::new(TlsHandshake::new(Arc::clone(gate), Arc::clone(&certs))?),
        graceful: Arc::clone(&running.graceful),
        shutdown: stop_rx.clone(),
        active: Arc::clone(active),
    };
    tracing::info!(addr = ?running.https, "listening (https)");
    running.listeners.push(tokio::spawn(listener.run()));
    tokio::spawn(Arc::clone(&certs).watch(CERTS_POLL, stop_rx.clone()));
    running.certs = Some(certs);
    Ok(())
}

impl Running {
    /// Re-read the config file and the certificates and swap them in (see `reload`).
    pub fn reload(&self) {
        reload(&self.config_path, &self.gate);
        if let Some(certs) = &self.certs {
            // A broken file is logged by `reload`; the previous certificates stay.
            let _ = certs.reload();
        }
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
    if let Err(error) = check_upstream_tls(&new) {
        tracing::error!(%error, "reload refused: the running configuration stays in force");
        return;
    }
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
