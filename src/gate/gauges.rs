//! The registry's gauges: filings by status, the revision, and the initial reviews
//! past their one-working-day promise. Read from the registry on a timer (which
//! also sees other nodes' writes and reviews growing overdue); an admin write in
//! this process moves them by its own change only, so its cost does not grow with
//! the registry. The overdue reviews are one indexed count of the filings that
//! entered initial review by `working_days::overdue_cutoff` (not a read of each).

use crate::model::filing::{Filing, Status};
use crate::model::working_days;
use crate::observe::metrics::Metrics;
use crate::registry::Registry;

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
    let now = working_days::unix_seconds(std::time::SystemTime::now());
    let cutoff = working_days::overdue_cutoff_ms(now);
    match registry.initial_reviews_entered_by(cutoff).await {
        Ok(overdue) => metrics
            .filings_overdue_initial_review
            .set(i64::try_from(overdue).unwrap_or(i64::MAX)),
        Err(error) => tracing::warn!(%error, "cannot count overdue initial reviews"),
    }
}

/// Move the gauges by one write of this process: `filing` as stored at `revision`,
/// in `before` until then (`None`: submitted by this write); the revision gauge
/// only when the revision could be read.
pub fn note_write(
    metrics: &Metrics,
    filing: &Filing,
    before: Option<Status>,
    revision: Option<i64>,
) {
    let status = |s: Status| metrics.filings.with_label_values(&[s.as_str()]);
    if before != Some(filing.status) {
        if let Some(before) = before {
            status(before).dec();
        }
        status(filing.status).inc();
    }
    if before == Some(Status::InitialReview)
        && filing.status != Status::InitialReview
        && was_overdue(filing)
    {
        metrics.filings_overdue_initial_review.dec();
    }
    if let Some(revision) = revision {
        metrics.registry_revision.set(revision);
    }
}

/// Whether `filing`, which its last step took out of initial review, had waited
/// there for more than one working day (since the step before that put it there).
fn was_overdue(filing: &Filing) -> bool {
    let Some((step, earlier)) = filing.history.split_last() else {
        return false;
    };
    let now = working_days::parse_rfc3339(&step.at)
        .unwrap_or_else(|| working_days::unix_seconds(std::time::SystemTime::now()));
    earlier
        .iter()
        .rev()
        .find(|entry| entry.to == Status::InitialReview)
        .and_then(|entry| working_days::parse_rfc3339(&entry.at))
        .is_some_and(|since| working_days::more_than_one_working_day(since, now))
}
