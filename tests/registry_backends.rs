//! The contract these tests pin: every registry backend — embedded SQLite (a temp
//! file), PostgreSQL (a database of its own per test) and the in-memory registry the
//! unit tests use — keeps the same registry contract, case for case:
//!
//! - a submission is stored in `initial_review`, classified by the seed's filing type;
//! - every legal transition does what the state machine says; an illegal one (a
//!   409-class `Transition(Illegal)`) or a bad one (400-class) changes nothing;
//! - a registrable domain belongs to at most one live filing, and a refusal names
//!   the real id of the filing holding it — also when writers race for it;
//! - an import stores every record or none, and names the line it refused;
//! - every write bumps the revision, and `changes_since` replays writes in order;
//! - with the outbox on, each submission and transition enqueues one notification;
//!   delivered events are acknowledged and pruned, pending ones never;
//! - counts by status, list filters and lookups agree across backends;
//! - an unreadable stored document is `Corrupt` naming the filing, never a panic.
//!
//! Each case is one async fn taking a [`Backend`]; `backend_cases!` runs it against
//! each backend. Without `ICPGATE_TEST_PG_URL` the PostgreSQL cases print that they
//! were skipped — except under `CI=true`, where they fail instead.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::PgDatabase;
use icpgate::gate::filed_domains::FiledDomains;
use icpgate::model::filing::{
    Action, Entity, Filing, FilingPassword, IcpNumber, Kind, Product, Status, Submission,
    TransitionError, Website,
};
use icpgate::model::host::{HostName, RegistrableDomain};
use icpgate::registry::memory::MemoryRegistry;
use icpgate::registry::postgres::PostgresRegistry;
use icpgate::registry::sqlite::SqliteRegistry;
use icpgate::registry::{
    jsonl, now_ms, FilingType, ListFilter, Outbox, Registry, RegistryError, SecretKey,
};
use serde_json::Value;

/// One backend under test, with its outbox on, and what keeps its store alive.
struct Backend {
    registry: Arc<dyn Registry>,
    store: Store,
}

enum Store {
    Memory(MemoryRegistry),
    Sqlite {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    Postgres(PgDatabase),
}

/// The key every backend under test seals filing passwords with.
fn key() -> Option<Arc<SecretKey>> {
    Some(Arc::new(SecretKey::from_material(
        b"registry-backends-test-key-0123456789",
    )))
}

impl Backend {
    fn memory() -> Backend {
        let registry = MemoryRegistry::new()
            .with_outbox(true)
            .with_secret_key(key());
        Backend {
            registry: Arc::new(registry.clone()),
            store: Store::Memory(registry),
        }
    }

    fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.db");
        let registry = SqliteRegistry::open(&path)
            .expect("open sqlite")
            .with_outbox(true)
            .with_secret_key(key());
        Backend {
            registry: Arc::new(registry),
            store: Store::Sqlite { path, _dir: dir },
        }
    }

    /// None when PostgreSQL is not configured (a failure instead under `CI=true`).
    async fn postgres(test: &str) -> Option<Backend> {
        let Some(db) = PgDatabase::create(test).await else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: CI=true but ICPGATE_TEST_PG_URL is not set: the PostgreSQL backend \
                 must be tested in CI"
            );
            return None;
        };
        let registry = PostgresRegistry::connect(&db.url)
            .await
            .expect("connect postgres")
            .with_outbox(true)
            .with_secret_key(key());
        Some(Backend {
            registry: Arc::new(registry),
            store: Store::Postgres(db),
        })
    }

    fn outbox(&self) -> Arc<dyn Outbox> {
        self.registry.outbox().expect("the outbox is on")
    }

    /// Overwrite the stored document of filing `id` with `doc` behind the
    /// registry's back, but at the next revision, as a writer the change feed
    /// follows would (another node, a shell).
    async fn rewrite(&self, id: i64, doc: &str) {
        match &self.store {
            Store::Memory(registry) => assert!(registry.rewrite_document(id, doc)),
            Store::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).expect("open sqlite");
                let n = conn
                    .execute(
                        "UPDATE filings SET doc = ?2, revision =
                             (SELECT value FROM meta WHERE key = 'revision') + 1 WHERE id = ?1",
                        rusqlite::params![id, doc],
                    )
                    .expect("rewrite sqlite");
                assert_eq!(n, 1);
                conn.execute(
                    "UPDATE meta SET value = value + 1 WHERE key = 'revision'",
                    [],
                )
                .expect("bump");
            }
            Store::Postgres(db) => {
                let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                    .await
                    .expect("connect postgres");
                tokio::spawn(connection);
                let n = client
                    .execute(
                        "UPDATE icpgate_filings SET doc = $2::text::jsonb, revision =
                             (SELECT value FROM icpgate_meta WHERE key = 'revision') + 1
                         WHERE id = $1",
                        &[&id, &doc],
                    )
                    .await
                    .expect("rewrite postgres");
                assert_eq!(n, 1);
                client
                    .execute(
                        "UPDATE icpgate_meta SET value = value + 1 WHERE key = 'revision'",
                        &[],
                    )
                    .await
                    .expect("bump");
            }
        }
    }

    /// Overwrite the stored document of filing `id` with something that is not a
    /// filing, behind the registry's back.
    async fn corrupt(&self, id: i64) {
        match &self.store {
            Store::Memory(registry) => {
                assert!(registry.replace_document(id, "{\"id\": \"not a filing\""));
            }
            Store::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).expect("open sqlite");
                let n = conn
                    .execute("UPDATE filings SET doc = 'not json' WHERE id = ?1", [id])
                    .expect("corrupt sqlite");
                assert_eq!(n, 1);
            }
            Store::Postgres(db) => {
                let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                    .await
                    .expect("connect postgres");
                tokio::spawn(connection);
                let n = client
                    .execute(
                        "UPDATE icpgate_filings SET doc = '{\"id\": \"not a filing\"}' WHERE id = $1",
                        &[&id],
                    )
                    .await
                    .expect("corrupt postgres");
                assert_eq!(n, 1);
            }
        }
    }
}

/// Run each case against every backend: `memory::case`, `sqlite::case`,
/// `postgres::case`.
macro_rules! backend_cases {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Backend::memory()).await;
            })*
        }
        mod sqlite {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Backend::sqlite()).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $case() {
                let test = concat!("registry_backends::postgres::", stringify!($case));
                if let Some(backend) = super::Backend::postgres(test).await {
                    super::$case(backend).await;
                }
            })*
        }
    };
}

backend_cases!(
    submit_stores_initial_review_and_classifies_the_filing_type,
    every_legal_transition_moves_the_filing,
    illegal_and_bad_transitions_change_nothing,
    one_live_filing_per_domain_names_the_holder,
    racing_submissions_for_one_domain_leave_one_live_filing,
    import_is_all_or_nothing_and_names_the_line,
    every_write_bumps_the_revision_and_is_replayed_in_order,
    the_outbox_enqueues_each_change_and_acks_deliveries,
    counts_cover_every_status,
    list_filters_by_status_and_domain_in_id_order,
    a_corrupt_document_is_reported_not_panicked,
    a_large_import_is_all_or_nothing_past_its_first_chunk,
    one_icp_number_belongs_to_one_entity,
    the_filing_rules_hold_for_steps_and_imports,
    a_failing_event_holds_back_only_its_own_filing,
    a_filing_password_is_kept_sealed_until_initial_review_ends,
    an_entity_change_is_reviewed_while_the_filing_keeps_serving,
    the_overdue_count_by_index_equals_the_count_by_reading,
    a_corrupt_document_stops_the_index_load_naming_it,
    a_corrupt_document_does_not_stall_the_change_feed,
);

// ---- fixtures ----

fn domain(name: &str) -> RegistrableDomain {
    HostName::parse(name)
        .ok()
        .and_then(|h| h.registrable_domain())
        .expect("registrable domain")
}

fn entity(name: &str, certificate: Option<&str>) -> Entity {
    Entity {
        name: name.into(),
        certificate_number: certificate.map(Into::into),
        ..Entity::default()
    }
}

fn submission(domains: &[&str]) -> Submission {
    Submission {
        kind: Kind::New,
        product: Product::Storefront,
        domains: domains.iter().map(|d| d.to_string()).collect(),
        icp_number: None,
        entity: entity("示例科技有限公司", None),
        website: Website {
            name: "示例".into(),
            ..Website::default()
        },
        filing_password: None,
    }
}

fn icp(number: &str) -> IcpNumber {
    IcpNumber::parse(number).expect("icp number")
}

fn initial(approve: bool) -> Action {
    Action::InitialReview {
        approve,
        reason: (!approve).then(|| "材料不全".to_string()),
    }
}

fn authority_pass(number: &str) -> Action {
    Action::AuthorityReview {
        approve: true,
        icp_number: Some(icp(number)),
        reason: None,
    }
}

fn resubmit() -> Action {
    Action::Resubmit {
        entity: None,
        website: None,
        product: None,
        icp_number: None,
        filing_password: None,
    }
}

async fn submit(backend: &Backend, domains: &[&str]) -> Filing {
    backend
        .registry
        .submit(submission(domains), "tester")
        .await
        .expect("submit")
        .filing
}

async fn step(backend: &Backend, id: i64, action: Action) -> Filing {
    backend
        .registry
        .transition(id, action, "reviewer")
        .await
        .expect("transition")
}

/// Submit for `domains` and take the filing to `approved`.
async fn approved(backend: &Backend, domains: &[&str], number: &str) -> Filing {
    let filing = submit(backend, domains).await;
    step(backend, filing.id, initial(true)).await;
    step(backend, filing.id, authority_pass(number)).await
}

async fn revision(backend: &Backend) -> i64 {
    backend.registry.revision().await.expect("revision")
}

async fn get(backend: &Backend, id: i64) -> Filing {
    backend
        .registry
        .get(id)
        .await
        .expect("get")
        .expect("filing exists")
}

// ---- cases ----

async fn submit_stores_initial_review_and_classifies_the_filing_type(backend: Backend) {
    let registry = &backend.registry;
    assert!(registry.is_empty().await.expect("is_empty"));
    let first = registry
        .submit(submission(&["example.cn", "example.com.cn"]), "tester")
        .await
        .expect("submit");
    assert_eq!(first.filing_type, FilingType::FirstFiling);
    let filing = first.filing;
    assert!(filing.id > 0);
    assert_eq!(filing.status, Status::InitialReview);
    assert_eq!(filing.domains, vec!["example.cn", "example.com.cn"]);
    assert_eq!(filing.history.len(), 1);
    assert_eq!(filing.history[0].actor, "tester");
    assert_eq!(filing.history[0].from, None);
    assert_eq!(get(&backend, filing.id).await, filing, "stored as answered");
    assert!(!registry.is_empty().await.expect("is_empty"));

    // A submission the model refuses is a Transition error, and stores nothing.
    let mut bad = submission(&["bad.cn"]);
    bad.icp_number = Some(icp("浙ICP备12345678号-1"));
    let refused = registry.submit(bad, "tester").await;
    assert!(
        matches!(
            refused,
            Err(RegistryError::Transition(
                TransitionError::IcpNumberOnNewFiling
            ))
        ),
        "{refused:?}"
    );
    let blank_actor = registry.submit(submission(&["actor.cn"]), " ").await;
    assert!(
        matches!(
            blank_actor,
            Err(RegistryError::Transition(TransitionError::ActorRequired))
        ),
        "{blank_actor:?}"
    );

    // Once the entity holds an ICP number, its next website is a new website:
    // matched by name when no certificate number is given...
    step(&backend, filing.id, initial(true)).await;
    step(&backend, filing.id, authority_pass("浙ICP备12345678号-1")).await;
    let by_name = registry
        .submit(submission(&["second.cn"]), "tester")
        .await
        .expect("submit");
    assert_eq!(by_name.filing_type, FilingType::NewWebsite);
    // ...and by certificate number (in any case) when one is given.
    let mut certified = submission(&["third.cn"]);
    certified.entity = entity("另一家公司", Some("91330100MA27XXXX1X"));
    let certified = registry.submit(certified, "tester").await.expect("submit");
    assert_eq!(certified.filing_type, FilingType::FirstFiling);
    step(&backend, certified.filing.id, initial(true)).await;
    step(
        &backend,
        certified.filing.id,
        authority_pass("浙ICP备87654321号-1"),
    )
    .await;
    let mut same_certificate = submission(&["fourth.cn"]);
    same_certificate.entity = entity("改名后的公司", Some("91330100ma27xxxx1x"));
    let same_certificate = registry
        .submit(same_certificate, "tester")
        .await
        .expect("submit");
    assert_eq!(same_certificate.filing_type, FilingType::NewWebsite);

    let mut access = submission(&["moved.cn"]);
    access.kind = Kind::AccessExisting;
    access.icp_number = Some(icp("京ICP备10101010号-3"));
    access.filing_password = FilingPassword::new("filing-pw-1".into()).ok();
    let access = registry.submit(access, "tester").await.expect("submit");
    assert_eq!(access.filing_type, FilingType::AccessExisting);
    assert_eq!(access.filing.status, Status::InitialReview);
}

async fn every_legal_transition_moves_the_filing(backend: Backend) {
    // submit -> initial pass -> authority pass -> change -> cancel
    let a = submit(&backend, &["a.cn"]).await;
    let a1 = step(&backend, a.id, initial(true)).await;
    assert_eq!(a1.status, Status::AuthorityReview);
    let a2 = step(&backend, a.id, authority_pass("浙ICP备20231234号-1")).await;
    assert_eq!(a2.status, Status::Approved);
    assert_eq!(a2.icp_number, Some(icp("浙ICP备20231234号-1")));
    let changed = Action::ChangeDetails {
        entity: None,
        website: Some(Website {
            name: "新名字".into(),
            ..Website::default()
        }),
    };
    let a3 = step(&backend, a.id, changed).await;
    assert_eq!(a3.status, Status::Approved, "a change keeps the status");
    assert_eq!(a3.website.name, "新名字");
    let a4 = step(&backend, a.id, Action::Cancel { reason: None }).await;
    assert_eq!(a4.status, Status::Cancelled);
    let steps: Vec<_> = a4.history.iter().map(|h| (h.from, h.to)).collect();
    assert_eq!(
        steps,
        vec![
            (None, Status::InitialReview),
            (Some(Status::InitialReview), Status::AuthorityReview),
            (Some(Status::AuthorityReview), Status::Approved),
            (Some(Status::Approved), Status::Approved),
            (Some(Status::Approved), Status::Cancelled),
        ]
    );
    assert_eq!(get(&backend, a.id).await, a4, "stored as answered");

    // initial fail -> resubmit -> authority fail -> abandon
    let b = submit(&backend, &["b.cn"]).await;
    let b1 = step(&backend, b.id, initial(false)).await;
    assert_eq!(b1.status, Status::Rejected);
    assert_eq!(b1.history[1].reason.as_deref(), Some("材料不全"));
    assert_eq!(
        step(&backend, b.id, resubmit()).await.status,
        Status::InitialReview
    );
    step(&backend, b.id, initial(true)).await;
    let fail = Action::AuthorityReview {
        approve: false,
        icp_number: None,
        reason: Some("网站名称不符".into()),
    };
    assert_eq!(step(&backend, b.id, fail).await.status, Status::Rejected);
    let abandon = Action::Abandon {
        reason: Some("change domain".into()),
    };
    assert_eq!(
        step(&backend, b.id, abandon).await.status,
        Status::Abandoned
    );

    // approved -> disconnect; approved -> abandon
    let c = approved(&backend, &["c.cn"], "浙ICP备20231234号-2").await;
    let disconnect = Action::Disconnect { reason: None };
    assert_eq!(
        step(&backend, c.id, disconnect).await.status,
        Status::Disconnected
    );
    let d = approved(&backend, &["d.cn"], "浙ICP备20231234号-3").await;
    let abandon = Action::Abandon { reason: None };
    assert_eq!(
        step(&backend, d.id, abandon).await.status,
        Status::Abandoned
    );
}

async fn illegal_and_bad_transitions_change_nothing(backend: Backend) {
    let registry = &backend.registry;
    let filing = submit(&backend, &["strict.cn"]).await;
    let before = revision(&backend).await;

    // 409-class: the state machine has no such edge.
    let early = registry
        .transition(filing.id, authority_pass("浙ICP备20231234号-1"), "x")
        .await;
    assert!(
        matches!(
            early,
            Err(RegistryError::Transition(TransitionError::Illegal {
                action: "authority-review",
                from: Status::InitialReview,
                ..
            }))
        ),
        "{early:?}"
    );
    // 400-class: a legal edge asked for badly.
    let no_reason = Action::InitialReview {
        approve: false,
        reason: None,
    };
    let no_reason = registry.transition(filing.id, no_reason, "x").await;
    assert!(
        matches!(
            no_reason,
            Err(RegistryError::Transition(TransitionError::ReasonRequired))
        ),
        "{no_reason:?}"
    );
    step(&backend, filing.id, initial(true)).await;
    let before_approval = get(&backend, filing.id).await;
    let mid = revision(&backend).await;
    let no_number = Action::AuthorityReview {
        approve: true,
        icp_number: None,
        reason: None,
    };
    let no_number = registry.transition(filing.id, no_number, "x").await;
    assert!(
        matches!(
            no_number,
            Err(RegistryError::Transition(
                TransitionError::IcpNumberRequired
            ))
        ),
        "{no_number:?}"
    );
    assert_eq!(get(&backend, filing.id).await, before_approval);
    assert_eq!(revision(&backend).await, mid, "a refusal writes nothing");
    assert!(mid > before);

    // An abandoned filing accepts only the authority's cancellation.
    step(&backend, filing.id, Action::Abandon { reason: None }).await;
    let after = get(&backend, filing.id).await;
    for action in [
        initial(true),
        resubmit(),
        Action::Abandon { reason: None },
        Action::Disconnect { reason: None },
    ] {
        let name = action.name();
        let refused = registry.transition(filing.id, action, "x").await;
        assert!(
            matches!(
                refused,
                Err(RegistryError::Transition(TransitionError::Illegal {
                    from: Status::Abandoned,
                    ..
                }))
            ),
            "{name}: {refused:?}"
        );
    }
    assert_eq!(get(&backend, filing.id).await, after);

    // A filing that does not exist.
    let missing = registry.transition(999_999, initial(true), "x").await;
    assert!(
        matches!(missing, Err(RegistryError::NotFound(999_999))),
        "{missing:?}"
    );
    assert!(registry.get(999_999).await.expect("get").is_none());
    for error in [early, no_reason, no_number, missing] {
        assert!(!error.expect_err("refused").is_unavailable());
    }
}

async fn one_live_filing_per_domain_names_the_holder(backend: Backend) {
    let registry = &backend.registry;
    let holder = submit(&backend, &["taken.cn"]).await;
    submit(&backend, &["other.cn"]).await;
    let counts = registry.counts_by_status().await.expect("counts");
    let before = revision(&backend).await;

    let second = registry
        .submit(submission(&["free.cn", "taken.cn"]), "tester")
        .await;
    match second {
        Err(RegistryError::DomainTaken { domain, filing_id }) => {
            assert_eq!(domain, "taken.cn");
            assert_eq!(filing_id, holder.id, "the real holder is named");
        }
        other => panic!("want DomainTaken, got {other:?}"),
    }
    assert_eq!(revision(&backend).await, before, "nothing was written");
    assert_eq!(registry.counts_by_status().await.expect("counts"), counts);
    let free = ListFilter {
        domain: Some(domain("free.cn")),
        ..ListFilter::default()
    };
    assert!(registry.list(&free).await.expect("list").is_empty());

    // Rejected is still live: it keeps the domain.
    step(&backend, holder.id, initial(false)).await;
    let again = registry.submit(submission(&["taken.cn"]), "tester").await;
    assert!(
        matches!(again, Err(RegistryError::DomainTaken { filing_id, .. }) if filing_id == holder.id),
        "{again:?}"
    );
    // An import naming a held domain is refused the same way, on its line.
    let line = r#"{"domains":["taken.cn"],"product":"storefront","status":"initial_review"}"#;
    let imported = registry.import(jsonl::parse(line).expect("parse")).await;
    match imported {
        Err(RegistryError::AtLine { line: 1, source }) => assert!(
            matches!(*source, RegistryError::DomainTaken { filing_id, .. } if filing_id == holder.id),
            "{source:?}"
        ),
        other => panic!("want AtLine(DomainTaken), got {other:?}"),
    }

    // Once abandoned, the domain is free; the lookup then answers the live filing.
    step(&backend, holder.id, Action::Abandon { reason: None }).await;
    let abandoned = registry.lookup(&domain("taken.cn")).await.expect("lookup");
    assert_eq!(abandoned.filing.map(|f| f.id), Some(holder.id));
    let successor = submit(&backend, &["taken.cn"]).await;
    let lookup = registry.lookup(&domain("taken.cn")).await.expect("lookup");
    assert_eq!(lookup.filing.map(|f| f.id), Some(successor.id));
    assert_eq!(lookup.revision, revision(&backend).await);
    let unknown = registry.lookup(&domain("nobody.cn")).await.expect("lookup");
    assert!(unknown.filing.is_none());
}

async fn racing_submissions_for_one_domain_leave_one_live_filing(backend: Backend) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let registry = Arc::clone(&backend.registry);
            tokio::spawn(async move { registry.submit(submission(&["race.cn"]), "racer").await })
        })
        .collect();
    let mut winners = Vec::new();
    let mut holders = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(submitted) => winners.push(submitted.filing.id),
            Err(RegistryError::DomainTaken { domain, filing_id }) => {
                assert_eq!(domain, "race.cn");
                holders.push(filing_id);
            }
            Err(other) => panic!("want DomainTaken, got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one submission wins: {winners:?}");
    assert!(
        holders.iter().all(|id| *id == winners[0]),
        "every refusal names the winner {}: {holders:?}",
        winners[0]
    );
    let listed = backend
        .registry
        .list(&ListFilter {
            domain: Some(domain("race.cn")),
            ..ListFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "no filing without its domain row");
    let all = backend.registry.export().await.expect("export");
    assert_eq!(all.len(), 1, "the refused submissions stored nothing");
}

async fn import_is_all_or_nothing_and_names_the_line(backend: Backend) {
    let registry = &backend.registry;
    let before = revision(&backend).await;
    let good = r#"{"id":40,"domains":["imported.cn"],"product":"storefront","status":"approved","icp_number":"京ICP备87654321号-2"}"#;
    let done = r#"{"id":41,"domains":["imported.cn"],"product":"storefront","status":"abandoned"}"#;
    let clash = r#"{"domains":["imported.cn"],"product":"storefront","status":"initial_review"}"#;

    // Line 4 (after a blank line) clashes with line 1: nothing is stored.
    let text = format!("{good}\n{done}\n\n{clash}\n");
    let result = registry.import(jsonl::parse(&text).expect("parse")).await;
    match result {
        Err(RegistryError::AtLine { line: 4, source }) => assert!(
            matches!(*source, RegistryError::DomainTaken { filing_id: 40, .. }),
            "{source:?}"
        ),
        other => panic!("want line 4 DomainTaken, got {other:?}"),
    }
    assert!(registry.is_empty().await.expect("is_empty"));
    assert_eq!(revision(&backend).await, before);
    assert!(registry.filed_domains().await.expect("domains").is_empty());

    // Without the clash it all goes in, ids kept.
    let text = format!("{good}\n{done}\n");
    let count = registry.import(jsonl::parse(&text).expect("parse")).await;
    assert_eq!(count.expect("import"), 2);
    assert_eq!(get(&backend, 40).await.status, Status::Approved);
    assert_eq!(get(&backend, 41).await.status, Status::Abandoned);
    assert_eq!(
        revision(&backend).await,
        before + 2,
        "one revision per filing"
    );

    // An id already stored is refused on its line.
    let again = registry
        .import(jsonl::parse(&format!("\n{done}")).expect("parse"))
        .await;
    match again {
        Err(RegistryError::AtLine { line: 2, source }) => {
            assert!(matches!(*source, RegistryError::IdTaken(41)), "{source:?}")
        }
        other => panic!("want line 2 IdTaken, got {other:?}"),
    }

    // Later submissions get ids past the imported ones.
    let next = submit(&backend, &["fresh.cn"]).await;
    assert!(next.id > 41, "fresh id {} after imported ids", next.id);

    // Export answers what was stored, in id order.
    let exported = registry.export().await.expect("export");
    let ids: Vec<i64> = exported.iter().map(|f| f.id).collect();
    assert_eq!(ids, vec![40, 41, next.id]);
}

/// A submission by `entity` for `domains`.
async fn submit_by(backend: &Backend, domains: &[&str], entity: Entity) -> Filing {
    let mut submission = submission(domains);
    submission.entity = entity;
    let submitted = backend.registry.submit(submission, "tester").await;
    submitted.expect("submit").filing
}

async fn one_icp_number_belongs_to_one_entity(backend: Backend) {
    let registry = &backend.registry;
    let zhe = || Entity {
        province: Some("浙".into()),
        ..entity("杭州示例科技有限公司", Some("91330100MA27XXXX1X"))
    };
    let other = || Entity {
        province: Some("浙".into()),
        ..entity("杭州另一家科技有限公司", Some("91330100MA01YYYY2Y"))
    };
    let held = submit_by(&backend, &["held-number.cn"], zhe()).await;
    step(&backend, held.id, initial(true)).await;
    step(&backend, held.id, authority_pass("浙ICP备30000001号-1")).await;

    // Another entity cannot be approved with it, nor with another website's index.
    let rival = submit_by(&backend, &["rival.cn"], other()).await;
    step(&backend, rival.id, initial(true)).await;
    for number in ["浙ICP备30000001号-1", "浙ICP备30000001号-2"] {
        let refused = registry
            .transition(rival.id, authority_pass(number), "authority")
            .await;
        assert!(
            matches!(refused, Err(RegistryError::NumberTaken { filing_id, .. }) if filing_id == held.id),
            "{number}: {refused:?}"
        );
    }
    assert_eq!(
        get(&backend, rival.id).await.status,
        Status::AuthorityReview
    );
    // The clash is named before any other rule about the number (another province's
    // entity claiming it hears that it is taken, not that the province differs).
    let beijing = Entity {
        province: Some("京".into()),
        ..entity("北京另一家科技有限公司", Some("91110000MA01YYYY2Y"))
    };
    let far = submit_by(&backend, &["far-rival.cn"], beijing).await;
    step(&backend, far.id, initial(true)).await;
    let refused = registry
        .transition(far.id, authority_pass("浙ICP备30000001号-1"), "authority")
        .await;
    assert!(
        matches!(refused, Err(RegistryError::NumberTaken { filing_id, .. }) if filing_id == held.id),
        "{refused:?}"
    );

    // Nor can it claim it by accessing an existing filing.
    let mut access = submission(&["rival-access.cn"]);
    access.kind = Kind::AccessExisting;
    access.entity = other();
    access.icp_number = Some(icp("浙ICP备30000001号-3"));
    access.filing_password = FilingPassword::new("filing-pw-1".into()).ok();
    let refused = registry.submit(access, "tester").await;
    assert!(
        matches!(refused, Err(RegistryError::NumberTaken { filing_id, .. }) if filing_id == held.id),
        "{refused:?}"
    );

    // The same entity (same certificate number) files its second website under it.
    let second = submit_by(&backend, &["second-site.cn"], zhe()).await;
    step(&backend, second.id, initial(true)).await;
    step(&backend, second.id, authority_pass("浙ICP备30000001号-2")).await;

    // Once the number is cancelled, it holds nothing.
    step(&backend, held.id, Action::Cancel { reason: None }).await;
    step(&backend, second.id, Action::Cancel { reason: None }).await;
    let approved = step(&backend, rival.id, authority_pass("浙ICP备30000001号-1")).await;
    assert_eq!(approved.status, Status::Approved);

    // An import line claiming another entity's number is refused on its line.
    let line = r#"{"domains":["imported-rival.cn"],"product":"storefront","status":"approved","icp_number":"浙ICP备30000001号-4","entity":{"name":"第三家公司","certificate_number":"91330100MA03ZZZZ3Z"}}"#;
    let refused = registry
        .import(jsonl::parse(&format!("\n{line}")).expect("parse"))
        .await;
    match refused {
        Err(RegistryError::AtLine { line: 2, source }) => assert!(
            matches!(*source, RegistryError::NumberTaken { filing_id, .. } if filing_id == rival.id),
            "{source:?}"
        ),
        other => panic!("want line 2 NumberTaken, got {other:?}"),
    }
}

async fn the_filing_rules_hold_for_steps_and_imports(backend: Backend) {
    let registry = &backend.registry;
    let zhe = Entity {
        province: Some("浙".into()),
        ..entity("杭州示例科技有限公司", Some("91330100MA27XXXX1X"))
    };
    let filing = submit_by(&backend, &["rules.cn"], zhe.clone()).await;
    step(&backend, filing.id, initial(true)).await;
    let before = get(&backend, filing.id).await;
    // Refused steps (400-class), each leaving the filing as it was.
    let refusals: Vec<(Action, &str)> = vec![
        // another province's number
        (authority_pass("京ICP备30000003号-1"), "province"),
        // an entity's number names no website
        (authority_pass("浙ICP备30000003号"), "names no website"),
        // a 300,000-character reason
        (
            Action::AuthorityReview {
                approve: false,
                icp_number: None,
                reason: Some("x".repeat(300_000)),
            },
            "reason must be at most 1000",
        ),
    ];
    for (action, want) in refusals {
        let refused = registry.transition(filing.id, action, "authority").await;
        assert!(
            matches!(&refused, Err(RegistryError::Transition(e)) if e.to_string().contains(want)),
            "{want}: {refused:?}"
        );
    }
    assert_eq!(get(&backend, filing.id).await, before);

    // A change cannot swap the entity; contacts change at once.
    let swapped = Entity {
        certificate_number: Some("91110000MA01YYYY2Y".into()),
        ..zhe.clone()
    };
    let refused = registry
        .transition(
            filing.id,
            Action::ChangeDetails {
                entity: Some(swapped),
                website: None,
            },
            "owner",
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(RegistryError::Transition(TransitionError::EntityReplaced))
        ),
        "{refused:?}"
    );
    let with_owner = Entity {
        owner: Some(icpgate::model::filing::Contact {
            name: "李四".into(),
            phone: Some("13900000001".into()),
            email: None,
        }),
        ..zhe.clone()
    };
    let changed = step(
        &backend,
        filing.id,
        Action::ChangeDetails {
            entity: Some(with_owner.clone()),
            website: None,
        },
    )
    .await;
    assert_eq!(changed.entity, with_owner);

    // The authority cancels the number of an abandoned filing; history keeps it.
    step(&backend, filing.id, Action::Abandon { reason: None }).await;
    let cancel = Action::Cancel {
        reason: Some("管局注销".into()),
    };
    let cancelled = step(&backend, filing.id, cancel).await;
    assert_eq!(cancelled.status, Status::Cancelled);
    let last = cancelled.history.last().expect("history");
    assert_eq!(
        (last.from, last.to, last.reason.as_deref()),
        (Some(Status::Abandoned), Status::Cancelled, Some("管局注销"))
    );

    // A rejected access-existing filing resubmits with a corrected number.
    let mut access = submission(&["access-rules.cn"]);
    access.kind = Kind::AccessExisting;
    access.entity = zhe.clone();
    access.icp_number = Some(icp("浙ICP备30000005号-2"));
    access.filing_password = FilingPassword::new("filing-pw-1".into()).ok();
    let access = registry
        .submit(access, "tester")
        .await
        .expect("submit")
        .filing;
    step(&backend, access.id, initial(false)).await;
    let corrected = step(
        &backend,
        access.id,
        Action::Resubmit {
            entity: None,
            website: None,
            product: None,
            icp_number: Some(icp("浙ICP备30000006号-2")),
            filing_password: None,
        },
    )
    .await;
    assert_eq!(corrected.icp_number, Some(icp("浙ICP备30000006号-2")));

    // Import lines keep the same rules, each named by its line.
    let lines = [
        (
            r#"{"domains":["www.sub.cn"],"product":"storefront","status":"rejected"}"#,
            "file sub.cn instead",
        ),
        (
            r#"{"domains":["p.cn"],"product":"storefront","status":"approved","icp_number":"京ICP备30000007号-1","entity":{"name":"甲","province":"浙"}}"#,
            "province",
        ),
        (
            r#"{"domains":["q.cn"],"product":"storefront","status":"rejected","website":{"name":"旺铺\r\nX-Evil: 1"}}"#,
            "control characters",
        ),
    ];
    for (line, want) in lines {
        let parsed = jsonl::parse(&format!("\n\n{line}"));
        assert!(
            matches!(&parsed, Err(e) if e.line == 3 && e.message.contains(want)),
            "{want}: {parsed:?}"
        );
    }
}

async fn a_failing_event_holds_back_only_its_own_filing(backend: Backend) {
    let outbox = backend.outbox();
    let a = submit(&backend, &["order-a.cn"]).await;
    let b = submit(&backend, &["order-b.cn"]).await;
    step(&backend, a.id, initial(true)).await;
    let filing_of = |event: &icpgate::registry::OutboxEvent| {
        let payload: Value = serde_json::from_str(&event.payload).expect("payload");
        (
            payload["filing_id"].as_i64(),
            payload["to"].as_str().map(str::to_owned),
        )
    };
    let due = outbox.due(now_ms(), 10).await.expect("due");
    let seen: Vec<_> = due.iter().map(filing_of).collect();
    assert_eq!(
        seen,
        [
            (Some(a.id), Some("initial_review".to_owned())),
            (Some(b.id), Some("initial_review".to_owned()))
        ],
        "a's second event waits for its first"
    );
    // a's first event fails: b goes on, a's second still waits.
    let later = now_ms() + 3_600_000;
    outbox
        .failed(due[0].id, later, "503")
        .await
        .expect("failed");
    outbox.delivered(due[1].id, now_ms()).await.expect("ack");
    assert!(outbox.due(now_ms(), 10).await.expect("due").is_empty());
    let retry = outbox.due(later, 10).await.expect("due");
    assert_eq!(retry.iter().map(|e| e.id).collect::<Vec<_>>(), [due[0].id]);
    outbox.delivered(retry[0].id, later).await.expect("ack");
    let next = outbox.due(later, 10).await.expect("due");
    let seen: Vec<_> = next.iter().map(filing_of).collect();
    assert_eq!(seen, [(Some(a.id), Some("authority_review".to_owned()))]);
}

async fn a_filing_password_is_kept_sealed_until_initial_review_ends(backend: Backend) {
    let registry = &backend.registry;
    let password = |text: &str| FilingPassword::new(text.into()).expect("password");
    let mut access = submission(&["password.cn"]);
    access.kind = Kind::AccessExisting;
    access.icp_number = Some(icp("京ICP备10101010号-3"));
    access.filing_password = Some(password("Sekret-Filing-PW-7781"));
    let id = registry
        .submit(access, "tester")
        .await
        .expect("submit")
        .filing
        .id;
    assert_eq!(
        registry.filing_password(id).await.expect("password"),
        Some(password("Sekret-Filing-PW-7781"))
    );
    // Never in the document: not in a read, an export or the outbox.
    let exported = jsonl::render(&registry.export().await.expect("export"));
    let events = backend.outbox().due(now_ms(), 100).await.expect("due");
    for text in [
        exported,
        format!("{:?}", get(&backend, id).await),
        format!("{events:?}"),
    ] {
        assert!(!text.contains("Sekret"), "{text}");
    }
    // Initial review ends (here: rejected): the password is erased, and the history
    // records that the reviewer had it to verify.
    let rejected = step(&backend, id, initial(false)).await;
    assert_eq!(registry.filing_password(id).await.expect("password"), None);
    let last = rejected.history.last().expect("history");
    assert_eq!(last.actor, "reviewer");
    assert_eq!(
        last.reason.as_deref(),
        Some("材料不全 (filing password verified at initial review, then erased)")
    );
    // A resubmission with a corrected number brings a new one, kept until the review ends.
    let resubmit = Action::Resubmit {
        entity: None,
        website: None,
        product: None,
        icp_number: Some(icp("京ICP备10101011号-3")),
        filing_password: Some(password("Corrected-PW-1")),
    };
    step(&backend, id, resubmit).await;
    assert_eq!(
        registry.filing_password(id).await.expect("password"),
        Some(password("Corrected-PW-1"))
    );
    step(&backend, id, initial(true)).await;
    assert_eq!(registry.filing_password(id).await.expect("password"), None);
    // A new filing carries none.
    let refused = registry
        .transition(
            submit(&backend, &["no-password.cn"]).await.id,
            Action::Resubmit {
                entity: None,
                website: None,
                product: None,
                icp_number: None,
                filing_password: Some(password("x-password")),
            },
            "tester",
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

async fn an_entity_change_is_reviewed_while_the_filing_keeps_serving(backend: Backend) {
    let zhe = Entity {
        province: Some("浙".into()),
        ..entity("杭州示例科技有限公司", Some("91330100MA27XXXX1X"))
    };
    let filing = submit_by(&backend, &["renamed.cn"], zhe.clone()).await;
    step(&backend, filing.id, initial(true)).await;
    step(&backend, filing.id, authority_pass("浙ICP备30000011号-1")).await;
    let renamed = Entity {
        name: "杭州新名科技有限公司".into(),
        ..zhe.clone()
    };
    let change = Action::ChangeDetails {
        entity: Some(renamed.clone()),
        website: None,
    };
    step(&backend, filing.id, change).await;
    // Stored as pending: still approved (served) under the registered name.
    let stored = get(&backend, filing.id).await;
    assert_eq!(
        (stored.status, stored.entity.name.as_str()),
        (Status::Approved, "杭州示例科技有限公司")
    );
    let pending = stored.pending_change.as_ref().map(|p| p.entity.clone());
    assert_eq!(pending, Some(renamed));
    let lookup = backend.registry.lookup(&domain("renamed.cn")).await;
    let served = lookup.expect("lookup").filing.map(|f| f.status);
    assert_eq!(served, Some(Status::Approved));
    step(&backend, filing.id, initial(true)).await;
    let approval = Action::AuthorityReview {
        approve: true,
        icp_number: None,
        reason: None,
    };
    let applied = step(&backend, filing.id, approval).await;
    assert_eq!(applied.entity.name, "杭州新名科技有限公司");
    assert_eq!(applied.pending_change, None);
    assert_eq!(applied.icp_number, Some(icp("浙ICP备30000011号-1")));
    // Submission, two reviews, approval, then the change, its two reviews.
    assert_eq!(applied.history.len(), 6, "{:?}", applied.history);
}

async fn every_write_bumps_the_revision_and_is_replayed_in_order(backend: Backend) {
    let registry = &backend.registry;
    let start = revision(&backend).await;
    let a = submit(&backend, &["a.cn"]).await;
    let r1 = revision(&backend).await;
    let b = submit(&backend, &["b.cn", "b.com.cn"]).await;
    let r2 = revision(&backend).await;
    step(&backend, a.id, initial(true)).await;
    let r3 = revision(&backend).await;
    assert!(start < r1 && r1 < r2 && r2 < r3, "{start} {r1} {r2} {r3}");
    let _ = registry.transition(a.id, resubmit(), "x").await;
    assert_eq!(
        revision(&backend).await,
        r3,
        "a refused write bumps nothing"
    );

    // One change per filing, at its latest revision, oldest first.
    let changes = registry.changes_since(start).await.expect("changes");
    let seen: Vec<(i64, Vec<String>)> = changes
        .into_iter()
        .map(|c| (c.revision, c.domains))
        .collect();
    assert_eq!(seen, vec![(r2, b.domains.clone()), (r3, a.domains.clone())]);
    let since_r2 = registry.changes_since(r2).await.expect("changes");
    assert_eq!(since_r2.len(), 1);
    assert_eq!(since_r2[0].revision, r3);
    assert!(registry
        .changes_since(r3)
        .await
        .expect("changes")
        .is_empty());
    let _ = r1;
}

async fn the_outbox_enqueues_each_change_and_acks_deliveries(backend: Backend) {
    let outbox = backend.outbox();
    assert_eq!(outbox.pending().await.expect("pending"), 0);
    assert_eq!(outbox.next_due().await.expect("next_due"), None);
    let filing = submit(&backend, &["notify.cn"]).await;
    step(&backend, filing.id, initial(true)).await;
    // Refusals enqueue nothing.
    let _ = backend
        .registry
        .transition(filing.id, resubmit(), "x")
        .await;
    let _ = backend
        .registry
        .submit(submission(&["notify.cn"]), "tester")
        .await;
    assert_eq!(outbox.pending().await.expect("pending"), 2);

    // One filing's events go in order: the second is due once the first is delivered.
    let first = outbox.due(now_ms(), 10).await.expect("due");
    assert_eq!(first.len(), 1, "{first:?}");
    let later = now_ms() + 3_600_000;
    outbox.delivered(first[0].id, 1_000).await.expect("ack");
    let second = outbox.due(now_ms(), 10).await.expect("due");
    assert_eq!(second.len(), 1, "{second:?}");
    let due = [first[0].clone(), second[0].clone()];
    assert!(due[0].id < due[1].id, "oldest first");
    assert!(due.iter().all(|e| e.attempts == 0));
    let payloads: Vec<Value> = due
        .iter()
        .map(|e| serde_json::from_str(&e.payload).expect("payload is JSON"))
        .collect();
    for (event, payload) in due.iter().zip(&payloads) {
        assert_eq!(payload["event_id"], event.id);
        assert_eq!(payload["filing_id"], filing.id);
        assert_eq!(payload["domains"], serde_json::json!(["notify.cn"]));
        assert!(
            !event.payload.contains("示例"),
            "no personal data: {}",
            event.payload
        );
    }
    assert_eq!(payloads[0]["to"], "initial_review");
    assert_eq!(payloads[0]["from"], Value::Null);
    assert_eq!(payloads[1]["from"], "initial_review");
    assert_eq!(payloads[1]["to"], "authority_review");
    assert_eq!(payloads[1]["actor"], "reviewer");

    outbox
        .failed(due[1].id, later, "connection refused")
        .await
        .expect("failed");
    assert_eq!(outbox.pending().await.expect("pending"), 1);
    assert_eq!(outbox.next_due().await.expect("next_due"), Some(later));
    assert!(outbox.due(now_ms(), 10).await.expect("due").is_empty());
    let retried = outbox.due(later, 10).await.expect("due");
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].attempts, 1);

    // Delivered at t=1000: kept by a cut at 1000, pruned by one after it; the
    // pending event is never pruned, however late the cut.
    assert_eq!(outbox.prune_delivered(1_000).await.expect("prune"), 0);
    assert_eq!(outbox.prune_delivered(1_001).await.expect("prune"), 1);
    assert_eq!(outbox.prune_delivered(i64::MAX).await.expect("prune"), 0);
    assert_eq!(outbox.pending().await.expect("pending"), 1);
}

async fn counts_cover_every_status(backend: Backend) {
    let registry = &backend.registry;
    let empty = registry.counts_by_status().await.expect("counts");
    assert_eq!(empty.len(), Status::ALL.len());
    assert!(empty.values().all(|n| *n == 0));

    submit(&backend, &["one.cn"]).await;
    submit(&backend, &["two.cn"]).await;
    let approved = approved(&backend, &["three.cn"], "浙ICP备20231234号-1").await;
    let rejected = submit(&backend, &["four.cn"]).await;
    step(&backend, rejected.id, initial(false)).await;
    step(&backend, approved.id, Action::Disconnect { reason: None }).await;

    let counts = registry.counts_by_status().await.expect("counts");
    let want = [
        (Status::InitialReview, 2),
        (Status::AuthorityReview, 0),
        (Status::Approved, 0),
        (Status::Rejected, 1),
        (Status::Abandoned, 0),
        (Status::Cancelled, 0),
        (Status::Disconnected, 1),
    ];
    for (status, n) in want {
        assert_eq!(counts.get(&status), Some(&n), "{status}");
    }
}

async fn list_filters_by_status_and_domain_in_id_order(backend: Backend) {
    let registry = &backend.registry;
    let a = submit(&backend, &["a.cn", "shared.cn"]).await;
    let b = submit(&backend, &["b.cn"]).await;
    let c = submit(&backend, &["c.cn"]).await;
    step(&backend, b.id, initial(true)).await;
    step(&backend, a.id, Action::Abandon { reason: None }).await;
    let d = submit(&backend, &["shared.cn"]).await;

    let ids = |filings: Vec<Filing>| filings.into_iter().map(|f| f.id).collect::<Vec<_>>();
    let all = registry.list(&ListFilter::default()).await.expect("list");
    assert_eq!(ids(all), vec![a.id, b.id, c.id, d.id]);
    let pending = ListFilter {
        status: Some(Status::InitialReview),
        ..ListFilter::default()
    };
    assert_eq!(
        ids(registry.list(&pending).await.expect("list")),
        vec![c.id, d.id]
    );
    // A domain lists every filing that ever named it, live or not.
    let shared = ListFilter {
        domain: Some(domain("www.shared.cn")),
        ..ListFilter::default()
    };
    assert_eq!(
        ids(registry.list(&shared).await.expect("list")),
        vec![a.id, d.id]
    );
    let both = ListFilter {
        domain: Some(domain("shared.cn")),
        status: Some(Status::Abandoned),
        limit: None,
        after: None,
    };
    assert_eq!(ids(registry.list(&both).await.expect("list")), vec![a.id]);
    let first_two = ListFilter {
        limit: Some(2),
        ..ListFilter::default()
    };
    assert_eq!(
        ids(registry.list(&first_two).await.expect("list")),
        vec![a.id, b.id]
    );
    // Keyset pages: after the cursor id, filters still applied; past the end, none.
    let pages = [
        (None, Some(b.id), Some(2), vec![c.id, d.id]),
        (Some(Status::InitialReview), Some(c.id), None, vec![d.id]),
        (None, Some(a.id - 1), Some(1), vec![a.id]),
        (None, Some(d.id), Some(5), vec![]),
    ];
    for (status, after, limit, want) in pages {
        let page = ListFilter {
            status,
            after,
            limit,
            ..ListFilter::default()
        };
        assert_eq!(
            ids(registry.list(&page).await.expect("list")),
            want,
            "{page:?}"
        );
    }

    let mut domains = registry.filed_domains().await.expect("domains");
    domains.sort();
    assert_eq!(domains, vec!["a.cn", "b.cn", "c.cn", "shared.cn"]);
    // Streamed in batches: the same domains (a shared one may come twice).
    let (batches, mut received) = tokio::sync::mpsc::channel(1);
    let read = registry.filed_domain_batches(batches);
    let collect = async {
        let mut all = Vec::new();
        while let Some(batch) = received.recv().await {
            all.extend(batch);
        }
        all
    };
    let (read, mut streamed) = tokio::join!(read, collect);
    read.expect("filed domain batches");
    streamed.sort();
    streamed.dedup();
    assert_eq!(streamed, domains);
}

/// `n` import lines, one filing each (`bulk-<i>.cn`), every fourth approved.
fn bulk_lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let status = if i % 4 == 0 {
                r#""approved","icp_number":"京ICP备87654321号-2""#
            } else {
                r#""initial_review""#
            };
            format!(r#"{{"domains":["bulk-{i}.cn"],"product":"storefront","status":{status}}}"#)
        })
        .collect()
}

/// The bulk paths store chunks of hundreds of records at a time; a refusal deep in
/// a later chunk is still named at its line, and leaves nothing stored.
async fn a_large_import_is_all_or_nothing_past_its_first_chunk(backend: Backend) {
    let registry = &backend.registry;
    let before = revision(&backend).await;
    let mut lines = bulk_lines(5000);
    // Line 4001 claims line 1's live domain; line 4501 reuses an id.
    lines[4000] =
        r#"{"domains":["bulk-0.cn"],"product":"storefront","status":"initial_review"}"#.into();
    let clash = registry
        .import(jsonl::parse(&lines.join("\n")).expect("parse"))
        .await;
    match clash {
        Err(RegistryError::AtLine { line: 4001, source }) => {
            assert!(
                matches!(*source, RegistryError::DomainTaken { .. }),
                "{source:?}"
            )
        }
        other => panic!("want line 4001 DomainTaken, got {other:?}"),
    }
    assert!(registry.is_empty().await.expect("is_empty"));
    assert_eq!(revision(&backend).await, before, "nothing was written");

    let lines = bulk_lines(5000);
    let count = registry
        .import(jsonl::parse(&lines.join("\n")).expect("parse"))
        .await;
    assert_eq!(count.expect("import"), 5000);
    assert_eq!(
        revision(&backend).await,
        before + 5000,
        "one revision per filing"
    );
    let all = registry.export().await.expect("export");
    assert_eq!(all.len(), 5000);
    assert!(
        all.windows(2).all(|w| w[0].id < w[1].id),
        "ids in import order"
    );
    assert_eq!(all[4999].domains, vec!["bulk-4999.cn".to_string()]);
    let held = registry
        .lookup(&domain("bulk-4000.cn"))
        .await
        .expect("lookup");
    assert_eq!(held.filing.map(|f| f.status), Some(Status::Approved));

    let taken = format!(
        r#"{{"id":{},"domains":["other.cn"],"product":"storefront","status":"rejected"}}"#,
        all[10].id
    );
    let mut again = bulk_lines(600)
        .into_iter()
        .map(|l| l.replace("bulk-", "more-"))
        .collect::<Vec<_>>();
    again[450] = taken;
    match registry
        .import(jsonl::parse(&again.join("\n")).expect("parse"))
        .await
    {
        Err(RegistryError::AtLine { line: 451, source }) => {
            assert!(
                matches!(*source, RegistryError::IdTaken(id) if id == all[10].id),
                "{source:?}"
            )
        }
        other => panic!("want line 451 IdTaken, got {other:?}"),
    }
    assert_eq!(registry.export().await.expect("export").len(), 5000);
}

async fn a_corrupt_document_is_reported_not_panicked(backend: Backend) {
    let registry = &backend.registry;
    let broken = submit(&backend, &["broken.cn"]).await;
    let intact = submit(&backend, &["intact.cn"]).await;
    backend.corrupt(broken.id).await;

    let is_corrupt = |result: Result<(), RegistryError>| match result {
        Err(RegistryError::Corrupt { id, .. }) => {
            assert_eq!(id, broken.id, "the error names the filing");
            true
        }
        other => panic!("want Corrupt, got {other:?}"),
    };
    assert!(is_corrupt(registry.get(broken.id).await.map(drop)));
    assert!(is_corrupt(
        registry.lookup(&domain("broken.cn")).await.map(drop)
    ));
    assert!(is_corrupt(
        registry.list(&ListFilter::default()).await.map(drop)
    ));
    let before = revision(&backend).await;
    assert!(is_corrupt(
        registry
            .transition(broken.id, initial(true), "x")
            .await
            .map(drop)
    ));
    assert_eq!(revision(&backend).await, before, "nothing was written");
    let error = registry.get(broken.id).await.expect_err("corrupt");
    assert!(error.is_unavailable(), "a store failure, not a refusal");

    // The other filings still read and change.
    assert_eq!(get(&backend, intact.id).await, intact);
    let moved = step(&backend, intact.id, initial(true)).await;
    assert_eq!(moved.status, Status::AuthorityReview);
}

/// Entries into initial review around a weekend and China's National Day week
/// (2024-09-28 … 10-07; holidays count as working days, see `working_days`), in
/// UTC and in +08:00, on second boundaries and with a fraction.
const REVIEW_ENTRIES: &[&str] = &[
    "2024-09-26T01:00:00Z",
    "2024-09-27T02:30:00Z",
    "2024-09-27T15:59:59Z",
    "2024-09-28T04:00:00+08:00",
    "2024-09-29T23:59:59+08:00",
    "2024-09-30T00:00:00+08:00",
    "2024-09-30T15:59:59Z",
    "2024-10-01T09:00:00+08:00",
    "2024-10-02T03:04:05.678Z",
    "2024-10-04T16:00:00Z",
    "2024-10-07T08:00:00+08:00",
];

/// An import line in `status` with `history` as `(at, to)` steps.
fn line_with_history(
    domain: &str,
    status: &str,
    updated_at: &str,
    history: &[(&str, &str)],
) -> String {
    let history: Vec<Value> = history
        .iter()
        .map(|(at, to)| serde_json::json!({"at": at, "actor": "t", "from": null, "to": to, "reason": null}))
        .collect();
    serde_json::json!({
        "domains": [domain], "product": "storefront", "status": status,
        "updated_at": updated_at, "history": history,
    })
    .to_string()
}

/// The overdue gauge's indexed count (`review_since <= overdue_cutoff`) equals the
/// count that reads every filing in review (`working_days::overdue_initial_reviews`)
/// at every hour over three weeks and at each entry's exact boundary — for
/// imported filings (bulk path), submissions, resubmissions, filings that left
/// review, and timestamps that do not read.
async fn the_overdue_count_by_index_equals_the_count_by_reading(backend: Backend) {
    use icpgate::model::working_days::{overdue_cutoff_ms, overdue_initial_reviews, parse_rfc3339};
    let registry = &backend.registry;
    let mut lines: Vec<String> = REVIEW_ENTRIES
        .iter()
        .enumerate()
        .map(|(i, at)| {
            line_with_history(
                &format!("entry-{i}.cn"),
                "initial_review",
                at,
                &[(at, "initial_review")],
            )
        })
        .collect();
    // Resubmitted: the last entry into review counts, not the first.
    lines.push(line_with_history(
        "resubmitted.cn",
        "initial_review",
        "2024-10-03T02:00:00Z",
        &[
            ("2024-09-20T02:00:00Z", "initial_review"),
            ("2024-09-21T02:00:00Z", "rejected"),
            ("2024-10-03T02:00:00Z", "initial_review"),
        ],
    ));
    // An entry that does not read: `updated_at` decides; neither reads: never counted.
    lines.push(line_with_history(
        "by-updated.cn",
        "initial_review",
        "2024-09-30T01:00:00Z",
        &[("garbage", "initial_review")],
    ));
    lines.push(line_with_history(
        "unreadable-time.cn",
        "initial_review",
        "garbage",
        &[("garbage", "initial_review")],
    ));
    // Left initial review: never counted, however old.
    lines.push(line_with_history(
        "moved-on.cn",
        "authority_review",
        "2024-09-01T02:00:00Z",
        &[
            ("2024-09-01T01:00:00Z", "initial_review"),
            ("2024-09-01T02:00:00Z", "authority_review"),
        ],
    ));
    registry
        .import(jsonl::parse(&lines.join("\n")).expect("parse"))
        .await
        .expect("import");
    // Written by the workflow: a submission, a resubmission, one taken out of review.
    let submitted = submit(&backend, &["submitted-now.cn"]).await;
    let again = submit(&backend, &["resubmitted-now.cn"]).await;
    step(&backend, again.id, initial(false)).await;
    step(&backend, again.id, resubmit()).await;
    let passed = submit(&backend, &["passed-now.cn"]).await;
    step(&backend, passed.id, initial(true)).await;

    let filings = registry.export().await.expect("export");
    let compare = |now: i64| {
        let filings = &filings;
        async move {
            let by_index = registry
                .initial_reviews_entered_by(overdue_cutoff_ms(now))
                .await
                .expect("count");
            (by_index, overdue_initial_reviews(filings, now) as u64)
        }
    };
    let start = parse_rfc3339("2024-09-25T00:00:00Z").expect("start");
    let mut nows: Vec<i64> = (0..21 * 24).map(|h| start + h * 3600).collect();
    for at in REVIEW_ENTRIES {
        let since = parse_rfc3339(at).expect("entry");
        for days in [1, 2, 3, 4, 5] {
            nows.extend([
                since + days * 86_400 - 1,
                since + days * 86_400,
                since + days * 86_400 + 1,
            ]);
        }
    }
    let real_now = submitted.history[0].at.clone();
    let real_now = parse_rfc3339(&real_now).expect("now");
    nows.extend([real_now, real_now + 86_400, real_now + 8 * 86_400]);
    let mut seen = std::collections::BTreeSet::new();
    for now in nows {
        let (by_index, by_reading) = compare(now).await;
        assert_eq!(by_index, by_reading, "overdue at {now}");
        seen.insert(by_reading);
    }
    assert!(
        seen.len() > 10,
        "the times cover many different counts: {seen:?}"
    );
    let (all_later, _) = compare(real_now + 8 * 86_400).await;
    // Everything in review with a readable entry: 11 entries, resubmitted,
    // by-updated, submitted-now, resubmitted-now.
    assert_eq!(all_later, 15);
}

async fn a_corrupt_document_stops_the_index_load_naming_it(backend: Backend) {
    let _ = submit(&backend, &["fine.cn"]).await;
    let broken = submit(&backend, &["broken.cn"]).await;
    let filed = FiledDomains::load(backend.registry.as_ref())
        .await
        .expect("an intact registry loads");
    assert_eq!(filed.len(), 2);
    backend.corrupt(broken.id).await;
    match FiledDomains::load(backend.registry.as_ref()).await {
        Err(error @ RegistryError::Corrupt { .. }) => {
            assert!(
                matches!(error, RegistryError::Corrupt { id, .. } if id == broken.id),
                "{error:?}"
            );
            assert!(
                error.to_string().contains(&format!("filing {}", broken.id)),
                "{error}"
            );
        }
        Err(other) => panic!("want Corrupt, got {other:?}"),
        Ok(_) => panic!("want Corrupt, got an index"),
    }
}

/// A change whose document does not read is named and its domains answered
/// `not_filed` (fail closed); the changes after it still apply; once the filing
/// reads again its domains are filed again.
async fn a_corrupt_document_does_not_stall_the_change_feed(backend: Backend) {
    use icpgate::gate::change_feed::catch_up;
    use icpgate::gate::decision::RulePolicy;
    use icpgate::gate::decision_cache::{CacheSettings, DecisionCache};
    use icpgate::gate::{GateState, HostVerdict};
    use icpgate::observe::metrics::Metrics;

    let registry = &backend.registry;
    let broken = approved(&backend, &["broken.cn"], "京ICP备12345678号-1").await;
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let settings = CacheSettings {
        ttl: std::time::Duration::from_secs(60),
        negative_ttl: std::time::Duration::from_secs(60),
        stale_if_error: std::time::Duration::from_secs(600),
        max_entries: 1000,
    };
    let cache = Arc::new(DecisionCache::new(
        Arc::clone(registry),
        Arc::clone(&metrics),
        settings,
    ));
    let filed = Arc::new(FiledDomains::load(registry.as_ref()).await.expect("load"));
    let gate = GateState::new(cache, filed, Arc::clone(&metrics));
    let reason = |verdict: HostVerdict| verdict.verdict.reason.as_str();
    let policy = RulePolicy::default();
    assert_eq!(
        reason(gate.verdict_for_host("broken.cn", policy).await),
        "filed"
    );
    let start = revision(&backend).await;

    backend
        .rewrite(broken.id, r#"{"id": "not a filing"}"#)
        .await;
    // Imported, not submitted: the memory backend classifies a submission by
    // reading every filing, which the unreadable one would refuse.
    let later = r#"{"domains":["later.cn"],"product":"storefront","status":"initial_review"}"#;
    registry
        .import(jsonl::parse(later).expect("parse"))
        .await
        .expect("import");
    let later = registry
        .lookup(&domain("later.cn"))
        .await
        .expect("lookup")
        .filing
        .expect("imported");
    let changes = registry
        .changes_since(start)
        .await
        .expect("changes never fail on a bad row");
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0].filing_id, broken.id);
    assert_eq!(
        changes[0].domains,
        vec!["broken.cn".to_string()],
        "from its domain rows"
    );
    assert!(changes[0]
        .unreadable
        .as_deref()
        .is_some_and(|e| e.contains(&format!("filing {}", broken.id))));
    assert_eq!(
        (changes[1].filing_id, changes[1].unreadable.as_deref()),
        (later.id, None)
    );

    let reached = catch_up(registry.as_ref(), &gate, start).await;
    assert_eq!(
        reached,
        revision(&backend).await,
        "the feed went past the bad row"
    );
    assert!(
        gate.filed.contains(&domain("later.cn")),
        "later changes applied"
    );
    assert!(!gate.filed.contains(&domain("broken.cn")));
    assert_eq!(
        reason(gate.verdict_for_host("broken.cn", policy).await),
        "not_filed",
        "fail closed, even over a cached answer"
    );
    assert_eq!(metrics.registry_unreadable_filings.get(), 1);

    // Repaired: the next change of the filing reads, and its domains are filed again.
    let doc = serde_json::to_string(&broken).expect("doc");
    backend.rewrite(broken.id, &doc).await;
    let reached = catch_up(registry.as_ref(), &gate, reached).await;
    assert_eq!(reached, revision(&backend).await);
    assert!(gate.filed.contains(&domain("broken.cn")));
    assert_eq!(
        reason(gate.verdict_for_host("broken.cn", policy).await),
        "filed"
    );
    assert_eq!(metrics.registry_unreadable_filings.get(), 0);
}
