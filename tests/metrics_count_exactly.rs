//! The contract these tests pin (SPEC §3, issue 6): `/metrics` on the admin listener
//! counts exactly — N requests of a kind move their counter by N, not "at least N";
//! gauges equal the registry's state; labels are bounded enumerations and never
//! carry a host name, however many random hosts a scanner sends.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// How far a series moved. Every label set these tests read is created at zero when
/// the gate starts, so the series must be there before the traffic too.
fn delta(before: &str, after: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample_required(after, name, labels) - sample_required(before, name, labels)
}

#[tokio::test]
async fn request_counters_and_the_histogram_move_by_exactly_the_traffic_sent() {
    let origin = start_origin("storefront").await;
    let gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    gate.get("example.com", "/").await; // warm the cache: later example.com are hits
    let before = gate.metrics().await;
    for i in 0..7 {
        let reply = gate.get(&format!("unfiled-{i}-secretname.cn"), "/").await;
        assert_eq!(reply.reason(), Some("not_filed"));
    }
    for _ in 0..3 {
        assert_eq!(gate.get("shop.example.com", "/").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(
            gate.get("pending.cn", "/").await.reason(),
            Some("pending_review")
        );
    }
    assert_eq!(gate.get("10.1.2.3", "/").await.reason(), Some("ip_literal"));
    assert_eq!(
        gate.get("a..b.cn", "/").await.reason(),
        Some("invalid_host")
    );
    let after = gate.metrics().await;

    let requests = "icpgate_requests_total";
    let cases: &[(&[(&str, &str)], f64)] = &[
        (&[("decision", "block"), ("reason", "not_filed")], 7.0),
        (&[("decision", "allow"), ("reason", "filed")], 3.0),
        (&[("decision", "allow")], 3.0),
        (&[("decision", "block"), ("reason", "pending_review")], 2.0),
        (&[("decision", "block"), ("reason", "ip_literal")], 1.0),
        (&[("decision", "block"), ("reason", "invalid_host")], 1.0),
        (&[("decision", "would_block")], 0.0),
        (&[], 14.0),
    ];
    for (labels, expected) in cases {
        assert_eq!(
            delta(&before, &after, requests, labels),
            *expected,
            "{labels:?}"
        );
    }
    let histogram = "icpgate_request_duration_seconds";
    assert_eq!(
        delta(&before, &after, &format!("{histogram}_count"), &[]),
        14.0
    );
    let inf = [("le", "+Inf")];
    assert_eq!(
        delta(&before, &after, &format!("{histogram}_bucket"), &inf),
        14.0
    );
    assert!(after.contains(r#"icpgate_request_duration_seconds_bucket{le="0.0001"}"#));
    assert!(after.contains(r#"icpgate_request_duration_seconds_bucket{le="10"}"#));

    // The 7 unfiled domains are answered from the filed-domain index (no cache
    // entry, no registry lookup); pending.cn is a miss once, then hits. IP literals
    // and invalid hosts are answered before any lookup.
    let cache = "icpgate_cache_lookups_total";
    assert_eq!(delta(&before, &after, cache, &[("result", "unfiled")]), 7.0);
    assert_eq!(delta(&before, &after, cache, &[("result", "miss")]), 1.0);
    assert_eq!(delta(&before, &after, cache, &[("result", "hit")]), 4.0);
    assert_eq!(
        delta(&before, &after, cache, &[("result", "coalesced")]),
        0.0
    );
    assert_eq!(delta(&before, &after, cache, &[("result", "stale")]), 0.0);
    assert_eq!(
        delta(
            &before,
            &after,
            "icpgate_registry_lookup_duration_seconds_count",
            &[]
        ),
        1.0
    );
    assert_eq!(
        delta(&before, &after, "icpgate_registry_errors_total", &[]),
        0.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "icpgate_upstream_duration_seconds_count",
            &[("pool", "storefront")]
        ),
        3.0
    );

    for leaked in [
        "secretname",
        "example.com",
        "pending.cn",
        "10.1.2.3",
        "a..b",
    ] {
        assert!(!after.contains(leaked), "a label carries {leaked}");
    }
}

#[tokio::test]
async fn upstream_errors_are_counted_by_pool_and_kind() {
    let origin = start_origin("storefront").await;
    let (_reserved, dead) = refusing_address();
    let extra = "[limits]\nupstream_timeout = \"300ms\"\nupstream_connect_timeout = \"300ms\"\n";
    let gate = TestGate::start(&standard_seed(), Some(origin), Some(dead), extra).await;
    let before = gate.metrics().await;
    assert_eq!(gate.get("example.com", "/fail").await.status, 500);
    assert_eq!(gate.get("example.com", "/fail").await.status, 500);
    assert_eq!(gate.get("example.com", "/sleep/2").await.status, 504);
    assert_eq!(gate.get("example.com.cn", "/").await.status, 502);
    let after = gate.metrics().await;
    let errors = "icpgate_upstream_errors_total";
    let cases = [
        ("storefront", "status_5xx", 2.0),
        ("storefront", "timeout", 1.0),
        ("storefront", "connect", 0.0),
        ("corporate_site", "connect", 1.0),
        ("corporate_site", "status_5xx", 0.0),
    ];
    for (pool, kind, expected) in cases {
        let labels = [("pool", pool), ("kind", kind)];
        assert_eq!(
            delta(&before, &after, errors, &labels),
            expected,
            "{pool} {kind}"
        );
    }
    // The refusing server is passed over for its cool-down; the live one is not.
    let down = |pool| sample(&after, "icpgate_upstream_servers_down", &[("pool", pool)]);
    assert_eq!(down("corporate_site"), Some(1.0));
    assert_eq!(down("storefront"), Some(0.0));
    // Upstream failures are still allowed requests: the gate said yes.
    let allowed = [("decision", "allow"), ("reason", "filed")];
    assert_eq!(
        delta(&before, &after, "icpgate_requests_total", &allowed),
        4.0
    );
}

/// A seed line in `initial_review` that entered it at `at` (RFC 3339).
fn waiting_since(domain: &str, at: &str) -> String {
    json!({
        "domains": [domain], "product": "storefront", "status": "initial_review",
        "entity": {"name": "示例", "type": "enterprise"}, "website": {"name": "示例"},
        "history": [{"at": at, "actor": "import", "from": null, "to": "initial_review", "reason": null}],
        "created_at": at, "updated_at": at,
    })
    .to_string()
}

#[tokio::test]
async fn filing_gauges_equal_the_registry_and_follow_every_write() {
    let mut seed = standard_seed();
    // Waiting since a Monday in 2024: long overdue. The standard seed's pending.cn
    // was imported just now: not overdue.
    seed.push(waiting_since("old-wait.cn", "2024-06-03T01:00:00Z"));
    seed.push(waiting_since("older-wait.cn", "2024-01-02T01:00:00+08:00"));
    let gate = TestGate::start(&seed, None, None, "").await;
    let before = gate.metrics().await;
    let expected = [
        ("approved", 3.0),
        ("initial_review", 3.0),
        ("authority_review", 1.0),
        ("rejected", 1.0),
        ("abandoned", 1.0),
        ("cancelled", 1.0),
        ("disconnected", 1.0),
    ];
    for (status, count) in expected {
        assert_eq!(
            sample(&before, "icpgate_filings", &[("status", status)]),
            Some(count),
            "{status}"
        );
    }
    let overdue = "icpgate_filings_overdue_initial_review";
    assert_eq!(sample(&before, overdue, &[]), Some(2.0));

    let submission = json!({"domains": ["new-shop.cn"], "product": "storefront", "kind": "new",
        "entity": {"name": "示例", "type": "individual"}, "website": {"name": "x"}});
    let (status, filing) = gate.api("POST", "/v1/filings", Some(submission)).await;
    assert_eq!(status, 201, "{filing}");
    let old_id = list_id(&gate, "old-wait.cn").await;
    let review = format!("/v1/filings/{old_id}/initial-review");
    let pass = json!({"approve": true});
    assert_eq!(gate.api("POST", &review, Some(pass)).await.0, 200);
    let after = gate.metrics().await;
    assert_eq!(
        delta(
            &before,
            &after,
            "icpgate_filings",
            &[("status", "initial_review")]
        ),
        0.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "icpgate_filings",
            &[("status", "authority_review")]
        ),
        1.0
    );
    assert_eq!(
        sample(&after, overdue, &[]),
        Some(1.0),
        "the passed review is no longer waiting"
    );
    assert_eq!(
        delta(&before, &after, "icpgate_registry_revision", &[]),
        2.0
    );
    assert!(!after.contains("new-shop") && !after.contains("old-wait"));
}

async fn list_id(gate: &TestGate, domain: &str) -> i64 {
    let (_, list) = gate
        .api("GET", &format!("/v1/filings?domain={domain}"), None)
        .await;
    list["filings"][0]["id"].as_i64().expect("listed filing id")
}

#[tokio::test]
async fn active_connections_and_process_metrics_are_exported() {
    let gate = TestGate::start(&standard_seed(), None, None, "").await;
    let gauge = "icpgate_connections_active";
    let idle = tokio::net::TcpStream::connect(gate.http)
        .await
        .expect("connect");
    assert!(
        wait_for(&gate, gauge, 1.0).await,
        "an open connection counts"
    );
    drop(idle);
    assert!(
        wait_for(&gate, gauge, 0.0).await,
        "a closed connection stops counting"
    );

    // The gate runs in this test process: its process metrics describe this process,
    // so each is checked against what this process can see of itself.
    let cpu_before = own_cpu_seconds();
    let text = gate.metrics().await;
    let cpu_after = own_cpu_seconds();
    let value = |name| sample_required(&text, name, &[]);

    let rss = value("process_resident_memory_bytes");
    assert!(
        (1_048_576.0..17_179_869_184.0).contains(&rss),
        "resident memory in bytes (not pages or KiB): {rss}"
    );
    let cpu = value("process_cpu_seconds_total");
    assert!(
        cpu_before - 0.01 <= cpu && cpu <= cpu_after + 0.01,
        "CPU seconds {cpu} outside this process's own [{cpu_before}, {cpu_after}]"
    );
    // stdin, stdout, stderr, the http and admin listeners and the registry file.
    let fds = value("process_open_fds");
    assert!((6.0..=1_048_576.0).contains(&fds), "open fds: {fds}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        now - 3600.0 < started && started <= now + 1.0,
        "start time in Unix seconds, within the last hour: {started} (now {now})"
    );
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(sample(&text, "icpgate_build_info", &version), Some(1.0));
}

/// This process's user + system CPU time from /proc/self/stat, in seconds (Linux
/// clock ticks are 1/100 s).
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which may hold spaces) start at "state", field 3.
    let after_name = &stat[stat.rfind(')').expect("comm field") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields[i - 3].parse::<f64>().expect("tick count");
    (ticks(14) + ticks(15)) / 100.0
}

async fn wait_for(gate: &TestGate, name: &str, value: f64) -> bool {
    eventually(Duration::from_secs(2), || async {
        sample_required(&gate.metrics().await, name, &[]) == value
    })
    .await
}
