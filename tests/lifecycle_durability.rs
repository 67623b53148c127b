//! The contract these tests pin, against the real `icpgate` binary:
//!
//! - an acknowledged change survives `kill -9`: submit and review through the admin
//!   API, SIGKILL the process, start it again on the same registry file, read back;
//!   the notifications of those changes (outbox, same transaction) are delivered by
//!   the restarted process;
//! - `registry export` then `registry import` into a fresh registry round-trips every
//!   filing exactly; a bad file is refused with its line number and nothing of it is
//!   stored.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{admin_request, eventually, http1, submission, TestGate, TOKEN, TOKEN_ENV};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

fn write_config(dir: &Path, db: &Path, notify: SocketAddr) -> PathBuf {
    let text = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n\
         [registry]\nbackend = \"sqlite\"\npath = \"{db}\"\n\n\
         [admin]\ntoken_env = \"{TOKEN_ENV}\"\n\n\
         [notify]\nurl = \"http://{notify}/hook\"\n",
        db = db.display(),
    );
    let path = dir.join("icpgate.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// `icpgate serve`, answering `/readyz` on its admin address before this returns.
async fn spawn_gate(config: &Path) -> (Child, SocketAddr) {
    let common::Served {
        mut child, admin, ..
    } = common::serve(config);
    let ready = eventually(Duration::from_secs(10), || async {
        http1(admin, "GET", "/readyz", &[("host", "127.0.0.1")], b"")
            .await
            .status
            == StatusCode::OK
    })
    .await;
    if ready {
        return (child, admin);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("icpgate did not become ready");
}

async fn admin_post(admin: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let reply = admin_request(admin, "POST", path, Some(TOKEN), &[], Some(&body)).await;
    (reply.status.as_u16(), reply.json())
}

/// A webhook receiver that answers 503 until `up`, then counts deliveries.
async fn receiver(up: Arc<AtomicBool>, count: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (up, count) = (Arc::clone(&up), Arc::clone(&count));
            let service = service_fn(move |_request: Request<Incoming>| {
                let mut response = Response::new(Full::new(Bytes::new()));
                if up.load(Ordering::SeqCst) {
                    count.fetch_add(1, Ordering::SeqCst);
                } else {
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                async move { Ok::<_, Infallible>(response) }
            });
            tokio::spawn(
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned(),
            );
        }
    });
    addr
}

#[tokio::test]
async fn acknowledged_changes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (up, count) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let hook = receiver(Arc::clone(&up), Arc::clone(&count)).await;
    let config = write_config(dir.path(), &dir.path().join("registry.db"), hook);

    let (mut child, admin) = spawn_gate(&config).await;
    let (s, b) = admin_post(
        admin,
        "/v1/filings",
        submission(&["durable.cn"], "new", None),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_i64().expect("id");
    let (s, _) = admin_post(
        admin,
        &format!("/v1/filings/{id}/initial-review"),
        json!({"approve": true}),
    )
    .await;
    assert_eq!(s, 200);
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    child.wait().expect("reaped");
    assert_eq!(count.load(Ordering::SeqCst), 0, "the webhook was down");

    up.store(true, Ordering::SeqCst);
    let (mut child, admin) = spawn_gate(&config).await;
    // Reads need the token too (issue 15), and a Host the admin listener answers.
    let reply = admin_request(
        admin,
        "GET",
        &format!("/v1/filings/{id}"),
        Some(TOKEN),
        &[],
        None,
    )
    .await;
    let filing = reply.json();
    assert_eq!(filing["status"], "authority_review", "{filing}");
    assert_eq!(filing["history"].as_array().map(Vec::len), Some(2));
    // Both changes' notifications outlived the kill.
    eventually(Duration::from_secs(15), || {
        std::future::ready(count.load(Ordering::SeqCst) >= 2)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

fn cli(args: &[&str], config: &Path, file: &Path) -> (bool, String) {
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    all.extend([
        std::ffi::OsStr::new("--config"),
        config.as_os_str(),
        file.as_os_str(),
    ]);
    let (code, text) = common::run_icpgate(all);
    (code == Some(0), text)
}

/// A copy of `config` pointing at another registry file.
fn config_with_db(config: &Path, dir: &Path, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(config).expect("read config");
    let db = dir.join(format!("{name}.db"));
    let old = dir.join("registry.db");
    let text = text.replace(&old.display().to_string(), &db.display().to_string());
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test]
async fn export_then_import_round_trips_and_bad_files_are_refused_whole() {
    let mut g = TestGate::start(&common::standard_seed(), None, None, "").await;
    let (_, b) = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["round.cn"], "new", None)),
        )
        .await;
    let id = b["id"].as_i64().expect("id");
    g.api(
        "POST",
        &format!("/v1/filings/{id}/initial-review"),
        Some(json!({"approve": false, "reason": "退回"})),
    )
    .await;
    g.stop().await;
    let dir = g.dir.path().to_path_buf();

    let first = dir.join("first.jsonl");
    let (ok, out) = cli(&["registry", "export"], &g.config_path, &first);
    assert!(ok, "{out}");
    let exported = std::fs::read_to_string(&first).expect("export");
    assert_eq!(exported.lines().count(), common::standard_seed().len() + 1);
    assert!(
        exported.contains("91330100MA27XXXX1X"),
        "export keeps the full record"
    );

    let fresh = config_with_db(&g.config_path, &dir, "fresh");
    let (ok, out) = cli(&["registry", "import"], &fresh, &first);
    assert!(ok, "{out}");
    let second = dir.join("second.jsonl");
    let (ok, out) = cli(&["registry", "export"], &fresh, &second);
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(&second).expect("export"), exported);

    // Line 3 is bad: nothing of the file is stored.
    let mut lines: Vec<&str> = exported.lines().take(2).collect();
    lines.push(r#"{"domains":["bad.cn"],"product":"storefront","status":"approved"}"#);
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, lines.join("\n")).expect("write");
    let empty = config_with_db(&g.config_path, &dir, "empty");
    let (ok, out) = cli(&["registry", "import"], &empty, &bad);
    assert!(!ok, "{out}");
    assert!(out.contains("line 3"), "{out}");
    let after = dir.join("after.jsonl");
    let (ok, out) = cli(&["registry", "export"], &empty, &after);
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(&after).expect("export"), "");

    // A record clashing with a stored one (same id) is refused by line too.
    let (ok, out) = cli(&["registry", "import"], &fresh, &first);
    assert!(!ok && out.contains("line 1"), "{out}");
}
