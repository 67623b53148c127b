//! TLS termination for `listen.https`, gated by SNI: no way around the gate
//! through TLS.
//!
//! Contract of [`TlsHandshake`]:
//! - The ClientHello is read first (tokio-rustls `LazyConfigAcceptor`), then the SNI
//!   is decided with the same async decision cache as plain HTTP
//!   ([`Gate::verdict`]), so an approval or a revocation changes handshakes exactly as
//!   fast as it changes requests.
//! - A certificate is offered only when a certificate in `tls.certs_dir` covers the
//!   SNI (checked first: names without one never reach the registry) AND the SNI's
//!   registrable domain is admitted (an approved filing; or what
//!   `policy.mode = "report-only"` / `on_registry_error = "allow"` let through on
//!   plain HTTP too). Otherwise the handshake goes on with a config that has no
//!   certificate, so rustls ends it with a fatal `access_denied` alert.
//! - With `[acme]` on, a name no `tls.certs_dir` certificate covers is served the
//!   certificate [`Acme`] obtained for it, and one is ordered (the hello waits for
//!   it) only when the name's verdict is `filed`; see [`crate::edge::acme`]. A
//!   ClientHello asking for `acme-tls/1` for a name being validated gets the
//!   TLS-ALPN-01 answer, before the gate rule, and the connection ends there.
//! - No SNI (e.g. a client connecting to an IP address) is refused.
//! - The whole handshake is bounded by `limits.header_read_timeout`.
//! - Every handshake is counted once in `icpgate_tls_handshakes_total{result}`
//!   (`ok` for an admitted full handshake, `resumed` for an admitted resumption,
//!   `refused_unfiled`, `refused_no_sni`, `refused_no_cert`, `error`,
//!   `acme_challenge`).
//! - TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`; rustls with the `ring` provider.
//! - Sessions resume (tickets, and TLS 1.2 session IDs) across certificate reloads;
//!   with `tls.ticket_key_file`, tickets resume on every node holding the same
//!   file; see [`Resumption`].
//!
//! Per request, `proxy` still compares each request's host with the SNI (421
//! `sni_mismatch`), since HTTP/2 connections may be reused for other hosts.

pub mod certs;
pub mod client;
pub mod resumption;
pub mod tickets;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::HandshakeKind;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::config::Policy;
use crate::edge::acme::challenge::ACME_TLS_ALPN;
use crate::edge::acme::{Acme, AcmeError};
use crate::edge::conn::{ClientAddr, ConnInfo, TlsInfo};
use crate::edge::listener::{Handshake, Handshaken};
use crate::edge::proxy::Gate;
use crate::model::host::HostName;
use crate::model::reason::Reason;

pub use certs::{CertError, CertStore};
pub use resumption::{Resumption, ResumptionError};
pub use tickets::{FleetTicketer, TicketKeyError};

/// ALPN protocols offered to clients, in preference order.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The crypto provider every rustls config of the crate uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Install the process-wide default provider (for any rustls user that does not
/// name one). Idempotent: a second call is a no-op.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server config answering with `resolver`: TLS 1.2/1.3, ALPN h2 and http/1.1,
/// resuming sessions through `resumption` when given.
fn config_with(
    resolver: Arc<dyn ResolvesServerCert>,
    resumption: Option<&Resumption>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    if let Some(resumption) = resumption {
        resumption.apply_to(&mut config);
    }
    Ok(Arc::new(config))
}

/// The config that offers exactly `key` (chosen before the handshake goes on).
pub(crate) fn server_config(
    key: Arc<CertifiedKey>,
    resumption: &Resumption,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    config_with(Arc::new(Fixed(Some(key))), Some(resumption))
}

/// Answers every ClientHello with one certificate, or with none (refusal).
#[derive(Debug)]
struct Fixed(Option<Arc<CertifiedKey>>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.clone()
    }
}

/// Why a handshake did not produce a connection; each maps to one metric label.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("client sent no SNI")]
    NoSni,
    #[error("SNI {sni:?} is refused: {reason}", reason = reason.as_str())]
    Refused { sni: String, reason: Reason },
    #[error("no certificate covers SNI {sni:?}")]
    NoCertificate { sni: String },
    #[error("handshake did not finish within {0:?}")]
    Timeout(std::time::Duration),
    #[error("handshake failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("no ACME certificate for SNI {sni:?}: {error}")]
    Acme { sni: String, error: AcmeError },
    #[error("answered an ACME TLS-ALPN-01 challenge")]
    AcmeChallenge,
}

impl HandshakeError {
    /// The `result` label of `icpgate_tls_handshakes_total`.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeError::NoSni => "refused_no_sni",
            HandshakeError::Refused { .. } => "refused_unfiled",
            HandshakeError::NoCertificate { .. } => "refused_no_cert",
            HandshakeError::Timeout(_) | HandshakeError::Io(_) | HandshakeError::Acme { .. } => {
                "error"
            }
            HandshakeError::AcmeChallenge => "acme_challenge",
        }
    }
}

/// Whether a ClientHello offers `acme-tls/1` (an ACME CA validating TLS-ALPN-01).
fn wants_acme_tls(hello: &ClientHello<'_>) -> bool {
    hello
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN))
}

/// Whether the gate lets a host with this reason through at all (the same rule as
/// for plain-HTTP requests).
fn admits(reason: Reason, policy: &Policy) -> bool {
    crate::gate::decision::disposition(reason, policy.mode, policy.on_registry_error).forwards()
}

/// The `listen.https` handshake: SNI gating, then TLS.
#[derive(Clone)]
pub struct TlsHandshake {
    gate: Arc<Gate>,
    certs: Arc<CertStore>,
    /// Certificates on demand, when `[acme]` is on.
    acme: Option<Arc<Acme>>,
    /// Offers no certificate: a refused handshake ends with an alert.
    refuse: Arc<ServerConfig>,
}

impl TlsHandshake {
    pub fn new(
        gate: Arc<Gate>,
        certs: Arc<CertStore>,
        acme: Option<Arc<Acme>>,
    ) -> Result<TlsHandshake, rustls::Error> {
        Ok(TlsHandshake {
            gate,
            certs,
            acme,
            refuse: config_with(Arc::new(Fixed(None)), None)?,
        })
    }

    /// Run the gated handshake on any stream (e.g. after a PROXY header), counting
    /// the result; None when the connection is to be dropped.
    pub async fn accept<IO>(&self, io: IO, client: ClientAddr) -> Option<(TlsStream<IO>, ConnInfo)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let within = self.gate.current().config.limits.header_read_timeout;
        // A hello may wait for its name's ACME order on top of the usual bound.
        let order_wait = match &self.acme {
            Some(acme) => acme.order_timeout(),
            None => std::time::Duration::ZERO,
        };
        let result =
            match tokio::time::timeout(within + order_wait, self.negotiate(io, within)).await {
                Ok(result) => result,
                Err(_) => Err(HandshakeError::Timeout(within)),
            };
        let label = match &result {
            Ok((stream, _))
                if stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed) =>
            {
                "resumed"
            }
            Ok(_) => "ok",
            Err(error) => error.label(),
        };
        self.gate
            .state
            .metrics
            .tls_handshakes
            .with_label_values(&[label])
            .inc();
        match result {
            Ok((stream, tls)) => Some((
                stream,
                ConnInfo {
                    client,
                    tls: Some(tls),
                },
            )),
            Err(error) => {
                tracing::debug!(%client, %error, "TLS handshake refused or failed");
                None
            }
        }
    }

    async fn negotiate<IO>(
        &self,
        io: IO,
        within: std::time::Duration,
    ) -> Result<(TlsStream<IO>, TlsInfo), HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let hello = LazyConfigAcceptor::new(Acceptor::default(), io);
        let start = tokio::time::timeout(within, hello)
            .await
            .map_err(|_| HandshakeError::Timeout(within))??;
        let sni = start.client_hello().server_name().map(str::to_owned);
        let asks_acme = wants_acme_tls(&start.client_hello());
        if let Some(answer) = self.acme_challenge(asks_acme, sni.as_deref()).await {
            let mut stream = start.into_stream(answer).await?;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
            return Err(HandshakeError::AcmeChallenge);
        }
        let decided = match sni {
            None => Err(HandshakeError::NoSni),
            Some(sni) => self.decide(sni).await,
        };
        match decided {
            Ok((config, tls)) => Ok((start.into_stream(config).await?, tls)),
            Err(refusal) => {
                // Finish with a certificate-less config: rustls sends the alert.
                let _ = start.into_stream(Arc::clone(&self.refuse)).await;
                Err(refusal)
            }
        }
    }

    /// The TLS-ALPN-01 answer, when the hello asks for `acme-tls/1` for a name
    /// being validated right now (by this node, or in a fleet by another).
    async fn acme_challenge(
        &self,
        asks_acme: bool,
        sni: Option<&str>,
    ) -> Option<Arc<ServerConfig>> {
        if !asks_acme {
            return None;
        }
        self.acme.as_ref()?;
        let host = HostName::parse(sni?).ok()?;
        self.gate
            .acme_challenges
            .tls_alpn_anywhere(&host, &self.gate.state.filed)
            .await
    }

    /// The config to continue with for this SNI, or the refusal. The certificate is
    /// looked up first, so without ACME names we serve no certificate for
    /// (scanners, random names) never reach the registry; with ACME they reach
    /// the filed-domain index, which answers unfiled names without a lookup.
    async fn decide(&self, sni: String) -> Result<(Arc<ServerConfig>, TlsInfo), HandshakeError> {
        let Ok(host) = HostName::parse(&sni) else {
            return Err(HandshakeError::Refused {
                sni,
                reason: Reason::InvalidHost,
            });
        };
        let served = match self.certs.find(&host) {
            Some(served) => Some(Arc::clone(&served.config)),
            None => self.acme.as_ref().and_then(|acme| acme.served(&host)),
        };
        if served.is_none() && self.acme.is_none() {
            return Err(HandshakeError::NoCertificate { sni });
        }
        let domain = host.registrable_domain();
        let runtime = self.gate.current();
        let verdict = self
            .gate
            .state
            .verdict(domain.as_ref(), runtime.rule_policy())
            .await;
        if !admits(verdict.reason, &runtime.config.policy) {
            return Err(HandshakeError::Refused {
                sni,
                reason: verdict.reason,
            });
        }
        if verdict.reason != Reason::Filed {
            tracing::info!(target: "icpgate::report_only", reason = verdict.reason.as_str(), sni = %host.as_str(), "TLS handshake admitted without a filing");
        }
        let config = match (served, &self.acme) {
            (Some(config), _) => config,
            // Only an approved filing orders, whatever report-only lets through.
            (None, Some(acme)) if verdict.reason == Reason::Filed => acme
                .obtain(&host)
                .await
                .map_err(|error| HandshakeError::Acme { sni, error })?,
            (None, _) => return Err(HandshakeError::NoCertificate { sni }),
        };
        let tls = TlsInfo {
            sni: host,
            sni_domain: domain,
        };
        Ok((config, tls))
    }
}

impl Handshake for TlsHandshake {
    type Io = TlsStream<TcpStream>;

    fn handshake(&self, stream: TcpStream, client: ClientAddr) -> Handshaken<Self::Io> {
        let this = self.clone();
        Box::pin(async move { this.accept(stream, client).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, OnRegistryError};

    #[test]
    fn handshakes_are_admitted_by_the_same_rule_as_requests() {
        let enforce = Policy::default();
        let report_only = Policy {
            mode: Mode::ReportOnly,
            ..Policy::default()
        };
        let fail_open = Policy {
            on_registry_error: OnRegistryError::Allow,
            ..Policy::default()
        };
        // reason, policy, admitted
        let cases = [
            (Reason::Filed, &enforce, true),
            (Reason::NotFiled, &enforce, false),
            (Reason::PendingReview, &enforce, false),
            (Reason::Cancelled, &enforce, false),
            (Reason::RegistryUnavailable, &enforce, false),
            (Reason::RegistryUnavailable, &fail_open, true),
            (Reason::NotFiled, &fail_open, false),
            (Reason::NotFiled, &report_only, true),
        ];
        for (reason, policy, admitted) in cases {
            assert_eq!(admits(reason, policy), admitted, "{}", reason.as_str());
        }
    }
}
