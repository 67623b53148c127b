//! The contract these tests pin (issue 7, live reload): SIGHUP to the real
//! `icpgate serve` re-reads its config and swaps policy, upstreams, limits and the
//! decision cache in place — same process, no connection dropped: a request in flight
//! completes and a keep-alive connection opened before the reload keeps working. A
//! config that fails to load is refused and logged, and the running one keeps
//! serving. Changes that need a restart (listener addresses) are named in the log.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;

async fn status_of(addr: SocketAddr, host: &str) -> u16 {
    http1(addr, "GET", "/", &[("host", host)], b"")
        .await
        .status
        .as_u16()
}

fn rewrite(gate: &GateProcess, original: &str, extra: &str) {
    std::fs::write(&gate.config_path, format!("{original}\n{extra}\n")).expect("rewrite config");
}

async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
) -> u16 {
    let request = http::Request::get("/")
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("request");
    sender
        .send_request(request)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_config_without_dropping_requests_or_connections() {
    let origin = start_origin("storefront").await;
    let gate = GateProcess::spawn(&standard_seed(), origin, "");
    let original = std::fs::read_to_string(&gate.config_path).expect("config");
    assert_eq!(status_of(gate.http, "unfiled.cn").await, 451);
    let mut kept = http1_connect(gate.http).await;
    assert_eq!(send(&mut kept, "example.com").await, 200);

    let http = gate.http;
    let in_flight = tokio::spawn(async move {
        http1(http, "GET", "/sleep/1.5", &[("host", "example.com")], b"").await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    rewrite(
        &gate,
        &original,
        "[policy]\nblock_status = 403\n\n[cache]\nttl = \"30s\"\n",
    );
    gate.signal("HUP");
    assert!(
        eventually(Duration::from_secs(3), || async {
            status_of(http, "unfiled.cn").await == 403
        })
        .await,
        "the new block_status applies"
    );
    assert_eq!(
        in_flight.await.expect("join").status,
        200,
        "in-flight request survives"
    );
    assert_eq!(
        send(&mut kept, "unfiled.cn").await,
        403,
        "kept-alive connection survives"
    );
    assert!(gate.logged("configuration reloaded"));
    assert!(
        gate.logged("decision cache rebuilt"),
        "[cache] changes rebuild the cache"
    );
    assert_eq!(status_of(gate.http, "example.com").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_is_refused_and_the_running_one_keeps_serving() {
    let origin = start_origin("storefront").await;
    let mut gate = GateProcess::spawn(&standard_seed(), origin, "[policy]\nblock_status = 403\n");
    let original = std::fs::read_to_string(&gate.config_path).expect("config");
    let broken_cases = [
        ("a TOML syntax error", "[listen\nbroken = \n"),
        ("a misspelt key", "[limits]\nmax_conections = 5\n"),
        ("a value of the wrong type", "[cache]\nmax_entries = -1\n"),
        (
            "a value validation refuses",
            "[limits]\nmax_header_bytes = 10\n",
        ),
    ];
    for (what, extra) in broken_cases {
        rewrite(&gate, &original, extra);
        gate.signal("HUP");
        let http = gate.http;
        let refused = eventually(Duration::from_secs(3), || async {
            gate.logged("reload refused")
        })
        .await;
        assert!(refused, "{what}: refusal logged");
        gate.log.lock().expect("log").clear();
        assert!(
            gate.child.try_wait().ok().flatten().is_none(),
            "{what}: still running"
        );
        assert_eq!(
            status_of(http, "unfiled.cn").await,
            403,
            "{what}: old config serves"
        );
        assert_eq!(status_of(http, "example.com").await, 200, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_change_is_named_as_needing_a_restart() {
    let origin = start_origin("storefront").await;
    let gate = GateProcess::spawn(&standard_seed(), origin, "");
    let original = std::fs::read_to_string(&gate.config_path).expect("config");
    let moved = original.replacen("http = \"127.0.0.1:0\"", "http = \"127.0.0.1:1\"", 1);
    std::fs::write(&gate.config_path, moved).expect("rewrite");
    gate.signal("HUP");
    assert!(
        eventually(Duration::from_secs(3), || async {
            gate.logged("only after a restart")
        })
        .await,
        "restart-only change logged"
    );
    assert!(gate
        .log
        .lock()
        .expect("log")
        .iter()
        .any(|l| l.contains("listen.http")));
    assert_eq!(
        status_of(gate.http, "example.com").await,
        200,
        "still on the old address"
    );
}
