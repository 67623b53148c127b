//! Renewal: certificates are renewed `acme.renew_before` ahead of expiry, later by
//! a per-name jitter, in the background, and only while the name's filing is
//! approved; an ended filing's certificate runs out (and is refused at the
//! handshake long before, like any name of an ended filing). Each check first asks
//! the CA which certificates it withdrew ([`super::status`]) and orders those anew.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{Acme, Need};
use crate::gate::decision::Reason;
use crate::model::host::HostName;

/// How often renewal looks for certificates due, at most: also ten times per
/// `renew_before`, so a short window (short-lived certificates) is not missed.
const RENEW_CHECK: Duration = Duration::from_secs(60);

impl Acme {
    /// Renew what is due, every [`RENEW_CHECK`] or tenth of `renew_before`, until `stop`.
    pub async fn renew_forever(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let every = RENEW_CHECK
            .min(self.settings.renew_before / 10)
            .max(Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
            }
            self.renew_due().await;
        }
    }

    /// Place renewal orders for the certificates due whose filing is still approved,
    /// and new orders for those the CA withdrew ([`super::status`]).
    pub async fn renew_due(self: &Arc<Self>) {
        for name in self.drop_withdrawn().await {
            if !self.still_filed(&name).await {
                tracing::debug!(name = %name.as_str(), "filing no longer approved: withdrawn certificate not replaced");
                continue;
            }
            if let Err(error) = self.start(&name, Need::Missing) {
                tracing::debug!(name = %name.as_str(), %error, "replacement not placed now");
            }
        }
        self.update_gauges();
        let now = SystemTime::now();
        let due: Vec<HostName> = match self.issued.lock() {
            Ok(issued) => issued
                .iter()
                .filter(|(name, cert)| {
                    now >= renew_at(name, cert.not_after, self.settings.renew_before)
                })
                .map(|(name, _)| name.clone())
                .collect(),
            Err(_) => return,
        };
        for name in due {
            if !self.still_filed(&name).await {
                tracing::debug!(name = %name.as_str(), "filing no longer approved: certificate not renewed");
                continue;
            }
            if let Err(error) = self.start(&name, Need::Renewal) {
                tracing::debug!(name = %name.as_str(), %error, "renewal not placed now");
            }
        }
    }

    /// Whether the gate still serves `name` as filed (the same rule as handshakes).
    async fn still_filed(&self, name: &HostName) -> bool {
        let domain = name.registrable_domain();
        let policy = self.gate.current().rule_policy();
        let verdict = self.gate.state.verdict(domain.as_ref(), policy).await;
        verdict.reason == Reason::Filed
    }
}

/// When `name`'s certificate is due: `renew_before` ahead of expiry, later by a
/// jitter fixed per name (up to a tenth of `renew_before`), so names issued
/// together do not renew together.
pub(super) fn renew_at(
    name: &HostName,
    not_after: SystemTime,
    renew_before: Duration,
) -> SystemTime {
    let mut hasher = DefaultHasher::new();
    name.hash(&mut hasher);
    let jitter = (renew_before / 10).mul_f64((hasher.finish() % 1000) as f64 / 1000.0);
    not_after - renew_before + jitter
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn renewal_is_due_renew_before_expiry_plus_a_bounded_jitter() {
        let not_after = UNIX_EPOCH + Duration::from_secs(90 * 86_400);
        let before = Duration::from_secs(30 * 86_400);
        for name in ["a.cn", "b.cn", "shop.example.com", "xn--fiqs8s.cn"] {
            let due = renew_at(&HostName::parse(name).expect("host"), not_after, before);
            assert!(due >= not_after - before, "{name}");
            assert!(due <= not_after - before + before / 10, "{name}");
        }
    }
}
