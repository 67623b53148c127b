//! The contract these tests pin (issue 6), on the real binary as operators run it:
//! with `[log] format = "json"` every stderr line is one flat JSON object; each
//! request writes exactly one access line (time, client, host, registrable domain,
//! decision, reason, status, upstream, duration, request id); each filing write one
//! audit event (actor, action, filing id, domains, before and after status), and each
//! reveal of personal data one audit event naming who revealed what; the
//! request id a client sends (or the one generated) is the same on the response, the
//! upstream leg, the block page and the log; and personal data (certificate numbers,
//! phones, e-mails) reaches neither the logs nor `/metrics`. `RUST_LOG` overrides
//! `[log] level`; `format = "text"` writes human-readable lines.

mod common;

use std::net::SocketAddr;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Map, Value};

/// `icpgate serve` in a child process, its stderr collected line by line.
struct Binary {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    http: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Binary {
    fn start(origin: SocketAddr, log: &str, rust_log: Option<&str>) -> Binary {
        let dir = tempfile::tempdir().expect("tempdir");
        let seed = dir.path().join("seed.jsonl");
        std::fs::write(&seed, standard_seed().join("\n")).expect("seed");
        let config = dir.path().join("icpgate.toml");
        // A named token granted `reveal`, for the audited reveal.
        let tokens = dir.path().join("admin-tokens");
        let line = format!("auditor {} reveal\n", sha256_hex(REVEAL_TOKEN));
        std::fs::write(&tokens, line).expect("tokens file");
        let text = format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n\
             [registry]\nbackend = \"sqlite\"\npath = \"{db}\"\nseed = \"{seed}\"\n\n\
             [admin]\ntoken_env = \"{TOKEN_ENV}\"\ntokens_file = \"{tokens}\"\n\n\
             [upstreams.storefront]\nservers = [\"{origin}\"]\n\n\
             [upstreams.corporate_site]\nservers = [\"{origin}\"]\n\n[log]\n{log}\n",
            db = dir.path().join("registry.db").display(),
            seed = seed.display(),
            tokens = tokens.display(),
        );
        std::fs::write(&config, text).expect("config");
        let Served {
            child,
            http,
            admin,
            log,
        } = serve_with_log(&config, rust_log);
        Binary {
            child,
            lines: log,
            http,
            admin,
            _dir: dir,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Every line so far, parsed; fails the test on a line that is not a JSON object.
    fn json_lines(&self) -> Vec<Map<String, Value>> {
        self.lines()
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| match serde_json::from_str(l) {
                Ok(Value::Object(map)) => map,
                _ => panic!("not a JSON object: {l}"),
            })
            .collect()
    }

    /// Lines of `target` matching `pred` so far.
    fn matching(
        &self,
        target: &str,
        pred: impl Fn(&Map<String, Value>) -> bool,
    ) -> Vec<Map<String, Value>> {
        self.json_lines()
            .into_iter()
            .filter(|l| l.get("target").and_then(Value::as_str) == Some(target) && pred(l))
            .collect()
    }

    /// Lines of `target` matching `pred`, waiting up to 2 s for at least `n`; what
    /// there is then.
    async fn wait_lines(
        &self,
        target: &str,
        n: usize,
        pred: impl Fn(&Map<String, Value>) -> bool,
    ) -> Vec<Map<String, Value>> {
        let enough = || {
            let found = self.matching(target, &pred);
            std::future::ready((found.len() >= n).then_some(found))
        };
        match wait_until(Duration::from_secs(2), enough).await {
            Some(found) => found,
            None => self.matching(target, &pred),
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(line: &'a Map<String, Value>, key: &str) -> &'a Value {
    line.get(key).unwrap_or(&Value::Null)
}

async fn get(binary: &Binary, host: &str, request_id: Option<&str>) -> Reply {
    get_path(binary, host, "/", request_id).await
}

async fn get_path(binary: &Binary, host: &str, path: &str, request_id: Option<&str>) -> Reply {
    let mut headers = vec![("host", host)];
    if let Some(id) = request_id {
        headers.push(("x-request-id", id));
    }
    http1(binary.http, "GET", path, &headers, b"").await
}

const ACCESS_FIELDS: [&str; 11] = [
    "timestamp",
    "client",
    "host",
    "registrable_domain",
    "decision",
    "reason",
    "status",
    "upstream",
    "duration_ms",
    "request_id",
    "method",
];

#[tokio::test]
async fn json_access_lines_are_flat_complete_and_one_per_request() {
    let origin = start_origin("storefront").await;
    // RUST_LOG wins over the configured level (warn would hide the access log).
    let binary = Binary::start(origin, "format = \"json\"\nlevel = \"warn\"", Some("info"));

    let sent = std::time::Instant::now();
    let blocked = get(&binary, "www.unfiled-logcheck.cn", Some("req-blocked-1")).await;
    let blocked_took = sent.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(blocked.reason(), Some("not_filed"));
    assert!(
        blocked.text().contains("req-blocked-1"),
        "the block page shows the id"
    );
    // The origin sleeps 250 ms on /sleep/0.25: the access line's duration covers it.
    let sent = std::time::Instant::now();
    let allowed = get_path(
        &binary,
        "shop.example.com",
        "/sleep/0.25",
        Some("req-allowed-1"),
    )
    .await;
    let allowed_took = sent.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.json()["headers"]["x-request-id"], "req-allowed-1");
    assert_eq!(allowed.headers["x-request-id"], "req-allowed-1");

    let by_id = |id: &'static str| move |l: &Map<String, Value>| field(l, "request_id") == id;
    let lines = binary
        .wait_lines("icpgate::access", 1, by_id("req-blocked-1"))
        .await;
    assert_eq!(lines.len(), 1, "one access line per request: {lines:?}");
    let line = &lines[0];
    for key in ACCESS_FIELDS {
        assert!(line.contains_key(key), "access line lacks {key}: {line:?}");
    }
    assert_eq!(field(line, "client"), "127.0.0.1");
    assert_eq!(field(line, "host"), "www.unfiled-logcheck.cn");
    assert_eq!(field(line, "registrable_domain"), "unfiled-logcheck.cn");
    assert_eq!(field(line, "decision"), "block");
    assert_eq!(field(line, "reason"), "not_filed");
    assert_eq!(field(line, "status"), 451);
    assert_eq!(field(line, "upstream"), "-");
    let duration = field(line, "duration_ms").as_f64();
    assert!(
        duration.is_some_and(|d| (0.0..=blocked_took).contains(&d)),
        "duration_ms {duration:?} within the {blocked_took} ms the client waited"
    );

    let lines = binary
        .wait_lines("icpgate::access", 1, by_id("req-allowed-1"))
        .await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(field(&lines[0], "decision"), "allow");
    assert_eq!(field(&lines[0], "reason"), "filed");
    assert_eq!(field(&lines[0], "status"), 200);
    assert_eq!(field(&lines[0], "upstream"), "storefront");
    assert_eq!(field(&lines[0], "registrable_domain"), "example.com");
    let duration = field(&lines[0], "duration_ms").as_f64();
    assert!(
        duration.is_some_and(|d| (250.0..=allowed_took).contains(&d)),
        "duration_ms {duration:?}: the origin's 250 ms, within the client's {allowed_took} ms"
    );

    // No id sent: the generated one is on the response, the block page and the log.
    let anonymous = get(&binary, "pending.cn", None).await;
    let generated = anonymous.headers["x-request-id"]
        .to_str()
        .expect("ascii id")
        .to_string();
    assert!(!generated.is_empty() && anonymous.text().contains(&generated));
    let lines = binary
        .wait_lines("icpgate::access", 1, |l| {
            field(l, "request_id") == generated.as_str()
        })
        .await;
    assert_eq!(lines.len(), 1);
    assert_eq!(field(&lines[0], "reason"), "pending_review");

    // Every line of the process is a flat JSON object with the standard keys.
    for line in binary.json_lines() {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.contains_key(key), "{key} missing: {line:?}");
        }
        let nested = line.values().any(|v| v.is_object() || v.is_array());
        assert!(!nested, "a log line must be flat: {line:?}");
    }
}

#[tokio::test]
async fn filing_writes_are_audited_and_personal_data_is_never_logged() {
    let origin = start_origin("storefront").await;
    let binary = Binary::start(origin, "format = \"json\"\nlevel = \"debug\"", None);
    let (certificate, phone, email) = ("330102199001011234", "13912345678", "owner@pii-shop.cn");
    let submission = json!({
        "domains": ["pii-shop.cn"], "product": "storefront", "kind": "new",
        "entity": {"name": "示例", "type": "individual", "certificate_number": certificate},
        "website": {"name": "x", "owner": {"name": "张三", "phone": phone, "email": email}},
    });
    let write = |path: String, body: Value| async move {
        let actor = [("x-icpgate-actor", "reviewer-7")];
        admin_request(
            binary.admin,
            "POST",
            &path,
            Some(TOKEN),
            &actor,
            Some(&body),
        )
        .await
    };
    let reply = write("/v1/filings".to_string(), submission).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let id = reply.json()["id"].as_i64().expect("id");
    let review = format!("/v1/filings/{id}/initial-review");
    let reply = write(review, json!({"approve": true})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // A refused write logs nothing of its body either.
    let bad = json!({"domains": ["pii-bad.cn"], "product": "storefront", "kind": "new",
        "entity": {"name": "x", "type": "individual", "certificate_number": "33010219900101123X-bad"},
        "website": {"name": "x", "owner": {"name": "y", "phone": phone, "email": "no-at-sign"}}});
    assert_eq!(write("/v1/filings".to_string(), bad).await.status, 400);
    get(&binary, "pii-shop.cn", None).await;

    let of_filing = |l: &Map<String, Value>| field(l, "filing_id") == id;
    let audit = binary.wait_lines("icpgate::audit", 2, of_filing).await;
    assert_eq!(audit.len(), 2, "one audit event per write: {audit:?}");
    let steps: Vec<_> = audit
        .iter()
        .map(|l| (field(l, "action"), field(l, "before"), field(l, "after")))
        .collect();
    assert_eq!(
        steps[0],
        (&json!("submit"), &json!("-"), &json!("initial_review"))
    );
    assert_eq!(
        steps[1],
        (
            &json!("initial-review"),
            &json!("initial_review"),
            &json!("authority_review")
        )
    );
    for line in &audit {
        assert_eq!(field(line, "actor"), "reviewer-7");
        assert_eq!(field(line, "domains"), "pii-shop.cn");
    }

    let log = binary.lines().join("\n");
    let metrics = http1(
        binary.admin,
        "GET",
        "/metrics",
        &[("host", "127.0.0.1")],
        b"",
    )
    .await;
    for secret in [certificate, phone, email, "33010219900101123X", "张三"] {
        assert!(!log.contains(secret), "{secret} reached the log");
        assert!(
            !metrics.text().contains(secret),
            "{secret} reached /metrics"
        );
    }
}

/// The token of the named caller granted `reveal`.
const REVEAL_TOKEN: &str = "auditor-token-0123456789abcdef0123";

#[tokio::test]
async fn every_reveal_of_personal_data_is_audited_with_its_actor() {
    let origin = start_origin("storefront").await;
    let binary = Binary::start(origin, "format = \"json\"\nlevel = \"info\"", None);
    let phone = "13912345678";
    let submission = json!({
        "domains": ["reveal-shop.cn"], "product": "storefront", "kind": "new",
        "entity": {"name": "示例", "type": "enterprise"},
        "website": {"name": "x", "owner": {"name": "张三", "phone": phone}},
    });
    let reply = admin_request(
        binary.admin,
        "POST",
        "/v1/filings",
        Some(TOKEN),
        &[],
        Some(&submission),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let id = reply.json()["id"].as_i64().expect("id");
    let path = format!("/v1/filings/{id}?reveal=true");
    // The shared token may not reveal: refused, and nothing is revealed.
    let refused = admin_request(binary.admin, "GET", &path, Some(TOKEN), &[], None).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(!refused.text().contains(phone));
    let revealed = admin_request(binary.admin, "GET", &path, Some(REVEAL_TOKEN), &[], None).await;
    assert_eq!(revealed.status, 200, "{}", revealed.text());
    assert_eq!(revealed.json()["website"]["owner"]["phone"], phone);

    let is_reveal = |l: &Map<String, Value>| field(l, "action") == "reveal";
    let audit = binary.wait_lines("icpgate::audit", 1, is_reveal).await;
    assert_eq!(audit.len(), 1, "one audit event per reveal: {audit:?}");
    assert_eq!(field(&audit[0], "actor"), "auditor");
    assert_eq!(field(&audit[0], "filing_id"), id);
    assert_eq!(field(&audit[0], "what"), "personal data");
    assert!(
        !binary.lines().join("\n").contains(phone),
        "the revealed data is not logged"
    );
}

#[tokio::test]
async fn text_format_writes_readable_lines() {
    let origin = start_origin("storefront").await;
    let binary = Binary::start(origin, "format = \"text\"\nlevel = \"info\"", None);
    get(&binary, "unfiled-text.cn", Some("req-text-1")).await;
    let found = wait_until(Duration::from_secs(2), || {
        std::future::ready(
            binary
                .lines()
                .into_iter()
                .find(|l| l.contains("req-text-1")),
        )
    })
    .await;
    let line = found.expect("an access line for the request");
    assert!(
        serde_json::from_str::<Value>(&line).is_err(),
        "text, not JSON: {line}"
    );
    assert!(
        !line.contains('\u{1b}'),
        "no colour escapes off a terminal: {line:?}"
    );
    for part in [
        "icpgate::access",
        "host=\"unfiled-text.cn\"",
        "reason=\"not_filed\"",
        "status=451",
    ] {
        assert!(line.contains(part), "{part} missing: {line}");
    }
}

/// serde_json's type errors quote the offending value ("invalid type: integer
/// `13912345678`, expected a string"): a refused admin request is logged by its error
/// code only, never its detail.
#[tokio::test]
async fn a_mistyped_phone_is_not_echoed_into_debug_logs() {
    let origin = start_origin("storefront").await;
    let binary = Binary::start(origin, "format = \"json\"\nlevel = \"debug\"", None);
    let typed = json!({"domains": ["pii-typed.cn"], "product": "storefront", "kind": "new",
        "entity": {"name": "x", "type": "individual"},
        "website": {"name": "x", "owner": {"name": "y", "phone": 13912345678u64}}});
    let auth = format!("Bearer {TOKEN}");
    let headers = [("host", "127.0.0.1"), ("authorization", auth.as_str())];
    let body = typed.to_string();
    let reply = http1(
        binary.admin,
        "POST",
        "/v1/filings",
        &headers,
        body.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 400);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!binary.lines().join("\n").contains("13912345678"));
}

/// The review console writes the same audit events as the API, with the signed-in
/// actor, and also audits each reveal of personal data and each sign-in; the token
/// a sign-in posts never reaches the log.
#[tokio::test]
async fn console_steps_and_reveals_are_audited_with_the_actor() {
    let origin = start_origin("storefront").await;
    let binary = Binary::start(origin, "format = \"json\"\nlevel = \"debug\"", None);
    let listed = admin_request(
        binary.admin,
        "GET",
        "/v1/filings?domain=pending.cn",
        Some(TOKEN),
        &[],
        None,
    )
    .await;
    let id = listed.json()["filings"][0]["id"]
        .as_i64()
        .expect("pending.cn");
    let page = format!("/console/filings/{id}");
    // A session of the shared token may not reveal (it names no one), and nothing
    // is audited as a reveal.
    let mut shared = ConsoleClient::new(binary.admin);
    assert_eq!(shared.sign_in(TOKEN).await.status, 303);
    let csrf = shared.csrf(&page).await;
    let refused = shared
        .post(&format!("{page}/reveal"), &[("csrf", &csrf)])
        .await;
    assert_eq!(refused.status, 403);
    let mut console = ConsoleClient::new(binary.admin);
    assert_eq!(console.sign_in(REVEAL_TOKEN).await.status, 303);
    let csrf = console.csrf(&page).await;
    let revealed = console
        .post(&format!("{page}/reveal"), &[("csrf", &csrf)])
        .await;
    assert_eq!(revealed.status, 200);
    let step = console
        .post(
            &format!("{page}/initial-review"),
            &[("approve", "true"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(step.status, 303);

    let of_filing = |l: &Map<String, Value>| field(l, "filing_id") == id;
    let audit = binary.wait_lines("icpgate::audit", 2, of_filing).await;
    let actions: Vec<_> = audit
        .iter()
        .map(|l| (field(l, "action"), field(l, "actor")))
        .collect();
    assert_eq!(
        actions,
        [
            (&json!("reveal"), &json!("auditor")),
            (&json!("initial-review"), &json!("auditor"))
        ],
        "{audit:?}"
    );
    assert_eq!(field(&audit[1], "after"), "authority_review");
    let login = binary
        .wait_lines("icpgate::audit", 2, |l| {
            field(l, "action") == "console_login"
        })
        .await;
    assert_eq!(login.len(), 2, "both sign-ins are audited");
    let log = binary.lines().join("\n");
    assert!(
        !log.contains(TOKEN) && !log.contains(REVEAL_TOKEN),
        "no token is ever logged"
    );
}
