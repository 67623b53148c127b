//! Keeps this node's decision cache in step with writes made anywhere — another
//! node on the same PostgreSQL registry, or `icpgate registry import` on the same
//! SQLite file. Notifications (PostgreSQL NOTIFY) only wake the follower; what it
//! applies comes from the registry's revision, so a lost notification or a
//! reconnect delays a change by at most one poll interval and never loses it.
//!
//! A change to a filing whose stored document does not read (written behind the
//! registry's back, or by a newer release this one cannot read) does not stall the
//! feed: it is named in an error log and `icpgate_registry_unreadable_filings`, its
//! domains are answered `not_filed` (fail closed, `FiledDomains::unreadable`) until
//! a later change of that filing reads, and the changes after it apply as usual.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::gate::GateState;
use crate::observe::metrics::Metrics;
use crate::registry::Registry;

/// How often the registry is asked for changes when nothing woke the follower.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Follow the registry from `revision` until `stop` changes.
/// The cache is taken from `gate` on every catch-up: a reload may have replaced it.
pub async fn follow(
    registry: Arc<dyn Registry>,
    gate: Arc<GateState>,
    metrics: Arc<Metrics>,
    mut revision: i64,
    mut stop: watch::Receiver<bool>,
) {
    let signal = registry.change_signal();
    loop {
        let woken = async {
            match &signal {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = woken => {}
        }
        revision = catch_up(registry.as_ref(), &gate, revision).await;
        metrics
            .registry_revision
            .set(metrics.registry_revision.get().max(revision));
    }
}

/// Apply every change after `revision`; returns the revision reached.
pub async fn catch_up(registry: &dyn Registry, gate: &GateState, mut revision: i64) -> i64 {
    loop {
        let changes = match registry.changes_since(revision).await {
            Ok(changes) => changes,
            Err(error) => {
                tracing::warn!(%error, revision, "cannot read registry changes; will retry");
                return revision;
            }
        };
        let Some(last) = changes.last().map(|c| c.revision) else {
            return revision;
        };
        for change in &changes {
            match &change.unreadable {
                Some(error) => {
                    tracing::error!(
                        filing_id = change.filing_id,
                        revision = change.revision,
                        domains = %change.domains.join(","),
                        %error,
                        "stored filing is unreadable: its domains are answered not_filed \
                         until it is rewritten"
                    );
                    let domains = change.domains.iter().map(String::as_str);
                    gate.filed.unreadable(change.filing_id, domains);
                }
                None => gate.filed.readable(change.filing_id),
            }
        }
        let unreadable = gate.filed.unreadable_filings();
        gate.metrics
            .registry_unreadable_filings
            .set(i64::try_from(unreadable).unwrap_or(i64::MAX));
        gate.note_writes(&changes).await;
        tracing::debug!(
            from = revision,
            to = last,
            count = changes.len(),
            "registry changes applied"
        );
        revision = last;
    }
}
