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

pub const TOKEN_ENV: &str = "ICPGATE_TEST_ADMIN_TOKEN";
pub const TOKEN: &str = "test-admin-token-5f3c";

/// An origin that answers every request with JSON describing what it received.
pub async fn start_origin(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |request| echo(name, request));
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
        std::env::set_var(TOKEN_ENV, TOKEN);
        let dir = tempfile::tempdir().expect("tempdir");
        let seed_path = dir.path().join("seed.jsonl");
        std::fs::write(&seed_path, seed.join("\n")).expect("write seed");
        let servers = |addrs: &[SocketAddr]| {
            addrs
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let text = format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n\
             [registry]\nbackend = \"sqlite\"\npath = \"{db}\"\nseed = \"{seed}\"\n\n\
             [admin]\ntoken_env = \"{TOKEN_ENV}\"\n\n\
             [upstreams.storefront]\nservers = [{sf}]\n\n[upstreams.corporate_site]\nservers = [{corp}]\n\n{extra}\n",
            db = dir.path().join("registry.db").display(),
            seed = seed_path.display(),
            sf = servers(storefront),
            corp = servers(corporate),
        );
        let config_path = dir.path().join("icpgate.toml");
        std::fs::write(&config_path, &text).expect("write config");
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

/// One HTTP/2 (prior knowledge) request; `authority` goes into `:authority`.
pub async fn http2(addr: SocketAddr, authority: &str, path: &str) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
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

/// The sum of a metric's samples whose labels include `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = series.split_once('{').unwrap_or((series, ""));
        if metric != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
        {
            *total.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    total
}

pub mod tls;

impl TestGate {
    /// Like `start_with_pools` with one server per pool, plus `listen_lines` added
    /// to the `[listen]` section (e.g. `https = "127.0.0.1:0"`).
    pub async fn start_with_listen(
        seed: &[String],
        storefront: Option<SocketAddr>,
        corporate: Option<SocketAddr>,
        listen_lines: &str,
        extra: &str,
    ) -> TestGate {
        std::env::set_var(TOKEN_ENV, TOKEN);
        let dir = tempfile::tempdir().expect("tempdir");
        let seed_path = dir.path().join("seed.jsonl");
        std::fs::write(&seed_path, seed.join("\n")).expect("write seed");
        let servers =
            |addr: Option<SocketAddr>| addr.map(|a| format!("\"{a}\"")).unwrap_or_default();
        let text = format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{listen_lines}\n\n\
             [registry]\nbackend = \"sqlite\"\npath = \"{db}\"\nseed = \"{seed}\"\n\n\
             [admin]\ntoken_env = \"{TOKEN_ENV}\"\n\n\
             [upstreams.storefront]\nservers = [{sf}]\n\n[upstreams.corporate_site]\nservers = [{corp}]\n\n{extra}\n",
            db = dir.path().join("registry.db").display(),
            seed = seed_path.display(),
            sf = servers(storefront),
            corp = servers(corporate),
        );
        let config_path = dir.path().join("icpgate.toml");
        std::fs::write(&config_path, &text).expect("write config");
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
