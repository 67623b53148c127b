//! Whom the ACME client trusts for the CA's API: the Mozilla roots plus
//! `acme.ca_file`. A private CA often serves its API with a self-signed
//! certificate that is its own trust root (CA:TRUE), which WebPKI refuses as an end
//! entity; a certificate listed in `ca_file` is therefore also accepted as the
//! server's own, byte for byte (pinned).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

/// Why the trust roots could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{file}: cannot read certificates: {source}")]
    CaFile {
        file: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{file}: holds no certificate")]
    Empty { file: PathBuf },
    #[error("TLS client: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS client: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// The client config for the CA's API (no ALPN: hyper-rustls sets it).
pub fn acme_client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TrustError> {
    let provider = crate::edge::tls::provider();
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut pinned = Vec::new();
    if let Some(file) = ca_file {
        pinned = CertificateDer::pem_file_iter(file)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TrustError::CaFile {
                file: file.to_path_buf(),
                source,
            })?;
        if pinned.is_empty() {
            return Err(TrustError::Empty {
                file: file.to_path_buf(),
            });
        }
        roots.add_parsable_certificates(pinned.iter().cloned());
    }
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()?;
    let verifier = PinnedOrWebPki {
        webpki,
        pinned,
        provider: Arc::clone(&provider),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

#[derive(Debug)]
struct PinnedOrWebPki {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            Err(error) => Err(error),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
