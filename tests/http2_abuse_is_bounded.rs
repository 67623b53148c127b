//! The contract these tests pin: an HTTP/2 client cannot exhaust the gate through
//! the protocol's own machinery. `limits.h2_max_concurrent_streams` is advertised in
//! SETTINGS; a client that opens and cancels streams in a loop (rapid reset,
//! CVE-2023-44487) faster than `limits.h2_max_resets_per_second` is sent a GOAWAY
//! and loses its connection; a header list over `limits.max_header_bytes` never reaches
//! the gate; a client flooding PING or SETTINGS frames without reading the answers
//! is pushed back (the gate stops reading it) instead of queueing answers without end;
//! a HEADERS frame followed by CONTINUATION frames without end (full or empty ones)
//! loses its connection (a GOAWAY, then the close) after a bounded amount.
//! Each offender loses only its own connection: the gate keeps serving.
//! The client is the `h2` crate driven by hand, so it can misbehave.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use h2::client::SendRequest;
use h2::Reason as H2Reason;
use http::Request;
use tokio::net::TcpStream;

const STEP: Duration = Duration::from_secs(10);

async fn gate_with_limits(limits: &str) -> TestGate {
    let origin = start_origin("storefront").await;
    let extra = format!("[limits]\n{limits}\n");
    TestGate::start(&standard_seed(), Some(origin), None, &extra).await
}

/// A raw h2 connection; the driver task reports how the connection ended.
async fn h2_client(
    gate: &TestGate,
) -> (
    SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(gate.http).await.expect("connect");
    let (sender, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    (sender, tokio::spawn(connection))
}

fn get(authority: &str, path: &str) -> Request<()> {
    Request::get(format!("http://{authority}{path}"))
        .body(())
        .expect("request")
}

/// One complete request on `sender`; its status.
async fn status_of(sender: &mut SendRequest<Bytes>, request: Request<()>) -> u16 {
    let ready = sender.clone().ready().await.expect("ready");
    *sender = ready;
    let (response, _) = sender.send_request(request, true).expect("send");
    let response = tokio::time::timeout(STEP, response)
        .await
        .expect("answer in time")
        .expect("response");
    response.status().as_u16()
}

/// The gate still answers a well-behaved client on a new connection.
async fn still_serving(gate: &TestGate) {
    let reply = http2(gate.http, "example.com", "/").await;
    assert_eq!(reply.status, 200, "the gate stopped serving others");
}

#[tokio::test]
async fn the_stream_limit_is_advertised_in_settings() {
    let gate = gate_with_limits("h2_max_concurrent_streams = 3").await;
    let (mut sender, _driver) = h2_client(&gate).await;
    // The server's SETTINGS have arrived once a first exchange completed.
    assert_eq!(status_of(&mut sender, get("example.com", "/")).await, 200);
    assert_eq!(sender.current_max_send_streams(), 3);
}

#[tokio::test]
async fn rapid_reset_ends_in_a_goaway_and_others_are_served() {
    let gate = gate_with_limits("h2_max_resets_per_second = 5").await;
    let (mut sender, driver) = h2_client(&gate).await;
    let mut cancelled = 0u32;
    let ended = tokio::time::timeout(STEP, async {
        for _ in 0..20_000 {
            let Ok(ready) = sender.clone().ready().await else {
                return true;
            };
            sender = ready;
            let Ok((_, mut stream)) = sender.send_request(get("example.com", "/sleep/1"), false)
            else {
                return true;
            };
            stream.send_reset(H2Reason::CANCEL);
            cancelled += 1;
            // Let the connection task write the frames, as a real attacker's would.
            tokio::task::yield_now().await;
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(
        ended,
        "20 000 opened-and-cancelled streams were all accepted"
    );
    // The gate sent a GOAWAY and closed the connection: the driver ends, cleanly
    // (NO_ERROR after the drain) or with the GOAWAY's error.
    let closed = tokio::time::timeout(STEP, driver)
        .await
        .expect("the connection closes")
        .expect("driver task");
    if let Err(error) = closed {
        assert!(error.is_go_away() || error.is_io(), "{error:?}");
    }
    assert!(cancelled > 5, "only {cancelled} streams before the GOAWAY");
    assert!(cancelled < 20_000, "the connection was never closed");
    still_serving(&gate).await;
}

#[tokio::test]
async fn a_header_list_over_the_limit_never_reaches_the_gate() {
    let gate = gate_with_limits("max_header_bytes = 4096").await;
    let origin_count_before = gate.metrics().await;
    let (mut sender, _driver) = h2_client(&gate).await;
    // About 64 KiB of headers, 16 times the limit, in many fields (HPACK and
    // CONTINUATION frames carry them).
    let mut builder = Request::get("http://example.com/");
    for i in 0..256 {
        builder = builder.header(format!("x-filler-{i}"), "v".repeat(250));
    }
    let request = builder.body(()).expect("request");
    let ready = sender.clone().ready().await.expect("ready");
    sender = ready;
    let outcome = match sender.send_request(request, true) {
        Ok((response, _)) => tokio::time::timeout(STEP, response)
            .await
            .expect("an answer or a reset in time")
            .map(|r| r.status().as_u16()),
        Err(error) => Err(error),
    };
    match outcome {
        // Refused by HTTP (431) or by the protocol (stream reset / GOAWAY).
        Ok(status) => assert_eq!(status, 431),
        Err(error) => assert!(error.is_reset() || error.is_go_away(), "{error:?}"),
    }
    let forwarded = sample_required(
        &gate.metrics().await,
        "icpgate_requests_total",
        &[("decision", "allow")],
    );
    let before = sample_required(
        &origin_count_before,
        "icpgate_requests_total",
        &[("decision", "allow")],
    );
    assert_eq!(forwarded, before, "the oversized request was forwarded");
    still_serving(&gate).await;
}

/// The client connection preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// A PING frame (type 6, stream 0, 8 bytes of opaque data).
const PING: &[u8] = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00icpgate!";
/// An empty SETTINGS frame: each must be acknowledged.
const SETTINGS: &[u8] = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A client floods `frame`s, each demanding an answer, and never reads. The gate
/// must push back (stop reading once its answers are unread: at most one pending
/// PONG and one pending SETTINGS ACK per connection in `h2`) or close the
/// connection; 64 MiB of flood must never be swallowed. Others are served meanwhile.
async fn flood_is_pushed_back(frame: &'static [u8]) {
    use tokio::io::AsyncWriteExt;
    let gate = gate_with_limits("").await;
    let mut tcp = TcpStream::connect(gate.http).await.expect("connect");
    tcp.write_all(PREFACE).await.expect("preface");
    let chunk: Vec<u8> = frame.repeat((1 << 20) / frame.len());
    let flood = tokio::spawn(async move {
        for sent in 0..64 {
            if tcp.write_all(&chunk).await.is_err() {
                return Err(sent);
            }
        }
        Ok(tcp)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    still_serving(&gate).await;
    match tokio::time::timeout(Duration::from_secs(5), flood).await {
        // The writer is stuck: the gate stopped reading the flood.
        Err(_) => {}
        // The gate closed the connection.
        Ok(Ok(Err(_))) => {}
        Ok(outcome) => panic!("the gate swallowed a 64 MiB flood: {outcome:?}"),
    }
    still_serving(&gate).await;
}

#[tokio::test]
async fn a_ping_flood_is_pushed_back_and_others_are_served() {
    flood_is_pushed_back(PING).await;
}

#[tokio::test]
async fn a_settings_flood_is_pushed_back_and_others_are_served() {
    flood_is_pushed_back(SETTINGS).await;
}

/// One HTTP/2 frame: a 9-byte header (length, type, flags, stream) and `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("frame length");
    let mut out = length.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

const HEADERS: u8 = 0x1;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;

/// The start of a GET's header block (HPACK): `:method GET`, `:scheme http`,
/// `:path /` from the static table, `:authority example.com` as a literal.
fn request_head_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 11];
    block.extend(b"example.com");
    block
}

/// A CONTINUATION payload of about 16 KB: literal fields `x-flood: aaa…` (never
/// indexed, so each one is decoded and counted against the header list).
fn filler_block() -> Vec<u8> {
    let mut field = vec![0x00, 7];
    field.extend(b"x-flood");
    field.push(100);
    field.extend([b'a'; 100]);
    field.repeat(16_000 / field.len())
}

/// How the gate ended a flooded connection, as its client saw it.
#[derive(Debug)]
struct Ending {
    /// The error code of the GOAWAY the gate sent, if one arrived before the close.
    goaway: Option<u32>,
    /// Whether the gate sent any HEADERS frame (an answer to the flooding request).
    answered: bool,
}

/// Read the gate's frames until the connection ends.
async fn read_until_closed(mut read: tokio::net::tcp::OwnedReadHalf) -> Ending {
    use tokio::io::AsyncReadExt;
    let mut ending = Ending {
        goaway: None,
        answered: false,
    };
    let mut head = [0u8; 9];
    while read.read_exact(&mut head).await.is_ok() {
        let length =
            (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; length];
        if read.read_exact(&mut payload).await.is_err() {
            break;
        }
        match head[3] {
            GOAWAY if payload.len() >= 8 => {
                let code = [payload[4], payload[5], payload[6], payload[7]];
                ending.goaway = Some(u32::from_be_bytes(code));
            }
            HEADERS => ending.answered = true,
            _ => {}
        }
    }
    ending
}

/// A client opens a request with HEADERS lacking END_HEADERS, then sends
/// `continuation` frames without end. The gate must close that connection (GOAWAY
/// or reset) after a bounded amount, never buffer the flood, never forward the
/// request, and keep serving another client meanwhile and after.
async fn continuation_flood_is_cut(continuation: Vec<u8>) {
    use tokio::io::AsyncWriteExt;
    const FLOOD_BYTES: usize = 256 << 20;
    let gate = gate_with_limits("").await;
    let tcp = TcpStream::connect(gate.http).await.expect("connect");
    let (read, mut write) = tcp.into_split();
    let ending = tokio::spawn(read_until_closed(read));
    let mut opening = PREFACE.to_vec();
    opening.extend(frame(HEADERS, END_STREAM, 1, &request_head_block()));
    write
        .write_all(&opening)
        .await
        .expect("preface and HEADERS");
    let chunk: Vec<u8> = continuation.repeat((1 << 20) / continuation.len());
    let flood = tokio::spawn(async move {
        let mut sent = 0usize;
        while sent < FLOOD_BYTES {
            if write.write_all(&chunk).await.is_err() {
                return Err(sent);
            }
            sent += chunk.len();
        }
        Ok(sent)
    });
    still_serving(&gate).await;
    let ending = tokio::time::timeout(STEP, ending)
        .await
        .expect("the gate closes the flooded connection")
        .expect("reader task");
    let sent = tokio::time::timeout(STEP, flood)
        .await
        .expect("the flood stops once the connection is closed")
        .expect("flood task");
    println!("ended with {ending:?}; the flood got {sent:?} bytes out");
    let sent = sent.expect_err("the gate took the whole 256 MiB flood");
    // What the gate read before its GOAWAY is a few frames; the rest of what got out
    // sat in the two sockets' buffers.
    let (receive, send) = tcp_buffer_maxima();
    assert!(
        sent < receive + send + (1 << 20),
        "the gate read {sent} bytes of flood before closing"
    );
    assert!(!ending.answered, "the unfinished request was answered");
    if let Some(code) = ending.goaway {
        // ENHANCE_YOUR_CALM (too many CONTINUATIONs), COMPRESSION_ERROR or
        // PROTOCOL_ERROR: anything but a graceful NO_ERROR.
        assert_ne!(code, 0, "the GOAWAY names the abuse");
    }
    still_serving(&gate).await;
}

#[tokio::test]
async fn a_continuation_flood_is_cut_and_others_are_served() {
    continuation_flood_is_cut(frame(CONTINUATION, 0, 1, &filler_block())).await;
}

#[tokio::test]
async fn a_flood_of_empty_continuations_is_cut_and_others_are_served() {
    continuation_flood_is_cut(frame(CONTINUATION, 0, 1, &[])).await;
}
