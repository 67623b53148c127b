//! TLS towards origins (`upstreams.<pool>.tls = true`): the client config a pool's
//! connector uses.
//!
//! Contract: the origin's certificate is verified against the Mozilla roots
//! (`webpki-roots`) plus every certificate in the pool's `ca_file`; TLS 1.2/1.3;
//! ALPN `http/1.1` only, since the upstream client speaks HTTP/1.1. The name verified
//! (and sent as SNI) is chosen per connection by the caller: the request's host.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Why a pool's TLS client config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("{file}: cannot read CA certificates: {source}")]
    CaFile {
        file: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{file}: holds no usable CA certificate")]
    NoCa { file: PathBuf },
    #[error("TLS client configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The client config for one pool; `ca_file` adds trust roots.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, ClientTlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(file) = ca_file {
        let certs = CertificateDer::pem_file_iter(file)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|source| ClientTlsError::CaFile {
                file: file.to_path_buf(),
                source,
            })?;
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(ClientTlsError::NoCa {
                file: file.to_path_buf(),
            });
        }
    }
    let mut config = ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
