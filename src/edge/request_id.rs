//! Request ids: the client's `X-Request-Id` when it is sane, else a fresh one. The id
//! is shown on the block page, sent upstream and written to the access log.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;

pub struct RequestIds {
    /// Randomly keyed per process, so ids are unpredictable and differ across nodes.
    keys: RandomState,
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

impl RequestIds {
    pub fn new() -> RequestIds {
        RequestIds {
            keys: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    /// Reuse a client id of 1–128 characters of `[A-Za-z0-9._:-]`; otherwise make one.
    pub fn for_request(&self, headers: &HeaderMap) -> String {
        let given = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_sane(v));
        match given {
            Some(id) => id.to_string(),
            None => self.fresh(),
        }
    }

    pub fn fresh(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:08x}", self.keys.hash_one(n), n & 0xffff_ffff)
    }
}

fn is_sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_client_ids_and_replaces_others() {
        let ids = RequestIds::new();
        let cases = [
            // a typical upstream-LB id is kept
            ("abc-123_x.y:z", true),
            // markup is never echoed
            ("<script>", false),
            // empty
            ("", false),
            // too long
            (&"a".repeat(129)[..], false),
        ];
        for (given, kept) in cases {
            let mut headers = HeaderMap::new();
            if let Ok(v) = given.parse() {
                headers.insert("x-request-id", v);
            }
            assert_eq!(ids.for_request(&headers) == given, kept, "{given}");
        }
        assert_ne!(ids.fresh(), ids.fresh());
    }
}
