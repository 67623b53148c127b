//! Shared test fixtures: an in-process echo origin, a gate started on `127.0.0.1:0`
//! with a temp-file SQLite registry, and small HTTP/1.1 and HTTP/2 clients over real
//! sockets.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use icpgate::app::{self, Running};
use icpgate::config::Config;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The variable spawned `icpgate` processes get the token in (`Command::env` only:
/// tests never change this process's environment, which parallel tests share).
pub const TOKEN_ENV: &str = "ICPGATE_TEST_ADMIN_TOKEN";
/// The shared admin token every test gate accepts.
pub const TOKEN: &str = "test-admin-token-5f3c";

/// Write [`TOKEN`] to `dir/admin-token`; the `[admin]` line that reads it.
pub fn admin_token_file(dir: &std::path::Path) -> String {
    let path = dir.join("admin-token");
    std::fs::write(&path, TOKEN).expect("write admin token");
    format!("token_file = \"{}\"", path.display())
}

/// An origin that answers every request with JSON describing what it received.
pub async fn start_origin(name: &'static str) -> SocketAddr {
    start_origin_reporting(name, None).await
}

/// `start_origin`, also sending each request's path to `arrivals` as it arrives
/// (before any `/sleep/N`), so a test can wait until a request is truly in flight.
pub async fn start_origin_with_arrivals(
    name: &'static str,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (sender, arrivals) = tokio::sync::mpsc::unbounded_channel();
    (start_origin_reporting(name, Some(sender)).await, arrivals)
}

async fn start_origin_reporting(
    name: &'static str,
    arrivals: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    if let Some(arrivals) = &arrivals {
                        let _ = arrivals.send(request.uri().path().to_string());
                    }
                    echo(name, request)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn echo(
    name: &'static str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for (k, v) in request.headers() {
        let v = v.to_str().unwrap_or("").to_string();
        match headers.get_mut(k.as_str()) {
            Some(Value::String(prior)) => *prior = format!("{prior}, {v}"),
            _ => {
                headers.insert(k.as_str().to_string(), Value::String(v));
            }
        }
    }
    let host_count = request.headers().get_all("host").iter().count();
    if let Some(seconds) = path
        .strip_prefix("/sleep/")
        .and_then(|s| s.parse::<f64>().ok())
    {
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let out = json!({
        "origin": name, "method": method, "path": path, "headers": headers,
        "host_count": host_count, "body": String::from_utf8_lossy(&body),
    });
    let mut response = Response::new(Full::new(Bytes::from(out.to_string())));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("static"));
    if path == "/fail" {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    Ok(response)
}

/// One filing line for a seed file.
pub fn filing(domains: &[&str], status: &str, product: &str, icp: Option<&str>) -> String {
    let mut record = json!({
        "domains": domains, "product": product, "status": status,
        "entity": {"name": "示例科技有限公司", "type": "enterprise"}, "website": {"name": "示例"},
    });
    if let Some(icp) = icp {
        record["icp_number"] = json!(icp);
    }
    record.to_string()
}

/// The seed most tests share.
pub fn standard_seed() -> Vec<String> {
    vec![
        filing(
            &["example.com"],
            "approved",
            "storefront",
            Some("浙ICP备12345678号-1"),
        ),
        filing(
            &["example.com.cn"],
            "approved",
            "corporate_site",
            Some("京ICP备87654321号-2"),
        ),
        filing(
            &["例子.中国"],
            "approved",
            "storefront",
            Some("粤ICP备11112222号-1"),
        ),
        filing(&["pending.cn"], "initial_review", "storefront", None),
        filing(&["authority.cn"], "authority_review", "storefront", None),
        filing(&["rejected.net"], "rejected", "storefront", None),
        filing(&["gone.org"], "abandoned", "storefront", None),
        filing(
            &["cancelled.com"],
            "cancelled",
            "storefront",
            Some("鲁ICP备20200001号-1"),
        ),
        filing(
            &["left.cn"],
            "disconnected",
            "storefront",
            Some("鄂ICP备30303030号-2"),
        ),
    ]
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

    /// Write `text` as the config in `dir` and start the gate on it.
    /// A gate on `seed` whose `[admin]` table also holds `admin_lines`.
    pub async fn start_with_admin(seed: &[String], admin_lines: &str) -> TestGate {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = format!("[admin]\n{}\n", admin_token_file(dir.path()));
        let text = config_text(dir.path(), seed, &[], &[], "", "")
            .replace(&shared, &format!("{shared}{admin_lines}\n"));
        TestGate::launch(dir, &text).await
    }

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

    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let auth = format!("Bearer {TOKEN}");
        let data = body.map(|b| b.to_string()).unwrap_or_default();
        let reply = http1(
            self.admin,
            method,
            path,
            &[
                ("host", "127.0.0.1"),
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            data.as_bytes(),
        )
        .await;
        (
            reply.status,
            serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
        )
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
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn reason(&self) -> Option<&str> {
        self.headers
            .get("x-icpgate-reason")
            .and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection (hyper's client, so headers are exact).
pub async fn http1(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let mut builder = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    collect(response).await
}

/// An HTTP/2 (prior knowledge) connection to `addr`: its sender, and the task
/// driving it, which ends when the connection closes.
pub async fn http2_connect(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    (sender, tokio::spawn(conn))
}

/// One HTTP/2 (prior knowledge) request; `authority` goes into `:authority`.
pub async fn http2(addr: SocketAddr, authority: &str, path: &str) -> Reply {
    let (mut sender, _driver) = http2_connect(addr).await;
    let request = Request::builder()
        .uri(format!("http://{authority}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    collect(response).await
}

async fn collect(response: Response<Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Send raw bytes and read until the server closes (or `wait` passes).
pub async fn raw(addr: SocketAddr, data: &[u8], wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(data).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    out
}

/// The sum of a metric's samples whose labels include `labels`; None when no
/// series of `name` carries them. Use [`sample_required`] unless absence is the
/// point of the assertion.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.trim().rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = series.split_once('{').unwrap_or((series, ""));
        if metric != name {
            continue;
        }
        let have = parse_labels(label_text.trim_end_matches('}'));
        if labels
            .iter()
            .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
        {
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("{name}: unparsable sample value in {line:?}"));
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

/// [`sample`] for a series that must be exported: panics naming the metric and its
/// labels when it is not, so a renamed metric or label fails instead of reading 0.
pub fn sample_required(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels)
        .unwrap_or_else(|| panic!("no series {name} with labels {labels:?} in /metrics"))
}

/// `k="v",k2="v2"` as pairs (values here never hold quotes or commas).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

impl TestGate {
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
}

/// Whether this is a CI run (`CI` set, as CI services and `.ci/run` do): there a
/// test whose tool, file or service is missing fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A test cannot run here because `what` is missing. Under CI that is a failure;
/// locally the test prints "skipped …" and the caller returns.
pub fn skip_or_fail(test: &str, what: &str) {
    if in_ci() {
        panic!("{test}: {what}, and under CI nothing may be skipped (.ci/run provides it)");
    }
    println!("skipped {test}: {what} (.ci/run provides it)");
}

/// Whether the command `tool` runs (`tool --version` or `tool version`); when it
/// does not, see [`skip_or_fail`].
pub fn require_tool(tool: &str) -> bool {
    let runs = |arg: &str| {
        std::process::Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let found = runs("--version") || runs("version");
    if !found {
        skip_or_fail(
            std::thread::current().name().unwrap_or("test"),
            &format!("`{tool}` is not installed"),
        );
    }
    found
}

/// A throwaway PostgreSQL database for one test, dropped when this is dropped.
/// None when `ICPGATE_TEST_PG_URL` is not set (see [`skip_or_fail`]: a failure under
/// CI, a "skipped" line locally).
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create(test: &str) -> Option<PgDatabase> {
        let Ok(admin_url) = std::env::var("ICPGATE_TEST_PG_URL") else {
            skip_or_fail(test, "ICPGATE_TEST_PG_URL is not set");
            return None;
        };
        let name = format!("icpgate_test_{}_{}", std::process::id(), rand_suffix());
        let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .expect("connect to ICPGATE_TEST_PG_URL");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base.to_string())
            .unwrap_or_else(|| admin_url.clone());
        Some(PgDatabase {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        })
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish() % 1_000_000_000
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: clean up from a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// The details most lifecycle tests submit (personal data included).
pub fn submission(domains: &[&str], kind: &str, icp: Option<&str>) -> Value {
    let mut body = json!({
        "domains": domains, "product": "storefront", "kind": kind,
        "entity": {"name": "杭州示例科技有限公司", "type": "enterprise",
                   "certificate_number": "91330100MA27XXXX1X", "province": "浙"},
        "website": {"name": "示例旺铺",
                    "owner": {"name": "张三", "phone": "13800000000", "email": "ops@example.cn"}},
    });
    if let Some(icp) = icp {
        body["icp_number"] = json!(icp);
    }
    body
}

impl TestGate {
    /// An admin request with `token` (None: no Authorization header).
    pub async fn api_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let data = body.map(|b| b.to_string()).unwrap_or_default();
        let mut headers = vec![("host", "127.0.0.1"), ("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth));
        }
        let reply = http1(self.admin, method, path, &headers, data.as_bytes()).await;
        (
            reply.status,
            serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
        )
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

/// The real `icpgate serve` binary as a child process, for tests with real signals.
pub struct GateProcess {
    pub child: std::process::Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: std::path::PathBuf,
    /// Every log line the process has written so far (stderr).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl GateProcess {
    /// Spawn `icpgate serve` on a config written by `config_text`, and wait until both
    /// listeners are bound.
    pub fn spawn(seed: &[String], storefront: SocketAddr, extra: &str) -> GateProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = config_text(dir.path(), seed, &[storefront], &[], "", extra);
        let config_path = dir.path().join("icpgate.toml");
        std::fs::write(&config_path, &text).expect("write config");
        let Served {
            child,
            http,
            admin,
            log,
        } = serve(&config_path);
        GateProcess {
            child,
            http,
            admin,
            dir,
            config_path,
            log,
        }
    }

    /// Send `signal` (e.g. "HUP", "TERM") with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Whether some log line so far contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Wait up to `within` for the process to exit; its exit code (None: still running).
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An address that refuses connections for as long as the returned socket lives:
/// bound, so no test running alongside can be given the port, but never listening.
pub fn refusing_address() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .expect("bind a refusing port");
    let addr = socket.local_addr().expect("addr");
    (socket, addr)
}

/// A running `icpgate serve` whose listeners are bound.
pub struct Served {
    pub child: std::process::Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// Every log line the process has written so far (stderr).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Spawn `icpgate serve --config config_path` (listeners on port 0 are fine: the
/// addresses are read from the log, so no port is picked, released and raced for).
pub fn serve(config_path: &std::path::Path) -> Served {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_icpgate"))
        .args(["serve", "--config"])
        .arg(config_path)
        .env(TOKEN_ENV, TOKEN)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn icpgate");
    let stderr = child.stderr.take().expect("stderr piped");
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            for (marker, kind) in [("listening (http)", "http"), ("listening (admin)", "admin")] {
                if let Some(addr) = line.contains(marker).then(|| logged_addr(&line)).flatten() {
                    let _ = tx.send((kind, addr));
                }
            }
            sink.lock().expect("log lock").push(line);
        }
    });
    let (mut http, mut admin) = (None, None);
    while http.is_none() || admin.is_none() {
        let Ok((kind, addr)) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gate did not start: {:?}", log.lock());
        };
        *(if kind == "http" {
            &mut http
        } else {
            &mut admin
        }) = Some(addr);
    }
    Served {
        child,
        http: http.expect("http"),
        admin: admin.expect("admin"),
        log,
    }
}

/// The address in a log line like `listening (http) addr=Some(127.0.0.1:4242)`.
fn logged_addr(line: &str) -> Option<SocketAddr> {
    let start = line.find("Some(")? + "Some(".len();
    let end = start + line[start..].find(')')?;
    line[start..end].parse().ok()
}

/// Poll `check` every 50 ms for up to `within`; whether it became true.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub mod tls;

impl TestGate {
    /// Like `start` plus `listen_lines` added to the `[listen]` section (e.g.
    /// `https = "127.0.0.1:0"`).
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

/// Run the real `icpgate` binary with `args`; its exit code (None when killed by a
/// signal) and everything it printed, stdout then stderr.
pub fn run_icpgate<I, S>(args: I) -> (Option<i32>, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_icpgate"))
        .args(args)
        .output()
        .expect("run icpgate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}
