//! The contract these tests pin: `icpgate check --dns` asks the resolvers of
//! `dns.nameservers` (here a UDP responder on loopback that this test starts, with
//! hand-encoded DNS wire format), follows CNAME chains, collects A and AAAA, and
//! judges each domain: `compliant` (filed and pointed here, by address or by a
//! CNAME target), `violation` (pointed here, not filed), `not_pointed` (filed,
//! pointed elsewhere or nowhere), `not_connected` (neither), `dns_error` (no
//! answer: SERVFAIL). The same object comes from `GET /v1/check?domain=&dns=true`.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::dns::{dns_section, start_dns, Rec, Zone};
use serde_json::Value;

fn zone() -> Zone {
    let v4 = |s: &str| Rec::A(s.parse().expect("v4"));
    let v6 = |s: &str| Rec::Aaaa(s.parse().expect("v6"));
    vec![
        // filed, A record on our access IP
        ("shop.example.com", v4("203.0.113.10")),
        // filed, CNAME chain ending at our CNAME target
        ("www.example.com.cn", Rec::Cname("cust1.edge.test")),
        ("cust1.edge.test", Rec::Cname("gw.icpgate.test")),
        ("gw.icpgate.test", v4("198.51.100.7")),
        // not filed, pointed at us
        ("unfiled-shop.cn", v4("203.0.113.10")),
        // pending, pointed at us over IPv6 only
        ("pending.cn", v6("2001:db8::10")),
        // filed, pointed elsewhere (both families)
        ("v6.example.com", v4("192.0.2.1")),
        ("v6.example.com", v6("2001:db8::1")),
        // resolution fails
        ("broken.example.com", Rec::ServFail),
    ]
}

fn write_config(dir: &std::path::Path, server: SocketAddr) -> std::path::PathBuf {
    let seed = dir.join("seed.jsonl");
    std::fs::write(&seed, common::standard_seed().join("\n")).expect("write seed");
    let config = dir.join("icpgate.toml");
    let text = format!(
        "[registry]\nbackend = \"sqlite\"\npath = \"{}\"\nseed = \"{}\"\n\n{}",
        dir.join("registry.db").display(),
        seed.display(),
        dns_section(server)
    );
    std::fs::write(&config, text).expect("write config");
    config
}

async fn check(config: &std::path::Path, inputs: &[&str]) -> (Vec<Value>, i32) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_icpgate"));
    command
        .args(["check", "--dns", "--format", "json", "--config"])
        .arg(config)
        .args(inputs);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run icpgate");
    let reports = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    (reports, out.status.code().unwrap_or(-1))
}

/// (input, verdict, points_here, addresses, cname_chain, part of the error)
type DnsCase = (
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
    Option<&'static str>,
);

#[tokio::test(flavor = "multi_thread")]
async fn verdicts_from_a_loopback_resolver() {
    let server = start_dns(zone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), server);
    // (input, verdict, points_here, addresses, cname_chain, error contains)
    let cases: &[DnsCase] = &[
        // filed, A on our access IP
        (
            "shop.example.com",
            "compliant",
            true,
            &["203.0.113.10"],
            &[],
            None,
        ),
        // filed, two CNAMEs to our target
        (
            "www.example.com.cn",
            "compliant",
            true,
            &["198.51.100.7"],
            &["cust1.edge.test", "gw.icpgate.test"],
            None,
        ),
        // unfiled but pointed here
        (
            "unfiled-shop.cn",
            "violation",
            true,
            &["203.0.113.10"],
            &[],
            None,
        ),
        // pending review, pointed here over IPv6
        (
            "pending.cn",
            "violation",
            true,
            &["2001:db8::10"],
            &[],
            None,
        ),
        // filed, pointed elsewhere: both families listed
        (
            "v6.example.com",
            "not_pointed",
            false,
            &["192.0.2.1", "2001:db8::1"],
            &[],
            None,
        ),
        // filed, name does not exist
        (
            "gone.example.com",
            "not_pointed",
            false,
            &[],
            &[],
            Some("NXDOMAIN"),
        ),
        // neither filed nor pointed here
        (
            "nobody.cn",
            "not_connected",
            false,
            &[],
            &[],
            Some("NXDOMAIN"),
        ),
        // SERVFAIL: unknown
        ("broken.example.com", "dns_error", false, &[], &[], Some("")),
        // not a domain: not looked up
        ("10.0.0.1", "invalid", false, &[], &[], Some("not a domain")),
    ];
    let inputs: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let (reports, code) = check(&config, &inputs).await;
    assert_eq!(code, 1);
    for ((input, verdict, here, addrs, chain, error), report) in cases.iter().zip(&reports) {
        let dns = &report["dns"];
        assert_eq!(report["verdict"], *verdict, "{input}: {report}");
        assert_eq!(dns["points_here"], *here, "{input}");
        assert_eq!(dns["addresses"], serde_json::json!(addrs), "{input}");
        assert_eq!(dns["cname_chain"], serde_json::json!(chain), "{input}");
        match error {
            None => assert_eq!(dns["error"], Value::Null, "{input}"),
            Some(part) => assert!(
                dns["error"].as_str().is_some_and(|e| e.contains(part)),
                "{input}: {dns}"
            ),
        }
        assert_eq!(report["compliant"], *verdict == "compliant");
    }
    // only compliant inputs: exit 0
    let (_, code) = check(&config, &["shop.example.com", "www.example.com.cn"]).await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_check_endpoint() {
    let server = start_dns(zone()).await;
    let gate =
        common::TestGate::start(&common::standard_seed(), None, None, &dns_section(server)).await;
    let (status, body) = gate
        .api("GET", "/v1/check?domain=www.example.com.cn&dns=true", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["registrable_domain"], "example.com.cn");
    assert_eq!(body["icp_number"], "京ICP备87654321号-2");
    assert_eq!(body["decision"], "allow");
    assert_eq!(body["verdict"], "compliant");
    assert_eq!(
        body["dns"]["cname_chain"],
        serde_json::json!(["cust1.edge.test", "gw.icpgate.test"])
    );
    // without dns: no dns object, decision only
    let (status, body) = gate
        .api(
            "GET",
            "/v1/check?domain=%E4%BE%8B%E5%AD%90.%E4%B8%AD%E5%9B%BD",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["host"], "xn--fsqu00a.xn--fiqs8s");
    assert_eq!(body["reason"], "filed");
    assert!(body.get("dns").is_none());
    // unfiled and pointed here
    let (_, body) = gate
        .api("GET", "/v1/check?domain=unfiled-shop.cn&dns=true", None)
        .await;
    assert_eq!(body["verdict"], "violation");
    assert_eq!(body["reason"], "not_filed");
    // bad requests
    let (status, _) = gate.api("GET", "/v1/check", None).await;
    assert_eq!(status, 400);
    let (status, _) = gate
        .api("GET", "/v1/check?domain=example.com&dns=maybe", None)
        .await;
    assert_eq!(status, 400);
}
