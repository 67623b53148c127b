//! The contract these tests pin, on the router itself (no listener):
//!
//! - the route table and `docs/openapi.json` name the same operations (method and
//!   path), and an operation documents a bearer token exactly when its route needs one;
//! - every response status the document gives an operation is one its route really
//!   answers, and every status a probe below provokes is documented: each probe
//!   checks its status, and per operation the probed set equals the documented set;
//! - strays are refused as JSON: 404 for an unknown path, 405 (with `Allow`) for a
//!   method a path does not take;
//! - reads need the token unless `admin.public_reads`; the `Bearer` scheme matches in
//!   any case; every answer carries `nosniff`; ten wrong tokens from one client are
//!   counted and then refused with 429 and `Retry-After`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{router, routes, tokens::AdminToken, Access, Admin, OPENAPI};
use crate::config::Config;
use crate::edge::proxy::{Gate, Runtime};
use crate::gate::decision_cache::{CacheSettings, DecisionCache};
use crate::gate::filed_domains::FiledDomains;
use crate::gate::GateState;
use crate::model::filing::{Action, Filing, Status, Submission};
use crate::model::host::RegistrableDomain;
use crate::observe::metrics::Metrics;
use crate::registry::sqlite::SqliteRegistry;
use crate::registry::{
    Change, ImportRecord, ListFilter, Lookup, Registry, RegistryError, StorageError, Submitted,
};

const TOKEN: &str = "unit-test-token-0123456789abcdef-0123";

/// An admin router over `registry`; `[admin]` as given.
fn admin_router(registry: Arc<dyn Registry>, dir: &Path, admin_toml: &str) -> Router {
    let text = format!(
        "[registry]\nbackend = \"sqlite\"\npath = \"{}\"\n\n[admin]\n{admin_toml}\n",
        dir.join("unused.db").display()
    );
    let config = Config::from_toml_str(&text, &dir.join("icpgate.toml")).expect("config");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let cache = Arc::new(DecisionCache::new(
        Arc::clone(&registry),
        Arc::clone(&metrics),
        CacheSettings {
            ttl: config.cache.ttl,
            negative_ttl: config.cache.negative_ttl,
            stale_if_error: config.cache.stale_if_error,
            max_entries: config.cache.max_entries,
        },
    ));
    let state = GateState::new(cache, Arc::new(FiledDomains::new(Vec::new())), metrics);
    let gate = Gate::new(Arc::new(state), Runtime::new(Arc::new(config.clone())));
    router(Arc::new(Admin {
        registry,
        gate: Arc::new(gate),
        token: Arc::new(AdminToken::load(&config.admin).expect("tokens")),
        notifier: None,
    }))
}

/// The routers the probes run against.
struct Routers {
    /// A working registry and the token `TOKEN`.
    up: Router,
    /// No token configured: every write is a 403.
    tokenless: Router,
    /// A registry that fails every call.
    down: Router,
    /// The working registry with `admin.public_reads = true`.
    public: Router,
    _dir: tempfile::TempDir,
}

fn routers() -> Routers {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let registry: Arc<dyn Registry> =
        Arc::new(SqliteRegistry::open(&dir.path().join("registry.db")).expect("registry"));
    let with_token = format!("token_file = \"{}\"", token_file.display());
    let unset = "token_env = \"ICPGATE_UNIT_TEST_UNSET_TOKEN\"";
    Routers {
        up: admin_router(Arc::clone(&registry), dir.path(), &with_token),
        tokenless: admin_router(Arc::clone(&registry), dir.path(), unset),
        down: admin_router(Arc::new(Down), dir.path(), &with_token),
        public: admin_router(
            registry,
            dir.path(),
            &format!("{with_token}\npublic_reads = true"),
        ),
        _dir: dir,
    }
}

/// Send one request; the status, the `Allow` header and the body as JSON (Null if not).
async fn send(
    router: &Router,
    method: &str,
    path: &str,
    token: bool,
    body: Option<Value>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if token {
        request = request.header("authorization", format!("Bearer {TOKEN}"));
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let request = request.body(body).expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let allow = response
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, allow, value)
}

/// The operations of the document, with their documented statuses and whether
/// they ask for a bearer token.
fn documented() -> BTreeMap<(String, String), (BTreeSet<u16>, bool)> {
    let doc: Value = serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let mut operations = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let statuses = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|s| s.parse::<u16>().expect("numeric status"))
                .collect();
            let token = operation.get("security").is_some();
            operations.insert((method.to_uppercase(), path.clone()), (statuses, token));
        }
    }
    operations
}

#[test]
fn the_document_names_exactly_the_routes_and_their_tokens() {
    let documented = documented();
    let served: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let in_doc: BTreeSet<(String, String)> = documented.keys().cloned().collect();
    assert_eq!(
        served.difference(&in_doc).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes the document lacks"
    );
    assert_eq!(
        in_doc.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented operations no route serves"
    );
    for route in routes() {
        let key = (route.method.to_string(), route.path.to_string());
        let (_, token) = &documented[&key];
        let needed = route.access != Access::Open;
        assert_eq!(*token, needed, "{key:?}: documented token vs route access");
    }
}

fn filing_body(domain: &str) -> Value {
    json!({
        "domains": [domain], "product": "storefront", "kind": "new",
        "entity": {"name": "杭州示例科技有限公司", "type": "enterprise",
                   "certificate_number": "91330100MA27XXXX1X", "province": "浙"},
        "website": {"name": "示例旺铺",
                    "owner": {"name": "张三", "phone": "13800000000", "email": "ops@example.cn"}},
    })
}

/// Which router a probe goes to.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// The working router, with the token.
    Token,
    /// The working router, without a token.
    NoToken,
    Tokenless,
    Down,
    /// `admin.public_reads = true`, without a token.
    Public,
}

/// One request: the route pattern it exercises, the `{id}`, the query, the body,
/// and the status it must answer.
struct Probe {
    method: &'static str,
    pattern: &'static str,
    id: i64,
    query: &'static str,
    via: Via,
    body: Option<Value>,
    want: u16,
}

fn probe(method: &'static str, pattern: &'static str, via: Via, want: u16) -> Probe {
    Probe {
        method,
        pattern,
        id: 1,
        query: "",
        via,
        body: None,
        want,
    }
}

impl Probe {
    fn id(self, id: i64) -> Probe {
        Probe { id, ..self }
    }
    fn query(self, query: &'static str) -> Probe {
        Probe { query, ..self }
    }
    fn body(self, body: Value) -> Probe {
        Probe {
            body: Some(body),
            ..self
        }
    }
}

const STEP: &str = "/v1/filings/{id}/";
const SUBMIT: &str = "/v1/filings";
const ONE: &str = "/v1/filings/{id}";

/// A workflow step on filing `id`, with the token.
fn step(name: &'static str, id: i64, body: Value, want: u16) -> Probe {
    let pattern = match name {
        "initial-review" => "/v1/filings/{id}/initial-review",
        "authority-review" => "/v1/filings/{id}/authority-review",
        "resubmit" => "/v1/filings/{id}/resubmit",
        "abandon" => "/v1/filings/{id}/abandon",
        "cancel" => "/v1/filings/{id}/cancel",
        "disconnect" => "/v1/filings/{id}/disconnect",
        _ => "/v1/filings/{id}/change",
    };
    probe("POST", pattern, Via::Token, want).id(id).body(body)
}

/// Reads, then three filings through every step: each documented status at least once.
fn probes() -> Vec<Probe> {
    use Via::{Down, NoToken, Public, Token};
    let approve = || json!({"approve": true});
    let number = |n: u32| json!({"approve": true, "icp_number": format!("浙ICP备2023{n:04}号-1")});
    let empty = || json!({});
    let rename = || json!({"website": {"name": "新名"}});
    let mut probes = vec![
        probe("GET", "/healthz", NoToken, 200),
        probe("GET", "/readyz", NoToken, 200),
        probe("GET", "/readyz", Down, 503),
        probe("GET", "/metrics", NoToken, 200),
        probe("GET", "/v1/openapi.json", Token, 200),
        probe("GET", "/v1/openapi.json", Public, 200),
        probe("GET", "/v1/decision", Token, 200).query("?host=www.a.cn"),
        probe("GET", "/v1/decision", Public, 200).query("?host=www.a.cn"),
        probe("GET", "/v1/decision", Token, 400),
        probe("GET", "/v1/check", Token, 200).query("?domain=a.cn"),
        probe("GET", "/v1/check", Token, 400).query("?domain=a.cn&dns=maybe"),
        probe("GET", "/v1/check", Down, 503).query("?domain=a.cn"),
        probe("GET", "/v1/blocked-hosts", Token, 200),
        probe("GET", "/v1/blocked-hosts", Public, 200),
        probe("GET", "/v1/blocked-hosts", Token, 400).query("?limit=0"),
        probe("GET", "/v1/filings", Token, 200).query("?status=approved&limit=5"),
        probe("GET", "/v1/filings", Public, 200),
        probe("GET", "/v1/filings", Token, 400).query("?status=lost"),
        // filings 1, 2, 3
        probe("POST", SUBMIT, Token, 201).body(filing_body("a.cn")),
        probe("POST", SUBMIT, Token, 201).body(filing_body("b.cn")),
        probe("POST", SUBMIT, Token, 201).body(filing_body("c.cn")),
        probe("POST", SUBMIT, Token, 409).body(filing_body("a.cn")),
        probe("POST", SUBMIT, Token, 400).body(filing_body("com.cn")),
        probe("GET", ONE, Token, 200),
        probe("GET", ONE, Public, 200),
        probe("GET", ONE, Token, 404).id(999),
        // filing 1 in initial review: the steps of other statuses conflict
        step("authority-review", 1, number(1), 409),
        step("resubmit", 1, empty(), 409),
        step("cancel", 1, empty(), 409),
        step("disconnect", 1, empty(), 409),
        step("initial-review", 1, approve(), 200),
        step("initial-review", 1, approve(), 409),
        step("authority-review", 1, number(1), 200),
        step("change", 1, rename(), 200),
        step("cancel", 1, empty(), 200),
        step("abandon", 1, empty(), 409),
        step("change", 1, rename(), 409),
        // filing 2: approved, then disconnected
        step("initial-review", 2, approve(), 200),
        step("authority-review", 2, number(2), 200),
        step("disconnect", 2, empty(), 200),
        // filing 3: rejected, resubmitted, abandoned
        step(
            "initial-review",
            3,
            json!({"approve": false, "reason": "不一致"}),
            200,
        ),
        step("resubmit", 3, empty(), 200),
        step("abandon", 3, empty(), 200),
    ];
    let reads = routes().into_iter().filter(|r| r.access == Access::Read);
    for route in reads {
        probes.push(probe("GET", route.path, NoToken, 401));
        probes.push(probe("GET", route.path, Via::Tokenless, 403));
    }
    let writes = routes()
        .into_iter()
        .filter(|r| r.access == Access::TokenNeeded);
    for route in writes {
        let write = |via, want| probe("POST", route.path, via, want).body(json!({"colour": 1}));
        probes.push(write(Token, 400));
        probes.push(write(NoToken, 401));
        probes.push(write(Via::Tokenless, 403));
        if route.path.starts_with(STEP) {
            // each step's own fields, for a filing that does not exist
            let body = match route.path.rsplit('/').next() {
                Some("authority-review") => number(9),
                Some("initial-review") => approve(),
                _ => empty(),
            };
            probes.push(write(Token, 404).id(999).body(body));
        }
    }
    probes
}

#[tokio::test]
async fn every_documented_status_is_answered_and_every_answer_documented() {
    let routers = routers();
    let mut answered: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
    for p in probes() {
        let (router, token) = match p.via {
            Via::Token => (&routers.up, true),
            Via::NoToken => (&routers.up, false),
            Via::Tokenless => (&routers.tokenless, true),
            Via::Down => (&routers.down, true),
            Via::Public => (&routers.public, false),
        };
        let path = format!(
            "{}{}",
            p.pattern.replace("{id}", &p.id.to_string()),
            p.query
        );
        let (status, _, body) = send(router, p.method, &path, token, p.body).await;
        assert_eq!(
            status.as_u16(),
            p.want,
            "{} {path} via {:?}: {body}",
            p.method,
            p.via
        );
        if !status.is_success() {
            assert!(
                body["error"].is_string() && body["detail"].is_string(),
                "{path}: {body}"
            );
        }
        let key = (p.method.to_string(), p.pattern.to_string());
        answered.entry(key).or_default().insert(p.want);
    }
    for (key, (statuses, _)) in documented() {
        let probed = answered.remove(&key).unwrap_or_default();
        assert_eq!(probed, statuses, "{key:?}: probed statuses vs documented");
    }
    assert!(
        answered.is_empty(),
        "probes of undocumented routes: {answered:?}"
    );
}

#[tokio::test]
async fn strays_are_refused_as_json() {
    let routers = routers();
    let cases = [
        ("GET", "/v1/nothing", 404, "not_found", None),
        ("POST", "/v1/filings/1/teleport", 404, "not_found", None),
        ("GET", "/v1/filings/abc", 404, "not_found", None),
        ("GET", "/v1/filings/-1", 404, "not_found", None),
        (
            "DELETE",
            "/v1/filings",
            405,
            "method_not_allowed",
            Some("GET,HEAD,POST"),
        ),
        (
            "POST",
            "/healthz",
            405,
            "method_not_allowed",
            Some("GET,HEAD"),
        ),
    ];
    // With or without a token: the auth layer guards routes, not strays — except
    // that a path matching a read's pattern (`/v1/filings/{id}` with a bad id) asks
    // for the token first.
    for ((method, path, want, code, allow), token) in
        cases.iter().flat_map(|c| [(c, true), (c, false)])
    {
        let (status, allowed, body) = send(&routers.up, method, path, token, None).await;
        if !token && path.starts_with("/v1/filings/") && *method == "GET" {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            continue;
        }
        assert_eq!(status.as_u16(), *want, "{method} {path} {token}");
        assert_eq!(body["error"], *code, "{method} {path} {token}");
        assert!(body["detail"].is_string());
        if let Some(allow) = allow {
            assert_eq!(allowed.as_deref(), Some(*allow), "{method} {path}");
        }
    }
}

#[tokio::test]
async fn personal_data_is_masked_with_a_token_and_absent_without() {
    let routers = routers();
    let (status, _, submitted) =
        send(&routers.up, "POST", SUBMIT, true, Some(filing_body("p.cn"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let phone = |v: &Value| v["website"]["owner"]["phone"].as_str().map(str::to_string);
    assert_eq!(
        phone(&submitted).as_deref(),
        Some("138****0000"),
        "write answers mask too"
    );
    let (_, _, with) = send(&routers.up, "GET", "/v1/filings/1", true, None).await;
    assert_eq!(phone(&with).as_deref(), Some("138****0000"));
    // The shared token names no one to audit: it may not reveal.
    let reveal = "/v1/filings/1?reveal=true";
    let (status, _, body) = send(&routers.up, "GET", reveal, true, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "forbidden");
    let (status, _, _) = send(&routers.up, "GET", "/v1/filings/1", false, None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "reads need the token by default"
    );
    // Public reads without a token: no contact at all, not even masked.
    let (_, _, without) = send(&routers.public, "GET", "/v1/filings/1", false, None).await;
    assert_eq!(without["website"]["owner"], Value::Null, "{without}");
    let (_, _, list) = send(&routers.public, "GET", "/v1/filings", false, None).await;
    assert_eq!(
        list["filings"][0]["website"]["owner"],
        Value::Null,
        "{list}"
    );
    let (status, _, _) = send(&routers.public, "GET", reveal, false, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a reveal needs a token");
    let (_, _, with) = send(&routers.public, "GET", "/v1/filings/1", true, None).await;
    assert_eq!(phone(&with).as_deref(), Some("138****0000"));
    let (_, _, list) = send(&routers.up, "GET", "/v1/filings", true, None).await;
    assert_eq!(phone(&list["filings"][0]).as_deref(), Some("138****0000"));
}

/// One request with an `Authorization` value of our choosing (None: no header);
/// the response's status and headers.
async fn send_auth(
    router: &Router,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (StatusCode, http::HeaderMap) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let request = request.body(Body::empty()).expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    (response.status(), response.headers().clone())
}

#[tokio::test]
async fn the_bearer_scheme_matches_in_any_case() {
    let routers = routers();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let value = format!("{scheme} {TOKEN}");
        let (status, _) = send_auth(&routers.up, "GET", "/v1/filings", Some(&value)).await;
        assert_eq!(status, StatusCode::OK, "{scheme}");
    }
    let basic = format!("Basic {TOKEN}");
    let (status, _) = send_auth(&routers.up, "GET", "/v1/filings", Some(&basic)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_answer_says_nosniff() {
    let routers = routers();
    let bearer = format!("Bearer {TOKEN}");
    let cases = [
        ("GET", "/healthz", None, 200),
        ("GET", "/metrics", None, 200),
        ("GET", "/v1/filings", Some(bearer.as_str()), 200),
        ("GET", "/v1/filings", None, 401),
        ("GET", "/v1/nothing", None, 404),
        ("DELETE", "/v1/filings", None, 405),
        ("POST", "/v1/filings", Some(bearer.as_str()), 400),
    ];
    for (method, path, auth, want) in cases {
        let (status, headers) = send_auth(&routers.up, method, path, auth).await;
        assert_eq!(status.as_u16(), want, "{method} {path}");
        assert_eq!(
            headers.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{method} {path}"
        );
    }
}

/// Ten wrong tokens are counted and answered 401; the eleventh request, and any
/// request needing a token after it (even with the right token), is a 429 with
/// `Retry-After`; a missing token is no failure; /healthz and /metrics still answer.
#[tokio::test]
async fn failed_authentications_are_counted_then_refused() {
    let routers = routers();
    let failures = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("icpgate_admin_auth_failures_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let scrape = || async {
        let request = Request::get("/metrics")
            .body(Body::empty())
            .expect("request");
        let response = routers
            .up
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    };
    assert_eq!(failures(&scrape().await), Some(0));
    for _ in 0..12 {
        let (status, _) = send_auth(&routers.up, "GET", "/v1/filings", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a missing token");
    }
    for i in 0..10 {
        let (status, _) = send_auth(&routers.up, "POST", "/v1/filings", Some("Bearer wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "failure {i}");
    }
    assert_eq!(failures(&scrape().await), Some(10));
    let bearer = format!("Bearer {TOKEN}");
    for (method, path, auth) in [
        ("POST", "/v1/filings", Some("Bearer wrong")),
        ("GET", "/v1/filings", Some(bearer.as_str())),
        ("GET", "/v1/decision?host=a.cn", None),
    ] {
        let (status, headers) = send_auth(&routers.up, method, path, auth).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{method} {path}");
        let retry = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{retry:?}");
    }
    let (status, _) = send_auth(&routers.up, "GET", "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        failures(&scrape().await),
        Some(10),
        "refusals are not failures"
    );
}

/// A registry whose every call fails as if its store were gone.
struct Down;

fn down<T>() -> Result<T, RegistryError> {
    Err(RegistryError::Unavailable(StorageError::Down))
}

#[async_trait]
impl Registry for Down {
    async fn lookup(&self, _: &RegistrableDomain) -> Result<Lookup, RegistryError> {
        down()
    }
    async fn get(&self, _: i64) -> Result<Option<Filing>, RegistryError> {
        down()
    }
    async fn list(&self, _: &ListFilter) -> Result<Vec<Filing>, RegistryError> {
        down()
    }
    async fn submit(&self, _: Submission, _: &str) -> Result<Submitted, RegistryError> {
        down()
    }
    async fn transition(&self, _: i64, _: Action, _: &str) -> Result<Filing, RegistryError> {
        down()
    }
    async fn import(&self, _: Vec<ImportRecord>) -> Result<usize, RegistryError> {
        down()
    }
    async fn filing_password(
        &self,
        _: i64,
    ) -> Result<Option<crate::model::filing::FilingPassword>, RegistryError> {
        down()
    }
    async fn export(&self) -> Result<Vec<Filing>, RegistryError> {
        down()
    }
    async fn counts_by_status(&self) -> Result<BTreeMap<Status, u64>, RegistryError> {
        down()
    }
    async fn revision(&self) -> Result<i64, RegistryError> {
        down()
    }
    async fn is_empty(&self) -> Result<bool, RegistryError> {
        down()
    }
    async fn filed_domains(&self) -> Result<Vec<String>, RegistryError> {
        down()
    }
    async fn changes_since(&self, _: i64) -> Result<Vec<Change>, RegistryError> {
        down()
    }
}
