//! Filing-change notifications (`[notify] url, secret`): the seed announces review
//! results to the owner by SMS and e-mail; icpgate posts each change to a webhook
//! that such a sender can subscribe to.
//!
//! Contract:
//! - every submission and transition is written to the registry's durable outbox in
//!   the same transaction as the change (`registry::Outbox`), so an acknowledged
//!   change always has its notification, across crashes and restarts;
//! - [`Notifier::run`] delivers pending events oldest first, as
//!   `POST <url>` with a JSON body ([`crate::registry::outbox_payload`]: ids, domains, from, to, actor,
//!   reason, at, icp_number — never personal data), `X-Icpgate-Event: <id>`,
//!   `X-Icpgate-Timestamp: <Unix seconds of this attempt>` and, with a secret,
//!   `X-Icpgate-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`: the
//!   timestamp is signed with the body, so a receiver refuses a replayed delivery by
//!   its age (see docs/operations.md for a verification example);
//! - the events of one filing are delivered in order: while one of them is not
//!   delivered, the later events of the same filing wait (`Outbox::due` holds them
//!   back); a failing event never holds back other filings' events;
//! - a 2xx answer marks the event delivered; anything else (error, timeout, non-2xx)
//!   schedules a retry after an exponential backoff (1 s, 2 s, 4 s, … capped at
//!   5 min). Delivery runs on its own task: a failing webhook never blocks a change.
//! - Delivery is at least once: a receiver deduplicates by `event_id`.
//!
//! Time: due times and backoffs are read from the notifier's [`Clock`] (the wall
//! clock unless [`Notifier::with_clock`] says otherwise), so a test can move an
//! hour of outage forward without waiting for it; a clock moved forward takes effect
//! when the notifier is next woken ([`Notifier::waker`]).
//!
//! `http://` and `https://` URLs are delivered; an `https://` receiver is verified
//! for the URL's host against the web PKI roots (webpki-roots) plus `notify.ca_file`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::edge::upstream::FailoverConnector;
use sha2::Sha256;
use tokio::sync::{watch, Notify};

use crate::registry::now_ms;
use crate::registry::{Outbox, OutboxEvent};

/// Events fetched per round.
const BATCH: usize = 32;
/// How long one delivery may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between two looks at the outbox when nothing wakes the notifier.
const IDLE_POLL: Duration = Duration::from_secs(30);
/// Delivered events are kept this long (for inspection), then deleted.
const KEEP_DELIVERED: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often delivered events past `KEEP_DELIVERED` are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The URL as `config::redact_url` shows it: no credentials.
    #[error("notify.url {0:?} is not a valid URL")]
    InvalidUrl(String),
    #[error("notify.url: cannot set up TLS: {0}")]
    Tls(String),
    #[error("webhook request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("webhook did not answer within {0:?}")]
    Timeout(Duration),
    #[error("webhook answered {0}")]
    Status(http::StatusCode),
    #[error("cannot build the webhook request: {0}")]
    Build(#[from] http::Error),
}

/// Exponential backoff between attempts: `base · 2^(attempts-1)`, at most `cap`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The wait after the `attempts`-th failed attempt (1-based).
    pub fn after(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `<timestamp>.<body>` under `secret`.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Unix milliseconds now: [`now_ms`] in production; a test moves one of its own.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Delivers the outbox to the webhook.
pub struct Notifier {
    outbox: Arc<dyn Outbox>,
    /// When "now" is for due times, backoffs and signatures.
    clock: Clock,
    url: Uri,
    secret: Option<String>,
    backoff: Backoff,
    client: Client<FailoverConnector, Full<Bytes>>,
    /// Woken after every write so new events go out at once.
    wake: Arc<Notify>,
}

impl Notifier {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        url: &str,
        secret: Option<String>,
        ca_file: Option<&std::path::Path>,
        backoff: Backoff,
    ) -> Result<Notifier, NotifyError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| NotifyError::InvalidUrl(crate::config::redact_url(url)))?;
        let (tls, default_port) = match uri.scheme_str() {
            Some("http") => (false, 80),
            Some("https") => (true, 443),
            _ => return Err(NotifyError::InvalidUrl(crate::config::redact_url(url))),
        };
        let host = uri
            .host()
            .ok_or_else(|| NotifyError::InvalidUrl(crate::config::redact_url(url)))?;
        let server = format!("{host}:{}", uri.port_u16().unwrap_or(default_port));
        let connector = FailoverConnector::single(server, tls, ca_file, ATTEMPT_TIMEOUT)
            .map_err(|e| NotifyError::Tls(e.to_string()))?;
        Ok(Notifier {
            outbox,
            clock: Arc::new(now_ms),
            url: uri,
            secret: secret.filter(|s| !s.is_empty()),
            backoff,
            client: Client::builder(TokioExecutor::new()).build(connector),
            wake: Arc::new(Notify::new()),
        })
    }

    /// Read "now" from `clock` instead of the wall clock.
    pub fn with_clock(mut self, clock: Clock) -> Notifier {
        self.clock = clock;
        self
    }

    fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// The handle that wakes the notifier (call `notify_one` after a write).
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Deliver until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut last_prune: Option<std::time::Instant> = None;
        loop {
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                self.prune().await;
                last_prune = Some(std::time::Instant::now());
            }
            self.deliver_due(&stop).await;
            let wait = self.until_next_due().await;
            tokio::select! {
                _ = stop.changed() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Delete events delivered more than `KEEP_DELIVERED` ago, so the outbox does not
    /// grow without bound.
    async fn prune(&self) {
        let keep = i64::try_from(KEEP_DELIVERED.as_millis()).unwrap_or(i64::MAX);
        match self
            .outbox
            .prune_delivered(self.now_ms().saturating_sub(keep))
            .await
        {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "pruned delivered notifications"),
            Err(error) => tracing::warn!(%error, "cannot prune the notification outbox"),
        }
    }

    /// How long until the next pending event is due (at most `IDLE_POLL`).
    async fn until_next_due(&self) -> Duration {
        match self.outbox.next_due().await {
            Ok(Some(at)) => {
                let ms = u64::try_from(at.saturating_sub(self.now_ms())).unwrap_or(0);
                Duration::from_millis(ms).min(IDLE_POLL)
            }
            Ok(None) => IDLE_POLL,
            Err(error) => {
                tracing::warn!(%error, "cannot read the notification outbox");
                Duration::from_secs(1)
            }
        }
    }

    /// One round: every due event, oldest first, until `stop` turns true.
    async fn deliver_due(&self, stop: &watch::Receiver<bool>) {
        let events = match self.outbox.due(self.now_ms(), BATCH).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, "cannot read the notification outbox");
                return;
            }
        };
        for event in events {
            if *stop.borrow() {
                return;
            }
            self.attempt(event).await;
        }
    }

    async fn attempt(&self, event: OutboxEvent) {
        let result = match tokio::time::timeout(ATTEMPT_TIMEOUT, self.post(&event)).await {
            Ok(result) => result,
            Err(_) => Err(NotifyError::Timeout(ATTEMPT_TIMEOUT)),
        };
        let recorded = match result {
            Ok(()) => self.outbox.delivered(event.id, self.now_ms()).await,
            Err(error) => {
                let wait = self.backoff.after(event.attempts.saturating_add(1));
                tracing::warn!(event_id = event.id, attempts = event.attempts + 1, retry_in = ?wait, %error, "webhook delivery failed");
                let next = self
                    .now_ms()
                    .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(0));
                self.outbox.failed(event.id, next, &error.to_string()).await
            }
        };
        if let Err(error) = recorded {
            tracing::warn!(event_id = event.id, %error, "cannot record a delivery attempt");
        }
    }

    async fn post(&self, event: &OutboxEvent) -> Result<(), NotifyError> {
        let body = Bytes::from(event.payload.clone());
        let timestamp = (self.now_ms() / 1000).to_string();
        let mut request = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-icpgate-event", event.id.to_string())
            .header("x-icpgate-timestamp", &timestamp);
        if let Some(secret) = &self.secret {
            let signed = signature(secret, &timestamp, &body);
            request = request.header("x-icpgate-signature", signed);
        }
        let response = self.client.request(request.body(Full::new(body))?).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(NotifyError::Status(response.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Backoff::default();
        let cases = [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (1000, 300)];
        for (attempts, secs) in cases {
            assert_eq!(b.after(attempts), Duration::from_secs(secs), "{attempts}");
        }
    }

    #[test]
    fn signature_covers_timestamp_dot_body() {
        // HMAC-SHA256 under "Jefe" (RFC 4231's key) of `1700000000.{"event_id":1}`,
        // computed independently (Python's hmac module).
        let body = br#"{"event_id":1}"#;
        assert_eq!(
            signature("Jefe", "1700000000", body),
            "sha256=9d3abad5c82ea4d81374f3ad06ef093cde50c100773e06f986faeec23f15de51"
        );
        // The same body at another time signs differently: a replay is caught.
        assert_ne!(
            signature("Jefe", "1700000001", body),
            signature("Jefe", "1700000000", body)
        );
    }
}
