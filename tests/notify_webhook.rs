//! The contract these tests pin: every filing change reaches the `[notify] url`
//! webhook from the durable outbox.
//!
//! - a receiver that fails the first attempts still gets every event, retried with
//!   backoff; the admin API answered each change at once meanwhile;
//! - each delivery carries `X-Icpgate-Signature: sha256=<HMAC-SHA256(secret, body)>`
//!   (checked here with an independent HMAC) and `X-Icpgate-Event`;
//! - the body names the filing, domains, from, to, actor, reason, at and ICP number,
//!   and holds no personal data;
//! - events still pending when the gate stops are delivered after it starts again.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, submission, wait_until, TestGate};
use hmac::{Hmac, Mac};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;

const SECRET: &str = "webhook-secret-9d1";

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// Answer 500 to this many more attempts.
    fail_next: usize,
    attempts: usize,
    /// Accepted deliveries: (event header, signature header, body).
    delivered: Vec<(String, String, Bytes)>,
}

async fn start_receiver(fail_next: usize) -> (SocketAddr, Arc<Mutex<Seen>>) {
    start_receiver_on(fail_next, None).await
}

/// The receiver, over TLS when `tls` is given.
async fn start_receiver_on(
    fail_next: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Seen {
        fail_next,
        ..Seen::default()
    }));
    let state = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = Arc::clone(&state);
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |r| receive(Arc::clone(&state), r));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(config) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(config);
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

async fn receive(
    seen: Arc<Mutex<Seen>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (event, signature) = (header("x-icpgate-event"), header("x-icpgate-signature"));
    // The signature covers the timestamp: kept together for the checks.
    let signature = format!("{}|{signature}", header("x-icpgate-timestamp"));
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut seen = seen.lock().expect("lock");
    seen.attempts += 1;
    let mut response = Response::new(Full::new(Bytes::new()));
    if seen.fail_next > 0 {
        seen.fail_next -= 1;
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    } else {
        seen.delivered.push((event, signature, body));
    }
    Ok(response)
}

fn now_s() -> i64 {
    icpgate::registry::now_ms() / 1000
}

fn notify_config(addr: SocketAddr) -> String {
    format!("[notify]\nurl = \"http://{addr}/hook\"\nsecret = \"{SECRET}\"\n")
}

/// Wait (up to 30 s) until `n` distinct events were delivered; their bodies by event id.
async fn delivered(seen: &Arc<Mutex<Seen>>, n: usize) -> Vec<(String, String, Value)> {
    let distinct = || {
        let seen = seen.lock().expect("lock");
        let mut out: Vec<(String, String, Value)> = Vec::new();
        for (event, signature, body) in &seen.delivered {
            if !out.iter().any(|(e, _, _)| e == event) {
                let value = serde_json::from_slice(body).unwrap_or(Value::Null);
                out.push((event.clone(), signature.clone(), value));
            }
        }
        std::future::ready((out.len() >= n).then_some(out))
    };
    wait_until(Duration::from_secs(30), distinct)
        .await
        .unwrap_or_else(|| panic!("{n} events were not delivered in time"))
}

/// `<timestamp>|sha256=<hex>`: what a delivery at `timestamp` must carry.
fn hmac_hex(timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{timestamp}|sha256={hex}")
}

#[tokio::test]
async fn retries_until_delivered_and_signs_each_event() {
    let (addr, seen) = start_receiver(3).await;
    let g = TestGate::start(&[], None, None, &notify_config(addr)).await;
    let (s, b) = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["hook.cn"], "new", None)),
        )
        .await;
    assert_eq!(s, 201);
    let id = b["id"].as_i64().expect("id");
    let (s, _) = g
        .api(
            "POST",
            &format!("/v1/filings/{id}/initial-review"),
            Some(json!({"approve": false, "reason": "材料不全"})),
        )
        .await;
    assert_eq!(s, 200, "a failing webhook must not block a transition");

    let events = delivered(&seen, 2).await;
    assert!(
        seen.lock().expect("lock").attempts >= 5,
        "3 failures then 2 deliveries"
    );
    let raw: Vec<Bytes> = seen
        .lock()
        .expect("lock")
        .delivered
        .iter()
        .map(|d| d.2.clone())
        .collect();
    for ((event, signature, body), raw) in events.iter().zip(&raw) {
        let (timestamp, _) = signature.split_once('|').expect("timestamp");
        let age = now_s() - timestamp.parse::<i64>().expect("Unix seconds");
        assert!((0..60).contains(&age), "a fresh timestamp: {timestamp}");
        assert_eq!(
            signature,
            &hmac_hex(timestamp, raw),
            "signature of event {event}"
        );
        assert_eq!(body["event_id"].to_string(), *event);
        assert_eq!(body["filing_id"], id);
        assert_eq!(body["domains"], json!(["hook.cn"]));
        assert_eq!(body["actor"], "admin");
        assert!(body["at"].as_str().is_some_and(|t| t.ends_with('Z')));
        let text = String::from_utf8_lossy(raw);
        for secret in [
            "91330100MA27XXXX1X",
            "13800000000",
            "ops@example.cn",
            "张三",
        ] {
            assert!(!text.contains(secret), "payload leaks {secret}: {text}");
        }
    }
    let steps: Vec<(Value, Value, Value)> = events
        .iter()
        .map(|(_, _, b)| (b["from"].clone(), b["to"].clone(), b["reason"].clone()))
        .collect();
    assert!(
        steps.contains(&(Value::Null, json!("initial_review"), Value::Null)),
        "{steps:?}"
    );
    assert!(
        steps.contains(&(
            json!("initial_review"),
            json!("rejected"),
            json!("材料不全")
        )),
        "{steps:?}"
    );
}

#[tokio::test]
async fn pending_events_are_delivered_after_a_restart() {
    let (addr, seen) = start_receiver(usize::MAX).await;
    let mut g = TestGate::start(&[], None, None, &notify_config(addr)).await;
    let (s, b) = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["later.cn"], "new", None)),
        )
        .await;
    assert_eq!(s, 201);
    let id = b["id"].as_i64().expect("id");
    // The first abandons, the second is refused: only real changes are events.
    let abandon = format!("/v1/filings/{id}/abandon");
    let (s, b) = g
        .api("POST", &abandon, Some(json!({"reason": "one"})))
        .await;
    assert_eq!(s, 200, "the first abandon is a change: {b}");
    let (s, b) = g
        .api("POST", &abandon, Some(json!({"reason": "two"})))
        .await;
    assert_eq!(s, 409, "an abandoned filing cannot be abandoned again: {b}");
    assert_eq!(b["error"], "conflict", "{b}");
    // Let at least one attempt fail, then stop with the events pending.
    let attempted = eventually(Duration::from_secs(3), || {
        std::future::ready(seen.lock().expect("lock").attempts > 0)
    })
    .await;
    assert!(attempted, "the notifier made no attempt");
    g.stop().await;
    // The stopped notifier finishes an attempt in flight (failing) and then ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(seen.lock().expect("lock").delivered.is_empty());
    seen.lock().expect("lock").fail_next = 0;
    g.restart().await;
    let mut events = delivered(&seen, 2).await;
    events.sort_by_key(|(_, _, b)| b["event_id"].as_i64());
    let tos: Vec<&Value> = events.iter().map(|(_, _, b)| &b["to"]).collect();
    assert_eq!(tos, [&json!("initial_review"), &json!("abandoned")]);
    // Delivered once each: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = seen.lock().expect("lock");
    let ids: std::collections::BTreeSet<&String> = seen.delivered.iter().map(|d| &d.0).collect();
    assert_eq!((ids.len(), seen.delivered.len()), (2, 2));
}

#[tokio::test]
async fn https_receivers_are_verified_and_delivered() {
    let ca = common::tls::TestCa::new();
    let (addr, seen) = start_receiver_on(1, Some(ca.server_config(&["localhost"]))).await;
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = dir.path().join("receiver-ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");
    let notify = format!(
        "[notify]\nurl = \"https://localhost:{}/hook\"\nsecret = \"{SECRET}\"\nca_file = \"{}\"\n",
        addr.port(),
        ca_file.display()
    );
    let g = TestGate::start(&[], None, None, &notify).await;
    let (status, _) = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["tls-hook.cn"], "new", None)),
        )
        .await;
    assert_eq!(status, 201);
    let events = delivered(&seen, 1).await;
    assert_eq!(events[0].2["domains"], json!(["tls-hook.cn"]));
    assert!(
        seen.lock().expect("lock").attempts >= 2,
        "the first attempt failed and was retried"
    );
}

#[tokio::test]
async fn an_https_receiver_with_an_untrusted_certificate_gets_nothing() {
    let ca = common::tls::TestCa::new();
    let (addr, seen) = start_receiver_on(0, Some(ca.server_config(&["localhost"]))).await;
    let notify = format!(
        "[notify]\nurl = \"https://localhost:{}/hook\"\n",
        addr.port()
    );
    let g = TestGate::start(&[], None, None, &notify).await;
    let (status, _) = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["untrusted-hook.cn"], "new", None)),
        )
        .await;
    assert_eq!(status, 201, "a failing webhook never blocks a change");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = seen.lock().expect("lock");
    assert!(
        seen.delivered.is_empty() && seen.attempts == 0,
        "no request reached an unverified receiver"
    );
}

/// A fleet on one PostgreSQL registry: every node runs a notifier on the shared
/// outbox, and each event is still delivered once (claims keep nodes off each
/// other's events).
#[tokio::test]
async fn a_fleet_delivers_each_event_once() {
    let Some(db) = common::PgDatabase::create("a_fleet_delivers_each_event_once").await else {
        return;
    };
    let (addr, seen) = start_receiver(0).await;
    let section = format!(
        "backend = \"postgres\"\nurl = \"{}\"\n\n{}",
        db.url,
        notify_config(addr)
    );
    let node_a = TestGate::start_with_registry(&section, None).await;
    let node_b = TestGate::start_with_registry(&section, None).await;
    for (i, node) in [&node_a, &node_b, &node_a].iter().enumerate() {
        let domain = format!("fleet-hook-{i}.cn");
        let (status, _) = node
            .api(
                "POST",
                "/v1/filings",
                Some(submission(&[&domain], "new", None)),
            )
            .await;
        assert_eq!(status, 201);
    }
    let events = delivered(&seen, 3).await;
    assert!(events
        .iter()
        .all(|(_, signature, _)| signature.contains("|sha256=")));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = seen.lock().expect("lock");
    assert_eq!(
        seen.delivered.len(),
        3,
        "each event exactly once across the fleet"
    );
}

/// A step taken in the review console is the API's step: its webhook event names
/// the console's actor and carries the reason typed in the form.
#[tokio::test]
async fn a_console_review_sends_the_same_event() {
    let (addr, seen) = start_receiver(0).await;
    let g = TestGate::start(&[], None, None, &notify_config(addr)).await;
    let (s, b) = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["console-hook.cn"], "new", None)),
        )
        .await;
    assert_eq!(s, 201);
    let id = b["id"].as_i64().expect("id");
    let mut console = common::ConsoleClient::new(g.admin);
    console.sign_in(common::TOKEN).await;
    let page = format!("/console/filings/{id}");
    let csrf = console.csrf(&page).await;
    let reply = console
        .post(
            &format!("{page}/initial-review"),
            &[
                ("approve", "false"),
                ("reason", "证件模糊"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let events = delivered(&seen, 2).await;
    let review = events
        .iter()
        .map(|(_, _, body)| body)
        .find(|body| body["to"] == "rejected")
        .expect("the console's rejection is delivered");
    assert_eq!(review["from"], "initial_review");
    assert_eq!(review["reason"], "证件模糊");
    assert_eq!(review["actor"], "admin");
    assert_eq!(review["domains"], json!(["console-hook.cn"]));
}
