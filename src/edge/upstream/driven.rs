//! One HTTP/1.1 connection to an origin, driven by the task that uses it: the
//! request's task polls it while waiting for the response head, and the response
//! body polls it while the client reads, so no task of its own is spawned and the
//! exchange never hops threads. Once the body is read to the end and hyper says
//! the sender is ready for the next request, the connection goes back to this
//! thread's idle list ([`super::idle`]); any other ending (an error, a client that
//! went away mid-body, a `Connection: close`) closes it.
//!
//! While idle, nobody polls it: a close by the origin is seen when the connection
//! is next taken (its read readiness is set, so that poll reads the EOF), and a
//! request queued on a connection that closed before writing it comes back unsent
//! (`try_send_request`) to be sent on another.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;

use super::connect::UpstreamStream;
use super::idle;
use crate::edge::proxy_body::ProxyBody;

type Io = TokioIo<UpstreamStream>;

/// Which idle list a connection belongs to: its pool (a reloaded pool is another)
/// and, for TLS pools, the SNI it was opened for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Owner {
    /// [`super::Pool`]'s generation.
    pub pool: u64,
    pub sni: Option<Box<str>>,
}

impl Owner {
    pub fn is(&self, pool: u64, sni: Option<&str>) -> bool {
        self.pool == pool && self.sni.as_deref() == sni
    }
}

/// A sender and the connection it sends on.
pub(super) struct UpstreamConn {
    sender: SendRequest<ProxyBody>,
    /// None once the connection future has completed (closed, or failed).
    connection: Option<Connection<Io, ProxyBody>>,
    pub owner: Owner,
    /// The pool's server it is connected to (idle connections are bounded per server).
    pub server: usize,
    /// When it was last put back idle.
    pub idle_since: Instant,
}

impl UpstreamConn {
    pub fn new(
        sender: SendRequest<ProxyBody>,
        connection: Connection<Io, ProxyBody>,
        owner: Owner,
        server: usize,
    ) -> Box<UpstreamConn> {
        // Boxed once per connection and moved as a pointer from then on: inline,
        // hyper's connection state would make every request's future (block pages
        // included) that much larger to build and move.
        Box::new(UpstreamConn {
            sender,
            connection: Some(connection),
            owner,
            server,
            idle_since: Instant::now(),
        })
    }

    /// Let the connection read and write what it can; false once it is closed.
    /// The connection is dropped as soon as it ends, which hands a request still
    /// queued on it back to its sender unsent.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(connection) = self.connection.as_mut() else {
            return false;
        };
        match Pin::new(connection).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(result) => {
                if let Err(error) = result {
                    tracing::debug!(%error, "upstream connection ended");
                }
                self.connection = None;
                false
            }
        }
    }

    /// Whether a next request may be sent now: still open (one poll, which reads an
    /// origin's close if it came) and hyper's sender ready.
    pub fn is_reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.drive(&mut cx) && self.sender.is_ready()
    }

    /// Send one request and drive the connection until its response head arrives.
    /// A request the connection closed before writing comes back in the error.
    pub async fn exchange(
        &mut self,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<ProxyBody>>> {
        let mut response = std::pin::pin!(self.sender.try_send_request(request));
        std::future::poll_fn(|cx| {
            // The connection first: it writes the request and reads the head that
            // completes `response` (waking this same task).
            self.drive(cx);
            response.as_mut().poll(cx)
        })
        .await
    }
}

/// A response body from an origin. For a pooled connection it drives the
/// connection while it is read, and puts the connection back idle once read to the
/// end (in `poll_frame`, or on drop when hyper did not poll an empty body).
pub struct UpstreamBody {
    incoming: Incoming,
    conn: Option<Box<UpstreamConn>>,
    /// `poll_frame` returned the end.
    ended: bool,
}

impl UpstreamBody {
    pub(super) fn driven(incoming: Incoming, conn: Box<UpstreamConn>) -> UpstreamBody {
        UpstreamBody {
            incoming,
            conn: Some(conn),
            ended: false,
        }
    }

    /// A body whose connection runs in a task of its own (a protocol switch).
    pub(super) fn spawned(incoming: Incoming) -> UpstreamBody {
        UpstreamBody {
            incoming,
            conn: None,
            ended: false,
        }
    }

    /// The body was read to the end: the connection may serve another request.
    fn release(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            if conn.is_reusable() {
                idle::put(conn);
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(conn) = this.conn.as_mut() {
            conn.drive(cx);
        }
        let frame = Pin::new(&mut this.incoming).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => {
                this.ended = true;
                this.release();
            }
            Poll::Ready(Some(Ok(_))) if this.incoming.is_end_stream() => this.release(),
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper drops a body that says it has ended (no body, or all of its
        // content-length read) without polling it again; the connection is then
        // ready for the next request. Any other body dropped early cuts it.
        if self.is_end_stream() {
            self.release();
        }
    }
}
