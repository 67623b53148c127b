//! Whether the CA still stands behind a served certificate, through ACME Renewal
//! Information (RFC 9773, the directory's `renewalInfo`): a CA that revoked a
//! certificate, or is about to, suggests a renewal window that has already ended.
//! Such a certificate is treated as absent: it is no longer served, and
//! [`Acme::renew_due`] orders a new one while the name's filing is approved (an
//! ended filing's name is refused at the handshake anyway). A CA whose directory
//! has no `renewalInfo` is not asked again; its revocations go unseen.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use instant_acme::CertificateIdentifier;

use super::{Acme, Issued};
use crate::model::host::HostName;

/// The longest a certificate goes unchecked, whatever Retry-After the CA sends.
const CHECK_AT_LEAST_EVERY: Duration = Duration::from_secs(6 * 3600);

/// When to ask again after the CA could not be asked.
const CHECK_AFTER_FAILURE: Duration = Duration::from_secs(300);

/// Whether a suggested renewal window ending at `end` asks for a replacement
/// before anything else: its end has passed (RFC 9773 §4.2: renew at once).
pub(super) fn window_ended(end: SystemTime, now: SystemTime) -> bool {
    end <= now
}

impl Acme {
    /// Ask the CA about each served certificate due for a check; a certificate
    /// whose suggested window has ended stops being served. Returns those names.
    pub(super) async fn drop_withdrawn(&self) -> Vec<HostName> {
        if self.ari_unsupported.load(Ordering::Acquire) {
            return Vec::new();
        }
        let due = self.status_due(Instant::now());
        if due.is_empty() {
            return Vec::new();
        }
        let account = match self.account().await {
            Ok(account) => account,
            Err(error) => {
                tracing::warn!(%error, "ACME account unavailable: certificate status not checked");
                for (_, issued) in &due {
                    issued.check_status_in(CHECK_AFTER_FAILURE);
                }
                return Vec::new();
            }
        };
        let mut dropped = Vec::new();
        for (name, issued) in due {
            let Ok(id) = CertificateIdentifier::try_from(&issued.leaf) else {
                tracing::debug!(name = %name.as_str(), "certificate names no authority key: status not checked");
                issued.check_status_in(CHECK_AT_LEAST_EVERY);
                continue;
            };
            match account.renewal_info(&id).await {
                Ok((info, retry_after)) => {
                    issued.check_status_in(retry_after.min(CHECK_AT_LEAST_EVERY));
                    let end = SystemTime::from(info.suggested_window.end);
                    if window_ended(end, SystemTime::now()) && self.forget(&name, &issued) {
                        tracing::warn!(
                            name = %name.as_str(),
                            explanation = info.explanation_url.as_deref().unwrap_or(""),
                            "the CA asks to replace this certificate now (revoked, or about to be): no longer served"
                        );
                        dropped.push(name);
                    }
                }
                Err(instant_acme::Error::Unsupported(_)) => {
                    tracing::info!(
                        "the ACME CA offers no renewal information: revocations are not checked"
                    );
                    self.ari_unsupported.store(true, Ordering::Release);
                    break;
                }
                Err(error) => {
                    tracing::warn!(name = %name.as_str(), %error, "certificate status not read");
                    issued.check_status_in(CHECK_AFTER_FAILURE);
                }
            }
        }
        self.update_gauges();
        dropped
    }

    /// The served certificates whose status is due for a check at `now`.
    fn status_due(&self, now: Instant) -> Vec<(HostName, Arc<Issued>)> {
        let Ok(issued) = self.issued.lock() else {
            return Vec::new();
        };
        issued
            .iter()
            .filter(|(_, cert)| cert.status_due(now))
            .map(|(name, cert)| (name.clone(), Arc::clone(cert)))
            .collect()
    }

    /// Stop serving `name`'s certificate, if it is still `issued` (not one that
    /// replaced it meanwhile).
    fn forget(&self, name: &HostName, issued: &Arc<Issued>) -> bool {
        let Ok(mut map) = self.issued.lock() else {
            return false;
        };
        if !map.get(name).is_some_and(|now| Arc::ptr_eq(now, issued)) {
            return false;
        }
        map.remove(name);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_window_that_has_ended_withdraws_a_certificate() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        // (window end relative to now, withdrawn)
        let cases = [
            (now - hour, true),  // ended an hour ago: revoked, or about to be
            (now, true),         // ends this instant
            (now + hour, false), // still open: renew within it, keep serving
        ];
        for (end, withdrawn) in cases {
            assert_eq!(window_ended(end, now), withdrawn, "{end:?}");
        }
    }
}
