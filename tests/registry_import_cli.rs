//! The contract these tests pin: `icpgate registry import` into SQLite stores a file
//! of filings in one go and, writing to a pipe, prints only its summary (the
//! progress bar is for terminals); a domain listed twice in the file — or already
//! held by a live filing in the registry — refuses the whole file, naming the file
//! and the line, and leaves the registry exactly as it was. So does a line that is
//! not a filing, however far into the file (records are stored as they are read).
//! The registry file and an export are readable by their owner only (0600).

use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Run the real binary with stdout and stderr on pipes (never a terminal).
fn icpgate(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_icpgate"))
        .args(args)
        .output()
        .expect("run icpgate");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("icpgate.toml");
    let text = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [registry]\nbackend = \"sqlite\"\npath = \"{}\"\n\
         [upstreams.storefront]\nservers = [\"127.0.0.1:9\"]\n",
        dir.join("registry.db").display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// `n` filings, every status, some with two domains, one IDN.
fn filings(n: usize, prefix: &str) -> Vec<String> {
    let statuses = [
        "approved",
        "initial_review",
        "authority_review",
        "rejected",
        "abandoned",
        "cancelled",
        "disconnected",
    ];
    (0..n)
        .map(|i| {
            let status = statuses[i % statuses.len()];
            let mut domains = vec![format!("{prefix}{i}.cn")];
            if i % 5 == 0 {
                domains.push(format!("{prefix}{i}.com.cn"));
            }
            if i == 7 {
                domains.push(format!("{prefix}例子{i}.中国"));
            }
            let number = matches!(status, "approved" | "cancelled" | "disconnected")
                .then(|| format!(r#","icp_number":"浙ICP备{:08}号-1""#, 10_000_000 + i))
                .unwrap_or_default();
            format!(
                r#"{{"domains":{},"product":"storefront","status":"{status}"{number}}}"#,
                serde_json::to_string(&domains).expect("domains")
            )
        })
        .collect()
}

fn export(config: &Path, dir: &Path, name: &str) -> String {
    let out = dir.join(name);
    let run = icpgate(&[
        "registry",
        "export",
        "--config",
        config.to_str().expect("utf-8"),
        out.to_str().expect("utf-8"),
    ]);
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    std::fs::read_to_string(out).expect("read export")
}

fn import(config: &Path, file: &Path) -> Run {
    icpgate(&[
        "registry",
        "import",
        "--config",
        config.to_str().expect("utf-8"),
        file.to_str().expect("utf-8"),
    ])
}

#[test]
fn an_import_on_a_pipe_prints_its_summary_and_no_progress_bar() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let file = dir.path().join("filings.jsonl");
    std::fs::write(&file, filings(300, "piped").join("\n")).expect("write");
    let run = import(&config, &file);
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        format!("imported 300 filings from {}\n", file.display())
    );
    assert_eq!(run.stderr, "", "nothing but the summary on a pipe");
    assert_eq!(
        export(&config, dir.path(), "out.jsonl").lines().count(),
        300
    );
}

#[test]
fn a_duplicate_domain_refuses_the_whole_file_at_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let first = dir.path().join("first.jsonl");
    std::fs::write(&first, filings(50, "held").join("\n")).expect("write");
    assert!(import(&config, &first).ok);
    let before = export(&config, dir.path(), "before.jsonl");

    // Inside the file: line 120 names line 3's domain (a live filing).
    let mut lines = filings(200, "fresh");
    lines[119] = lines[2].replace("initial_review", "rejected");
    let inside = dir.path().join("inside.jsonl");
    std::fs::write(&inside, lines.join("\n")).expect("write");
    let run = import(&config, &inside);
    assert!(!run.ok, "{}", run.stdout);
    assert!(
        run.stderr.contains(&inside.display().to_string()) && run.stderr.contains("line 120:"),
        "names file and line: {}",
        run.stderr
    );
    assert!(run.stderr.contains("fresh2.cn"), "{}", run.stderr);
    assert_eq!(export(&config, dir.path(), "after1.jsonl"), before);

    // Against the registry: line 77 names a domain a stored live filing holds.
    let mut lines = filings(100, "other");
    lines[76] =
        r#"{"domains":["held1.cn"],"product":"storefront","status":"initial_review"}"#.to_string();
    let against = dir.path().join("against.jsonl");
    std::fs::write(&against, lines.join("\n")).expect("write");
    let run = import(&config, &against);
    assert!(!run.ok, "{}", run.stdout);
    assert!(
        run.stderr.contains(&against.display().to_string())
            && run.stderr.contains("line 77:")
            && run.stderr.contains("held1.cn"),
        "names file, line and domain: {}",
        run.stderr
    );
    assert_eq!(export(&config, dir.path(), "after2.jsonl"), before);
}

#[test]
fn a_bad_line_deep_in_the_file_stores_nothing_and_files_stay_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    // Past the reader's first batches: earlier records reached the registry.
    let mut lines = filings(5000, "deep");
    lines[4499] = "{not a filing".to_string();
    let file = dir.path().join("deep.jsonl");
    std::fs::write(&file, lines.join("\n")).expect("write");
    let run = import(&config, &file);
    assert!(!run.ok, "{}", run.stdout);
    assert!(
        run.stderr.contains(&file.display().to_string()) && run.stderr.contains("line 4500:"),
        "names file and line: {}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("line 4500:").count(),
        1,
        "says the line once, not once per error layer: {}",
        run.stderr
    );
    // An export over an existing, world-readable file: empty, and private now.
    let out = dir.path().join("empty.jsonl");
    std::fs::write(&out, "old").expect("write");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(
        export(&config, dir.path(), "empty.jsonl"),
        "",
        "nothing stored"
    );
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&out), 0o600, "export");
    assert_eq!(mode(&dir.path().join("registry.db")), 0o600, "registry");

    lines[4499] = filings(1, "last")[0].clone();
    std::fs::write(&file, lines.join("\n")).expect("write");
    assert!(import(&config, &file).ok);
    assert_eq!(
        export(&config, dir.path(), "full.jsonl").lines().count(),
        5000
    );
}

/// The journal mode of the registry file, read by a connection of the test's own.
fn journal_mode(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open registry");
    conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .expect("journal_mode")
}

#[test]
fn an_import_leaves_the_registry_in_wal_mode_whether_or_not_another_process_holds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let db = dir.path().join("registry.db");
    // Alone: the import runs under a rollback journal and puts the WAL back.
    let first = dir.path().join("first.jsonl");
    std::fs::write(&first, filings(400, "alone").join("\n")).expect("write");
    let run = import(&config, &first);
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    assert_eq!(journal_mode(&db), "wal");
    assert!(
        !dir.path().join("registry.db-journal").exists(),
        "no rollback journal left behind"
    );
    // Held open by another connection (a running gate, say) in the middle of a
    // read: the import cannot leave the WAL and runs in it instead.
    let holder = rusqlite::Connection::open(&db).expect("open registry");
    holder
        .execute_batch("BEGIN; SELECT count(*) FROM filings;")
        .expect("hold a read");
    let second = dir.path().join("second.jsonl");
    std::fs::write(&second, filings(300, "held").join("\n")).expect("write");
    let run = import(&config, &second);
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    holder.execute_batch("COMMIT").expect("end the read");
    drop(holder);
    assert_eq!(journal_mode(&db), "wal");
    // A refused file after both: nothing of it stored, the registry still whole.
    let bad = dir.path().join("bad.jsonl");
    let mut lines = filings(50, "late");
    lines[49] = "{not a filing".to_string();
    std::fs::write(&bad, lines.join("\n")).expect("write");
    assert!(!import(&config, &bad).ok);
    assert_eq!(journal_mode(&db), "wal");
    assert_eq!(
        export(&config, dir.path(), "all.jsonl").lines().count(),
        700
    );
}
