//! The decision cache in front of the registry (moka).
//!
//! Contract:
//! - an answer lives `cache.ttl` when its filing serves traffic and `cache.negative_ttl`
//!   otherwise (a domain being filed should open soon after approval even on another
//!   node; an approved one changes rarely);
//! - at most one registry lookup is in flight per domain: concurrent misses wait for it
//!   and are counted as `coalesced`;
//! - `invalidate` after a registry write makes this process enforce the write at once,
//!   even against a lookup that was in flight during the write: an answer read at an
//!   older revision than the last write to its domain is never served;
//! - when the registry fails, the last good answer for the domain is served for up to
//!   `cache.stale_if_error` (counted `stale`); with nothing cached the lookup fails and
//!   `policy.on_registry_error` decides.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;

use crate::decision::FilingFacts;
use crate::filing::Status;
use crate::host::RegistrableDomain;
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryError};

/// What the registry said about a domain, as cached.
#[derive(Debug, Clone)]
pub struct Answer {
    pub filing: Option<Arc<FilingFacts>>,
    /// The registry revision this answer was read at.
    pub revision: i64,
    /// Served from the stale store because the registry failed.
    pub stale: bool,
}

/// The lifetimes the cache applies; swapped on reload.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub stale_if_error: Duration,
    pub max_entries: u64,
}

struct AnswerExpiry {
    settings: CacheSettings,
}

impl Expiry<RegistrableDomain, Answer> for AnswerExpiry {
    fn expire_after_create(
        &self,
        _key: &RegistrableDomain,
        answer: &Answer,
        _at: Instant,
    ) -> Option<Duration> {
        let serves = answer
            .filing
            .as_ref()
            .is_some_and(|f| matches!(f.status, Status::Approved | Status::AuthorityReview));
        Some(if serves && !answer.stale {
            self.settings.ttl
        } else {
            self.settings.negative_ttl
        })
    }
}

pub struct DecisionCache {
    registry: Arc<dyn Registry>,
    metrics: Arc<Metrics>,
    answers: Cache<RegistrableDomain, Answer>,
    /// Last good answer per domain, kept `stale_if_error` for registry outages.
    last_good: Cache<RegistrableDomain, Answer>,
    /// Revision of the most recent write to each domain, kept as long as an answer
    /// can live, so an answer read before that write is recognised and dropped.
    recent_writes: Cache<RegistrableDomain, i64>,
}

impl DecisionCache {
    pub fn new(
        registry: Arc<dyn Registry>,
        metrics: Arc<Metrics>,
        settings: CacheSettings,
    ) -> DecisionCache {
        let longest = settings
            .ttl
            .max(settings.negative_ttl)
            .max(Duration::from_secs(1));
        DecisionCache {
            registry,
            metrics,
            answers: Cache::builder()
                .max_capacity(settings.max_entries)
                .expire_after(AnswerExpiry { settings })
                .build(),
            last_good: Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(settings.stale_if_error.max(Duration::from_millis(1)))
                .build(),
            recent_writes: Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(longest * 2)
                .build(),
        }
    }

    /// The registry's answer for `domain`, from the cache when fresh.
    pub async fn lookup(&self, domain: &RegistrableDomain) -> Result<Answer, Arc<RegistryError>> {
        if let Some(answer) = self.answers.get(domain).await {
            if self.is_current(domain, &answer).await {
                self.metrics
                    .cache_lookups
                    .with_label_values(&[if answer.stale { "stale" } else { "hit" }])
                    .inc();
                return Ok(answer);
            }
            self.answers.invalidate(domain).await;
        }
        let loaded_here = AtomicBool::new(false);
        let result = self
            .answers
            .try_get_with(domain.clone(), async {
                loaded_here.store(true, Ordering::Relaxed);
                self.load(domain).await
            })
            .await;
        let result_label = match (&result, loaded_here.load(Ordering::Relaxed)) {
            (Ok(answer), _) if answer.stale => "stale",
            (_, true) => "miss",
            (_, false) => "coalesced",
        };
        self.metrics
            .cache_lookups
            .with_label_values(&[result_label])
            .inc();
        result
    }

    async fn is_current(&self, domain: &RegistrableDomain, answer: &Answer) -> bool {
        match self.recent_writes.get(domain).await {
            Some(write_revision) => answer.revision >= write_revision,
            None => true,
        }
    }

    async fn load(&self, domain: &RegistrableDomain) -> Result<Answer, RegistryError> {
        let started = Instant::now();
        let result = self.registry.lookup(domain).await;
        self.metrics
            .registry_lookup_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(lookup) => {
                let answer = Answer {
                    filing: lookup.filing.as_ref().map(|f| Arc::new(FilingFacts::of(f))),
                    revision: lookup.revision,
                    stale: false,
                };
                self.metrics
                    .registry_revision
                    .set(self.metrics.registry_revision.get().max(lookup.revision));
                self.last_good.insert(domain.clone(), answer.clone()).await;
                Ok(answer)
            }
            Err(error) => {
                self.metrics.registry_errors.inc();
                tracing::warn!(%error, "registry lookup failed");
                match self.last_good.get(domain).await {
                    Some(good) => Ok(Answer {
                        stale: true,
                        ..good
                    }),
                    None => Err(error),
                }
            }
        }
    }

    /// Forget `domain` after a write at `revision`, so the next request reads the
    /// registry (and nothing read before the write is served again).
    pub async fn invalidate(&self, domain: &RegistrableDomain, revision: i64) {
        self.recent_writes.insert(domain.clone(), revision).await;
        self.answers.invalidate(domain).await;
        self.last_good.invalidate(domain).await;
    }

    /// Forget everything (after a reconnect to a shared registry).
    pub fn invalidate_all(&self) {
        self.answers.invalidate_all();
        self.last_good.invalidate_all();
    }

    pub fn entry_count(&self) -> u64 {
        self.answers.entry_count()
    }
}
