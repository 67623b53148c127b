//! The contract these tests pin: requests forwarded one after another over a client's
//! keep-alive connection go upstream on one keep-alive connection (the gate's pool
//! keeps it, whatever the method, the body or the lack of one), and a connection the
//! origin says it will close (`Connection: close`) is never used again: the next
//! request opens a new one and is answered.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// An origin answering every request 200 with the request's body length, counting
/// the connections it accepted; with `close`, every answer says `Connection: close`.
async fn counting_origin(close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let address = listener.local_addr().expect("origin addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| async move {
                    let body = request.into_body().collect().await.map(|b| b.to_bytes());
                    let length = body.map_or(0, |b| b.len());
                    let mut response = Response::new(Full::new(Bytes::from(length.to_string())));
                    if close {
                        response.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, accepted)
}

/// Sends `requests` (method, body) one after another on one client connection;
/// returns each answer's status and body.
async fn send_in_turn(gate: SocketAddr, requests: &[(&str, &'static str)]) -> Vec<(u16, String)> {
    let mut client = http1_connect::<Full<Bytes>>(gate).await;
    let mut answers = Vec::new();
    for (method, body) in requests {
        let request = Request::builder()
            .method(*method)
            .uri("/page")
            .header("host", "shop.example.com")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("request");
        let response = client.send_request(request).await.expect("answered");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        answers.push((status, String::from_utf8_lossy(&body).into_owned()));
    }
    answers
}

const MIXED: [(&str, &str); 5] = [
    ("GET", ""),
    ("POST", "hello"),
    ("HEAD", ""),
    ("PUT", "a longer body"),
    ("GET", ""),
];

#[tokio::test]
async fn requests_in_turn_share_one_upstream_connection() {
    let (origin, accepted) = counting_origin(false).await;
    let gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    let answers = send_in_turn(gate.http, &MIXED).await;
    let expected: Vec<(u16, String)> = [(200, "0"), (200, "5"), (200, ""), (200, "13"), (200, "0")]
        .iter()
        .map(|(status, body)| (*status, body.to_string()))
        .collect();
    assert_eq!(answers, expected);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection"
    );
}

#[tokio::test]
async fn a_connection_the_origin_closes_is_not_used_again() {
    let (origin, accepted) = counting_origin(true).await;
    let gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    let answers = send_in_turn(gate.http, &MIXED).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        MIXED.len(),
        "a new upstream connection for each request"
    );
}
