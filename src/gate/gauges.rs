//! The registry's gauges: filings by status, the revision, and the initial reviews
//! past their one-working-day promise, read from the registry on a timer and after
//! each admin write.

use crate::model::filing::Status;
use crate::model::working_days;
use crate::observe::metrics::Metrics;
use crate::registry::{ListFilter, Registry};

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
