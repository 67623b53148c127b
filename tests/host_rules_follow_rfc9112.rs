//! The contract these tests pin: the request's host follows RFC 9112 strictly, so no
//! second spelling of a host can reach a different decision. Two `Host` lines are a
//! 400 even when identical (§3.2); an authority-form target is for CONNECT only and a
//! 400 on any other method (§3.2.3); port 0, a port with a leading zero and a port
//! over 65535 are a 400 in `Host` and in HTTP/2's `:authority`. Every refusal here is
//! `invalid_host`, answered before any registry lookup, and the origin never sees it.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(3);

/// The status line and reason of a raw HTTP/1.1 exchange.
async fn exchange(gate: &TestGate, request: &str) -> String {
    let answer = raw(gate.http, request.as_bytes(), WAIT).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn filed_gate() -> TestGate {
    let origin = start_origin("storefront").await;
    TestGate::start(&standard_seed(), Some(origin), None, "").await
}

fn assert_invalid_host(answer: &str, case: &str) {
    assert!(answer.starts_with("HTTP/1.1 400"), "{case}: {answer}");
    assert!(answer.contains("invalid_host"), "{case}: {answer}");
}

#[tokio::test]
async fn two_identical_host_lines_are_a_400() {
    let gate = filed_gate().await;
    let answer = exchange(
        &gate,
        "GET / HTTP/1.1\r\nHost: example.com\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_invalid_host(&answer, "identical Host lines");
    // One Host line for the same host is served.
    let answer = exchange(
        &gate,
        "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_authority_form_target_is_a_400_on_any_method_but_connect() {
    let gate = filed_gate().await;
    for method in ["GET", "POST", "OPTIONS", "HEAD"] {
        let request = format!(
            "{method} example.com:80 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        );
        let answer = exchange(&gate, &request).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{method}: {answer}");
    }
}

#[tokio::test]
async fn bad_ports_in_host_are_a_400() {
    let gate = filed_gate().await;
    for host in [
        "example.com:0",
        "example.com:080",
        "example.com:00080",
        "example.com:65536",
        "example.com:99999",
    ] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_invalid_host(&exchange(&gate, &request).await, host);
    }
    // The largest port and an ordinary one are fine.
    for host in ["example.com:65535", "example.com:8080"] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = exchange(&gate, &request).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
}

#[tokio::test]
async fn bad_ports_in_an_h2_authority_are_a_400() {
    let gate = filed_gate().await;
    for authority in ["example.com:0", "example.com:080", "example.com:65536"] {
        let reply = http2(gate.http, authority, "/").await;
        assert_eq!(reply.status, 400, "{authority}");
        assert_eq!(reply.reason(), Some("invalid_host"), "{authority}");
    }
    let served = http2(gate.http, "example.com:8443", "/").await;
    assert_eq!(served.status, 200);
}
