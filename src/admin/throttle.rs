//! Failed authentications, limited per client address: a client whose credentials
//! fail [`MAX_FAILURES`] times within [`WINDOW`] is refused (429 with `Retry-After`)
//! on every endpoint that takes a token until that window, counted from its first
//! failure, has passed. Guessing a 32-character token is hopeless anyway; this keeps
//! a guesser from costing us CPU and log volume, and the failures show on the
//! `icpgate_admin_auth_failures_total` counter.
//!
//! IPv6 clients are keyed by their /64 (one host usually owns the whole prefix). The
//! table holds at most [`MAX_CLIENTS`] addresses; when full of live windows, new
//! addresses share one overflow entry, so a spray from many addresses is still
//! limited, only coarser.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures a client may have within one window.
pub const MAX_FAILURES: u32 = 10;
/// How long a window lasts, from its first failure.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Client addresses tracked at once.
const MAX_CLIENTS: usize = 65_536;

/// A client address as the limiter keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Overflow,
}

fn key_of(ip: IpAddr) -> Key {
    match ip.to_canonical() {
        IpAddr::V4(v4) => Key::Ip(IpAddr::V4(v4)),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            Key::Ip(IpAddr::V6(Ipv6Addr::from(prefix)))
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// The failures of each client in its current window.
#[derive(Debug, Default)]
pub struct AuthFailures {
    windows: Mutex<HashMap<Key, Window>>,
}

impl AuthFailures {
    /// When `client` is refused: the seconds until its window ends (at least 1).
    pub fn blocked(&self, client: IpAddr, now: Instant) -> Option<u64> {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let window = windows
            .get(&key_of(client))
            .or_else(|| windows.get(&Key::Overflow))
            .filter(|w| w.failures >= MAX_FAILURES)?;
        let left = (window.started + WINDOW)
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())?;
        Some(left.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Count one failure of `client`.
    pub fn record(&self, client: IpAddr, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = key_of(client);
        if !windows.contains_key(&key) && windows.len() >= MAX_CLIENTS {
            windows.retain(|_, w| now.saturating_duration_since(w.started) < WINDOW);
            if windows.len() >= MAX_CLIENTS {
                key = Key::Overflow;
            }
        }
        let window = windows.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.saturating_duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ten_failures_block_until_the_window_ends() {
        let failures = AuthFailures::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(failures.blocked(ip("192.0.2.1"), t0), None, "failure {i}");
            failures.record(ip("192.0.2.1"), t0 + Duration::from_secs(u64::from(i)));
        }
        let later = t0 + Duration::from_secs(15);
        assert_eq!(failures.blocked(ip("192.0.2.1"), later), Some(45));
        // Another client is not affected; an IPv4-mapped address is the same client.
        assert_eq!(failures.blocked(ip("192.0.2.2"), later), None);
        assert_eq!(failures.blocked(ip("::ffff:192.0.2.1"), later), Some(45));
        // The window passes: free again, and a new failure starts a new window.
        let after = t0 + WINDOW;
        assert_eq!(failures.blocked(ip("192.0.2.1"), after), None);
        failures.record(ip("192.0.2.1"), after);
        assert_eq!(failures.blocked(ip("192.0.2.1"), after), None);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let failures = AuthFailures::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            failures.record(ip(&format!("2001:db8:1:2::{i}")), t0);
        }
        assert!(failures.blocked(ip("2001:db8:1:2::ffff"), t0).is_some());
        assert!(failures.blocked(ip("2001:db8:1:3::1"), t0).is_none());
    }
}
