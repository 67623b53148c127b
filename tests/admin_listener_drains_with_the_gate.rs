//! The contract these tests pin (issue 10): the admin listener is served by the same
//! accept loop as the data plane, so it
//!
//! - drains with it on a graceful stop: an admin request in flight finishes, an idle
//!   keep-alive admin connection is closed at once, and the listener takes no new
//!   connection;
//! - has a connection limit of its own (256): connections over it are closed at
//!   once, a slot is given back when a connection closes, and admin connections are
//!   not counted in the data plane's `icpgate_connections_active`.

mod common;

use std::time::Duration;

use common::{eventually, raw, sample, submission, TestGate, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn gate() -> TestGate {
    TestGate::start(&[], None, None, "[limits]\ndrain_timeout = \"10s\"\n").await
}

/// Read until the peer closes (true) or `within` passes (false).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> (bool, Vec<u8>) {
    let mut out = Vec::new();
    let ended = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    (ended.is_ok(), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_drains_the_admin_listener() {
    let mut g = gate().await;
    let admin = g.admin;

    // An idle keep-alive connection, after one answered request.
    let mut idle = TcpStream::connect(admin).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.expect("answered");
    assert_eq!(&first, b"HTTP/1.1 200");

    // A submission in flight: its head is read, its body is not complete yet.
    let body = submission(&["draining.cn"], "new", None).to_string();
    let (head_part, rest) = body.as_bytes().split_at(body.len() / 2);
    let mut in_flight = TcpStream::connect(admin).await.expect("connect");
    let head = format!(
        "POST /v1/filings HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.expect("head");
    in_flight.write_all(head_part).await.expect("half a body");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let running = g.running.take().expect("running");
    let stopping = tokio::spawn(running.shutdown(true));

    let (closed, leftover) = closed_within(&mut idle, Duration::from_secs(3)).await;
    assert!(closed, "the idle admin connection is closed by the drain");
    let leftover = String::from_utf8_lossy(&leftover);
    assert!(
        !leftover.contains("HTTP/1.1"),
        "one answer only: {leftover}"
    );
    let refused = eventually(Duration::from_secs(3), || async {
        TcpStream::connect(admin).await.is_err()
    })
    .await;
    assert!(refused, "no new admin connections while draining");

    in_flight.write_all(rest).await.expect("rest of the body");
    let (closed, answer) = closed_within(&mut in_flight, Duration::from_secs(5)).await;
    assert!(closed, "the in-flight admin request ends");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("the stop ends once the admin connections are closed")
        .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_has_a_connection_limit_of_its_own() {
    let mut g = gate().await;
    let mut held = Vec::new();
    for _ in 0..256 {
        held.push(TcpStream::connect(g.admin).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(g.admin).await.expect("connect");
    over.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok();
    let (_, over) = closed_within(&mut over, Duration::from_secs(2)).await;
    assert!(
        over.is_empty(),
        "a connection over the limit was served: {:?}",
        String::from_utf8_lossy(&over)
    );
    // The data plane is not starved by a full admin listener.
    let reply = g.get("unfiled.cn", "/").await;
    assert_eq!(reply.reason(), Some("not_filed"));

    held.pop();
    let served = eventually(Duration::from_secs(3), || async {
        let reply = raw(
            g.admin,
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        reply.starts_with(b"HTTP/1.1 200")
    })
    .await;
    assert!(
        served,
        "a slot is given back when an admin connection closes"
    );
    drop(held);
    let text = g.metrics().await;
    assert_eq!(
        sample(&text, "icpgate_connections_active", &[]),
        Some(0.0),
        "admin connections are not data-plane connections"
    );
    g.stop().await;
}
