//! The gate state the data plane, the TLS handshake, the admin API and the change
//! feed share: the decision cache, the filed-domain index, and the counters a
//! decision feeds. `verdict` is the whole rule for one registrable domain;
//! `note_writes` is how every write, local or remote, reaches it.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::gate::decision::{decide, FilingFacts, HostReading, Reason, RulePolicy};
use crate::gate::decision_cache::DecisionCache;
use crate::gate::filed_domains::FiledDomains;
use crate::model::host::{Authority, HostError, HostName, RegistrableDomain};
use crate::observe::block_rate::BlockRate;
use crate::observe::blocked_hosts::{BlockedHosts, DEFAULT_CAPACITY};
use crate::observe::metrics::Metrics;
use crate::registry::Change;

/// The result of the gate for one host.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub reason: Reason,
    pub filing: Option<Arc<FilingFacts>>,
}

impl Verdict {
    fn unfiled() -> Verdict {
        Verdict::refused(Reason::NotFiled)
    }

    /// A refusal decided without a filing.
    pub fn refused(reason: Reason) -> Verdict {
        Verdict {
            reason,
            filing: None,
        }
    }
}

/// A raw host (`Host`, `:authority`, a query parameter) and what the gate makes of
/// it: an address or an unusable name is refused before any lookup, a name gets
/// the verdict for its registrable domain.
#[derive(Debug)]
pub struct HostVerdict {
    pub authority: Result<Authority, HostError>,
    pub domain: Option<RegistrableDomain>,
    pub verdict: Verdict,
}

pub struct GateState {
    /// Rebuilt and swapped when a reload changes `[cache]`; read it with `cache()`.
    cache: ArcSwap<DecisionCache>,
    pub metrics: Arc<Metrics>,
    /// The registrable domains blocked most often, for `GET /v1/blocked-hosts`.
    pub blocked_hosts: Arc<BlockedHosts>,
    /// Blocks per minute by reason over the last hour, for the console's traffic page.
    pub block_rate: Arc<BlockRate>,
    /// Every domain with a filing: anything else is `not_filed` without a lookup.
    pub filed: Arc<FiledDomains>,
}

impl GateState {
    pub fn new(
        cache: Arc<DecisionCache>,
        filed: Arc<FiledDomains>,
        metrics: Arc<Metrics>,
    ) -> GateState {
        GateState {
            cache: ArcSwap::new(cache),
            metrics,
            blocked_hosts: Arc::new(BlockedHosts::new(DEFAULT_CAPACITY)),
            block_rate: Arc::new(BlockRate::default()),
            filed,
        }
    }

    /// The gate rule for a registrable domain (None: the host is a public suffix).
    pub async fn verdict(&self, domain: Option<&RegistrableDomain>, policy: RulePolicy) -> Verdict {
        let Some(domain) = domain else {
            return Verdict::unfiled();
        };
        if !self.filed.contains(domain) {
            self.metrics
                .cache_lookups
                .with_label_values(&["unfiled"])
                .inc();
            return Verdict::unfiled();
        }
        match self.cache().lookup(domain).await {
            Ok(answer) => Verdict {
                reason: decide(answer.filing.as_deref(), policy),
                filing: answer.filing,
            },
            Err(_) => Verdict {
                reason: Reason::RegistryUnavailable,
                filing: None,
            },
        }
    }

    /// The verdict for a raw host, read by [`HostReading`]: the one reading of a
    /// host the data plane and the admin API's decision endpoint share.
    pub async fn verdict_for_host(&self, raw: &str, policy: RulePolicy) -> HostVerdict {
        let reading = HostReading::of(raw);
        let verdict = match reading.refusal() {
            Some(reason) => Verdict::refused(reason),
            None => self.verdict(reading.domain.as_ref(), policy).await,
        };
        HostVerdict {
            authority: reading.authority,
            domain: reading.domain,
            verdict,
        }
    }

    /// Writes were made (each at its revision, touching its domains): know their
    /// domains as filed — in one swap of the index however many there are — then
    /// drop their cached answers, so the gate enforces the writes at once.
    pub async fn note_writes(&self, changes: &[Change]) {
        self.filed.insert_all(
            changes
                .iter()
                .flat_map(|c| c.domains.iter().map(String::as_str)),
        );
        let cache = self.cache();
        for change in changes {
            for domain in &change.domains {
                if let Some(domain) = HostName::parse(domain)
                    .ok()
                    .and_then(|h| h.registrable_domain())
                {
                    cache.invalidate(&domain, change.revision).await;
                }
            }
        }
    }

    /// The decision cache in force (a reload that changes `[cache]` replaces it).
    pub fn cache(&self) -> Arc<DecisionCache> {
        self.cache.load_full()
    }

    /// Swap in a cache built with new settings; lookups in flight finish on the old one.
    pub fn replace_cache(&self, cache: Arc<DecisionCache>) {
        self.cache.store(cache);
    }
}
