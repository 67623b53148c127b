//! The contract these tests pin: a pool with `tls = true` speaks TLS to its servers,
//! sends the request's host as SNI (one host's connections never carry another's
//! SNI), verifies the origin's certificate against `ca_file`, and answers 502 when
//! the certificate does not cover the host.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use common::tls::*;
use common::*;
use icpgate::config::Config;

/// A TLS origin answering JSON with the SNI it was reached by and the Host it got.
async fn tls_origin(ca: &TestCa, sans: &[&str]) -> SocketAddr {
    let dir = tempfile::tempdir().expect("dir");
    ca.write_pair(dir.path(), "origin", sans);
    let chain = CertificateDer::pem_file_iter(dir.path().join("origin.crt"))
        .expect("crt")
        .collect::<Result<Vec<_>, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_file(dir.path().join("origin.key")).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("origin config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = stream.get_ref().1.server_name().map(str::to_owned);
                let service = service_fn(move |request: Request<Incoming>| {
                    let body = json!({
                        "sni": sni,
                        "host": request.headers().get("host").and_then(|h| h.to_str().ok()),
                    });
                    async move {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tls_pools_send_the_request_host_as_sni_and_verify_the_origin() {
    let ca = TestCa::new();
    let origin = tls_origin(&ca, &["example.com", "*.example.com", "example.com.cn"]).await;
    let wrong = tls_origin(&ca, &["elsewhere.net"]).await;
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = dir.path().join("origin-ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("ca");
    let seed = dir.path().join("seed.jsonl");
    std::fs::write(&seed, standard_seed().join("\n")).expect("seed");
    let text = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"\"\n\
         [registry]\npath = \"{db}\"\nseed = \"{seed}\"\n\
         [upstreams.storefront]\nservers = [\"{origin}\"]\ntls = true\nca_file = \"{ca}\"\n\
         [upstreams.corporate_site]\nservers = [\"{wrong}\"]\ntls = true\nca_file = \"{ca}\"\n",
        db = dir.path().join("r.db").display(),
        seed = seed.display(),
        ca = ca_file.display(),
    );
    let path = dir.path().join("icpgate.toml");
    std::fs::write(&path, text).expect("config");
    let running = icpgate::app::start(Config::load(&path).expect("config"))
        .await
        .expect("starts");
    let http = running.http.expect("http");

    // Host, then the SNI the origin must have seen: one pooled connection per host.
    for host in [
        "example.com",
        "shop.example.com",
        "example.com",
        "www.example.com",
    ] {
        let reply = http1(http, "GET", "/", &[("host", host)], b"").await;
        assert_eq!(reply.status, 200, "{host}: {}", reply.text());
        assert_eq!(reply.json()["sni"], host);
        assert_eq!(reply.json()["host"], host);
    }
    // example.com.cn is a corporate site; that pool's origin has no certificate for it.
    let reply = http1(http, "GET", "/", &[("host", "example.com.cn")], b"").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    running.shutdown(false).await;
}

#[tokio::test]
async fn an_unreadable_ca_file_stops_start_up() {
    let dir = tempfile::tempdir().expect("dir");
    let text = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"\"\n[registry]\npath = \"{db}\"\n\
         [upstreams.storefront]\nservers = [\"127.0.0.1:9\"]\ntls = true\nca_file = \"{ca}\"\n",
        db = dir.path().join("r.db").display(),
        ca = dir.path().join("missing.pem").display(),
    );
    let path = dir.path().join("icpgate.toml");
    std::fs::write(&path, text).expect("config");
    let Err(error) = icpgate::app::start(Config::load(&path).expect("config")).await else {
        panic!("started with a missing ca_file");
    };
    assert!(error.to_string().contains("missing.pem"), "{error}");
}
