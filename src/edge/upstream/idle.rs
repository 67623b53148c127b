//! Idle upstream connections, one list per thread: taking one and putting it back
//! touch only this thread's `RefCell`, never a lock another thread could hold. A
//! connection is kept per (pool, SNI of a TLS pool); the most recently used is
//! taken first (the least likely to have been closed by its origin).
//!
//! Bounds: at most [`MAX_IDLE_PER_SERVER`] idle connections per server, pool and
//! SNI on each thread, and none older than [`IDLE_TIMEOUT`] is used. There are no
//! `[upstreams]` keys for these: the values are hyper-util's legacy client's, which
//! this replaces (60 s), and a per-thread count that covers a thread's share of a
//! few hundred concurrent keep-alive clients. Expired and closed connections are
//! swept every [`SWEEP_EVERY`] while connections are being put back; a thread that
//! stops forwarding keeps what it had (bounded as above) until it forwards again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use super::driven::UpstreamConn;

/// Idle connections kept per server of a pool (and per SNI), per thread.
pub const MAX_IDLE_PER_SERVER: usize = 64;

/// An idle connection older than this is closed rather than used.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a thread's idle lists are swept of expired and closed connections.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

thread_local! {
    static IDLE: RefCell<IdleLists> = RefCell::new(IdleLists::default());
}

/// Take an open, ready idle connection of `pool` for `sni`, if this thread has one.
pub(super) fn take(pool: u64, sni: Option<&str>) -> Option<Box<UpstreamConn>> {
    IDLE.try_with(|lists| lists.borrow_mut().take(pool, sni, Instant::now()))
        .ok()
        .flatten()
}

/// Keep a connection that may serve another request.
pub(super) fn put(conn: Box<UpstreamConn>) {
    // During the thread's own teardown the list is gone: the connection just closes.
    let _ = IDLE.try_with(|lists| lists.borrow_mut().put(conn, Instant::now()));
}

/// One thread's idle connections, grouped by a hash of (pool, SNI); each entry is
/// checked against its owner, so two owners sharing a hash never mix.
#[derive(Default)]
struct IdleLists {
    // Boxed on purpose: a connection moves between this list, a request and its
    // response body as a pointer, never as hyper's whole connection state.
    #[allow(clippy::vec_box)]
    lists: HashMap<u64, Vec<Box<UpstreamConn>>>,
    last_sweep: Option<Instant>,
}

fn list_key(pool: u64, sni: Option<&str>) -> u64 {
    let mut hasher = DefaultHasher::new();
    pool.hash(&mut hasher);
    sni.hash(&mut hasher);
    hasher.finish()
}

impl IdleLists {
    fn take(&mut self, pool: u64, sni: Option<&str>, now: Instant) -> Option<Box<UpstreamConn>> {
        let list = self.lists.get_mut(&list_key(pool, sni))?;
        while let Some(index) = list.iter().rposition(|c| c.owner.is(pool, sni)) {
            let mut conn = list.swap_remove(index);
            if now.duration_since(conn.idle_since) < IDLE_TIMEOUT && conn.is_reusable() {
                return Some(conn);
            }
            // Expired, or closed by its origin: dropped (closed) here.
        }
        None
    }

    fn put(&mut self, mut conn: Box<UpstreamConn>, now: Instant) {
        self.sweep(now);
        let key = list_key(conn.owner.pool, conn.owner.sni.as_deref());
        let list = self.lists.entry(key).or_default();
        // Counting only when the list could be over the bound keeps the usual put
        // O(1); a connection over it is closed.
        if list.len() >= MAX_IDLE_PER_SERVER {
            let same_server = list
                .iter()
                .filter(|c| c.server == conn.server && c.owner == conn.owner)
                .count();
            if same_server >= MAX_IDLE_PER_SERVER {
                return;
            }
        }
        conn.idle_since = now;
        list.push(conn);
    }

    /// Close expired connections and those whose origin closed them, at most every
    /// [`SWEEP_EVERY`]; drops emptied lists (a reloaded pool's, for example).
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.duration_since(last) < SWEEP_EVERY)
        {
            return;
        }
        self.last_sweep = Some(now);
        for list in self.lists.values_mut() {
            list.retain_mut(|c| now.duration_since(c.idle_since) < IDLE_TIMEOUT && c.is_reusable());
        }
        self.lists.retain(|_, list| !list.is_empty());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lists.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::upstream::driven::{Owner, UpstreamConn};
    use hyper_util::rt::TokioIo;
    use tokio::net::{TcpListener, TcpStream};

    use crate::edge::upstream::connect::UpstreamStream;

    /// An open connection to a listener that accepts and then just holds the socket;
    /// the accepted end is returned so the test decides when the origin closes.
    async fn open_conn(
        listener: &TcpListener,
        pool: u64,
        sni: Option<&str>,
        server: usize,
    ) -> (Box<UpstreamConn>, TcpStream) {
        let address = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        let io = TokioIo::new(UpstreamStream::Plain(client.expect("connect")));
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("handshake");
        let owner = Owner {
            pool,
            sni: sni.map(Into::into),
        };
        let mut conn = UpstreamConn::new(sender, connection, owner, server);
        // A fresh connection's sender becomes ready once its connection is polled.
        conn.is_reusable();
        (conn, accepted.expect("accept").0)
    }

    #[tokio::test]
    async fn a_connection_is_taken_only_by_its_pool_and_sni() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut lists = IdleLists::default();
        let now = Instant::now();
        let (conn, _held) = open_conn(&listener, 1, Some("a.example"), 0).await;
        lists.put(conn, now);
        let cases = [
            (2, Some("a.example"), false), // another pool (or a reloaded one)
            (1, Some("b.example"), false), // another SNI
            (1, None, false),              // not the TLS pool's key
            (1, Some("a.example"), true),
        ];
        for (pool, sni, found) in cases {
            assert_eq!(
                lists.take(pool, sni, now).is_some(),
                found,
                "{pool} {sni:?}"
            );
        }
        assert_eq!(lists.len(), 0);
    }

    #[tokio::test]
    async fn expired_and_origin_closed_connections_are_not_taken() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut lists = IdleLists::default();
        let now = Instant::now();
        let (conn, _held) = open_conn(&listener, 1, None, 0).await;
        lists.put(conn, now);
        assert!(lists.take(1, None, now + IDLE_TIMEOUT).is_none(), "expired");

        let (conn, origin_end) = open_conn(&listener, 1, None, 0).await;
        lists.put(conn, now);
        drop(origin_end);
        // The close reaches the idle socket; taking it reads the EOF and drops it.
        let mut taken = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            taken = lists.take(1, None, now);
            if taken.is_none() {
                break;
            }
            lists.put(taken.take().expect("taken"), now);
        }
        assert!(
            taken.is_none(),
            "a connection its origin closed is not reused"
        );
        assert_eq!(lists.len(), 0);
    }

    #[tokio::test]
    async fn idle_connections_are_bounded_per_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut lists = IdleLists::default();
        let now = Instant::now();
        let mut held = Vec::new();
        for i in 0..MAX_IDLE_PER_SERVER + 3 {
            let (conn, origin_end) = open_conn(&listener, 1, None, 0).await;
            held.push(origin_end);
            lists.put(conn, now);
            assert_eq!(lists.len(), (i + 1).min(MAX_IDLE_PER_SERVER));
        }
        // Another server of the same pool has its own allowance.
        let (conn, _origin_end) = open_conn(&listener, 1, None, 1).await;
        lists.put(conn, now);
        assert_eq!(lists.len(), MAX_IDLE_PER_SERVER + 1);
    }
}
