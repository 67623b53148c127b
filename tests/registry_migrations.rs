//! The contract these tests pin: a registry written by the release before versioned
//! migrations (its DDL is copied below as a fixture, with filings written the way
//! that release wrote them) opens with this release and is upgraded in place —
//! every filing reads back exactly as stored, lookups and the one-live-filing rule
//! still hold, the filing type of an access-existing filing is known, a known entity
//! is recognised — and opening it again changes nothing. A schema newer than this
//! release is refused; nodes opening one registry at once migrate it once.
//!
//! SQLite always; PostgreSQL under `ICPGATE_TEST_PG_URL` (required when `CI=true`).

mod common;

use std::sync::Arc;

use common::PgDatabase;
use icpgate::model::filing::{Filing, Kind};
use icpgate::model::host::HostName;
use icpgate::model::working_days;
use icpgate::registry::postgres::PostgresRegistry;
use icpgate::registry::sqlite::SqliteRegistry;
use icpgate::registry::{jsonl, FilingType, Registry, RegistryError, StorageError};

/// The SQLite schema of the release before migrations (`src/registry/sqlite.rs`,
/// `SCHEMA`, at commit 274b19c), verbatim.
const OLD_SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS filings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS filing_domains (
    domain TEXT NOT NULL,
    filing_id INTEGER NOT NULL REFERENCES filings(id),
    live INTEGER NOT NULL,
    PRIMARY KEY (domain, filing_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS one_live_filing_per_domain
    ON filing_domains(domain) WHERE live = 1;
CREATE INDEX IF NOT EXISTS filings_by_revision ON filings(revision);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    filing_id INTEGER NOT NULL,
    payload TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    delivered_at_ms INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(next_attempt_at_ms)
    WHERE delivered_at_ms IS NULL;
";

/// The PostgreSQL schema of the same release (`src/registry/postgres.rs`, `SCHEMA`).
const OLD_POSTGRES_SCHEMA: &str = "
SELECT pg_advisory_xact_lock(7253019);
CREATE TABLE IF NOT EXISTS icpgate_filings (
    id BIGSERIAL PRIMARY KEY,
    status TEXT NOT NULL,
    doc JSONB NOT NULL,
    revision BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS icpgate_filing_domains (
    domain TEXT NOT NULL,
    filing_id BIGINT NOT NULL REFERENCES icpgate_filings(id),
    live BOOLEAN NOT NULL,
    PRIMARY KEY (domain, filing_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS icpgate_one_live_filing_per_domain
    ON icpgate_filing_domains(domain) WHERE live;
CREATE INDEX IF NOT EXISTS icpgate_filings_by_revision ON icpgate_filings(revision);
CREATE TABLE IF NOT EXISTS icpgate_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS icpgate_outbox (
    id BIGSERIAL PRIMARY KEY,
    filing_id BIGINT NOT NULL,
    payload TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    delivered_at_ms BIGINT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS icpgate_outbox_pending ON icpgate_outbox(next_attempt_at_ms)
    WHERE delivered_at_ms IS NULL;
INSERT INTO icpgate_meta (key, value) VALUES ('revision', 0) ON CONFLICT DO NOTHING;
";

/// Filings of every shape the old release stored: approved with a certificate
/// number, an access-existing filing, several domains, an IDN domain, and a domain
/// held by a live filing after an abandoned one named it.
const OLD_FILINGS: &str = r#"{"id":3,"domains":["old-approved.cn","old-approved.com.cn"],"product":"storefront","status":"approved","icp_number":"浙ICP备12345678号-1","entity":{"name":"杭州旧时科技有限公司","type":"enterprise","certificate_number":"91330100MA27OLD01X","province":"浙"},"website":{"name":"旧店"}}
{"id":5,"kind":"access_existing","domains":["moved-in.cn"],"product":"corporate_site","status":"initial_review","icp_number":"京ICP备10101010号-3","entity":{"name":"北京迁入有限公司","type":"enterprise"}}
{"id":8,"domains":["例子.中国"],"product":"corporate_site","status":"authority_review","entity":{"name":"个人","type":"individual"}}
{"id":9,"domains":["handed-on.cn"],"product":"storefront","status":"abandoned"}
{"id":12,"domains":["handed-on.cn","rejected.cn"],"product":"storefront","status":"rejected","entity":{"name":"被退回公司","type":"enterprise"}}
{"id":13,"domains":["gone.cn"],"product":"storefront","status":"cancelled","icp_number":"粤ICP备7654321号-2"}"#;

/// The filings of a JSON Lines fixture, with the ids it gives.
fn fixture(lines: &str) -> Vec<Filing> {
    jsonl::parse(lines)
        .expect("fixture parses")
        .into_iter()
        .map(|record| {
            let mut filing = record.filing;
            filing.id = record.id.expect("fixture ids");
            filing
        })
        .collect()
}

fn old_filings() -> Vec<Filing> {
    fixture(OLD_FILINGS)
}

/// Write `filings` into a SQLite file the way the old release did.
fn write_old_sqlite(path: &std::path::Path, filings: &[Filing]) {
    let mut conn = rusqlite::Connection::open(path).expect("open sqlite");
    conn.execute_batch(OLD_SQLITE_SCHEMA).expect("old schema");
    let tx = conn.transaction().expect("tx");
    for filing in filings {
        let revision: i64 = tx
            .query_row(
                "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
                [],
                |row| row.get(0),
            )
            .expect("revision");
        tx.execute(
            "INSERT INTO filings (id, status, doc, revision) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                filing.id,
                filing.status.as_str(),
                serde_json::to_string(filing).expect("doc"),
                revision
            ],
        )
        .expect("filing");
        for domain in &filing.domains {
            tx.execute(
                "INSERT INTO filing_domains (domain, filing_id, live) VALUES (?1, ?2, ?3)",
                rusqlite::params![domain, filing.id, filing.status.is_live()],
            )
            .expect("domain");
        }
    }
    tx.commit().expect("commit");
}

fn sqlite_versions(path: &std::path::Path) -> Vec<(i64, i64)> {
    let conn = rusqlite::Connection::open(path).expect("open sqlite");
    let mut stmt = conn
        .prepare("SELECT version, applied_at_ms FROM schema_version ORDER BY version")
        .expect("prepare");
    let rows = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

/// Everything a reader can see of the old filings after the upgrade, checked
/// filing by filing; then the upgraded indexes and columns at work.
async fn check_upgraded(registry: &dyn Registry, filings: &[Filing], revision: i64) {
    assert_eq!(registry.revision().await.expect("revision"), revision);
    for filing in filings {
        let stored = registry.get(filing.id).await.expect("get");
        assert_eq!(stored.as_ref(), Some(filing), "filing {}", filing.id);
        let want_type = (filing.kind == Kind::AccessExisting).then_some(FilingType::AccessExisting);
        assert_eq!(
            registry.filing_type(filing.id).await.expect("type"),
            want_type,
            "filing {}",
            filing.id
        );
    }
    assert_eq!(&registry.export().await.expect("export"), filings);
    // The counts kept from migration 3 on start from what was stored.
    let counts = registry.counts_by_status().await.expect("counts");
    for (status, n) in &counts {
        let stored = filings.iter().filter(|f| f.status == *status).count();
        assert_eq!(*n, stored as u64, "{status}");
    }
    // Each domain resolves to its live filing, else its latest one.
    for (domain, id) in [
        ("old-approved.com.cn", 3),
        ("moved-in.cn", 5),
        ("xn--fsqu00a.xn--fiqs8s", 8),
        ("handed-on.cn", 12),
        ("gone.cn", 13),
    ] {
        let domain = HostName::parse(domain)
            .ok()
            .and_then(|h| h.registrable_domain())
            .expect("domain");
        let found = registry.lookup(&domain).await.expect("lookup");
        assert_eq!(found.filing.map(|f| f.id), Some(id), "{domain:?}");
    }

    // An old approved filing's number is recognised as its entity's (migration 4).
    let rival = r#"{"domains":["rival-number.cn"],"product":"storefront","status":"approved","icp_number":"浙ICP备12345678号-2","entity":{"name":"另一家公司","certificate_number":"91330100MA27NEW02X"}}"#;
    let clash = registry.import(jsonl::parse(rival).expect("parse")).await;
    assert!(
        matches!(&clash, Err(RegistryError::AtLine { line: 1, source }) if matches!(**source, RegistryError::NumberTaken { filing_id: 3, .. })),
        "{clash:?}"
    );

    // The one-live-filing rule still holds over the old rows.
    let clash = registry
        .import(
            jsonl::parse(
                r#"{"domains":["rejected.cn"],"product":"storefront","status":"initial_review"}"#,
            )
            .expect("parse"),
        )
        .await;
    assert!(
        matches!(&clash, Err(RegistryError::AtLine { line: 1, source }) if matches!(**source, RegistryError::DomainTaken { filing_id: 12, .. })),
        "{clash:?}"
    );
    // The old approved entity is recognised by its certificate number.
    let submission = icpgate::model::filing::Submission {
        kind: Kind::New,
        product: icpgate::model::filing::Product::Storefront,
        domains: vec!["second-site.cn".into()],
        icp_number: None,
        entity: icpgate::model::filing::Entity {
            name: "改名后的旧时科技".into(),
            certificate_number: Some("91330100ma27old01x".into()),
            ..Default::default()
        },
        website: icpgate::model::filing::Website {
            name: "第二个网站".into(),
            ..Default::default()
        },
        filing_password: None,
    };
    let submitted = registry.submit(submission, "tester").await.expect("submit");
    assert_eq!(submitted.filing_type, FilingType::NewWebsite);
    assert_eq!(
        registry
            .filing_type(submitted.filing.id)
            .await
            .expect("type"),
        Some(FilingType::NewWebsite),
        "a submission's filing type is stored"
    );
    assert!(submitted.filing.id > 13, "fresh ids after the old ones");
}

#[tokio::test]
async fn a_sqlite_registry_of_the_previous_release_upgrades_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    let filings = old_filings();
    write_old_sqlite(&path, &filings);

    let registry = SqliteRegistry::open(&path).expect("open old registry");
    let versions = sqlite_versions(&path);
    assert_eq!(
        versions.iter().map(|v| v.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    check_upgraded(&registry, &filings, 6).await;
    let revision = registry.revision().await.expect("revision");
    let everything = registry.export().await.expect("export");
    drop(registry);

    // A second open applies nothing and changes nothing.
    let again = SqliteRegistry::open(&path).expect("open again");
    assert_eq!(sqlite_versions(&path), versions, "no migration re-applied");
    assert_eq!(again.revision().await.expect("revision"), revision);
    assert_eq!(again.export().await.expect("export"), everything);
}

#[tokio::test]
async fn a_sqlite_registry_newer_than_this_release_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    drop(SqliteRegistry::open(&path).expect("create"));
    let conn = rusqlite::Connection::open(&path).expect("open sqlite");
    conn.execute(
        "INSERT INTO schema_version (version, name, applied_at_ms) VALUES (99, 'future', 0)",
        [],
    )
    .expect("future version");
    match SqliteRegistry::open(&path) {
        Err(RegistryError::Unavailable(StorageError::SchemaTooNew { found: 99, known })) => {
            assert!(known < 99)
        }
        Err(other) => panic!("want SchemaTooNew, got {other:?}"),
        Ok(_) => panic!("want SchemaTooNew, got an open registry"),
    }
}

#[tokio::test]
async fn processes_opening_one_sqlite_registry_at_once_migrate_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = Arc::new(dir.path().join("registry.db"));
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let path = Arc::clone(&path);
            std::thread::spawn(move || SqliteRegistry::open(&path).map(drop))
        })
        .collect();
    for open in opens {
        open.join().expect("thread").expect("open");
    }
    let versions: Vec<i64> = sqlite_versions(&path).iter().map(|v| v.0).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6]);
}

/// Filings in (and one out of) initial review as the old release stored them:
/// entered once, resubmitted, with an entry time or `updated_at` that does not
/// read, with a fraction of a second; migration 6 fills `review_since` from them.
const REVIEW_FILINGS: &str = r#"{"id":20,"domains":["entered.cn"],"product":"storefront","status":"initial_review","history":[{"at":"2024-06-03T01:00:00Z","actor":"a","from":null,"to":"initial_review","reason":null}]}
{"id":21,"domains":["resubmitted.cn"],"product":"storefront","status":"initial_review","history":[{"at":"2024-05-27T01:00:00Z","actor":"a","from":null,"to":"initial_review","reason":null},{"at":"2024-05-28T01:00:00Z","actor":"r","from":"initial_review","to":"rejected","reason":"x"},{"at":"2024-06-05T10:00:00+08:00","actor":"a","from":"rejected","to":"initial_review","reason":null}]}
{"id":22,"domains":["by-updated.cn"],"product":"storefront","status":"initial_review","updated_at":"2024-06-03T00:00:00Z","history":[{"at":"garbage","actor":"a","from":null,"to":"initial_review","reason":null}]}
{"id":23,"domains":["no-time.cn"],"product":"storefront","status":"initial_review","updated_at":"garbage","history":[{"at":"garbage","actor":"a","from":null,"to":"initial_review","reason":null}]}
{"id":24,"domains":["fraction.cn"],"product":"storefront","status":"initial_review","history":[{"at":"2024-06-04T03:04:05.678Z","actor":"a","from":null,"to":"initial_review","reason":null}]}
{"id":25,"domains":["moved-on.cn"],"product":"storefront","status":"authority_review","history":[{"at":"2024-06-01T00:00:00Z","actor":"a","from":null,"to":"initial_review","reason":null},{"at":"2024-06-01T01:00:00Z","actor":"r","from":"initial_review","to":"authority_review","reason":null}]}
{"id":26,"domains":["last-unreadable.cn"],"product":"storefront","status":"initial_review","updated_at":"2024-06-06T00:00:00Z","history":[{"at":"2024-06-01T00:00:00Z","actor":"a","from":null,"to":"initial_review","reason":null},{"at":"2024-06-02T00:00:00Z","actor":"r","from":"initial_review","to":"rejected","reason":"x"},{"at":"bad","actor":"a","from":"rejected","to":"initial_review","reason":null}]}"#;

fn review_filings() -> Vec<Filing> {
    fixture(REVIEW_FILINGS)
}

/// What migration 6 must have stored for each filing: the instant
/// `working_days::entered_initial_review` reads, in whole-second milliseconds,
/// while the filing is in initial review.
fn want_review_since(filings: &[Filing]) -> Vec<(i64, Option<i64>)> {
    filings
        .iter()
        .map(|f| {
            let since = (f.status == icpgate::model::filing::Status::InitialReview)
                .then(|| working_days::entered_initial_review(f))
                .flatten();
            (f.id, since.map(|s| s * 1000))
        })
        .collect()
}

/// The overdue count of an upgraded registry equals the count by reading.
async fn check_overdue_counts(registry: &dyn Registry, filings: &[Filing]) {
    for now in [
        "2024-06-04T02:00:00Z",
        "2024-06-05T05:00:00Z",
        "2024-06-07T00:00:00Z",
        "2024-06-12T00:00:00Z",
    ] {
        let now = working_days::parse_rfc3339(now).expect("now");
        let by_index = registry
            .initial_reviews_entered_by(working_days::overdue_cutoff_ms(now))
            .await
            .expect("count");
        assert_eq!(
            by_index,
            working_days::overdue_initial_reviews(filings, now) as u64,
            "at {now}"
        );
    }
}

#[tokio::test]
async fn a_sqlite_upgrade_stores_when_each_review_began() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    let filings = review_filings();
    write_old_sqlite(&path, &filings);
    let registry = SqliteRegistry::open(&path).expect("open old registry");
    let conn = rusqlite::Connection::open(&path).expect("open sqlite");
    let mut stmt = conn
        .prepare("SELECT id, review_since FROM filings ORDER BY id")
        .expect("prepare");
    let stored: Vec<(i64, Option<i64>)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(stored, want_review_since(&filings));
    assert!(stored.iter().filter(|(_, s)| s.is_some()).count() >= 5);
    check_overdue_counts(&registry, &filings).await;
}

// ---- PostgreSQL ----

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect postgres");
    tokio::spawn(connection);
    client
}

async fn pg_versions(url: &str) -> Vec<(i64, i64)> {
    let client = pg_client(url).await;
    let rows = client
        .query(
            "SELECT version, applied_at_ms FROM icpgate_schema_version ORDER BY version",
            &[],
        )
        .await
        .expect("versions");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Write `filings` into PostgreSQL the way the old release did.
async fn write_old_postgres(url: &str, filings: &[Filing]) {
    let mut client = pg_client(url).await;
    let tx = client.transaction().await.expect("tx");
    tx.batch_execute(OLD_POSTGRES_SCHEMA)
        .await
        .expect("old schema");
    for filing in filings {
        let revision: i64 = tx
            .query_one(
                "UPDATE icpgate_meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
                &[],
            )
            .await
            .expect("revision")
            .get(0);
        let doc = serde_json::to_value(filing).expect("doc");
        tx.execute(
            "INSERT INTO icpgate_filings (id, status, doc, revision) VALUES ($1, $2, $3, $4)",
            &[&filing.id, &filing.status.as_str(), &doc, &revision],
        )
        .await
        .expect("filing");
        for domain in &filing.domains {
            tx.execute(
                "INSERT INTO icpgate_filing_domains (domain, filing_id, live) VALUES ($1, $2, $3)",
                &[domain, &filing.id, &filing.status.is_live()],
            )
            .await
            .expect("domain");
        }
    }
    tx.execute(
        "SELECT setval(pg_get_serial_sequence('icpgate_filings', 'id'), 13)",
        &[],
    )
    .await
    .expect("sequence");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_postgres_registry_of_the_previous_release_upgrades_in_place() {
    let test = "registry_migrations::a_postgres_registry_of_the_previous_release_upgrades_in_place";
    let Some(db) = PgDatabase::create(test).await else {
        return;
    };
    let filings = old_filings();
    write_old_postgres(&db.url, &filings).await;

    let registry = PostgresRegistry::connect(&db.url).await.expect("connect");
    let versions = pg_versions(&db.url).await;
    assert_eq!(
        versions.iter().map(|v| v.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    check_upgraded(&registry, &filings, 6).await;
    let revision = registry.revision().await.expect("revision");
    let everything = registry.export().await.expect("export");

    let again = PostgresRegistry::connect(&db.url)
        .await
        .expect("connect again");
    assert_eq!(
        pg_versions(&db.url).await,
        versions,
        "no migration re-applied"
    );
    assert_eq!(again.revision().await.expect("revision"), revision);
    assert_eq!(again.export().await.expect("export"), everything);

    pg_client(&db.url)
        .await
        .execute(
            "INSERT INTO icpgate_schema_version (version, name, applied_at_ms) VALUES (99, 'future', 0)",
            &[],
        )
        .await
        .expect("future version");
    let refused = PostgresRegistry::connect(&db.url).await.map(drop);
    assert!(
        matches!(
            refused,
            Err(RegistryError::Unavailable(StorageError::SchemaTooNew {
                found: 99,
                ..
            }))
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn nodes_connecting_to_one_postgres_registry_at_once_migrate_it_once() {
    let test =
        "registry_migrations::nodes_connecting_to_one_postgres_registry_at_once_migrate_it_once";
    let Some(db) = PgDatabase::create(test).await else {
        return;
    };
    let connects: Vec<_> = (0..6)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { PostgresRegistry::connect(&url).await.map(drop) })
        })
        .collect();
    for connect in connects {
        connect.await.expect("task").expect("connect");
    }
    let versions: Vec<i64> = pg_versions(&db.url).await.iter().map(|v| v.0).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn a_postgres_upgrade_stores_when_each_review_began() {
    let test = "registry_migrations::a_postgres_upgrade_stores_when_each_review_began";
    let Some(db) = PgDatabase::create(test).await else {
        return;
    };
    let filings = review_filings();
    write_old_postgres(&db.url, &filings).await;
    let registry = PostgresRegistry::connect(&db.url).await.expect("connect");
    let rows = pg_client(&db.url)
        .await
        .query(
            "SELECT id, review_since FROM icpgate_filings ORDER BY id",
            &[],
        )
        .await
        .expect("query");
    let stored: Vec<(i64, Option<i64>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(stored, want_review_since(&filings));
    check_overdue_counts(&registry, &filings).await;
}
