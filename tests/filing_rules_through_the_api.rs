//! The contract these tests pin (issue 16): the filing rules the authority enforces,
//! through the admin API over a real socket. Each refusal answers its status with a
//! detail naming what to fix, and leaves the registry as it was:
//!
//! - a filing names registrable domains: 400 naming the domain to file instead;
//! - text fields keep their limits: 400 naming the field path;
//! - every step takes exactly its fields: 400 naming the field;
//! - an ICP number belongs to one entity (409 naming the holder), is the entity's
//!   province's and a website's (`-N`) (400);
//! - an access-existing submission carries its filing password, which no answer
//!   ever echoes;
//! - a change cannot swap the entity (409) and the approved site keeps serving;
//! - the authority cancels an abandoned filing's number.

mod common;

use common::TestGate;
use serde_json::{json, Value};

fn zhe() -> Value {
    json!({"name": "杭州示例科技有限公司", "type": "enterprise",
           "certificate_number": "91330100MA27XXXX1X", "province": "浙",
           "owner": {"name": "李四", "phone": "13900000001", "email": "boss@example.cn"}})
}

fn beijing() -> Value {
    json!({"name": "北京另一家科技有限公司", "type": "enterprise",
           "certificate_number": "91110000MA01YYYY2Y", "province": "京"})
}

fn website() -> Value {
    json!({"name": "示例旺铺", "owner": {"name": "张三", "phone": "13800000000"}})
}

fn filing(domain: &str, entity: Value) -> Value {
    json!({"domains": [domain], "product": "storefront", "kind": "new",
           "entity": entity, "website": website()})
}

async fn submit(g: &TestGate, body: Value) -> (u16, Value) {
    let (status, body) = g.api("POST", "/v1/filings", Some(body)).await;
    (status.as_u16(), body)
}

async fn step(g: &TestGate, id: i64, name: &str, body: Value) -> (u16, Value) {
    let path = format!("/v1/filings/{id}/{name}");
    let (status, body) = g.api("POST", &path, Some(body)).await;
    (status.as_u16(), body)
}

/// A filing of `entity` for `domain`, approved with `number`.
async fn approved(g: &TestGate, domain: &str, entity: Value, number: &str) -> i64 {
    let (status, body) = submit(g, filing(domain, entity)).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_i64().expect("id");
    step(g, id, "initial-review", json!({"approve": true})).await;
    let approval = json!({"approve": true, "icp_number": number});
    let (status, body) = step(g, id, "authority-review", approval).await;
    assert_eq!(status, 200, "{body}");
    id
}

fn detail(body: &Value) -> &str {
    body["detail"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn submissions_that_break_a_rule_are_refused_naming_it() {
    let g = TestGate::start(&[], None, None, "").await;
    let with = |field: &str, value: Value| {
        let mut body = filing("rules-x.cn", zhe());
        body[field] = value;
        body
    };
    let website_named = |name: &str| json!({"name": name});
    let cases: Vec<(Value, u16, &str)> = vec![
        // a name under a private suffix: file the ICANN registrable domain
        (
            with("domains", json!(["myshop.github.io"])),
            400,
            "file github.io instead",
        ),
        // a subdomain
        (
            with("domains", json!(["www.rules-a.cn"])),
            400,
            "file rules-a.cn instead",
        ),
        // CR/LF in a name (header or log injection)
        (
            with("website", website_named("旺铺\r\nX-Evil: 1")),
            400,
            "website.name",
        ),
        // a name of invisible characters only
        (
            with("website", website_named("\u{200b}\u{200b}")),
            400,
            "website.name",
        ),
        // a right-to-left override
        (
            with("website", website_named("abc\u{202e}gpj")),
            400,
            "website.name",
        ),
        // 101 characters
        (
            with("website", website_named(&"名".repeat(101))),
            400,
            "at most 100",
        ),
        // access-existing without its filing password
        (
            json!({"domains": ["rules-e.cn"], "product": "storefront", "kind": "access_existing",
                   "entity": zhe(), "website": website(), "icp_number": "浙ICP备30000005号-2"}),
            400,
            "filing_password",
        ),
        // a new filing gets no password
        (
            with("filing_password", json!("pw-123456")),
            400,
            "filing_password",
        ),
    ];
    for (body, want, names) in cases {
        let (status, answer) = submit(&g, body.clone()).await;
        assert_eq!(status, want, "{body}: {answer}");
        assert!(detail(&answer).contains(names), "{body}: {answer}");
    }
    let (_, list) = g.api("GET", "/v1/filings", None).await;
    assert_eq!(list["filings"], json!([]), "nothing refused was stored");
}

#[tokio::test]
async fn numbers_belong_to_one_entity_of_their_province() {
    let g = TestGate::start(&[], None, None, "").await;
    let held = approved(&g, "rules-a.cn", zhe(), "浙ICP备30000001号-1").await;
    let (_, b) = submit(&g, filing("rules-b.cn", beijing())).await;
    let other = b["id"].as_i64().expect("id");
    step(&g, other, "initial-review", json!({"approve": true})).await;
    let approve = |number: &str| json!({"approve": true, "icp_number": number});
    let cases = [
        // another entity's number: 409 naming the holder
        ("浙ICP备30000001号-1", 409, format!("filing {held}")),
        // another province's number
        ("浙ICP备30000002号-1", 400, "province 京".to_string()),
        // an entity number without the website's -N
        ("京ICP备30000003号", 400, "-N".to_string()),
    ];
    for (number, want, names) in cases {
        let (status, body) = step(&g, other, "authority-review", approve(number)).await;
        assert_eq!(status, want, "{number}: {body}");
        assert!(detail(&body).contains(&names), "{number}: {body}");
    }
    // Access to an existing filing cannot claim it either.
    let access = json!({"domains": ["rules-c.cn"], "product": "storefront",
        "kind": "access_existing", "entity": beijing(), "website": website(),
        "icp_number": "浙ICP备30000001号-1", "filing_password": "pw-123456"});
    let (status, body) = submit(&g, access).await;
    assert_eq!(status, 409, "{body}");
    // The same entity files its second website under its number.
    approved(&g, "rules-second.cn", zhe(), "浙ICP备30000001号-2").await;
}

#[tokio::test]
async fn steps_take_exactly_their_fields_and_keep_the_entity() {
    let g = TestGate::start(&[], None, None, "").await;
    let (_, b) = submit(&g, filing("rules-d.cn", zhe())).await;
    let id = b["id"].as_i64().expect("id");
    let refusals = [
        (
            "initial-review",
            json!({"approve": true, "icp_number": "浙ICP备30000009号-1"}),
            "icp_number",
        ),
        ("cancel", json!({"approve": true}), "approve"),
        (
            "initial-review",
            json!({"approve": false, "reason": "x".repeat(300_000)}),
            "reason",
        ),
        (
            "initial-review",
            json!({"approve": false, "reason": "a\u{0}b"}),
            "reason",
        ),
    ];
    for (name, body, names) in refusals {
        let (status, answer) = step(&g, id, name, body).await;
        assert_eq!(status, 400, "{name}: {answer}");
        assert!(detail(&answer).starts_with(names), "{name}: {answer}");
    }
    let (_, unchanged) = g.api("GET", &format!("/v1/filings/{id}"), None).await;
    assert_eq!(unchanged["history"].as_array().map(Vec::len), Some(1));

    // A change swapping the certificate number is refused; the site stays approved.
    let approved_id = approved(&g, "rules-keep.cn", zhe(), "浙ICP备30000021号-1").await;
    let (status, body) = step(&g, approved_id, "change", json!({"entity": beijing()})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        detail(&body).contains("cancel this filing and file anew"),
        "{body}"
    );
    let (_, still) = g
        .api("GET", &format!("/v1/filings/{approved_id}"), None)
        .await;
    assert_eq!(still["status"], "approved");
    assert_eq!(still["entity"]["province"], "浙");
}

#[tokio::test]
async fn the_password_is_never_echoed_and_a_wrong_number_can_be_corrected() {
    let g = TestGate::start(&[], None, None, "").await;
    let password = "Sekret-Filing-PW-7781";
    let access = json!({"domains": ["rules-e.cn"], "product": "corporate_site",
        "kind": "access_existing", "entity": zhe(), "website": website(),
        "icp_number": "浙ICP备30000005号-2", "filing_password": password});
    let (status, body) = submit(&g, access).await;
    assert_eq!(status, 201, "{body}");
    assert!(!body.to_string().contains(password));
    let id = body["id"].as_i64().expect("id");
    let (_, read) = g.api("GET", &format!("/v1/filings/{id}"), None).await;
    assert!(!read.to_string().contains(password));
    let reject = json!({"approve": false, "reason": "备案号与域名不符"});
    step(&g, id, "initial-review", reject).await;
    let corrected = json!({"icp_number": "浙ICP备30000006号-2"});
    let (status, body) = step(&g, id, "resubmit", corrected).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["icp_number"], "浙ICP备30000006号-2");

    // The authority cancels the number of an abandoned filing.
    let (_, b) = submit(&g, filing("rules-f.cn", zhe())).await;
    let abandoned = b["id"].as_i64().expect("id");
    step(&g, abandoned, "abandon", json!({})).await;
    let (status, body) = step(&g, abandoned, "cancel", json!({"reason": "管局注销"})).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
}
