//! The contract these tests pin: certificates in `tls.certs_dir` are reloaded on
//! SIGHUP (`Running::reload`) and when files change (polled), without dropping open
//! connections; a broken file is refused with an error naming it and the previous
//! set stays in force; at start-up a broken directory stops the gate.

mod common;

use std::time::Duration;

use common::tls::*;
use common::*;
use icpgate::config::Config;

async fn gate_with_certs(certs: &std::path::Path) -> TestGate {
    let origin = start_origin("storefront").await;
    TestGate::start_https(Some(origin), Some(origin), certs, "").await
}

#[tokio::test]
async fn reload_picks_up_a_new_certificate_and_keeps_open_connections() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().expect("certs");
    ca.write_pair(certs.path(), "example", &["example.com"]);
    let gate = gate_with_certs(certs.path()).await;
    let addr = gate.https();
    assert!(!handshake_ok(&ca, addr, "example.com.cn").await);

    let open = connect(&ca.client(&[b"h2"], true), addr, "example.com")
        .await
        .expect("handshake");
    let mut sender = h2_sender(open).await;
    std::fs::remove_file(certs.path().join("example.crt")).expect("rm");
    std::fs::remove_file(certs.path().join("example.key")).expect("rm");
    ca.write_pair(certs.path(), "corp", &["example.com.cn"]);
    // What SIGHUP runs: the config and the certificates are reloaded.
    gate.running
        .as_ref()
        .expect("running")
        .reload()
        .expect("the config reloads");

    assert!(
        handshake_ok(&ca, addr, "example.com.cn").await,
        "new certificate not served"
    );
    assert!(
        !handshake_ok(&ca, addr, "example.com").await,
        "removed certificate still served"
    );
    let reply = get_h2(&mut sender, "example.com", "/").await;
    assert_eq!(
        reply.status, 200,
        "an open connection was dropped by the reload"
    );
}

#[tokio::test]
async fn a_changed_directory_is_reloaded_without_a_signal() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().expect("certs");
    ca.write_pair(certs.path(), "example", &["example.com"]);
    let gate = gate_with_certs(certs.path()).await;
    let addr = gate.https();
    ca.write_pem(
        certs.path(),
        "corp",
        &["*.example.com.cn", "example.com.cn"],
    );
    let served = eventually(Duration::from_secs(6), || {
        handshake_ok(&ca, addr, "www.example.com.cn")
    })
    .await;
    assert!(served, "the poller did not pick up the new certificate");
    assert!(handshake_ok(&ca, addr, "example.com").await);
}

#[tokio::test]
async fn a_broken_file_is_reported_and_the_previous_set_kept() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().expect("certs");
    ca.write_pair(certs.path(), "example", &["example.com"]);
    let gate = gate_with_certs(certs.path()).await;
    let addr = gate.https();
    let store = gate
        .running
        .as_ref()
        .and_then(|r| r.certs.clone())
        .expect("certs");
    // Each case: files written, the file the error must name.
    let other = TestCa::new();
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![("bad.crt", "not pem".into()), ("bad.key", "x".into())],
            "bad.crt",
        ),
        (vec![("lonely.crt", String::new())], "lonely.crt"),
        (vec![("orphan.key", String::new())], "orphan.key"),
    ];
    for (files, named) in cases {
        for (name, text) in &files {
            std::fs::write(certs.path().join(name), text).expect("write");
        }
        let error = store.reload().expect_err("broken set accepted");
        assert!(
            error.to_string().contains(named),
            "{error} does not name {named}"
        );
        assert!(
            handshake_ok(&ca, addr, "example.com").await,
            "previous set lost"
        );
        for (name, _) in &files {
            std::fs::remove_file(certs.path().join(name)).expect("rm");
        }
    }
    // A key that belongs to another certificate.
    other.write_pair(certs.path(), "mismatch", &["example.com.cn"]);
    ca.write_pair(certs.path(), "tmp", &["example.com.cn"]);
    std::fs::rename(
        certs.path().join("tmp.key"),
        certs.path().join("mismatch.key"),
    )
    .expect("mv");
    std::fs::remove_file(certs.path().join("tmp.crt")).expect("rm");
    let error = store.reload().expect_err("mismatched key accepted");
    assert!(error.to_string().contains("mismatch.key"), "{error}");
    assert!(!handshake_ok(&ca, addr, "example.com.cn").await);
}

#[tokio::test]
async fn a_broken_directory_stops_start_up() {
    let certs = tempfile::tempdir().expect("certs");
    std::fs::write(certs.path().join("x.crt"), "garbage").expect("write");
    std::fs::write(certs.path().join("x.key"), "garbage").expect("write");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("icpgate.toml");
    let text = format!(
        "[listen]\nhttp = \"\"\nhttps = \"127.0.0.1:0\"\nadmin = \"\"\n[registry]\npath = \"{}\"\n[tls]\ncerts_dir = \"{}\"\n",
        dir.path().join("r.db").display(),
        certs.path().display()
    );
    std::fs::write(&path, text).expect("write config");
    let config = Config::load(&path).expect("config");
    let Err(error) = icpgate::app::start(config).await else {
        panic!("started with a broken certificate directory");
    };
    assert!(error.to_string().contains("x.crt"), "{error}");
}
