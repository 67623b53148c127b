//! Deadlines of one client connection: for its request heads, for a client that
//! stops reading its response, and for an idle connection.
//!
//! hyper's own `header_read_timeout` cannot tell a slow request head from an idle
//! keep-alive connection: it starts its timer as soon as a connection waits for the
//! next head, so an idle keep-alive connection would be closed after the (short) head
//! timeout, and a load balancer keeping its connections longer would race that close
//! and answer its client 502. Here the connection's phase decides the read deadline:
//!
//! - `Head`: from the connection's start, or from the first byte after an idle
//!   spell, until hyper hands the request to the service: `header_read_timeout`.
//!   When it passes, reads fail and the connection is cut (slow clients).
//! - `Busy`: from a request to the end of its response body: no read deadline
//!   (`upstream_timeout` bounds the exchange, `max_body_bytes` the upload).
//! - `Idle`: no request in flight. No read deadline either: [`Exchanges::idle_for`]
//!   tells the connection's task when it has been idle for `idle_timeout`, and the
//!   task closes it gracefully (HTTP/2 with a GOAWAY).
//! - `Unbounded`: HTTP/2 (known by its preface; streams are not heads on the wire)
//!   and connections upgraded by a 101 (WebSocket tunnels).
//!
//! A pipelined request whose head was already partly read while the previous one was
//! busy has no head deadline for the rest of its head.
//!
//! The head deadline is one timer per connection, armed lazily: a new head only
//! notes when it is due, and the timer is moved there when it fires early (it was
//! set for an earlier head). A keep-alive connection re-arms it at most once per
//! `header_read_timeout`, not once per request.
//!
//! Writes: a client that stops reading (its window stays full) for `idle_timeout`
//! is cut, as nginx's `send_timeout` does, so it cannot hold a connection and an
//! upstream response open for ever. The timer runs only while a write waits.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::edge::proxy_body::{BoxError, ProxyBody};

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What one connection's service tells its reads and its idle timer: requests in
/// flight, the end of the last one, and whether the connection left HTTP/1
/// request/response turns.
///
/// Nothing here wakes anyone: the reads look at it on every poll, and the idle timer
/// when it fires, so a request costs a few atomic operations and no task wake-up.
pub struct Exchanges {
    in_flight: AtomicUsize,
    /// Bumped each time the last exchange in flight ends: an idle spell starts.
    idle_since: AtomicU64,
    unbounded: AtomicBool,
    /// A request head has begun arriving after an idle spell: not idle any more.
    head_arriving: AtomicBool,
    /// When the connection was last active, in milliseconds since `born`.
    last_active_ms: AtomicU64,
    born: Instant,
}

impl Exchanges {
    pub fn new() -> Arc<Exchanges> {
        Arc::new(Exchanges {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            unbounded: AtomicBool::new(false),
            head_arriving: AtomicBool::new(false),
            last_active_ms: AtomicU64::new(0),
            born: Instant::now(),
        })
    }

    fn touch_at(&self, now: Instant) {
        let ms =
            u64::try_from(now.saturating_duration_since(self.born).as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Release);
    }

    fn last_active(&self) -> Instant {
        self.born + Duration::from_millis(self.last_active_ms.load(Ordering::Acquire))
    }

    /// A request reached the service; it is in flight until the returned guard
    /// (or the response body it is moved into) is dropped.
    pub fn begin(self: &Arc<Self>) -> Exchange {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_arriving.store(false, Ordering::Release);
        Exchange {
            exchanges: Arc::clone(self),
        }
    }

    /// No more deadlines for this connection (it was upgraded).
    pub fn unbound(&self) {
        self.unbounded.store(true, Ordering::Release);
    }

    /// The first byte of a request after an idle spell arrived: the idle countdown
    /// stops (the head deadline takes over), so an idle close never crosses a
    /// request already on its way in.
    fn head_started(&self, now: Instant) {
        self.head_arriving.store(true, Ordering::Release);
        self.touch_at(now);
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && !self.head_arriving.load(Ordering::Acquire)
    }

    fn end(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.touch_at(Instant::now());
            self.idle_since.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Resolves once no exchange has been in flight, nor a head arriving, for
    /// `timeout` (counted from the end of the last one, or from now).
    pub async fn idle_for(&self, timeout: Duration) {
        let mut wake_at = self.last_active() + timeout;
        loop {
            tokio::time::sleep_until(wake_at).await;
            let now = Instant::now();
            if !self.is_idle() {
                // Busy now: it cannot have been idle for `timeout` before `now + timeout`.
                wake_at = now + timeout;
                continue;
            }
            let due = self.last_active() + timeout;
            if due <= now {
                return;
            }
            wake_at = due;
        }
    }
}

/// One request in flight: from the service call to the end of its response body.
pub struct Exchange {
    exchanges: Arc<Exchanges>,
}

impl Exchange {
    /// The connection this exchange belongs to.
    pub fn connection(&self) -> &Exchanges {
        &self.exchanges
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.exchanges.end();
    }
}

/// A response body that ends its exchange when it ends or is dropped.
pub struct ExchangeBody {
    inner: ProxyBody,
    exchange: Option<Exchange>,
}

impl ExchangeBody {
    pub fn new(inner: ProxyBody, exchange: Exchange) -> ExchangeBody {
        ExchangeBody {
            inner,
            exchange: Some(exchange),
        }
    }
}

impl Body for ExchangeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.exchange = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Busy,
    Idle,
    Unbounded,
}

/// The client side of a connection, with the deadlines of its phase (module doc).
pub struct ClientDeadlines<T> {
    inner: T,
    exchanges: Arc<Exchanges>,
    header_read_timeout: Duration,
    write_stall_timeout: Duration,
    /// Armed when a write first waits, disarmed when one makes progress.
    write_stalled: Option<Pin<Box<Sleep>>>,
    phase: Phase,
    idle_seen: u64,
    /// The connection's first bytes, until they tell HTTP/2 from HTTP/1.
    opening: Vec<u8>,
    /// When the head being read is due.
    head_due: Instant,
    /// Fires at `head_due` or earlier (then it is moved on: see `head_overdue`).
    deadline: Pin<Box<Sleep>>,
}

impl<T> ClientDeadlines<T> {
    /// Starts in `Head`: the first request is due within `header_read_timeout`.
    /// A write that cannot proceed for `write_stall_timeout` fails.
    pub fn new(
        inner: T,
        exchanges: Arc<Exchanges>,
        header_read_timeout: Duration,
        write_stall_timeout: Duration,
    ) -> ClientDeadlines<T> {
        let head_due = Instant::now() + header_read_timeout;
        ClientDeadlines {
            inner,
            exchanges,
            header_read_timeout,
            write_stall_timeout,
            write_stalled: None,
            phase: Phase::Head,
            idle_seen: 0,
            opening: Vec::with_capacity(H2_PREFACE.len()),
            head_due,
            deadline: Box::pin(tokio::time::sleep_until(head_due)),
        }
    }

    /// Bring the phase up to date with what the service reported.
    fn follow_exchanges(&mut self) {
        if self.phase == Phase::Unbounded {
            return;
        }
        if self.exchanges.unbounded.load(Ordering::Acquire) {
            self.phase = Phase::Unbounded;
        } else if self.exchanges.in_flight.load(Ordering::Acquire) > 0 {
            self.phase = Phase::Busy;
        } else {
            let idle_since = self.exchanges.idle_since.load(Ordering::Acquire);
            if idle_since != self.idle_seen {
                self.idle_seen = idle_since;
                self.phase = Phase::Idle;
            }
        }
    }

    /// Pass a write's outcome through, failing it once the client has not taken a
    /// byte for `write_stall_timeout`.
    fn bound_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.write_stalled = None;
            return polled;
        }
        let timeout = self.write_stall_timeout;
        let stalled = self
            .write_stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no response bytes within limits.idle_timeout",
            )));
        }
        Poll::Pending
    }

    /// Account for bytes just read: the opening decides HTTP/2, and the first byte
    /// after an idle spell starts a head.
    fn received(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.opening.len() < H2_PREFACE.len() {
            let take = bytes.len().min(H2_PREFACE.len() - self.opening.len());
            self.opening.extend_from_slice(&bytes[..take]);
            if self.opening.as_slice() == H2_PREFACE.as_slice() {
                self.phase = Phase::Unbounded;
                return;
            }
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Head;
            let now = Instant::now();
            self.head_due = now + self.header_read_timeout;
            self.exchanges.head_started(now);
        }
    }

    /// Whether the head being read is past due. The timer stays armed for this
    /// task, and is moved to `head_due` only when it fires before it.
    fn head_overdue(&mut self, cx: &mut Context<'_>) -> bool {
        while self.deadline.as_mut().poll(cx).is_ready() {
            if self.deadline.deadline() >= self.head_due {
                return true;
            }
            let due = self.head_due;
            self.deadline.as_mut().reset(due);
        }
        false
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientDeadlines<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.follow_exchanges();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.received(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                if this.phase == Phase::Head && this.head_overdue(cx) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request head not received within limits.header_read_timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientDeadlines<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        this.bound_write(cx, polled)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.bound_write(cx, polled)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.bound_write(cx, polled)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const HEAD: Duration = Duration::from_millis(150);
    const IDLE: Duration = Duration::from_millis(400);

    fn connection() -> (DuplexStream, ClientDeadlines<DuplexStream>, Arc<Exchanges>) {
        let (client, server) = tokio::io::duplex(4096);
        let exchanges = Exchanges::new();
        let server = ClientDeadlines::new(server, Arc::clone(&exchanges), HEAD, IDLE);
        (client, server, exchanges)
    }

    /// What one read gives within `wait`: bytes, a clean close, an error, or nothing.
    #[derive(Debug, PartialEq)]
    enum Read {
        Bytes(Vec<u8>),
        Closed,
        TimedOut,
        Nothing,
    }

    async fn read(server: &mut ClientDeadlines<DuplexStream>, wait: Duration) -> Read {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(wait, server.read(&mut buf)).await {
            Err(_) => Read::Nothing,
            Ok(Ok(0)) => Read::Closed,
            Ok(Ok(n)) => Read::Bytes(buf[..n].to_vec()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => Read::TimedOut,
            Ok(Err(e)) => panic!("unexpected error {e}"),
        }
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_cut_after_the_head_timeout() {
        let (_client, mut server, _) = connection();
        assert_eq!(read(&mut server, HEAD * 4).await, Read::TimedOut);
    }

    #[tokio::test]
    async fn a_request_in_flight_has_no_read_deadline() {
        let (mut client, mut server, exchanges) = connection();
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        assert!(matches!(read(&mut server, HEAD).await, Read::Bytes(_)));
        let exchange = exchanges.begin();
        assert_eq!(read(&mut server, IDLE * 2).await, Read::Nothing);
        drop(exchange);
        // Idle now: closing an idle connection is its task's job (`idle_for`), so
        // reads just wait.
        assert_eq!(read(&mut server, IDLE).await, Read::Nothing);
    }

    #[tokio::test]
    async fn a_head_on_its_way_in_is_not_idle() {
        let (mut client, mut server, exchanges) = connection();
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        assert!(matches!(read(&mut server, HEAD).await, Read::Bytes(_)));
        drop(exchanges.begin());
        assert!(exchanges.is_idle());
        client.write_all(b"GET /next").await.expect("write");
        assert!(matches!(read(&mut server, HEAD).await, Read::Bytes(_)));
        assert!(!exchanges.is_idle(), "bytes of a new request arrived");
        drop(exchanges.begin());
        assert!(exchanges.is_idle(), "its exchange ended");
    }

    #[tokio::test]
    async fn idle_for_counts_from_the_end_of_the_last_exchange() {
        let exchanges = Exchanges::new();
        let started = Instant::now();
        let exchange = exchanges.begin();
        let idle = tokio::spawn({
            let exchanges = Arc::clone(&exchanges);
            async move { exchanges.idle_for(IDLE).await }
        });
        tokio::time::sleep(IDLE * 2).await;
        assert!(!idle.is_finished(), "idle while a request was in flight");
        drop(exchange);
        let ended = Instant::now();
        idle.await.expect("idle_for resolves");
        assert!(ended.elapsed() >= IDLE - Duration::from_millis(20));
        assert!(started.elapsed() >= IDLE * 3 - Duration::from_millis(20));
    }

    #[tokio::test]
    async fn the_first_byte_after_an_idle_spell_starts_a_head_deadline() {
        let (mut client, mut server, exchanges) = connection();
        client.write_all(b"GET /").await.expect("write");
        assert!(matches!(read(&mut server, HEAD).await, Read::Bytes(_)));
        drop(exchanges.begin());
        assert_eq!(
            read(&mut server, HEAD * 2).await,
            Read::Nothing,
            "idle: no head due"
        );
        client.write_all(b"GET /next").await.expect("write");
        assert!(matches!(read(&mut server, HEAD).await, Read::Bytes(_)));
        assert_eq!(read(&mut server, HEAD * 4).await, Read::TimedOut);
    }

    #[tokio::test]
    async fn a_head_starting_before_the_timer_fires_gets_its_whole_timeout() {
        // Longer than HEAD, so the margins hold on a loaded machine.
        let head = Duration::from_millis(600);
        let (mut client, server) = tokio::io::duplex(4096);
        let exchanges = Exchanges::new();
        let mut server = ClientDeadlines::new(server, Arc::clone(&exchanges), head, IDLE * 10);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        assert!(matches!(read(&mut server, head).await, Read::Bytes(_)));
        drop(exchanges.begin());
        tokio::time::sleep(head / 2).await;
        // Due at 1.5 × head; the timer was armed for the first head, due at 1 × head.
        client.write_all(b"GET /next").await.expect("write");
        assert!(matches!(read(&mut server, head).await, Read::Bytes(_)));
        assert_eq!(
            read(&mut server, head * 3 / 4).await,
            Read::Nothing,
            "the first head's timer passed; this head is not due yet"
        );
        assert_eq!(read(&mut server, head * 4).await, Read::TimedOut);
    }

    #[tokio::test]
    async fn http2_and_upgraded_connections_have_no_read_deadline() {
        let (mut client, mut server, _) = connection();
        client.write_all(H2_PREFACE).await.expect("write");
        assert!(matches!(read(&mut server, HEAD).await, Read::Bytes(_)));
        assert_eq!(read(&mut server, IDLE * 2).await, Read::Nothing);

        let (mut client, mut server, exchanges) = connection();
        client
            .write_all(b"GET /ws HTTP/1.1\r\n")
            .await
            .expect("write");
        assert!(matches!(read(&mut server, HEAD).await, Read::Bytes(_)));
        let exchange = exchanges.begin();
        exchange.connection().unbound();
        drop(exchange);
        assert_eq!(read(&mut server, IDLE * 2).await, Read::Nothing);
    }

    #[tokio::test]
    async fn a_write_the_client_never_takes_fails_after_the_stall_timeout() {
        let (_client, mut server, _) = connection();
        let big = vec![b'x'; 64 * 1024];
        let started = Instant::now();
        let written = tokio::time::timeout(IDLE * 4, server.write_all(&big)).await;
        let error = written
            .expect("cut in time")
            .expect_err("the stalled write fails");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= IDLE - Duration::from_millis(20));
    }

    #[tokio::test]
    async fn a_client_reading_slowly_but_steadily_is_not_cut() {
        let (mut client, mut server, _) = connection();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut total = 0;
            while total < 24 * 1024 {
                // Each pause is shorter than the stall timeout; all of them are not.
                tokio::time::sleep(IDLE / 4).await;
                total += client.read(&mut buf).await.expect("read");
            }
        });
        let big = vec![b'x'; 24 * 1024];
        tokio::time::timeout(IDLE * 20, server.write_all(&big))
            .await
            .expect("finished")
            .expect("a steady reader keeps the writes going");
        reader.await.expect("reader");
    }

    #[tokio::test]
    async fn a_response_body_ends_its_exchange_when_it_ends() {
        let exchanges = Exchanges::new();
        let mut body = ExchangeBody::new(crate::edge::proxy_body::full("page"), exchanges.begin());
        assert_eq!(exchanges.in_flight.load(Ordering::Acquire), 1);
        let mut frames = 0;
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            frame.expect("frame");
            frames += 1;
        }
        assert_eq!(frames, 1);
        assert_eq!(exchanges.in_flight.load(Ordering::Acquire), 0);
        assert_eq!(exchanges.idle_since.load(Ordering::Acquire), 1);
        drop(body);
        assert_eq!(
            exchanges.idle_since.load(Ordering::Acquire),
            1,
            "ended once"
        );
    }
}
