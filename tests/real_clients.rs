//! The contract these tests pin, as the clients operators actually use see it:
//!
//! - curl over HTTP/1.1, HTTP/2 by prior knowledge and HTTPS (ALPN h2, our CA) gets
//!   the origin for a filed host, and the block response (451, reason header, `Link`
//!   rel="blocked-by") for an unfiled one;
//! - `openssl s_client` is refused with a fatal `access_denied` alert for an SNI
//!   without an approved filing, and for no SNI at all;
//! - TLS sessions resume (TLS 1.3 tickets and TLS 1.2 session IDs) and keep resuming
//!   across a certificate reload, but a resumption is decided like any handshake: a
//!   cancelled filing refuses the client that still holds a ticket for it.
//!
//! curl and openssl must be on PATH (`.ci/run` installs them); without them these
//! tests fail under CI (`CI` set) and say they were skipped elsewhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::tls::*;
use common::*;
use tokio::process::Command;

struct Fixture {
    gate: TestGate,
    dir: tempfile::TempDir,
    ca: TestCa,
}

impl Fixture {
    /// The standard seed behind http and https listeners, with certificates for a
    /// filed name (example.com and its subdomains), an unfiled one and one that is
    /// filed later by the test (late.cn).
    async fn start() -> Fixture {
        let origin = start_origin("storefront").await;
        let ca = TestCa::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).expect("certs dir");
        ca.write_pair(&certs, "example", &["example.com", "*.example.com"]);
        ca.write_pair(&certs, "unfiled", &["unfiled.com"]);
        ca.write_pair(&certs, "late", &["late.cn"]);
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca");
        let gate = TestGate::start_https(Some(origin), None, &certs, "").await;
        Fixture { gate, dir, ca }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn session_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.session"))
    }

    /// curl to `url` with `args`; the response head and body, and curl's exit code.
    async fn curl(&self, url: &str, args: &[&str]) -> Curl {
        let https = self.gate.https().port();
        let resolve = format!("example.com:{https}:127.0.0.1");
        let resolve_unfiled = format!("unfiled.com:{https}:127.0.0.1");
        let output = Command::new("curl")
            .args(["--silent", "--show-error", "--include", "--max-time", "10"])
            .args(["--resolve", &resolve, "--resolve", &resolve_unfiled])
            .arg("--cacert")
            .arg(self.ca_file())
            .args(["--write-out", "\nhttp_version=%{http_version}"])
            .args(args)
            .arg(url)
            .output()
            .await
            .expect("run curl");
        Curl::from(output)
    }

    /// `openssl s_client` to the https listener, sending one HTTP/1.1 request so the
    /// session (and its TLS 1.3 tickets) is complete before the connection closes.
    async fn s_client(&self, sni: Option<&str>, args: &[&str]) -> String {
        let mut command = Command::new("openssl");
        command
            .args(["s_client", "-connect"])
            .arg(self.gate.https().to_string())
            .arg("-CAfile")
            .arg(self.ca_file());
        match sni {
            Some(name) => command.args(["-servername", name]),
            None => command.arg("-noservername"),
        };
        command.args(["-alpn", "http/1.1", "-ign_eof"]).args(args);
        let host = sni.unwrap_or("example.com");
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        common::tools::exchange(command, &request).await
    }

    /// Handshake `sni` twice through `openssl s_client` (`protocol`: -tls1_2 or
    /// -tls1_3), the second time offering the first one's session.
    async fn first_and_resumed(&self, sni: &str, protocol: &str) -> (String, String) {
        let session = self.session_file(&format!("{sni}{protocol}"));
        let first = self
            .s_client(Some(sni), &[protocol, "-sess_out", path(&session)])
            .await;
        let again = self
            .s_client(Some(sni), &[protocol, "-sess_in", path(&session)])
            .await;
        (first, again)
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[derive(Debug)]
struct Curl {
    exit: Option<i32>,
    out: String,
    err: String,
}

impl From<Output> for Curl {
    fn from(output: Output) -> Curl {
        Curl {
            exit: output.status.code(),
            out: String::from_utf8_lossy(&output.stdout).into_owned(),
            err: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Curl {
    fn status(&self) -> Option<u16> {
        let line = self.out.lines().next()?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.out
            .lines()
            .take_while(|line| !line.trim().is_empty())
            .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
            .map(|line| line[prefix.len()..].trim().to_string())
    }

    fn http_version(&self) -> Option<&str> {
        self.out.lines().last()?.strip_prefix("http_version=")
    }
}

/// How `openssl s_client` reports what happened to the handshake.
fn refused_with_access_denied(output: &str) -> bool {
    // A refused resumption prints the offered session's cipher, so the alert and the
    // absence of any answer are what tell.
    output.contains("alert access denied") && !resumed(output) && !output.contains("HTTP/1.1 ")
}

fn resumed(output: &str) -> bool {
    output.contains("Reused, TLSv1.")
}

#[tokio::test]
async fn curl_over_http1_gets_the_origin_for_a_filed_host_and_the_block_page_otherwise() {
    if !require_tool("curl") {
        return;
    }
    let f = Fixture::start().await;
    let http = f.gate.http;
    let filed = f
        .curl(
            &format!("http://{http}/shop?q=1"),
            &["-H", "Host: example.com"],
        )
        .await;
    assert_eq!(filed.status(), Some(200), "{filed:?}");
    assert_eq!(filed.http_version(), Some("1.1"));
    assert!(filed.out.contains("\"path\":\"/shop?q=1\""), "{filed:?}");

    let blocked = f
        .curl(&format!("http://{http}/"), &["-H", "Host: unfiled.com"])
        .await;
    assert_eq!(blocked.status(), Some(451), "{blocked:?}");
    assert_eq!(
        blocked.header("x-icpgate-reason").as_deref(),
        Some("not_filed")
    );
    assert!(
        blocked
            .header("link")
            .is_some_and(|link| link.contains("rel=\"blocked-by\"")),
        "{blocked:?}"
    );
    assert!(
        blocked.out.contains("ICP"),
        "a page the site owner can act on"
    );
}

#[tokio::test]
async fn curl_with_http2_prior_knowledge_is_served_and_blocked_alike() {
    if !require_tool("curl") {
        return;
    }
    let f = Fixture::start().await;
    let http = f.gate.http;
    let filed = f
        .curl(
            &format!("http://{http}/"),
            &["--http2-prior-knowledge", "-H", "Host: example.com"],
        )
        .await;
    assert_eq!(filed.status(), Some(200), "{filed:?}");
    assert_eq!(filed.http_version(), Some("2"));
    let blocked = f
        .curl(
            &format!("http://{http}/"),
            &[
                "--http2-prior-knowledge",
                "-H",
                "Host: pending.cn",
                "-H",
                "Accept: application/json",
            ],
        )
        .await;
    assert_eq!(blocked.status(), Some(451), "{blocked:?}");
    assert_eq!(
        blocked.header("x-icpgate-reason").as_deref(),
        Some("pending_review")
    );
    assert!(
        blocked.out.contains("\"reason\":\"pending_review\""),
        "{blocked:?}"
    );
}

#[tokio::test]
async fn curl_over_https_negotiates_h2_for_a_filed_sni_and_fails_the_handshake_otherwise() {
    if !require_tool("curl") {
        return;
    }
    let f = Fixture::start().await;
    let port = f.gate.https().port();
    let filed = f.curl(&format!("https://example.com:{port}/"), &[]).await;
    assert_eq!(filed.status(), Some(200), "{filed:?}");
    assert_eq!(filed.http_version(), Some("2"), "ALPN chose h2");
    assert!(
        filed.out.contains("\"x-forwarded-proto\":\"https\""),
        "{filed:?}"
    );
    let refused = f.curl(&format!("https://unfiled.com:{port}/"), &[]).await;
    // 35: CURLE_SSL_CONNECT_ERROR, the handshake itself failed.
    assert_eq!(refused.exit, Some(35), "{refused:?}");
    assert!(refused.err.contains("access denied"), "{refused:?}");
}

#[tokio::test]
async fn openssl_is_refused_with_access_denied_without_a_filing_or_without_sni() {
    if !require_tool("openssl") {
        return;
    }
    let f = Fixture::start().await;
    let served = f.s_client(Some("example.com"), &[]).await;
    assert!(served.contains("Verify return code: 0 (ok)"), "{served}");
    assert!(served.contains("HTTP/1.1 200"), "{served}");
    let unfiled = f.s_client(Some("unfiled.com"), &[]).await;
    assert!(refused_with_access_denied(&unfiled), "{unfiled}");
    let no_sni = f.s_client(None, &[]).await;
    assert!(refused_with_access_denied(&no_sni), "{no_sni}");
}

#[tokio::test]
async fn sessions_resume_over_tls13_and_tls12() {
    if !require_tool("openssl") {
        return;
    }
    let f = Fixture::start().await;
    for protocol in ["-tls1_3", "-tls1_2"] {
        let (first, again) = f.first_and_resumed("example.com", protocol).await;
        assert!(first.contains("HTTP/1.1 200"), "{protocol}: {first}");
        assert!(!resumed(&first), "{protocol}: {first}");
        assert!(resumed(&again), "{protocol}: not resumed: {again}");
        assert!(again.contains("HTTP/1.1 200"), "{protocol}: {again}");
    }
}

#[tokio::test]
async fn sessions_keep_resuming_across_a_certificate_reload() {
    if !require_tool("openssl") {
        return;
    }
    let f = Fixture::start().await;
    let session = f.session_file("reload");
    let first = f
        .s_client(
            Some("example.com"),
            &["-tls1_3", "-sess_out", path(&session)],
        )
        .await;
    assert!(first.contains("HTTP/1.1 200"), "{first}");
    let certs = f.dir.path().join("certs");
    f.ca.write_pair(&certs, "example", &["example.com", "*.example.com"]);
    // What SIGHUP runs: the config and the certificates are reloaded.
    f.gate
        .running
        .as_ref()
        .expect("running")
        .reload()
        .expect("the config reloads");
    let again = f
        .s_client(
            Some("example.com"),
            &["-tls1_3", "-sess_in", path(&session)],
        )
        .await;
    assert!(resumed(&again), "not resumed after a reload: {again}");
}

#[tokio::test]
async fn a_ticket_does_not_outlive_the_filing_it_was_issued_under() {
    if !require_tool("openssl") {
        return;
    }
    let f = Fixture::start().await;
    let id = f
        .gate
        .approve_new_filing("late.cn", "浙ICP备20239999号-1")
        .await;
    let session = f.session_file("late");
    let first = f
        .s_client(Some("late.cn"), &["-tls1_3", "-sess_out", path(&session)])
        .await;
    assert!(first.contains("HTTP/1.1 200"), "{first}");
    let (status, body) = f
        .gate
        .api(
            "POST",
            &format!("/v1/filings/{id}/cancel"),
            Some(serde_json::json!({"reason": "filing withdrawn"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let after = f
        .s_client(Some("late.cn"), &["-tls1_3", "-sess_in", path(&session)])
        .await;
    assert!(
        !resumed(&after),
        "a cancelled filing's session resumed: {after}"
    );
    assert!(refused_with_access_denied(&after), "{after}");
    assert!(!after.contains("HTTP/1.1 200"), "{after}");
}
