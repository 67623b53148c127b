//! Registry seed lines and admin submissions the tests share.

use serde_json::{json, Value};

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

/// The details most lifecycle tests submit (personal data included).
pub fn submission(domains: &[&str], kind: &str, icp: Option<&str>) -> Value {
    let mut body = json!({
        "domains": domains, "product": "storefront", "kind": kind,
        "entity": {"name": "杭州示例科技有限公司", "type": "enterprise",
                   "certificate_number": "91330100MA27XXXX1X", "province": "浙"},
        "website": {"name": "示例旺铺",
                    "owner": {"name": "张三", "phone": "13800000000", "email": "ops@example.cn"}},
    });
    if let Some(icp) = icp {
        body["icp_number"] = json!(icp);
    }
    if kind == "access_existing" {
        body["filing_password"] = json!("filing-pw-1234");
    }
    body
}
