//! The contract these tests pin (issue 7, PROXY protocol): with
//! `listen.proxy_protocol = true` every data-plane connection must open with a PROXY
//! v1 or v2 header; the client address it carries is the one the origin sees in
//! `X-Forwarded-For` (and the access log's `client`). A connection without the header
//! is closed unanswered. `listen.trusted_proxies` decides, for that client address,
//! whether an incoming `X-Forwarded-For` chain is kept (trusted) or replaced.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(3);

fn request(extra_headers: &str) -> String {
    format!("GET / HTTP/1.1\r\nHost: example.com\r\n{extra_headers}Connection: close\r\n\r\n")
}

fn v2_header(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend([0x21, 0x11]);
    out.extend(12u16.to_be_bytes());
    out.extend(source);
    out.extend([127, 0, 0, 1]);
    out.extend(port.to_be_bytes());
    out.extend(80u16.to_be_bytes());
    out
}

/// The status line and the origin's JSON echo of one raw exchange.
fn parse(reply: &[u8]) -> (String, Value) {
    let text = String::from_utf8_lossy(reply);
    let status = text.lines().next().unwrap_or("").to_string();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn forwarded_for(gate: &TestGate, bytes: Vec<u8>) -> String {
    let (status, echo) = parse(&raw(gate.http, &bytes, WAIT).await);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    echo["headers"]["x-forwarded-for"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn gate(trusted: &str) -> TestGate {
    let origin = start_origin("storefront").await;
    let listen = format!("proxy_protocol = true\ntrusted_proxies = [{trusted}]");
    TestGate::start_with_listen(&standard_seed(), Some(origin), None, &listen, "").await
}

#[tokio::test]
async fn v1_and_v2_client_addresses_reach_the_origin() {
    let mut gate = gate("").await;
    let v1 = [
        b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n".to_vec(),
        request("").into_bytes(),
    ]
    .concat();
    assert_eq!(forwarded_for(&gate, v1).await, "198.51.100.9");
    let v2 = [
        v2_header([198, 51, 100, 23], 6000),
        request("").into_bytes(),
    ]
    .concat();
    assert_eq!(forwarded_for(&gate, v2).await, "198.51.100.23");
    let v1_ipv6 = [
        b"PROXY TCP6 2001:db8::7 ::1 5555 80\r\n".to_vec(),
        request("").into_bytes(),
    ]
    .concat();
    assert_eq!(forwarded_for(&gate, v1_ipv6).await, "2001:db8::7");
    // UNKNOWN (the balancer's own connection): the TCP peer is the client
    let unknown = [b"PROXY UNKNOWN\r\n".to_vec(), request("").into_bytes()].concat();
    assert_eq!(forwarded_for(&gate, unknown).await, "127.0.0.1");
    gate.stop().await;
}

#[tokio::test]
async fn a_connection_without_the_header_is_not_served() {
    let mut gate = gate("").await;
    let cases: &[(&str, Vec<u8>)] = &[
        ("a bare request", request("").into_bytes()),
        (
            "a malformed v1 header",
            [
                b"PROXY TCP4 nope 127.0.0.1 1 2\r\n".to_vec(),
                request("").into_bytes(),
            ]
            .concat(),
        ),
        (
            "a v2 signature with a bad version",
            [
                {
                    let mut h = v2_header([198, 51, 100, 1], 1);
                    h[12] = 0x11;
                    h
                },
                request("").into_bytes(),
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in cases {
        let reply = raw(gate.http, bytes, WAIT).await;
        let text = String::from_utf8_lossy(&reply);
        // Never served: closed, or (a request with no header at all) told why.
        assert!(!text.contains("200 OK"), "{what}: {text:?}");
        if *what == "a bare request" {
            assert!(text.starts_with("HTTP/1.1 400"), "{what}: {text:?}");
            assert!(text.contains("proxy_protocol_required"), "{what}: {text:?}");
        } else {
            assert!(reply.is_empty(), "{what}: {text:?}");
        }
    }
    gate.stop().await;
}

#[tokio::test]
async fn trusted_proxies_decide_whether_x_forwarded_for_is_kept() {
    let mut gate = gate("\"198.51.100.0/24\"").await;
    let spoofed = request("X-Forwarded-For: 10.1.1.1\r\n");
    let from_trusted = [
        b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n".to_vec(),
        spoofed.clone().into_bytes(),
    ]
    .concat();
    assert_eq!(
        forwarded_for(&gate, from_trusted).await,
        "10.1.1.1, 198.51.100.9",
        "a trusted client's chain is kept and extended"
    );
    let from_untrusted = [
        b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n".to_vec(),
        spoofed.into_bytes(),
    ]
    .concat();
    assert_eq!(
        forwarded_for(&gate, from_untrusted).await,
        "203.0.113.9",
        "an untrusted client's X-Forwarded-For is replaced"
    );
    gate.stop().await;
}

#[tokio::test]
async fn without_proxy_protocol_a_proxy_header_is_not_believed() {
    let origin = start_origin("storefront").await;
    let mut gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    let bytes = [
        b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n".to_vec(),
        request("").into_bytes(),
    ]
    .concat();
    let (status, _) = parse(&raw(gate.http, &bytes, WAIT).await);
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    gate.stop().await;
}

/// `listen.proxy_protocol_from` names the balancers: a peer outside it is closed
/// before it can claim a client address, even with a well-formed header; one inside
/// it is served as usual.
#[tokio::test]
async fn only_peers_in_proxy_protocol_from_may_send_the_header() {
    let origin = start_origin("storefront").await;
    let header = [
        b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n".to_vec(),
        request("").into_bytes(),
    ]
    .concat();

    let listen = "proxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\"]";
    let mut elsewhere =
        TestGate::start_with_listen(&standard_seed(), Some(origin), None, listen, "").await;
    let reply = raw(elsewhere.http, &header, WAIT).await;
    assert!(
        reply.is_empty(),
        "a peer outside proxy_protocol_from was answered: {:?}",
        String::from_utf8_lossy(&reply)
    );
    elsewhere.stop().await;

    let listen = "proxy_protocol = true\nproxy_protocol_from = [\"127.0.0.0/8\"]";
    let mut allowed =
        TestGate::start_with_listen(&standard_seed(), Some(origin), None, listen, "").await;
    assert_eq!(forwarded_for(&allowed, header).await, "198.51.100.9");
    allowed.stop().await;
}
