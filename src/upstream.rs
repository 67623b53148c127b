//! Upstream pools, one per product (`storefront`, `corporate_site`): pooled keep-alive
//! connections (hyper-util's client), new connections spread round-robin over the
//! pool's servers, the next server tried when one refuses a connection, and a bound on
//! the whole exchange. A connect failure happens before the request body is touched,
//! so failing over never loses a body.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::config::{PoolName, Upstreams as UpstreamsConfig};
use crate::filing::Product;
use crate::proxy_body::ProxyBody;

/// Opens a TCP connection to the next server of a pool that accepts one.
#[derive(Clone)]
pub struct FailoverConnector {
    servers: Arc<[String]>,
    /// Round-robin cursor shared by every connection attempt of the pool.
    next: Arc<AtomicUsize>,
    connect_timeout: Duration,
}

impl FailoverConnector {
    async fn connect(self) -> io::Result<TokioIo<TcpStream>> {
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
                    return Ok(TokioIo::new(stream));
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
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect())
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
    /// `http://<pool>.upstream`: the pool key hyper's client groups connections by.
    base: String,
    client: Client<FailoverConnector, ProxyBody>,
}

impl Pool {
    fn new(name: PoolName, servers: &[String], connect_timeout: Duration) -> Pool {
        let connector = FailoverConnector {
            servers: servers.iter().cloned().collect(),
            next: Arc::new(AtomicUsize::new(0)),
            connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Pool {
            name: pool_label(name),
            base: format!("http://{}.upstream", pool_label(name)),
            client,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The absolute URI hyper's client needs for `path_and_query` on this pool.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
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
            storefront: Pool::new(
                PoolName::Storefront,
                &config.storefront.servers,
                connect_timeout,
            ),
            corporate_site: Pool::new(
                PoolName::CorporateSite,
                &config.corporate_site.servers,
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
