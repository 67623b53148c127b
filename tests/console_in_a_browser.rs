//! The review console in a real browser: Debian's `chromium`, headless, driven
//! through `chromedriver` (WebDriver, `fantoccini`) with a fresh profile, every host
//! name resolved to this machine. Staff sign in, approve a filing through initial
//! and authority review and see the gate serve its domain, reject another with a
//! reason and see the block page say so, check a pasted list and download the CSV,
//! and switch to Chinese; on a phone-sized window the pages fit. Every page is saved under `target/screenshots/` in both
//! languages, and the block page of every reason: navigated to for those a browser
//! can reach, fetched over a socket and opened from a file for the rest (no Host,
//! a bad Host, a Host other than the TLS connection's SNI, a failing registry)
//! (`docs/console.md` describes them).
//!
//! Without `chromium` and `chromedriver` the test skips locally and fails under CI
//! (`.ci/run` installs them).

mod common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::dns::{dns_section, start_dns, Rec};
use common::pg::PgDatabase;
use common::tls::{connect, get_h1, TestCa};
use common::{
    eventually, filing, raw, require_tool, sha256_hex, standard_seed, start_origin, submission,
    TestGate, TOKEN,
};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// The named token staff sign in with, granted `reveal` in `admin.tokens_file`.
const REVIEWER: &str = "reviewer-token-7d1e42c9b3a05f86e2c4d901";

/// A running chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver leads a process group of its own (see `start_driver`) that its
        // Chromium processes share: a test that fails before closing its session
        // would otherwise leave the browsers running after the test binary ends.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver { child, port };
    let up = eventually(Duration::from_secs(20), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "chromedriver listens on {port}");
    driver
}

/// A headless Chromium with a fresh profile in `profile`, downloads into
/// `downloads`, every name resolved to 127.0.0.1, asking for `accept_language`.
async fn browser(
    driver: &Driver,
    profile: &Path,
    downloads: &Path,
    accept_language: &str,
) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--no-first-run", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
                format!("--lang={accept_language}"),
                "--host-resolver-rules=MAP * 127.0.0.1",
            ],
            "prefs": {
                "intl.accept_languages": accept_language,
                "download.default_directory": downloads.display().to_string(),
                "download.prompt_for_download": false,
            },
        },
    });
    let capabilities = match capabilities {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a chromium session")
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn shoot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.len() > 2000, "{name}: a real picture");
    std::fs::write(screenshots().join(format!("{name}.png")), png).expect("save screenshot");
}

async fn text_of(client: &Client, css: &str) -> String {
    let element = client.wait().for_element(Locator::Css(css)).await;
    element
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap_or_default()
}

/// Wait for the filing page after a form's redirect to show status `want`: right
/// after a click the old page (or an element of it gone stale) may still answer.
async fn status_becomes(client: &Client, want: &str) {
    let seen = eventually(Duration::from_secs(20), || async {
        text_of(client, "#status").await == want
    })
    .await;
    assert!(
        seen,
        "status {want}, saw {:?}",
        text_of(client, "#status").await
    );
}

async fn click(client: &Client, css: &str) {
    let element = client.wait().for_element(Locator::Css(css)).await;
    element
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn type_into(client: &Client, css: &str, text: &str) {
    let element = client.find(Locator::Css(css)).await;
    element
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

async fn source(client: &Client) -> String {
    client.source().await.expect("page source")
}

/// Open the filing whose queue row names `domain`.
async fn open_filing(client: &Client, console: &str, domain: &str) {
    client.goto(&format!("{console}/")).await.expect("queue");
    let link = client.find(Locator::LinkText(domain)).await;
    link.unwrap_or_else(|e| panic!("{domain} in the queue: {e}"))
        .click()
        .await
        .expect("open filing");
    assert!(text_of(client, "h1").await.contains('#'));
}

/// Sign in; approve `waiting.cn` through both reviews and see it served; reject
/// `incomplete.cn` with a reason and see the block page; check a list and download
/// the CSV. Screenshots along the way (`en-*`).
async fn review_flows(client: &Client, g: &TestGate, downloads: &Path) {
    let console = format!("http://127.0.0.1:{}/console", g.admin.port());
    client.goto(&format!("{console}/")).await.expect("console");
    assert!(client
        .current_url()
        .await
        .expect("url")
        .path()
        .ends_with("/console/login"));
    shoot(client, "en-login").await;
    type_into(client, "#token", REVIEWER).await;
    click(client, "#sign-in").await;
    assert!(text_of(client, "#initial-queue")
        .await
        .contains("waiting.cn"));
    shoot(client, "en-queue").await;

    open_filing(client, &console, "waiting.cn").await;
    shoot(client, "en-filing-review").await;
    click(client, "#initial-approve").await;
    type_into(client, "#initial-reason", "materials complete").await;
    click(client, "#initial-submit").await;
    status_becomes(client, "authority review").await;
    assert!(text_of(client, "#flash").await.contains("Recorded"));
    click(client, "#authority-approve").await;
    type_into(client, "#authority-icp", "浙ICP备44556677号-1").await;
    click(client, "#authority-submit").await;
    status_becomes(client, "approved").await;
    assert!(text_of(client, "#domains").await.contains("served"));
    shoot(client, "en-filing-approved").await;
    client
        .goto(&format!("http://waiting.cn:{}/", g.http.port()))
        .await
        .expect("the approved site");
    let served = source(client).await;
    assert!(
        served.contains("storefront"),
        "the origin answers: {served}"
    );

    open_filing(client, &console, "incomplete.cn").await;
    click(client, "#initial-reject").await;
    type_into(client, "#initial-reason", "营业执照不清晰").await;
    click(client, "#initial-submit").await;
    status_becomes(client, "rejected").await;
    assert!(text_of(client, "#history").await.contains("营业执照不清晰"));
    client
        .goto(&format!("http://incomplete.cn:{}/", g.http.port()))
        .await
        .expect("the rejected site");
    let blocked = source(client).await;
    assert!(
        blocked.contains("This site's ICP filing was returned"),
        "{blocked}"
    );
    assert!(blocked.contains("该网站的 ICP 备案已被退回"), "{blocked}");

    client
        .goto(&format!("{console}/check"))
        .await
        .expect("check");
    type_into(
        client,
        "#domains",
        "www.waiting.cn\nincomplete.cn\nnobody.cn",
    )
    .await;
    click(client, "#check-submit").await;
    let results = text_of(client, "#check-results").await;
    assert!(
        results.contains("served") && results.contains("rejected") && results.contains("not filed"),
        "{results}"
    );
    shoot(client, "en-check").await;
    click(client, "#check-csv").await;
    let csv = downloads.join("icpgate-check.csv");
    let arrived = eventually(Duration::from_secs(10), || {
        let csv = csv.clone();
        async move { std::fs::read_to_string(&csv).is_ok_and(|t| t.lines().count() == 4) }
    })
    .await;
    assert!(
        arrived,
        "the CSV is downloaded with a header and three lines"
    );
    let text = std::fs::read_to_string(&csv).unwrap_or_default();
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("www.waiting.cn,")),
        "{text}"
    );
}

/// The pages in the current language (`prefix-*`), after the flows filled them.
async fn pages(client: &Client, g: &TestGate, prefix: &str) {
    let console = format!("http://127.0.0.1:{}/console", g.admin.port());
    for (path, name) in [
        ("/", "queue"),
        ("/traffic", "traffic"),
        ("/search?q=ICP", "search"),
    ] {
        client
            .goto(&format!("{console}{path}"))
            .await
            .expect("page");
        shoot(client, &format!("{prefix}-{name}")).await;
    }
    open_filing(client, &console, "pending.cn").await;
    shoot(client, &format!("{prefix}-filing")).await;
    click(client, "#reveal").await;
    assert!(text_of(client, "#revealed").await.len() > 4);
}

/// On a phone-sized window the queue and a filing fit the width (long tables scroll
/// inside their box, not the page).
async fn phone(client: &Client, g: &TestGate) {
    client.set_window_size(390, 844).await.expect("phone size");
    let console = format!("http://127.0.0.1:{}/console", g.admin.port());
    for (path, name) in [("/", "queue"), ("/filings/1", "filing")] {
        client
            .goto(&format!("{console}{path}"))
            .await
            .expect("page");
        let overflow = client
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await
            .expect("measure");
        assert_eq!(overflow.as_i64(), Some(0), "{path} fits a phone's width");
        shoot(client, &format!("zh-{name}-phone")).await;
    }
    client
        .set_window_size(1280, 1000)
        .await
        .expect("laptop size");
}

/// The block page of each reason a browser can reach, for a browser asking `lang`.
async fn block_pages(client: &Client, http: SocketAddr, lang: &str) {
    let hosts = [
        ("unfiled.cn", "not_filed"),
        ("pending.cn", "pending_review"),
        ("incomplete.cn", "rejected"),
        ("gone.org", "abandoned"),
        ("cancelled.com", "cancelled"),
        ("left.cn", "disconnected"),
        ("127.0.0.1", "ip_literal"),
    ];
    for (host, reason) in hosts {
        client
            .goto(&format!("http://{host}:{}/", http.port()))
            .await
            .expect("block page");
        let page = source(client).await;
        assert!(
            page.contains("ICP") || page.contains("备案"),
            "{reason}: {page}"
        );
        shoot(client, &format!("block-{reason}-{lang}")).await;
    }
}

/// Each reason a browser cannot reach by navigating, with its title in both
/// languages (`src/edge/block_page.rs`).
const FETCHED_REASONS: [(&str, &str, &str); 4] = [
    ("missing_host", "请求缺少主机名", "The request has no Host"),
    (
        "invalid_host",
        "请求的主机名无效",
        "The request's Host is invalid",
    ),
    (
        "sni_mismatch",
        "该主机名不能在此连接上访问",
        "This host cannot be served on this connection",
    ),
    (
        "registry_unavailable",
        "备案信息暂时无法查询",
        "The filing registry is temporarily unavailable",
    ),
];

/// The body of a raw HTTP/1.0 answer (the gate closes after it: no chunking).
fn body_of(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    let (_, body) = text.split_once("\r\n\r\n").unwrap_or(("", ""));
    body.to_string()
}

/// The block pages of the reasons a browser cannot trigger by navigating, fetched
/// over sockets from gates made to refuse that way: reason and HTML.
async fn fetch_unreachable_block_pages(http: SocketAddr) -> Vec<(&'static str, String)> {
    let wait = Duration::from_secs(5);
    let mut pages = vec![
        (
            "missing_host",
            body_of(&raw(http, b"GET / HTTP/1.0\r\n\r\n", wait).await),
        ),
        (
            "invalid_host",
            body_of(&raw(http, b"GET / HTTP/1.0\r\nHost: a..b.com\r\n\r\n", wait).await),
        ),
    ];
    // TLS for shop.example.com, then a request for another filed domain.
    let ca = TestCa::new();
    let certs = tempfile::tempdir().expect("certs dir");
    ca.write_pair(certs.path(), "example", &["example.com", "*.example.com"]);
    let extra = format!("[tls]\ncerts_dir = \"{}\"\n", certs.path().display());
    let listen = "https = \"127.0.0.1:0\"";
    let tls = TestGate::start_with_listen(&standard_seed(), None, None, listen, &extra).await;
    let stream = connect(
        &ca.client(&[b"http/1.1"], true),
        tls.https(),
        "shop.example.com",
    )
    .await
    .expect("handshake");
    let reply = get_h1(stream, "example.com.cn", "/").await;
    assert_eq!(reply.reason(), Some("sni_mismatch"), "{}", reply.text());
    pages.push(("sni_mismatch", reply.text()));
    if let Some(html) = registry_unavailable_page().await {
        pages.push(("registry_unavailable", html));
    }
    pages
}

/// A pending filing looked up while PostgreSQL refuses the gate's connections.
/// None when `ICPGATE_TEST_PG_URL` is not set (a failure under CI).
async fn registry_unavailable_page() -> Option<String> {
    let db = PgDatabase::create("registry_unavailable block page").await?;
    let gate = TestGate::start_with_registry(
        &format!("backend = \"postgres\"\nurl = \"{}\"", db.url),
        None,
    )
    .await;
    let body = submission(&["waits.cn"], "new", None);
    let (status, filing) = gate.api("POST", "/v1/filings", Some(body)).await;
    assert_eq!(status, 201, "{filing}");
    let admin_url = std::env::var("ICPGATE_TEST_PG_URL").expect("checked by create");
    let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .expect("connect as admin");
    tokio::spawn(connection);
    let name = db.url.rsplit('/').next().expect("database name");
    // New connections refused, open ones cut: every lookup fails.
    client
        .batch_execute(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
        ))
        .await
        .expect("refuse the gate's connections");
    let reply = gate.get("www.waits.cn", "/").await;
    assert_eq!(
        reply.reason(),
        Some("registry_unavailable"),
        "{}",
        reply.text()
    );
    Some(reply.text())
}

/// Open each fetched page from a file in `client` (asking for `lang`): it names
/// its reason in both languages; a screenshot of each.
async fn file_block_pages(client: &Client, pages: &[(&str, String)], dir: &Path, lang: &str) {
    for (reason, html) in pages {
        let (_, zh, en) = FETCHED_REASONS
            .iter()
            .find(|(r, _, _)| r == reason)
            .expect("a known reason");
        let en_escaped = en.replace('\'', "&#39;");
        assert!(
            html.contains(zh) && html.contains(&en_escaped) && html.contains(reason),
            "{reason}: {html}"
        );
        let file = dir.join(format!("block-{reason}.html"));
        std::fs::write(&file, html).expect("write the page");
        client
            .goto(&format!("file://{}", file.display()))
            .await
            .expect("open the page");
        let shown = text_of(client, "body").await;
        assert!(
            shown.contains(zh) && shown.contains(en),
            "{reason}: {shown}"
        );
        shoot(client, &format!("block-{reason}-{lang}")).await;
    }
}

#[tokio::test]
async fn staff_review_check_and_switch_language_in_chromium() {
    if !require_tool("chromium") || !require_tool("chromedriver") {
        return;
    }
    let origin = start_origin("storefront").await;
    let seed = [
        filing(&["waiting.cn"], "initial_review", "storefront", None),
        filing(&["incomplete.cn"], "initial_review", "storefront", None),
        filing(&["pending.cn"], "initial_review", "storefront", None),
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
    ];
    let reviewer = format!("reviewer {} reveal\n", sha256_hex(REVIEWER));
    let g = TestGate::start_with_named_tokens(&seed, Some(origin), &reviewer).await;
    let driver = start_driver().await;
    let work = tempfile::tempdir().expect("tempdir");
    let downloads = work.path().join("downloads");
    std::fs::create_dir_all(&downloads).expect("downloads");

    let client = browser(
        &driver,
        &work.path().join("profile-en"),
        &downloads,
        "en-US",
    )
    .await;
    review_flows(&client, &g, &downloads).await;
    block_pages(&client, g.http, "en").await;
    let fetched = fetch_unreachable_block_pages(g.http).await;
    file_block_pages(&client, &fetched, work.path(), "en").await;
    pages(&client, &g, "en").await;

    // Switch language with the link: the page, its flash and the next pages in Chinese.
    click(&client, "#lang-switch").await;
    assert!(
        text_of(&client, "h1").await.contains("备案"),
        "the filing page in Chinese"
    );
    assert!(text_of(&client, "#lang-switch").await.contains("English"));
    pages(&client, &g, "zh").await;
    client
        .goto(&format!(
            "http://127.0.0.1:{}/console/check",
            g.admin.port()
        ))
        .await
        .expect("check");
    assert!(text_of(&client, "h1").await.contains("检查域名"));
    shoot(&client, "zh-check").await;
    phone(&client, &g).await;
    click(&client, "#logout").await;
    let signed_out = eventually(Duration::from_secs(20), || async {
        text_of(&client, "h1").await.contains("登录")
    })
    .await;
    assert!(signed_out, "signed out, in Chinese");
    shoot(&client, "zh-login").await;
    client.close().await.expect("close");

    // A browser that asks for Chinese gets the console in Chinese from the start.
    let zh = browser(
        &driver,
        &work.path().join("profile-zh"),
        &downloads,
        "zh-CN",
    )
    .await;
    zh.goto(&format!("http://127.0.0.1:{}/console/", g.admin.port()))
        .await
        .expect("console");
    assert!(text_of(&zh, "label[for=token]").await.contains("管理令牌"));
    block_pages(&zh, g.http, "zh").await;
    file_block_pages(&zh, &fetched, work.path(), "zh").await;
    zh.close().await.expect("close");
}

/// Check `domains` with DNS ticked on the check page; the results show every text
/// of `want` (waited for: right after the click the old page may still answer).
async fn check_with_dns(client: &Client, check: &str, domains: &str, want: &[&str]) {
    client.goto(check).await.expect("check");
    type_into(client, "#domains", domains).await;
    click(client, "#dns").await;
    click(client, "#check-submit").await;
    let shown = |results: &str| want.iter().all(|text| results.contains(text));
    let seen = eventually(Duration::from_secs(20), || async {
        shown(&text_of(client, "#check-results").await)
    })
    .await;
    let results = text_of(client, "#check-results").await;
    assert!(seen, "{want:?} in {results}");
}

/// With `[dns]` asking a resolver on loopback, the check page adds each domain's
/// DNS verdict, in the page's language: filed and pointed here, pointed here but not
/// filed, filed but pointed elsewhere, and a failed lookup.
#[tokio::test]
async fn the_check_page_gives_dns_verdicts_in_both_languages() {
    if !require_tool("chromium") || !require_tool("chromedriver") {
        return;
    }
    let v4 = |s: &str| Rec::A(s.parse().expect("v4"));
    let zone = vec![
        ("shop.example.com", v4("203.0.113.10")),
        ("unfiled-shop.cn", v4("203.0.113.10")),
        ("v6.example.com", v4("192.0.2.1")),
        ("broken.example.com", Rec::ServFail),
    ];
    let server = start_dns(zone).await;
    let g = TestGate::start(&standard_seed(), None, None, &dns_section(server)).await;
    let driver = start_driver().await;
    let work = tempfile::tempdir().expect("tempdir");
    let client = browser(&driver, &work.path().join("profile"), work.path(), "en-US").await;
    let console = format!("http://127.0.0.1:{}/console", g.admin.port());
    client
        .goto(&format!("{console}/login"))
        .await
        .expect("login");
    type_into(&client, "#token", TOKEN).await;
    click(&client, "#sign-in").await;

    let domains = "shop.example.com\nunfiled-shop.cn\nv6.example.com\nbroken.example.com";
    let check = format!("{console}/check");
    let english = [
        "DNS verdict",
        "compliant: filed and pointed here",
        "violation: pointed here, not filed",
        "filed, not pointed here",
        "DNS lookup failed",
    ];
    check_with_dns(&client, &check, domains, &english).await;
    shoot(&client, "en-check-dns").await;

    click(&client, "#lang-switch").await;
    let chinese = [
        "DNS结论",
        "合规：已备案且已解析到本接入",
        "违规：已解析到本接入但未备案",
        "已备案，未解析到本接入",
        "DNS查询失败",
    ];
    check_with_dns(&client, &check, domains, &chinese).await;
    shoot(&client, "zh-check-dns").await;
    client.close().await.expect("close");
}
