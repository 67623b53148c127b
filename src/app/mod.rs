//! Builds the running gate from a config — registry, cache, upstreams, TLS,
//! listeners, admin — and owns its life: SIGHUP reloads (config and certificates),
//! SIGTERM drains (up to `limits.drain_timeout`) and exits 0, SIGINT exits at once.
//! The data plane runs on worker threads of its own (`workers`); everything else on
//! the runtime `start` is called on.

mod workers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use crate::admin::tokens::{check_exposure, AdminToken, LoadedTokens, TokensFileError};
use crate::admin::{Admin, AdminService};
use crate::config::{Config, ConfigError};
use crate::edge::acme::fleet::FleetStorage;
use crate::edge::acme::seal::Sealer;
use crate::edge::acme::storage::{DirStorage, Storage};
use crate::edge::acme::{Acme, AcmeError};
use crate::edge::listener::{
    bind_per_worker, Connections, Handshake, Listener, PlainHandshake, Plane, LISTEN_BACKLOG,
};
use crate::edge::proxy::{Gate, Runtime};
use crate::edge::tls::{CertError, CertStore, Resumption, ResumptionError, TlsHandshake};
use crate::gate::decision_cache::{CacheSettings, DecisionCache};
use crate::gate::filed_domains::FiledDomains;
use crate::gate::GateState;
use crate::notify::{Backoff, Notifier};
use crate::observe::metrics::{Metrics, MetricsError};
use crate::registry::{self, OpenError, Registry, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The OS error is part of the message, not a `source`: `icpgate: {error:#}`
    /// would print it twice.
    #[error("cannot listen on {addr} ({key}): {error}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot start the data-plane threads: {0}")]
    Workers(std::io::Error),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    TokensFile(#[from] TokensFileError),
    #[error("tls.certs_dir: {0}")]
    Certificates(#[from] CertError),
    #[error(transparent)]
    Resumption(#[from] ResumptionError),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("acme: {0}")]
    Acme(#[from] crate::edge::acme::AcmeError),
    #[error("acme storage key: {0}")]
    AcmeStorageKey(String),
    #[error("upstreams.{pool}: {source}")]
    UpstreamTls {
        pool: &'static str,
        source: crate::edge::tls::client::ClientTlsError,
    },
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

fn cache_settings(config: &Config) -> CacheSettings {
    CacheSettings {
        ttl: config.cache.ttl,
        negative_ttl: config.cache.negative_ttl,
        stale_if_error: config.cache.stale_if_error,
        max_entries: config.cache.max_entries,
    }
}

/// How long start-up waits for the first reading of the filing gauges.
const FIRST_GAUGES_WAIT: Duration = Duration::from_millis(500);

/// How often the filing gauges are read from the registry.
const GAUGES_EVERY: Duration = Duration::from_secs(15);

/// How often the certificate directory is checked for changes.
const CERTS_POLL: Duration = Duration::from_secs(2);

/// How long a stop waits for cut connections to close their sockets; cutting is
/// only dropping futures, so this bounds a stuck task, not normal work.
const CUT_BOUND: Duration = Duration::from_secs(1);

/// Refuse to start when a TLS upstream pool's trust roots cannot be loaded.
fn check_upstream_tls(config: &Config) -> Result<(), AppError> {
    use crate::model::filing::Product;
    for name in [Product::Storefront, Product::CorporateSite] {
        let pool = config.upstreams.pool(name);
        if pool.tls {
            crate::edge::tls::client::client_config(pool.ca_file.as_deref()).map_err(|source| {
                AppError::UpstreamTls {
                    pool: name.as_str(),
                    source,
                }
            })?;
        }
    }
    Ok(())
}

/// Bind the admin listener with SO_REUSEADDR and SO_REUSEPORT, so a new process can
/// bind the same address while the old one drains (rolling restart; see
/// docs/operations.md). The data plane's addresses are bound once per worker
/// (`bind_per_worker`), with the same options.
async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    let error = |error| AppError::Bind { key, addr, error };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(error)?;
    socket.set_reuseaddr(true).map_err(error)?;
    socket.set_reuseport(true).map_err(error)?;
    socket.bind(addr).map_err(error)?;
    socket.listen(LISTEN_BACKLOG.unsigned_abs()).map_err(error)
}

/// Bind a data-plane address once per worker thread.
fn bind_data(
    key: &'static str,
    addr: SocketAddr,
    workers: usize,
) -> Result<Vec<std::net::TcpListener>, AppError> {
    bind_per_worker(addr, workers).map_err(|error| AppError::Bind { key, addr, error })
}

/// The data plane's accept loop, one per worker's socket of one address.
fn data_accept<H: Handshake>(
    gate: &Arc<Gate>,
    handshake: Arc<H>,
    stop_rx: &watch::Receiver<bool>,
    connections: &Arc<Connections>,
) -> impl Fn() -> workers::Accept {
    let (gate, stop_rx, connections) = (Arc::clone(gate), stop_rx.clone(), Arc::clone(connections));
    move || {
        let gate = Arc::clone(&gate);
        let handshake = Arc::clone(&handshake);
        let shutdown = stop_rx.clone();
        let connections = Arc::clone(&connections);
        Box::new(move |tcp: TcpListener| -> workers::AcceptLoop {
            let listener = Listener {
                tcp,
                gate: Arc::clone(&gate),
                handshake,
                service: gate,
                plane: Plane::Data,
                shutdown,
                connections,
            };
            Box::pin(listener.run())
        })
    }
}

/// Open connections the admin listener takes at once: operators, scrapers and
/// scripts, not the public; its own limit so neither side can starve the other.
const ADMIN_MAX_CONNECTIONS: usize = 256;

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
    /// The data plane's connections.
    connections: Arc<Connections>,
    /// The admin listener's connections, drained and cut with the data plane's.
    admin_connections: Arc<Connections>,
    /// The admin accept loop; awaited at shutdown so no connection starts during a
    /// drain.
    listeners: Vec<tokio::task::JoinHandle<()>>,
    /// The data plane's threads.
    workers: Option<workers::Workers>,
}

/// Open the registry (seeding it when empty), bind every listener and start serving.
pub async fn start(config: Config) -> Result<Running, AppError> {
    crate::edge::tls::install_crypto_provider();
    check_upstream_tls(&config)?;
    let config = Arc::new(config);
    let registry = registry::open_seeded(&config.registry, config.notify.url.is_some()).await?;
    let metrics = Arc::new(Metrics::new()?);
    let first_gauges = tokio::spawn({
        let (registry, metrics) = (Arc::clone(&registry), Arc::clone(&metrics));
        async move { crate::gate::gauges::refresh_filing_gauges(registry.as_ref(), &metrics).await }
    });
    let state = gate_state(&config, &registry, &metrics).await?;
    // A small registry starts with its gauges read; a large one opens its ports
    // first and fills them in when counted.
    let _ = tokio::time::timeout(FIRST_GAUGES_WAIT, first_gauges).await;
    let gate = Arc::new(Gate::new(
        Arc::clone(&state),
        Runtime::new(Arc::clone(&config)),
    ));
    let tokens = LoadedTokens::read(&config.admin)?;
    check_exposure(config.listen.admin, &tokens)?;
    let admin_token = Arc::new(AdminToken::new(tokens));
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
        admin_connections: Arc::default(),
        listeners: Vec::new(),
        workers: None,
    };
    let mut plan = workers::WorkerPlan::new(config.limits.workers());
    if let Some(addr) = config.listen.http {
        plan_http(&mut running, &mut plan, addr, &gate, &stop_rx)?;
    }
    if let (Some(addr), Some(dir)) = (config.listen.https, &config.tls.certs_dir) {
        plan_https(&mut running, &mut plan, addr, dir, &gate, &stop_rx).await?;
    }
    if let Some(addr) = config.listen.admin {
        start_admin(&mut running, addr, admin, &stop_rx).await?;
    }
    let threads = plan.workers();
    running.workers = Some(workers::Workers::start(plan).map_err(AppError::Workers)?);
    tracing::info!(threads, "data plane started");
    let revision = registry.revision().await?;
    tokio::spawn(crate::gate::change_feed::follow(
        Arc::clone(&registry),
        Arc::clone(&gate.state),
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

/// The gate's shared state: the decision cache over `registry` and the index of
/// every filed domain, read once here and kept current by writes and the feed.
async fn gate_state(
    config: &Config,
    registry: &Arc<dyn Registry>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<GateState>, AppError> {
    let cache = Arc::new(DecisionCache::new(
        Arc::clone(registry),
        Arc::clone(metrics),
        cache_settings(config),
    ));
    let filed = Arc::new(FiledDomains::load(registry.as_ref()).await?);
    tracing::info!(domains = filed.len(), "filed-domain index loaded");
    Ok(Arc::new(GateState::new(cache, filed, Arc::clone(metrics))))
}

/// Bind `listen.http` once per worker; the workers accept on it once started.
fn plan_http(
    running: &mut Running,
    plan: &mut workers::WorkerPlan,
    addr: SocketAddr,
    gate: &Arc<Gate>,
    stop_rx: &watch::Receiver<bool>,
) -> Result<(), AppError> {
    let sockets = bind_data("listen.http", addr, plan.workers())?;
    running.http = sockets.first().and_then(|s| s.local_addr().ok());
    let accept = data_accept(
        gate,
        Arc::new(PlainHandshake),
        stop_rx,
        &running.connections,
    );
    plan.add(sockets, accept);
    tracing::info!(addr = ?running.http, "listening (http)");
    Ok(())
}

/// Load the certificates, bind `listen.https` once per worker and watch
/// `certs_dir` for changes.
async fn plan_https(
    running: &mut Running,
    plan: &mut workers::WorkerPlan,
    addr: SocketAddr,
    dir: &Path,
    gate: &Arc<Gate>,
    stop_rx: &watch::Receiver<bool>,
) -> Result<(), AppError> {
    let config = gate.current().config.clone();
    let resumption = Resumption::from_ticket_key_file(config.tls.ticket_key_file.as_deref())?;
    let certs = Arc::new(CertStore::open(dir, resumption)?);
    let acme = start_acme(&config, dir, gate, &running.registry, &certs, stop_rx).await?;
    let sockets = bind_data("listen.https", addr, plan.workers())?;
    running.https = sockets.first().and_then(|s| s.local_addr().ok());
    let handshake = TlsHandshake::new(Arc::clone(gate), Arc::clone(&certs), acme)?;
    let accept = data_accept(gate, Arc::new(handshake), stop_rx, &running.connections);
    plan.add(sockets, accept);
    tracing::info!(addr = ?running.https, "listening (https)");
    tokio::spawn(Arc::clone(&certs).watch(CERTS_POLL, stop_rx.clone()));
    running.certs = Some(certs);
    Ok(())
}

/// Certificates on demand when `[acme]` is on: load what storage keeps (a
/// directory, or the fleet's registry), renew it and, in a fleet, follow what
/// other nodes store.
async fn start_acme(
    config: &Config,
    certs_dir: &Path,
    gate: &Arc<Gate>,
    registry: &Arc<dyn Registry>,
    certs: &CertStore,
    stop_rx: &watch::Receiver<bool>,
) -> Result<Option<Arc<Acme>>, AppError> {
    if config.acme.directory.is_none() {
        return Ok(None);
    }
    let storage = if config.acme.in_registry() {
        let store = registry.acme_store().ok_or_else(|| {
            AppError::AcmeStorageKey("this registry backend cannot hold ACME state".to_owned())
        })?;
        let sealer = Sealer::from_secret(&acme_storage_key(config)?)
            .map_err(|e| AppError::AcmeStorageKey(e.to_string()))?;
        Storage::Fleet(Box::new(FleetStorage::new(store, sealer)))
    } else {
        let dir = config.acme.storage_dir(certs_dir);
        Storage::Dir(DirStorage::open(&dir).map_err(AcmeError::from)?)
    };
    let acme = Acme::open(
        &config.acme,
        storage,
        Arc::clone(gate),
        certs.resumption().clone(),
    )
    .await?;
    tokio::spawn(Arc::clone(&acme).renew_forever(stop_rx.clone()));
    tokio::spawn(Arc::clone(&acme).follow_forever(stop_rx.clone()));
    Ok(Some(acme))
}

/// The key sealing the fleet's ACME private keys: `acme.storage_key_file`, else
/// the variable `acme.storage_key_env`.
fn acme_storage_key(config: &Config) -> Result<String, AppError> {
    let acme = &config.acme;
    match &acme.storage_key_file {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| AppError::AcmeStorageKey(format!("{}: {e}", file.display()))),
        None => std::env::var(&acme.storage_key_env).map_err(|_| {
            AppError::AcmeStorageKey(format!(
                "the variable {} is not set (acme.storage_key_env)",
                acme.storage_key_env
            ))
        }),
    }
}

/// Bind `listen.admin` and serve the admin API through the same accept loop as the
/// data plane, with a connection set of its own.
async fn start_admin(
    running: &mut Running,
    addr: SocketAddr,
    admin: Arc<Admin>,
    stop_rx: &watch::Receiver<bool>,
) -> Result<(), AppError> {
    let tcp = bind("listen.admin", addr).await?;
    let bound = tcp.local_addr().unwrap_or(addr);
    running.admin = Some(bound);
    let listener = Listener {
        tcp,
        gate: Arc::clone(&admin.gate),
        handshake: Arc::new(PlainHandshake),
        service: Arc::new(AdminService::new(admin, bound)),
        plane: Plane::Admin {
            max_connections: ADMIN_MAX_CONNECTIONS,
        },
        shutdown: stop_rx.clone(),
        connections: Arc::clone(&running.admin_connections),
    };
    tracing::info!(addr = ?running.admin, "listening (admin)");
    running.listeners.push(tokio::spawn(listener.run()));
    Ok(())
}

impl Running {
    /// Re-read the config file, the certificates and `tls.ticket_key_file` and swap
    /// them in (see `reload`). A broken certificate or key file is logged; the
    /// previous certificates and ticket keys stay.
    pub fn reload(&self) -> Result<(), AppError> {
        reload(self)?;
        if let Some(certs) = &self.certs {
            let _ = certs.reload();
            let _ = certs.resumption().reload_ticket_keys();
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
        let mut workers = self.workers;
        if let Some(workers) = &mut workers {
            workers.stopped_accepting().await;
        }
        let planes = [&self.connections, &self.admin_connections];
        if drain {
            let timeout = self.gate.current().config.limits.drain_timeout;
            let open = self.connections.open();
            let admin = self.admin_connections.open();
            tracing::info!(?timeout, open, admin, "draining");
            let drained = futures_util::future::join_all(planes.map(|c| c.drain(timeout))).await;
            if drained.contains(&false) {
                tracing::warn!("drain timeout reached; closing the remaining connections");
            }
        }
        futures_util::future::join_all(planes.map(|c| c.cut_all(CUT_BOUND))).await;
        if let Some(workers) = workers {
            workers.release().await;
        }
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
    let tokens = match LoadedTokens::read(&new.admin)
        .and_then(|tokens| check_exposure(running.admin, &tokens).map(|()| tokens))
    {
        Ok(tokens) => tokens,
        Err(error) => {
            tracing::error!(%error, "reload refused: the running configuration stays in force");
            return Err(error.into());
        }
    };
    running.admin_token.install(tokens);
    let gate = &running.gate;
    let current = gate.current();
    let needs_restart = current.config.restart_required_changes(&new);
    if !needs_restart.is_empty() {
        tracing::warn!(keys = ?needs_restart, "these changes take effect only after a restart");
    }
    if current.config.cache != new.cache {
        gate.state.replace_cache(Arc::new(DecisionCache::new(
            Arc::clone(&running.registry),
            Arc::clone(&gate.state.metrics),
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
    // Start-up took the first reading.
    let first = tokio::time::Instant::now() + GAUGES_EVERY;
    let mut every = tokio::time::interval_at(first, GAUGES_EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = every.tick() => crate::gate::gauges::refresh_filing_gauges(registry.as_ref(), &metrics).await,
        }
    }
}
