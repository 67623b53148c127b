//! The contract these tests pin: the only protocol switch that passes the gate is a
//! WebSocket upgrade for a filed host. Every other `Upgrade` token (`h2c` with its
//! `HTTP2-Settings`, arbitrary tokens) is stripped before the origin sees the request,
//! and an origin that answers 101 to anything the gate did not forward as a WebSocket
//! upgrade gets its client a 502, never a tunnel: a later request on the same client
//! connection is gated like any other and never reaches the origin raw.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const STEP: Duration = Duration::from_secs(5);

/// Everything the always-switching origin received, across all its connections.
type Received = Arc<Mutex<Vec<u8>>>;

/// An origin that answers 101 to any request, naming `protocol` or else the one the
/// request asked for (`h2c` when it asked for none), then records and echoes every
/// later byte.
async fn always_switching_origin(protocol: Option<&'static str>) -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    let received: Received = Arc::default();
    let record = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(switch_and_echo(stream, protocol, Arc::clone(&record)));
        }
    });
    (addr, received)
}

async fn switch_and_echo(mut stream: TcpStream, answer: Option<&str>, received: Received) {
    let head = read_head(&mut stream).await;
    received.lock().expect("lock").extend_from_slice(&head);
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let asked = text
        .lines()
        .find_map(|line| line.strip_prefix("upgrade:"))
        .map_or("h2c", str::trim);
    let protocol = answer.unwrap_or(asked);
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n"
    );
    if stream.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    let mut buffer = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buffer).await {
        received
            .lock()
            .expect("lock")
            .extend_from_slice(&buffer[..n]);
        if stream.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Bytes up to and including the blank line that ends a message head.
async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(STEP, stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    head
}

/// One response on `stream`: its head, then as many body bytes as Content-Length says.
async fn read_response(stream: &mut TcpStream) -> String {
    let head = String::from_utf8_lossy(&read_head(stream).await).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tokio::time::timeout(STEP, stream.read_exact(&mut body))
        .await
        .expect("body in time")
        .expect("body");
    head
}

/// The origin's record as text.
fn seen(received: &Received) -> String {
    String::from_utf8_lossy(&received.lock().expect("lock")).into_owned()
}

/// Ask for `upgrade` on a filed host, then send a request for an unfiled host on the
/// same connection: the switch is refused (502) and the second request is blocked.
async fn refused_switch_then_unfiled(upgrade_headers: &str) {
    let (origin, received) = always_switching_origin(None).await;
    let gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    let mut client = TcpStream::connect(gate.http).await.expect("connect");
    let switch = format!("GET / HTTP/1.1\r\nHost: example.com\r\n{upgrade_headers}\r\n");
    client.write_all(switch.as_bytes()).await.expect("write");
    let head = read_response(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(head.contains("no-store"), "{head}");

    // Whether the gate keeps the connection or closes it, nothing tunnels: a request
    // for an unfiled host on it is gated (451) or never read (closed).
    let smuggled = b"GET /secret HTTP/1.1\r\nHost: unfiled.cn\r\nConnection: close\r\n\r\n";
    if client.write_all(smuggled).await.is_ok() {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(STEP, client.read_to_end(&mut rest)).await;
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.is_empty() || rest.starts_with("HTTP/1.1 451"),
            "{rest}"
        );
    }
    let origin_saw = seen(&received);
    assert!(origin_saw.starts_with("GET / HTTP/1.1"), "{origin_saw}");
    let lower = origin_saw.to_ascii_lowercase();
    for never in [
        "unfiled.cn",
        "/secret",
        "upgrade",
        "http2-settings",
        "h2c",
        "foo/1",
    ] {
        assert!(!lower.contains(never), "origin saw {never:?}: {origin_saw}");
    }
    let metrics = gate.metrics().await;
    let refused = sample_required(
        &metrics,
        "icpgate_upstream_errors_total",
        &[("pool", "storefront"), ("kind", "unasked_switch")],
    );
    assert_eq!(refused, 1.0, "{metrics}");
}

#[tokio::test]
async fn an_h2c_upgrade_is_stripped_and_never_tunnelled() {
    refused_switch_then_unfiled(
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n",
    )
    .await;
}

#[tokio::test]
async fn an_h2c_upgrade_whose_connection_omits_its_settings_is_stripped_too() {
    refused_switch_then_unfiled(
        "Connection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n",
    )
    .await;
}

#[tokio::test]
async fn an_arbitrary_upgrade_token_is_stripped_and_never_tunnelled() {
    refused_switch_then_unfiled("Connection: Upgrade\r\nUpgrade: foo/1\r\n").await;
}

#[tokio::test]
async fn a_101_to_a_plain_request_is_a_502() {
    refused_switch_then_unfiled("").await;
}

/// A gate in front of an always-switching origin (answering `protocol`, else what
/// was asked), and a client that sent `GET /ws` with `upgrade_headers` for a filed
/// host: the client's connection, what the origin received, and the answer's head.
async fn ask_to_switch(
    protocol: Option<&'static str>,
    upgrade_headers: &str,
) -> (TestGate, TcpStream, Received, String) {
    let (origin, received) = always_switching_origin(protocol).await;
    let gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    let mut client = TcpStream::connect(gate.http).await.expect("connect");
    let request = format!("GET /ws HTTP/1.1\r\nHost: example.com\r\n{upgrade_headers}\r\n");
    client.write_all(request.as_bytes()).await.expect("write");
    let head = String::from_utf8_lossy(&read_head(&mut client).await).into_owned();
    (gate, client, received, head)
}

#[tokio::test]
async fn a_websocket_upgrade_still_tunnels_to_the_switching_origin() {
    let (_gate, mut client, received, head) = ask_to_switch(
        None,
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    client.write_all(b"ping").await.expect("write");
    let mut echo = [0u8; 4];
    tokio::time::timeout(STEP, client.read_exact(&mut echo))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&echo, b"ping");
    assert!(seen(&received).ends_with("ping"));
}

/// A request listing h2c beside websocket is forwarded as a WebSocket upgrade only.
#[tokio::test]
async fn only_the_websocket_token_of_a_list_is_forwarded() {
    let (_gate, _client, received, head) =
        ask_to_switch(None, "Connection: Upgrade\r\nUpgrade: h2c, websocket\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let origin_saw = seen(&received).to_ascii_lowercase();
    assert!(
        origin_saw.contains("upgrade: websocket\r\n"),
        "{origin_saw}"
    );
    assert!(!origin_saw.contains("h2c"), "{origin_saw}");
}

/// An origin that answers a WebSocket upgrade by switching to something else gets
/// its client a 502, and the connection never becomes a tunnel.
#[tokio::test]
async fn a_websocket_request_answered_with_another_protocol_is_a_502() {
    let (origin, received) = always_switching_origin(Some("h2c")).await;
    let gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    let mut client = TcpStream::connect(gate.http).await.expect("connect");
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n\
              Upgrade: websocket\r\n\r\n",
        )
        .await
        .expect("write");
    let head = read_response(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let _ = client
        .write_all(b"GET / HTTP/1.1\r\nHost: unfiled.cn\r\n\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!seen(&received).contains("unfiled.cn"));
}
