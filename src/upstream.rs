//! Upstream pools, one per product (`storefront`, `corporate_site`): pooled keep-alive
//! connections (hyper-util's client), new connections spread round-robin over the
//! pool's servers, the next server tried when one refuses a connection, and a bound on
//! the whole exchange. A connect failure happens before the request body is touched,
//! so failing over never loses a body.
//!
//! A pool with `tls = true` speaks TLS to its servers, verifying the origin's
//! certificate for the request's host, which is also the SNI. Its pool key (the URI
//! authority hyper's client groups connections by) is that host, so connections made
//! for different SNIs are never mixed; the connector maps it to the pool's servers.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{Pool as PoolConfig, PoolName, Upstreams as UpstreamsConfig};
use crate::filing::Product;
use crate::proxy_body::ProxyBody;

/// A connection to an origin: plain TCP, or TLS over TCP.
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, data),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How a pool talks to its servers.
#[derive(Clone)]
enum Transport {
    Plain,
    Tls(TlsConnector),
    /// `tls = true` but the trust roots could not be loaded: every connect fails.
    Broken(Arc<str>),
}

impl Transport {
    fn for_pool(name: PoolName, config: &PoolConfig) -> Transport {
        if !config.tls {
            return Transport::Plain;
        }
        match crate::tls::client::client_config(config.ca_file.as_deref()) {
            Ok(client) => Transport::Tls(TlsConnector::from(client)),
            Err(error) => {
                tracing::error!(pool = name.as_str(), %error, "upstream TLS unusable");
                Transport::Broken(error.to_string().into())
            }
        }
    }
}

/// Opens a connection to the next server of a pool that accepts one (TLS on top
/// for TLS pools, verified for the URI's host).
#[derive(Clone)]
pub struct FailoverConnector {
    servers: Arc<[String]>,
    /// Round-robin cursor shared by every connection attempt of the pool.
    next: Arc<AtomicUsize>,
    connect_timeout: Duration,
    transport: Transport,
}

impl FailoverConnector {
    /// A connector to one `host:port`, over TLS (system roots, or `ca_file`) when
    /// `tls` — for clients other than the pools, such as the webhook notifier.
    pub fn single(
        server: String,
        tls: bool,
        ca_file: Option<&std::path::Path>,
        connect_timeout: Duration,
    ) -> Result<FailoverConnector, crate::tls::client::ClientTlsError> {
        let transport = if tls {
            Transport::Tls(TlsConnector::from(crate::tls::client::client_config(
                ca_file,
            )?))
        } else {
            Transport::Plain
        };
        Ok(FailoverConnector {
            servers: Arc::from(vec![server]),
            next: Arc::new(AtomicUsize::new(0)),
            connect_timeout,
            transport,
        })
    }

    async fn connect(self, uri: Uri) -> io::Result<TokioIo<UpstreamStream>> {
        let tcp = self.connect_tcp().await?;
        let connector = match &self.transport {
            Transport::Plain => return Ok(TokioIo::new(UpstreamStream::Plain(tcp))),
            Transport::Tls(connector) => connector,
            Transport::Broken(why) => return Err(io::Error::other(why.to_string())),
        };
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        match tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => Ok(TokioIo::new(UpstreamStream::Tls(Box::new(stream)))),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "upstream TLS handshake timed out",
            )),
        }
    }

    async fn connect_tcp(&self) -> io::Result<TcpStream> {
        let count = self.servers.len();
        if count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the pool has no servers configured",
            ));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let mut last_error = None;
        for offset in 0..count {
            let server = &self.servers[(start + offset) % count];
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(server.as_str()))
                .await
            {
                Ok(Ok(stream)) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Ok(Err(error)) => {
                    tracing::debug!(%server, %error, "upstream refused the connection; trying the next");
                    last_error = Some(error);
                }
                Err(_) => {
                    tracing::debug!(%server, "upstream connect timed out; trying the next");
                    last_error = Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect to {server} timed out"),
                    ));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("no upstream answered")))
    }
}

impl tower_service::Service<Uri> for FailoverConnector {
    type Response = TokioIo<UpstreamStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<UpstreamStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// Why an upstream exchange failed; each maps to one `kind` label and one status.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no server of pool {pool} accepted a connection: {source}")]
    Connect {
        pool: &'static str,
        source: hyper_util::client::legacy::Error,
    },
    #[error("pool {pool} did not answer within {timeout:?}")]
    Timeout {
        pool: &'static str,
        timeout: Duration,
    },
    #[error("pool {pool} failed mid-exchange: {source}")]
    Reset {
        pool: &'static str,
        source: hyper_util::client::legacy::Error,
    },
}

impl UpstreamError {
    /// The `kind` label of `icpgate_upstream_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Reset { .. } => "reset",
        }
    }
}

/// One pool's client.
pub struct Pool {
    name: &'static str,
    /// `http://<pool>.upstream`: the pool key hyper's client groups connections by
    /// (for TLS pools the request's host is the key instead).
    base: String,
    tls: bool,
    client: Client<FailoverConnector, ProxyBody>,
}

impl Pool {
    fn new(name: PoolName, config: &PoolConfig, connect_timeout: Duration) -> Pool {
        let connector = FailoverConnector {
            servers: config.servers.iter().cloned().collect(),
            next: Arc::new(AtomicUsize::new(0)),
            connect_timeout,
            transport: Transport::for_pool(name, config),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Pool {
            name: pool_label(name),
            base: format!("http://{}.upstream", pool_label(name)),
            tls: config.tls,
            client,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The absolute URI hyper's client needs for `path_and_query` on this pool;
    /// `authority` is the request's (validated) authority, the SNI of a TLS pool.
    pub fn uri_for(&self, authority: &str, path_and_query: &str) -> Result<Uri, http::Error> {
        if self.tls {
            return Ok(format!("https://{authority}{path_and_query}").parse::<Uri>()?);
        }
        Ok(format!("{}{}", self.base, path_and_query).parse::<Uri>()?)
    }

    /// Send one request; the whole exchange up to the response head is bounded by `timeout`.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(UpstreamError::Timeout {
                pool: self.name,
                timeout,
            }),
            Ok(Err(source)) if source.is_connect() => Err(UpstreamError::Connect {
                pool: self.name,
                source,
            }),
            Ok(Err(source)) => Err(UpstreamError::Reset {
                pool: self.name,
                source,
            }),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

pub fn pool_label(name: PoolName) -> &'static str {
    match name {
        PoolName::Storefront => "storefront",
        PoolName::CorporateSite => "corporate_site",
    }
}

pub fn pool_of(product: Product) -> PoolName {
    match product {
        Product::Storefront => PoolName::Storefront,
        Product::CorporateSite => PoolName::CorporateSite,
    }
}

/// Both pools, built from `[upstreams]`; replaced whole on reload.
pub struct Upstreams {
    storefront: Pool,
    corporate_site: Pool,
}

impl Upstreams {
    pub fn new(config: &UpstreamsConfig, connect_timeout: Duration) -> Upstreams {
        Upstreams {
            storefront: Pool::new(PoolName::Storefront, &config.storefront, connect_timeout),
            corporate_site: Pool::new(
                PoolName::CorporateSite,
                &config.corporate_site,
                connect_timeout,
            ),
        }
    }

    pub fn pool(&self, name: PoolName) -> &Pool {
        match name {
            PoolName::Storefront => &self.storefront,
            PoolName::CorporateSite => &self.corporate_site,
        }
    }
}
