//! Accept loops: one per data-plane listener. Each connection is counted against
//! `limits.max_connections` (over the limit it is closed at once), served by
//! hyper-util's auto builder (HTTP/1.1, and HTTP/2 by prior knowledge or ALPN), and
//! watched by the one graceful-shutdown handle so SIGTERM drains it.
//!
//! With `listen.proxy_protocol = true` every connection must open with a PROXY v1 or
//! v2 header (read within `limits.header_read_timeout`, before TLS or HTTP); the
//! address it carries becomes the client (`ConnInfo.client`: X-Forwarded-For, logs).
//! A connection without one is closed without an answer.
//!
//! Slow clients: hyper's `header_read_timeout` bounds an HTTP/1 request head, and
//! `FirstBytesDeadline` bounds the bytes hyper needs before it knows the protocol.
//! hyper (1.x) starts the head timer as soon as an HTTP/1 connection is idle, so an
//! idle keep-alive connection is also closed after `header_read_timeout`; HTTP/2
//! connections are pinged every `limits.idle_timeout` and closed when a ping goes
//! unanswered.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::metrics::Metrics;
use crate::proxy::{ConnInfo, Gate};
use crate::proxy_protocol::{read_proxy_header, ProxyProtocolError};

/// Bytes of the HTTP/2 connection preface hyper reads to tell h2 from h1.
const PROTOCOL_SNIFF_BYTES: usize = 24;

/// Counts open connections for the limit and the `icpgate_connections_active` gauge.
struct ConnectionSlot {
    active: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl ConnectionSlot {
    fn acquire(
        active: &Arc<AtomicUsize>,
        limit: usize,
        metrics: &Arc<Metrics>,
    ) -> Option<ConnectionSlot> {
        let previous = active.fetch_add(1, Ordering::AcqRel);
        if previous >= limit {
            active.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        metrics.connections_active.inc();
        Some(ConnectionSlot {
            active: Arc::clone(active),
            metrics: Arc::clone(metrics),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
        self.metrics.connections_active.dec();
    }
}

/// A prepared connection and what it revealed about the client, or None to drop it.
pub type Handshaken<Io> = Pin<Box<dyn Future<Output = Option<(Io, ConnInfo)>> + Send>>;

/// Prepares an accepted stream before HTTP (the TLS handshake). `peer` is the client:
/// the PROXY header, when required, has already been read from `stream`.
pub trait Handshake: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn handshake(&self, stream: TcpStream, peer: SocketAddr) -> Handshaken<Self::Io>;
}

/// One data-plane listener.
pub struct Listener<H: Handshake> {
    pub tcp: TcpListener,
    pub gate: Arc<Gate>,
    pub handshake: Arc<H>,
    /// The one drain handle; each connection is watched by it.
    pub graceful: Arc<GracefulShutdown>,
    pub shutdown: watch::Receiver<bool>,
    /// Shared by every listener so the limit is per process.
    pub active: Arc<AtomicUsize>,
}

impl<H: Handshake> Listener<H> {
    /// Accept until shutdown; accept errors (e.g. out of file descriptors) back off.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.changed() => break,
                accepted = self.tcp.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            backoff = Duration::from_millis(10);
            let runtime = self.gate.current();
            let limit = runtime.config.limits.max_connections;
            let Some(slot) = ConnectionSlot::acquire(&self.active, limit, &self.gate.metrics)
            else {
                tracing::warn!(%peer, limit, "connection limit reached; closing");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let task = serve(
                stream,
                peer,
                Arc::clone(&self.gate),
                Arc::clone(&self.handshake),
                self.graceful.watcher(),
            );
            tokio::spawn(async move {
                task.await;
                drop(slot);
            });
        }
    }
}

/// The client behind `stream`: the TCP peer, or the PROXY header's source when the
/// header is required. None: the connection must be closed.
async fn client_address(
    stream: &mut TcpStream,
    peer: SocketAddr,
    proxy_protocol: bool,
    timeout: Duration,
) -> Option<SocketAddr> {
    if !proxy_protocol {
        return Some(peer);
    }
    match read_proxy_header(stream, timeout).await {
        Ok(client) => Some(client.unwrap_or(peer)),
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

async fn serve<H: Handshake>(
    mut stream: TcpStream,
    peer: SocketAddr,
    gate: Arc<Gate>,
    handshake: Arc<H>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let runtime = gate.current();
    let limits = runtime.config.limits.clone();
    let proxy_protocol = runtime.config.listen.proxy_protocol;
    drop(runtime);
    let Some(client) = client_address(
        &mut stream,
        peer,
        proxy_protocol,
        limits.header_read_timeout,
    )
    .await
    else {
        return;
    };
    let Some((io, info)) = handshake.handshake(stream, client).await else {
        return;
    };
    let info = Arc::new(info);
    let io = FirstBytesDeadline::new(io, limits.header_read_timeout);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.idle_timeout))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let service = service_fn(move |request| Arc::clone(&gate).serve(request, Arc::clone(&info)));
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %error, "connection ended with an error");
    }
}

/// Fails reads when the first bytes of a connection do not arrive in time, so a
/// client cannot hold a slot before hyper knows which protocol it speaks.
pub struct FirstBytesDeadline<T> {
    inner: T,
    seen: usize,
    deadline: Pin<Box<Sleep>>,
}

impl<T> FirstBytesDeadline<T> {
    pub fn new(inner: T, within: Duration) -> FirstBytesDeadline<T> {
        FirstBytesDeadline {
            inner,
            seen: 0,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstBytesDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.seen = this.seen.saturating_add(buf.filled().len() - before);
                Poll::Ready(result)
            }
            Poll::Pending
                if this.seen < PROTOCOL_SNIFF_BYTES
                    && this.deadline.as_mut().poll(cx).is_ready() =>
            {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client sent too little too slowly",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstBytesDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Plain TCP: the peer address is the client.
pub struct PlainHandshake;

impl Handshake for PlainHandshake {
    type Io = TcpStream;
    fn handshake(&self, stream: TcpStream, peer: SocketAddr) -> Handshaken<TcpStream> {
        Box::pin(async move {
            Some((
                stream,
                ConnInfo {
                    client: peer,
                    tls: None,
                },
            ))
        })
    }
}
