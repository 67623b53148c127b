//! The contract these tests pin: `HostName::parse` + `registrable_domain` agree with
//! the Public Suffix List project's own test vectors (`test_psl.txt`), compared in
//! punycode, with one documented exception: icpgate uses only the list's ICANN
//! section, so the PRIVATE rule `uk.com` does not count — `example.uk.com` and its
//! subdomains have the registrable domain `uk.com`, and `uk.com` itself is
//! registrable (see `../shared/testdata/psl/README.md`). Every other line is
//! checked as written.
//!
//! Inputs that `HostName::parse` refuses (e.g. a leading dot) must have `null` as
//! their expected value.

mod common;

use icpgate::model::host::HostName;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/testdata/psl/test_psl.txt"
);

/// One `checkPublicSuffix(INPUT, EXPECTED)` line; `None` stands for `null`.
struct Case {
    line: usize,
    input: Option<String>,
    expected: Option<String>,
}

#[test]
fn registrable_domains_match_psl_test_vectors() {
    let Ok(text) = std::fs::read_to_string(VECTORS) else {
        common::skip_or_fail(
            "registrable_domains_match_psl_test_vectors",
            "../shared/testdata/psl/test_psl.txt not found",
        );
        return;
    };
    let cases = parse_vectors(&text);
    assert!(cases.len() > 50, "only {} cases parsed", cases.len());
    let failures: Vec<String> = cases.iter().filter_map(check).collect();
    for failure in &failures {
        eprintln!("{failure}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} PSL vectors failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Every uncommented `checkPublicSuffix(...)` call in the file.
fn parse_vectors(text: &str) -> Vec<Case> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let code = raw.split("//").next().unwrap_or("").trim();
            let args = code
                .strip_prefix("checkPublicSuffix(")?
                .strip_suffix(");")?;
            let (input, expected) = args.split_once(',')?;
            Some(Case {
                line: i + 1,
                input: parse_arg(input),
                expected: parse_arg(expected),
            })
        })
        .collect()
}

/// `null` → `None`; `'text'` or `"text"` → `Some(text)`.
fn parse_arg(arg: &str) -> Option<String> {
    let arg = arg.trim();
    if arg == "null" {
        return None;
    }
    let unquoted = arg
        .strip_prefix('\'')
        .and_then(|a| a.strip_suffix('\''))
        .or_else(|| arg.strip_prefix('"').and_then(|a| a.strip_suffix('"')));
    Some(unquoted.unwrap_or(arg).to_owned())
}

/// The value to check against: the ICANN-only exception from the README (the four
/// `uk.com` cases), else the file's own.
fn adjusted_expected(input: &str, expected: Option<String>) -> Option<String> {
    let lower = input.to_ascii_lowercase();
    if lower == "uk.com" || lower.ends_with(".uk.com") {
        return Some("uk.com".to_owned());
    }
    expected
}

/// `None` when the case holds; otherwise a line describing the failure.
fn check(case: &Case) -> Option<String> {
    let input = case.input.as_deref()?;
    let expected = adjusted_expected(input, case.expected.clone());
    let got = match HostName::parse(input) {
        Err(_) if expected.is_none() => return None,
        Err(err) => return Some(failure(case, &format!("parse error: {err}"))),
        Ok(host) => host.registrable_domain().map(|r| r.into_string()),
    };
    let want = match expected.as_deref().map(HostName::parse) {
        None => None,
        Some(Ok(name)) => Some(name.as_str().to_owned()),
        Some(Err(err)) => return Some(failure(case, &format!("bad expected: {err}"))),
    };
    (got != want).then(|| failure(case, &format!("want {want:?}, got {got:?}")))
}

fn failure(case: &Case, why: &str) -> String {
    format!(
        "line {}: checkPublicSuffix({:?}, {:?}): {why}",
        case.line, case.input, case.expected
    )
}
