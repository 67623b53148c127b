//! Injected faults, each answered correctly while it lasts and recovered from after:
//! an origin that resets before answering (502) or in the middle of a body (that
//! response is cut, the next one served), an origin that trickles its body (streamed
//! whole while other requests are served), a SQLite registry deleted under the gate
//! (writes refused with 503, lookups keep serving) or made read-only (`chattr +i`:
//! writes refused with 503 naming the store, resumed once writable, nothing
//! acknowledged lost), and PostgreSQL unreachable and
//! back (cached decisions keep answering, writes are refused, nothing acknowledged
//! is lost, writes resume), and a client that never reads a 256 MiB answer (the
//! origin is held back within a few MiB of buffers, the stalled connection is cut
//! after `idle_timeout`, others are served). A full registry disk and an hour-long
//! webhook outage have files of their own (`a_full_registry_disk_loses_nothing.rs`,
//! `webhook_down_for_an_hour_catches_up.rs`).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the scripted origin does on one connection.
#[derive(Clone, Copy, Debug)]
enum Act {
    /// Read the request, then reset the connection without a byte of answer.
    ResetBeforeHead,
    /// Answer a head promising 100 000 bytes, send 1 000, then reset.
    ResetMidBody,
    /// Send a 30-byte body one byte every 100 ms.
    Trickle,
    /// Answer `ok` and close.
    Answer,
}

/// An origin that plays `script` on its connections in order, then `Answer`s.
async fn scripted_origin(script: Vec<Act>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let n = next.fetch_add(1, Ordering::SeqCst);
            let act = script.get(n).copied().unwrap_or(Act::Answer);
            tokio::spawn(play(stream, act));
        }
    });
    addr
}

async fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
}

/// Close with a TCP reset (SO_LINGER 0), not a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn play(mut stream: TcpStream, act: Act) {
    read_head(&mut stream).await;
    match act {
        Act::ResetBeforeHead => reset(stream),
        Act::ResetMidBody => {
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
            let _ = stream.write_all(head).await;
            let _ = stream.write_all(&[b'x'; 1000]).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            reset(stream);
        }
        Act::Trickle => {
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n";
            let _ = stream.write_all(head).await;
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stream.write_all(b"t").await.is_err() {
                    return;
                }
            }
        }
        Act::Answer => {
            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
            let _ = stream.write_all(answer).await;
            let _ = stream.shutdown().await;
        }
    }
}

fn get(host: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get("/")
        .header("host", host)
        .body(Empty::new())
        .expect("request")
}

#[tokio::test]
async fn an_origin_reset_before_answering_is_a_502_and_the_next_request_is_served() {
    let origin = scripted_origin(vec![Act::ResetBeforeHead]).await;
    let gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    let reply = gate.get("example.com", "/").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let reply = gate.get("example.com", "/").await;
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "ok"));
    let metrics = gate.metrics().await;
    let resets = sample_required(
        &metrics,
        "icpgate_upstream_errors_total",
        &[("pool", "storefront"), ("kind", "reset")],
    );
    assert_eq!(resets, 1.0, "the reset is counted once");
}

#[tokio::test]
async fn an_origin_reset_mid_body_cuts_that_response_and_the_next_is_served() {
    let origin = scripted_origin(vec![Act::ResetMidBody]).await;
    let gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    let mut client = http1_connect(gate.http).await;
    let response = client
        .send_request(get("example.com"))
        .await
        .expect("the head arrives before the reset");
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the cut response ends instead of hanging");
    match body {
        Err(_) => {}
        Ok(collected) => assert!(
            collected.to_bytes().len() < 100_000,
            "a cut body is never passed off as complete"
        ),
    }
    let reply = gate.get("example.com", "/").await;
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "ok"));
}

#[tokio::test]
async fn a_trickled_body_streams_through_whole_while_others_are_served() {
    let origin = scripted_origin(vec![Act::Trickle]).await;
    let gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    let mut client = http1_connect(gate.http).await;
    let response = client
        .send_request(get("example.com"))
        .await
        .expect("trickle head");
    assert_eq!(response.status(), 200);
    let trickle = tokio::spawn(response.into_body().collect());
    let other = gate.get("example.com", "/").await;
    assert_eq!((other.status.as_u16(), other.text().as_str()), (200, "ok"));
    assert!(
        !trickle.is_finished(),
        "another request is answered while the trickle still runs"
    );
    let body = trickle
        .await
        .expect("task")
        .expect("the trickled body completes")
        .to_bytes();
    assert_eq!(body, Bytes::from(vec![b't'; 30]));
}

#[tokio::test]
async fn a_deleted_sqlite_registry_refuses_writes_and_lookups_keep_serving() {
    let origin = start_origin("storefront").await;
    let gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    assert_eq!(gate.get("example.com", "/").await.status, 200);
    let db = gate.dir.path().join("registry.db");
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.display());
        let _ = std::fs::remove_file(path);
    }
    let (status, body) = gate
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["after-delete.cn"], "new", None)),
        )
        .await;
    assert_eq!(
        status, 503,
        "a write into a deleted file is refused: {body}"
    );
    assert!(
        body.to_string().contains("removed or replaced"),
        "the answer says why: {body}"
    );
    // Lookups read the file the gate still holds open, and cached answers serve.
    assert_eq!(gate.get("example.com", "/").await.status, 200);
    assert_eq!(
        gate.get("www.unfiled-after-delete.cn", "/").await.reason(),
        Some("not_filed")
    );
}

/// Files made immutable (`chattr +i`) for as long as this lives: even root's open
/// descriptors then fail to write (EPERM), as on a filesystem gone read-only.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    /// `None` when `chattr` is missing or refused here (see `skip_or_fail`).
    fn set(paths: Vec<std::path::PathBuf>) -> Option<Immutable> {
        let chattr = |flag: &str, path: &std::path::Path| {
            std::process::Command::new("chattr")
                .arg(flag)
                .arg(path)
                .output()
                .is_ok_and(|out| out.status.success())
        };
        let mut set = Immutable(Vec::new());
        for path in paths {
            if !chattr("+i", &path) {
                skip_or_fail(
                    "a_read_only_sqlite_registry_refuses_writes_and_recovers",
                    &format!("`chattr +i {}` is not permitted", path.display()),
                );
                return None;
            }
            set.0.push(path);
        }
        Some(set)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(path)
                .status();
        }
    }
}

#[tokio::test]
async fn a_read_only_sqlite_registry_refuses_writes_and_recovers() {
    let origin = start_origin("storefront").await;
    let gate = TestGate::start(&standard_seed(), Some(origin), None, "").await;
    let (status, before) = gate
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["before-ro.cn"], "new", None)),
        )
        .await;
    assert_eq!(status, 201, "{before}");
    assert_eq!(gate.get("example.com", "/").await.status, 200);
    // The database and its WAL (where a write lands first) stop taking writes.
    let db = gate.dir.path().join("registry.db");
    let files = vec![
        db.clone(),
        std::path::PathBuf::from(format!("{}-wal", db.display())),
    ];
    let Some(read_only) = Immutable::set(files) else {
        return;
    };
    let (status, body) = gate
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["during-ro.cn"], "new", None)),
        )
        .await;
    assert!(
        status == 503 && body.to_string().contains("sqlite"),
        "a write the file refuses is a 503 naming the store: {status} {body}"
    );
    println!("refused while read-only: {body}");
    // Lookups and cached answers keep serving meanwhile.
    assert_eq!(gate.get("example.com", "/").await.status, 200);
    assert_eq!(
        gate.get("www.unfiled-during-ro.cn", "/").await.reason(),
        Some("not_filed")
    );
    drop(read_only);
    // Writable again: writes resume without a restart, the refused one never
    // happened, the acknowledged one is there.
    let (status, after) = gate
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["after-ro.cn"], "new", None)),
        )
        .await;
    assert_eq!(status, 201, "{after}");
    for (domain, count) in [("before-ro.cn", 1), ("during-ro.cn", 0), ("after-ro.cn", 1)] {
        let (status, page) = gate
            .api("GET", &format!("/v1/filings?domain={domain}"), None)
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(
            page["filings"].as_array().map(Vec::len),
            Some(count),
            "{domain}: {page}"
        );
    }
}

/// A TCP relay in front of PostgreSQL that a test can take down (every relayed
/// connection cut, new ones refused) and bring back.
struct Relay {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (accept_up, accept_links) = (Arc::clone(&up), Arc::clone(&links));
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !accept_up.load(Ordering::SeqCst) {
                    reset(client);
                    continue;
                }
                let link = tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                accept_links.lock().expect("links").push(link);
            }
        });
        Relay { addr, up, links }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    fn back(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn postgres_down_and_back_keeps_cached_answers_and_loses_no_acknowledged_write() {
    let Some(db) = PgDatabase::create(
        "postgres_down_and_back_keeps_cached_answers_and_loses_no_acknowledged_write",
    )
    .await
    else {
        return;
    };
    let target: SocketAddr = "127.0.0.1:5432".parse().expect("addr");
    let relay = Relay::start(target).await;
    let url = db.url.replace("127.0.0.1:5432", &relay.addr.to_string());
    assert_ne!(
        url, db.url,
        "the test database is reached through the relay"
    );
    let origin = start_origin("storefront").await;
    let section = format!("backend = \"postgres\"\nurl = \"{url}\"");
    let gate = TestGate::start_with_registry(&section, Some(origin)).await;

    let approved = gate
        .approve_new_filing("survives.cn", "浙ICP备20231111号-1")
        .await;
    let (status, pending) = gate
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["waits.cn"], "new", None)),
        )
        .await;
    assert_eq!(status, 201, "{pending}");
    assert!(
        eventually(Duration::from_secs(15), || async {
            gate.get("www.survives.cn", "/").await.status == 200
        })
        .await,
        "the approval is served"
    );

    relay.down();
    // Under the outage: the cached answer keeps serving, a filed but uncached
    // domain follows policy.on_registry_error (deny), an unfiled one needs no lookup.
    for _ in 0..20 {
        assert_eq!(gate.get("www.survives.cn", "/").await.status, 200);
    }
    assert_eq!(
        gate.get("www.waits.cn", "/").await.reason(),
        Some("registry_unavailable")
    );
    assert_eq!(
        gate.get("www.never-filed.cn", "/").await.reason(),
        Some("not_filed")
    );
    let (status, body) = gate
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["during-outage.cn"], "new", None)),
        )
        .await;
    assert_eq!(status, 503, "no write is acknowledged while down: {body}");

    relay.back();
    let pending_id = pending["id"].as_i64().expect("id");
    assert!(
        eventually(Duration::from_secs(15), || async {
            let (status, _) = gate
                .api(
                    "POST",
                    &format!("/v1/filings/{pending_id}/initial-review"),
                    Some(json!({"approve": true})),
                )
                .await;
            status == 200
        })
        .await,
        "writes resume once PostgreSQL is back"
    );
    let (status, filing) = gate
        .api("GET", &format!("/v1/filings/{approved}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(filing["status"], "approved", "{filing}");
    let (_, during) = gate
        .api("GET", "/v1/filings?domain=during-outage.cn", None)
        .await;
    assert_eq!(
        during
            .as_array()
            .map(Vec::len)
            .unwrap_or_else(|| during["filings"].as_array().map(Vec::len).unwrap_or(0)),
        0,
        "the refused write left nothing behind: {during}"
    );
}

/// The body the flooding origin promises: far more than any buffer on the way.
const HUGE_BODY: usize = 256 << 20;

/// What the flooding origin saw of its first connection.
#[derive(Default)]
struct Flooded {
    /// Body bytes the kernel accepted from the origin so far.
    written: AtomicUsize,
    /// The gate closed the origin's connection (a write failed).
    cut: AtomicBool,
}

/// An origin whose first connection answers a 256 MiB body as fast as it may be
/// written; later connections answer `ok`.
async fn flooding_origin() -> (SocketAddr, Arc<Flooded>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    let flooded = Arc::new(Flooded::default());
    let seen = Arc::clone(&flooded);
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            if !std::mem::take(&mut first) {
                tokio::spawn(play(stream, Act::Answer));
                continue;
            }
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                read_head(&mut stream).await;
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {HUGE_BODY}\r\n\r\n");
                let chunk = vec![b'f'; 64 * 1024];
                let mut ok = stream.write_all(head.as_bytes()).await.is_ok();
                while ok && seen.written.load(Ordering::SeqCst) < HUGE_BODY {
                    ok = stream.write_all(&chunk).await.is_ok();
                    if ok {
                        seen.written.fetch_add(chunk.len(), Ordering::SeqCst);
                    }
                }
                seen.cut.store(!ok, Ordering::SeqCst);
            });
        }
    });
    (addr, flooded)
}

/// The most the sockets between the origin and a stalled client can hold: two
/// receive and two send buffers at this kernel's autotuning maxima, plus 8 MiB for
/// hyper's buffers; far below [`HUGE_BODY`], so an origin that got the whole body
/// out was buffered for by the gate.
fn buffers_on_the_way() -> usize {
    let (receive, send) = tcp_buffer_maxima();
    let bound = 2 * receive + 2 * send + (8 << 20);
    assert!(
        bound < HUGE_BODY / 2,
        "socket buffers of {bound} bytes leave nothing to prove"
    );
    bound
}

/// A client asks for a 256 MiB body and never reads it. The gate must not buffer
/// the body for it: what the origin manages to write stays within the socket and
/// hyper buffers on the way (a few MiB); the stalled connection is cut once a write
/// has waited `idle_timeout` (and the origin's with it), and others are served all
/// along.
#[tokio::test]
async fn a_client_that_never_reads_holds_back_the_origin_and_is_cut() {
    let (origin, flooded) = flooding_origin().await;
    let limits = "[limits]\nidle_timeout = \"2s\"\nupstream_timeout = \"120s\"\n";
    let gate = TestGate::start(&standard_seed(), Some(origin), None, limits).await;
    let mut stalled = TcpStream::connect(gate.http).await.expect("connect");
    stalled
        .write_all(b"GET /huge HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await
        .expect("request");

    // While the body is held back, the gate answers everyone else.
    assert!(
        eventually(Duration::from_secs(10), || async {
            flooded.written.load(Ordering::SeqCst) > 0
        })
        .await,
        "the origin started its body"
    );
    for _ in 0..5 {
        let reply = gate.get("example.com", "/").await;
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "ok"));
    }
    assert!(
        eventually(Duration::from_secs(60), || async {
            flooded.cut.load(Ordering::SeqCst)
        })
        .await,
        "the stalled exchange was never cut (origin wrote {} bytes)",
        flooded.written.load(Ordering::SeqCst)
    );
    let written = flooded.written.load(Ordering::SeqCst);
    let bound = buffers_on_the_way();
    println!("the origin wrote {written} bytes (bound {bound}) before the stalled client was cut");
    assert!(
        written < bound,
        "the gate buffered the body: the origin wrote {written} of {HUGE_BODY} bytes"
    );

    // The client's connection was closed: what reached its socket buffer, then the
    // end — never the whole body.
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled connection is still open");
    assert!(
        received < HUGE_BODY,
        "the cut response was delivered whole ({received} bytes)"
    );
    let reply = gate.get("example.com", "/").await;
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "ok"));
}
