//! The contract these tests pin (issue 12, `limits.worker_threads`): every data-plane
//! thread accepts on a socket of its own, all on the one port the first socket got
//! (here `127.0.0.1:0`), and every one of them serves; `limits.max_connections`
//! bounds the process, not each thread; an address another program holds fails
//! start with an error naming the key and the address, while a second icpgate of
//! the same user may share it (the rolling restart of docs/operations.md §4).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use icpgate::app;
use icpgate::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FOUR_WORKERS: &str = "[limits]\nworker_threads = 4\nheader_read_timeout = \"10s\"\n";

async fn gate(extra: &str) -> TestGate {
    let origin = start_origin("storefront").await;
    TestGate::start(&standard_seed(), Some(origin), None, extra).await
}

/// One request on a connection of its own; the response's bytes (empty: the
/// connection was closed without an answer).
async fn one_request(addr: SocketAddr) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream
        .write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no answer nor close within 10 s");
    out
}

#[tokio::test]
async fn every_worker_serves_on_the_port_the_first_got() {
    let mut gate = gate(FOUR_WORKERS).await;
    // The kernel spreads connections over the four sockets by their addresses: 64
    // of them all miss one socket with a probability of 4 × (3/4)^64 ≈ 4e-8, so a
    // socket nobody accepts on would leave some connection unanswered.
    let answers = futures_util::future::join_all((0..64).map(|_| one_request(gate.http))).await;
    for (i, answer) in answers.iter().enumerate() {
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "connection {i}: {:?}",
            String::from_utf8_lossy(answer)
        );
    }
    gate.stop().await;
}

#[tokio::test]
async fn max_connections_bounds_the_process_not_each_thread() {
    let mut gate = gate(&format!("{FOUR_WORKERS}max_connections = 3\n")).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(gate.http).await.expect("connect"));
    }
    wait_until_open(&gate, 3).await;
    // Spread over four threads: a per-thread limit of 3 would serve these.
    let refused = futures_util::future::join_all((0..8).map(|_| one_request(gate.http))).await;
    for (i, answer) in refused.iter().enumerate() {
        assert!(
            answer.is_empty(),
            "connection {i} beyond the limit was served: {:?}",
            String::from_utf8_lossy(answer)
        );
    }
    drop(held);
    let served = eventually(Duration::from_secs(5), || async {
        one_request(gate.http).await.starts_with(b"HTTP/1.1 200")
    })
    .await;
    assert!(served, "a connection is served once the held ones closed");
    gate.stop().await;
}

/// Wait until the gate counts `open` data-plane connections.
async fn wait_until_open(gate: &TestGate, open: u64) {
    let counted = eventually(Duration::from_secs(5), || async {
        sample(&gate.metrics().await, "icpgate_connections_active", &[]) == Some(open as f64)
    })
    .await;
    assert!(counted, "icpgate_connections_active never reached {open}");
}

#[tokio::test]
async fn an_address_another_program_holds_fails_start_naming_the_key() {
    // A plain socket, without SO_REUSEPORT: no sibling may join it.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = holder.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(dir.path(), &standard_seed(), &[], &[], "", "")
        .replace("http = \"127.0.0.1:0\"", &format!("http = \"{taken}\""));
    let path = dir.path().join("icpgate.toml");
    std::fs::write(&path, text).expect("write config");
    let error = match app::start(Config::load(&path).expect("valid config")).await {
        Ok(_) => panic!("started on an address in use"),
        Err(error) => error,
    };
    // The OS error is in the message, and not again as a source (`icpgate:
    // {error:#}` prints the chain).
    assert!(std::error::Error::source(&error).is_none(), "{error:?}");
    let error = error.to_string();
    assert!(
        error.contains(&format!("cannot listen on {taken} (listen.http)")),
        "{error}"
    );
    assert!(error.to_lowercase().contains("in use"), "{error}");
}

#[tokio::test]
async fn a_second_gate_shares_the_address_for_a_rolling_restart() {
    let mut old = gate(FOUR_WORKERS).await;
    let origin = start_origin("storefront").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(dir.path(), &standard_seed(), &[origin], &[], "", "").replace(
        "http = \"127.0.0.1:0\"",
        &format!("http = \"{}\"", old.http),
    );
    let mut new = TestGate::launch(dir, &text).await;
    assert_eq!(new.http, old.http);
    old.stop().await;
    for i in 0..16 {
        let answer = one_request(new.http).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "request {i} after the old gate stopped: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    new.stop().await;
}
