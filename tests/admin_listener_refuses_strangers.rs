//! The contract these tests pin (issue 15, the admin surface on the real listener):
//!
//! - only the listener's own Host names are answered: `localhost`, `127.0.0.1`,
//!   `::1` with any port or none, and the names of `admin.hosts`; any other Host —
//!   a DNS rebinding page — gets 421 `misdirected_host` as JSON, health checks too;
//! - every answer, refusals included, carries `X-Content-Type-Options: nosniff`;
//! - `admin.public_reads = true` opens the reads again, personal data masked;
//! - a shared token shorter than 32 characters refuses the start, and a reload that
//!   would load one is refused with the old token still in force; neither message
//!   quotes the token, nor does a reload refused for a raw token in `tokens_file`;
//! - an admin listener on a non-loopback address without a token refuses the start.

mod common;

use common::{config_text, http1, submission, TestGate, TOKEN};
use icpgate::config::Config;

/// GET `path` on the admin listener with `host` and the token; status, error code,
/// and whether the answer says nosniff.
async fn get_as(g: &TestGate, host: &str, path: &str) -> (u16, String, bool) {
    let auth = format!("Bearer {TOKEN}");
    let headers = [("host", host), ("authorization", auth.as_str())];
    let reply = http1(g.admin, "GET", path, &headers, b"").await;
    let nosniff = reply
        .headers
        .get("x-content-type-options")
        .is_some_and(|v| v == "nosniff");
    let code = reply.json()["error"].as_str().unwrap_or("").to_string();
    (reply.status.as_u16(), code, nosniff)
}

#[tokio::test]
async fn only_the_listeners_own_host_names_are_answered() {
    let g = TestGate::start_with_admin(&[], "hosts = [\"Admin.Internal.\", \"10.9.8.7\"]").await;
    let port = g.admin.port().to_string();
    let answered = [
        "127.0.0.1".to_string(),
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_string(),
        format!("[::1]:{port}"),
        "localhost:1".to_string(),
        "admin.internal:9090".to_string(),
        "admin.internal".to_string(),
        "10.9.8.7".to_string(),
    ];
    for host in &answered {
        for path in ["/healthz", "/v1/filings"] {
            let (status, code, nosniff) = get_as(&g, host, path).await;
            assert_eq!(status, 200, "{host} {path}: {code}");
            assert!(nosniff, "{host} {path}");
        }
    }
    let refused = [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        "localhost.evil.example".to_string(),
        "127.0.0.1.nip.io".to_string(),
        "10.9.8.6".to_string(),
        "admin.internal.evil".to_string(),
    ];
    for host in &refused {
        for path in ["/healthz", "/metrics", "/v1/filings", "/v1/nothing"] {
            let (status, code, nosniff) = get_as(&g, host, path).await;
            assert_eq!(
                (status, code.as_str()),
                (421, "misdirected_host"),
                "{host} {path}"
            );
            assert!(nosniff, "{host} {path}");
        }
    }
}

#[tokio::test]
async fn public_reads_open_the_reads_with_personal_data_masked() {
    let g = TestGate::start_with_admin(&[], "public_reads = true").await;
    let (status, filing) = g
        .api(
            "POST",
            "/v1/filings",
            Some(submission(&["open.cn"], "new", None)),
        )
        .await;
    assert_eq!(status, 201, "{filing}");
    let id = filing["id"].as_i64().expect("id");
    for path in [
        format!("/v1/filings/{id}"),
        "/v1/filings".to_string(),
        "/v1/decision?host=open.cn".to_string(),
        "/v1/blocked-hosts".to_string(),
        "/v1/openapi.json".to_string(),
    ] {
        let (status, body) = g.api_with("GET", &path, None, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        // No personal data at all without a token: not even masked contacts.
        for private in ["13800000000", "138****0000", "张三", "91330100MA27XXXX1X"] {
            assert!(!body.to_string().contains(private), "{path}: {body}");
        }
    }
    let (status, _) = g
        .api_with(
            "POST",
            "/v1/filings",
            Some(submission(&["w.cn"], "new", None)),
            None,
        )
        .await;
    assert_eq!(status, 401, "writes still need the token");
    // A token sees contacts, phones masked (revealed only to a `reveal` grant).
    let (_, masked) = g.api("GET", &format!("/v1/filings/{id}"), None).await;
    assert_eq!(masked["website"]["owner"]["phone"], "138****0000");
}

/// A gate config in `dir` whose shared token is read from `token_file`.
fn config_with_token_file(dir: &std::path::Path, token_file: &std::path::Path) -> String {
    let text = config_text(dir, &[], &[], &[], "", "");
    let line = format!("token_file = \"{}\"", dir.join("admin-token").display());
    text.replace(&line, &format!("token_file = \"{}\"", token_file.display()))
}

#[tokio::test]
async fn a_short_token_refuses_the_start_and_the_reload_without_quoting_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("short-token");
    let short = "ShortAdminSecret-31-characters!";
    assert_eq!(short.len(), 31);
    std::fs::write(&file, short).expect("write");
    let path = dir.path().join("icpgate.toml");
    std::fs::write(&path, config_with_token_file(dir.path(), &file)).expect("config");
    let error = match icpgate::app::start(Config::load(&path).expect("config")).await {
        Ok(_) => panic!("a 31-character token starts the gate"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains(&file.display().to_string()), "{error}");
    assert!(error.contains("shorter than 32"), "{error}");
    assert!(!error.contains("ShortAdminSecret"), "{error}");

    // Running with a good token, a reload that would load a short one is refused.
    let good = "GoodAdminSecret-0123456789abcdef-0123456789";
    std::fs::write(&file, good).expect("write");
    let mut g = TestGate::start(&[], None, None, "").await;
    std::fs::write(&g.config_path, config_with_token_file(g.dir.path(), &file)).expect("config");
    g.restart().await;
    let body = submission(&["keep.cn"], "new", None);
    let (status, _) = g
        .api_with("POST", "/v1/filings", Some(body.clone()), Some(good))
        .await;
    assert_eq!(status, 201);
    std::fs::write(&file, short).expect("write");
    let running = g.running.as_ref().expect("running");
    let error = running.reload().expect_err("refused").to_string();
    assert!(error.contains("shorter than 32"), "{error}");
    assert!(!error.contains("ShortAdminSecret"), "{error}");
    let body = submission(&["kept.cn"], "new", None);
    let (status, _) = g
        .api_with("POST", "/v1/filings", Some(body), Some(good))
        .await;
    assert_eq!(status, 201, "the old token stays in force");
    let (status, _) = g
        .api_with(
            "POST",
            "/v1/filings",
            Some(submission(&["x.cn"], "new", None)),
            Some(short),
        )
        .await;
    assert_eq!(status, 401);

    // A raw token in the named-tokens file: the reload names file and line only.
    let named = g.dir.path().join("admin-tokens");
    std::fs::write(&named, "alice RawNamedSecret-0123456789abcdef\n").expect("write");
    std::fs::write(&file, good).expect("write");
    let text = std::fs::read_to_string(&g.config_path).expect("config");
    let text = text.replace(
        "[admin]\n",
        &format!("[admin]\ntokens_file = \"{}\"\n", named.display()),
    );
    std::fs::write(&g.config_path, text).expect("config");
    let error = running.reload().expect_err("refused").to_string();
    assert!(
        error.contains(&format!("{}:1:", named.display())),
        "{error}"
    );
    assert!(!error.contains("RawNamedSecret"), "{error}");
}

#[tokio::test]
async fn a_non_loopback_admin_listener_needs_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(dir.path(), &[], &[], &[], "", "")
        .replace("admin = \"127.0.0.1:0\"", "admin = \"0.0.0.0:0\"");
    let line = format!(
        "token_file = \"{}\"",
        dir.path().join("admin-token").display()
    );
    let unset = text.replace(&line, "token_env = \"ICPGATE_TEST_NEVER_SET_TOKEN\"");
    let path = dir.path().join("icpgate.toml");
    std::fs::write(&path, unset).expect("config");
    let error = match icpgate::app::start(Config::load(&path).expect("config")).await {
        Ok(_) => panic!("an unguarded admin listener on 0.0.0.0 starts"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("not a loopback address"), "{error}");
    assert!(error.contains("ICPGATE_TEST_NEVER_SET_TOKEN"), "{error}");

    // With the token it starts, and answers an IP literal of its own.
    std::fs::write(&path, text).expect("config");
    let running = icpgate::app::start(Config::load(&path).expect("config"))
        .await
        .expect("starts with a token");
    let admin = running.admin.expect("admin bound");
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], admin.port()));
    let reply = http1(local, "GET", "/healthz", &[("host", "127.0.0.1")], b"").await;
    assert_eq!(reply.status, 200);
    running.shutdown(false).await;
}
