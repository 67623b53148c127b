//! TLS fixtures: a throw-away CA (rcgen) issuing certificates into a directory, a
//! rustls client that trusts it, and HTTPS requests over HTTP/1.1 or HTTP/2 (ALPN).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::client::{collect, http1_over, http2_over, Reply};

/// A CA for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Subjects differ from the leaves' (rcgen's default is one shared name), or
        // OpenSSL takes every leaf for a self-signed certificate.
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "icpgate test CA");
        let key = KeyPair::generate().expect("ca key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca cert"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, sans: &[&str]) -> (String, String) {
        let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            sans.first().copied().unwrap_or("leaf"),
        );
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }

    /// A server config presenting a certificate of this CA for `sans`.
    pub fn server_config(&self, sans: &[&str]) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let (cert, key) = self.issue(sans);
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        Arc::new(config)
    }

    /// Write `NAME.crt` + `NAME.key` serving `sans`.
    pub fn write_pair(&self, dir: &Path, name: &str, sans: &[&str]) {
        let (cert, key) = self.issue(sans);
        std::fs::write(dir.join(format!("{name}.key")), key).expect("write key");
        std::fs::write(dir.join(format!("{name}.crt")), cert).expect("write crt");
    }

    /// Write one `NAME.pem` holding certificate and key.
    pub fn write_pem(&self, dir: &Path, name: &str, sans: &[&str]) {
        let (cert, key) = self.issue(sans);
        std::fs::write(dir.join(format!("{name}.pem")), format!("{cert}{key}")).expect("write pem");
    }

    /// A client trusting this CA, offering `alpn`; `sni = false` sends no SNI.
    pub fn client(&self, alpn: &[&[u8]], sni: bool) -> TlsConnector {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.issuer.der().to_vec()))
            .expect("trust ca");
        let mut config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.enable_sni = sni;
        TlsConnector::from(Arc::new(config))
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// Connect and handshake with `sni` (also the name verified).
pub async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    connector.connect(name, stream).await
}

/// Whether a handshake with `sni` completes (the client trusts `ca`).
pub async fn handshake_ok(ca: &TestCa, addr: SocketAddr, sni: &str) -> bool {
    connect(&ca.client(&[b"h2", b"http/1.1"], true), addr, sni)
        .await
        .is_ok()
}

/// The negotiated ALPN protocol of a connected stream.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(|p| p.to_vec())
}

/// One HTTP/1.1 GET over an established TLS stream, with `Host: host`.
pub async fn get_h1(stream: TlsStream<TcpStream>, host: &str, path: &str) -> Reply {
    let mut sender = http1_over(stream).await;
    let request = Request::builder()
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("request");
    collect(sender.send_request(request).await.expect("response")).await
}

/// An HTTP/2 sender over an established TLS stream (several requests may follow).
pub async fn h2_sender(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    http2_over(stream).await.0
}

/// One HTTP/2 GET with `:authority` = `authority`.
pub async fn get_h2(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    authority: &str,
    path: &str,
) -> Reply {
    let request = Request::builder()
        .uri(format!("https://{authority}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    collect(sender.send_request(request).await.expect("response")).await
}

impl TestCa {
    /// A client like `client` that speaks only TLS 1.2.
    pub fn client_tls12(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.issuer.der().to_vec()))
            .expect("trust ca");
        let config = ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}
