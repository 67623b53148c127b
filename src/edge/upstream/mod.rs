//! Upstream pools, one per product (`storefront`, `corporate_site`): each request
//! goes out on an idle keep-alive connection of the pool taken from this thread's
//! list (`idle`), else on a new connection to the next server that accepts one
//! (`connect`: round-robin, failover, cool-down, TLS). The connection is driven by
//! the request's own task and, after the response body, by the client connection's
//! task that reads it (`driven`), so an exchange takes no lock and spawns no task.
//! The whole exchange up to the response head is bounded by `limits.upstream_timeout`.
//!
//! A pool with `tls = true` speaks TLS to its servers, verifying the origin's
//! certificate for the request's host, which is also the SNI; its idle connections
//! are kept per SNI, so connections made for different names are never mixed.
//!
//! A WebSocket upgrade gets a connection of its own, run in a spawned task that
//! hands the upgraded stream to the tunnel; it is never pooled.

mod connect;
mod driven;
mod idle;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::client::conn::http1;

use crate::config::{Pool as PoolConfig, Upstreams as UpstreamsConfig};
use crate::edge::proxy_body::ProxyBody;
use crate::model::filing::Product;

pub use connect::{FailoverConnector, UpstreamStream, FAIL_COOLDOWN};
use connect::{Servers, Transport};
pub use driven::UpstreamBody;
use driven::{Owner, UpstreamConn};
pub use idle::{IDLE_TIMEOUT, MAX_IDLE_PER_SERVER};

/// Why an upstream exchange failed; each maps to one `kind` label and one status.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no server of pool {pool} accepted a connection: {source}")]
    Connect {
        pool: &'static str,
        source: io::Error,
    },
    #[error("pool {pool} did not answer within {timeout:?}")]
    Timeout {
        pool: &'static str,
        timeout: Duration,
    },
    #[error("pool {pool} failed mid-exchange: {source}")]
    Reset {
        pool: &'static str,
        source: hyper::Error,
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

/// Tells apart the idle connections of pools built by successive reloads.
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

/// One pool: its servers and how to reach them.
pub struct Pool {
    name: &'static str,
    /// Unique per `Pool` value: the idle lists' key, so a reloaded pool (whose
    /// servers may differ) never takes its predecessor's connections.
    generation: u64,
    tls: bool,
    servers: Arc<Servers>,
    connector: FailoverConnector,
    http1: http1::Builder,
}

impl Pool {
    fn new(name: Product, config: &PoolConfig, connect_timeout: Duration) -> Pool {
        let servers = Arc::new(Servers::new(config.servers.iter().cloned()));
        let transport = Transport::for_pool(name, config);
        Pool {
            name: name.as_str(),
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            tls: config.tls,
            connector: FailoverConnector::for_pool(
                Arc::clone(&servers),
                connect_timeout,
                transport,
            ),
            servers,
            http1: http1::Builder::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// How many of the pool's servers are passed over after a failed connect.
    pub fn servers_down(&self) -> usize {
        self.servers.down()
    }

    /// Send one request (origin-form URI, `Host` set); `authority` is the request's
    /// validated authority, whose host is the SNI of a TLS pool. The exchange up to
    /// the response head is bounded by `timeout`.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
        authority: &str,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let exchange = tokio::time::timeout(timeout, self.exchange(request, authority));
        exchange.await.unwrap_or(Err(UpstreamError::Timeout {
            pool: self.name,
            timeout,
        }))
    }

    /// Send a WebSocket upgrade request on a connection of its own, whose task
    /// hands the switched stream to `hyper::upgrade::on(&mut response)`.
    pub async fn send_upgrade(
        &self,
        request: Request<ProxyBody>,
        authority: &str,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        // Boxed: rare, and its connect and handshake futures are large.
        let upgrade = Box::pin(self.upgrade(request, authority));
        let exchange = tokio::time::timeout(timeout, upgrade);
        exchange.await.unwrap_or(Err(UpstreamError::Timeout {
            pool: self.name,
            timeout,
        }))
    }

    /// The SNI (and idle-list key) for a request's authority: its host on a TLS pool.
    fn sni<'a>(&self, authority: &'a str) -> Option<&'a str> {
        self.tls.then(|| host_of(authority))
    }

    async fn exchange(
        &self,
        mut request: Request<ProxyBody>,
        authority: &str,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let sni = self.sni(authority);
        while let Some(mut conn) = idle::take(self.generation, sni) {
            match conn.exchange(request).await {
                Ok(response) => return Ok(response.map(|body| UpstreamBody::driven(body, conn))),
                // Closed by the origin before the request was written: the next
                // idle connection, or a new one, gets it.
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(self.reset(error.into_error())),
                },
            }
        }
        // Boxed: a new connection is the rare case, and its connect (TLS included)
        // and handshake futures would otherwise enlarge every request's future.
        let mut conn = Box::pin(self.open(sni)).await?;
        match conn.exchange(request).await {
            Ok(response) => Ok(response.map(|body| UpstreamBody::driven(body, conn))),
            Err(error) => Err(self.reset(error.into_error())),
        }
    }

    async fn upgrade(
        &self,
        request: Request<ProxyBody>,
        authority: &str,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let sni = self.sni(authority);
        let (io, _server) = self.connect(sni).await?;
        let (mut sender, connection) = self
            .http1
            .handshake(io)
            .await
            .map_err(|error| self.reset(error))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream upgrade connection ended");
            }
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| self.reset(error))?;
        Ok(response.map(UpstreamBody::spawned))
    }

    /// A new keep-alive connection to the next server that accepts one.
    async fn open(&self, sni: Option<&str>) -> Result<Box<UpstreamConn>, UpstreamError> {
        let (io, server) = self.connect(sni).await?;
        let (sender, connection) = self
            .http1
            .handshake(io)
            .await
            .map_err(|error| self.reset(error))?;
        let owner = Owner {
            pool: self.generation,
            sni: sni.map(Into::into),
        };
        Ok(UpstreamConn::new(sender, connection, owner, server))
    }

    async fn connect(
        &self,
        sni: Option<&str>,
    ) -> Result<(hyper_util::rt::TokioIo<UpstreamStream>, usize), UpstreamError> {
        self.connector
            .open(sni.unwrap_or_default())
            .await
            .map_err(|source| UpstreamError::Connect {
                pool: self.name,
                source,
            })
    }

    fn reset(&self, source: hyper::Error) -> UpstreamError {
        UpstreamError::Reset {
            pool: self.name,
            source,
        }
    }
}

/// The host of a validated authority: without its port, an IPv6 literal without
/// its brackets.
fn host_of(authority: &str) -> &str {
    if let Some(bracketed) = authority.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or(bracketed);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
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
            storefront: Pool::new(Product::Storefront, &config.storefront, connect_timeout),
            corporate_site: Pool::new(
                Product::CorporateSite,
                &config.corporate_site,
                connect_timeout,
            ),
        }
    }

    pub fn pool(&self, name: Product) -> &Pool {
        match name {
            Product::Storefront => &self.storefront,
            Product::CorporateSite => &self.corporate_site,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use crate::edge::proxy_body::full;

    /// An origin that answers every request head with `reply` on keep-alive
    /// connections, and counts the connections it accepted.
    async fn origin(reply: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer_each_head(stream, reply));
            }
        });
        (address, accepted)
    }

    async fn answer_each_head(mut stream: TcpStream, reply: &'static [u8]) {
        let mut pending = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                pending.drain(..end + 4);
                if stream.write_all(reply).await.is_err() {
                    return;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn pool_of(address: SocketAddr) -> Pool {
        let config = PoolConfig {
            servers: vec![address.to_string()],
            tls: false,
            ca_file: None,
        };
        Pool::new(Product::Storefront, &config, Duration::from_secs(2))
    }

    fn get() -> Request<ProxyBody> {
        let mut request = Request::new(full(""));
        request.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_static("shop.example.com"),
        );
        request
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_connection_whose_body_was_read_serves_the_next_request() {
        let replies: [(&str, &'static [u8]); 4] = [
            (
                "content-length",
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            ),
            (
                "chunked",
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            ),
            ("no body", b"HTTP/1.1 204 No Content\r\n\r\n"),
            ("empty", b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
        ];
        for (case, reply) in replies {
            let (address, accepted) = origin(reply).await;
            let pool = pool_of(address);
            for _ in 0..3 {
                let response = pool.send(get(), "shop.example.com", TIMEOUT).await;
                let response = response.expect(case);
                assert!(response.status().is_success(), "{case}");
                response.into_body().collect().await.expect(case);
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 1, "{case}: one connection");
        }
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        // Promises 10 bytes and sends 2: the body never ends.
        let (address, accepted) = origin(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok").await;
        let pool = pool_of(address);
        for _ in 0..2 {
            let response = pool.send(get(), "shop.example.com", TIMEOUT).await;
            let mut body = response.expect("response").into_body();
            let first = body.frame().await.expect("a frame").expect("data");
            assert_eq!(first.into_data().ok().as_deref(), Some(&b"ok"[..]));
            drop(body);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "not reused mid-body");
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error() {
        let address = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("addr")
        };
        let result = pool_of(address)
            .send(get(), "shop.example.com", TIMEOUT)
            .await;
        assert_eq!(result.err().map(|e| e.kind()), Some("connect"));
    }

    #[test]
    fn the_sni_is_the_authority_without_its_port() {
        let cases = [
            ("shop.example.com", "shop.example.com"),
            ("shop.example.com:8443", "shop.example.com"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("192.0.2.7:80", "192.0.2.7"),
            ("192.0.2.7", "192.0.2.7"),
        ];
        for (authority, host) in cases {
            assert_eq!(host_of(authority), host, "{authority}");
        }
    }
}
