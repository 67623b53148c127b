//! The reset-rate limit of one connection (rapid reset, CVE-2023-44487): every
//! request the client cancels before its answer — an HTTP/2 stream reset, in
//! practice — is counted in one-second windows, and a connection that cancels more
//! than `limits.h2_max_resets_per_second` in one window is told to go away. Opening
//! and cancelling streams in a loop costs the client nothing and the gate a decision
//! and an upstream request each; past the limit it costs the client its connection.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

/// The counter one connection shares with its in-flight requests.
pub struct ResetRate {
    limit: u32,
    epoch: Instant,
    /// The second (since `epoch`) the count belongs to.
    window: AtomicU64,
    count: AtomicU32,
    exceeded: AtomicBool,
    wake: Notify,
}

impl ResetRate {
    pub fn new(limit: u32) -> Arc<ResetRate> {
        Arc::new(ResetRate {
            limit,
            epoch: Instant::now(),
            window: AtomicU64::new(0),
            count: AtomicU32::new(0),
            exceeded: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    /// A guard for one request: dropped before `answered`, it counts a cancel.
    pub fn guard(self: &Arc<Self>) -> CancelGuard {
        CancelGuard {
            rate: Some(Arc::clone(self)),
        }
    }

    fn note_cancel(&self) {
        let now = self.epoch.elapsed().as_secs();
        if self.window.swap(now, Ordering::Relaxed) != now {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 > self.limit
            && !self.exceeded.swap(true, Ordering::Relaxed)
        {
            self.wake.notify_one();
        }
    }

    /// Resolves once the connection has cancelled too many requests.
    pub async fn exceeded(&self) {
        if !self.exceeded.load(Ordering::Relaxed) {
            self.wake.notified().await;
        }
    }
}

/// Held by a request while the gate works on it.
pub struct CancelGuard {
    rate: Option<Arc<ResetRate>>,
}

impl CancelGuard {
    /// The request got its answer: it was not cancelled.
    pub fn answered(mut self) {
        self.rate = None;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(rate) = self.rate.take() {
            rate.note_cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancels_past_the_limit_in_one_second_wake_the_connection() {
        let rate = ResetRate::new(3);
        for _ in 0..3 {
            drop(rate.guard());
        }
        // Three cancels are within the limit; answered requests never count.
        for _ in 0..10 {
            rate.guard().answered();
        }
        let woken = tokio::time::timeout(std::time::Duration::from_millis(50), rate.exceeded());
        assert!(woken.await.is_err(), "woken at the limit, not past it");
        drop(rate.guard());
        let woken = tokio::time::timeout(std::time::Duration::from_millis(50), rate.exceeded());
        assert!(
            woken.await.is_ok(),
            "the fourth cancel in a second is one too many"
        );
    }
}
