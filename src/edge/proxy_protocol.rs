//! PROXY protocol v1 and v2 (HAProxy's spec): how an L4 load balancer in front of
//! the gate tells it the real client address.
//!
//! Contract of [`read_proxy_header`]:
//! - it consumes exactly the header's bytes and nothing after them, so whatever
//!   follows (an HTTP request, a TLS ClientHello) is left on the stream untouched;
//! - a connection that does not open with a v1 or v2 header, sends a malformed one,
//!   or does not complete it within the timeout is an error: the caller closes it
//!   (with `listen.proxy_protocol = true` the header is required on every connection);
//! - `Ok(Some(addr))` is the client's source address; `Ok(None)` is a header that
//!   carries no client (v1 `UNKNOWN`, v2 `LOCAL`, e.g. a balancer's health check): the
//!   caller keeps the TCP peer's address.
//!
//! A v1 header is one text line of at most 107 bytes ending in CRLF; a v2 header is a
//! 16-byte fixed part (12-byte signature, version/command, family/protocol, a 16-bit
//! length) followed by that many bytes of addresses and TLVs. Parsing is `ppp`'s.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest v1 header, CRLF included (spec §2.1).
pub const V1_MAX_BYTES: usize = 107;
/// Fixed part of a v2 header: signature, version/command, family, length.
const V2_FIXED_BYTES: usize = 16;
/// Bytes read before deciding which version this is (shorter than any v1 header).
const SNIFF_BYTES: usize = 12;
const V1_PREFIX: &[u8] = b"PROXY ";

#[derive(Debug, thiserror::Error)]
pub enum ProxyProtocolError {
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("PROXY protocol v1 header longer than {V1_MAX_BYTES} bytes")]
    V1TooLong,
    #[error("invalid PROXY protocol v1 header: {0}")]
    V1(#[from] ppp::v1::BinaryParseError),
    #[error("invalid PROXY protocol v2 header: {0}")]
    V2(#[from] ppp::v2::ParseError),
}

/// Read one PROXY v1 or v2 header from the start of `stream` within `timeout`.
pub async fn read_proxy_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyProtocolError> {
    tokio::time::timeout(timeout, read_header(stream))
        .await
        .map_err(|_| ProxyProtocolError::Timeout(timeout))?
}

async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ProxyProtocolError> {
    let mut header = vec![0u8; SNIFF_BYTES];
    stream.read_exact(&mut header).await?;
    if header.as_slice() == ppp::v2::PROTOCOL_PREFIX {
        read_v2_rest(stream, &mut header).await?;
        let parsed = ppp::v2::Header::try_from(header.as_slice())?;
        return Ok(v2_client(&parsed));
    }
    if header.starts_with(V1_PREFIX) {
        read_v1_rest(stream, &mut header).await?;
        let parsed = ppp::v1::Header::try_from(header.as_slice())?;
        return Ok(v1_client(&parsed.addresses));
    }
    Err(ProxyProtocolError::Missing)
}

/// Read the rest of a v2 header: the fixed part, then exactly `length` more bytes.
async fn read_v2_rest<S: AsyncRead + Unpin>(
    stream: &mut S,
    header: &mut Vec<u8>,
) -> Result<(), ProxyProtocolError> {
    header.resize(V2_FIXED_BYTES, 0);
    stream.read_exact(&mut header[SNIFF_BYTES..]).await?;
    let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
    header.resize(V2_FIXED_BYTES + length, 0);
    stream.read_exact(&mut header[V2_FIXED_BYTES..]).await?;
    Ok(())
}

/// Read the rest of a v1 line, one byte at a time so nothing after CRLF is consumed.
async fn read_v1_rest<S: AsyncRead + Unpin>(
    stream: &mut S,
    header: &mut Vec<u8>,
) -> Result<(), ProxyProtocolError> {
    while !header.ends_with(b"\r\n") {
        if header.len() >= V1_MAX_BYTES {
            return Err(ProxyProtocolError::V1TooLong);
        }
        header.push(stream.read_u8().await?);
    }
    Ok(())
}

fn v1_client(addresses: &ppp::v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_client(header: &ppp::v2::Header<'_>) -> Option<SocketAddr> {
    if header.command == ppp::v2::Command::Local {
        return None;
    }
    match &header.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::Unix(_) | ppp::v2::Addresses::Unspecified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_ipv4(command: u8, source: [u8; 4], port: u16, tlv: &[u8]) -> Vec<u8> {
        let mut out = ppp::v2::PROTOCOL_PREFIX.to_vec();
        out.extend([command, 0x11]);
        let length = u16::try_from(12 + tlv.len()).unwrap_or(u16::MAX);
        out.extend(length.to_be_bytes());
        out.extend(source);
        out.extend([127, 0, 0, 1]);
        out.extend(port.to_be_bytes());
        out.extend(80u16.to_be_bytes());
        out.extend(tlv);
        out
    }

    async fn read(input: &[u8]) -> (Result<Option<SocketAddr>, ProxyProtocolError>, Vec<u8>) {
        let mut stream = input;
        let result = read_proxy_header(&mut stream, Duration::from_secs(1)).await;
        (result, stream.to_vec())
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        s.parse().ok()
    }

    #[tokio::test]
    async fn accepted_headers_leave_the_request_on_the_stream() {
        let request = b"GET / HTTP/1.1\r\n\r\n";
        let cases: Vec<(Vec<u8>, Option<SocketAddr>)> = vec![
            // v1, IPv4 and IPv6
            (
                b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n".to_vec(),
                addr("198.51.100.9:5555"),
            ),
            (
                b"PROXY TCP6 2001:db8::1 ::1 4444 443\r\n".to_vec(),
                addr("[2001:db8::1]:4444"),
            ),
            // v1 UNKNOWN: the balancer's own connection, keep the peer
            (b"PROXY UNKNOWN\r\n".to_vec(), None),
            // v2 PROXY over IPv4, with and without a TLV after the addresses
            (
                v2_ipv4(0x21, [198, 51, 100, 23], 6000, &[]),
                addr("198.51.100.23:6000"),
            ),
            (
                v2_ipv4(0x21, [203, 0, 113, 5], 7000, &[0x04, 0x00, 0x01, 0x00]),
                addr("203.0.113.5:7000"),
            ),
            // v2 LOCAL: a health check, no client
            (v2_ipv4(0x20, [10, 0, 0, 1], 1, &[]), None),
        ];
        for (header, expected) in cases {
            let mut input = header.clone();
            input.extend_from_slice(request);
            let (result, rest) = read(&input).await;
            assert_eq!(result.ok(), Some(expected), "{header:?}");
            assert_eq!(rest, request, "{header:?}: only the header is consumed");
        }
    }

    #[tokio::test]
    async fn refused_headers() {
        let long = format!("PROXY TCP4 {} 1 2\r\n", "1".repeat(120));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "a bare HTTP request",
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            ),
            (
                "v1 with a bad address",
                b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n".to_vec(),
            ),
            (
                "v1 with a bad protocol",
                b"PROXY UDP4 1.1.1.1 1.1.1.1 1 2\r\n".to_vec(),
            ),
            ("v1 without CRLF within 107 bytes", long.into_bytes()),
            ("v2 with version 3", {
                let mut h = v2_ipv4(0x21, [1, 1, 1, 1], 1, &[]);
                h[12] = 0x31;
                h
            }),
            (
                "v2 cut short",
                v2_ipv4(0x21, [1, 1, 1, 1], 1, &[])[..20].to_vec(),
            ),
            ("empty", Vec::new()),
        ];
        for (what, input) in cases {
            let (result, _) = read(&input).await;
            assert!(result.is_err(), "{what}: {result:?}");
        }
    }

    #[tokio::test]
    async fn a_silent_client_times_out() {
        let (_client, mut server) = tokio::io::duplex(64);
        let result = read_proxy_header(&mut server, Duration::from_millis(50)).await;
        assert!(matches!(result, Err(ProxyProtocolError::Timeout(_))));
    }
}
