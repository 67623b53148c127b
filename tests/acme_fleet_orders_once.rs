//! The contract these tests pin: a fleet on one PostgreSQL registry
//! (`acme.storage = "registry"`) against a real ACME CA (Pebble) on loopback.
//!
//! - Two nodes asked for the same filed name at once place ONE order: one holds the
//!   name's lock and orders, the other serves the certificate it stored.
//! - The CA may validate at a node that did not place the order: the answer is
//!   shared through the registry.
//! - `acme.max_orders_per_hour` counts orders a node places, not hellos that
//!   waited on another node's order.
//! - Private keys are stored sealed: the registry never holds one in the clear.
//! - A certificate one node stores reaches the others through the registry's
//!   NOTIFY, not a poll.
//! - Two nodes whose certificate falls due at once renew it with ONE order: the
//!   node that did not take the lock serves the renewed certificate it stored.

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

/// A node of the fleet: https on `https_port`, ACME state in the registry, and
/// `acme_extra` lines in `[acme]`.
async fn node(
    pebble: &Pebble,
    pg_url: &str,
    key_file: &str,
    https_port: u16,
    acme_extra: &str,
) -> TestGate {
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
        "[tls]\ncerts_dir = \"{}\"\n\n{}storage = \"registry\"\nstorage_key_file = \"{key_file}\"\n{acme_extra}",
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
    // One order an hour each: waiting on the other node's order must not use it.
    let budget = "max_orders_per_hour = 1\n";
    let mut a = node(&pebble, &db.url, &key_file, validated_port, budget).await;
    let mut b = node(&pebble, &db.url, &key_file, other_port, budget).await;
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

    // The node that waited (B asked first, so usually A) still has its one order.
    let (ordered_at_a, ordered_at_b) = (issued(a.metrics().await), issued(b.metrics().await));
    let waiter = if ordered_at_a == 0.0 { &a } else { &b };
    assert!(
        handshake_ok(&client, waiter.https(), "fleet-shop.cn").await,
        "the node that waited orders another name\n{}",
        pebble.log_text()
    );
    let after = issued(a.metrics().await) + issued(b.metrics().await);
    assert_eq!(
        after,
        ordered_at_a + ordered_at_b + 1.0,
        "its own order was placed"
    );
    a.stop().await;
    b.stop().await;
}

/// The leaf certificate `addr` serves for `name`, if the handshake succeeds.
async fn leaf(client: &TlsConnector, addr: SocketAddr, name: &str) -> Option<Vec<u8>> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let server_name = ServerName::try_from(name.to_owned()).ok()?;
    let stream = client.connect(server_name, tcp).await.ok()?;
    let certs = stream.get_ref().1.peer_certificates()?;
    Some(certs.first()?.as_ref().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_renewing_at_once_place_one_order() {
    let test = "two_nodes_renewing_at_once_place_one_order";
    let Some(db) = PgDatabase::create(test).await else {
        return;
    };
    let reserved = (reserve_port(), reserve_port());
    let (validated_port, other_port) = (reserved.0.port, reserved.1.port);
    // 25 s certificates renewed 10 s ahead: due 15-16 s after issue on BOTH nodes
    // (the jitter is fixed per name), each checking every second, so the second
    // node's check falls within the first node's order (without the lock, two).
    let validity = Some(Duration::from_secs(25));
    let Some(pebble) = Pebble::start(test, free_port(), validated_port, validity).await else {
        return;
    };
    let keys = tempfile::tempdir().expect("key dir");
    let key_file = keys.path().join("storage-key");
    std::fs::write(&key_file, "fleet-storage-key-0123456789abcdef").expect("key");
    let key_file = key_file.display().to_string();
    let renew = "renew_before = \"10s\"\n";
    let mut a = node(&pebble, &db.url, &key_file, validated_port, renew).await;
    let mut b = node(&pebble, &db.url, &key_file, other_port, renew).await;
    let client = trusting(&pebble.root_pem().await);
    let name = "www.fleet-shop.cn";

    let first = leaf(&client, a.https(), name)
        .await
        .expect("first certificate");
    // B serves it unasked through the registry's NOTIFY, well before its
    // fallback poll (5 s) would find it.
    let noticed = wait_until(Duration::from_secs(1), || async {
        let metrics = b.metrics().await;
        (sample_required(&metrics, "icpgate_acme_certificates", &[]) == 1.0).then_some(())
    })
    .await;
    assert!(
        noticed.is_some(),
        "node B did not learn of A's certificate within 1 s"
    );
    let served_by_b = wait_until(Duration::from_secs(5), || async {
        (leaf(&client, b.https(), name).await? == first).then_some(())
    })
    .await;
    assert!(served_by_b.is_some(), "node B serves node A's certificate");

    // Both nodes renew; each ends up serving the one renewed certificate.
    let renewed = wait_until(Duration::from_secs(30), || async {
        let at_a = leaf(&client, a.https(), name).await?;
        let at_b = leaf(&client, b.https(), name).await?;
        (at_a != first && at_a == at_b).then_some(())
    })
    .await;
    assert!(
        renewed.is_some(),
        "no shared renewal within 30 s\n{}",
        pebble.log_text()
    );
    let issued = |metrics: String| {
        sample_required(
            &metrics,
            "icpgate_acme_orders_total",
            &[("result", "issued")],
        )
    };
    let total = issued(a.metrics().await) + issued(b.metrics().await);
    assert_eq!(total, 2.0, "the first order and ONE renewal in the fleet");
    assert_eq!(
        pebble.log_text().matches("Added order").count(),
        2,
        "the CA saw the first order and one renewal"
    );
    a.stop().await;
    b.stop().await;
}
