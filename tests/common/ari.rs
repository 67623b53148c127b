//! RFC 9773 renewal information for Pebble, whose Debian package (2.4) serves
//! none: [`RenewalInfoFront`] serves Pebble's directory with `renewalInfo` added
//! and answers it from Pebble's own record of revocations (its management API).
//! A revoked certificate's suggested window has ended, as CAs answer for the
//! certificates they revoke; any other's lies far ahead.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::pebble::PebbleApi;

/// The front; it stops when dropped.
pub struct RenewalInfoFront {
    /// The directory URL to give the gate as `acme.directory`.
    pub directory: String,
    task: JoinHandle<()>,
}

impl Drop for RenewalInfoFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RenewalInfoFront {
    /// Serve on loopback with Pebble's API certificate, so `acme.ca_file` trusts it.
    pub async fn start(pebble: PebbleApi) -> RenewalInfoFront {
        let cert = CertificateDer::from_pem_file(&pebble.ca_file).expect("api cert");
        let key = PrivateKeyDer::from_pem_file(pebble.ca_file.with_file_name("api.key"))
            .expect("api key");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("front config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
        let base = format!("https://{}", listener.local_addr().expect("addr"));
        let directory = format!("{base}/dir");
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, pebble, base) = (acceptor.clone(), pebble.clone(), base.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let path = read_request_path(&mut tls).await;
                    let (status, body) = answer(&pebble, &base, &path).await;
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(body.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        RenewalInfoFront { directory, task }
    }
}

/// The path of a bodiless request (the directory and renewal information are GETs).
async fn read_request_path<S: AsyncReadExt + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    head.split(' ').nth(1).unwrap_or("").to_owned()
}

async fn answer(pebble: &PebbleApi, base: &str, path: &str) -> (&'static str, String) {
    if path == "/dir" {
        let mut dir: serde_json::Value =
            serde_json::from_str(&pebble.api_get("/dir").await).expect("pebble directory");
        dir["renewalInfo"] = format!("{base}/renewal-info").into();
        return ("200 OK", dir.to_string());
    }
    let Some(serial) = path
        .strip_prefix("/renewal-info/")
        .and_then(|id| id.split_once('.'))
        .and_then(|(_, serial)| base64url_to_hex(serial))
    else {
        return ("404 Not Found", "{}".to_owned());
    };
    let status = pebble
        .management_get(&format!("/cert-status-by-serial/{serial}"))
        .await;
    let revoked =
        serde_json::from_str::<serde_json::Value>(&status).is_ok_and(|s| s["Status"] == "Revoked");
    let (start, end) = if revoked {
        ("2000-01-01T00:00:00Z", "2000-01-02T00:00:00Z")
    } else {
        ("2999-01-01T00:00:00Z", "2999-01-02T00:00:00Z")
    };
    let window = serde_json::json!({"suggestedWindow": {"start": start, "end": end}});
    ("200 OK", window.to_string())
}

/// Unpadded base64url (a certificate identifier's serial) as lowercase hex.
fn base64url_to_hex(text: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut hex = String::new();
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            hex.push_str(&format!("{:02x}", (bits >> count) & 0xff));
        }
    }
    Some(hex)
}
