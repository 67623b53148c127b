//! The contract this test pins: a webhook receiver that is down for an hour loses
//! nothing. Every filing change written during the outage waits in the durable
//! outbox, is retried with backoff (capped, so the receiver is tried again within
//! minutes of coming back), and once the receiver answers it gets each event exactly
//! once, every filing's events in the order they happened.
//!
//! The hour is simulated: the notifier reads "now" from a clock the test moves
//! (`Notifier::with_clock`), from one due time to the next, so every attempt the
//! backoff schedules within the hour is made — over real sockets, to a real
//! receiver that resets every connection while it is down.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::wait_until;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use icpgate::model::filing::{Action, Entity, IcpNumber, Kind, Product, Submission, Website};
use icpgate::notify::{Backoff, Notifier};
use icpgate::registry::sqlite::SqliteRegistry;
use icpgate::registry::{now_ms, Outbox, Registry};
use serde_json::Value;
use tokio::net::TcpListener;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

/// A webhook receiver that can be down (every connection reset at once) or up
/// (every delivery answered 200 and recorded).
struct Receiver {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Connections reset while down: each is one failed delivery attempt.
    refused: Arc<AtomicUsize>,
    /// Accepted deliveries, in arrival order: the body of each.
    delivered: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let receiver = Receiver {
            addr: listener.local_addr().expect("addr"),
            up: Arc::new(AtomicBool::new(false)),
            refused: Arc::default(),
            delivered: Arc::default(),
        };
        let (up, refused, delivered) = (
            Arc::clone(&receiver.up),
            Arc::clone(&receiver.refused),
            Arc::clone(&receiver.delivered),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if !up.load(Ordering::SeqCst) {
                    refused.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.set_zero_linger();
                    drop(stream);
                    continue;
                }
                let delivered = Arc::clone(&delivered);
                tokio::spawn(async move {
                    let service = service_fn(move |r| record(Arc::clone(&delivered), r));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        receiver
    }

    fn deliveries(&self) -> Vec<Value> {
        self.delivered.lock().expect("deliveries").clone()
    }
}

async fn record(
    delivered: Arc<Mutex<Vec<Value>>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = request.into_body().collect().await.map(|b| b.to_bytes());
    let value = body
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    delivered.lock().expect("deliveries").push(value);
    Ok(Response::new(Full::new(Bytes::new())))
}

fn submission(domain: &str) -> Submission {
    Submission {
        kind: Kind::New,
        product: Product::Storefront,
        domains: vec![domain.to_string()],
        icp_number: None,
        entity: Entity {
            name: "示例科技有限公司".into(),
            ..Entity::default()
        },
        website: Website {
            name: "示例".into(),
            ..Website::default()
        },
        filing_password: None,
    }
}

fn review(approve: bool) -> Action {
    Action::InitialReview {
        approve,
        reason: (!approve).then(|| "材料不全".to_string()),
    }
}

fn authority_pass(number: &str) -> Action {
    Action::AuthorityReview {
        approve: true,
        icp_number: Some(IcpNumber::parse(number).expect("icp number")),
        reason: None,
    }
}

/// The changes written during the outage, at minutes into the hour: filing a (by
/// the domain's first letter) is submitted, reviewed and approved; b submitted and
/// rejected; c submitted late in the hour.
const CHANGES: [(i64, &str); 6] = [
    (0, "submit a"),
    (7, "submit b"),
    (19, "review a"),
    (26, "reject b"),
    (41, "approve a"),
    (58, "submit c"),
];

struct Writer {
    registry: Arc<SqliteRegistry>,
    ids: std::collections::HashMap<char, i64>,
}

impl Writer {
    async fn apply(&mut self, change: &str) {
        let filing = change.chars().last().expect("filing letter");
        let domain = format!("outage-{filing}.cn");
        let outcome = match change.split(' ').next() {
            Some("submit") => {
                let submitted = self
                    .registry
                    .submit(submission(&domain), "tester")
                    .await
                    .expect("submit during the outage");
                self.ids.insert(filing, submitted.filing.id);
                Ok(())
            }
            Some(step) => {
                let action = match step {
                    "review" => review(true),
                    "reject" => review(false),
                    _ => authority_pass("浙ICP备20235555号-1"),
                };
                self.registry
                    .transition(self.ids[&filing], action, "reviewer")
                    .await
                    .map(drop)
            }
            None => Ok(()),
        };
        outcome.unwrap_or_else(|e| panic!("{change}: {e}"));
    }
}

/// Wait until the notifier has made every attempt due at `at` (each one either
/// delivered or rescheduled later).
async fn settled(outbox: &Arc<dyn Outbox>, at: i64) {
    let done = wait_until(Duration::from_secs(30), || async {
        outbox
            .due(at, 100)
            .await
            .ok()
            .filter(Vec::is_empty)
            .map(drop)
    })
    .await;
    assert!(done.is_some(), "the notifier did not make the attempts due");
}

#[tokio::test]
async fn events_of_an_hour_long_outage_are_delivered_after_it_in_order_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Arc::new(
        SqliteRegistry::open(&dir.path().join("registry.db"))
            .expect("open registry")
            .with_outbox(true),
    );
    let outbox = registry
        .outbox()
        .expect("the SQLite registry has an outbox");
    let receiver = Receiver::start().await;

    // The simulated clock starts at the wall clock: the registry stamps new events
    // due at wall time, which is never later than the simulated now.
    let start = now_ms();
    let clock = Arc::new(AtomicI64::new(start));
    let reading = Arc::clone(&clock);
    let url = format!("http://{}/hook", receiver.addr);
    let notifier = Notifier::new(Arc::clone(&outbox), &url, None, None, Backoff::default())
        .expect("notifier")
        .with_clock(Arc::new(move || reading.load(Ordering::SeqCst)));
    let waker = notifier.waker();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(notifier.run(stopped));

    let mut writer = Writer {
        registry: Arc::clone(&registry),
        ids: Default::default(),
    };
    let mut changes = CHANGES.iter().peekable();
    let mut now = start;
    // The hour: move from one moment something happens to the next — a change
    // written, or an attempt the backoff scheduled.
    while now < start + HOUR_MS {
        while let Some((_, change)) = changes.next_if(|(m, _)| start + m * MINUTE_MS <= now) {
            writer.apply(change).await;
        }
        waker.notify_one();
        settled(&outbox, now).await;
        let next_change = changes.peek().map(|(m, _)| start + m * MINUTE_MS);
        let next_attempt = outbox.next_due().await.expect("next due");
        // Nothing is due now, so the next due time lies ahead: one in the past would
        // have the notifier poll the outbox in a busy loop.
        assert!(
            next_attempt.is_none_or(|at| at > now),
            "the outbox reports {next_attempt:?} due while nothing is due at {now}"
        );
        let next = [next_change, next_attempt, Some(start + HOUR_MS)]
            .into_iter()
            .flatten()
            .min()
            .expect("an end of the hour");
        now = next.max(now + 1);
        clock.store(now, Ordering::SeqCst);
    }
    assert!(changes.next().is_none(), "every change was written");
    assert!(
        receiver.deliveries().is_empty(),
        "nothing was delivered while the receiver was down"
    );
    let attempts_down = receiver.refused.load(Ordering::SeqCst);
    println!("{attempts_down} delivery attempts failed during the hour");
    assert!(
        attempts_down > CHANGES.len() * 3,
        "the events were retried during the hour: {attempts_down} attempts"
    );
    // One event per filing is tried at a time, backing off to one try in 5 min:
    // an hour is at most a few dozen attempts per filing, not one per second.
    assert!(
        attempts_down < 3 * 40,
        "the retries back off: {attempts_down} attempts in the hour"
    );
    assert_eq!(
        outbox.pending().await.expect("pending"),
        CHANGES.len() as u64
    );

    // The receiver is back: within one capped backoff every event goes out.
    receiver.up.store(true, Ordering::SeqCst);
    now += Backoff::default().cap.as_millis() as i64;
    clock.store(now, Ordering::SeqCst);
    waker.notify_one();
    let all = wait_until(Duration::from_secs(30), || async {
        (outbox.pending().await.ok() == Some(0)).then_some(())
    })
    .await;
    assert!(
        all.is_some(),
        "the queued events were delivered after the outage"
    );

    // Another hour passes: nothing is delivered twice.
    for _ in 0..12 {
        now += 5 * MINUTE_MS;
        clock.store(now, Ordering::SeqCst);
        waker.notify_one();
        settled(&outbox, now).await;
    }
    let _ = stop.send(true);
    let _ = running.await;

    let deliveries = receiver.deliveries();
    let ids: Vec<i64> = deliveries
        .iter()
        .map(|d| d["event_id"].as_i64().expect("event_id"))
        .collect();
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "an event was delivered twice: {ids:?}"
    );
    assert_eq!(ids.len(), CHANGES.len(), "every event once: {ids:?}");
    // Filings do not wait for each other; each filing's events arrive in order.
    let steps_of = |domain: &str| -> Vec<String> {
        deliveries
            .iter()
            .filter(|d| d["domains"][0] == domain)
            .map(|d| {
                let status = |key: &str| d[key].as_str().unwrap_or("-").to_string();
                format!("{}>{}", status("from"), status("to"))
            })
            .collect()
    };
    assert_eq!(
        steps_of("outage-a.cn"),
        [
            "->initial_review",
            "initial_review>authority_review",
            "authority_review>approved"
        ],
        "{deliveries:?}"
    );
    assert_eq!(
        steps_of("outage-b.cn"),
        ["->initial_review", "initial_review>rejected"],
        "{deliveries:?}"
    );
    assert_eq!(
        steps_of("outage-c.cn"),
        ["->initial_review"],
        "{deliveries:?}"
    );
}

/// Every backend's `next_due` is the due time of an event `due` would return: a
/// filing's later event waiting behind its failing oldest one is not "due now"
/// (that made the notifier poll the outbox in a busy loop during an outage).
#[tokio::test]
async fn a_waiting_event_does_not_make_the_outbox_due_early() {
    let test = "a_waiting_event_does_not_make_the_outbox_due_early";
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteRegistry::open(&dir.path().join("registry.db")).expect("sqlite");
    let mut registries: Vec<(&str, Arc<dyn Registry>)> = vec![
        (
            "memory",
            Arc::new(icpgate::registry::memory::MemoryRegistry::new().with_outbox(true)),
        ),
        ("sqlite", Arc::new(sqlite.with_outbox(true))),
    ];
    // Without ICPGATE_TEST_PG_URL, `create` skips PostgreSQL (a failure under CI).
    let db = common::PgDatabase::create(test).await;
    if let Some(db) = &db {
        let postgres = icpgate::registry::postgres::PostgresRegistry::connect(&db.url)
            .await
            .expect("connect postgres");
        registries.push(("postgres", Arc::new(postgres.with_outbox(true))));
    }
    for (name, registry) in registries {
        let outbox = registry.outbox().expect("outbox");
        let filing = registry
            .submit(submission("waiting.cn"), "tester")
            .await
            .expect("submit")
            .filing;
        let first = outbox.due(now_ms(), 10).await.expect("due");
        assert_eq!(first.len(), 1, "{name}");
        let retry_at = now_ms() + HOUR_MS;
        outbox
            .failed(first[0].id, retry_at, "receiver down")
            .await
            .expect("failed");
        registry
            .transition(filing.id, review(true), "reviewer")
            .await
            .expect("review");
        assert!(
            outbox.due(now_ms(), 10).await.expect("due").is_empty(),
            "{name}"
        );
        assert_eq!(
            outbox.next_due().await.expect("next due"),
            Some(retry_at),
            "{name}"
        );
    }
}
