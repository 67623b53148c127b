//! The contract these tests pin: `icpgate check` (the real binary, a temp config
//! and a temp SQLite registry seeded from `registry.seed` on first open) normalises
//! every input like the gate, computes its registrable domain with the ICANN
//! section of the Public Suffix List (multi-level suffixes, wildcard and exception
//! rules, IDN TLDs, non-transitional ß), applies the gate rule, prints JSON / CSV /
//! table, and exits 0 when all inputs are compliant, 1 when any is not, 2 on a
//! usage or registry error.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::filing;
use serde_json::Value;

/// A temp directory holding a config, a seed and the registry it creates.
struct Fixture {
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn seed() -> Vec<String> {
    let mut lines = common::standard_seed();
    lines.push(filing(
        &["faß.de"],
        "approved",
        "storefront",
        Some("沪ICP备10000001号-1"),
    ));
    lines.push(filing(
        &["商店.公司"],
        "approved",
        "storefront",
        Some("苏ICP备10000002号-1"),
    ));
    lines.push(filing(
        &["city.kawasaki.jp"],
        "approved",
        "corporate_site",
        Some("闽ICP备10000003号-3"),
    ));
    lines
}

impl Fixture {
    fn new(extra: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let seed_path = dir.path().join("seed.jsonl");
        std::fs::write(&seed_path, seed().join("\n")).expect("write seed");
        let config = dir.path().join("icpgate.toml");
        let text = format!(
            "[registry]\nbackend = \"sqlite\"\npath = \"{}\"\nseed = \"{}\"\n\n{extra}\n",
            dir.path().join("registry.db").display(),
            seed_path.display()
        );
        std::fs::write(&config, text).expect("write config");
        Fixture { dir, config }
    }

    fn check(&self, args: &[&str]) -> Output {
        run(&self.config, args)
    }

    fn json(&self, inputs: &[&str]) -> (Vec<Value>, i32) {
        let mut args = vec!["--format", "json"];
        args.extend(inputs);
        let out = self.check(&args);
        let reports: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (reports, out.status.code().unwrap_or(-1))
    }
}

fn run(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_icpgate"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run icpgate check")
}

#[test]
fn psl_and_idn_table() {
    let fixture = Fixture::new("");
    // (input, host, registrable_domain, reason)
    let cases: &[(&str, Option<&str>, Option<&str>, &str)] = &[
        // multi-level public suffix com.cn, filed
        (
            "shop.example.com.cn",
            Some("shop.example.com.cn"),
            Some("example.com.cn"),
            "filed",
        ),
        // gov.cn is a public suffix: one label below it is registrable
        (
            "www.agency.gov.cn",
            Some("www.agency.gov.cn"),
            Some("agency.gov.cn"),
            "not_filed",
        ),
        // a bare multi-level public suffix: nothing registrable
        ("com.cn", Some("com.cn"), None, "not_filed"),
        ("gov.cn", Some("gov.cn"), None, "not_filed"),
        // wildcard *.ck: foo.ck is itself a suffix
        ("foo.ck", Some("foo.ck"), None, "not_filed"),
        (
            "shop.foo.ck",
            Some("shop.foo.ck"),
            Some("shop.foo.ck"),
            "not_filed",
        ),
        // exception !www.ck: www.ck is registrable
        ("a.www.ck", Some("a.www.ck"), Some("www.ck"), "not_filed"),
        // wildcard *.kawasaki.jp with exception !city.kawasaki.jp (filed)
        (
            "x.city.kawasaki.jp",
            Some("x.city.kawasaki.jp"),
            Some("city.kawasaki.jp"),
            "filed",
        ),
        (
            "foo.kawasaki.jp",
            Some("foo.kawasaki.jp"),
            None,
            "not_filed",
        ),
        (
            "a.foo.kawasaki.jp",
            Some("a.foo.kawasaki.jp"),
            Some("a.foo.kawasaki.jp"),
            "not_filed",
        ),
        // IDN TLD .中国, mixed case, filed
        (
            "WWW.例子.中国",
            Some("www.xn--fsqu00a.xn--fiqs8s"),
            Some("xn--fsqu00a.xn--fiqs8s"),
            "filed",
        ),
        // IDN TLD .公司, filed
        (
            "商店.公司",
            Some("xn--czrs0t.xn--55qx5d"),
            Some("xn--czrs0t.xn--55qx5d"),
            "filed",
        ),
        // a bare IDN public suffix
        ("中国", Some("xn--fiqs8s"), None, "not_filed"),
        // non-transitional ß: faß.de is not fass.de
        (
            "faß.de",
            Some("xn--fa-hia.de"),
            Some("xn--fa-hia.de"),
            "filed",
        ),
        ("fass.de", Some("fass.de"), Some("fass.de"), "not_filed"),
        // port and trailing dot stripped like the gate does
        (
            "Example.COM.:8080",
            Some("example.com"),
            Some("example.com"),
            "filed",
        ),
        // lifecycle states block
        (
            "pending.cn",
            Some("pending.cn"),
            Some("pending.cn"),
            "pending_review",
        ),
        (
            "cancelled.com",
            Some("cancelled.com"),
            Some("cancelled.com"),
            "cancelled",
        ),
        // IP literal: answered without a lookup
        ("127.0.0.1", Some("127.0.0.1"), None, "ip_literal"),
        // garbage: no host at all
        ("bad..name", None, None, "invalid_host"),
        ("a b.cn", None, None, "invalid_host"),
    ];
    let inputs: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let (reports, code) = fixture.json(&inputs);
    assert_eq!(code, 1, "some inputs are not compliant");
    assert_eq!(reports.len(), cases.len());
    for ((input, host, domain, reason), report) in cases.iter().zip(&reports) {
        assert_eq!(report["input"], *input);
        assert_eq!(report["host"].as_str(), *host, "{input}");
        assert_eq!(report["registrable_domain"].as_str(), *domain, "{input}");
        assert_eq!(report["reason"], *reason, "{input}");
        let allow = *reason == "filed";
        assert_eq!(report["decision"], if allow { "allow" } else { "block" });
        assert_eq!(report["compliant"], allow, "{input}");
        assert!(report.get("dns").is_none(), "no dns object without --dns");
    }
}

#[test]
fn filing_details_are_reported() {
    let fixture = Fixture::new("");
    let (reports, code) = fixture.json(&["www.example.com", "left.cn", "nobody.cn"]);
    assert_eq!(code, 1);
    assert_eq!(reports[0]["filing_status"], "approved");
    assert_eq!(reports[0]["icp_number"], "浙ICP备12345678号-1");
    assert_eq!(reports[1]["filing_status"], "disconnected");
    assert_eq!(reports[1]["reason"], "disconnected");
    assert_eq!(reports[1]["icp_number"], "鄂ICP备30303030号-2");
    assert_eq!(reports[2]["filing_status"], Value::Null);
    assert_eq!(reports[2]["icp_number"], Value::Null);
}

#[test]
fn exit_codes() {
    let fixture = Fixture::new("");
    let code = |out: Output| out.status.code().unwrap_or(-1);
    // every input compliant
    assert_eq!(
        code(fixture.check(&["shop.example.com", "www.例子.中国"])),
        0
    );
    // one blocked input
    assert_eq!(code(fixture.check(&["shop.example.com", "pending.cn"])), 1);
    // usage: no domains at all
    assert_eq!(code(fixture.check(&[])), 2);
    // usage: unknown format
    assert_eq!(code(fixture.check(&["--format", "xml", "example.com"])), 2);
    // unreadable --file
    assert_eq!(code(fixture.check(&["--file", "/nonexistent/list.txt"])), 2);
    // registry error: the registry path is a directory
    let broken = fixture.dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        format!(
            "[registry]\nbackend = \"sqlite\"\npath = \"{}\"\n",
            fixture.dir.path().display()
        ),
    )
    .expect("write config");
    let out = run(&broken, &["example.com"]);
    assert_eq!(code(out), 2);
}

#[test]
fn file_input_with_comments_and_unicode() {
    let fixture = Fixture::new("");
    let list = fixture.dir.path().join("domains.txt");
    std::fs::write(
        &list,
        "# incoming this week\nshop.example.com\n\n  www.例子.中国   # the IDN one\n#pending.cn\n",
    )
    .expect("write list");
    let list = list.display().to_string();
    let (reports, code) = fixture.json(&["--file", &list, "example.com.cn"]);
    let inputs: Vec<&str> = reports.iter().filter_map(|r| r["input"].as_str()).collect();
    assert_eq!(
        inputs,
        ["example.com.cn", "shop.example.com", "www.例子.中国"]
    );
    assert_eq!(code, 0);
}

#[test]
fn csv_shape() {
    let fixture = Fixture::new("");
    let out = fixture.check(&["--format", "csv", "shop.example.com", "a,b.cn"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "input,host,registrable_domain,filing_status,icp_number,decision,reason,compliant"
    );
    assert_eq!(
        lines[1],
        "shop.example.com,shop.example.com,example.com,approved,浙ICP备12345678号-1,allow,filed,true"
    );
    // the comma in the input is quoted; the rest of the row stays aligned
    assert_eq!(lines[2], "\"a,b.cn\",,,,,block,invalid_host,false");
    assert_eq!(lines[3], "");
    assert_eq!(lines.len(), 4);
}

#[test]
fn table_lists_every_input() {
    let fixture = Fixture::new("");
    let out = fixture.check(&["shop.example.com", "pending.cn"]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("INPUT"), "{text}");
    assert!(lines[1].contains("浙ICP备12345678号-1") && lines[1].contains("allow"));
    assert!(lines[2].contains("pending_review") && lines[2].contains("block"));
}

#[test]
fn thousands_of_inputs_finish_quickly() {
    let fixture = Fixture::new("");
    let list = fixture.dir.path().join("many.txt");
    let names: Vec<String> = (0..3000).map(|i| format!("shop{i}.example.com")).collect();
    std::fs::write(&list, names.join("\n")).expect("write list");
    let started = std::time::Instant::now();
    let (reports, code) = fixture.json(&["--file", &list.display().to_string()]);
    assert_eq!(code, 0);
    assert_eq!(reports.len(), 3000);
    // in input order despite the concurrency
    assert_eq!(reports[2999]["input"], "shop2999.example.com");
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
}

/// Long lists draw a progress bar, on a terminal only: `script` gives the command a
/// pseudo-terminal, a plain run gives it pipes (the bar must never reach a file).
#[test]
fn a_terminal_sees_a_progress_bar_and_a_pipe_does_not() {
    let fixture = Fixture::new("");
    let list = fixture.dir.path().join("long.txt");
    let names: Vec<String> = (0..200).map(|i| format!("shop{i}.example.com")).collect();
    std::fs::write(&list, names.join("\n")).expect("write list");
    let list = list.display().to_string();

    let piped = fixture.check(&["--file", &list, "--format", "csv"]);
    assert_eq!(piped.status.code(), Some(0));
    let piped_err = String::from_utf8_lossy(&piped.stderr);
    assert!(!piped_err.contains("checking ["), "{piped_err}");

    let command = format!(
        "'{}' check --config '{}' --file '{}' --format csv",
        env!("CARGO_BIN_EXE_icpgate"),
        fixture.config.display(),
        list
    );
    if !common::require_tool("script") {
        return;
    }
    let on_terminal = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .output()
        .expect("run script");
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert_eq!(on_terminal.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("checking ["),
        "no bar on a terminal: {shown}"
    );
    assert!(shown.contains("200/200"), "the bar ends full: {shown}");
    assert!(
        shown.contains("shop199.example.com"),
        "the report is still printed"
    );
}
