//! The data plane's threads: `limits.worker_threads` (default: one per CPU), each a
//! tokio current-thread runtime accepting on its own `SO_REUSEPORT` socket of every
//! data-plane address. A connection, and every task it spawns (HTTP/2 streams,
//! upstream connections), stays on the thread whose socket accepted it: no work
//! stealing, no wake-ups across threads on the request path. What the threads share
//! is behind `Arc`/`ArcSwap` (the gate, its config and state, the connection set and
//! its limit, the metrics). The control side (admin API, registry, change feed,
//! ACME, background tasks) stays on the process's multi-thread runtime.
//!
//! A stop has three steps, driven by `Running::shutdown`: the accept loops end
//! ([`Workers::stopped_accepting`]), the connections drain or are cut (through the
//! shared `Connections`, while every runtime still runs them), then the runtimes are
//! released and dropped ([`Workers::release`]). Dropping `Workers` releases them
//! too, without a drain.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// An accept loop, built on the thread that runs it from that thread's socket.
pub type Accept = Box<dyn FnOnce(TcpListener) -> AcceptLoop + Send>;
pub type AcceptLoop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How long a released worker waits for its blocking tasks (SQLite calls) before
/// its runtime is dropped regardless.
const RUNTIME_SHUTDOWN_BOUND: Duration = Duration::from_secs(1);

/// What each worker thread is given: one listening socket per data-plane address
/// and the accept loop to run on it.
pub struct WorkerPlan {
    listeners: Vec<Vec<(std::net::TcpListener, Accept)>>,
}

impl WorkerPlan {
    pub fn new(workers: usize) -> WorkerPlan {
        WorkerPlan {
            listeners: (0..workers).map(|_| Vec::new()).collect(),
        }
    }

    pub fn workers(&self) -> usize {
        self.listeners.len()
    }

    /// One address: `sockets[i]` goes to worker `i`, served by `accept()`'s loop.
    pub fn add(&mut self, sockets: Vec<std::net::TcpListener>, accept: impl Fn() -> Accept) {
        debug_assert_eq!(sockets.len(), self.listeners.len());
        for (worker, socket) in self.listeners.iter_mut().zip(sockets) {
            worker.push((socket, accept()));
        }
    }
}

/// The running worker threads.
pub struct Workers {
    /// One per worker, told when its accept loops have all ended.
    accepting: Vec<oneshot::Receiver<()>>,
    /// One per worker, told once its runtime (and every connection on it) is gone.
    exited: Vec<oneshot::Receiver<()>>,
    /// `true` (or dropped): the workers may drop their runtimes.
    release: watch::Sender<bool>,
}

impl Workers {
    /// Build every worker's runtime, register its sockets with it (an error here
    /// fails start, before any thread runs), then start the threads.
    pub fn start(plan: WorkerPlan) -> io::Result<Workers> {
        let mut prepared = Vec::with_capacity(plan.workers());
        for (index, listeners) in plan.listeners.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let loops = {
                let _entered = runtime.enter();
                listeners
                    .into_iter()
                    .map(|(socket, accept)| TcpListener::from_std(socket).map(accept))
                    .collect::<io::Result<Vec<AcceptLoop>>>()?
            };
            prepared.push((index, runtime, loops));
        }
        let (release, released) = watch::channel(false);
        let mut workers = Workers {
            accepting: Vec::new(),
            exited: Vec::new(),
            release,
        };
        for (index, runtime, loops) in prepared {
            let (accepting_tx, accepting_rx) = oneshot::channel();
            let (exited_tx, exited_rx) = oneshot::channel();
            let mut released = released.clone();
            std::thread::Builder::new()
                .name(format!("icpgate-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let loops: Vec<_> = loops.into_iter().map(tokio::spawn).collect();
                        for accept_loop in loops {
                            let _ = accept_loop.await;
                        }
                        let _ = accepting_tx.send(());
                        // The connections go on until the stop has drained or cut
                        // them; a dropped sender releases too.
                        let _ = released.wait_for(|released| *released).await;
                    });
                    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_BOUND);
                    let _ = exited_tx.send(());
                })?;
            workers.accepting.push(accepting_rx);
            workers.exited.push(exited_rx);
        }
        Ok(workers)
    }

    /// Resolves once every worker's accept loops have ended (they end on the stop
    /// signal): no connection starts after this.
    pub async fn stopped_accepting(&mut self) {
        for accepting in self.accepting.drain(..) {
            let _ = accepting.await;
        }
    }

    /// Let the workers drop their runtimes, and wait until they have: whatever
    /// connection is left is closed when this returns.
    pub async fn release(self) {
        let _ = self.release.send(true);
        for exited in self.exited {
            let _ = exited.await;
        }
    }
}
