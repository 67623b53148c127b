//! In-process origins: an echo server answering every request with JSON describing
//! what it received, and an address that refuses connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// An origin that answers every request with JSON describing what it received.
pub async fn start_origin(name: &'static str) -> SocketAddr {
    start_origin_reporting(name, None).await
}

/// `start_origin`, also sending each request's path to `arrivals` as it arrives
/// (before any `/sleep/N`), so a test can wait until a request is truly in flight.
pub async fn start_origin_with_arrivals(
    name: &'static str,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (sender, arrivals) = tokio::sync::mpsc::unbounded_channel();
    (start_origin_reporting(name, Some(sender)).await, arrivals)
}

async fn start_origin_reporting(
    name: &'static str,
    arrivals: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    if let Some(arrivals) = &arrivals {
                        let _ = arrivals.send(request.uri().path().to_string());
                    }
                    echo(name, request)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn echo(
    name: &'static str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for (k, v) in request.headers() {
        let v = v.to_str().unwrap_or("").to_string();
        match headers.get_mut(k.as_str()) {
            Some(Value::String(prior)) => *prior = format!("{prior}, {v}"),
            _ => {
                headers.insert(k.as_str().to_string(), Value::String(v));
            }
        }
    }
    let host_count = request.headers().get_all("host").iter().count();
    if let Some(seconds) = path
        .strip_prefix("/sleep/")
        .and_then(|s| s.parse::<f64>().ok())
    {
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let out = json!({
        "origin": name, "method": method, "path": path, "headers": headers,
        "host_count": host_count, "body": String::from_utf8_lossy(&body),
    });
    let mut response = Response::new(Full::new(Bytes::from(out.to_string())));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("static"));
    if path == "/fail" {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    Ok(response)
}

/// An address that refuses connections for as long as the returned socket lives:
/// bound, so no test running alongside can be given the port, but never listening.
pub fn refusing_address() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .expect("bind a refusing port");
    let addr = socket.local_addr().expect("addr");
    (socket, addr)
}
