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

use crate::gate::decision::FilingFacts;
use crate::model::filing::Status;
use crate::model::host::RegistrableDomain;
use crate::observe::metrics::Metrics;
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

    pub fn entry_count(&self) -> u64 {
        self.answers.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::filing::Action;
    use crate::registry::jsonl;
    use crate::registry::memory::MemoryRegistry;

    /// A registry holding one approved filing for example.com, whose lookups take
    /// `delay` after they read it.
    async fn registry(delay: Duration) -> Arc<MemoryRegistry> {
        let registry = Arc::new(MemoryRegistry::new());
        let records = jsonl::parse(
            r#"{"id":1,"product":"storefront","status":"approved","domains":["example.com"],"icp_number":"浙ICP备12345678号-1"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        registry
            .import(records)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        registry.set_lookup_delay(delay);
        registry
    }

    fn cache(
        registry: Arc<MemoryRegistry>,
        ttl: Duration,
        stale_if_error: Duration,
    ) -> (DecisionCache, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
        let settings = CacheSettings {
            ttl,
            negative_ttl: ttl,
            stale_if_error,
            max_entries: 1000,
        };
        (
            DecisionCache::new(registry, Arc::clone(&metrics), settings),
            metrics,
        )
    }

    fn domain() -> RegistrableDomain {
        crate::model::host::HostName::parse("example.com")
            .ok()
            .and_then(|h| h.registrable_domain())
            .unwrap_or_else(|| panic!("example.com has a registrable domain"))
    }

    fn lookups_labelled(metrics: &Metrics, result: &str) -> u64 {
        metrics.cache_lookups.with_label_values(&[result]).get()
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_registry_lookup() {
        let registry = registry(Duration::from_millis(100)).await;
        let (cache, metrics) = cache(
            Arc::clone(&registry),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let cache = Arc::new(cache);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let cache = Arc::clone(&cache);
                tokio::spawn(async move { cache.lookup(&domain()).await.is_ok() })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap_or(false));
        }
        assert_eq!(registry.lookups(), 1);
        assert_eq!(lookups_labelled(&metrics, "miss"), 1);
        assert_eq!(lookups_labelled(&metrics, "coalesced"), 49);
        assert!(cache.lookup(&domain()).await.is_ok());
        assert_eq!(lookups_labelled(&metrics, "hit"), 1);
        assert_eq!(registry.lookups(), 1, "a hit never reads the registry");
    }

    #[tokio::test]
    async fn answers_expire_after_their_ttl() {
        let registry = registry(Duration::ZERO).await;
        let (cache, _) = cache(
            Arc::clone(&registry),
            Duration::from_millis(50),
            Duration::from_secs(60),
        );
        assert!(cache.lookup(&domain()).await.is_ok());
        assert!(cache.lookup(&domain()).await.is_ok());
        assert_eq!(registry.lookups(), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(cache.lookup(&domain()).await.is_ok());
        assert_eq!(registry.lookups(), 2, "an expired answer is read again");
    }

    #[tokio::test]
    async fn a_registry_outage_serves_the_last_good_answer_then_fails() {
        let registry = registry(Duration::ZERO).await;
        let (cache, metrics) = cache(
            Arc::clone(&registry),
            Duration::from_millis(30),
            Duration::from_millis(400),
        );
        assert!(cache.lookup(&domain()).await.is_ok());
        registry.set_down(true);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let stale = cache.lookup(&domain()).await.map(|a| a.stale);
        assert_eq!(
            stale.ok(),
            Some(true),
            "stale-if-error serves the last good answer"
        );
        assert!(lookups_labelled(&metrics, "stale") >= 1);
        assert!(metrics.registry_errors.get() >= 1);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            cache.lookup(&domain()).await.is_err(),
            "past stale_if_error the outage shows"
        );
    }

    #[tokio::test]
    async fn an_answer_read_before_a_write_is_never_served_after_it() {
        let registry = registry(Duration::from_millis(100)).await;
        let (cache, _) = cache(
            Arc::clone(&registry),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let cache = Arc::new(cache);
        // A lookup starts and reads the old state (approved)...
        let in_flight = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.lookup(&domain()).await.ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // ...while a write revokes the filing and invalidates at its revision.
        let abandon = Action::Abandon { reason: None };
        registry
            .transition(1, abandon, "tester")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let revision = registry.revision().await.unwrap_or_else(|e| panic!("{e}"));
        cache.invalidate(&domain(), revision).await;
        let _ = in_flight.await;
        let after = cache
            .lookup(&domain())
            .await
            .ok()
            .and_then(|a| a.filing.map(|f| f.status));
        assert_eq!(
            after,
            Some(Status::Abandoned),
            "the pre-write answer must not be served"
        );
    }
}
