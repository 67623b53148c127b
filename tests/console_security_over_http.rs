//! The review console's rules, over real sockets, as a browser without script sees
//! them:
//!
//! - without a session (none, forged, or ended) every page and form answers 303 to
//!   the login; a valid token answers 303 to the queue with a session cookie that is
//!   `HttpOnly`, `SameSite=Strict`, `Path=/console` and expires after
//!   `admin.session_ttl`; a wrong token gets the form again without a cookie, and
//!   ten of them from one address turn the sign-in into 429;
//! - a form posted without the session's CSRF token, or with another, is 403 and
//!   changes nothing;
//! - every answer refuses framing (`X-Frame-Options: DENY`, CSP `frame-ancestors
//!   'none'`), the CSP allows no script and pages say `Cache-Control: no-store`;
//! - reviews posted through the console are the API's steps: the filing moves, the
//!   history names the named token's holder, the gate serves the domain, an illegal
//!   step shows the API's 409 message; personal data shows only on a reveal;
//! - the language follows the switch link's cookie, else `Accept-Language`;
//! - a checked list downloads as CSV;
//! - the queue lists the oldest initial review first, marks the overdue, pages by 50.

mod common;

use common::{
    csrf_of, filing, set_cookie, set_cookie_line, sha256_hex, start_origin, submission,
    ConsoleClient, TestGate, TOKEN,
};
use std::net::SocketAddr;

use http::StatusCode;

fn location(reply: &common::Reply) -> &str {
    reply
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The named token of "alice" in the gates below, granted `reveal`.
const ALICE: &str = "alice-token-0123456789abcdef0123";

/// A gate with a filing waiting for initial review (id 1), the named token of
/// "alice" besides the shared one, and `admin_lines` in `[admin]`.
async fn gate_with_alice(origin: Option<SocketAddr>, admin_lines: &str) -> TestGate {
    let seed = [filing(
        &["waiting.cn"],
        "initial_review",
        "storefront",
        None,
    )];
    let alice = format!("alice {} reveal\n", sha256_hex(ALICE));
    TestGate::start_with_named_tokens_and(&seed, origin, &alice, admin_lines).await
}

#[tokio::test]
async fn without_a_session_every_page_and_form_goes_to_the_login() {
    let g = TestGate::start(
        &[filing(
            &["waiting.cn"],
            "initial_review",
            "storefront",
            None,
        )],
        None,
        None,
        "",
    )
    .await;
    let mut console = ConsoleClient::new(g.admin);
    for cookie in [None, Some("icpgate_console=forged"), Some("session=forged")] {
        console.cookie = cookie.map(str::to_string);
        for path in [
            "/console/",
            "/console",
            "/console/filings/1",
            "/console/check",
            "/console/traffic",
            "/console/search?q=waiting.cn",
            "/console/nowhere",
        ] {
            let reply = console.get(path).await;
            assert_eq!(reply.status, StatusCode::SEE_OTHER, "{cookie:?} GET {path}");
            assert_eq!(location(&reply), "/console/login", "{path}");
            assert!(!reply.text().contains("waiting.cn"), "{path}");
        }
        for path in [
            "/console/filings/1/initial-review",
            "/console/logout",
            "/console/check",
        ] {
            let reply = console.post(path, &[("approve", "true")]).await;
            assert_eq!(reply.status, StatusCode::SEE_OTHER, "POST {path}");
            assert_eq!(location(&reply), "/console/login");
        }
    }
    let (_, filing) = g.api("GET", "/v1/filings/1", None).await;
    assert_eq!(filing["status"], "initial_review", "nothing was written");
    // The login page and the stylesheet are open.
    console.cookie = None;
    let login = console.get("/console/login").await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.text().contains("name=\"token\""));
    let css = console.get("/console/assets/console.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.headers["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/css"));
}

#[tokio::test]
async fn a_valid_token_opens_a_strict_http_only_session_that_expires() {
    let g = gate_with_alice(None, "session_ttl = \"30m\"").await;
    let mut console = ConsoleClient::new(g.admin);
    let reply = console.sign_in(ALICE).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&reply), "/console/");
    let line = set_cookie_line(&reply, "icpgate_console").expect("session cookie");
    for part in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=1800",
    ] {
        assert!(line.split("; ").any(|p| p == part), "{part} in {line}");
    }
    assert!(!line.contains("Secure"), "plain HTTP: no Secure ({line})");
    let queue = console.get("/console/").await;
    assert_eq!(queue.status, StatusCode::OK);
    assert!(queue.text().contains("waiting.cn"));
    assert!(queue.text().contains("alice"), "the actor is shown");
    // Signing out ends the session on the server, not only in the browser.
    let csrf = csrf_of(&queue.text()).expect("csrf");
    let out = console.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(set_cookie_line(&out, "icpgate_console").is_some_and(|l| l.contains("Max-Age=0")));
    let after = console.get("/console/").await;
    assert_eq!(
        after.status,
        StatusCode::SEE_OTHER,
        "the old cookie no longer works"
    );
}

#[tokio::test]
async fn wrong_tokens_get_the_form_again_and_then_are_throttled() {
    let g = TestGate::start(&[], None, None, "").await;
    let mut console = ConsoleClient::new(g.admin);
    for attempt in 0..10 {
        let reply = console.sign_in("not-the-token").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
        assert!(set_cookie(&reply, "icpgate_console").is_none());
        assert!(reply.text().contains("name=\"token\""), "the form again");
        assert!(reply.text().contains("not valid"), "{}", reply.text());
    }
    // The eleventh, even with the right token, is refused until the minute has passed.
    let reply = console.sign_in(TOKEN).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(set_cookie(&reply, "icpgate_console").is_none());
    assert!(reply.text().contains("Too many failed sign-ins"));
    let metrics = g.metrics().await;
    assert!(
        metrics.contains("icpgate_admin_auth_failures_total 10"),
        "{metrics}"
    );
}

#[tokio::test]
async fn forms_without_the_sessions_csrf_token_are_refused() {
    let g = TestGate::start(
        &[filing(
            &["waiting.cn"],
            "initial_review",
            "storefront",
            None,
        )],
        None,
        None,
        "",
    )
    .await;
    let mut console = ConsoleClient::new(g.admin);
    console.sign_in(TOKEN).await;
    let mut other = ConsoleClient::new(g.admin);
    other.sign_in(TOKEN).await;
    let foreign = other.csrf("/console/").await;
    for csrf in [None, Some(""), Some("0000"), Some(foreign.as_str())] {
        let mut pairs = vec![("approve", "true")];
        if let Some(csrf) = csrf {
            pairs.push(("csrf", csrf));
        }
        for path in [
            "/console/filings/1/initial-review",
            "/console/filings/1/reveal",
            "/console/logout",
            "/console/check",
            "/console/check.csv",
        ] {
            let reply = console.post(path, &pairs).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path} with {csrf:?}");
            assert!(reply.text().contains("CSRF"), "{}", reply.text());
        }
    }
    let (_, filing) = g.api("GET", "/v1/filings/1", None).await;
    assert_eq!(filing["status"], "initial_review");
    assert_eq!(
        console.get("/console/").await.status,
        StatusCode::OK,
        "still signed in"
    );
}

#[tokio::test]
async fn every_answer_refuses_framing_and_script_and_pages_are_not_stored() {
    let g = TestGate::start(
        &[filing(
            &["waiting.cn"],
            "initial_review",
            "storefront",
            None,
        )],
        None,
        None,
        "",
    )
    .await;
    let mut console = ConsoleClient::new(g.admin);
    let login = console.get("/console/login").await;
    console.sign_in(TOKEN).await;
    let mut replies = vec![("login", login)];
    for path in [
        "/console/",
        "/console/filings/1",
        "/console/check",
        "/console/traffic",
        "/console/search?q=x",
    ] {
        replies.push((path, console.get(path).await));
    }
    for (path, reply) in &replies {
        let header = |name: &str| {
            reply
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            csp.contains("default-src 'none'")
                && !csp.contains("script-src")
                && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert_eq!(header("cache-control"), "no-store", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert!(header("content-type").starts_with("text/html"), "{path}");
        assert!(
            !reply.text().contains("<script"),
            "{path}: no script at all"
        );
        assert!(
            !reply.text().contains(" style=\""),
            "{path}: no inline style"
        );
    }
}

#[tokio::test]
async fn reviews_through_the_console_are_the_apis_steps() {
    let origin = start_origin("storefront").await;
    let g = gate_with_alice(Some(origin), "").await;
    assert_ne!(g.get("waiting.cn", "/").await.status, StatusCode::OK);
    let mut console = ConsoleClient::new(g.admin);
    console.sign_in(ALICE).await;

    let csrf = console.csrf("/console/filings/1").await;
    let reply = console
        .post(
            "/console/filings/1/initial-review",
            &[("approve", "true"), ("reason", "材料齐全"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&reply), "/console/filings/1");
    let page = console.get("/console/filings/1").await.text();
    assert!(page.contains("Recorded:"), "flash: {page}");
    assert!(page.contains("材料齐全"), "the reason in the timeline");
    let again = console.get("/console/filings/1").await.text();
    assert!(!again.contains("Recorded:"), "a flash shows once");

    // An illegal step: the API's 409 message, shown in the page.
    let reply = console
        .post(
            "/console/filings/1/initial-review",
            &[("approve", "true"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let page = console.get("/console/filings/1").await.text();
    let (_, api_409) = g
        .api(
            "POST",
            "/v1/filings/1/initial-review",
            Some(serde_json::json!({"approve": true})),
        )
        .await;
    let detail = api_409["detail"].as_str().expect("409 detail");
    let detail = detail.replace('"', "&quot;");
    assert!(
        page.contains("this step is not allowed") && page.contains(&detail),
        "{detail} in {page}"
    );
    // In Chinese: the refusal's own line, the API's message kept as the detail.
    console
        .headers
        .push(("accept-language".into(), "zh-CN".into()));
    console
        .post(
            "/console/filings/1/initial-review",
            &[("approve", "true"), ("csrf", &csrf)],
        )
        .await;
    let page = console.get("/console/filings/1").await.text();
    assert!(
        page.contains("备案当前状态不允许此步骤") && page.contains(&detail),
        "{detail} in {page}"
    );
    console.headers.pop();

    // An ending step needs its confirmation box.
    let reply = console
        .post("/console/filings/1/abandon", &[("csrf", &csrf)])
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert!(console
        .get("/console/filings/1")
        .await
        .text()
        .contains("confirmation box"));

    let reply = console
        .post(
            "/console/filings/1/authority-review",
            &[
                ("approve", "true"),
                ("icp_number", "浙ICP备44556677号-1"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let (_, filing) = g.api("GET", "/v1/filings/1", None).await;
    assert_eq!(filing["status"], "approved");
    assert_eq!(filing["icp_number"], "浙ICP备44556677号-1");
    let actors: Vec<&str> = filing["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["actor"].as_str())
        .collect();
    assert_eq!(
        &actors[actors.len() - 2..],
        ["alice", "alice"],
        "{actors:?}"
    );
    assert_eq!(
        g.get("waiting.cn", "/").await.status,
        StatusCode::OK,
        "the gate serves it at once"
    );
    let page = console.get("/console/filings/1").await.text();
    assert!(page.contains("served"), "what the gate does now: {page}");
}

#[tokio::test]
async fn personal_data_shows_only_when_revealed_by_a_token_granted_reveal() {
    let g = gate_with_alice(None, "").await;
    let (status, filing) = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["shop.cn"], "new", None)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let page_path = format!("/console/filings/{}", filing["id"]);
    let secrets = ["13800000000", "ops@example.cn", "91330100MA27XXXX1X"];
    // The shared token names no one to audit: it may not reveal.
    let mut shared = ConsoleClient::new(g.admin);
    shared.sign_in(TOKEN).await;
    let page = shared.get(&page_path).await.text();
    assert!(
        !page.contains("id=\"reveal\"") && page.contains("id=\"reveal-not-granted\""),
        "no button without the grant, and a note why: {page}"
    );
    let csrf = csrf_of(&page).expect("csrf");
    let refused = shared
        .post(&format!("{page_path}/reveal"), &[("csrf", &csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let mut console = ConsoleClient::new(g.admin);
    console.sign_in(ALICE).await;
    let page = console.get(&page_path).await.text();
    assert!(page.contains("id=\"reveal\""), "the button with the grant");
    assert!(!page.contains("reveal-not-granted"));
    for secret in secrets {
        assert!(!page.contains(secret), "{secret} masked");
        assert!(!refused.text().contains(secret), "{secret} not revealed");
    }
    let csrf = csrf_of(&page).expect("csrf");
    let revealed = console
        .post(&format!("{page_path}/reveal"), &[("csrf", &csrf)])
        .await;
    assert_eq!(revealed.status, StatusCode::OK);
    assert_eq!(revealed.headers["cache-control"], "no-store");
    for secret in secrets {
        assert!(revealed.text().contains(secret), "{secret} revealed");
    }
    // A filing that is not there: 404, as the API answers, with nothing to audit.
    let missing = console
        .post("/console/filings/999999/reveal", &[("csrf", &csrf)])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // Search finds it by domain (one hit: straight to the filing) and lists are masked.
    let hit = console.get("/console/search?q=www.shop.cn").await;
    assert_eq!(hit.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&hit), page_path);
    let none = console.get("/console/search?q=nothing.cn").await;
    assert!(none.text().contains("No filing found"));
}

#[tokio::test]
async fn the_language_follows_the_switch_then_the_browser() {
    let g = TestGate::start(&[], None, None, "").await;
    let mut console = ConsoleClient::new(g.admin);
    console
        .headers
        .push(("accept-language".into(), "zh-CN,zh;q=0.9".into()));
    let login = console.get("/console/login").await.text();
    assert!(
        login.contains("lang=\"zh-CN\"") && login.contains("管理令牌"),
        "{login}"
    );
    let wrong = console.sign_in("nope").await.text();
    assert!(wrong.contains("令牌无效"), "errors in Chinese too: {wrong}");
    console.sign_in(TOKEN).await;
    assert!(console
        .get("/console/check")
        .await
        .text()
        .contains("检查域名"));
    let switch = console.get("/console/lang?to=en&back=/console/check").await;
    assert_eq!(switch.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&switch), "/console/check");
    let lang = set_cookie(&switch, "icpgate_lang").expect("language cookie");
    assert_eq!(lang, "icpgate_lang=en");
    let session = console.cookie.clone().unwrap_or_default();
    console.cookie = Some(format!("{session}; {lang}"));
    let page = console.get("/console/check").await.text();
    assert!(
        page.contains("Check domains") && page.contains("lang=\"en\""),
        "{page}"
    );
    // The link goes back only to console pages.
    for back in ["https://evil.example/", "//evil.example/", "/v1/filings"] {
        let reply = console
            .get(&format!("/console/lang?to=zh&back={back}"))
            .await;
        assert_eq!(location(&reply), "/console/", "{back}");
    }
}

#[tokio::test]
async fn a_checked_list_downloads_as_csv() {
    let seed = [
        filing(
            &["example.com"],
            "approved",
            "storefront",
            Some("浙ICP备12345678号-1"),
        ),
        filing(&["pending.cn"], "initial_review", "storefront", None),
    ];
    let g = TestGate::start(&seed, None, None, "").await;
    let mut console = ConsoleClient::new(g.admin);
    console.sign_in(TOKEN).await;
    let csrf = console.csrf("/console/check").await;
    let list = "www.example.com\npending.cn\n# a comment\nunfiled.org";
    let page = console
        .post("/console/check", &[("domains", list), ("csrf", &csrf)])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let text = page.text();
    assert!(
        text.contains("not filed")
            && text.contains("review pending")
            && text.contains("/console/filings/1"),
        "{text}"
    );
    let csv = console
        .post("/console/check.csv", &[("domains", list), ("csrf", &csrf)])
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/csv"));
    assert!(csv.headers["content-disposition"]
        .to_str()
        .unwrap_or("")
        .contains("attachment"));
    let body = csv.text();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "a header and one line per domain: {lines:?}"
    );
    assert!(
        lines[1].starts_with("www.example.com,") && lines[1].contains("filed"),
        "{lines:?}"
    );
    assert!(
        lines[3].starts_with("unfiled.org,") && lines[3].contains("not_filed"),
        "{lines:?}"
    );
}

/// The queue: initial reviews oldest first, overdue ones (past one working day,
/// here a month) marked, 50 rows a page with links to page on.
#[tokio::test]
async fn the_queue_marks_overdue_reviews_and_pages() {
    let old = serde_json::json!({
        "domains": ["forgotten.cn"], "product": "storefront", "status": "initial_review",
        "entity": {"name": "e", "type": "enterprise"}, "website": {"name": "w"},
        "created_at": "2026-11-02T02:00:00Z", "updated_at": "2026-11-02T02:00:00Z",
        "history": [{"at": "2026-11-02T02:00:00Z", "actor": "portal", "from": null,
                     "to": "initial_review", "reason": null}],
    });
    let mut seed = vec![old.to_string()];
    for n in 0..54 {
        seed.push(filing(
            &[&format!("shop{n}.cn")],
            "initial_review",
            "storefront",
            None,
        ));
    }
    seed.push(filing(
        &["authority.cn"],
        "authority_review",
        "storefront",
        None,
    ));
    let g = TestGate::start(&seed, None, None, "").await;
    let mut console = ConsoleClient::new(g.admin);
    console.sign_in(TOKEN).await;
    let first = console.get("/console/").await.text();
    // one "#id" link per row
    let rows = |html: &str| html.matches("\">#").count();
    assert_eq!(
        rows(&first),
        51,
        "50 initial reviews and the one authority review"
    );
    assert!(first.contains("(55)"), "the total is shown");
    let forgotten = first.find("forgotten.cn").expect("the oldest is listed");
    assert!(
        forgotten < first.find("shop0.cn").expect("shop0"),
        "oldest first"
    );
    assert_eq!(
        first.matches("class=\"overdue\"").count(),
        1,
        "only the month-old one"
    );
    assert!(first.contains("href=\"/console/?page=1\"") && !first.contains("?page=0"));
    let second = console.get("/console/?page=1").await.text();
    assert_eq!(rows(&second), 5);
    assert!(second.contains("href=\"/console/?page=0\"") && !second.contains("?page=2"));
}
