//! `TestGate`: the gate started in this process on `127.0.0.1:0`, with its own temp
//! directory, config (see [`config_text`]) and SQLite registry, and the admin token
//! in a file of that directory.

use std::net::SocketAddr;

use http::StatusCode;
use icpgate::app::{self, Running};
use icpgate::config::Config;
use serde_json::{json, Value};

use super::client::{admin_request, http1, Reply};

/// The variable spawned `icpgate` processes get the token in (`Command::env` only:
/// tests never change this process's environment, which parallel tests share).
pub const TOKEN_ENV: &str = "ICPGATE_TEST_ADMIN_TOKEN";
/// The shared admin token every test gate accepts.
/// At least 32 characters: a shorter shared token is refused at start.
pub const TOKEN: &str = "test-admin-token-5f3c-8e1d-4b7a-9c20-d6e5";

/// A token's line in `admin.tokens_file` holds its SHA-256, never the token.
pub fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Write [`TOKEN`] to `dir/admin-token`; the `[admin]` line that reads it.
pub fn admin_token_file(dir: &std::path::Path) -> String {
    let path = dir.join("admin-token");
    std::fs::write(&path, TOKEN).expect("write admin token");
    format!("token_file = \"{}\"", path.display())
}

/// A running gate with its own directory, config and registry.
pub struct TestGate {
    pub running: Option<Running>,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: std::path::PathBuf,
}

impl TestGate {
    /// Start with `seed` lines and extra TOML appended (sections of their own).
    pub async fn start(
        seed: &[String],
        storefront: Option<SocketAddr>,
        corporate: Option<SocketAddr>,
        extra: &str,
    ) -> TestGate {
        let list = |addr: Option<SocketAddr>| addr.into_iter().collect::<Vec<_>>();
        TestGate::start_with_pools(seed, &list(storefront), &list(corporate), extra).await
    }

    /// Start with explicit server lists for both pools.
    pub async fn start_with_pools(
        seed: &[String],
        storefront: &[SocketAddr],
        corporate: &[SocketAddr],
        extra: &str,
    ) -> TestGate {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = config_text(dir.path(), seed, storefront, corporate, "", extra);
        TestGate::launch(dir, &text).await
    }

    /// A gate on `seed` whose `[admin]` table also holds `admin_lines`.
    pub async fn start_with_admin(seed: &[String], admin_lines: &str) -> TestGate {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = format!("[admin]\n{}\n", admin_token_file(dir.path()));
        let text = config_text(dir.path(), seed, &[], &[], "", "")
            .replace(&shared, &format!("{shared}{admin_lines}\n"));
        TestGate::launch(dir, &text).await
    }

    /// A gate on `seed` (storefront pool `origin`) whose `admin.tokens_file` holds
    /// `token_lines` (`NAME SHA256 [reveal]`, see [`sha256_hex`]) beside the shared token.
    pub async fn start_with_named_tokens(
        seed: &[String],
        origin: Option<SocketAddr>,
        token_lines: &str,
    ) -> TestGate {
        TestGate::start_with_named_tokens_and(seed, origin, token_lines, "").await
    }

    /// As [`TestGate::start_with_named_tokens`], with `admin_lines` also in `[admin]`.
    pub async fn start_with_named_tokens_and(
        seed: &[String],
        origin: Option<SocketAddr>,
        token_lines: &str,
        admin_lines: &str,
    ) -> TestGate {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("admin-tokens");
        std::fs::write(&file, token_lines).expect("tokens file");
        let origins: Vec<SocketAddr> = origin.into_iter().collect();
        let text = config_text(dir.path(), seed, &origins, &[], "", "").replace(
            "[admin]\n",
            &format!(
                "[admin]\ntokens_file = \"{}\"\n{admin_lines}\n",
                file.display()
            ),
        );
        TestGate::launch(dir, &text).await
    }

    /// Write `text` as the config in `dir` and start the gate on it.
    pub async fn launch(dir: tempfile::TempDir, text: &str) -> TestGate {
        let config_path = dir.path().join("icpgate.toml");
        std::fs::write(&config_path, text).expect("write config");
        let config = Config::load(&config_path).expect("valid test config");
        let running = app::start(config).await.expect("gate starts");
        TestGate {
            http: running.http.expect("http bound"),
            admin: running.admin.expect("admin bound"),
            running: Some(running),
            dir,
            config_path,
        }
    }

    pub async fn get(&self, host: &str, path: &str) -> Reply {
        http1(self.http, "GET", path, &[("host", host)], b"").await
    }

    /// An admin request with the shared [`TOKEN`]; the status and the JSON body.
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.api_with(method, path, body, Some(TOKEN)).await
    }

    pub async fn metrics(&self) -> String {
        let reply = http1(self.admin, "GET", "/metrics", &[("host", "127.0.0.1")], b"").await;
        String::from_utf8_lossy(&reply.body).into_owned()
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown(false).await;
        }
    }

    /// Start on a registry section of the caller's (e.g. PostgreSQL), no seed.
    pub async fn start_with_registry(registry: &str, storefront: Option<SocketAddr>) -> TestGate {
        let servers = storefront.map(|a| format!("\"{a}\"")).unwrap_or_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n[registry]\n{registry}\n\n\
             [admin]\n{token}\n\n[upstreams.storefront]\nservers = [{servers}]\n",
            token = admin_token_file(dir.path()),
        );
        TestGate::launch(dir, &text).await
    }

    /// An admin request with `token` (None: no Authorization header); the status
    /// and the JSON body (Null when it is not JSON).
    pub async fn api_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let reply = admin_request(self.admin, method, path, token, &[], body.as_ref()).await;
        (reply.status, reply.json())
    }

    /// Stop and start again on the same config and registry file (new ports).
    pub async fn restart(&mut self) {
        self.stop().await;
        let config = Config::load(&self.config_path).expect("valid test config");
        let running = app::start(config).await.expect("gate restarts");
        self.http = running.http.expect("http bound");
        self.admin = running.admin.expect("admin bound");
        self.running = Some(running);
    }

    /// Replace the config's shared-token line (`token_file = ...`) with `line`
    /// (e.g. `token_env = "UNSET"` or another `token_file`); takes effect on the next
    /// start or reload.
    pub fn set_token_source(&self, line: &str) {
        let text = std::fs::read_to_string(&self.config_path).expect("read config");
        let old = admin_token_file(self.dir.path());
        assert!(text.contains(&old), "the config reads {old}");
        std::fs::write(&self.config_path, text.replace(&old, line)).expect("write config");
    }

    /// Take the shared token from the environment variable `env` instead (never set
    /// by the tests: the gate then has no shared token) and restart.
    pub async fn restart_with_token_env(&mut self, env: &str) {
        assert!(std::env::var_os(env).is_none(), "{env} must be unset");
        self.set_token_source(&format!("token_env = \"{env}\""));
        self.restart().await;
    }

    /// Like `start` plus `listen_lines` added to the `[listen]` section (e.g.
    /// `https = "127.0.0.1:0"`).
    /// A gate on the standard seed with an HTTPS listener on a free port serving
    /// the certificates in `certs_dir`; `more_tls` adds lines to its `[tls]` table.
    pub async fn start_https(
        storefront: Option<SocketAddr>,
        corporate: Option<SocketAddr>,
        certs_dir: &std::path::Path,
        more_tls: &str,
    ) -> TestGate {
        let extra = format!("[tls]\ncerts_dir = \"{}\"\n{more_tls}", certs_dir.display());
        TestGate::start_with_listen(
            &super::seed::standard_seed(),
            storefront,
            corporate,
            "https = \"127.0.0.1:0\"",
            &extra,
        )
        .await
    }

    pub async fn start_with_listen(
        seed: &[String],
        storefront: Option<SocketAddr>,
        corporate: Option<SocketAddr>,
        listen_lines: &str,
        extra: &str,
    ) -> TestGate {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = |addr: Option<SocketAddr>| addr.into_iter().collect::<Vec<_>>();
        let text = config_text(
            dir.path(),
            seed,
            &list(storefront),
            &list(corporate),
            listen_lines,
            extra,
        );
        TestGate::launch(dir, &text).await
    }

    /// The bound https address (the gate must have been started with one).
    pub fn https(&self) -> SocketAddr {
        self.running
            .as_ref()
            .and_then(|r| r.https)
            .expect("https bound")
    }

    /// Submit a filing for `domain` and approve it through both reviews.
    pub async fn approve_new_filing(&self, domain: &str, icp: &str) -> String {
        let (status, filing) = self
            .api(
                "POST",
                "/v1/filings",
                Some(json!({
                    "domains": [domain], "product": "storefront", "kind": "new",
                    "entity": {"name": "示例科技有限公司", "type": "enterprise"},
                    "website": {"name": "示例"},
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{filing}");
        let id = filing["id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| filing["id"].to_string());
        let (status, body) = self
            .api(
                "POST",
                &format!("/v1/filings/{id}/initial-review"),
                Some(json!({"approve": true})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = self
            .api(
                "POST",
                &format!("/v1/filings/{id}/authority-review"),
                Some(json!({"approve": true, "icp_number": icp})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        id
    }
}

/// The config text `TestGate` writes (seed file in `dir`), with `listen_keys`
/// added to `[listen]` and `extra` sections appended.
pub fn config_text(
    dir: &std::path::Path,
    seed: &[String],
    storefront: &[SocketAddr],
    corporate: &[SocketAddr],
    listen_keys: &str,
    extra: &str,
) -> String {
    let seed_path = dir.join("seed.jsonl");
    std::fs::write(&seed_path, seed.join("\n")).expect("write seed");
    let servers = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{listen_keys}\n\n\
         [registry]\nbackend = \"sqlite\"\npath = \"{db}\"\nseed = \"{seed}\"\n\n\
         [admin]\n{token}\n\n\
         [upstreams.storefront]\nservers = [{sf}]\n\n[upstreams.corporate_site]\nservers = [{corp}]\n\n{extra}\n",
        token = admin_token_file(dir),
        db = dir.join("registry.db").display(),
        seed = seed_path.display(),
        sf = servers(storefront),
        corp = servers(corporate),
    )
}
