//! Accept loops: one per listening socket, data plane and admin alike (`Plane`).
//! The data plane binds one socket per worker thread on every address
//! (`bind_per_worker`, `SO_REUSEPORT`), so the kernel spreads connections over the
//! threads and a connection never leaves the thread that accepted it. Each
//! connection is counted against its plane's limit (over the limit it is closed at
//! once; the count is shared by every thread, so the limit is per process), served
//! by hyper with what the listener serves (`Serve`: the gate, or the admin router),
//! and followed by `Connections`: SIGTERM drains every connection, and what a stop
//! does not drain is cut (`Connections::cut_all`) while the runtimes are still whole.
//!
//! The HTTP version: over TLS, ALPN has settled it, so hyper's HTTP/1 or HTTP/2
//! server is used directly; on plain listeners hyper-util's auto builder reads the
//! connection's first bytes, since HTTP/2 by prior knowledge (h2c) is served there.
//!
//! With `listen.proxy_protocol = true` every connection must open with a PROXY v1 or
//! v2 header (read within `limits.header_read_timeout`, before TLS or HTTP); the
//! address it carries becomes the client (`ConnInfo.client`: X-Forwarded-For, logs).
//! A connection without one is answered 400 and closed; with
//! `listen.proxy_protocol_from` set, a connection from any other peer is closed
//! before a byte is read.
//!
//! Slow and idle clients: `client_deadlines::ClientDeadlines` bounds each request head by
//! `limits.header_read_timeout`, and cuts a client that takes no response bytes for
//! `limits.idle_timeout`. A connection with no request in flight for
//! `limits.idle_timeout` is closed gracefully (HTTP/1 at once, HTTP/2 with a
//! GOAWAY); HTTP/2 connections are also pinged every `limits.idle_timeout` and
//! closed when a ping goes unanswered.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::config::Limits;
use crate::edge::client_deadlines::{ClientDeadlines, ExchangeBody, Exchanges};
use crate::edge::conn::{ClientAddr, ConnInfo, PeerAddr};
use crate::edge::proxy::Gate;
use crate::edge::proxy_body::ProxyBody;
use crate::edge::proxy_protocol::{read_proxy_header, ProxyProtocolError};
use crate::edge::reset_rate::ResetRate;
use crate::observe::metrics::Metrics;

/// How far a stop has gone; every connection follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    Serving,
    /// Finish what is in flight, take no new request (HTTP/2: GOAWAY), then close.
    Drain,
    /// Close now.
    Cut,
}

/// Which side of the process a listener belongs to; the sides differ in three ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    /// The data plane: its listeners share `limits.max_connections`, every connection
    /// counts in `icpgate_connections_active`, and opens with a PROXY header when
    /// `listen.proxy_protocol` is set.
    Data,
    /// The admin listener: a limit of its own, so a flood of data-plane connections
    /// cannot lock operators out (nor the reverse); not counted in the gauge (a scrape
    /// would count itself); reached directly, without a PROXY header.
    Admin { max_connections: usize },
}

/// What a listener's connections are served by: the gate on the data plane, the
/// admin router on the admin listener. Never fails: every refusal is a response.
pub trait Serve: Send + Sync + 'static {
    fn call(
        self: Arc<Self>,
        request: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send;
}

impl Serve for Gate {
    async fn call(
        self: Arc<Self>,
        request: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Response<ProxyBody> {
        match self.serve(request, conn).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// Every connection of one plane of the process (one set for the data plane, one
/// for the admin listener): counted against the plane's limit (the data plane's
/// also in the `icpgate_connections_active` gauge), drained together on SIGTERM and
/// cut together when a stop does not wait (SIGINT) or the drain runs out of time.
///
/// Cutting them ourselves, before the runtime goes away, is what makes a stop
/// predictable: the runtime drops its tasks in no set order, so an upstream
/// connection dropped before the client's would let a request in flight answer 502
/// instead of the client seeing its connection close.
pub struct Connections {
    active: AtomicUsize,
    stop: watch::Sender<Stop>,
    all_closed: Notify,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            active: AtomicUsize::new(0),
            stop: watch::Sender::new(Stop::Serving),
            all_closed: Notify::new(),
        }
    }
}

impl Connections {
    /// Open connections right now.
    pub fn open(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Ask every connection to finish its requests in flight and close; true once
    /// all are closed, false when `within` runs out first.
    pub async fn drain(&self, within: Duration) -> bool {
        self.advance(Stop::Drain);
        self.all_closed_within(within).await
    }

    /// Close every connection (and refuse the ones still handshaking); returns once
    /// they are all closed, or after `bound`.
    pub async fn cut_all(&self, bound: Duration) {
        self.advance(Stop::Cut);
        self.all_closed_within(bound).await;
    }

    fn advance(&self, to: Stop) {
        self.stop.send_if_modified(|stop| {
            let later = to > *stop;
            if later {
                *stop = to;
            }
            later
        });
    }

    async fn all_closed_within(&self, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            loop {
                // Registered before the count is read, so a close in between still wakes us.
                let closed = self.all_closed.notified();
                if self.open() == 0 {
                    return;
                }
                closed.await;
            }
        })
        .await
        .is_ok()
    }

    /// Serve `connection` (which follows `Stop::Drain` itself) until it ends or every
    /// connection is cut; `slot` is released only after its sockets are closed.
    async fn serve_until_cut(&self, connection: impl Future<Output = ()>, slot: ConnectionSlot) {
        let mut stop = self.stop.subscribe();
        tokio::select! {
            _ = connection => {}
            _ = stop.wait_for(|stop| *stop == Stop::Cut) => {}
        }
        drop(slot);
    }
}

/// One open connection's place in `Connections`.
struct ConnectionSlot {
    connections: Arc<Connections>,
    /// The metrics whose `connections_active` gauge counts this connection, if any.
    gauge: Option<Arc<Metrics>>,
}

impl ConnectionSlot {
    fn acquire(
        connections: &Arc<Connections>,
        limit: usize,
        gauge: Option<&Arc<Metrics>>,
    ) -> Option<ConnectionSlot> {
        let previous = connections.active.fetch_add(1, Ordering::AcqRel);
        if previous >= limit {
            connections.active.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if let Some(metrics) = gauge {
            metrics.connections_active.inc();
        }
        Some(ConnectionSlot {
            connections: Arc::clone(connections),
            gauge: gauge.cloned(),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if self.connections.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.connections.all_closed.notify_waiters();
        }
        if let Some(metrics) = &self.gauge {
            metrics.connections_active.dec();
        }
    }
}

/// A prepared connection and what it revealed about the client, or None to drop it.
pub type Handshaken<Io> = Pin<Box<dyn Future<Output = Option<(Io, ConnInfo)>> + Send>>;

/// Prepares an accepted stream before HTTP (the TLS handshake) for `client`: the
/// PROXY header, when required, has already been read from `stream`.
pub trait Handshake: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Negotiated + Unpin + Send + 'static;
    fn handshake(&self, stream: TcpStream, client: ClientAddr) -> Handshaken<Self::Io>;
}

/// The HTTP version a connection's client will speak, as far as its handshake
/// settled it before any HTTP byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// Not settled: told by the connection's first bytes (the HTTP/2 preface, or not).
    Sniff,
    Http1,
    Http2,
}

/// What a prepared stream says about the HTTP version its client will speak.
pub trait Negotiated {
    fn http_version(&self) -> HttpVersion;
}

impl Negotiated for TcpStream {
    /// Plain TCP: HTTP/1.1, or HTTP/2 by prior knowledge (h2c).
    fn http_version(&self) -> HttpVersion {
        HttpVersion::Sniff
    }
}

impl<Io> Negotiated for tokio_rustls::server::TlsStream<Io> {
    /// ALPN `h2` is HTTP/2; `http/1.1` or no ALPN at all is HTTP/1.1 (HTTP/2 over TLS
    /// is negotiated by ALPN only, RFC 9113 §3.2).
    fn http_version(&self) -> HttpVersion {
        match self.get_ref().1.alpn_protocol() {
            Some(b"h2") => HttpVersion::Http2,
            _ => HttpVersion::Http1,
        }
    }
}

/// Pending connections the kernel queues per listening socket.
pub const LISTEN_BACKLOG: i32 = 1024;

/// Bind `count` listening sockets on `addr`, every one with `SO_REUSEPORT` (and
/// `SO_REUSEADDR`), one per worker thread: each thread accepts on its own socket and
/// the kernel spreads new connections over them. The first socket settles the port
/// (for port 0, the kernel's choice); its siblings bind that same port. The sockets
/// are nonblocking, ready for `tokio::net::TcpListener::from_std` on the thread
/// that will accept on them.
///
/// Another socket already on `addr` makes this fail (`AddrInUse`), unless it too has
/// `SO_REUSEPORT` and belongs to the same user: that is how a second icpgate shares
/// the address during a rolling restart (docs/operations.md).
pub fn bind_per_worker(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_reuseport(addr)?;
    let settled = SocketAddr::new(addr.ip(), first.local_addr()?.port());
    let mut sockets = Vec::with_capacity(count);
    sockets.push(first);
    for _ in 1..count {
        sockets.push(bind_reuseport(settled)?);
    }
    Ok(sockets)
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// One listener.
pub struct Listener<H: Handshake, S: Serve = Gate> {
    pub tcp: TcpListener,
    /// The running config (limits, PROXY protocol) and the metrics.
    pub gate: Arc<Gate>,
    pub handshake: Arc<H>,
    /// What answers the requests: the gate itself, or the admin router.
    pub service: Arc<S>,
    pub plane: Plane,
    pub shutdown: watch::Receiver<bool>,
    /// Shared by every listener of the plane, so the limit is per plane and process.
    pub connections: Arc<Connections>,
}

impl<H: Handshake, S: Serve> Listener<H, S> {
    /// Accept until shutdown; accept errors (e.g. out of file descriptors) back off.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.changed() => break,
                accepted = self.tcp.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok((stream, peer)) => (stream, PeerAddr(peer)),
                Err(error) => {
                    tracing::warn!(%error, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            backoff = Duration::from_millis(10);
            let (limit, gauge) = match self.plane {
                Plane::Data => (
                    self.gate.current().config.limits.max_connections,
                    Some(&self.gate.state.metrics),
                ),
                Plane::Admin { max_connections } => (max_connections, None),
            };
            let Some(slot) = ConnectionSlot::acquire(&self.connections, limit, gauge) else {
                tracing::warn!(%peer, limit, plane = ?self.plane, "connection limit reached; closing");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let task = serve(
                stream,
                peer,
                Arc::clone(&self.gate),
                Arc::clone(&self.handshake),
                Arc::clone(&self.service),
                self.plane,
                self.connections.stop.subscribe(),
            );
            let connections = Arc::clone(&self.connections);
            tokio::spawn(async move { connections.serve_until_cut(task, slot).await });
        }
    }
}

/// The client behind `stream`: the TCP peer, or the PROXY header's source when the
/// header is required. None: the connection must be closed.
async fn client_address(
    stream: &mut TcpStream,
    peer: PeerAddr,
    listen: &crate::config::Listen,
    timeout: Duration,
) -> Option<ClientAddr> {
    if !listen.proxy_protocol {
        return Some(peer.as_client());
    }
    let allowed = &listen.proxy_protocol_from;
    if !allowed.is_empty() && !allowed.iter().any(|net| net.contains(&peer.ip())) {
        // Whatever it would send, it may not tell us who the client is.
        tracing::warn!(%peer, "connection from a peer outside listen.proxy_protocol_from; closing");
        return None;
    }
    match read_proxy_header(stream, timeout).await {
        Ok(client) => Some(client.map_or(peer.as_client(), ClientAddr)),
        Err(error) => {
            tracing::info!(%peer, %error, "PROXY protocol header required; closing");
            if matches!(error, ProxyProtocolError::Missing) {
                refuse_bare_connection(stream).await;
            }
            None
        }
    }
}

/// A client that skipped the load balancer gets a plain answer saying why, and a
/// clean close: FIN, then its unread bytes drained briefly, so it does not see a
/// reset instead of the answer.
async fn refuse_bare_connection(stream: &mut TcpStream) {
    const ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 53\r\nX-Icpgate-Reason: proxy_protocol_required\r\n\r\nthis listener requires a PROXY protocol header first\n";
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        stream.write_all(ANSWER).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
}

async fn serve<H: Handshake, S: Serve>(
    mut stream: TcpStream,
    peer: PeerAddr,
    gate: Arc<Gate>,
    handshake: Arc<H>,
    service: Arc<S>,
    plane: Plane,
    stop: watch::Receiver<Stop>,
) {
    let runtime = gate.current();
    let limits = runtime.config.limits.clone();
    let client = match plane {
        Plane::Data => {
            let listen = &runtime.config.listen;
            client_address(&mut stream, peer, listen, limits.header_read_timeout).await
        }
        Plane::Admin { .. } => Some(peer.as_client()),
    };
    drop((runtime, gate));
    let Some(client) = client else {
        return;
    };
    let Some((io, info)) = handshake.handshake(stream, client).await else {
        return;
    };
    let version = io.http_version();
    let info = Arc::new(info);
    let exchanges = Exchanges::new();
    let io = TokioIo::new(ClientDeadlines::new(
        io,
        Arc::clone(&exchanges),
        limits.header_read_timeout,
        limits.idle_timeout,
    ));
    let ending = Ending {
        peer,
        stop,
        idle: Arc::clone(&exchanges),
        resets: ResetRate::new(limits.h2_max_resets_per_second),
        limits: &limits,
    };
    let cancels = Arc::clone(&ending.resets);
    let service = service_fn(move |request| {
        let exchange = exchanges.begin();
        let cancel = cancels.guard();
        let served = Arc::clone(&service).call(request, Arc::clone(&info));
        async move {
            let response = served.await;
            cancel.answered();
            if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                exchange.connection().unbound();
            }
            Ok::<_, Infallible>(response.map(|body| ExchangeBody::new(body, exchange)))
        }
    });
    match version {
        HttpVersion::Http1 => {
            let connection = http1_builder(&limits)
                .serve_connection(io, service)
                .with_upgrades();
            ending.drive(connection, |c| c.graceful_shutdown()).await;
        }
        HttpVersion::Http2 => {
            let connection = http2_builder(&limits).serve_connection(io, service);
            ending.drive(connection, |c| c.graceful_shutdown()).await;
        }
        HttpVersion::Sniff => {
            let connection = sniffing_builder(&limits)
                .serve_connection_with_upgrades(io, service)
                .into_owned();
            ending.drive(connection, |c| c.graceful_shutdown()).await;
        }
    }
}

/// What ends a connection before its client does.
struct Ending<'a> {
    peer: PeerAddr,
    stop: watch::Receiver<Stop>,
    idle: Arc<Exchanges>,
    resets: Arc<ResetRate>,
    limits: &'a Limits,
}

impl Ending<'_> {
    /// Serve `connection` to its end. A graceful shutdown lets requests in flight
    /// finish and takes no new one (an idle HTTP/1 connection closes at once, HTTP/2
    /// gets a GOAWAY): asked for when the process drains, when the connection has
    /// idled for `limits.idle_timeout`, or when its client cancels too fast.
    async fn drive<C, E>(mut self, connection: C, graceful_shutdown: impl Fn(Pin<&mut C>))
    where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        tokio::pin!(connection);
        let idle_too_long = self.idle.idle_for(self.limits.idle_timeout);
        tokio::pin!(idle_too_long);
        let mut closing = false;
        let ended = loop {
            tokio::select! {
                ended = connection.as_mut() => break ended,
                _ = self.stop.wait_for(|stop| *stop >= Stop::Drain), if !closing => {
                    graceful_shutdown(connection.as_mut());
                    closing = true;
                }
                () = &mut idle_too_long, if !closing => {
                    graceful_shutdown(connection.as_mut());
                    closing = true;
                }
                () = self.resets.exceeded(), if !closing => {
                    tracing::warn!(peer = %self.peer, limit = self.limits.h2_max_resets_per_second, "client cancels requests too fast (rapid reset); closing");
                    graceful_shutdown(connection.as_mut());
                    closing = true;
                }
            }
        };
        if let Err(error) = ended {
            tracing::debug!(peer = %self.peer, error = %error, "connection ended with an error");
        }
    }
}

/// hyper's HTTP/1 server for one connection (ALPN said `http/1.1`), bounded by
/// `[limits]`. ClientDeadlines bounds request heads: hyper's own header timer
/// (off here: no timer is set) would also close idle keep-alive connections and
/// cost a timer per request.
fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
}

/// hyper's HTTP/2 server for one connection (ALPN said `h2`), bounded by `[limits]`.
fn http2_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.idle_timeout))
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.h2_max_resets_per_second as usize);
    builder
}

/// How long an HTTP/2 keep-alive ping may go unanswered.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// hyper-util's server that tells HTTP/2 (its preface) from HTTP/1 by the first
/// bytes, for plain listeners; the same settings as the two builders above.
fn sniffing_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.idle_timeout))
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.h2_max_resets_per_second as usize);
    builder
}

/// Plain TCP: the peer address is the client.
pub struct PlainHandshake;

impl Handshake for PlainHandshake {
    type Io = TcpStream;
    fn handshake(&self, stream: TcpStream, client: ClientAddr) -> Handshaken<TcpStream> {
        Box::pin(async move { Some((stream, ConnInfo { client, tls: None })) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new().expect("metrics"))
    }

    #[tokio::test]
    async fn cut_all_closes_a_connection_that_would_never_end() {
        let connections = Arc::new(Connections::default());
        let metrics = metrics();
        let slot = ConnectionSlot::acquire(&connections, 10, Some(&metrics)).expect("slot");
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let forever = async move {
            let _dropped_when_cut = dropped_tx;
            std::future::pending::<()>().await
        };
        let task = tokio::spawn({
            let connections = Arc::clone(&connections);
            async move { connections.serve_until_cut(forever, slot).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(connections.open(), 1);
        connections.cut_all(Duration::from_secs(5)).await;
        assert_eq!(connections.open(), 0, "cut_all returns once all are closed");
        assert!(
            dropped_rx.await.is_err(),
            "the connection's future was dropped"
        );
        task.await.expect("task ends");
        assert_eq!(metrics.connections_active.get(), 0);
    }

    #[tokio::test]
    async fn connections_accepted_after_a_cut_are_closed_at_once() {
        let connections = Arc::new(Connections::default());
        let metrics = metrics();
        connections.cut_all(Duration::from_secs(1)).await;
        let slot = ConnectionSlot::acquire(&connections, 10, Some(&metrics)).expect("slot");
        tokio::time::timeout(
            Duration::from_secs(5),
            connections.serve_until_cut(std::future::pending::<()>(), slot),
        )
        .await
        .expect("a late connection does not outlive the cut");
        assert_eq!(connections.open(), 0);
    }

    #[tokio::test]
    async fn the_limit_refuses_a_slot_and_gives_it_back() {
        let connections = Arc::new(Connections::default());
        let metrics = metrics();
        let first = ConnectionSlot::acquire(&connections, 1, Some(&metrics)).expect("first");
        assert!(ConnectionSlot::acquire(&connections, 1, Some(&metrics)).is_none());
        assert_eq!(connections.open(), 1, "a refused slot is not counted");
        drop(first);
        assert!(ConnectionSlot::acquire(&connections, 1, Some(&metrics)).is_some());
    }
}
