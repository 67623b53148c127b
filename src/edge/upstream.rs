//! Upstream pools, one per product (`storefront`, `corporate_site`): pooled keep-alive
//! connections (hyper-util's client), new connections spread round-robin over the
//! pool's servers, the next server tried when one refuses a connection, and a bound on
//! the whole exchange. A connect failure happens before the request body is touched,
//! so failing over never loses a body.
//!
//! A server that fails to connect (refused, or no answer within
//! `limits.upstream_connect_timeout`) is passed over for [`FAIL_COOLDOWN`], as nginx's
//! default `max_fails=1 fail_timeout=10s` does, so a dead or black-holed server
//! costs one connect attempt per cool-down instead of one per new connection. When
//! every server of a pool is passed over, all are tried anyway: the pool never gives
//! up without asking.
//!
//! A pool with `tls = true` speaks TLS to its servers, verifying the origin's
//! certificate for the request's host, which is also the SNI. Its pool key (the URI
//! authority hyper's client groups connections by) is that host, so connections made
//! for different SNIs are never mixed; the connector maps it to the pool's servers.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{Pool as PoolConfig, Upstreams as UpstreamsConfig};
use crate::edge::proxy_body::ProxyBody;
use crate::model::filing::Product;

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
    fn for_pool(name: Product, config: &PoolConfig) -> Transport {
        if !config.tls {
            return Transport::Plain;
        }
        match crate::edge::tls::client::client_config(config.ca_file.as_deref()) {
            Ok(client) => Transport::Tls(TlsConnector::from(client)),
            Err(error) => {
                tracing::error!(pool = name.as_str(), %error, "upstream TLS unusable");
                Transport::Broken(error.to_string().into())
            }
        }
    }
}

/// How long a server that failed to connect is passed over.
pub const FAIL_COOLDOWN: Duration = Duration::from_secs(10);

/// One server of a pool and when it may be tried again after a failure.
struct Server {
    address: String,
    /// Milliseconds since `Servers::epoch` until which it is passed over; 0: up.
    down_until_ms: AtomicU64,
}

/// A pool's servers and their recent connect failures.
struct Servers {
    list: Vec<Server>,
    epoch: Instant,
}

impl Servers {
    /// Servers passed over right now.
    fn down(&self) -> usize {
        let now_ms = self.now_ms();
        self.list
            .iter()
            .filter(|server| self.is_down(server, now_ms))
            .count()
    }

    fn new(addresses: impl IntoIterator<Item = String>) -> Servers {
        Servers {
            list: addresses
                .into_iter()
                .map(|address| Server {
                    address,
                    down_until_ms: AtomicU64::new(0),
                })
                .collect(),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_down(&self, server: &Server, now_ms: u64) -> bool {
        server.down_until_ms.load(Ordering::Acquire) > now_ms
    }

    fn failed(&self, server: &Server, error: &io::Error) {
        let now_ms = self.now_ms();
        let until = now_ms.saturating_add(FAIL_COOLDOWN.as_millis() as u64);
        let before = server.down_until_ms.swap(until, Ordering::AcqRel);
        if before <= now_ms {
            tracing::warn!(server = %server.address, %error, cooldown = ?FAIL_COOLDOWN, "upstream server failed to connect; passed over for the cool-down");
        }
    }

    fn answered(&self, server: &Server) {
        if server.down_until_ms.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!(server = %server.address, "upstream server connects again");
        }
    }
}

/// Opens a connection to the next server of a pool that accepts one (TLS on top
/// for TLS pools, verified for the URI's host).
#[derive(Clone)]
pub struct FailoverConnector {
    servers: Arc<Servers>,
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
    ) -> Result<FailoverConnector, crate::edge::tls::client::ClientTlsError> {
        let transport = if tls {
            Transport::Tls(TlsConnector::from(crate::edge::tls::client::client_config(
                ca_file,
            )?))
        } else {
            Transport::Plain
        };
        Ok(FailoverConnector {
            servers: Arc::new(Servers::new([server])),
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

    /// Connect to the pool's servers in round-robin order, those passed over after
    /// a recent failure last.
    async fn connect_tcp(&self) -> io::Result<TcpStream> {
        let servers = &self.servers;
        let count = servers.list.len();
        if count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the pool has no servers configured",
            ));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let now_ms = servers.now_ms();
        let rotation = (0..count).map(|offset| &servers.list[(start + offset) % count]);
        let (up, down): (Vec<&Server>, Vec<&Server>) =
            rotation.partition(|server| !servers.is_down(server, now_ms));
        let mut last_error = None;
        for server in up.into_iter().chain(down) {
            let address = server.address.as_str();
            let error =
                match tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await
                {
                    Ok(Ok(stream)) => {
                        servers.answered(server);
                        stream.set_nodelay(true)?;
                        return Ok(stream);
                    }
                    Ok(Err(error)) => error,
                    Err(_) => io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect to {address} timed out"),
                    ),
                };
            tracing::debug!(server = %address, %error, "upstream connect failed; trying the next");
            servers.failed(server, &error);
            last_error = Some(error);
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
    servers: Arc<Servers>,
    client: Client<FailoverConnector, ProxyBody>,
}

impl Pool {
    fn new(name: Product, config: &PoolConfig, connect_timeout: Duration) -> Pool {
        let servers = Arc::new(Servers::new(config.servers.iter().cloned()));
        let connector = FailoverConnector {
            servers: Arc::clone(&servers),
            next: Arc::new(AtomicUsize::new(0)),
            connect_timeout,
            transport: Transport::for_pool(name, config),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Pool {
            name: name.as_str(),
            base: format!("http://{}.upstream", name.as_str()),
            tls: config.tls,
            servers,
            client,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// How many of the pool's servers are passed over after a failed connect.
    pub fn servers_down(&self) -> usize {
        self.servers.down()
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
    use tokio::net::{TcpListener, TcpSocket};

    const CONNECT_TIMEOUT: Duration = Duration::from_millis(400);

    fn connector(servers: Vec<String>) -> FailoverConnector {
        FailoverConnector {
            servers: Arc::new(Servers::new(servers)),
            next: Arc::new(AtomicUsize::new(0)),
            connect_timeout: CONNECT_TIMEOUT,
            transport: Transport::Plain,
        }
    }

    /// A server that never answers a SYN: a listener whose accept queue is full.
    /// The returned values keep it that way while they live.
    async fn black_hole() -> (TcpListener, Vec<TcpStream>, String) {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let listener = socket.listen(1).expect("listen");
        let address = listener.local_addr().expect("addr").to_string();
        let mut held = Vec::new();
        for _ in 0..16 {
            let attempt = TcpStream::connect(address.as_str());
            match tokio::time::timeout(Duration::from_millis(100), attempt).await {
                Ok(Ok(stream)) => held.push(stream),
                _ => break,
            }
        }
        (listener, held, address)
    }

    async fn live() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        (listener, address)
    }

    /// How long one connect took, and whether it succeeded.
    async fn timed_connect(connector: &FailoverConnector) -> (Duration, bool) {
        let started = Instant::now();
        let connected = connector.connect_tcp().await.is_ok();
        (started.elapsed(), connected)
    }

    #[tokio::test]
    async fn a_black_holed_server_is_passed_over_after_one_timeout() {
        let (_hole, _held, dead) = black_hole().await;
        let (_listener, alive) = live().await;
        let connector = connector(vec![dead, alive]);
        let (first, connected) = timed_connect(&connector).await;
        assert!(connected, "failed over to the live server");
        assert!(
            first >= CONNECT_TIMEOUT,
            "the first attempt waited: {first:?}"
        );
        // The rotation starts at the dead server every other time; it is skipped.
        for attempt in 0..4 {
            let (took, connected) = timed_connect(&connector).await;
            assert!(connected);
            assert!(
                took < CONNECT_TIMEOUT,
                "attempt {attempt} waited for the passed-over server: {took:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_pool_whose_servers_all_failed_is_still_tried() {
        let (refusing, port) = {
            let socket = TcpSocket::new_v4().expect("socket");
            socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
            let port = socket.local_addr().expect("addr").port();
            (socket, port)
        };
        let address = format!("127.0.0.1:{port}");
        let connector = connector(vec![address.clone()]);
        assert!(
            connector.connect_tcp().await.is_err(),
            "nothing listens yet"
        );
        // The only server is passed over now, but it is asked anyway, and answers
        // (the same socket starts listening: the port is never free for another).
        let listener = refusing.listen(16).expect("listen");
        assert!(
            connector.connect_tcp().await.is_ok(),
            "a down pool is still tried"
        );
        let now = connector.servers.now_ms();
        assert!(
            !connector.servers.is_down(&connector.servers.list[0], now),
            "a server that answers is up again"
        );
        drop(listener);
    }
}
