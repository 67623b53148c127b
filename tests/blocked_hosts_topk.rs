//! The contract these tests pin: the top-K of blocked registrable domains holds at
//! most its capacity under a flood of 100 000 random names, still reports a heavy
//! hitter mixed into the flood with a count at least its true count (Space-Saving's
//! guarantee), and `GET /v1/blocked-hosts?limit=N` lists what the live gate blocked
//! for a filing reason — never allowed domains, IP literals or invalid hosts.

mod common;

use std::time::SystemTime;

use icpgate::observe::blocked_hosts::BlockedHosts;

/// A small deterministic generator of random-looking names.
fn random_names(count: usize) -> impl Iterator<Item = String> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..count).map(move |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        format!("r{state:016x}.cn")
    })
}

#[test]
fn a_flood_stays_bounded_and_the_heavy_hitter_survives() {
    let hosts = BlockedHosts::new(1024);
    let now = SystemTime::now();
    let mut heavy_true = 0u64;
    for (i, name) in random_names(100_000).enumerate() {
        hosts.record(&name, now);
        if i % 20 == 0 {
            hosts.record("heavy-unfiled.cn", now);
            heavy_true += 1;
        }
        if i % 997 == 0 {
            assert!(hosts.len() <= 1024, "grew to {}", hosts.len());
        }
    }
    assert_eq!(hosts.len(), 1024);
    assert_eq!(hosts.total(), 100_000 + heavy_true);
    let top = hosts.top(1);
    assert_eq!(top[0].domain, "heavy-unfiled.cn");
    assert!(
        top[0].count >= heavy_true,
        "{} < {heavy_true}",
        top[0].count
    );
    assert!(top[0].count - top[0].error <= heavy_true);
    // a larger limit is capped by what is held
    assert_eq!(hosts.top(5000).len(), 1024);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_lists_live_blocks() {
    let gate = common::TestGate::start(&common::standard_seed(), None, None, "").await;
    for _ in 0..3 {
        assert_eq!(gate.get("shop.unfiled-shop.cn", "/").await.status, 451);
    }
    assert_eq!(gate.get("www.unfiled-shop.cn", "/").await.status, 451);
    assert_eq!(gate.get("pending.cn", "/").await.status, 451);
    // not counted: an IP literal, garbage, a bare public suffix
    gate.get("192.0.2.1", "/").await;
    gate.get("bad..host", "/").await;
    gate.get("com.cn", "/").await;
    // not counted: allowed (502: no upstream listening)
    gate.get("shop.example.com", "/").await;

    let (status, body) = gate.api("GET", "/v1/blocked-hosts?limit=10", None).await;
    assert_eq!(status, 200);
    let listed = body["blocked_hosts"].as_array().expect("list");
    let pairs: Vec<(&str, u64)> = listed
        .iter()
        .map(|h| {
            (
                h["domain"].as_str().unwrap_or(""),
                h["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(pairs, [("unfiled-shop.cn", 4), ("pending.cn", 1)]);
    let last_seen = listed[0]["last_seen"].as_str().unwrap_or("");
    assert!(humantime::parse_rfc3339(last_seen).is_ok(), "{last_seen}");
    assert_eq!(body["capacity"], 1024);

    let (_, body) = gate.api("GET", "/v1/blocked-hosts?limit=1", None).await;
    assert_eq!(body["blocked_hosts"].as_array().map(Vec::len), Some(1));
    let (status, _) = gate.api("GET", "/v1/blocked-hosts?limit=zero", None).await;
    assert_eq!(status, 400);
}
