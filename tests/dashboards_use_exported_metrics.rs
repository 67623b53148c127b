//! The contract these tests pin (issue 6): `deploy/grafana/icpgate.json` is a Grafana
//! dashboard model and `deploy/prometheus/alerts.yml` Prometheus alerting rules, and
//! every metric their PromQL names is one a live `/metrics` scrape of the binary
//! exports, sample name for sample name (a histogram is queried as `_bucket`,
//! `_sum` or `_count`; its bare name holds no series). Label values they select on
//! (`reason="registry_unavailable"`, `result=~"hit|coalesced"`) exist too, so a
//! renamed reason or metric breaks this test instead of silently emptying a panel.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

fn read(relative: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Sample names and `label="value"` pairs of a scrape.
struct Scrape {
    names: BTreeSet<String>,
    text: String,
}

async fn scrape() -> Scrape {
    let gate = TestGate::start(&standard_seed(), None, None, "").await;
    let text = gate.metrics().await;
    let names = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    Scrape { names, text }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Metric names (`icpgate_*`, `process_*`) in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find(|c: char| is_name_char(c)) {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !is_name_char(c)).unwrap_or(tail.len());
        let word = &tail[..end];
        if word.starts_with("icpgate_") || word.starts_with("process_") {
            names.insert(word.to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// `(label, operator, value)` of every quoted label matcher in an expression.
fn matchers(expr: &str) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for op in ["=~\"", "!~\"", "!=\"", "=\""] {
        let mut from = 0;
        while let Some(at) = expr[from..].find(op).map(|i| i + from) {
            from = at + op.len();
            let before = &expr[..at];
            if op == "=\"" && (before.ends_with(['=', '!'])) {
                continue; // part of a two-character operator
            }
            let label_start = before
                .rfind(|c: char| !is_name_char(c))
                .map_or(0, |i| i + 1);
            let value_end = expr[from..].find('"').map_or(expr.len(), |i| i + from);
            found.push((
                before[label_start..].to_string(),
                op.trim_end_matches('"').to_string(),
                expr[from..value_end].to_string(),
            ));
        }
    }
    found
}

/// Labels of `by (...)` / `without (...)` clauses.
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for keyword in ["by (", "by(", "without (", "without("] {
        for (at, _) in expr.match_indices(keyword) {
            let inner = &expr[at + keyword.len()..];
            let inner = &inner[..inner.find(')').unwrap_or(inner.len())];
            labels.extend(inner.split(',').map(|l| l.trim().to_string()));
        }
    }
    labels
}

/// Check one expression against the scrape; returns what it references that the
/// binary does not export.
fn problems(expr: &str, scrape: &Scrape) -> Vec<String> {
    let mut out = Vec::new();
    for name in metric_names(expr) {
        if !scrape.names.contains(&name) {
            out.push(format!("metric {name} is not exported"));
        }
    }
    // Target labels Prometheus adds, and Grafana variables, are not ours to check.
    let external = |label: &str, value: &str| {
        matches!(label, "job" | "instance" | "le") || value.contains('$')
    };
    for (label, _op, value) in matchers(expr) {
        if external(&label, &value) {
            continue;
        }
        for alternative in value.split('|') {
            if !scrape.text.contains(&format!("{label}=\"{alternative}\"")) {
                out.push(format!("no series has {label}=\"{alternative}\""));
            }
        }
    }
    for label in grouping_labels(expr) {
        if !external(&label, "") && !scrape.text.contains(&format!("{label}=\"")) {
            out.push(format!("no series has a label {label}"));
        }
    }
    out
}

/// Every PromQL string of a dashboard: panel targets (rows' nested panels included)
/// and templating queries.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn panels(list: &Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.extend(target["expr"].as_str().map(str::to_string));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.extend(variable["definition"].as_str().map(str::to_string));
    }
    out
}

/// The `expr:` of every rule in a rules file: the text after `expr:` and the lines
/// indented deeper than it (a `|` block).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(first) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let mut expr = first.trim().trim_start_matches('|').to_string();
        for next in &lines[i + 1..] {
            if !next.trim().is_empty() && indent(next) <= indent(line) {
                break;
            }
            expr.push('\n');
            expr.push_str(next.trim());
        }
        out.push(expr);
    }
    out
}

#[test]
fn the_promql_readers_find_names_matchers_and_groupings() {
    let expr = r#"sum by (pool, kind) (rate(icpgate_upstream_errors_total{pool="storefront", kind=~"connect|timeout", job=~"$job"}[5m])) / sum(rate(icpgate_upstream_duration_seconds_count[5m])) and time() - process_start_time_seconds"#;
    let names: Vec<_> = metric_names(expr).into_iter().collect();
    assert_eq!(
        names,
        [
            "icpgate_upstream_duration_seconds_count",
            "icpgate_upstream_errors_total",
            "process_start_time_seconds"
        ]
    );
    let mut found = matchers(expr);
    found.sort();
    let pair = |l: &str, o: &str, v: &str| (l.to_string(), o.to_string(), v.to_string());
    assert_eq!(
        found,
        [
            pair("job", "=~", "$job"),
            pair("kind", "=~", "connect|timeout"),
            pair("pool", "=", "storefront"),
        ]
    );
    let groups: Vec<_> = grouping_labels(expr).into_iter().collect();
    assert_eq!(groups, ["kind", "pool"]);
    let yaml = "rules:\n  - alert: A\n    expr: |\n      up\n      > 0\n    for: 1m\n  - alert: B\n    expr: x > 1\n";
    assert_eq!(rule_exprs(yaml), ["\nup\n> 0", "x > 1"]);
}

#[tokio::test]
async fn the_dashboard_is_a_grafana_model_on_exported_metrics_only() {
    let scrape = scrape().await;
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/icpgate.json"))
        .expect("the dashboard is valid JSON");
    for key in ["title", "uid", "schemaVersion", "panels", "templating"] {
        assert!(!dashboard[key].is_null(), "dashboard lacks {key}");
    }
    for panel in dashboard["panels"].as_array().expect("panels is a list") {
        assert!(
            panel["gridPos"].is_object(),
            "{} lacks gridPos",
            panel["title"]
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no targets", panel["title"]);
        for target in targets {
            assert!(target["refId"].is_string() && target["expr"].is_string());
        }
    }
    let exprs = dashboard_exprs(&dashboard);
    let all = exprs.join("\n");
    // What issue 6 asks the dashboard to show.
    for needle in [
        "by (decision, reason) (rate(icpgate_requests_total",
        "decision=\"block\"",
        "histogram_quantile(0.99, sum by (le) (rate(icpgate_request_duration_seconds_bucket",
        "icpgate_upstream_errors_total",
        "icpgate_cache_lookups_total{result=~\"hit",
        "max by (instance) (icpgate_registry_revision",
        "by (status) (icpgate_filings{",
        "icpgate_filings_overdue_initial_review",
        // issue 15
        "icpgate_upstream_servers_down{",
        // issue 14
        "icpgate_acme_certificate_expiry_seconds{",
        "icpgate_acme_orders_total{",
    ] {
        assert!(all.contains(needle), "no panel shows {needle}");
    }
    let bad: Vec<_> = exprs
        .iter()
        .flat_map(|e| {
            problems(e, &scrape)
                .into_iter()
                .map(move |p| format!("{p}: {e}"))
        })
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[tokio::test]
async fn the_alert_rules_cover_issue_6_on_exported_metrics_only() {
    let scrape = scrape().await;
    let yaml = read("deploy/prometheus/alerts.yml");
    assert!(yaml.starts_with("#") || yaml.starts_with("groups:"));
    assert!(yaml.contains("\ngroups:\n") && yaml.contains("    rules:\n"));
    let alerts: Vec<&str> = yaml.split("- alert: ").skip(1).collect();
    let names: Vec<&str> = alerts.iter().filter_map(|a| a.lines().next()).collect();
    assert_eq!(
        names,
        [
            "IcpgateRegistryUnavailable",
            "IcpgateBlockRateSpike",
            "IcpgateUpstreamErrorRate",
            "IcpgateRegistryRevisionsDiverging",
            "IcpgateInitialReviewOverdue",
            "IcpgateUpstreamServersDown",
            // issue 14
            "IcpgateAcmeCertificateNotRenewed"
        ]
    );
    for alert in &alerts {
        for key in ["expr:", "for:", "severity:", "summary:"] {
            assert!(alert.contains(key), "{key} missing in {alert}");
        }
    }
    let revisions = alerts[3];
    assert!(revisions.contains(
        "max by (job) (icpgate_registry_revision) - min by (job) (icpgate_registry_revision) > 0"
    ));
    assert!(revisions.contains("for: 2m"));
    assert!(
        alerts[4].contains("icpgate_filings_overdue_initial_review) > 0")
            && alerts[4].contains("for: 1h")
    );
    // Issue 15: a pool's servers down for 5 minutes.
    assert!(
        alerts[5].contains("max by (job, pool) (icpgate_upstream_servers_down) > 0")
            && alerts[5].contains("for: 5m")
    );
    assert!(
        alerts[0].contains("icpgate_registry_errors_total")
            && alerts[0].contains("reason=\"registry_unavailable\"")
    );

    let exprs = rule_exprs(&yaml);
    assert_eq!(exprs.len(), alerts.len());
    let bad: Vec<_> = exprs
        .iter()
        .flat_map(|e| {
            problems(e, &scrape)
                .into_iter()
                .map(move |p| format!("{p}: {e}"))
        })
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}
