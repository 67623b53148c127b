//! The contract these tests pin (issue 7, `[limits]`): a client that sends its request
//! head too slowly is cut after `header_read_timeout`, on a new connection and on a
//! kept-alive one; an idle HTTP/1 keep-alive connection stays usable for
//! `idle_timeout` (longer than the head timeout) and is closed after it;
//! a head larger than `max_header_bytes` is answered 431 and never forwarded;
//! connections beyond `max_connections` are closed at once; a body over
//! `max_body_bytes` is refused (413 when declared) and never reaches the origin whole.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMITS: &str =
    "[limits]\nheader_read_timeout = \"1s\"\nmax_header_bytes = 16384\nmax_body_bytes = 1000\n";

async fn gate(extra: &str) -> TestGate {
    let origin = start_origin("storefront").await;
    TestGate::start(&standard_seed(), Some(origin), None, extra).await
}

/// Seconds until the server closes `stream` (None: still open after `wait`).
async fn closed_after(stream: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(wait, stream.read_to_end(&mut sink))
        .await
        .ok()
        .map(|_| started.elapsed())
}

#[tokio::test]
async fn a_slow_request_head_is_cut_by_header_read_timeout() {
    let mut gate = gate(LIMITS).await;
    for partial in [&b""[..], b"GET / HTTP/1.1\r\nHost: exa"] {
        let mut stream = TcpStream::connect(gate.http).await.expect("connect");
        stream.write_all(partial).await.expect("write");
        let closed = closed_after(&mut stream, Duration::from_secs(4)).await;
        assert!(closed.is_some(), "{partial:?}: connection still open");
    }
    gate.stop().await;
}

/// A head timeout of 1 s and an idle timeout of 3 s.
const IDLE_LIMITS: &str = "[limits]\nheader_read_timeout = \"1s\"\nidle_timeout = \"3s\"\n";

/// Send one keep-alive request on `stream` and read its (small) response.
async fn exchange(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("a response in time")
        .expect("response");
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_head_timeout_and_closes_after_idle_timeout() {
    let mut gate = gate(IDLE_LIMITS).await;
    let mut stream = TcpStream::connect(gate.http).await.expect("connect");
    assert!(exchange(&mut stream).await.starts_with(b"HTTP/1.1 200"));
    // Idle for longer than the head timeout: still open, and it serves.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(
        exchange(&mut stream).await.starts_with(b"HTTP/1.1 200"),
        "an idle keep-alive connection was closed before idle_timeout"
    );
    let closed = closed_after(&mut stream, Duration::from_secs(8)).await;
    let closed = closed.expect("idle keep-alive connection kept open past idle_timeout");
    assert!(
        closed >= Duration::from_millis(2500),
        "closed after {closed:?}, before idle_timeout"
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_slow_head_on_a_kept_alive_connection_is_cut_by_header_read_timeout() {
    let mut gate = gate(IDLE_LIMITS).await;
    let mut stream = TcpStream::connect(gate.http).await.expect("connect");
    assert!(exchange(&mut stream).await.starts_with(b"HTTP/1.1 200"));
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: exa")
        .await
        .expect("write");
    let closed = closed_after(&mut stream, Duration::from_secs(8)).await;
    let closed = closed.expect("a slow second head was not cut");
    assert!(
        closed < Duration::from_millis(2500),
        "cut after {closed:?}: the idle timeout, not the head timeout"
    );
    gate.stop().await;
}

#[tokio::test]
async fn oversized_headers_get_431_and_are_not_forwarded() {
    let mut gate = gate(LIMITS).await;
    let before = gate.metrics().await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: example.com\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(40_000)
    );
    let reply = raw(gate.http, big.as_bytes(), Duration::from_secs(3)).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&reply[..reply.len().min(60)])
    );
    let after = gate.metrics().await;
    let forwarded =
        |m: &str| sample_required(m, "icpgate_requests_total", &[("decision", "allow")]);
    assert_eq!(
        forwarded(&before),
        forwarded(&after),
        "nothing was forwarded"
    );
    let fits = format!("X-Fits: {}", "a".repeat(8_000));
    let (name, value) = fits.split_once(": ").unwrap_or_default();
    let ok = http1(
        gate.http,
        "GET",
        "/",
        &[("host", "example.com"), (name, value)],
        b"",
    )
    .await;
    assert_eq!(ok.status, 200, "a head under the limit is served");
    gate.stop().await;
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed() {
    let mut gate = gate("[limits]\nmax_connections = 2\nheader_read_timeout = \"10s\"\n").await;
    let _first = TcpStream::connect(gate.http).await.expect("connect");
    let _second = TcpStream::connect(gate.http).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(gate.http).await.expect("connect");
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await
        .ok();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), third.read_to_end(&mut out)).await;
    assert!(
        out.is_empty(),
        "the third connection was served: {:?}",
        String::from_utf8_lossy(&out)
    );
    drop((_first, _second));
    let served = eventually(Duration::from_secs(3), || async {
        let reply = raw(
            gate.http,
            b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        reply.starts_with(b"HTTP/1.1 200")
    })
    .await;
    assert!(served, "slots are given back when connections close");
    gate.stop().await;
}

#[tokio::test]
async fn bodies_over_max_body_bytes_never_reach_the_origin_whole() {
    let mut gate = gate(LIMITS).await;
    let declared = http1(
        gate.http,
        "POST",
        "/",
        &[("host", "example.com")],
        &[b'x'; 2000],
    )
    .await;
    assert_eq!(declared.status, 413);
    let mut chunked = b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        chunked.extend_from_slice(format!("200\r\n{}\r\n", "y".repeat(512)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let reply = raw(gate.http, &chunked, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "a 2 KiB chunked body: {text}"
    );
    assert!(
        !text.contains(&"y".repeat(1001)),
        "the origin saw the whole body"
    );
    let small = http1(
        gate.http,
        "POST",
        "/",
        &[("host", "example.com")],
        &[b'x'; 500],
    )
    .await;
    assert_eq!(small.status, 200);
    gate.stop().await;
}

/// HTTP/2 follows `idle_timeout` too: with no stream open for that long the gate
/// says GOAWAY and closes, instead of holding a `max_connections` slot for as long
/// as the client answers pings.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_idle_timeout() {
    let mut gate = gate(IDLE_LIMITS).await;
    let (mut sender, driver) = http2_connect(gate.http).await;
    for _ in 0..2 {
        let request = http::Request::get("http://example.com/")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        drop(response);
        // Idle for longer than the head timeout between streams: still open.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(8), driver).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection was kept open");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "closed {:?} into the idle spell, before idle_timeout",
        started.elapsed()
    );
    gate.stop().await;
}
