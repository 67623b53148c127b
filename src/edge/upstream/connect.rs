//! Opening connections to a pool's servers: round-robin over the servers, the next
//! one tried when one refuses a connection or does not answer within
//! `limits.upstream_connect_timeout`, TLS on top for TLS pools (verified for the
//! request's host, which is also the SNI). A connect failure happens before the
//! request body is touched, so failing over never loses a body.
//!
//! A server that fails to connect is passed over for [`FAIL_COOLDOWN`], as nginx's
//! default `max_fails=1 fail_timeout=10s` does, so a dead or black-holed server
//! costs one connect attempt per cool-down instead of one per new connection. When
//! every server of a pool is passed over, all are tried anyway: the pool never gives
//! up without asking.
//!
//! [`FailoverConnector`] is also a connector for hyper-util's legacy client, which
//! the webhook notifier keeps using (it is not the data plane's hot path).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::Pool as PoolConfig;
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
pub(super) enum Transport {
    Plain,
    Tls(TlsConnector),
    /// `tls = true` but the trust roots could not be loaded: every connect fails.
    Broken(Arc<str>),
}

impl Transport {
    pub(super) fn for_pool(name: Product, config: &PoolConfig) -> Transport {
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
pub(super) struct Servers {
    list: Vec<Server>,
    epoch: Instant,
}

impl Servers {
    /// Servers passed over right now.
    pub(super) fn down(&self) -> usize {
        let now_ms = self.now_ms();
        self.list
            .iter()
            .filter(|server| self.is_down(server, now_ms))
            .count()
    }

    pub(super) fn new(addresses: impl IntoIterator<Item = String>) -> Servers {
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

    /// A connector to the pool's servers; `servers` is shared with the pool, which
    /// reports how many are passed over.
    pub(super) fn for_pool(
        servers: Arc<Servers>,
        connect_timeout: Duration,
        transport: Transport,
    ) -> FailoverConnector {
        FailoverConnector {
            servers,
            next: Arc::new(AtomicUsize::new(0)),
            connect_timeout,
            transport,
        }
    }

    async fn connect(self, uri: Uri) -> io::Result<TokioIo<UpstreamStream>> {
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let (stream, _server) = self.open(host).await?;
        Ok(stream)
    }

    /// A connection to the next server that accepts one, and that server's index;
    /// over TLS for TLS pools, with `sni` as the name sent and verified.
    pub(super) async fn open(&self, sni: &str) -> io::Result<(TokioIo<UpstreamStream>, usize)> {
        let (tcp, server) = self.connect_tcp().await?;
        let connector = match &self.transport {
            Transport::Plain => return Ok((TokioIo::new(UpstreamStream::Plain(tcp)), server)),
            Transport::Tls(connector) => connector,
            Transport::Broken(why) => return Err(io::Error::other(why.to_string())),
        };
        let name = ServerName::try_from(sni.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        match tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => Ok((TokioIo::new(UpstreamStream::Tls(Box::new(stream))), server)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "upstream TLS handshake timed out",
            )),
        }
    }

    /// Connect to the pool's servers in round-robin order, those passed over after
    /// a recent failure last; the stream and the index of the server that accepted.
    async fn connect_tcp(&self) -> io::Result<(TcpStream, usize)> {
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
        let rotation = (0..count).map(|offset| {
            let index = (start + offset) % count;
            (index, &servers.list[index])
        });
        let (up, down): (Vec<_>, Vec<_>) =
            rotation.partition(|(_, server)| !servers.is_down(server, now_ms));
        let mut last_error = None;
        for (index, server) in up.into_iter().chain(down) {
            let address = server.address.as_str();
            let error =
                match tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await
                {
                    Ok(Ok(stream)) => {
                        servers.answered(server);
                        stream.set_nodelay(true)?;
                        return Ok((stream, index));
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
