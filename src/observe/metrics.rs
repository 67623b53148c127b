//! Typed metric handles, registered once. Labels are bounded enumerations (decision,
//! reason, result, pool, kind, status): no label ever holds a host name, so a flood of
//! random hosts cannot grow the series count. The standard `process_*` metrics come
//! from `process` (read from `/proc/self` at scrape time).

mod process;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::filing::Status;
use crate::model::reason::Reason;

/// Request duration buckets: 100 µs to 10 s.
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub const DECISIONS: [&str; 3] = ["allow", "block", "would_block"];
/// `unfiled`: answered from the filed-domain index, without the cache or registry.
pub const CACHE_RESULTS: [&str; 5] = ["hit", "miss", "coalesced", "stale", "unfiled"];
pub const POOLS: [&str; 2] = ["storefront", "corporate_site"];
pub const UPSTREAM_ERROR_KINDS: [&str; 5] = [
    "connect",
    "timeout",
    "reset",
    "status_5xx",
    "unasked_switch",
];
/// `ok`: a full handshake admitted; `resumed`: a resumption (ticket or session ID)
/// admitted; the rest are refusals and failures.
pub const TLS_RESULTS: [&str; 7] = [
    "ok",
    "resumed",
    "refused_unfiled",
    "refused_no_sni",
    "refused_no_cert",
    "error",
    "acme_challenge",
];
/// How an ACME order ended: a certificate, a failure (the name backs off), or not
/// placed because `acme.max_orders_per_hour` was used up.
pub const ACME_ORDER_RESULTS: [&str; 3] = ["issued", "failed", "rate_limited"];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: Histogram,
    pub cache_lookups: IntCounterVec,
    pub cache_entries: IntGauge,
    pub filed_domains: IntGauge,
    pub registry_errors: IntCounter,
    pub registry_lookup_duration: Histogram,
    pub upstream_errors: IntCounterVec,
    pub upstream_duration: HistogramVec,
    /// Servers each pool passes over after a failed connect (set at scrape time).
    pub upstream_servers_down: IntGaugeVec,
    pub tls_handshakes: IntCounterVec,
    pub filings: IntGaugeVec,
    pub connections_active: IntGauge,
    pub registry_revision: IntGauge,
    pub build_info: IntGaugeVec,
    /// Filings in `initial_review` for more than one working day (see `working_days`).
    pub filings_overdue_initial_review: IntGauge,
    /// Filings whose stored document this node cannot read; their domains are
    /// answered `not_filed` (see `gate::filed_domains`).
    pub registry_unreadable_filings: IntGauge,
    /// Admin API credentials that matched no token (see `admin::throttle`).
    pub admin_auth_failures: IntCounter,
    pub acme_orders: IntCounterVec,
    /// Certificates obtained through ACME and still valid.
    pub acme_certificates: IntGauge,
    /// Unix time at which the first of them expires (0: none).
    pub acme_certificate_expiry: IntGauge,
}

#[derive(Debug, thiserror::Error)]
#[error("metric registration failed: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let metrics = Metrics {
            requests: counters(
                "icpgate_requests_total",
                "Requests by gate decision and reason.",
                &["decision", "reason"],
            )?,
            request_duration: histogram(
                "icpgate_request_duration_seconds",
                "Time from request head to response head.",
            )?,
            cache_lookups: counters(
                "icpgate_cache_lookups_total",
                "Decision cache lookups by result.",
                &["result"],
            )?,
            cache_entries: gauge("icpgate_cache_entries", "Entries in the decision cache.")?,
            filed_domains: gauge(
                "icpgate_filed_domains",
                "Registrable domains in this node's filed-domain index (any status).",
            )?,
            registry_errors: counter("icpgate_registry_errors_total", "Failed registry lookups.")?,
            registry_lookup_duration: histogram(
                "icpgate_registry_lookup_duration_seconds",
                "Registry lookups on cache misses.",
            )?,
            upstream_errors: counters(
                "icpgate_upstream_errors_total",
                "Upstream failures by pool and kind.",
                &["pool", "kind"],
            )?,
            upstream_duration: HistogramVec::new(
                duration_opts("icpgate_upstream_duration_seconds", "Upstream response time by pool."),
                &["pool"],
            )?,
            upstream_servers_down: gauges(
                "icpgate_upstream_servers_down",
                "Upstream servers passed over after a failed connect, by pool.",
                &["pool"],
            )?,
            tls_handshakes: counters(
                "icpgate_tls_handshakes_total",
                "TLS handshakes by result.",
                &["result"],
            )?,
            filings: gauges("icpgate_filings", "Filings by status.", &["status"])?,
            connections_active: gauge("icpgate_connections_active", "Open client connections.")?,
            registry_revision: gauge(
                "icpgate_registry_revision",
                "Registry revision this node has seen.",
            )?,
            build_info: gauges(
                "icpgate_build_info",
                "Build information; always 1.",
                &["version"],
            )?,
            filings_overdue_initial_review: gauge(
                "icpgate_filings_overdue_initial_review",
                "Filings waiting in initial review for more than one working day (Mon-Fri, China time).",
            )?,
            registry_unreadable_filings: gauge(
                "icpgate_registry_unreadable_filings",
                "Filings whose stored document this node cannot read; their domains are answered not_filed.",
            )?,
            admin_auth_failures: counter(
                "icpgate_admin_auth_failures_total",
                "Admin API requests whose credentials matched no token.",
            )?,
            acme_orders: counters(
                "icpgate_acme_orders_total",
                "ACME certificate orders by result.",
                &["result"],
            )?,
            acme_certificates: gauge(
                "icpgate_acme_certificates",
                "Certificates obtained through ACME and not expired.",
            )?,
            acme_certificate_expiry: gauge(
                "icpgate_acme_certificate_expiry_seconds",
                "Unix time at which the first ACME certificate expires; 0 when there is none.",
            )?,
            registry: Registry::new(),
        };
        metrics.register_all()?;
        metrics.touch_label_sets();
        Ok(metrics)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.requests.clone()))?;
        r.register(Box::new(self.request_duration.clone()))?;
        r.register(Box::new(self.cache_lookups.clone()))?;
        r.register(Box::new(self.cache_entries.clone()))?;
        r.register(Box::new(self.filed_domains.clone()))?;
        r.register(Box::new(self.registry_errors.clone()))?;
        r.register(Box::new(self.registry_lookup_duration.clone()))?;
        r.register(Box::new(self.upstream_errors.clone()))?;
        r.register(Box::new(self.upstream_duration.clone()))?;
        r.register(Box::new(self.upstream_servers_down.clone()))?;
        r.register(Box::new(self.tls_handshakes.clone()))?;
        r.register(Box::new(self.filings.clone()))?;
        r.register(Box::new(self.connections_active.clone()))?;
        r.register(Box::new(self.registry_revision.clone()))?;
        r.register(Box::new(self.build_info.clone()))?;
        r.register(Box::new(self.filings_overdue_initial_review.clone()))?;
        r.register(Box::new(self.registry_unreadable_filings.clone()))?;
        r.register(Box::new(self.admin_auth_failures.clone()))?;
        r.register(Box::new(self.acme_orders.clone()))?;
        r.register(Box::new(self.acme_certificates.clone()))?;
        r.register(Box::new(self.acme_certificate_expiry.clone()))?;
        r.register(Box::new(process::ProcessCollector::new()?))?;
        Ok(())
    }

    /// Create every bounded label set at zero, so dashboards see series (and `rate()`
    /// works) before the first event of each kind.
    fn touch_label_sets(&self) {
        for reason in Reason::ALL {
            let decisions: &[&str] = match reason {
                Reason::Filed => &["allow"],
                Reason::RegistryUnavailable => &["allow", "block", "would_block"],
                _ => &["block", "would_block"],
            };
            for decision in decisions {
                self.requests
                    .with_label_values(&[decision, reason.as_str()]);
            }
        }
        for result in CACHE_RESULTS {
            self.cache_lookups.with_label_values(&[result]);
        }
        for pool in POOLS {
            self.upstream_duration.with_label_values(&[pool]);
            self.upstream_servers_down.with_label_values(&[pool]);
            for kind in UPSTREAM_ERROR_KINDS {
                self.upstream_errors.with_label_values(&[pool, kind]);
            }
        }
        for result in TLS_RESULTS {
            self.tls_handshakes.with_label_values(&[result]);
        }
        for result in ACME_ORDER_RESULTS {
            self.acme_orders.with_label_values(&[result]);
        }
        for status in Status::ALL {
            self.filings.with_label_values(&[status.as_str()]);
        }
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
    }

    /// Count one request by its outcome.
    pub fn count_request(&self, decision: &str, reason: Reason) {
        self.requests
            .with_label_values(&[decision, reason.as_str()])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which we never build.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

fn counter(name: &str, help: &str) -> prometheus::Result<IntCounter> {
    IntCounter::new(name, help)
}

fn counters(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

fn gauge(name: &str, help: &str) -> prometheus::Result<IntGauge> {
    IntGauge::new(name, help)
}

fn gauges(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    IntGaugeVec::new(Opts::new(name, help), labels)
}

/// A histogram of durations in seconds, over [`DURATION_BUCKETS`].
fn duration_opts(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec())
}

fn histogram(name: &str, help: &str) -> prometheus::Result<Histogram> {
    Histogram::with_opts(duration_opts(name, help))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_metric_is_exported_before_any_traffic() {
        let text = Metrics::new().map(|m| m.render()).unwrap_or_default();
        for name in [
            "icpgate_requests_total",
            "icpgate_request_duration_seconds",
            "icpgate_cache_lookups_total",
            "icpgate_registry_errors_total",
            "icpgate_upstream_errors_total",
            "icpgate_upstream_servers_down",
            "icpgate_tls_handshakes_total",
            "icpgate_filings",
            "icpgate_connections_active",
            "icpgate_registry_revision",
            "icpgate_filings_overdue_initial_review",
            "icpgate_admin_auth_failures_total",
            "icpgate_build_info",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(&format!("\n{name}")), "{name} missing");
        }
    }
}
