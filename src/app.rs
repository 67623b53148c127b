//! Builds the running gate from a config — registry, cache, upstreams, TLS,
//! listeners, admin — and owns its life: SIGHUP reloads (config and certificates),
//! SIGTERM drains (up to `limits.drain_timeout`) and exits 0, SIGINT exits at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use crate::admin::Admin;
use crate::admin_tokens::{Caller, NamedTokens, TokensFileError};
use crate::config::{AdminConfig, Backend, Config, ConfigError, RegistryConfig};
use crate::decision_cache::{CacheSettings, DecisionCache};
use crate::filed_domains::FiledDomains;
use crate::filing::Status;
use crate::listener::{Connections, Listener, PlainHandshake};
use crate::metrics::{Metrics, MetricsError};
use crate::notify::{Backoff, Notifier};
use crate::proxy::{Gate, Runtime};
use crate::registry::postgres::PostgresRegistry;
use crate::registry::sqlite::SqliteRegistry;
use crate::registry::{jsonl, ListFilter, Registry, RegistryError};
use crate::tls::{CertError, CertStore, TlsHandshake};
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
    #[error("registry.backend = \"postgres\" needs registry.url")]
    PostgresUrlMissing,
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("admin.token_file {path}: {message}")]
    TokenFile { path: PathBuf, message: String },
    #[error(transparent)]
    TokensFile(#[from] TokensFileError),
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
    open_registry_with_outbox(config, false).await
}

/// Open the registry; with `outbox`, every change also records its notification.
async fn open_registry_with_outbox(
    config: &RegistryConfig,
    outbox: bool,
) -> Result<Arc<dyn Registry>, AppError> {
    match config.backend {
        Backend::Sqlite => Ok(Arc::new(
            SqliteRegistry::open(&config.path)?.with_outbox(outbox),
        )),
        Backend::Postgres => {
            let url = config.url.as_deref().ok_or(AppError::PostgresUrlMissing)?;
            Ok(Arc::new(
                PostgresRegistry::connect(url).await?.with_outbox(outbox),
            ))
        }
    }
}

/// Start delivering the outbox to `[notify] url`, if set; returns the notifier's
/// waker. A notifier that cannot start leaves the events pending in the outbox.
fn start_notifier(
    config: &Config,
    registry: &dyn Registry,
    stop: watch::Receiver<bool>,
) -> Option<Arc<tokio::sync::Notify>> {
    let url = config.notify.url.as_deref()?;
    let outbox = registry.outbox()?;
    let secret = config.notify.secret.clone();
    let ca_file = config.notify.ca_file.as_deref();
    match Notifier::new(outbox, url, secret, ca_file, Backoff::default()) {
        Ok(notifier) => {
            let waker = notifier.waker();
            tokio::spawn(notifier.run(stop));
            Some(waker)
        }
        Err(error) => {
            tracing::error!(%error, "webhook notifications are not delivered");
            None
        }
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

/// How often the certificate directory is checked for changes.
const CERTS_POLL: Duration = Duration::from_secs(2);

/// How long a stop waits for cut connections to close their sockets; cutting is
/// only dropping futures, so this bounds a stuck task, not normal work.
const CUT_BOUND: Duration = Duration::from_secs(1);

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

/// Bind with SO_REUSEADDR and SO_REUSEPORT, so a new process can bind the same
/// address while the old one drains (rolling restart; see docs/operations.md).
async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    let error = |source| AppError::Bind { key, addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(error)?;
    socket.set_reuseaddr(true).map_err(error)?;
    socket.set_reuseport(true).map_err(error)?;
    socket.bind(addr).map_err(error)?;
    socket.listen(LISTEN_BACKLOG).map_err(error)
}

/// Pending connections the kernel queues per listener.
const LISTEN_BACKLOG: u32 = 1024;

/// Who may write through the admin API. The shared bearer token comes from
/// `admin.token_file` when set, else from the environment variable
/// `admin.token_env`; named tokens from `admin.tokens_file`. A reload re-reads both
/// files, so tokens kept in files (mounted secrets) rotate without a restart.
pub struct AdminToken {
    token: ArcSwap<Option<String>>,
    named: ArcSwap<NamedTokens>,
    /// Where the token comes from, for the 403 that says how to set one.
    source: ArcSwap<String>,
}

impl AdminToken {
    pub fn load(config: &AdminConfig) -> Result<AdminToken, AppError> {
        let token = read_token(config)?;
        let named = read_named_tokens(config)?;
        warn_if_missing(&token, &named, config);
        Ok(AdminToken {
            token: ArcSwap::from_pointee(token),
            named: ArcSwap::from_pointee(named),
            source: ArcSwap::from_pointee(token_source(config)),
        })
    }

    /// Whether any token is configured; without one, admin writes are refused.
    pub fn is_configured(&self) -> bool {
        self.token.load().is_some() || !self.named.load().is_empty()
    }

    /// Who presented `bearer`, if anyone may.
    pub fn caller(&self, bearer: &str) -> Option<Caller> {
        let named = self.named.load();
        let name = named.name_of(bearer).map(str::to_string);
        let shared = self.token.load().as_deref().is_some_and(|token| {
            crate::admin::constant_time_eq(bearer.as_bytes(), token.as_bytes())
        });
        match (name, shared) {
            (Some(name), _) => Some(Caller::Named(name)),
            (None, true) => Some(Caller::Shared),
            (None, false) => None,
        }
    }

    /// How an operator sets the token, for error messages.
    pub fn source(&self) -> Arc<String> {
        self.source.load_full()
    }

    /// Re-read the tokens; an unreadable or invalid file keeps the tokens in force.
    pub fn reload(&self, config: &AdminConfig) -> Result<(), AppError> {
        let token = read_token(config)?;
        let named = read_named_tokens(config)?;
        warn_if_missing(&token, &named, config);
        self.token.store(Arc::new(token));
        self.named.store(Arc::new(named));
        self.source.store(Arc::new(token_source(config)));
        Ok(())
    }
}

fn read_named_tokens(config: &AdminConfig) -> Result<NamedTokens, AppError> {
    let Some(path) = &config.tokens_file else {
        return Ok(NamedTokens::default());
    };
    let named = NamedTokens::load(path)?;
    tracing::info!(file = %path.display(), names = named.len(), "named admin tokens loaded");
    Ok(named)
}

fn token_source(config: &AdminConfig) -> String {
    match &config.token_file {
        Some(file) => format!(
            "write it to {} (admin.token_file) and reload",
            file.display()
        ),
        None => format!(
            "set the environment variable {} and restart",
            config.token_env
        ),
    }
}

fn warn_if_missing(token: &Option<String>, named: &NamedTokens, config: &AdminConfig) {
    if token.is_none() && named.is_empty() {
        tracing::warn!(how = %token_source(config), "no admin token configured: admin writes will be refused");
    }
}

fn read_token(config: &AdminConfig) -> Result<Option<String>, AppError> {
    let text = match &config.token_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| AppError::TokenFile {
            path: path.clone(),
            message: e.to_string(),
        })?,
        None => std::env::var(&config.token_env).unwrap_or_default(),
    };
    let token = text.trim();
    Ok((!token.is_empty()).then(|| token.to_string()))
}

/// A started gate: its bound addresses and the handles to reload or stop it.
pub struct Running {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub gate: Arc<Gate>,
    pub registry: Arc<dyn Registry>,
    /// The admin bearer token; a reload re-reads it.
    pub admin_token: Arc<AdminToken>,
    /// The https listener's certificates, reloaded on SIGHUP and on file changes.
    pub certs: Option<Arc<CertStore>>,
    config_path: PathBuf,
    stop: watch::Sender<bool>,
    connections: Arc<Connections>,
    /// Accept loops; awaited at shutdown so no connection starts during a drain.
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

/// Open the registry (seeding it when empty), bind every listener and start serving.
pub async fn start(config: Config) -> Result<Running, AppError> {
    crate::tls::install_crypto_provider();
    check_upstream_tls(&config)?;
    let config = Arc::new(config);
    let registry = open_registry_with_outbox(&config.registry, config.notify.url.is_some()).await?;
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
    let filed = Arc::new(FiledDomains::new(registry.filed_domains().await?));
    tracing::info!(domains = filed.len(), "filed-domain index loaded");
    let gate = Arc::new(Gate::new(
        cache,
        filed,
        Runtime::new(Arc::clone(&config)),
        Arc::clone(&metrics),
    ));
    let admin_token = Arc::new(AdminToken::load(&config.admin)?);
    let (stop, stop_rx) = watch::channel(false);
    let notifier = start_notifier(&config, registry.as_ref(), stop_rx.clone());
    let admin = Arc::new(Admin {
        registry: Arc::clone(&registry),
        gate: Arc::clone(&gate),
        token: Arc::clone(&admin_token),
        notifier,
    });

    let mut running = Running {
        http: None,
        https: None,
        admin: None,
        gate: Arc::clone(&gate),
        registry: Arc::clone(&registry),
        admin_token,
        certs: None,
        config_path: config.source.clone(),
        stop,
        connections: Arc::default(),
        listeners: Vec::new(),
    };
    if let Some(addr) = config.listen.http {
        let tcp = bind("listen.http", addr).await?;
        running.http = tcp.local_addr().ok();
        let listener = Listener {
            tcp,
            gate: Arc::clone(&gate),
            handshake: Arc::new(PlainHandshake),
            shutdown: stop_rx.clone(),
            connections: Arc::clone(&running.connections),
        };
        tracing::info!(addr = ?running.http, "listening (http)");
        running.listeners.push(tokio::spawn(listener.run()));
    }
    if let (Some(addr), Some(dir)) = (config.listen.https, &config.tls.certs_dir) {
        start_https(&mut running, addr, dir, &gate, &stop_rx).await?;
    }
    if let Some(addr) = config.listen.admin {
        let tcp = bind("listen.admin", addr).await?;
        running.admin = tcp.local_addr().ok();
        tracing::info!(addr = ?running.admin, "listening (admin)");
        tokio::spawn(serve_admin(tcp, Arc::clone(&admin), stop_rx.clone()));
    }
    let revision = registry.revision().await?;
    tokio::spawn(crate::change_feed::follow(
        Arc::clone(&registry),
        Arc::clone(&gate),
        Arc::clone(&metrics),
        revision,
        stop_rx.clone(),
    ));
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
) -> Result<(), AppError> {
    let certs = Arc::new(CertStore::open(dir)?);
    let tcp = bind("listen.https", addr).await?;
    running.https = tcp.local_addr().ok();
    let listener = Listener {
        tcp,
        gate: Arc::clone(gate),
        handshake: Arc::new(TlsHandshake::new(Arc::clone(gate), Arc::clone(&certs))?),
        shutdown: stop_rx.clone(),
        connections: Arc::clone(&running.connections),
    };
    tracing::info!(addr = ?running.https, "listening (https)");
    running.listeners.push(tokio::spawn(listener.run()));
    tokio::spawn(Arc::clone(&certs).watch(CERTS_POLL, stop_rx.clone()));
    running.certs = Some(certs);
    Ok(())
}

impl Running {
    /// Re-read the config file and the certificates and swap them in (see `reload`).
    /// A broken certificate file is logged; the previous certificates stay.
    pub fn reload(&self) -> Result<(), AppError> {
        reload(self)?;
        if let Some(certs) = &self.certs {
            let _ = certs.reload();
        }
        Ok(())
    }

    /// Stop accepting; with `drain`, wait up to `limits.drain_timeout` for in-flight
    /// requests to finish. Whatever is still open then is cut before this returns.
    pub async fn shutdown(self, drain: bool) {
        let _ = self.stop.send(true);
        for listener in self.listeners {
            let _ = listener.await;
        }
        if drain {
            let timeout = self.gate.current().config.limits.drain_timeout;
            tracing::info!(?timeout, open = self.connections.open(), "draining");
            if !self.connections.drain(timeout).await {
                tracing::warn!("drain timeout reached; closing the remaining connections");
            }
        }
        self.connections.cut_all(CUT_BOUND).await;
    }
}

/// Run `icpgate serve` until SIGTERM (drain, exit 0) or SIGINT (exit at once).
/// The handlers are installed before any listener binds, so a SIGHUP sent as soon
/// as the gate is reachable reloads it instead of killing it.
pub async fn serve(config_path: &Path) -> Result<(), AppError> {
    let mut signals = Signals::install()?;
    let running = start(Config::load(config_path)?).await?;
    let exit = signals.wait(&running).await;
    running.shutdown(exit == Exit::Drain).await;
    tracing::info!("stopped");
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Exit {
    Drain,
    Fast,
}

/// The signal policy: SIGHUP reloads, SIGTERM drains, SIGINT exits at once.
struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn install() -> Result<Signals, AppError> {
        let install = |kind| signal(kind).map_err(AppError::Signals);
        Ok(Signals {
            hangup: install(SignalKind::hangup())?,
            terminate: install(SignalKind::terminate())?,
            interrupt: install(SignalKind::interrupt())?,
        })
    }

    async fn wait(&mut self, running: &Running) -> Exit {
        loop {
            tokio::select! {
                _ = self.hangup.recv() => {
                    let _ = running.reload();
                }
                _ = self.terminate.recv() => {
                    tracing::info!("SIGTERM: draining, then exiting");
                    return Exit::Drain;
                }
                _ = self.interrupt.recv() => {
                    tracing::info!("SIGINT: exiting now");
                    return Exit::Fast;
                }
            }
        }
    }
}

/// Swap in a changed config: policy, upstreams, limits and PROXY settings through
/// the gate's runtime, a rebuilt decision cache when `[cache]` changed, and the admin
/// token. A config that fails validation is refused (logged, returned) and the running
/// one keeps serving. Requests in flight finish on the runtime they started with.
fn reload(running: &Running) -> Result<(), AppError> {
    let path = &running.config_path;
    let new = match Config::load(path) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "reload refused: the running configuration stays in force");
            return Err(error.into());
        }
    };
    if let Err(error) = check_upstream_tls(&new) {
        tracing::error!(%error, "reload refused: the running configuration stays in force");
        return Err(error);
    }
    // Last of the checks that can refuse the reload: nothing has changed yet, and
    // from here on nothing fails.
    if let Err(error) = running.admin_token.reload(&new.admin) {
        tracing::error!(%error, "reload refused: the running configuration stays in force");
        return Err(error);
    }
    let gate = &running.gate;
    let current = gate.current();
    let needs_restart = current.config.restart_required_changes(&new);
    if !needs_restart.is_empty() {
        tracing::warn!(keys = ?needs_restart, "these changes take effect only after a restart");
    }
    if current.config.cache != new.cache {
        gate.replace_cache(Arc::new(DecisionCache::new(
            Arc::clone(&running.registry),
            Arc::clone(&gate.metrics),
            cache_settings(&new),
        )));
        tracing::info!("decision cache rebuilt with the new [cache] settings");
    }
    gate.runtime.store(Arc::new(Runtime::new(Arc::new(new))));
    tracing::info!(config = %path.display(), "configuration reloaded");
    Ok(())
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
