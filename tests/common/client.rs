//! Clients over real sockets: HTTP/1.1 and HTTP/2 (prior knowledge) through hyper's
//! client, so headers are exact, and raw bytes for what hyper would refuse to send.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn reason(&self) -> Option<&str> {
        self.headers
            .get("x-icpgate-reason")
            .and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP/1.1 connection to `addr` (kept alive for as many requests as the caller
/// sends), with request bodies of type `B`; the task driving it is spawned.
pub async fn http1_connect<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    http1_over(TcpStream::connect(addr).await.expect("connect")).await
}

/// HTTP/1.1 over an established stream (TCP or TLS); the task driving it is spawned.
pub async fn http1_over<I, B>(io: I) -> hyper::client::conn::http1::SendRequest<B>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    sender
}

/// One HTTP/1.1 request on a fresh connection (hyper's client, so headers are exact).
pub async fn http1(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut sender = http1_connect(addr).await;
    let mut builder = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    collect(response).await
}

/// One admin API request to `admin`: JSON `body`, `Bearer token` when given (None:
/// no Authorization header), and `extra` headers (e.g. `x-icpgate-actor`).
pub async fn admin_request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<&Value>,
) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("host", "127.0.0.1"), ("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth));
    }
    headers.extend_from_slice(extra);
    let data = body.map(Value::to_string).unwrap_or_default();
    http1(admin, method, path, &headers, data.as_bytes()).await
}

/// An HTTP/2 (prior knowledge) connection to `addr`: its sender, and the task
/// driving it, which ends when the connection closes.
pub async fn http2_connect(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    http2_over(TcpStream::connect(addr).await.expect("connect")).await
}

/// HTTP/2 over an established stream (TCP, or TLS after ALPN chose h2): its sender,
/// and the task driving it, which ends when the connection closes.
pub async fn http2_over<I>(
    io: I,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    (sender, tokio::spawn(conn))
}

/// One HTTP/2 (prior knowledge) request; `authority` goes into `:authority`.
pub async fn http2(addr: SocketAddr, authority: &str, path: &str) -> Reply {
    let (mut sender, _driver) = http2_connect(addr).await;
    let request = Request::builder()
        .uri(format!("http://{authority}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    collect(response).await
}

pub async fn collect(response: Response<Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Send raw bytes and read until the server closes (or `wait` passes).
pub async fn raw(addr: SocketAddr, data: &[u8], wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(data).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    out
}

/// The largest receive and send buffers this kernel autotunes a TCP socket to
/// (`tcp_rmem`, `tcp_wmem`; Linux's defaults when unreadable): what bytes "in
/// flight" between two stalled sockets may amount to.
pub fn tcp_buffer_maxima() -> (usize, usize) {
    let max_of = |file: &str, fallback: usize| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or(fallback)
    };
    (
        max_of("/proc/sys/net/ipv4/tcp_rmem", 6 << 20),
        max_of("/proc/sys/net/ipv4/tcp_wmem", 4 << 20),
    )
}
