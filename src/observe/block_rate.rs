//! Blocks per minute by reason over the last hour, in fixed memory: a ring of 60
//! one-minute slots, each holding a count per [`Reason`], fed by
//! `proxy::Gate::serve` and drawn by the console's traffic page.
//!
//! Contract: `record` is O(1) and never allocates; a slot is reused when its minute
//! is an hour old, so [`BlockRate::last_hour`] reports exactly the blocks of the 60
//! minutes up to and including the current one (zero for minutes with none).

use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::reason::Reason;

/// Minutes kept.
pub const MINUTES: usize = 60;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Minutes since the Unix epoch this slot counts, or `None` when never used.
    minute: Option<u64>,
    counts: [u64; Reason::ALL.len()],
}

/// One minute of the report: how many requests were refused for each reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCounts {
    /// Minutes since the Unix epoch.
    pub minute: u64,
    /// Blocks by reason, in the order of `Reason::ALL`.
    pub counts: [u64; Reason::ALL.len()],
}

/// The per-minute block counts of the last hour.
#[derive(Debug)]
pub struct BlockRate {
    slots: Mutex<[Slot; MINUTES]>,
}

impl Default for BlockRate {
    fn default() -> BlockRate {
        BlockRate {
            slots: Mutex::new([Slot::default(); MINUTES]),
        }
    }
}

fn minute_of(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

fn index_of(reason: Reason) -> usize {
    Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0)
}

impl BlockRate {
    /// Record a finished request's outcome when it was refused (`block`, or
    /// `would_block` in report-only mode).
    pub fn observe(&self, decision: &str, reason: Reason) {
        if matches!(decision, "block" | "would_block") {
            self.record(reason, SystemTime::now());
        }
    }

    /// Count one block for `reason` at `at`.
    pub fn record(&self, reason: Reason, at: SystemTime) {
        let minute = minute_of(at);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut slots[(minute % MINUTES as u64) as usize];
        if slot.minute != Some(minute) {
            *slot = Slot {
                minute: Some(minute),
                ..Slot::default()
            };
        }
        slot.counts[index_of(reason)] += 1;
    }

    /// The 60 minutes ending with the one of `now`, oldest first.
    pub fn last_hour(&self, now: SystemTime) -> Vec<MinuteCounts> {
        let current = minute_of(now);
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        (0..MINUTES as u64)
            .rev()
            .map(|back| {
                let minute = current.saturating_sub(back);
                let slot = &slots[(minute % MINUTES as u64) as usize];
                let counts = if slot.minute == Some(minute) {
                    slot.counts
                } else {
                    [0; Reason::ALL.len()]
                };
                MinuteCounts { minute, counts }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(minute: u64, second: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(minute * 60 + second)
    }

    fn count(rate: &BlockRate, now: SystemTime, minute: u64, reason: Reason) -> u64 {
        rate.last_hour(now)
            .iter()
            .find(|m| m.minute == minute)
            .map_or(0, |m| m.counts[index_of(reason)])
    }

    #[test]
    fn blocks_are_counted_by_minute_and_reason() {
        let rate = BlockRate::default();
        rate.record(Reason::NotFiled, at(1000, 1));
        rate.record(Reason::NotFiled, at(1000, 59));
        rate.record(Reason::Rejected, at(1000, 30));
        rate.record(Reason::NotFiled, at(1001, 0));
        let now = at(1001, 10);
        assert_eq!(count(&rate, now, 1000, Reason::NotFiled), 2);
        assert_eq!(count(&rate, now, 1000, Reason::Rejected), 1);
        assert_eq!(count(&rate, now, 1001, Reason::NotFiled), 1);
        let hour = rate.last_hour(now);
        assert_eq!(hour.len(), MINUTES);
        assert_eq!(hour.first().map(|m| m.minute), Some(1001 - 59));
        assert_eq!(hour.last().map(|m| m.minute), Some(1001));
    }

    #[test]
    fn an_hour_old_minute_is_forgotten_and_its_slot_reused() {
        let rate = BlockRate::default();
        rate.record(Reason::NotFiled, at(1000, 0));
        // an hour later the same slot counts the new minute from zero
        rate.record(Reason::Cancelled, at(1060, 0));
        let now = at(1060, 0);
        assert_eq!(count(&rate, now, 1000, Reason::NotFiled), 0);
        assert_eq!(count(&rate, now, 1060, Reason::Cancelled), 1);
        assert_eq!(count(&rate, now, 1060, Reason::NotFiled), 0);
        // read much later, nothing is left
        let total: u64 = rate
            .last_hour(at(2000, 0))
            .iter()
            .flat_map(|m| m.counts)
            .sum();
        assert_eq!(total, 0);
    }

    #[test]
    fn only_refusals_are_observed() {
        let rate = BlockRate::default();
        rate.observe("allow", Reason::Filed);
        rate.observe("block", Reason::NotFiled);
        rate.observe("would_block", Reason::Rejected);
        let total: u64 = rate
            .last_hour(SystemTime::now())
            .iter()
            .flat_map(|m| m.counts)
            .sum();
        assert_eq!(total, 2);
    }
}
