//! The contract these tests pin: a fleet on one PostgreSQL registry
//! (`acme.storage = "registry"`) against a real ACME CA (Pebble) on loopback.
//!
//! - Two nodes asked for the same filed name at once place ONE order: one holds the
//!   name's lock and orders, the other serves the certificate it stored.
//! - The CA may validate at a node that did not place the order: the answer is
//!   shared through the registry.
//! - Private keys are stored sealed: the registry never holds one in the clear.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::pebble::*;
use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn trusting(root_pem: &str) -> TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert.expect("root PEM")).expect("trust root");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn handshake_ok(client: &TlsConnector, addr: SocketAddr, name: &str) -> bool {
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    let Ok(server_name) = ServerName::try_from(name.to_owned()) else {
        return false;
    };
    client.connect(server_name, tcp).await.is_ok()
}

/// A node of the fleet: https on `https_port`, ACME state in the registry.
async fn node(pebble: &Pebble, pg_url: &str, key_file: &str, https_port: u16) -> TestGate {
    let origin = start_origin("storefront").await;
    let dir = tempfile::tempdir().expect("gate dir");
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("certs dir");
    let seed = [seed::filing(
        &["fleet-shop.cn"],
        "approved",
        "storefront",
        Some("浙ICP备20000005号-1"),
    )];
    let extra = format!(
        "[tls]\ncerts_dir = \"{}\"\n\n{}storage = \"registry\"\nstorage_key_file = \"{key_file}\"\n",
        certs.display(),
        pebble.acme_section()
    );
    let text = config_text(
        dir.path(),
        &seed,
        &[origin],
        &[],
        &format!("https = \"127.0.0.1:{https_port}\""),
        &extra,
    )
    .replace(
        "backend = \"sqlite\"",
        &format!("backend = \"postgres\"\nurl = \"{pg_url}\""),
    );
    TestGate::launch(dir, &text).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_registry_place_one_order_for_a_name() {
    let test = "two_nodes_on_one_registry_place_one_order_for_a_name";
    let Some(db) = PgDatabase::create(test).await else {
        return;
    };
    let reserved = (reserve_port(), reserve_port());
    let (validated_port, other_port) = (reserved.0.port, reserved.1.port);
    // Pebble validates at node A only; node B is reached by clients alone.
    let Some(pebble) = Pebble::start(test, free_port(), validated_port, None).await else {
        return;
    };
    let keys = tempfile::tempdir().expect("key dir");
    let key_file = keys.path().join("storage-key");
    std::fs::write(&key_file, "fleet-storage-key-0123456789abcdef").expect("key");
    let key_file = key_file.display().to_string();
    let mut a = node(&pebble, &db.url, &key_file, validated_port).await;
    let mut b = node(&pebble, &db.url, &key_file, other_port).await;
    let client = trusting(&pebble.root_pem().await);

    // B is asked first and orders; A, asked at once, waits on B's lock and serves
    // B's certificate; the CA's validation reaches A, which answers from the registry.
    let asked_b = handshake_ok(&client, b.https(), "www.fleet-shop.cn");
    let asked_a = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        handshake_ok(&client, a.https(), "www.fleet-shop.cn").await
    };
    let (at_b, at_a) = tokio::join!(asked_b, asked_a);
    assert!(at_b, "node B's handshake\n{}", pebble.log_text());
    assert!(at_a, "node A's handshake");

    let issued = |metrics: String| {
        sample_required(
            &metrics,
            "icpgate_acme_orders_total",
            &[("result", "issued")],
        )
    };
    let total = issued(a.metrics().await) + issued(b.metrics().await);
    assert_eq!(total, 1.0, "one order in the fleet");
    assert_eq!(
        pebble.log_text().matches("Added order").count(),
        1,
        "the CA saw one order"
    );

    // Stored sealed: the PEM key header is nowhere in the registry's rows.
    let (client_pg, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let rows = client_pg
        .query("SELECT sealed FROM icpgate_acme_certificates", &[])
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    let sealed: Vec<u8> = rows[0].get(0);
    assert!(!sealed.windows(11).any(|w| w == b"PRIVATE KEY"));
    a.stop().await;
    b.stop().await;
}
