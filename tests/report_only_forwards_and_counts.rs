//! The contract these tests pin (issue 7, report-only rollout): with
//! `policy.mode = "report-only"` a host the gate would block is forwarded to the
//! default pool and counted once as `decision="would_block"` with its own reason;
//! filed hosts still count as `allow`; a missing or invalid host is still refused
//! (there is nothing to forward it to). In enforce mode nothing is `would_block`.

mod common;

use common::*;

const WOULD_BLOCK: &str = "would_block";

/// Every (decision, reason) the gate can produce is exported at zero from the start.
fn count(metrics: &str, decision: &str, reason: &str) -> f64 {
    sample_required(
        metrics,
        "icpgate_requests_total",
        &[("decision", decision), ("reason", reason)],
    )
}

#[tokio::test]
async fn report_only_forwards_what_enforce_would_block_and_counts_it_exactly() {
    let origin = start_origin("storefront").await;
    let mut gate = TestGate::start(
        &standard_seed(),
        Some(origin),
        None,
        "[policy]\nmode = \"report-only\"\n",
    )
    .await;
    let before = gate.metrics().await;
    let cases: &[(&str, &str)] = &[
        ("unfiled.cn", "not_filed"),
        ("www.unfiled.cn", "not_filed"),
        ("pending.cn", "pending_review"),
        ("rejected.net", "rejected"),
        ("left.cn", "disconnected"),
        ("127.0.0.1", "ip_literal"),
    ];
    for (host, _) in cases {
        let reply = gate.get(host, "/probe").await;
        assert_eq!(reply.status, 200, "{host} is forwarded: {}", reply.text());
        assert_eq!(reply.json()["origin"], "storefront", "{host}");
        assert_eq!(reply.reason(), None, "{host}: no block header on a forward");
    }
    let filed = gate.get("example.com", "/").await;
    assert_eq!(filed.status, 200);
    let invalid = gate.get("a..b.com", "/").await;
    assert_eq!(invalid.status, 400, "garbage hosts are still refused");

    let after = gate.metrics().await;
    let delta = |decision: &str, reason: &str| {
        count(&after, decision, reason) - count(&before, decision, reason)
    };
    assert_eq!(delta(WOULD_BLOCK, "not_filed"), 2.0);
    for reason in ["pending_review", "rejected", "disconnected", "ip_literal"] {
        assert_eq!(delta(WOULD_BLOCK, reason), 1.0, "{reason}");
        assert_eq!(
            delta("block", reason),
            0.0,
            "{reason} is not counted as block"
        );
    }
    assert_eq!(delta("allow", "filed"), 1.0);
    assert_eq!(delta("block", "invalid_host"), 1.0);
    // A filed host is never "would block": that label set does not even exist.
    let never = [("decision", WOULD_BLOCK), ("reason", "filed")];
    assert_eq!(sample(&after, "icpgate_requests_total", &never), None);
    gate.stop().await;
}

#[tokio::test]
async fn enforce_mode_never_counts_would_block() {
    let origin = start_origin("storefront").await;
    let mut gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    let reply = gate.get("unfiled.cn", "/").await;
    assert_eq!(reply.status, 451);
    let metrics = gate.metrics().await;
    assert_eq!(count(&metrics, "block", "not_filed"), 1.0);
    let would_block = sample_required(
        &metrics,
        "icpgate_requests_total",
        &[("decision", WOULD_BLOCK)],
    );
    assert_eq!(would_block, 0.0);
    gate.stop().await;
}
