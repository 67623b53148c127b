//! The contract these tests pin (SPEC §4): a fleet of gates shares one PostgreSQL
//! registry; the backend keeps the registry contract of the embedded one (one live
//! filing per domain, all-or-nothing imports, revisions that only grow), and a
//! change made through one node reaches every other node's gate — through NOTIFY
//! and the revision catch-up, not through cache expiry.
//!
//! Each test creates its own database under `ICPGATE_TEST_PG_URL` and drops it after;
//! without the variable they print that they were skipped.

mod common;

use std::time::Duration;

use common::*;
use icpgate::model::filing::{
    Action, Entity, IcpNumber, Kind, Product, Status, Submission, Website,
};
use icpgate::model::host::HostName;
use icpgate::registry::postgres::PostgresRegistry;
use icpgate::registry::{jsonl, FilingType, ListFilter, Registry, RegistryError};
use serde_json::json;

fn new_filing(domain: &str) -> Submission {
    Submission {
        kind: Kind::New,
        product: Product::Storefront,
        domains: vec![HostName::parse(domain)
            .ok()
            .and_then(|h| h.registrable_domain())
            .expect("registrable")
            .into_string()],
        icp_number: None,
        entity: Entity {
            name: "示例科技有限公司".into(),
            ..Entity::default()
        },
        website: Website {
            name: "示例".into(),
            ..Website::default()
        },
        filing_password: None,
    }
}

#[tokio::test]
async fn postgres_backend_keeps_the_registry_contract() {
    let Some(db) = PgDatabase::create("postgres_backend_keeps_the_registry_contract").await else {
        return;
    };
    let registry = PostgresRegistry::connect(&db.url).await.expect("connect");
    assert!(registry.is_empty().await.expect("is_empty"));
    let start = registry.revision().await.expect("revision");

    let filing = registry
        .submit(new_filing("shop.example.cn"), "tester")
        .await
        .expect("submit");
    assert_eq!(filing.filing_type, FilingType::FirstFiling);
    let filing = filing.filing;
    assert_eq!(filing.status, Status::InitialReview);
    assert_eq!(filing.domains, vec!["example.cn".to_string()]);
    let taken = registry
        .submit(new_filing("www.example.cn"), "tester")
        .await;
    assert!(
        matches!(taken, Err(RegistryError::DomainTaken { .. })),
        "{taken:?}"
    );

    registry
        .transition(
            filing.id,
            Action::InitialReview {
                approve: true,
                reason: None,
            },
            "reviewer",
        )
        .await
        .expect("initial review");
    let icp = IcpNumber::parse("浙ICP备20231234号-1").expect("icp");
    let approved = registry
        .transition(
            filing.id,
            Action::AuthorityReview {
                approve: true,
                icp_number: Some(icp),
                reason: None,
            },
            "authority",
        )
        .await
        .expect("approve");
    assert_eq!(approved.status, Status::Approved);
    assert_eq!(approved.history.len(), 3);
    let refused = registry
        .transition(
            filing.id,
            Action::Resubmit {
                entity: None,
                website: None,
                product: None,
                icp_number: None,
                filing_password: None,
            },
            "x",
        )
        .await;
    assert!(
        matches!(refused, Err(RegistryError::Transition(_))),
        "{refused:?}"
    );

    let domain = HostName::parse("example.cn")
        .ok()
        .and_then(|h| h.registrable_domain())
        .expect("domain");
    let lookup = registry.lookup(&domain).await.expect("lookup");
    assert_eq!(lookup.filing.map(|f| f.status), Some(Status::Approved));
    let changes = registry.changes_since(start).await.expect("changes");
    assert_eq!(
        changes.last().map(|c| c.domains.clone()),
        Some(vec!["example.cn".to_string()])
    );
    assert!(changes.windows(2).all(|w| w[0].revision < w[1].revision));

    // Imports keep ids, are all or nothing, and later submissions get fresh ids.
    let good = r#"{"id":40,"domains":["imported.cn"],"product":"storefront","status":"approved","icp_number":"京ICP备87654321号-2"}"#;
    let clash = r#"{"domains":["example.cn"],"product":"storefront","status":"initial_review"}"#;
    let result = registry
        .import(jsonl::parse(&format!("{good}\n{clash}")).expect("parse"))
        .await;
    assert!(
        matches!(result, Err(RegistryError::AtLine { line: 2, .. })),
        "{result:?}"
    );
    assert!(registry
        .list(&ListFilter {
            domain: HostName::parse("imported.cn")
                .ok()
                .and_then(|h| h.registrable_domain()),
            ..ListFilter::default()
        })
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        registry
            .import(jsonl::parse(good).expect("parse"))
            .await
            .expect("import"),
        1
    );
    let next = registry
        .submit(new_filing("fresh.cn"), "tester")
        .await
        .expect("submit after import");
    assert!(
        next.filing.id > 40,
        "sequence moved past imported ids: {}",
        next.filing.id
    );
    assert_eq!(
        next.filing_type,
        FilingType::NewWebsite,
        "the entity already holds an approved filing"
    );
    let counts = registry.counts_by_status().await.expect("counts");
    assert_eq!(counts.get(&Status::Approved), Some(&2));
    assert_eq!(registry.export().await.expect("export").len(), 3);
}

/// Wait up to 5 s for `check`; fail naming `what` otherwise.
async fn until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(
        eventually(Duration::from_secs(5), check).await,
        "{what} did not happen within 5 s"
    );
}

#[tokio::test]
async fn a_change_through_one_node_reaches_the_other_nodes_gate() {
    let Some(db) =
        PgDatabase::create("a_change_through_one_node_reaches_the_other_nodes_gate").await
    else {
        return;
    };
    let origin = start_origin("storefront").await;
    let section = format!("backend = \"postgres\"\nurl = \"{}\"", db.url);
    let node_a = TestGate::start_with_registry(&section, Some(origin)).await;
    let node_b = TestGate::start_with_registry(&section, Some(origin)).await;
    // Node B caches "not filed" (negative TTL 5 s) before the filing exists.
    assert_eq!(
        node_b.get("www.fleet.cn", "/").await.reason(),
        Some("not_filed")
    );

    let body = json!({"domains": ["fleet.cn"], "product": "storefront", "kind": "new",
                      "entity": {"name": "示例", "type": "enterprise"}, "website": {"name": "示例"}});
    let (status, filing) = node_a.api("POST", "/v1/filings", Some(body)).await;
    assert_eq!(status, 201, "{filing}");
    let id = filing["id"].as_i64().expect("id");
    until("node B sees pending_review", || async {
        node_b.get("www.fleet.cn", "/").await.reason() == Some("pending_review")
    })
    .await;

    node_a
        .api(
            "POST",
            &format!("/v1/filings/{id}/initial-review"),
            Some(json!({"approve": true})),
        )
        .await;
    let (status, _) = node_a
        .api(
            "POST",
            &format!("/v1/filings/{id}/authority-review"),
            Some(json!({"approve": true, "icp_number": "浙ICP备20239999号-1"})),
        )
        .await;
    assert_eq!(status, 200);
    until("node B serves the approved domain", || async {
        node_b.get("www.fleet.cn", "/").await.status == 200
    })
    .await;

    let (status, _) = node_a
        .api(
            "POST",
            &format!("/v1/filings/{id}/cancel"),
            Some(json!({"reason": "注销"})),
        )
        .await;
    assert_eq!(status, 200);
    until("node B blocks the cancelled domain", || async {
        node_b.get("www.fleet.cn", "/").await.reason() == Some("cancelled")
    })
    .await;
    // Four writes on a fresh database: submit, two reviews, cancel.
    let metrics = node_b.metrics().await;
    assert_eq!(
        sample_required(&metrics, "icpgate_registry_revision", &[]),
        4.0,
        "node B's revision follows the writes"
    );
}
