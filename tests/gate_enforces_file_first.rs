//! The contract these tests pin (SPEC §2): only a host whose registrable domain has an
//! approved filing reaches an upstream, the one its product names; every other host
//! gets the block response with exactly one reason, and never touches an upstream.
//! Refusals are proven as carefully as admissions: a gate that says yes to
//! everything is silently off.

mod common;

use std::time::Duration;

use common::*;

async fn gate() -> (TestGate, std::net::SocketAddr, std::net::SocketAddr) {
    let storefront = start_origin("storefront").await;
    let corporate = start_origin("corporate").await;
    let gate = TestGate::start(&standard_seed(), Some(storefront), Some(corporate), "").await;
    (gate, storefront, corporate)
}

#[tokio::test]
async fn filed_hosts_reach_their_products_pool_and_others_are_blocked_with_their_reason() {
    let (gate, _, _) = gate().await;
    let cases: &[(&str, u16, Option<&str>, Option<&str>)] = &[
        // approved storefront filing; subdomains are covered
        ("example.com", 200, None, Some("storefront")),
        ("shop.example.com", 200, None, Some("storefront")),
        // uppercase, trailing dot and port are normalised away
        ("EXAMPLE.com.:8080", 200, None, Some("storefront")),
        // the corporate-site product routes to its own pool
        ("www.example.com.cn", 200, None, Some("corporate")),
        // IDN filed in Unicode, requested in punycode
        ("www.xn--fsqu00a.xn--fiqs8s", 200, None, Some("storefront")),
        // a lookalike that merely contains a filed name
        ("example.com.cn.evil.com", 451, Some("not_filed"), None),
        ("notexample.com", 451, Some("not_filed"), None),
        // a bare public suffix can never be filed
        ("com.cn", 451, Some("not_filed"), None),
        // each lifecycle status blocks with its own reason
        ("pending.cn", 451, Some("pending_review"), None),
        ("www.authority.cn", 451, Some("pending_review"), None),
        ("www.rejected.net", 451, Some("rejected"), None),
        ("gone.org", 451, Some("abandoned"), None),
        ("cancelled.com", 451, Some("cancelled"), None),
        ("left.cn", 451, Some("disconnected"), None),
        // direct-IP access bypasses filing
        ("127.0.0.1", 451, Some("ip_literal"), None),
        ("[::1]:80", 451, Some("ip_literal"), None),
        // garbage is a client error
        ("a..b.com", 400, Some("invalid_host"), None),
        ("user@example.com", 400, Some("invalid_host"), None),
        ("exa%6dple.com", 400, Some("invalid_host"), None),
    ];
    for (host, status, reason, origin) in cases {
        let reply = gate.get(host, "/").await;
        assert_eq!(reply.status.as_u16(), *status, "{host}: {}", reply.text());
        assert_eq!(reply.reason(), *reason, "{host}");
        if let Some(origin) = origin {
            assert_eq!(reply.json()["origin"], *origin, "{host}");
        }
    }
}

#[tokio::test]
async fn http2_prior_knowledge_is_gated_by_authority() {
    let (gate, _, _) = gate().await;
    let allowed = http2(gate.http, "example.com", "/h2").await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.json()["path"], "/h2");
    assert_eq!(allowed.json()["host_count"], 1, "exactly one Host upstream");
    let blocked = http2(gate.http, "unfiled.com", "/").await;
    assert_eq!(blocked.status, 451);
    assert_eq!(blocked.reason(), Some("not_filed"));
}

#[tokio::test]
async fn missing_duplicate_and_absolute_form_hosts() {
    let (gate, _, _) = gate().await;
    let wait = Duration::from_secs(3);
    let no_host = raw(
        gate.http,
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await;
    assert!(
        no_host.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&no_host)
    );
    assert!(String::from_utf8_lossy(&no_host).contains("missing_host"));
    let two_hosts = raw(
        gate.http,
        b"GET / HTTP/1.1\r\nHost: example.com\r\nHost: unfiled.com\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await;
    assert!(
        two_hosts.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&two_hosts)
    );
    // The absolute-form authority decides, not the Host header beside it.
    let smuggled = raw(
        gate.http,
        b"GET http://unfiled.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await;
    assert!(
        smuggled.starts_with(b"HTTP/1.1 451"),
        "{}",
        String::from_utf8_lossy(&smuggled)
    );
    // CONNECT would make the gate a tunnel, even to a filed host.
    let connect = raw(
        gate.http,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await;
    let text = String::from_utf8_lossy(&connect);
    assert!(
        text.starts_with("HTTP/1.1 400") && text.contains("invalid_host"),
        "{text}"
    );
    let absolute = raw(
        gate.http,
        b"GET http://example.com/x HTTP/1.1\r\nHost: unfiled.com\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await;
    assert!(
        absolute.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&absolute)
    );
}

#[tokio::test]
async fn block_response_is_a_safe_bilingual_page_or_json() {
    let (gate, _, _) = gate().await;
    let reply = gate.get("unfiled.com", "/").await;
    assert_eq!(reply.status, 451);
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/html"));
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert!(reply.headers["link"]
        .to_str()
        .unwrap_or("")
        .contains("rel=\"blocked-by\""));
    let text = reply.text();
    assert!(text.contains("ICP") && text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)));
    let request_id = reply.headers["x-request-id"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(
        !request_id.is_empty() && text.contains(&request_id),
        "request id shown on the page"
    );

    let json = http1(
        gate.http,
        "GET",
        "/",
        &[("host", "unfiled.com"), ("accept", "application/json")],
        b"",
    )
    .await;
    assert_eq!(json.json()["reason"], "not_filed");
    assert_eq!(json.json()["registrable_domain"], "unfiled.com");
}

#[tokio::test]
async fn block_status_403_by_policy() {
    let origin = start_origin("storefront").await;
    let gate = TestGate::start(
        &standard_seed(),
        Some(origin),
        None,
        "[policy]\nblock_status = 403\n",
    )
    .await;
    let reply = gate.get("unfiled.com", "/").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.reason(), Some("not_filed"));
    assert!(
        reply.headers.get("link").is_none(),
        "Link rel=blocked-by belongs to 451 only"
    );
    assert_eq!(gate.get("example.com", "/").await.status, 200);
}

#[tokio::test]
async fn a_blocked_request_never_touches_an_upstream() {
    // The only upstream is a listener that records whether anyone connected.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let touched = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = touched.clone();
    tokio::spawn(async move {
        if listener.accept().await.is_ok() {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let gate = TestGate::start(&standard_seed(), Some(addr), Some(addr), "").await;
    for host in ["unfiled.com", "pending.cn", "127.0.0.1", "gone.org"] {
        assert_eq!(gate.get(host, "/").await.status, 451, "{host}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !touched.load(std::sync::atomic::Ordering::SeqCst),
        "a blocked request reached the upstream"
    );
}

/// Scanners flood with random names (SPEC §5): they are refused from the
/// filed-domain index without one registry lookup, while a domain filed through the
/// admin API afterwards is looked up and decided at once.
#[tokio::test]
async fn a_random_name_flood_never_reaches_the_registry() {
    let (gate, _, _) = gate().await;
    let lookups =
        |text: &str| sample_required(text, "icpgate_registry_lookup_duration_seconds_count", &[]);
    let before = gate.metrics().await;
    for i in 0..300 {
        let reply = gate.get(&format!("scan-{i:04}-{}.cn", i * 7919), "/").await;
        assert_eq!(reply.reason(), Some("not_filed"));
    }
    let after = gate.metrics().await;
    assert_eq!(
        lookups(&after) - lookups(&before),
        0.0,
        "the flood reached the registry"
    );
    let unfiled = |text: &str| {
        sample_required(
            text,
            "icpgate_cache_lookups_total",
            &[("result", "unfiled")],
        )
    };
    assert_eq!(unfiled(&after) - unfiled(&before), 300.0);

    let (status, _) = gate
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["scan-0001-7919.cn"], "new", None)),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        gate.get("www.scan-0001-7919.cn", "/").await.reason(),
        Some("pending_review")
    );
    let index = |text: &str| sample(text, "icpgate_filed_domains", &[]);
    assert_eq!(
        index(&after),
        Some(9.0),
        "the flood added nothing to the index"
    );
    assert_eq!(
        index(&gate.metrics().await),
        Some(10.0),
        "the new filing's domain was learnt"
    );
}

/// hyper lets an HTTP/2 client send both `:authority` and a `Host` header (hyper#3958):
/// the gate decides by `:authority`, and the upstream leg carries exactly one Host.
#[tokio::test]
async fn http2_authority_wins_over_a_host_header_and_one_host_goes_upstream() {
    use http_body_util::{BodyExt, Full};
    let (gate, _, _) = gate().await;
    let send = |authority: &'static str, host: &'static str| async move {
        let (mut sender, _driver) = http2_connect(gate.http).await;
        let request = http::Request::builder()
            .uri(format!("http://{authority}/both"))
            .header("host", host)
            .body(Full::new(bytes::Bytes::new()))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let (status, seen) = send("example.com", "unfiled.com").await;
    assert_eq!(status, 200);
    assert_eq!(seen["host_count"], 1, "{seen}");
    assert_eq!(seen["headers"]["host"], "example.com");
    let (status, _) = send("unfiled.com", "example.com").await;
    assert_eq!(
        status, 451,
        "a filed Host header cannot open an unfiled :authority"
    );
}
