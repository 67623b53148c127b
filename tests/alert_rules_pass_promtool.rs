//! The contract this test pins: every case of `deploy/prometheus/alerts_test.yml`
//! passes `promtool test rules` against `deploy/prometheus/alerts.yml`, so an
//! alert whose expression, labels or annotations drift from its cases fails here.

mod common;

use common::*;

#[test]
fn alert_rules_pass_their_promtool_cases() {
    if !require_tool("promtool") {
        return;
    }
    let cases =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts_test.yml");
    let out = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&cases)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
