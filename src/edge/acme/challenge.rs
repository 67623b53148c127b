//! The answers to the ACME challenges of the names being validated right now, and
//! nothing else: the TLS-ALPN-01 certificate (RFC 8737) offered on `listen.https`
//! to a ClientHello asking for `acme-tls/1`, and the HTTP-01 key authorization
//! (RFC 8555 §8.3) served under `/.well-known/acme-challenge/` on `listen.http`.
//!
//! An answer exists only while its order runs: [`Challenges::publish`] returns a
//! guard that withdraws it when dropped, whatever way the order ends. In a fleet the
//! ordering node also publishes its answer in the registry, and a node that has no
//! answer of its own asks the registry for one — only for a name under a filed
//! domain (the filed-domain index answers first), so strangers cost no query.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use sha2::{Digest, Sha256};

use crate::gate::filed_domains::FiledDomains;
use crate::model::host::{Authority, HostName};
use crate::registry::{now_ms, AcmeStore};

/// The ALPN protocol of TLS-ALPN-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The path prefix of HTTP-01.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Why a TLS-ALPN-01 answer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("TLS-ALPN-01 certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS-ALPN-01 config: {0}")]
    Tls(#[from] rustls::Error),
}

/// One name's answer while its order runs.
struct Answer {
    token: String,
    key_authorization: String,
    /// Built only for TLS-ALPN-01.
    alpn: Option<Arc<ServerConfig>>,
}

/// The answers of every order in flight, shared by both listeners.
#[derive(Default)]
pub struct Challenges {
    pending: Mutex<HashMap<HostName, Answer>>,
    /// The fleet's answers, when ACME state lives in the registry.
    shared: OnceLock<Arc<dyn AcmeStore>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges").finish_non_exhaustive()
    }
}

/// Withdraws its name's answer when dropped.
pub struct Published {
    challenges: Arc<Challenges>,
    name: HostName,
}

impl Drop for Published {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.challenges.pending.lock() {
            pending.remove(&self.name);
        }
    }
}

impl Challenges {
    /// Answer `name`'s challenge until the guard is dropped; `alpn_digest` (the
    /// SHA-256 of the key authorization) is given for TLS-ALPN-01 only.
    pub fn publish(
        self: &Arc<Self>,
        name: &HostName,
        token: &str,
        key_authorization: &str,
        alpn_digest: Option<&[u8]>,
    ) -> Result<Published, ChallengeError> {
        let alpn = alpn_digest
            .map(|digest| alpn_config(name, digest))
            .transpose()?;
        let answer = Answer {
            token: token.to_owned(),
            key_authorization: key_authorization.to_owned(),
            alpn,
        };
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(name.clone(), answer);
        }
        Ok(Published {
            challenges: Arc::clone(self),
            name: name.clone(),
        })
    }

    /// Also answer what other nodes of the fleet published in `store`.
    pub fn share_through(&self, store: Arc<dyn AcmeStore>) {
        let _ = self.shared.set(store);
    }

    /// The answer another node published for `name`, if `name` is under a filed
    /// domain: its token and key authorization.
    async fn shared_answer(
        &self,
        name: &HostName,
        filed: &FiledDomains,
    ) -> Option<(String, String)> {
        let store = self.shared.get()?;
        if !name
            .registrable_domain()
            .is_some_and(|d| filed.contains(&d))
        {
            return None;
        }
        store
            .challenge(name.as_str(), now_ms())
            .await
            .ok()
            .flatten()
    }

    /// The TLS-ALPN-01 config for `name`: this node's, else the fleet's.
    pub async fn tls_alpn_anywhere(
        &self,
        name: &HostName,
        filed: &FiledDomains,
    ) -> Option<Arc<ServerConfig>> {
        if let Some(config) = self.tls_alpn(name) {
            return Some(config);
        }
        let (_, key_authorization) = self.shared_answer(name, filed).await?;
        let digest = Sha256::digest(key_authorization.as_bytes());
        alpn_config(name, &digest).ok()
    }

    /// The TLS-ALPN-01 config for `name`, while it is being validated that way.
    pub fn tls_alpn(&self, name: &HostName) -> Option<Arc<ServerConfig>> {
        let pending = self.pending.lock().ok()?;
        pending.get(name)?.alpn.clone()
    }

    /// The HTTP-01 key authorization for `name` and `token`, while validated.
    pub fn http01(&self, name: &HostName, token: &str) -> Option<String> {
        let pending = self.pending.lock().ok()?;
        let answer = pending.get(name)?;
        (answer.token == token).then(|| answer.key_authorization.clone())
    }

    /// The response to the CA's HTTP-01 request (`authority` as the gate reads
    /// it, `path` the request's), or None when it is not one for a name being
    /// validated: the request then goes to the gate rule as usual.
    pub async fn answer_http01(
        &self,
        authority: &str,
        path: &str,
        filed: &FiledDomains,
    ) -> Option<Response<Full<Bytes>>> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        let Ok(Authority::Name(name)) = Authority::parse(authority) else {
            return None;
        };
        let body = match self.http01(&name, token) {
            Some(body) => body,
            None => {
                let (shared_token, body) = self.shared_answer(&name, filed).await?;
                (shared_token == token).then_some(body)?
            }
        };
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .ok()
    }
}

/// A config offering only the self-signed certificate of RFC 8737 §3: `name` as
/// its only SAN and the critical acmeIdentifier extension holding `digest`.
fn alpn_config(name: &HostName, digest: &[u8]) -> Result<Arc<ServerConfig>, ChallengeError> {
    let mut params = rcgen::CertificateParams::new(vec![name.as_str().to_owned()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = crate::edge::tls::provider();
    // Not `with_single_cert`: its check parses the certificate, and WebPKI refuses
    // the critical acmeIdentifier extension that is the point of this one.
    let signing = provider.key_provider.load_private_key(key)?;
    let certified = Arc::new(CertifiedKey::new(chain, signing));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Only(certified)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Offers its one certificate to every hello.
#[derive(Debug)]
struct Only(Arc<CertifiedKey>);

impl ResolvesServerCert for Only {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> HostName {
        HostName::parse(name).expect("host")
    }

    #[test]
    fn answers_exist_only_while_published() {
        crate::edge::tls::install_crypto_provider();
        let challenges = Arc::new(Challenges::default());
        let name = host("www.shop.cn");
        let guard = challenges
            .publish(&name, "tok", "tok.thumb", Some(&[7; 32]))
            .expect("publish");
        assert!(challenges.tls_alpn(&name).is_some());
        assert_eq!(
            challenges.http01(&name, "tok").as_deref(),
            Some("tok.thumb")
        );
        // Another token, another name: no answer.
        assert_eq!(challenges.http01(&name, "other"), None);
        assert!(challenges.tls_alpn(&host("shop.cn")).is_none());
        drop(guard);
        assert!(challenges.tls_alpn(&name).is_none());
        assert_eq!(challenges.http01(&name, "tok"), None);
    }

    #[tokio::test]
    async fn http01_requests_are_matched_by_host_and_path() {
        let challenges = Arc::new(Challenges::default());
        let _guard = challenges
            .publish(&host("shop.cn"), "abc", "abc.thumb", None)
            .expect("publish");
        let filed = FiledDomains::new(["shop.cn".to_owned()]);
        // host, path, answered
        let cases = [
            (
                "shop.cn",
                "/.well-known/acme-challenge/abc",
                Some(StatusCode::OK),
            ),
            (
                "SHOP.cn:80",
                "/.well-known/acme-challenge/abc",
                Some(StatusCode::OK),
            ), // normalised
            ("shop.cn", "/.well-known/acme-challenge/abd", None), // wrong token
            ("other.cn", "/.well-known/acme-challenge/abc", None), // not being validated
            ("shop.cn", "/abc", None),                            // not the challenge path
            ("127.0.0.1", "/.well-known/acme-challenge/abc", None), // an address
        ];
        for (host, path, answered) in cases {
            let answer = challenges.answer_http01(host, path, &filed).await;
            assert_eq!(answer.map(|r| r.status()), answered, "{host} {path}");
        }
    }
}
