//! The contract these tests pin: an allowed request reaches the upstream with its
//! method, path, query, Host and body intact (streamed, not buffered whole), without
//! hop-by-hop headers, with X-Forwarded-For/-Proto/-Host, Via and a request id; a dead
//! pool answers 502 quickly, a slow one 504 after `limits.upstream_timeout`, and a
//! pool with a dead server fails over to the live one.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn method_path_query_host_and_body_are_preserved() {
    let origin = start_origin("storefront").await;
    let gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    let reply = http1(
        gate.http,
        "POST",
        "/a/b?c=1&d=%20",
        &[
            ("host", "shop.example.com:8080"),
            ("content-type", "text/plain"),
        ],
        b"hello-body",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/a/b?c=1&d=%20");
    assert_eq!(seen["body"], "hello-body");
    assert_eq!(seen["headers"]["host"], "shop.example.com:8080");
    assert_eq!(seen["host_count"], 1);
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-forwarded-host"], "shop.example.com:8080");
    assert!(seen["headers"]["via"]
        .as_str()
        .unwrap_or("")
        .contains("icpgate"));
    assert!(seen["headers"]["x-request-id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
}

#[tokio::test]
async fn hop_by_hop_and_connection_named_headers_are_stripped() {
    let origin = start_origin("storefront").await;
    let gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    let reply = http1(
        gate.http,
        "GET",
        "/",
        &[
            ("host", "example.com"),
            ("connection", "X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("x-kept", "yes"),
        ],
        b"",
    )
    .await;
    let headers = &reply.json()["headers"];
    assert!(headers.get("x-secret").is_none(), "{headers}");
    assert!(headers.get("keep-alive").is_none(), "{headers}");
    assert_eq!(headers["x-kept"], "yes");
}

#[tokio::test]
async fn spoofed_x_forwarded_for_is_replaced_for_untrusted_clients() {
    let origin = start_origin("storefront").await;
    let gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    let reply = http1(
        gate.http,
        "GET",
        "/",
        &[("host", "example.com"), ("x-forwarded-for", "6.6.6.6")],
        b"",
    )
    .await;
    assert_eq!(reply.json()["headers"]["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn dead_pool_answers_502_quickly_and_counts_a_connect_error() {
    let (_reserved, dead) = refusing_address();
    let gate = TestGate::start(&standard_seed(), Some(dead), None, "").await;
    let started = Instant::now();
    let reply = gate.get("example.com", "/").await;
    assert_eq!(reply.status, 502);
    assert!(started.elapsed() < Duration::from_secs(5));
    let metrics = gate.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "icpgate_upstream_errors_total",
            &[("pool", "storefront"), ("kind", "connect")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_dead_server_fails_over_to_the_next() {
    let origin = start_origin("live").await;
    let (_reserved, dead) = refusing_address();
    let gate = TestGate::start_with_pools(&standard_seed(), &[dead, origin], &[], "").await;
    // New connections go round-robin; each must land on the live server.
    for i in 0..4 {
        let reply = http1(
            gate.http,
            "GET",
            &format!("/{i}"),
            &[("host", "example.com"), ("connection", "close")],
            b"",
        )
        .await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        assert_eq!(reply.json()["origin"], "live");
    }
}

#[tokio::test]
async fn slow_upstream_answers_504_after_upstream_timeout() {
    let origin = start_origin("slow").await;
    let gate = TestGate::start(
        &standard_seed(),
        Some(origin),
        None,
        "[limits]\nupstream_timeout = \"300ms\"\n",
    )
    .await;
    let reply = gate.get("example.com", "/sleep/2").await;
    assert_eq!(reply.status, 504);
    assert_eq!(
        sample(
            &gate.metrics().await,
            "icpgate_upstream_errors_total",
            &[("kind", "timeout")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let origin = start_origin("storefront").await;
    let gate = TestGate::start(
        &standard_seed(),
        Some(origin),
        None,
        "[limits]\nmax_body_bytes = 16\n",
    )
    .await;
    let reply = http1(
        gate.http,
        "POST",
        "/",
        &[("host", "example.com")],
        &[b'x'; 64],
    )
    .await;
    assert_eq!(reply.status, 413);
    let small = http1(gate.http, "POST", "/", &[("host", "example.com")], b"tiny").await;
    assert_eq!(small.status, 200);
}
