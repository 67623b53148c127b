//! The start-up check that every stored filing document reads (`Registry::
//! check_documents`): a backend streams `(id, document)` batches from one query and
//! they are decoded on every core at once, since decoding, not reading, is what
//! the check costs (a debug build reads 100 k rows in 0.1 s and decodes them in 0.9 s).
//!
//! Contract: `Ok(n)` when all `n` documents decoded; otherwise the `Corrupt` error
//! of the lowest filing id found unreadable (the check stops early, so with several
//! bad rows another may be named on another run).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::workflow::decode;
use super::RegistryError;

/// Documents per batch handed to a decoding thread.
pub(super) const BATCH: usize = 1024;

/// Where a backend sends the documents it reads, and how it learns to stop early.
pub(super) struct DocumentSink {
    pub batches: mpsc::Sender<Vec<(i64, String)>>,
    /// Set once a document did not read: reading more is wasted.
    pub failed: Arc<AtomicBool>,
}

/// Decoding threads, one per core, fed by the returned sink; `finish` waits for
/// them once the sink is dropped.
pub(super) struct DocumentCheck {
    workers: Vec<std::thread::JoinHandle<Option<RegistryError>>>,
    decoded: Arc<AtomicU64>,
}

impl DocumentCheck {
    pub(super) fn start() -> (DocumentSink, DocumentCheck) {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let (batches, received) = mpsc::channel::<Vec<(i64, String)>>(threads * 2);
        let received = Arc::new(Mutex::new(received));
        let failed = Arc::new(AtomicBool::new(false));
        let decoded = Arc::new(AtomicU64::new(0));
        let workers = (0..threads)
            .map(|_| {
                let (received, failed, decoded) = (
                    Arc::clone(&received),
                    Arc::clone(&failed),
                    Arc::clone(&decoded),
                );
                std::thread::spawn(move || decode_batches(&received, &failed, &decoded))
            })
            .collect();
        (
            DocumentSink { batches, failed },
            DocumentCheck { workers, decoded },
        )
    }

    /// How many documents decoded, or the unreadable one with the lowest id.
    pub(super) fn finish(self) -> Result<u64, RegistryError> {
        let mut worst: Option<RegistryError> = None;
        for worker in self.workers {
            let found = worker.join().unwrap_or_else(|_| {
                Some(RegistryError::from(std::io::Error::other(
                    "a document check thread panicked",
                )))
            });
            worst = match (worst, found) {
                (Some(a), Some(b)) => Some(if corrupt_id(&b) < corrupt_id(&a) {
                    b
                } else {
                    a
                }),
                (a, b) => a.or(b),
            };
        }
        match worst {
            Some(error) => Err(error),
            None => Ok(self.decoded.load(Ordering::Relaxed)),
        }
    }
}

/// Decode batches until the sink is dropped. After a document did not read (here
/// or in another thread) the batches still sent are taken and dropped undecoded,
/// so a reader blocked on a full channel is never left waiting.
fn decode_batches(
    received: &Mutex<mpsc::Receiver<Vec<(i64, String)>>>,
    failed: &AtomicBool,
    decoded: &AtomicU64,
) -> Option<RegistryError> {
    let mut found = None;
    loop {
        // A poisoned lock only means another decoding thread panicked holding it.
        let Some(batch) = received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .blocking_recv()
        else {
            return found;
        };
        if failed.load(Ordering::Relaxed) {
            continue;
        }
        for (id, doc) in &batch {
            if let Err(error) = decode(*id, doc) {
                failed.store(true, Ordering::Relaxed);
                found = Some(error);
                break;
            }
        }
        if found.is_none() {
            let n = u64::try_from(batch.len()).unwrap_or(u64::MAX);
            decoded.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The filing a `Corrupt` error names (others sort last).
fn corrupt_id(error: &RegistryError) -> i64 {
    match error {
        RegistryError::Corrupt { id, .. } => *id,
        _ => i64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: i64) -> String {
        let line =
            format!(r#"{{"domains":["d{id}.cn"],"product":"storefront","status":"rejected"}}"#);
        let record = crate::registry::jsonl::parse(&line)
            .expect("parse")
            .remove(0);
        super::super::workflow::encode(&record.filing)
    }

    /// Send `n` documents in batches, `bad` ones unreadable, as a backend would
    /// (without stopping early: every batch is sent even after a failure).
    fn check(n: i64, bad: &'static [i64]) -> Result<u64, RegistryError> {
        let (sink, check) = DocumentCheck::start();
        let good = doc(1);
        let reader = std::thread::spawn(move || {
            let docs: Vec<(i64, String)> = (1..=n)
                .map(|id| {
                    (
                        id,
                        if bad.contains(&id) {
                            "{".into()
                        } else {
                            good.clone()
                        },
                    )
                })
                .collect();
            for batch in docs.chunks(BATCH) {
                if sink.batches.blocking_send(batch.to_vec()).is_err() {
                    break;
                }
            }
        });
        reader.join().expect("reader");
        check.finish()
    }

    #[test]
    fn counts_every_document_or_names_an_unreadable_one() {
        assert_eq!(check(5000, &[]).ok(), Some(5000));
        assert_eq!(check(0, &[]).ok(), Some(0));
        match check(5000, &[4321]) {
            Err(RegistryError::Corrupt { id: 4321, .. }) => {}
            other => panic!("want Corrupt 4321, got {other:?}"),
        }
        // Unreadable ones early and late: a reader that keeps sending is never
        // left blocked, and one of them is named.
        match check(20_000, &[3, 19_999]) {
            Err(RegistryError::Corrupt { id, .. }) => assert!(id == 3 || id == 19_999),
            other => panic!("want Corrupt, got {other:?}"),
        }
    }
}
