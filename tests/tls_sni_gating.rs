//! The contract these tests pin: no way around the gate through TLS.
//!
//! - A handshake completes only when the SNI's registrable domain has an approved
//!   filing AND a certificate (by its SANs, wildcards included) covers the SNI;
//!   unfiled, pending, certificate-less and SNI-less handshakes are refused and
//!   counted in `icpgate_tls_handshakes_total{result}`.
//! - ALPN offers h2 and http/1.1; both serve, with `X-Forwarded-Proto: https`.
//! - Per request, a Host under another registrable domain than the SNI is 421
//!   `sni_mismatch` when filed, else blocked for its own reason; hosts under the
//!   SNI's registrable domain are served. HTTP/2 connections are checked per request.
//! - An approval opens the handshake and a cancellation closes it at once.

mod common;

use std::time::{Duration, Instant};

use common::tls::*;
use common::*;

struct Fixture {
    gate: TestGate,
    ca: TestCa,
    _certs: tempfile::TempDir,
}

/// A gate with the standard seed and certificates for filed, unfiled and pending
/// domains (example.com.cn is filed but has no certificate).
async fn fixture() -> Fixture {
    let origin = start_origin("storefront").await;
    let corporate = start_origin("corporate_site").await;
    let ca = TestCa::new();
    let certs = tempfile::tempdir().expect("certs dir");
    ca.write_pair(certs.path(), "example", &["example.com", "*.example.com"]);
    ca.write_pair(certs.path(), "unfiled", &["unfiled.com"]);
    ca.write_pem(certs.path(), "pending", &["pending.cn", "late.cn"]);
    let gate = TestGate::start_https(Some(origin), Some(corporate), certs.path(), "").await;
    Fixture {
        gate,
        ca,
        _certs: certs,
    }
}

/// The metrics once `total` handshakes are counted (or after 5 s): a refused
/// client may see its connection end before the data-plane thread that served it
/// has counted it, and the admin listener answers from another thread.
async fn metrics_counting(gate: &TestGate, total: f64) -> String {
    let results = [
        "ok",
        "refused_unfiled",
        "refused_no_sni",
        "refused_no_cert",
        "error",
    ];
    let counted = wait_until(Duration::from_secs(5), || async {
        let metrics = gate.metrics().await;
        let counted: f64 = results.iter().map(|r| handshakes(&metrics, r)).sum();
        (counted >= total).then_some(metrics)
    })
    .await;
    match counted {
        Some(metrics) => metrics,
        None => gate.metrics().await,
    }
}

fn handshakes(metrics: &str, result: &str) -> f64 {
    sample_required(
        metrics,
        "icpgate_tls_handshakes_total",
        &[("result", result)],
    )
}

#[tokio::test]
async fn filed_sni_is_served_over_h2_with_forwarded_proto_https() {
    let f = fixture().await;
    let connector = f.ca.client(&[b"h2", b"http/1.1"], true);
    let stream = connect(&connector, f.gate.https(), "example.com")
        .await
        .expect("handshake");
    assert_eq!(alpn(&stream).as_deref(), Some(&b"h2"[..]));
    let mut sender = h2_sender(stream).await;
    let reply = get_h2(&mut sender, "example.com", "/x").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(seen["host_count"], 1);
    assert_eq!(
        handshakes(&f.gate.metrics().await, "ok"),
        1.0,
        "one handshake"
    );
}

#[tokio::test]
async fn filed_subdomain_is_served_over_http1_by_a_wildcard_certificate() {
    let f = fixture().await;
    let connector = f.ca.client(&[b"http/1.1"], true);
    let stream = connect(&connector, f.gate.https(), "shop.example.com")
        .await
        .expect("handshake");
    assert_eq!(alpn(&stream).as_deref(), Some(&b"http/1.1"[..]));
    let reply = get_h1(stream, "shop.example.com", "/").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["headers"]["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn refused_handshakes_are_refused_and_counted() {
    let f = fixture().await;
    let addr = f.gate.https();
    // Each case: SNI, why it must not complete.
    for sni in [
        "unfiled.com",     // certificate present, no filing
        "nocert.net",      // no filing, no certificate
        "pending.cn",      // certificate present, filing still in review
        "example.com.cn",  // filed, but no certificate covers it
        "a.b.example.com", // a wildcard covers one label only
        "com.cn",          // a public suffix: nothing there is filed
    ] {
        assert!(
            !handshake_ok(&f.ca, addr, sni).await,
            "{sni} completed a handshake"
        );
    }
    let no_sni = f.ca.client(&[b"http/1.1"], false);
    assert!(
        connect(&no_sni, addr, "example.com").await.is_err(),
        "a handshake without SNI completed"
    );
    let metrics = metrics_counting(&f.gate, 7.0).await;
    // Certificates are checked first: only unfiled.com and pending.cn reach the gate.
    assert_eq!(handshakes(&metrics, "refused_unfiled"), 2.0, "{metrics}");
    assert_eq!(handshakes(&metrics, "refused_no_cert"), 4.0);
    assert_eq!(handshakes(&metrics, "refused_no_sni"), 1.0);
    assert_eq!(handshakes(&metrics, "ok"), 0.0);
}

#[tokio::test]
async fn host_under_another_registrable_domain_than_the_sni_is_not_served() {
    let f = fixture().await;
    let connector = f.ca.client(&[b"http/1.1"], true);
    let addr = f.gate.https();
    // Host, expected status, expected reason (None: served).
    let cases = [
        ("example.com.cn", 421, Some("sni_mismatch")), // filed, but not on this SNI
        ("unfiled.com", 451, Some("not_filed")),       // no fronting an unfiled domain
        ("pending.cn", 451, Some("pending_review")),
        ("www.example.com", 200, None), // same registrable domain as the SNI
        ("example.com", 200, None),
    ];
    for (host, status, reason) in cases {
        let stream = connect(&connector, addr, "shop.example.com")
            .await
            .expect("handshake");
        let reply = get_h1(stream, host, "/").await;
        assert_eq!(reply.status, status, "Host {host}: {}", reply.text());
        assert_eq!(reply.reason(), reason, "Host {host}");
    }
}

#[tokio::test]
async fn a_reused_h2_connection_is_checked_per_request() {
    let f = fixture().await;
    let connector = f.ca.client(&[b"h2"], true);
    let stream = connect(&connector, f.gate.https(), "example.com")
        .await
        .expect("handshake");
    let mut sender = h2_sender(stream).await;
    for (authority, status) in [
        ("example.com", 200),
        ("example.com.cn", 421),
        ("shop.example.com", 200),
        ("unfiled.com", 451),
        ("www.example.com", 200),
    ] {
        let reply = get_h2(&mut sender, authority, "/").await;
        assert_eq!(reply.status, status, ":authority {authority}");
    }
}

#[tokio::test]
async fn an_approval_opens_the_handshake_and_a_cancellation_closes_it() {
    let f = fixture().await;
    let addr = f.gate.https();
    assert!(!handshake_ok(&f.ca, addr, "late.cn").await);
    let id = f
        .gate
        .approve_new_filing("late.cn", "浙ICP备20239999号-1")
        .await;
    assert!(
        eventually(Duration::from_secs(2), || handshake_ok(
            &f.ca, addr, "late.cn"
        ))
        .await,
        "approval did not open the handshake"
    );
    let (status, body) = f
        .gate
        .api(
            "POST",
            &format!("/v1/filings/{id}/cancel"),
            Some(serde_json::json!({"reason": "test"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        eventually(Duration::from_secs(2), || async {
            !handshake_ok(&f.ca, addr, "late.cn").await
        })
        .await,
        "cancellation did not close the handshake"
    );
}

#[tokio::test]
async fn tls12_is_served_and_tls13_is_preferred() {
    let f = fixture().await;
    let stream = connect(&f.ca.client_tls12(), f.gate.https(), "example.com")
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let reply = get_h1(stream, "example.com", "/").await;
    assert_eq!(reply.status, 200);
    let modern = connect(&f.ca.client(&[b"h2"], true), f.gate.https(), "example.com")
        .await
        .expect("handshake");
    assert_eq!(
        modern.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn a_client_that_never_says_hello_is_cut_off_and_counted() {
    use tokio::io::AsyncReadExt;
    let ca = TestCa::new();
    let certs = tempfile::tempdir().expect("certs");
    ca.write_pair(certs.path(), "example", &["example.com"]);
    let extra = format!(
        "[tls]\ncerts_dir = \"{}\"\n\n[limits]\nheader_read_timeout = \"300ms\"\n",
        certs.path().display()
    );
    let gate = TestGate::start_with_listen(
        &standard_seed(),
        None,
        None,
        "https = \"127.0.0.1:0\"",
        &extra,
    )
    .await;
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(gate.https())
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "still open: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let metrics = metrics_counting(&gate, 1.0).await;
    assert_eq!(handshakes(&metrics, "error"), 1.0, "{metrics}");
}
