//! The contract these tests pin, against a real ACME CA (Pebble) on loopback:
//!
//! - The first handshake for a name under an approved filing, with no certificate
//!   in `tls.certs_dir`, obtains one from the CA (TLS-ALPN-01 answered by the gate
//!   itself), and the site is served over HTTPS with it.
//! - Unfiled names, filings in review, IP addresses and random names get no
//!   certificate and place no order.
//! - A restart serves the stored certificate with no new order.
//! - A cancelled filing's name is refused at the handshake, certificate or not.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::pebble::*;
use common::tls::get_h1;
use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use tokio::net::TcpStream;
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
    addr: std::net::SocketAddr,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(std::io::Error::other)?;
    client.connect(server_name, tcp).await
}

fn issued(metrics: &str) -> f64 {
    sample_required(
        metrics,
        "icpgate_acme_orders_total",
        &[("result", "issued")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filed_names_get_certificates_on_demand_and_nothing_else_orders() {
    let (http_port, https_port) = (free_port(), free_port());
    let test = "filed_names_get_certificates_on_demand_and_nothing_else_orders";
    let Some(pebble) = Pebble::start(test, http_port, https_port).await else {
        return;
    };
    let origin = start_origin("storefront").await;
    let certs = tempfile::tempdir().expect("certs dir");
    let seed = [
        seed::filing(
            &["acme-shop.cn"],
            "approved",
            "storefront",
            Some("浙ICP备20000001号-1"),
        ),
        seed::filing(&["pending-acme.cn"], "initial_review", "storefront", None),
    ];
    let extra = format!(
        "[tls]\ncerts_dir = \"{}\"\n\n{}",
        certs.path().display(),
        pebble.acme_section()
    );
    let mut gate = TestGate::start_with_listen(
        &seed,
        Some(origin),
        None,
        &format!("https = \"127.0.0.1:{https_port}\""),
        &extra,
    )
    .await;
    let client = trusting(&pebble.root_pem().await);

    let stream = handshake(&client, gate.https(), "www.acme-shop.cn")
        .await
        .unwrap_or_else(|e| panic!("filed name handshake: {e}\n{}", pebble.log_text()));
    let reply = get_h1(stream, "www.acme-shop.cn", "/").await;
    assert_eq!(reply.status, 200, "the filed site over HTTPS");
    assert_eq!(issued(&gate.metrics().await), 1.0);
    assert_eq!(
        sample_required(&gate.metrics().await, "icpgate_acme_certificates", &[]),
        1.0
    );

    // name: unfiled, in review, random, a public suffix, an address (no SNI).
    for name in [
        "unfiled-acme.cn",
        "pending-acme.cn",
        "x7q2-random-acme.cn",
        "com.cn",
        "127.0.0.1",
    ] {
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
    assert_eq!(issued(&metrics), 1.0, "only the filed name ordered");
    assert_eq!(
        sample_required(
            &metrics,
            "icpgate_acme_orders_total",
            &[("result", "failed")]
        ),
        0.0
    );

    let before = pebble.mentions("acme-shop.cn");
    gate.restart().await;
    let again = handshake(&client, gate.https(), "www.acme-shop.cn").await;
    assert!(again.is_ok(), "the stored certificate after a restart");
    assert_eq!(
        issued(&gate.metrics().await),
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
