//! The contract these tests pin, against a real ACME CA (Pebble) on loopback:
//!
//! - The first handshake for a name under an approved filing, with no certificate
//!   in `tls.certs_dir`, obtains one from the CA (the challenge answered by the
//!   gate itself: TLS-ALPN-01 on the https listener, or HTTP-01 on the http one),
//!   and the site is served over HTTPS with it. Concurrent hellos share one order.
//! - Unfiled names, filings in review, public suffixes, IP addresses and random
//!   names get no certificate and place no order.
//! - A restart serves the stored certificate with no new order.
//! - A cancelled filing's name is refused at the handshake, certificate or not.
//! - Certificates are renewed `renew_before` their expiry, those of ended filings
//!   are not.
//! - A certificate the CA revoked stops being served (its renewal information
//!   says to replace it at once), and a still-filed name gets a new one.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::ari::RenewalInfoFront;
use common::pebble::*;
use common::tls::get_h1;
use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A client trusting only Pebble's root: a handshake that completes was answered
/// with a certificate Pebble issued for that name.
fn trusting(root_pem: &str) -> TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert.expect("root PEM")).expect("trust root");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn handshake(
    client: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(std::io::Error::other)?;
    client.connect(server_name, tcp).await
}

/// The leaf certificate a handshake was answered with.
fn leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let certs = stream.get_ref().1.peer_certificates().expect("peer certs");
    certs[0].as_ref().to_vec()
}

fn orders(metrics: &str, result: &str) -> f64 {
    sample_required(metrics, "icpgate_acme_orders_total", &[("result", result)])
}

fn approved(domain: &str, icp: &str) -> String {
    seed::filing(&[domain], "approved", "storefront", Some(icp))
}

/// A gate on `seed` with both listeners on the ports Pebble validates on, and
/// `acme_lines` added to Pebble's `[acme]` section.
async fn acme_gate(
    pebble: &Pebble,
    seed: &[String],
    ports: (u16, u16),
    acme_lines: &str,
) -> TestGate {
    let origin = start_origin("storefront").await;
    let dir = tempfile::tempdir().expect("gate dir");
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("certs dir");
    let extra = format!(
        "[tls]\ncerts_dir = \"{}\"\n\n{}{acme_lines}\n",
        certs.display(),
        pebble.acme_section()
    );
    let text = config_text(
        dir.path(),
        seed,
        &[origin],
        &[],
        &format!("https = \"127.0.0.1:{}\"", ports.1),
        &extra,
    )
    .replace(
        "http = \"127.0.0.1:0\"",
        &format!("http = \"127.0.0.1:{}\"", ports.0),
    );
    TestGate::launch(dir, &text).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filed_names_get_certificates_on_demand_and_nothing_else_orders() {
    let reserved = (reserve_port(), reserve_port());
    let ports = (reserved.0.port, reserved.1.port);
    let test = "filed_names_get_certificates_on_demand_and_nothing_else_orders";
    let Some(pebble) = Pebble::start(test, ports.0, ports.1, None).await else {
        return;
    };
    let seed = [
        approved("acme-shop.cn", "浙ICP备20000001号-1"),
        seed::filing(&["pending-acme.cn"], "initial_review", "storefront", None),
    ];
    let mut gate = acme_gate(&pebble, &seed, ports, "").await;
    let client = trusting(&pebble.root_pem().await);

    let stream = handshake(&client, gate.https(), "www.acme-shop.cn")
        .await
        .unwrap_or_else(|e| panic!("filed name handshake: {e}\n{}", pebble.log_text()));
    let reply = get_h1(stream, "www.acme-shop.cn", "/").await;
    assert_eq!(reply.status, 200, "the filed site over HTTPS");
    let metrics = gate.metrics().await;
    assert_eq!(orders(&metrics, "issued"), 1.0);
    assert_eq!(
        sample_required(&metrics, "icpgate_acme_certificates", &[]),
        1.0
    );

    // unfiled, in review, random, a public suffix, an address (sent without SNI).
    let refused = [
        "unfiled-acme.cn",
        "pending-acme.cn",
        "x7q2-random-acme.cn",
        "com.cn",
        "127.0.0.1",
    ];
    for name in refused {
        assert!(
            handshake(&client, gate.https(), name).await.is_err(),
            "{name} got a certificate"
        );
        if name.parse::<std::net::IpAddr>().is_err() {
            // (Pebble's log names its own address anyway.)
            assert_eq!(pebble.mentions(name), 0, "{name} caused an order");
        }
    }
    let metrics = gate.metrics().await;
    assert_eq!(
        orders(&metrics, "issued"),
        1.0,
        "only the filed name ordered"
    );
    assert_eq!(orders(&metrics, "failed"), 0.0);

    let before = pebble.mentions("acme-shop.cn");
    gate.restart().await;
    let again = handshake(&client, gate.https(), "www.acme-shop.cn").await;
    assert!(again.is_ok(), "the stored certificate after a restart");
    assert_eq!(
        orders(&gate.metrics().await, "issued"),
        0.0,
        "no new order after a restart"
    );
    assert_eq!(
        pebble.mentions("acme-shop.cn"),
        before,
        "Pebble saw no new order"
    );

    let (status, listed) = gate
        .api("GET", "/v1/filings?domain=acme-shop.cn", None)
        .await;
    assert_eq!(status, 200, "{listed}");
    let id = &listed["filings"][0]["id"];
    let id = id.as_str().map_or_else(|| id.to_string(), str::to_owned);
    let (status, body) = gate
        .api(
            "POST",
            &format!("/v1/filings/{id}/cancel"),
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let refused = eventually(Duration::from_secs(2), || async {
        handshake(&client, gate.https(), "www.acme-shop.cn")
            .await
            .is_err()
    })
    .await;
    assert!(
        refused,
        "a cancelled filing's name is refused at the handshake"
    );
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_is_answered_and_concurrent_hellos_share_one_order() {
    let reserved = (reserve_port(), reserve_port());
    let ports = (reserved.0.port, reserved.1.port);
    let test = "http_01_is_answered_and_concurrent_hellos_share_one_order";
    let Some(pebble) = Pebble::start(test, ports.0, ports.1, None).await else {
        return;
    };
    let seed = [approved("http01-shop.cn", "浙ICP备20000002号-1")];
    let mut gate = acme_gate(&pebble, &seed, ports, "challenge = \"http-01\"\n").await;
    let client = trusting(&pebble.root_pem().await);
    let addr = gate.https();
    let hellos = (0..5).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { handshake(&client, addr, "shop.http01-shop.cn").await })
    });
    for hello in futures_util::future::join_all(hellos).await {
        let stream = hello.expect("task");
        assert!(stream.is_ok(), "{stream:?}\n{}", pebble.log_text());
    }
    assert_eq!(
        orders(&gate.metrics().await, "issued"),
        1.0,
        "five hellos, one order"
    );
    // Only the CA's HTTP-01 request reached the http listener: answered before the rule.
    let answered = sample_required(
        &gate.metrics().await,
        "icpgate_requests_total",
        &[("decision", "allow"), ("reason", "filed")],
    );
    assert!(answered >= 1.0, "Pebble validated over HTTP-01");
    // Nothing is answered under the challenge path once the order is done.
    let reply = gate
        .get(
            "shop.http01-shop.cn",
            "/.well-known/acme-challenge/anything",
        )
        .await;
    assert_ne!(reply.body.as_ref(), b"anything".as_slice());
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_before_expiry_but_not_for_ended_filings() {
    let reserved = (reserve_port(), reserve_port());
    let ports = (reserved.0.port, reserved.1.port);
    let test = "certificates_are_renewed_before_expiry_but_not_for_ended_filings";
    let validity = Some(Duration::from_secs(40));
    let Some(pebble) = Pebble::start(test, ports.0, ports.1, validity).await else {
        return;
    };
    let seed = [
        approved("renew-shop.cn", "浙ICP备20000003号-1"),
        approved("ended-shop.cn", "浙ICP备20000004号-1"),
    ];
    // Due 30-27 s before expiry: 10-13 s after issue.
    let mut gate = acme_gate(&pebble, &seed, ports, "renew_before = \"30s\"\n").await;
    let client = trusting(&pebble.root_pem().await);
    let first = handshake(&client, gate.https(), "renew-shop.cn")
        .await
        .expect("first certificate");
    let first = leaf(&first);
    assert!(handshake(&client, gate.https(), "ended-shop.cn")
        .await
        .is_ok());
    let (status, listed) = gate
        .api("GET", "/v1/filings?domain=ended-shop.cn", None)
        .await;
    assert_eq!(status, 200, "{listed}");
    let id = &listed["filings"][0]["id"];
    let id = id.as_str().map_or_else(|| id.to_string(), str::to_owned);
    let (status, body) = gate
        .api(
            "POST",
            &format!("/v1/filings/{id}/cancel"),
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ended_before = pebble.mentions("ended-shop.cn");

    let renewed = wait_until(Duration::from_secs(30), || async {
        let stream = handshake(&client, gate.https(), "renew-shop.cn")
            .await
            .ok()?;
        let now = leaf(&stream);
        (now != first).then_some(now)
    })
    .await;
    assert!(renewed.is_some(), "no renewal within 30 s");
    let metrics = gate.metrics().await;
    assert_eq!(
        orders(&metrics, "issued"),
        3.0,
        "two first orders and one renewal"
    );
    assert_eq!(
        pebble.mentions("ended-shop.cn"),
        ended_before,
        "an ended filing's certificate is not renewed"
    );
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_no_longer_served() {
    let reserved = (reserve_port(), reserve_port());
    let ports = (reserved.0.port, reserved.1.port);
    let test = "a_revoked_certificate_is_no_longer_served";
    let Some(mut pebble) = Pebble::start(test, ports.0, ports.1, None).await else {
        return;
    };
    // Debian's Pebble serves no renewal information: the front adds it, from
    // Pebble's own revocations.
    let front = RenewalInfoFront::start(pebble.api()).await;
    pebble.directory = front.directory.clone();
    let seed = [approved("revoked-shop.cn", "浙ICP备20000006号-1")];
    // renew_before 20 s: status checks every 2 s (Pebble's certificates last years).
    let mut gate = acme_gate(&pebble, &seed, ports, "renew_before = \"20s\"\n").await;
    let client = trusting(&pebble.root_pem().await);
    let served = || async {
        let stream = handshake(&client, gate.https(), "revoked-shop.cn").await;
        leaf(&stream.expect("handshake"))
    };
    let first = served().await;

    // While the CA stands behind it, the checks keep it served.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        served().await,
        first,
        "an unrevoked certificate stays served"
    );
    assert_eq!(orders(&gate.metrics().await, "issued"), 1.0);

    // Revoke it with the gate's own account.
    let storage =
        icpgate::edge::acme::storage::DirStorage::open(&gate.dir.path().join("certs/.acme"))
            .expect("the gate's ACME storage");
    let orderer = icpgate::edge::acme::order::Orderer {
        directory: &front.directory,
        ca_file: Some(&pebble.ca_file),
        email: None,
    };
    let account = orderer
        .account(&icpgate::edge::acme::storage::Storage::Dir(storage))
        .await
        .expect("the gate's account");
    let revoked = CertificateDer::from(first.clone());
    let request = instant_acme::RevocationRequest {
        certificate: &revoked,
        reason: None,
    };
    account.revoke(&request).await.expect("revoke");

    let replaced = wait_until(Duration::from_secs(20), || async {
        let stream = handshake(&client, gate.https(), "revoked-shop.cn")
            .await
            .ok()?;
        (leaf(&stream) != first).then_some(())
    })
    .await;
    assert!(
        replaced.is_some(),
        "the revoked certificate is still served\n{}",
        pebble.log_text()
    );
    assert_eq!(
        orders(&gate.metrics().await, "issued"),
        2.0,
        "a new certificate for the still-filed name"
    );
    gate.stop().await;
}
