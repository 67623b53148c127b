//! Certificates on demand from an ACME CA (RFC 8555), for filed names only.
//!
//! Contract of [`Acme`]:
//! - The https handshake asks [`Acme::served`] for a name no `tls.certs_dir`
//!   certificate covers, and [`Acme::obtain`] only once the gate's verdict for the
//!   name is `filed` (the filed-domain index answers unfiled names first, so a flood
//!   of random SNI names costs neither a registry query nor an order).
//! - One order at a time per name: concurrent hellos wait on the same order, up to
//!   `acme.order_timeout`, then fail their handshake.
//! - A failed order backs its name off (1 min, doubling, at most 1 h); at most
//!   `acme.max_orders_per_hour` orders are placed per hour, over all names: only
//!   orders this node places (in a fleet, once it holds the name's lock), not
//!   hellos or renewals served by another node's order.
//! - The account and every certificate persist in [`storage`]; a restart serves the
//!   stored certificates with no new order. An expired certificate is never served,
//!   nor one the CA withdraws ([`status`]: revoked, or about to be): that one is
//!   treated as absent, ordered anew while its name is filed.
//! - In a fleet ([`fleet`], `acme.storage = "registry"`): one node orders a name at
//!   a time (the registry's advisory lock; the others wait for its certificate),
//!   keys are sealed ([`seal`]), challenge answers are shared so any node answers
//!   the CA, and every node serves a new certificate once the registry's NOTIFY
//!   arrives (at the latest after [`fleet::FEED_FALLBACK`]).
//! - [`Acme::renew_forever`] renews `acme.renew_before` ahead of expiry (checked
//!   every minute, or ten times per `renew_before` when that is shorter), later by a
//!   per-name jitter (up to a tenth of `renew_before`), and only names whose filing
//!   is still approved: an ended filing's certificate runs out.

pub mod challenge;
pub mod fleet;
pub mod order;
mod renew;
pub mod seal;
mod status;
pub mod storage;
pub mod trust;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::server::ServerConfig;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{watch, OnceCell};

use crate::config::AcmeConfig;
use crate::edge::proxy::Gate;
use crate::edge::tls::Resumption;
use crate::model::host::HostName;
use order::{OrderError, Orderer};
use renew::renew_at;
use storage::{Storage, StorageError, StoredCert};

/// How long a node waits for the certificate another node of the fleet orders.
const PEER_PATIENCE: Duration = Duration::from_secs(120);

/// First and longest back-off of a name whose order failed.
const BACKOFF_FIRST: Duration = Duration::from_secs(60);
const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// Why a handshake got no ACME certificate.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("the order for this name failed {failures} time(s); next try in {wait:?}")]
    BackingOff { failures: u32, wait: Duration },
    #[error("acme.max_orders_per_hour is used up")]
    RateLimited,
    #[error("the order did not finish within {0:?}")]
    Timeout(Duration),
    #[error("order failed: {0}")]
    Failed(String),
    #[error("ACME storage: {0}")]
    Storage(#[from] StorageError),
}

/// A certificate obtained through ACME, ready to answer handshakes.
pub struct Issued {
    pub config: Arc<ServerConfig>,
    pub not_after: SystemTime,
    /// The leaf, which names the certificate to the CA ([`status`]).
    leaf: CertificateDer<'static>,
    /// When to ask the CA about this certificate next: at once when new.
    status_next: Mutex<Instant>,
}

impl Issued {
    fn is_valid(&self, now: SystemTime) -> bool {
        now < self.not_after
    }

    fn status_due(&self, now: Instant) -> bool {
        self.status_next.lock().is_ok_and(|next| *next <= now)
    }

    fn check_status_in(&self, wait: Duration) {
        if let Ok(mut next) = self.status_next.lock() {
            *next = Instant::now() + wait;
        }
    }
}

/// What an order's waiters receive.
type Outcome = Option<Result<Arc<Issued>, String>>;

/// Why an order is placed: no certificate yet, or a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Missing,
    Renewal,
}

enum Started {
    Served(Arc<ServerConfig>),
    Ordering(watch::Receiver<Outcome>),
}

struct Backoff {
    failures: u32,
    until: Instant,
}

/// The ACME side of the https listener; see the module contract.
pub struct Acme {
    settings: AcmeConfig,
    storage: Storage,
    gate: Arc<Gate>,
    /// The runtime `open` ran on (the control side): an order a handshake starts on
    /// a data-plane thread runs there, not on that thread.
    control: tokio::runtime::Handle,
    account: OnceCell<instant_acme::Account>,
    /// Set once the CA's directory turned out to have no `renewalInfo`.
    ari_unsupported: AtomicBool,
    issued: Mutex<HashMap<HostName, Arc<Issued>>>,
    /// The newest storage revision served (a fleet's feed).
    revision: AtomicI64,
    in_flight: Mutex<HashMap<HostName, watch::Receiver<Outcome>>>,
    backoff: Mutex<HashMap<HostName, Backoff>>,
    /// When each order of the last hour was placed.
    placed: Mutex<VecDeque<Instant>>,
    resumption: Resumption,
}

impl Acme {
    /// Serve what `storage` keeps (a broken or expired certificate is skipped
    /// with a warning); in a fleet, also answer the challenges other nodes publish.
    /// Sessions resume through `resumption`, the one `tls.certs_dir` uses.
    pub async fn open(
        settings: &AcmeConfig,
        storage: Storage,
        gate: Arc<Gate>,
        resumption: Resumption,
    ) -> Result<Arc<Acme>, AcmeError> {
        if let Some(store) = storage.shared() {
            gate.acme_challenges.share_through(Arc::clone(store));
        }
        let acme = Arc::new(Acme {
            settings: settings.clone(),
            storage,
            gate,
            control: tokio::runtime::Handle::current(),
            account: OnceCell::new(),
            ari_unsupported: AtomicBool::new(false),
            issued: Mutex::default(),
            revision: AtomicI64::new(0),
            in_flight: Mutex::default(),
            backoff: Mutex::default(),
            placed: Mutex::default(),
            resumption,
        });
        let loaded = acme.follow_once().await?;
        tracing::info!(certificates = loaded, "ACME certificates loaded");
        Ok(acme)
    }

    /// Serve the certificates stored after the last revision seen (in a
    /// directory: all of them); returns how many were loaded.
    async fn follow_once(&self) -> Result<usize, StorageError> {
        let since = self.revision.load(Ordering::Acquire);
        let stored = self.storage.certificates_since(since).await?;
        let now = SystemTime::now();
        let mut loaded = 0;
        for (cert, revision) in stored {
            self.revision.fetch_max(revision, Ordering::AcqRel);
            let name = cert.name.as_str();
            match load(&cert.pem, &self.resumption) {
                Ok(issued) if issued.is_valid(now) => {
                    if let Ok(mut map) = self.issued.lock() {
                        map.insert(cert.name.clone(), Arc::new(issued));
                        loaded += 1;
                    }
                }
                Ok(_) => tracing::warn!(name, "stored ACME certificate has expired: not served"),
                Err(error) => {
                    tracing::warn!(name, %error, "stored ACME certificate is unusable: not served")
                }
            }
        }
        self.update_gauges();
        Ok(loaded)
    }

    /// In a fleet, serve what other nodes store, woken by the registry's NOTIFY
    /// (and every [`fleet::FEED_FALLBACK`] without one), until `stop`.
    pub async fn follow_forever(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(stored) = self.storage.shared().map(|s| s.certificate_stored()) else {
            return;
        };
        let mut tick = tokio::time::interval(fleet::FEED_FALLBACK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
                _ = stored.notified() => {}
            }
            if let Err(error) = self.follow_once().await {
                tracing::warn!(%error, "ACME certificates of the fleet not read");
            }
        }
    }

    /// The config serving `name`'s unexpired ACME certificate, if there is one.
    pub fn served(&self, name: &HostName) -> Option<Arc<ServerConfig>> {
        let issued = self.issued.lock().ok()?;
        let cert = issued.get(name)?;
        cert.is_valid(SystemTime::now())
            .then(|| Arc::clone(&cert.config))
    }

    /// `name`'s certificate, ordering it when there is none. The caller has
    /// established that the name is filed.
    pub async fn obtain(self: &Arc<Self>, name: &HostName) -> Result<Arc<ServerConfig>, AcmeError> {
        let mut outcome = match self.start(name, Need::Missing)? {
            Started::Served(config) => return Ok(config),
            Started::Ordering(outcome) => outcome,
        };
        let patience = self.order_timeout();
        let waited = tokio::time::timeout(patience, outcome.wait_for(Option::is_some)).await;
        match waited {
            Err(_) => Err(AcmeError::Timeout(patience)),
            Ok(Err(_)) => Err(AcmeError::Failed("the order was dropped".to_owned())),
            Ok(Ok(done)) => match done.as_ref() {
                Some(Ok(issued)) => Ok(Arc::clone(&issued.config)),
                Some(Err(error)) => Err(AcmeError::Failed(error.clone())),
                None => Err(AcmeError::Failed("no outcome".to_owned())),
            },
        }
    }

    /// How long a ClientHello waits for its name's order (`acme.order_timeout`).
    pub fn order_timeout(&self) -> Duration {
        self.settings.order_timeout
    }

    /// Join `name`'s order in flight, or start one (unless the name backs off;
    /// the hourly budget is taken only when this node places it). Under the in-flight lock, so an order that
    /// just finished is seen as served, not ordered again.
    fn start(self: &Arc<Self>, name: &HostName, need: Need) -> Result<Started, AcmeError> {
        let mut in_flight = self
            .in_flight
            .lock()
            .map_err(|_| AcmeError::Failed("lock poisoned".to_owned()))?;
        if let Some(outcome) = in_flight.get(name) {
            return Ok(Started::Ordering(outcome.clone()));
        }
        if need == Need::Missing {
            if let Some(config) = self.served(name) {
                return Ok(Started::Served(config));
            }
        }
        self.check_backoff(name)?;
        let (tx, rx) = watch::channel(None);
        in_flight.insert(name.clone(), rx.clone());
        self.control
            .spawn(Arc::clone(self).run(name.clone(), need, tx));
        Ok(Started::Ordering(rx))
    }

    fn check_backoff(&self, name: &HostName) -> Result<(), AcmeError> {
        let Ok(backoff) = self.backoff.lock() else {
            return Ok(());
        };
        match backoff.get(name) {
            Some(b) if b.until > Instant::now() => Err(AcmeError::BackingOff {
                failures: b.failures,
                wait: b.until - Instant::now(),
            }),
            _ => Ok(()),
        }
    }

    /// Count one order against `acme.max_orders_per_hour`, or refuse it.
    fn take_budget(&self) -> Result<(), AcmeError> {
        let now = Instant::now();
        let mut placed = self.placed.lock().map_err(|_| AcmeError::RateLimited)?;
        while placed
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(3600))
        {
            placed.pop_front();
        }
        if placed.len() >= self.settings.max_orders_per_hour as usize {
            self.count("rate_limited");
            return Err(AcmeError::RateLimited);
        }
        placed.push_back(now);
        Ok(())
    }

    /// The order task: place it, keep the result, tell the waiters.
    async fn run(self: Arc<Self>, name: HostName, need: Need, tx: watch::Sender<Outcome>) {
        let outcome = match self.issue(&name, need).await {
            Ok((issued, ordered)) => {
                if ordered {
                    tracing::info!(name = %name.as_str(), "ACME certificate issued");
                    self.count("issued");
                } else {
                    tracing::info!(name = %name.as_str(), "ACME certificate obtained by another node");
                }
                if let Ok(mut backoff) = self.backoff.lock() {
                    backoff.remove(&name);
                }
                if let Ok(mut map) = self.issued.lock() {
                    map.insert(name.clone(), Arc::clone(&issued));
                }
                self.update_gauges();
                Ok(issued)
            }
            // Counted as rate_limited already; the name did nothing to back off for.
            Err(error @ OrderError::RateLimited) => {
                tracing::warn!(name = %name.as_str(), %error, "ACME order not placed");
                Err(error.to_string())
            }
            Err(error) => {
                tracing::warn!(name = %name.as_str(), %error, "ACME order failed");
                self.count("failed");
                self.back_off(&name);
                Err(error.to_string())
            }
        };
        if let Ok(mut in_flight) = self.in_flight.lock() {
            in_flight.remove(&name);
        }
        let _ = tx.send(Some(outcome));
    }

    /// `name`'s certificate and whether this node ordered it: in a fleet, under
    /// the name's order lock, or from the node that holds it.
    async fn issue(&self, name: &HostName, need: Need) -> Result<(Arc<Issued>, bool), OrderError> {
        let Some(store) = self.storage.shared() else {
            return Ok((self.order_here(name).await?, true));
        };
        let slot = Mutex::new(None);
        let locked = Box::pin(async {
            // The node that held the lock before may have just stored it.
            let result = match self.fresh_from_fleet(name, need).await {
                Some(issued) => Ok((issued, false)),
                None => self.order_here(name).await.map(|issued| (issued, true)),
            };
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(result);
            }
        });
        let ran = store
            .while_locked(name.as_str(), locked)
            .await
            .map_err(StorageError::from)?;
        if ran {
            return slot
                .into_inner()
                .ok()
                .flatten()
                .unwrap_or(Err(OrderError::Peer));
        }
        let deadline = Instant::now() + PEER_PATIENCE;
        while Instant::now() < deadline {
            tokio::time::sleep(fleet::FEED_POLL).await;
            if let Some(issued) = self.fresh_from_fleet(name, need).await {
                return Ok((issued, false));
            }
        }
        Err(OrderError::Peer)
    }

    /// A certificate for `name` that the fleet stored and that meets `need`.
    async fn fresh_from_fleet(&self, name: &HostName, need: Need) -> Option<Arc<Issued>> {
        if let Err(error) = self.follow_once().await {
            tracing::warn!(%error, "ACME certificates of the fleet not read");
        }
        let issued = self.issued.lock().ok()?.get(name).cloned()?;
        let now = SystemTime::now();
        let fresh = match need {
            Need::Missing => issued.is_valid(now),
            Need::Renewal => now < renew_at(name, issued.not_after, self.settings.renew_before),
        };
        fresh.then_some(issued)
    }

    /// The ACME account: the stored one, or a new one (then stored) on first use.
    async fn account(&self) -> Result<&instant_acme::Account, OrderError> {
        let orderer = Orderer {
            directory: self.settings.directory.as_deref().unwrap_or_default(),
            ca_file: self.settings.ca_file.as_deref(),
            email: self.settings.email.as_deref(),
        };
        self.account
            .get_or_try_init(|| orderer.account(&self.storage))
            .await
    }

    /// Place the order from this node, within the hourly budget, and store the certificate.
    async fn order_here(&self, name: &HostName) -> Result<Arc<Issued>, OrderError> {
        self.take_budget().map_err(|_| OrderError::RateLimited)?;
        let account = self.account().await?;
        let challenges = &self.gate.acme_challenges;
        let kind = self.settings.challenge;
        let shared = self.storage.shared();
        let pem = order::order(account, name, kind, challenges, shared).await?;
        let issued = load(&pem, &self.resumption).map_err(OrderError::Issued)?;
        let cert = StoredCert {
            name: name.clone(),
            pem,
        };
        self.storage.save_certificate(&cert).await?;
        Ok(Arc::new(issued))
    }

    fn back_off(&self, name: &HostName) {
        if let Ok(mut backoff) = self.backoff.lock() {
            let failures = backoff.get(name).map_or(0, |b| b.failures) + 1;
            let wait = BACKOFF_FIRST
                .saturating_mul(1 << failures.saturating_sub(1).min(6))
                .min(BACKOFF_MAX);
            backoff.insert(
                name.clone(),
                Backoff {
                    failures,
                    until: Instant::now() + wait,
                },
            );
        }
    }

    fn count(&self, result: &str) {
        self.gate
            .state
            .metrics
            .acme_orders
            .with_label_values(&[result])
            .inc();
    }

    /// Refresh `icpgate_acme_certificates` and the earliest expiry.
    fn update_gauges(&self) {
        let Ok(issued) = self.issued.lock() else {
            return;
        };
        let now = SystemTime::now();
        let valid = issued.values().filter(|c| c.is_valid(now));
        let (count, first) = valid.fold((0, None), |(n, first): (i64, Option<SystemTime>), c| {
            (
                n + 1,
                Some(first.map_or(c.not_after, |f| f.min(c.not_after))),
            )
        });
        let metrics = &self.gate.state.metrics;
        metrics.acme_certificates.set(count);
        let expiry = first
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        metrics.acme_certificate_expiry.set(expiry);
    }
}

/// Why stored or issued PEM could not be served.
#[derive(Debug, thiserror::Error)]
pub enum IssuedError {
    #[error("invalid PEM: {0}")]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error("no certificate in the PEM")]
    NoCertificate,
    #[error("certificate cannot be parsed: {0}")]
    X509(String),
    #[error("key unusable or not matching: {0}")]
    Key(#[from] rustls::Error),
}

/// A chain followed by its key, in PEM, made ready to serve.
fn load(pem: &str, resumption: &Resumption) -> Result<Issued, IssuedError> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let leaf = chain.first().ok_or(IssuedError::NoCertificate)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| IssuedError::X509(e.to_string()))?;
    let seconds = parsed.validity().not_after.timestamp().max(0) as u64;
    let not_after = UNIX_EPOCH + Duration::from_secs(seconds);
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())?;
    let leaf = leaf.clone().into_owned();
    let certified = CertifiedKey::from_der(chain, key, &crate::edge::tls::provider())?;
    let config = crate::edge::tls::server_config(Arc::new(certified), resumption)?;
    Ok(Issued {
        config,
        not_after,
        leaf,
        status_next: Mutex::new(Instant::now()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_valid_until(not_after: SystemTime) -> String {
        let mut params = rcgen::CertificateParams::new(vec!["shop.cn".to_owned()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = not_after.into();
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        format!("{}{}", cert.pem(), key.serialize_pem())
    }

    #[test]
    fn an_expired_certificate_is_not_valid() {
        crate::edge::tls::install_crypto_provider();
        let resumption = Resumption::new().expect("resumption");
        let now = SystemTime::now();
        // not_after relative to now, valid now
        let cases = [(Duration::from_secs(3600), true), (Duration::ZERO, false)];
        for (ahead, valid) in cases {
            let issued = load(&pem_valid_until(now + ahead), &resumption).expect("load");
            assert_eq!(
                issued.is_valid(now + Duration::from_secs(1)),
                valid,
                "{ahead:?}"
            );
        }
        // A PEM without a key, or without a certificate, is refused.
        let pem = pem_valid_until(now + Duration::from_secs(60));
        let cert_only = &pem[..pem.find("-----BEGIN PRIVATE KEY").expect("key")];
        assert!(load(cert_only, &resumption).is_err());
        assert!(load("", &resumption).is_err());
    }
}
