//! The registrable domains blocked most often in live traffic, in bounded memory:
//! a Space-Saving top-K (Metwally, Agrawal, El Abbadi, 2005) behind a mutex, fed
//! by `proxy::Gate::serve` and read by `GET /v1/blocked-hosts?limit=N`.
//!
//! Contract:
//! - at most `capacity` domains are ever held, however many distinct names arrive
//!   (a random-host flood cannot grow it);
//! - a reported `count` is never below the domain's true count since it was first
//!   held, and overestimates it by at most the reported `error`; any domain whose
//!   true count exceeds `total / capacity` is always held;
//! - `record` is O(1): entries sit in buckets by count (counts only grow by one), the
//!   smallest non-empty bucket is tracked, and an eviction takes any member of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;

use crate::model::reason::Reason;

/// How many domains the gate keeps by default.
pub const DEFAULT_CAPACITY: usize = 1024;

/// One reported domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockedHost {
    pub domain: String,
    /// Estimated blocks: at least the true count, at most `error` more.
    pub count: u64,
    /// How much of `count` may come from domains this one evicted.
    pub error: u64,
    /// When a block was last recorded for it, RFC 3339 UTC.
    pub last_seen: String,
}

struct Entry {
    count: u64,
    error: u64,
    last_seen: SystemTime,
    /// Position of this domain in `buckets[count]`.
    slot: usize,
}

#[derive(Default)]
struct Summary {
    entries: HashMap<Arc<str>, Entry>,
    /// Domains by count; no empty bucket is kept.
    buckets: HashMap<u64, Vec<Arc<str>>>,
    /// The smallest count held (meaningful when `entries` is not empty).
    min: u64,
    total: u64,
}

/// A bounded top-K of blocked registrable domains. Cheap to share behind an `Arc`.
pub struct BlockedHosts {
    capacity: usize,
    summary: Mutex<Summary>,
}

impl BlockedHosts {
    /// A top-K holding at most `capacity` domains (at least one).
    pub fn new(capacity: usize) -> BlockedHosts {
        BlockedHosts {
            capacity: capacity.max(1),
            summary: Mutex::new(Summary::default()),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many domains are held now (never more than `capacity`).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocks recorded since start, held or not.
    pub fn total(&self) -> u64 {
        self.lock().total
    }

    /// Count one block of `domain` seen at `at`.
    pub fn record(&self, domain: &str, at: SystemTime) {
        let mut summary = self.lock();
        summary.total += 1;
        let held = summary
            .entries
            .get_key_value(domain)
            .map(|(key, entry)| (Arc::clone(key), entry.count));
        if let Some((key, count)) = held {
            summary.unbucket(&key, count);
            summary.bucket(Arc::clone(&key), count + 1);
            if let Some(entry) = summary.entries.get_mut(&key) {
                entry.last_seen = at;
            }
            return;
        }
        let key: Arc<str> = Arc::from(domain);
        let (count, error) = if summary.entries.len() < self.capacity {
            (1, 0)
        } else {
            let floor = summary.min;
            summary.evict_min();
            (floor + 1, floor)
        };
        summary.entries.insert(
            Arc::clone(&key),
            Entry {
                count,
                error,
                last_seen: at,
                slot: 0,
            },
        );
        summary.bucket(key, count);
    }

    /// The `limit` most blocked domains, most blocked first (ties by name).
    pub fn top(&self, limit: usize) -> Vec<BlockedHost> {
        let summary = self.lock();
        let mut out: Vec<BlockedHost> = summary
            .entries
            .iter()
            .map(|(domain, entry)| BlockedHost {
                domain: domain.to_string(),
                count: entry.count,
                error: entry.error,
                last_seen: humantime::format_rfc3339_seconds(entry.last_seen).to_string(),
            })
            .collect();
        drop(summary);
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.domain.cmp(&b.domain)));
        out.truncate(limit);
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Summary> {
        // A panic while holding the lock leaves counts, not invariants that matter
        // for safety: keep serving them.
        self.summary.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether a gate outcome counts as a block of a filing-related reason: decisions
/// `block` and `would_block` for a domain (never `invalid_host`, `missing_host`,
/// `ip_literal`, which have none, nor `sni_mismatch` or `registry_unavailable`,
/// which say nothing about the domain's filing).
pub fn counts(decision: &str, reason: Reason) -> bool {
    matches!(decision, "block" | "would_block")
        && matches!(
            reason,
            Reason::NotFiled
                | Reason::PendingReview
                | Reason::Rejected
                | Reason::Abandoned
                | Reason::Cancelled
                | Reason::Disconnected
        )
}

impl BlockedHosts {
    /// Record a finished request's outcome if it [`counts`].
    pub fn observe(&self, decision: &str, reason: Reason, domain: Option<&str>) {
        if let Some(domain) = domain.filter(|_| counts(decision, reason)) {
            self.record(domain, SystemTime::now());
        }
    }
}

impl Summary {
    /// Put a held domain into the bucket for `count` and set its count and slot.
    fn bucket(&mut self, key: Arc<str>, count: u64) {
        let bucket = self.buckets.entry(count).or_default();
        let slot = bucket.len();
        bucket.push(Arc::clone(&key));
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.count = count;
            entry.slot = slot;
        }
        if self.entries.len() == 1 || count < self.min {
            self.min = count;
        }
    }

    /// Take a held domain out of the bucket for `count`; when that empties the
    /// smallest bucket, the next count up becomes the minimum (a domain leaving the
    /// smallest bucket always lands in, or is replaced into, `count + 1`).
    fn unbucket(&mut self, key: &Arc<str>, count: u64) {
        let Some(slot) = self.entries.get(key).map(|e| e.slot) else {
            return;
        };
        let Some(bucket) = self.buckets.get_mut(&count) else {
            return;
        };
        bucket.swap_remove(slot);
        if let Some(moved) = bucket.get(slot).cloned() {
            if let Some(entry) = self.entries.get_mut(&moved) {
                entry.slot = slot;
            }
        }
        if bucket.is_empty() {
            self.buckets.remove(&count);
            if count == self.min {
                self.min = count + 1;
            }
        }
    }

    /// Drop one domain with the smallest count.
    fn evict_min(&mut self) {
        let Some(victim) = self.buckets.get(&self.min).and_then(|b| b.last()).cloned() else {
            return;
        };
        self.unbucket(&victim, self.min);
        self.entries.remove(&victim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(top: &[BlockedHost]) -> Vec<(&str, u64)> {
        top.iter().map(|h| (h.domain.as_str(), h.count)).collect()
    }

    #[test]
    fn exact_while_under_capacity() {
        let hosts = BlockedHosts::new(4);
        let now = SystemTime::now();
        for domain in ["a.cn", "b.cn", "a.cn", "c.cn", "a.cn", "b.cn"] {
            hosts.record(domain, now);
        }
        assert_eq!(
            counts(&hosts.top(10)),
            [("a.cn", 3), ("b.cn", 2), ("c.cn", 1)]
        );
        assert_eq!(counts(&hosts.top(1)), [("a.cn", 3)]);
        assert_eq!(hosts.total(), 6);
    }

    #[test]
    fn eviction_inherits_the_minimum_as_error() {
        let hosts = BlockedHosts::new(2);
        let now = SystemTime::now();
        for domain in ["a.cn", "a.cn", "b.cn", "c.cn"] {
            hosts.record(domain, now);
        }
        let top = hosts.top(10);
        // b.cn (count 1, the minimum) was evicted; c.cn took over its count
        assert_eq!(counts(&top), [("a.cn", 2), ("c.cn", 2)]);
        assert_eq!(top[1].error, 1);
        assert_eq!(hosts.len(), 2);
    }

    #[test]
    fn invariants_hold_on_mixed_traffic() {
        // A deterministic stream: a few heavy domains among many light ones.
        let hosts = BlockedHosts::new(8);
        let mut truth: HashMap<String, u64> = HashMap::new();
        let now = SystemTime::now();
        let mut seed = 7u64;
        for _ in 0..5000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pick = (seed >> 33) % 40;
            let domain = format!("d{}.cn", if pick < 20 { pick % 3 } else { pick });
            hosts.record(&domain, now);
            *truth.entry(domain).or_default() += 1;
            let summary = hosts.lock();
            assert!(summary.entries.len() <= 8);
            // every block is accounted to exactly one held domain
            let sum: u64 = summary.entries.values().map(|e| e.count).sum();
            assert_eq!(sum, summary.total);
            // the tracked minimum is the real one
            let min = summary.entries.values().map(|e| e.count).min();
            assert_eq!(min, Some(summary.min));
            for (domain, entry) in &summary.entries {
                let real = truth[domain.as_ref()];
                assert!(entry.count >= real && entry.count - entry.error <= real);
                let bucket = &summary.buckets[&entry.count];
                assert_eq!(bucket[entry.slot], *domain);
            }
        }
        // the three heavy domains are reported first
        let top: Vec<String> = hosts.top(3).into_iter().map(|h| h.domain).collect();
        let mut top = top;
        top.sort();
        assert_eq!(top, ["d0.cn", "d1.cn", "d2.cn"]);
    }
}
