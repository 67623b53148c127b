//! The contract these tests pin (issue 7, signal policy): SIGTERM to the real
//! `icpgate serve` stops accepting new connections, lets requests in flight finish
//! (up to `limits.drain_timeout`) and exits 0; a request that outlives the drain
//! timeout is cut and the process still exits promptly. SIGINT exits at once,
//! without waiting for requests in flight. HTTP/2 connections drain with a GOAWAY.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn spawn_in_flight(
    addr: std::net::SocketAddr,
    path: &'static str,
) -> tokio::task::JoinHandle<Option<u16>> {
    tokio::spawn(async move {
        let mut sender = http1_connect(addr).await;
        let request = http::Request::get(path)
            .header("host", "example.com")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .ok()?;
        Some(status)
    })
}

/// Wait until the origin has the request (the gate forwarded it): only then is it
/// in flight, whatever the machine's load.
async fn in_flight_at_origin(arrivals: &mut tokio::sync::mpsc::UnboundedReceiver<String>) {
    let arrived = tokio::time::timeout(Duration::from_secs(10), arrivals.recv()).await;
    assert!(
        matches!(arrived, Ok(Some(_))),
        "the request never reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let (origin, mut arrivals) = start_origin_with_arrivals("storefront").await;
    let mut gate = GateProcess::spawn(&standard_seed(), origin, "");
    let in_flight = spawn_in_flight(gate.http, "/sleep/1.5");
    in_flight_at_origin(&mut arrivals).await;
    gate.signal("TERM");
    // The in-flight request still has ~1 s to run: the listener closes before it ends.
    let refused = eventually(Duration::from_secs(1), || async {
        tokio::net::TcpStream::connect(gate.http).await.is_err()
    })
    .await;
    assert!(refused, "no new connections while draining");
    assert!(
        !in_flight.is_finished(),
        "the refusal came while the request was in flight"
    );
    assert_eq!(
        in_flight.await.expect("join"),
        Some(200),
        "in-flight request completes"
    );
    let status = gate
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("process exits");
    assert!(status.success(), "exit 0 after a drain: {status:?}");
    assert!(gate.logged("draining"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_is_bounded_by_drain_timeout() {
    let (origin, mut arrivals) = start_origin_with_arrivals("storefront").await;
    let mut gate = GateProcess::spawn(
        &standard_seed(),
        origin,
        "[limits]\ndrain_timeout = \"1s\"\nupstream_timeout = \"60s\"\n",
    );
    let in_flight = spawn_in_flight(gate.http, "/sleep/20");
    in_flight_at_origin(&mut arrivals).await;
    let signalled = Instant::now();
    gate.signal("TERM");
    let status = gate
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("process exits");
    assert!(status.success(), "{status:?}");
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM"
    );
    assert!(
        took >= Duration::from_millis(900),
        "waited for the drain: {took:?}"
    );
    assert_eq!(in_flight.await.expect("join"), None, "the straggler is cut");
    assert!(gate.logged("drain timeout reached"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_at_once() {
    let (origin, mut arrivals) = start_origin_with_arrivals("storefront").await;
    let mut gate = GateProcess::spawn(&standard_seed(), origin, "");
    let in_flight = spawn_in_flight(gate.http, "/sleep/20");
    in_flight_at_origin(&mut arrivals).await;
    let signalled = Instant::now();
    gate.signal("INT");
    let status = gate
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("process exits");
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "{:?}",
        signalled.elapsed()
    );
    assert!(status.success(), "{status:?}");
    assert_eq!(in_flight.await.expect("join"), None);
}

/// HTTP/2 drains too: SIGTERM sends a GOAWAY, the stream in flight finishes with
/// its 200, and then the connection closes and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_http2_connection_with_a_goaway() {
    let (origin, mut arrivals) = start_origin_with_arrivals("storefront").await;
    let mut gate = GateProcess::spawn(&standard_seed(), origin, "");
    let (mut sender, driver) = http2_connect(gate.http).await;
    let request = http::Request::get("http://example.com/sleep/1.5")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let in_flight = tokio::spawn(async move {
        let response = sender.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .ok()?;
        Some(status)
    });
    in_flight_at_origin(&mut arrivals).await;
    gate.signal("TERM");
    assert_eq!(
        in_flight.await.expect("join"),
        Some(200),
        "the stream in flight completes"
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), driver).await;
    let closed = closed.expect("the drained HTTP/2 connection was closed");
    assert!(
        matches!(closed, Ok(Ok(()))),
        "closed cleanly (GOAWAY), not cut: {closed:?}"
    );
    let status = gate
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("process exits");
    assert!(status.success(), "exit 0 after a drain: {status:?}");
}
