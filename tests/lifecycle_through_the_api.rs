//! The contract these tests pin: the filing workflow of SPEC §2 through the admin
//! API, and the gate following it at once.
//!
//! - each endpoint's legal path answers 200 with the filing, and one illegal use of
//!   each answers 409 naming the allowed next steps;
//! - every step is recorded in `history` (who, when, from, to, reason); a change of
//!   details (变更) keeps an approved filing approved and is recorded too;
//! - each submission reports its seed filing type;
//! - the gate's decision flips after every change although answers are cached for
//!   ten minutes (the flip is asserted, not a wall-clock budget);
//! - `policy.access_existing_after_initial_review` decides whether an access-existing
//!   filing serves after initial review;
//! - state survives a restart.

mod common;

use common::{submission, TestGate};
use serde_json::{json, Value};

/// Answers cached long enough that only invalidation can explain a flip.
const LONG_CACHE: &str = "[cache]\nttl = \"600s\"\nnegative_ttl = \"600s\"\n";

async fn gate(extra: &str) -> TestGate {
    let origin = common::start_origin("storefront").await;
    TestGate::start(&[], Some(origin), None, &format!("{LONG_CACHE}{extra}")).await
}

async fn submit(g: &TestGate, domain: &str) -> i64 {
    let (status, body) = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&[domain], "new", None)),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_i64().expect("id")
}

async fn step(g: &TestGate, id: i64, name: &str, body: Value) -> (u16, Value) {
    let (status, body) = g
        .api("POST", &format!("/v1/filings/{id}/{name}"), Some(body))
        .await;
    (status.as_u16(), body)
}

/// Status and `X-Icpgate-Reason` the gate answers for `host` now.
async fn gate_says(g: &TestGate, host: &str) -> (u16, String) {
    let reply = g.get(host, "/").await;
    (
        reply.status.as_u16(),
        reply.reason().unwrap_or("").to_string(),
    )
}

async fn approve(g: &TestGate, id: i64, icp: &str) {
    let (s, b) = step(g, id, "initial-review", json!({"approve": true})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = step(
        g,
        id,
        "authority-review",
        json!({"approve": true, "icp_number": icp}),
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("approved")), "{b}");
}

#[tokio::test]
async fn every_step_flips_the_gate_and_is_recorded() {
    let g = gate("").await;
    let id = submit(&g, "flip.cn").await;
    assert_eq!(gate_says(&g, "shop.flip.cn").await.1, "pending_review");

    let (s, b) = step(&g, id, "initial-review", json!({"approve": true})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("authority_review")));
    assert_eq!(gate_says(&g, "shop.flip.cn").await.1, "pending_review");

    let (s, b) = step(
        &g,
        id,
        "authority-review",
        json!({"approve": true, "icp_number": "浙ICP备20231234号-1"}),
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("approved")));
    assert_eq!(b["icp_number"], "浙ICP备20231234号-1");
    assert_eq!(gate_says(&g, "shop.flip.cn").await, (200, "".into()));

    // 变更: details change, status and access stay.
    let (s, b) = step(
        &g,
        id,
        "change",
        json!({"website": {"name": "新名字", "owner": {"name": "李四", "phone": "13900000000"}}}),
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("approved")), "{b}");
    assert_eq!(b["website"]["name"], "新名字");
    let last = &b["history"][3];
    assert_eq!(
        (last["from"].as_str(), last["to"].as_str()),
        (Some("approved"), Some("approved"))
    );
    assert_eq!(last["reason"], "changed website");
    assert_eq!(gate_says(&g, "shop.flip.cn").await.0, 200);

    let (s, b) = step(&g, id, "abandon", json!({"reason": "change domain"})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("abandoned")));
    assert_eq!(
        gate_says(&g, "shop.flip.cn").await,
        (451, "abandoned".into())
    );

    let (s, b) = g.api("GET", &format!("/v1/filings/{id}"), None).await;
    assert_eq!(s, 200);
    let steps: Vec<(Value, Value, Value)> = b["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| (h["from"].clone(), h["to"].clone(), h["actor"].clone()))
        .collect();
    assert_eq!(
        steps,
        [
            (Value::Null, json!("initial_review"), json!("admin")),
            (
                json!("initial_review"),
                json!("authority_review"),
                json!("admin")
            ),
            (json!("authority_review"), json!("approved"), json!("admin")),
            (json!("approved"), json!("approved"), json!("admin")),
            (json!("approved"), json!("abandoned"), json!("admin")),
        ]
    );
    assert_eq!(b["history"][4]["reason"], "change domain");
    assert!(b["history"][4]["at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
}

#[tokio::test]
async fn cancel_disconnect_and_reject_block_at_once() {
    let g = gate("").await;
    for (domain, action, reason) in [
        ("cancel-me.cn", "cancel", "cancelled"),
        ("leave-me.cn", "disconnect", "disconnected"),
    ] {
        let id = submit(&g, domain).await;
        approve(&g, id, "浙ICP备10101010号-3").await;
        assert_eq!(gate_says(&g, domain).await.0, 200, "{domain}");
        let (s, b) = step(&g, id, action, json!({"reason": "owner asked"})).await;
        assert_eq!((s, b["status"].as_str()), (200, Some(reason)));
        assert_eq!(gate_says(&g, domain).await, (451, reason.to_string()));
    }

    // Rejected at initial review, then at authority review; resubmission returns to review.
    let id = submit(&g, "returned.cn").await;
    let (s, b) = step(
        &g,
        id,
        "initial-review",
        json!({"approve": false, "reason": "主体信息不一致"}),
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("rejected")));
    assert_eq!(gate_says(&g, "returned.cn").await, (451, "rejected".into()));
    let (s, b) = step(&g, id, "resubmit", json!({"product": "corporate_site"})).await;
    assert_eq!(
        (s, b["status"].as_str(), b["product"].as_str()),
        (200, Some("initial_review"), Some("corporate_site"))
    );
    assert_eq!(gate_says(&g, "returned.cn").await.1, "pending_review");
    step(&g, id, "initial-review", json!({"approve": true})).await;
    let (s, b) = step(
        &g,
        id,
        "authority-review",
        json!({"approve": false, "reason": "网站名称不符"}),
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("rejected")));
    assert_eq!(gate_says(&g, "returned.cn").await.1, "rejected");
    // A rejected filing may be abandoned.
    let (s, b) = step(&g, id, "abandon", json!({})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("abandoned")));
}

/// One illegal use of every step endpoint: 409, naming what is allowed instead.
#[tokio::test]
async fn illegal_steps_answer_409_with_the_allowed_next_steps() {
    let g = gate("").await;
    let pending = submit(&g, "pending-409.cn").await;
    let approved = submit(&g, "approved-409.cn").await;
    approve(&g, approved, "浙ICP备11111111号-1").await;
    let gone = submit(&g, "gone-409.cn").await;
    step(&g, gone, "abandon", json!({})).await;

    let cases = [
        (
            approved,
            "initial-review",
            json!({"approve": true}),
            "abandon, cancel, disconnect, change",
        ),
        (
            pending,
            "authority-review",
            json!({"approve": true, "icp_number": "浙ICP备20231234号-1"}),
            "initial-review, abandon, change",
        ),
        (
            pending,
            "resubmit",
            json!({}),
            "initial-review, abandon, change",
        ),
        (gone, "abandon", json!({}), "cancel"),
        (
            pending,
            "cancel",
            json!({}),
            "initial-review, abandon, change",
        ),
        (
            pending,
            "disconnect",
            json!({}),
            "initial-review, abandon, change",
        ),
        (gone, "change", json!({"website": {"name": "x"}}), "cancel"),
    ];
    for (id, action, body, allowed) in cases {
        let (s, b) = step(&g, id, action, body).await;
        assert_eq!(s, 409, "{action}: {b}");
        assert_eq!(b["error"], "conflict", "{action}");
        let detail = b["detail"].as_str().unwrap_or("");
        assert!(
            detail.contains(&format!("allowed next steps: {allowed}")),
            "{action}: {detail}"
        );
    }
    // Refused steps leave the filing as it was.
    let (_, b) = g.api("GET", &format!("/v1/filings/{pending}"), None).await;
    assert_eq!(
        (b["status"].as_str(), b["history"].as_array().map(Vec::len)),
        (Some("initial_review"), Some(1))
    );
    // A second live filing for the same registrable domain.
    let (s, b) = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["pending-409.cn"], "new", None)),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    // Once abandoned, the domain may be filed again.
    submit(&g, "gone-409.cn").await;
}

#[tokio::test]
async fn submissions_report_their_filing_type() {
    let g = gate("").await;
    let first = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["one.cn"], "new", None)),
        )
        .await;
    assert_eq!(first.1["filing_type"], "first_filing");
    // Still no ICP number for the entity while the first is in review.
    let again = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["two.cn"], "new", None)),
        )
        .await;
    assert_eq!(again.1["filing_type"], "first_filing");
    approve(
        &g,
        first.1["id"].as_i64().expect("id"),
        "浙ICP备12121212号-1",
    )
    .await;
    let known = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["three.cn"], "new", None)),
        )
        .await;
    assert_eq!(
        (known.0.as_u16(), &known.1["filing_type"]),
        (201, &json!("new_website"))
    );
    // Matched by name when no certificate number is given.
    let mut by_name = submission(&["four.cn"], "new", None);
    by_name["entity"]
        .as_object_mut()
        .expect("entity")
        .remove("certificate_number");
    let (_, b) = g.api("POST", "/v1/filings", Some(by_name)).await;
    assert_eq!(b["filing_type"], "new_website");
    let (_, b) = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(
                &["five.cn"],
                "access_existing",
                Some("浙ICP备10101010号-3"),
            )),
        )
        .await;
    assert_eq!(b["filing_type"], "access_existing");
    // Another entity is a first filing.
    let mut other = submission(&["six.cn"], "new", None);
    other["entity"]["certificate_number"] = json!("91110000ABCDEFGH1Y");
    let (_, b) = g.api("POST", "/v1/filings", Some(other)).await;
    assert_eq!(b["filing_type"], "first_filing");
}

async fn access_existing_after_initial_review(extra: &str) -> (u16, String) {
    let g = gate(extra).await;
    let (s, b) = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(
                &["moved.cn"],
                "access_existing",
                Some("浙ICP备10101010号-3"),
            )),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_i64().expect("id");
    assert_eq!(gate_says(&g, "moved.cn").await.1, "pending_review");
    step(&g, id, "initial-review", json!({"approve": true})).await;
    let after_initial = gate_says(&g, "moved.cn").await;
    // Approval keeps the number it came with.
    let (s, b) = step(&g, id, "authority-review", json!({"approve": true})).await;
    assert_eq!(
        (s, b["icp_number"].as_str()),
        (200, Some("浙ICP备10101010号-3"))
    );
    assert_eq!(gate_says(&g, "moved.cn").await.0, 200);
    after_initial
}

#[tokio::test]
async fn access_existing_waits_for_approval_by_default() {
    assert_eq!(
        access_existing_after_initial_review("").await,
        (451, "pending_review".to_string())
    );
}

#[tokio::test]
async fn access_existing_serves_after_initial_review_when_the_policy_says_so() {
    let policy = "[policy]\naccess_existing_after_initial_review = true\n";
    assert_eq!(access_existing_after_initial_review(policy).await.0, 200);
}

#[tokio::test]
async fn state_survives_a_restart() {
    let mut g = gate("").await;
    let approved = submit(&g, "kept.cn").await;
    approve(&g, approved, "浙ICP备22222222号-1").await;
    let pending = submit(&g, "waiting.cn").await;
    g.restart().await;
    let (_, b) = g.api("GET", &format!("/v1/filings/{approved}"), None).await;
    assert_eq!(
        (b["status"].as_str(), b["history"].as_array().map(Vec::len)),
        (Some("approved"), Some(3))
    );
    let (_, b) = g.api("GET", &format!("/v1/filings/{pending}"), None).await;
    assert_eq!(b["status"], "initial_review");
    assert_eq!(gate_says(&g, "kept.cn").await.0, 200);
    assert_eq!(gate_says(&g, "waiting.cn").await.1, "pending_review");
}
