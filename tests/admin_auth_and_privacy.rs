//! The contract these tests pin: who may write, who sees personal data, and how the
//! admin API refuses.
//!
//! - every write answers 401 without a token or with a wrong one, and 403 saying how
//!   to set one when no token is configured; reads need the token too (issue 15),
//!   unless `admin.public_reads`; ten wrong tokens from one address within a minute
//!   turn every later request needing a token into a 429 with `Retry-After`;
//! - the admin listener answers only its own Host names (421 otherwise, against DNS
//!   rebinding), says `nosniff`, and refuses a short shared token at start and on
//!   reload without quoting it;
//! - certificate numbers, phones and e-mails are masked in lists (even with the
//!   token) and in a single filing read without the token, shown in full with it;
//! - every validation problem is a 400 `{"error", "detail"}` naming the field;
//! - the OpenAPI document is served; unknown paths 404, wrong methods 405.

mod common;

use common::{sha256_hex, submission, TestGate, TOKEN};
use serde_json::{json, Value};

async fn gate() -> TestGate {
    TestGate::start(&[], None, None, "").await
}

#[tokio::test]
async fn writes_need_the_token() {
    let mut g = gate().await;
    let (_, b) = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["a.cn"], "new", None)),
        )
        .await;
    let id = b["id"].as_i64().expect("id");
    let writes = [
        (
            "/v1/filings".to_string(),
            submission(&["b.cn"], "new", None),
        ),
        (
            format!("/v1/filings/{id}/initial-review"),
            json!({"approve": true}),
        ),
        (
            format!("/v1/filings/{id}/authority-review"),
            json!({"approve": true}),
        ),
        (format!("/v1/filings/{id}/resubmit"), json!({})),
        (format!("/v1/filings/{id}/abandon"), json!({})),
        (format!("/v1/filings/{id}/cancel"), json!({})),
        (format!("/v1/filings/{id}/disconnect"), json!({})),
        (
            format!("/v1/filings/{id}/change"),
            json!({"website": {"name": "x"}}),
        ),
    ];
    // A prefix of the token is as wrong as any other; each wrong token is a failure,
    // and ten of them from one address are all it gets (issue 15): spread them
    // over the writes, then the eleventh is refused.
    let prefix = &TOKEN[..TOKEN.len() - 1];
    let mut failures = 0;
    for (path, body) in &writes {
        // A missing token is no failure, but a client over the limit is refused
        // whatever it presents.
        let want = |failures: i32| {
            if failures < 10 {
                (401, Some("unauthorized"))
            } else {
                (429, Some("too_many_failures"))
            }
        };
        let (s, b) = g.api_with("POST", path, Some(body.clone()), None).await;
        assert_eq!(
            (s.as_u16(), b["error"].as_str()),
            want(failures),
            "{path} without a token"
        );
        for token in ["wrong", prefix] {
            let (s, b) = g
                .api_with("POST", path, Some(body.clone()), Some(token))
                .await;
            let want = want(failures);
            assert_eq!((s.as_u16(), b["error"].as_str()), want, "{path} {token:?}");
            failures += 1;
        }
    }
    let metrics = g.metrics().await;
    assert!(
        metrics.contains("\nicpgate_admin_auth_failures_total 10\n"),
        "ten failures counted, refusals not"
    );
    // A restart forgets the failures; nothing changed.
    g.restart().await;
    let (_, b) = g.api("GET", &format!("/v1/filings/{id}"), None).await;
    assert_eq!(b["history"].as_array().map(Vec::len), Some(1));
    // Reads need the token too.
    for path in [
        "/v1/filings",
        "/v1/filings/1",
        "/v1/decision?host=a.cn",
        "/v1/check?domain=a.cn",
        "/v1/blocked-hosts",
        "/v1/openapi.json",
    ] {
        let (s, _) = g.api_with("GET", path, None, None).await;
        assert_eq!(s, 401, "{path}");
    }

    // No token configured: writes refused with 403 and how to set one.
    g.restart_with_token_env("ICPGATE_TEST_UNSET_TOKEN_VAR")
        .await;
    for (path, body) in &writes {
        let (s, b) = g
            .api_with("POST", path, Some(body.clone()), Some(TOKEN))
            .await;
        assert_eq!(s, 403, "{path}");
        assert_eq!(b["error"], "no_token_configured");
        let detail = b["detail"].as_str().unwrap_or("");
        assert!(detail.contains("ICPGATE_TEST_UNSET_TOKEN_VAR"), "{detail}");
    }
}

#[tokio::test]
async fn personal_data_stays_masked_unless_a_granted_token_reveals_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("admin-tokens");
    let lines = format!(
        "auditor {} reveal\nclerk {}\n",
        sha256_hex("auditor-token"),
        sha256_hex("clerk-token")
    );
    std::fs::write(&file, lines).expect("write tokens");
    let g = TestGate::start_with_admin(&[], &format!("tokens_file = \"{}\"", file.display())).await;
    let (s, b) = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["private.cn"], "new", None)),
        )
        .await;
    assert_eq!(s, 201);
    let id = b["id"].as_i64().expect("id");
    let secrets = ["91330100MA27XXXX1X", "13800000000", "ops@example.cn"];

    let views: [(&str, Option<&str>); 5] = [
        // the submitter's own answer, reads, lists: masked for every token
        ("/v1/filings/ID", Some(TOKEN)),
        ("/v1/filings/ID", Some("clerk-token")),
        ("/v1/filings/ID", Some("auditor-token")),
        ("/v1/filings", Some(TOKEN)),
        ("/v1/filings?domain=private.cn", Some(TOKEN)),
    ];
    let mut shown = vec![("POST /v1/filings".to_string(), b)];
    for (path, token) in views {
        let path = path.replace("ID", &id.to_string());
        let (s, b) = g.api_with("GET", &path, None, token).await;
        assert_eq!(s, 200, "{path}");
        shown.push((format!("{path} as {token:?}"), b));
    }
    for (what, b) in shown {
        let text = b.to_string();
        for secret in secrets {
            assert!(!text.contains(secret), "{what} leaks {secret}: {text}");
        }
        let filing: &Value = b.get("filings").map_or(&b, |list| &list[0]);
        // Masked, not dropped: the fields are there, their middle hidden.
        assert!(
            filing["website"]["owner"]["phone"]
                .as_str()
                .is_some_and(|p| p.starts_with("138") && p.contains('*')),
            "{what}: {filing}"
        );
        assert!(
            filing["website"]["owner"]["email"]
                .as_str()
                .is_some_and(|e| e.contains('*') && e.ends_with("example.cn")),
            "{what}: {filing}"
        );
        assert!(filing["entity"]["certificate_number"]
            .as_str()
            .is_some_and(|c| c.contains('*')));
    }

    // ?reveal=true: only the token granted `reveal` sees the data in clear.
    let reveal = format!("/v1/filings/{id}?reveal=true");
    for token in [TOKEN, "clerk-token"] {
        let (s, b) = g.api_with("GET", &reveal, None, Some(token)).await;
        assert_eq!(
            (s.as_u16(), b["error"].as_str()),
            (403, Some("forbidden")),
            "{b}"
        );
    }
    let (s, full) = g
        .api_with("GET", &reveal, None, Some("auditor-token"))
        .await;
    assert_eq!(s, 200, "{full}");
    assert_eq!(full["website"]["owner"]["phone"], "13800000000");
    assert_eq!(full["website"]["owner"]["email"], "ops@example.cn");
    assert_eq!(full["entity"]["certificate_number"], "91330100MA27XXXX1X");
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field() {
    let g = gate().await;
    let base = submission(&["valid.cn"], "new", None);
    let with = |pointer: &str, value: Value| {
        let mut body = base.clone();
        *body.pointer_mut(pointer).expect("pointer") = value;
        body
    };
    let without = |key: &str| {
        let mut body = base.clone();
        body.as_object_mut().expect("object").remove(key);
        body
    };
    let cases: Vec<(Value, &str)> = vec![
        (without("domains"), "domains"),
        (with("/domains", json!([])), "domains"),
        (with("/domains", json!(["not a domain"])), "domains"),
        (with("/domains", json!(["com.cn"])), "public suffix"),
        (with("/product", json!("teleport")), "product"),
        (with("/kind", json!("borrowed")), "kind"),
        (with("/entity/name", json!(" ")), "entity.name"),
        (with("/entity/type", json!("club")), "entity.type"),
        (with("/entity/province", json!("XX")), "entity.province"),
        (
            with("/entity/certificate_number", json!("12")),
            "entity.certificate_number",
        ),
        (with("/website/name", json!("")), "website.name"),
        (
            with("/website/owner/phone", json!("12345")),
            "website.owner.phone",
        ),
        (
            with("/website/owner/email", json!("nobody")),
            "website.owner.email",
        ),
        (
            submission(&["valid.cn"], "new", Some("浙ICP备20231234号-1")),
            "icp_number",
        ),
        (with("/kind", json!("access_existing")), "icp_number"),
        (
            json!({"domains": ["x.cn"], "product": "storefront", "entity": {"name": "a"}, "website": {"name": "b"}, "colour": 1}),
            "colour",
        ),
    ];
    for (body, field) in cases {
        let (s, b) = g.api("POST", "/v1/filings", Some(body.clone())).await;
        assert_eq!(
            (s.as_u16(), b["error"].as_str()),
            (400, Some("bad_request")),
            "{field}: {b}"
        );
        let detail = b["detail"].as_str().unwrap_or("");
        assert!(detail.contains(field), "want {field:?} in {detail:?}");
    }
    let (s, b) = g
        .api(
            "POST",
            "/v1/filings",
            Some(with("/entity/type", json!("individual"))),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_i64().expect("id");
    let steps = [
        ("initial-review", json!({}), "approve"),
        ("initial-review", json!({"approve": false}), "reason"),
        ("initial-review", json!({"approve": "yes"}), "approve"),
        ("abandon", json!({"reason": 5}), "reason"),
        ("change", json!({}), "entity, website or both"),
        (
            "change",
            json!({"website": {"name": "ok", "owner": {"name": "x", "email": "bad"}}}),
            "website.owner.email",
        ),
    ];
    for (action, body, field) in steps {
        let (s, b) = g
            .api("POST", &format!("/v1/filings/{id}/{action}"), Some(body))
            .await;
        assert_eq!(s, 400, "{action}: {b}");
        assert!(
            b["detail"].as_str().unwrap_or("").contains(field),
            "{action}: want {field:?} in {b}"
        );
    }
    g.api(
        "POST",
        &format!("/v1/filings/{id}/initial-review"),
        Some(json!({"approve": true})),
    )
    .await;
    for (body, field) in [
        (json!({"approve": true}), "icp_number"),
        (
            json!({"approve": true, "icp_number": "XYICP备1234号"}),
            "icp_number",
        ),
    ] {
        let (s, b) = g
            .api(
                "POST",
                &format!("/v1/filings/{id}/authority-review"),
                Some(body),
            )
            .await;
        assert_eq!(s, 400, "{b}");
        assert!(b["detail"].as_str().unwrap_or("").contains(field), "{b}");
    }
    let (s, _) = g.api("GET", "/v1/filings?status=lost", None).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn the_document_is_served_and_strays_are_refused() {
    let g = gate().await;
    let (s, _) = g.api_with("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(s, 401);
    let (s, doc) = g.api("GET", "/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(doc["paths"]["/v1/filings/{id}/change"]["post"].is_object());
    for route in icpgate::admin::routes() {
        assert!(
            doc["paths"][route.path][route.method.to_lowercase()].is_object(),
            "{}",
            route.path
        );
    }
    let cases = [
        ("GET", "/v1/nothing", 404, "not_found"),
        ("GET", "/v1/filings/999", 404, "not_found"),
        ("POST", "/v1/filings/999/abandon", 404, "not_found"),
        ("POST", "/v1/filings/1/teleport", 404, "not_found"),
        ("DELETE", "/v1/filings", 405, "method_not_allowed"),
        ("POST", "/healthz", 405, "method_not_allowed"),
    ];
    for (method, path, status, code) in cases {
        let (s, b) = g.api(method, path, Some(json!({}))).await;
        assert_eq!(
            (s.as_u16(), b["error"].as_str()),
            (status, Some(code)),
            "{method} {path}"
        );
        assert!(b["detail"].is_string());
    }
}

#[tokio::test]
async fn a_token_file_rotates_on_reload_without_a_restart() {
    let mut g = gate().await;
    let file = g.dir.path().join("rotating-token");
    let first = "first-token-0123456789abcdef-0123456789";
    let second = "second-token-0123456789abcdef-0123456789";
    std::fs::write(&file, format!("{first}\n")).expect("write token");
    g.set_token_source(&format!("token_file = \"{}\"", file.display()));
    g.restart().await;
    let body = submission(&["rotate.cn"], "new", None);
    let (status, _) = g
        .api_with("POST", "/v1/filings", Some(body.clone()), Some(first))
        .await;
    assert_eq!(status, 201);

    std::fs::write(&file, second).expect("rotate token");
    g.running
        .as_ref()
        .expect("running")
        .reload()
        .expect("reload");
    let body = submission(&["rotate2.cn"], "new", None);
    let (status, _) = g
        .api_with("POST", "/v1/filings", Some(body.clone()), Some(first))
        .await;
    assert_eq!(status, 401, "the old token no longer works");
    let (status, _) = g
        .api_with("POST", "/v1/filings", Some(body), Some(second))
        .await;
    assert_eq!(status, 201, "the rotated token works");

    // An unreadable token file refuses the reload and keeps the token in force.
    std::fs::remove_file(&file).expect("remove token file");
    assert!(g.running.as_ref().expect("running").reload().is_err());
    let body = submission(&["rotate3.cn"], "new", None);
    let (status, _) = g
        .api_with("POST", "/v1/filings", Some(body), Some(second))
        .await;
    assert_eq!(status, 201);
}

/// POST `path` with `token` and an `X-Icpgate-Actor` claim; the status and body.
async fn post_as(g: &TestGate, path: &str, token: &str, claim: &str, body: Value) -> (u16, Value) {
    let actor = [("x-icpgate-actor", claim)];
    let reply =
        common::admin_request(g.admin, "POST", path, Some(token), &actor, Some(&body)).await;
    (reply.status.as_u16(), reply.json())
}

fn actors(filing: &Value) -> Vec<String> {
    filing["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|entry| entry["actor"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Named tokens (`admin.tokens_file`): the history names who made each change, and a
/// named caller cannot claim to be someone else; the shared token still works as
/// before. A reload rotates the file; a broken file is refused and the old names stay.
#[tokio::test]
async fn named_tokens_put_their_name_in_the_history_and_rotate_on_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("admin-tokens");
    std::fs::write(
        &file,
        format!(
            "# compliance staff\nalice {}\nportal {}\n",
            sha256_hex("alice-token"),
            sha256_hex("portal-token")
        ),
    )
    .expect("write tokens");
    let g = TestGate::start_with_admin(&[], &format!("tokens_file = \"{}\"", file.display())).await;

    let (status, filing) = post_as(
        &g,
        "/v1/filings",
        "alice-token",
        "mallory",
        submission(&["named.cn"], "new", None),
    )
    .await;
    assert_eq!(status, 201, "{filing}");
    let id = filing["id"].as_i64().expect("id");
    let step = format!("/v1/filings/{id}/initial-review");
    let (status, filing) = post_as(&g, &step, TOKEN, "bob", json!({"approve": true})).await;
    assert_eq!(status, 200, "{filing}");
    assert_eq!(
        actors(&filing),
        ["alice", "bob"],
        "named, then shared with a claim"
    );

    let (status, _) = post_as(&g, "/v1/filings", "nobody-token", "x", json!({})).await;
    assert_eq!(status, 401);

    // Rotate: alice leaves.
    std::fs::write(&file, format!("portal {}\n", sha256_hex("portal-token"))).expect("rotate");
    let running = g.running.as_ref().expect("running");
    running.reload().expect("reload");
    let submit = |token: &'static str, domain: &'static str| {
        post_as(
            &g,
            "/v1/filings",
            token,
            "x",
            submission(&[domain], "new", None),
        )
    };
    assert_eq!(submit("alice-token", "after-rotation.cn").await.0, 401);
    assert_eq!(submit("portal-token", "by-portal.cn").await.0, 201);

    // A broken file is refused with its line; the names in force stay.
    std::fs::write(&file, "portal not-a-hash\n").expect("break");
    let error = running
        .reload()
        .expect_err("a broken tokens file is refused");
    assert!(
        error
            .to_string()
            .contains(&format!("{}:1:", file.display())),
        "{error}"
    );
    assert_eq!(submit("portal-token", "still-portal.cn").await.0, 201);
}

/// Named tokens alone are a configuration: writes are open to them, not refused as
/// "no token configured".
#[tokio::test]
async fn named_tokens_alone_allow_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("admin-tokens");
    std::fs::write(&file, format!("ci-bot {}\n", sha256_hex("bot-token"))).expect("write");
    let mut g =
        TestGate::start_with_admin(&[], &format!("tokens_file = \"{}\"", file.display())).await;
    g.restart_with_token_env("ICPGATE_TEST_UNSET_TOKEN").await;
    let (status, filing) = post_as(
        &g,
        "/v1/filings",
        "bot-token",
        "",
        submission(&["bot.cn"], "new", None),
    )
    .await;
    assert_eq!(status, 201, "{filing}");
    assert_eq!(actors(&filing), ["ci-bot"]);
    let (status, _) = post_as(&g, "/v1/filings", TOKEN, "", json!({})).await;
    assert_eq!(status, 401, "the unset shared token is no token");
}
