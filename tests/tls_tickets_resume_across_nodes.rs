//! The contract these tests pin (issue 12, `tls.ticket_key_file`):
//!
//! - Gates started with the same 48-byte key file resume each other's sessions: a
//!   ticket a client got from gate A resumes on gate B, over TLS 1.3 and TLS 1.2;
//!   a gate with another key answers the same client with a full handshake.
//! - Resumptions are counted as `icpgate_tls_handshakes_total{result="resumed"}`,
//!   full handshakes as `result="ok"`.
//! - A reload (what SIGHUP runs) rotates the key: tickets are sealed with the new key
//!   from then on, and tickets under the previous key still resume.
//! - A key file of the wrong length stops start-up with an error naming the file and
//!   the key; on reload it is refused, the key in force stays, and tickets keep
//!   resuming.
//! - The same holds for the real binary with a real SIGHUP, seen by another TLS
//!   stack: `openssl s_client -sess_out` on node A, `-sess_in` on node B (openssl
//!   must be on PATH; without it the test fails under CI and is skipped elsewhere).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::tls::*;
use common::*;
use icpgate::config::Config;
use ring::rand::SecureRandom;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::HandshakeKind;
use tokio_rustls::TlsConnector;

/// Write 48 fresh random bytes to `path`, as an operator would with
/// `head -c 48 /dev/urandom`.
fn write_random_key(path: &Path) {
    let mut key = [0u8; 48];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .expect("random bytes");
    std::fs::write(path, key).expect("write key file");
}

/// One node of a fleet: its own registry and listeners; the certificates and the
/// ticket key file are the fleet's.
async fn node(certs: &Path, key_file: &Path, origin: SocketAddr) -> TestGate {
    let key = format!("ticket_key_file = \"{}\"\n", key_file.display());
    TestGate::start_https(Some(origin), Some(origin), certs, &key).await
}

/// A client trusting `ca` with its own session store (every connection it makes
/// offers what earlier ones stored), speaking only TLS 1.3 or only TLS 1.2.
fn client(ca: &TestCa, tls13: bool) -> TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("trust CA");
    }
    let version = if tls13 {
        &rustls::version::TLS13
    } else {
        &rustls::version::TLS12
    };
    let config = rustls::ClientConfig::builder_with_protocol_versions(&[version])
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Handshake with `example.com` and GET / over it (reading the answer also takes
/// in the TLS 1.3 tickets sent after the handshake); how the handshake went.
async fn visit(connector: &TlsConnector, addr: SocketAddr) -> HandshakeKind {
    let stream = connect(connector, addr, "example.com")
        .await
        .expect("handshake");
    let kind = stream.get_ref().1.handshake_kind().expect("handshake done");
    let reply = get_h1(stream, "example.com", "/").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    kind
}

fn handshakes(metrics: &str, result: &str) -> f64 {
    sample_required(
        metrics,
        "icpgate_tls_handshakes_total",
        &[("result", result)],
    )
}

struct Fleet {
    ca: TestCa,
    certs: tempfile::TempDir,
    keys: tempfile::TempDir,
    origin: SocketAddr,
}

impl Fleet {
    async fn new() -> Fleet {
        let ca = TestCa::new();
        let certs = tempfile::tempdir().expect("certs");
        ca.write_pair(certs.path(), "example", &["example.com"]);
        Fleet {
            ca,
            certs,
            keys: tempfile::tempdir().expect("keys"),
            origin: start_origin("storefront").await,
        }
    }

    /// A fresh random key file named `name`.
    fn key(&self, name: &str) -> std::path::PathBuf {
        let path = self.keys.path().join(name);
        write_random_key(&path);
        path
    }

    async fn node(&self, key_file: &Path) -> TestGate {
        node(self.certs.path(), key_file, self.origin).await
    }
}

#[tokio::test]
async fn a_ticket_from_one_node_resumes_on_another_with_the_same_key_file() {
    let fleet = Fleet::new().await;
    let shared = fleet.key("fleet.key");
    let a = fleet.node(&shared).await;
    let b = fleet.node(&shared).await;
    let stranger = fleet.node(&fleet.key("other.key")).await;

    for tls13 in [true, false] {
        let version = if tls13 { "TLS 1.3" } else { "TLS 1.2" };
        let to_b = client(&fleet.ca, tls13);
        assert_eq!(
            visit(&to_b, a.https()).await,
            HandshakeKind::Full,
            "{version}"
        );
        assert_eq!(
            visit(&to_b, b.https()).await,
            HandshakeKind::Resumed,
            "{version}: A's ticket did not resume on B"
        );

        let to_stranger = client(&fleet.ca, tls13);
        assert_eq!(visit(&to_stranger, a.https()).await, HandshakeKind::Full);
        assert_eq!(
            visit(&to_stranger, stranger.https()).await,
            HandshakeKind::Full,
            "{version}: a ticket under another key resumed"
        );
    }

    let (a, b, stranger) = (
        a.metrics().await,
        b.metrics().await,
        stranger.metrics().await,
    );
    assert_eq!(handshakes(&a, "ok"), 4.0, "{a}");
    assert_eq!(handshakes(&a, "resumed"), 0.0, "{a}");
    assert_eq!(handshakes(&b, "ok"), 0.0, "{b}");
    assert_eq!(handshakes(&b, "resumed"), 2.0, "{b}");
    assert_eq!(handshakes(&stranger, "ok"), 2.0, "{stranger}");
    assert_eq!(handshakes(&stranger, "resumed"), 0.0, "{stranger}");
}

#[tokio::test]
async fn a_reload_rotates_the_key_and_tickets_under_the_previous_one_still_resume() {
    let fleet = Fleet::new().await;
    let shared = fleet.key("fleet.key");
    let a = fleet.node(&shared).await;
    let b = fleet.node(&shared).await;

    let before = client(&fleet.ca, true);
    assert_eq!(visit(&before, a.https()).await, HandshakeKind::Full);

    // Rotate the fleet: a new key in the file, then what SIGHUP runs on each node.
    std::fs::copy(&shared, fleet.keys.path().join("previous.key")).expect("keep old key");
    write_random_key(&shared);
    for gate in [&a, &b] {
        gate.running
            .as_ref()
            .expect("running")
            .reload()
            .expect("the config reloads");
    }

    assert_eq!(
        visit(&before, b.https()).await,
        HandshakeKind::Resumed,
        "a ticket under the previous key no longer resumes"
    );
    let after = client(&fleet.ca, true);
    assert_eq!(visit(&after, a.https()).await, HandshakeKind::Full);
    assert_eq!(visit(&after, b.https()).await, HandshakeKind::Resumed);

    // The new key seals: a node that only ever held the new key resumes tickets
    // issued after the rotation, and not those from before it.
    let newcomer = fleet.node(&shared).await;
    assert_eq!(
        visit(&after, newcomer.https()).await,
        HandshakeKind::Resumed,
        "tickets issued after the reload are not sealed with the new key"
    );
    let only_before = client(&fleet.ca, true);
    let old_only = fleet.node(&fleet.keys.path().join("previous.key")).await;
    assert_eq!(
        visit(&only_before, old_only.https()).await,
        HandshakeKind::Full
    );
    assert_eq!(
        visit(&only_before, newcomer.https()).await,
        HandshakeKind::Full,
        "a node that never held the old key opened its ticket"
    );
}

#[tokio::test]
async fn a_key_file_of_the_wrong_length_is_refused_naming_it() {
    let fleet = Fleet::new().await;

    // At start-up: the gate does not start, and says which file and key.
    let short = fleet.keys.path().join("short.key");
    std::fs::write(&short, [7u8; 47]).expect("write");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("icpgate.toml");
    let text = format!(
        "[listen]\nhttp = \"\"\nhttps = \"127.0.0.1:0\"\nadmin = \"\"\n[registry]\npath = \"{}\"\n[tls]\ncerts_dir = \"{}\"\nticket_key_file = \"{}\"\n",
        dir.path().join("r.db").display(),
        fleet.certs.path().display(),
        short.display()
    );
    std::fs::write(&path, text).expect("write config");
    let config = Config::load(&path).expect("config");
    let Err(error) = icpgate::app::start(config).await else {
        panic!("started with a 47-byte ticket key file");
    };
    let message = error.to_string();
    assert!(message.contains("tls.ticket_key_file"), "{message}");
    assert!(message.contains(&short.display().to_string()), "{message}");
    assert!(message.contains("47 bytes"), "{message}");

    // On reload: refused, the key in force stays and keeps resuming.
    let shared = fleet.key("fleet.key");
    let a = fleet.node(&shared).await;
    let b = fleet.node(&shared).await;
    let before = client(&fleet.ca, true);
    assert_eq!(visit(&before, a.https()).await, HandshakeKind::Full);
    std::fs::write(&shared, [1u8; 64]).expect("overwrite");
    let running = a.running.as_ref().expect("running");
    running.reload().expect("the config itself still reloads");
    let certs = running.certs.as_ref().expect("https");
    let refused = certs
        .resumption()
        .reload_ticket_keys()
        .expect_err("a 64-byte key file was accepted");
    assert!(
        refused.to_string().contains(&shared.display().to_string()),
        "{refused}"
    );
    assert!(refused.to_string().contains("64 bytes"), "{refused}");

    assert_eq!(
        visit(&before, b.https()).await,
        HandshakeKind::Resumed,
        "B lost the key"
    );
    let later = client(&fleet.ca, true);
    assert_eq!(visit(&later, a.https()).await, HandshakeKind::Full);
    assert_eq!(
        visit(&later, b.https()).await,
        HandshakeKind::Resumed,
        "A stopped sealing with the key in force"
    );
}

/// The https address a `serve` process logged (`listening (https) addr=Some(..)`).
fn logged_https(gate: &Served) -> SocketAddr {
    let log = gate.log.lock().expect("log lock");
    let line = log
        .iter()
        .find(|line| line.contains("listening (https)"))
        .unwrap_or_else(|| panic!("no https listener logged: {log:?}"));
    let start = line.find("Some(").expect("address logged") + "Some(".len();
    let end = start + line[start..].find(')').expect("address logged");
    line[start..end].parse().expect("socket address")
}

/// `openssl s_client` over TLS 1.3 to `addr` for example.com, sending one request so
/// the tickets arrive before the connection closes; what it printed.
async fn s_client(ca_file: &Path, addr: SocketAddr, session: (&str, &Path)) -> String {
    let mut command = tokio::process::Command::new("openssl");
    command
        .args([
            "s_client",
            "-tls1_3",
            "-servername",
            "example.com",
            "-connect",
        ])
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(ca_file)
        .args(["-alpn", "http/1.1", "-ign_eof", session.0])
        .arg(session.1);
    let request = "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n";
    common::tools::exchange(command, request).await
}

fn reused(output: &str) -> bool {
    output.contains("Reused, TLSv1.3") && output.contains("HTTP/1.1 200")
}

#[tokio::test]
async fn sighup_rotates_the_key_of_running_nodes_and_openssl_resumes_across_them() {
    if !require_tool("openssl") {
        return;
    }
    let fleet = Fleet::new().await;
    let shared = fleet.key("fleet.key");
    let ca_file = fleet.keys.path().join("ca.pem");
    std::fs::write(&ca_file, fleet.ca.pem()).expect("write CA");
    let spawn = |dir: &tempfile::TempDir| {
        let extra = format!(
            "[tls]\ncerts_dir = \"{}\"\nticket_key_file = \"{}\"\n",
            fleet.certs.path().display(),
            shared.display()
        );
        let text = config_text(
            dir.path(),
            &standard_seed(),
            &[fleet.origin],
            &[],
            "https = \"127.0.0.1:0\"",
            &extra,
        );
        let config = dir.path().join("icpgate.toml");
        std::fs::write(&config, text).expect("write config");
        serve(&config)
    };
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (mut a, mut b) = (spawn(&dir_a), spawn(&dir_b));
    let (https_a, https_b) = (logged_https(&a), logged_https(&b));
    let session = |name: &str| fleet.keys.path().join(name);

    let first = s_client(&ca_file, https_a, ("-sess_out", &session("old"))).await;
    assert!(first.contains("HTTP/1.1 200") && !reused(&first), "{first}");
    let on_b = s_client(&ca_file, https_b, ("-sess_in", &session("old"))).await;
    assert!(reused(&on_b), "A's session did not resume on B: {on_b}");

    write_random_key(&shared);
    for gate in [&a, &b] {
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &gate.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(hup.success());
    }
    for gate in [&a, &b] {
        let rotated = wait_until(std::time::Duration::from_secs(10), || {
            let log = gate.log.lock().expect("log lock");
            std::future::ready(
                log.iter()
                    .any(|l| l.contains("TLS ticket key rotated"))
                    .then_some(()),
            )
        })
        .await;
        assert!(
            rotated.is_some(),
            "no rotation logged: {:?}",
            gate.log.lock()
        );
    }
    let old_on_b = s_client(&ca_file, https_b, ("-sess_in", &session("old"))).await;
    assert!(reused(&old_on_b), "the previous key's ticket: {old_on_b}");
    let fresh = s_client(&ca_file, https_a, ("-sess_out", &session("new"))).await;
    assert!(fresh.contains("HTTP/1.1 200"), "{fresh}");
    let fresh_on_b = s_client(&ca_file, https_b, ("-sess_in", &session("new"))).await;
    assert!(reused(&fresh_on_b), "the new key's ticket: {fresh_on_b}");

    // A bad file on SIGHUP is refused, naming it; the node keeps resuming.
    std::fs::write(&shared, b"not a key").expect("overwrite");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &b.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    let refused = wait_until(std::time::Duration::from_secs(10), || {
        let log = b.log.lock().expect("log lock");
        let named = shared.display().to_string();
        std::future::ready(
            log.iter()
                .any(|l| l.contains("TLS ticket key reload refused") && l.contains(&named))
                .then_some(()),
        )
    })
    .await;
    assert!(
        refused.is_some(),
        "no refusal naming the file: {:?}",
        b.log.lock()
    );
    let still = s_client(&ca_file, https_b, ("-sess_in", &session("new"))).await;
    assert!(reused(&still), "B lost its key on a bad reload: {still}");
    for gate in [&mut a, &mut b] {
        let _ = gate.child.kill();
        let _ = gate.child.wait();
    }
}
