//! The contract these tests pin: `icpgate serve` on a registry holding a stored
//! filing document that does not read (here: rewritten with raw SQL behind the
//! registry's back) refuses to start — it exits with an error naming the filing's
//! id — rather than open its ports over a filed-domain index that might be missing
//! that filing. SQLite always; PostgreSQL under `ICPGATE_TEST_PG_URL` (required
//! when `CI=true`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::PgDatabase;
use icpgate::registry::postgres::PostgresRegistry;
use icpgate::registry::sqlite::SqliteRegistry;
use icpgate::registry::{jsonl, Registry};

/// Filings of every status; the one `corrupt` breaks is the fourth.
const FILINGS: &str = r#"{"domains":["one.cn"],"product":"storefront","status":"approved","icp_number":"京ICP备12345678号-1"}
{"domains":["two.cn"],"product":"storefront","status":"initial_review"}
{"domains":["three.cn"],"product":"storefront","status":"rejected"}
{"domains":["four.cn"],"product":"storefront","status":"authority_review"}
{"domains":["five.cn"],"product":"storefront","status":"abandoned"}"#;

async fn fill(registry: &dyn Registry) -> i64 {
    registry
        .import(jsonl::parse(FILINGS).expect("parse"))
        .await
        .expect("import");
    let all = registry.export().await.expect("export");
    assert_eq!(all.len(), 5);
    all[3].id
}

fn write_config(dir: &Path, registry: &str) -> std::path::PathBuf {
    let path = dir.join("icpgate.toml");
    let text = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n[registry]\n{registry}\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// Run `icpgate serve`, which must exit on its own (killed, and failed, if it is
/// still running after a minute); its exit status and stderr.
fn serve_to_exit(config: &Path) -> (std::process::ExitStatus, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_icpgate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn icpgate");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            return (status, stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("icpgate serve started over a corrupt registry instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_refused_naming(status: std::process::ExitStatus, stderr: &str, id: i64) {
    assert!(!status.success(), "serve must fail: {stderr}");
    assert!(
        stderr.contains(&format!("stored filing {id} is unreadable")),
        "the error names filing {id}: {stderr}"
    );
    assert!(
        !stderr.contains("listening (http)"),
        "no port opened before the refusal: {stderr}"
    );
}

#[tokio::test]
async fn serve_refuses_a_sqlite_registry_with_a_corrupt_row_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("registry.db");
    let id = fill(&SqliteRegistry::open(&db).expect("open")).await;
    let config = write_config(
        dir.path(),
        &format!("backend = \"sqlite\"\npath = \"{}\"", db.display()),
    );
    let conn = rusqlite::Connection::open(&db).expect("open sqlite");
    conn.execute(
        "UPDATE filings SET doc = '{\"domains\": 7}' WHERE id = ?1",
        [id],
    )
    .expect("corrupt");
    drop(conn);
    let (status, stderr) = serve_to_exit(&config);
    assert_refused_naming(status, &stderr, id);
}

#[tokio::test]
async fn serve_refuses_a_postgres_registry_with_a_corrupt_row_naming_it() {
    let test = "serve_refuses_a_corrupt_registry::serve_refuses_a_postgres_registry_with_a_corrupt_row_naming_it";
    let Some(db) = PgDatabase::create(test).await else {
        return;
    };
    let id = fill(&PostgresRegistry::connect(&db.url).await.expect("connect")).await;
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect postgres");
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE icpgate_filings SET doc = '{\"domains\": 7}' WHERE id = $1",
            &[&id],
        )
        .await
        .expect("corrupt");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!("backend = \"postgres\"\nurl = \"{}\"", db.url),
    );
    let (status, stderr) = tokio::task::spawn_blocking(move || serve_to_exit(&config))
        .await
        .expect("serve");
    assert_refused_naming(status, &stderr, id);
}

/// What the start-up check costs, beside the index load it runs with (a
/// measurement, not a check: run with `--ignored --nocapture`; prints rows/s,
/// asserts nothing about time). `ICPGATE_MEASURE_FILINGS` sets the size.
#[tokio::test]
#[ignore = "a measurement, run by hand"]
async fn measure_the_start_check() {
    use icpgate::gate::filed_domains::FiledDomains;
    let n: usize = std::env::var("ICPGATE_MEASURE_FILINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = SqliteRegistry::open(&dir.path().join("registry.db")).expect("open");
    let lines: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"domains":["m{i}.cn","m{i}.com.cn"],"product":"storefront","status":"initial_review","entity":{{"name":"测量科技有限公司{i}","type":"enterprise","certificate_number":"91330100MA27{i:06}X","province":"浙"}},"website":{{"name":"测量{i}"}}}}"#))
        .collect();
    registry
        .import(jsonl::parse(&lines.join("\n")).expect("parse"))
        .await
        .expect("import");
    let started = Instant::now();
    let documents = registry.check_documents().await.expect("check");
    let check = started.elapsed();
    let started = Instant::now();
    let (batches, mut received) = tokio::sync::mpsc::channel(4);
    let drain = async { while received.recv().await.is_some() {} };
    let (read, ()) = tokio::join!(registry.filed_domain_batches(batches), drain);
    read.expect("domains");
    let domains_alone = started.elapsed();
    let started = Instant::now();
    let filed = FiledDomains::load(&registry).await.expect("load");
    let load = started.elapsed();
    // The overdue gauge: one indexed count, against the read of every filing in
    // review it replaces (the gauge's code before migration 6).
    let now = icpgate::model::working_days::unix_seconds(std::time::SystemTime::now()) + 86_400 * 7;
    let started = Instant::now();
    let by_index = registry
        .initial_reviews_entered_by(icpgate::model::working_days::overdue_cutoff_ms(now))
        .await
        .expect("count");
    let count_by_index = started.elapsed();
    let started = Instant::now();
    let mut page = icpgate::registry::ListFilter {
        status: Some(icpgate::model::filing::Status::InitialReview),
        limit: Some(1000),
        ..Default::default()
    };
    let mut by_reading = 0;
    loop {
        let filings = registry.list(&page).await.expect("page");
        by_reading += icpgate::model::working_days::overdue_initial_reviews(&filings, now);
        match filings.last() {
            Some(last) if filings.len() == 1000 => page.after = Some(last.id),
            _ => break,
        }
    }
    let count_by_reading = started.elapsed();
    assert_eq!(by_index, by_reading as u64);
    println!(
        "{n} filings in review, overdue count: by index {count_by_index:?}, by reading \
         each {count_by_reading:?}"
    );
    println!(
        "{n} filings: check_documents alone {check:?} ({:.0} documents/s); domain rows \
         alone {domains_alone:?}; FiledDomains::load with the check {load:?} ({} domains)",
        documents as f64 / check.as_secs_f64(),
        filed.len()
    );
}
