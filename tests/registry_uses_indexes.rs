//! The contract these tests pin: every statement on a registry write or lookup path
//! (each backend's `sql::INDEXED`) reaches `filings` and `filing_domains` through an
//! index, so no write or lookup slows down as the registry grows; a full scan that
//! comes back fails here, named with its statement and plan.
//!
//! SQLite: `EXPLAIN QUERY PLAN` on a migrated registry; a `SCAN` of either table
//! fails. PostgreSQL (under `ICPGATE_TEST_PG_URL`; required when `CI=true`): the
//! generic plan (`plan_cache_mode = force_generic_plan`, what a prepared statement
//! runs) with sequential scans disabled, so a plan that still holds a `Seq Scan` of
//! either table has no index to use. Each check first proves it catches a scan.

mod common;

use common::PgDatabase;
use icpgate::registry::postgres::{self, PostgresRegistry};
use icpgate::registry::sqlite::{self, SqliteRegistry};

/// A statement known to scan `filings` whole, to prove each check can fail.
const SQLITE_SCAN: &str = "SELECT id FROM filings WHERE json_extract(doc, '$.website.name') = ?1";
const POSTGRES_SCAN: &str = "SELECT id FROM icpgate_filings WHERE doc->'website'->>'name' = $1";

/// The plan lines of `sql` that scan `filings` or `filing_domains` (under their
/// own name or the aliases the statements give them).
fn sqlite_scans(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
    let details: Vec<String> = stmt
        .query_map(rusqlite::params_from_iter(nulls), |row| {
            row.get::<_, String>(3)
        })
        .expect("plan")
        .collect::<Result<_, _>>()
        .expect("plan rows");
    details
        .into_iter()
        .filter(|detail| {
            let mut words = detail.split_whitespace();
            words.next() == Some("SCAN")
                && matches!(words.next(), Some("filings" | "filing_domains" | "f" | "d"))
        })
        .collect()
}

#[test]
fn every_sqlite_write_and_lookup_statement_uses_an_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    drop(SqliteRegistry::open(&path).expect("open"));
    let conn = rusqlite::Connection::open(&path).expect("open sqlite");

    assert!(
        !sqlite_scans(&conn, SQLITE_SCAN).is_empty(),
        "the check must catch a full scan"
    );
    let scanning: Vec<String> = sqlite::sql::INDEXED
        .iter()
        .filter_map(|(name, sql)| {
            let scans = sqlite_scans(&conn, sql);
            (!scans.is_empty()).then(|| format!("{name}: {scans:?}\n  {sql}"))
        })
        .collect();
    assert!(
        scanning.is_empty(),
        "full scans on a write or lookup path:\n{}",
        scanning.join("\n")
    );
}

/// The overdue gauge counts one range of the `(status, review_since)` index, not
/// every filing in review (which `filings_by_status` alone would read).
#[test]
fn the_sqlite_overdue_count_is_a_range_of_the_review_since_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    drop(SqliteRegistry::open(&path).expect("open"));
    let conn = rusqlite::Connection::open(&path).expect("open sqlite");
    let sql = sqlite::sql::INITIAL_REVIEWS_ENTERED_BY;
    let plan: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("plan")
        .query_map([rusqlite::types::Null], |row| row.get::<_, String>(3))
        .expect("plan")
        .collect::<Result<_, _>>()
        .expect("plan rows");
    assert!(
        plan.iter()
            .any(|line| line.contains("filings_by_review_since (status=? AND review_since<?)")),
        "{plan:?}"
    );
}

/// The highest `$n` placeholder in `sql`.
fn parameters(sql: &str) -> usize {
    sql.split('$')
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// The plan lines of `sql`'s generic plan that scan either table sequentially.
async fn postgres_scans(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .batch_execute(&format!("PREPARE checked AS {sql}"))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let nulls = vec!["NULL"; parameters(sql)].join(", ");
    let explain = if nulls.is_empty() {
        "EXPLAIN EXECUTE checked".to_string()
    } else {
        format!("EXPLAIN EXECUTE checked({nulls})")
    };
    let rows = client
        .query(explain.as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    client
        .batch_execute("DEALLOCATE checked")
        .await
        .expect("deallocate");
    rows.iter()
        .map(|row| row.get::<_, String>(0))
        .filter(|line| {
            line.contains("Seq Scan on icpgate_filings ")
                || line.contains("Seq Scan on icpgate_filing_domains ")
        })
        .collect()
}

/// A client of the migrated database at `url` that plans as the checks need:
/// sequential scans off (a plan that still scans has no index to use) and generic
/// plans (the statement's shape, not one set of values).
async fn planning_client(url: &str) -> tokio_postgres::Client {
    drop(PostgresRegistry::connect(url).await.expect("connect"));
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect postgres");
    tokio::spawn(connection);
    client
        .batch_execute("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan;")
        .await
        .expect("settings");
    client
}

#[tokio::test]
async fn every_postgres_write_and_lookup_statement_uses_an_index() {
    let test = "registry_uses_indexes::every_postgres_write_and_lookup_statement_uses_an_index";
    let Some(db) = PgDatabase::create(test).await else {
        return;
    };
    let client = planning_client(&db.url).await;

    assert!(
        !postgres_scans(&client, POSTGRES_SCAN).await.is_empty(),
        "the check must catch a full scan"
    );
    let mut scanning = Vec::new();
    for (name, sql) in postgres::sql::INDEXED {
        let scans = postgres_scans(&client, sql).await;
        if !scans.is_empty() {
            scanning.push(format!("{name}: {scans:?}\n  {sql}"));
        }
    }
    assert!(
        scanning.is_empty(),
        "full scans on a write or lookup path:\n{}",
        scanning.join("\n")
    );

    // An import's per-chunk number check, planned as the import plans it: a nested
    // loop from the chunk's revision range into the entity-key index, never a join
    // over whole indexes (which the check above would not see).
    client.batch_execute("BEGIN").await.expect("begin");
    client
        .batch_execute(postgres::sql::IMPORT_PLANNER)
        .await
        .expect("import planner settings");
    client
        .batch_execute(&format!(
            "PREPARE chunk AS {}",
            postgres::sql::NUMBER_CLAIMED_IN_CHUNK
        ))
        .await
        .expect("prepare");
    let plan: Vec<String> = client
        .query("EXPLAIN EXECUTE chunk(NULL, NULL)", &[])
        .await
        .expect("explain")
        .iter()
        .map(|row| row.get(0))
        .collect();
    client.batch_execute("ROLLBACK").await.expect("rollback");
    let plan = plan.join("\n");
    assert!(
        plan.contains("Nested Loop")
            && plan.contains("icpgate_filings_by_revision")
            && plan.contains("icpgate_filings_by_icp_entity_key")
            && !plan.contains("Merge Join")
            && !plan.contains("Hash Join")
            && !plan.contains("Materialize"),
        "the import's number check walks the chunk, not the table:\n{plan}"
    );
}

#[tokio::test]
async fn the_postgres_overdue_count_is_a_range_of_the_review_since_index() {
    let test =
        "registry_uses_indexes::the_postgres_overdue_count_is_a_range_of_the_review_since_index";
    let Some(db) = PgDatabase::create(test).await else {
        return;
    };
    let client = planning_client(&db.url).await;
    let sql = postgres::sql::INITIAL_REVIEWS_ENTERED_BY;
    client
        .batch_execute(&format!("PREPARE checked AS {sql}"))
        .await
        .expect("prepare");
    let plan: Vec<String> = client
        .query("EXPLAIN EXECUTE checked(NULL)", &[])
        .await
        .expect("explain")
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect();
    let text = plan.join("\n");
    assert!(
        text.contains("icpgate_filings_by_review_since")
            && text.contains("Index Cond")
            && text.contains("review_since <="),
        "{text}"
    );
}
