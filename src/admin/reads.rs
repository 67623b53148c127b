//! The open reads about the process and the gate: `/healthz`, `/readyz`,
//! `/metrics`, `/v1/openapi.json` and `/v1/decision` (what the gate would do for a
//! host, with the filing it found). None needs a token; none shows personal data.

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use http::{header, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::error::AdminError;
use crate::admin::extract::{Json, Query};
use crate::admin::{Admin, OPENAPI};
use crate::edge::proxy::Runtime;
use crate::edge::rejection;
use crate::gate::decision::{disposition, Disposition};
use crate::gate::Verdict;
use crate::model::filing::Product;
use crate::model::host::Authority;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 when the registry answers, with its revision; 503 otherwise.
pub async fn readyz(State(admin): State<Arc<Admin>>) -> (StatusCode, Json<Value>) {
    match admin.registry.revision().await {
        Ok(revision) => (
            StatusCode::OK,
            Json(json!({"ready": true, "registry_revision": revision})),
        ),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "ready": false,
                "error": "registry_unavailable",
                "detail": error.to_string(),
            })),
        ),
    }
}

/// `GET /metrics`: Prometheus text, with the gauges read at scrape time refreshed.
pub async fn metrics(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    let state = &admin.gate.state;
    let metrics = &state.metrics;
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    metrics
        .cache_entries
        .set(i64::try_from(state.cache().entry_count()).unwrap_or(i64::MAX));
    metrics.filed_domains.set(gauge(state.filed.len()));
    let runtime = admin.gate.current();
    for name in [Product::Storefront, Product::CorporateSite] {
        let pool = runtime.upstreams.pool(name);
        metrics
            .upstream_servers_down
            .with_label_values(&[pool.name()])
            .set(gauge(pool.servers_down()));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}

/// `GET /v1/openapi.json`: the document of this API, as kept in the repository.
pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// `GET /v1/decision?host=H`.
#[derive(Debug, Deserialize)]
pub struct DecisionQuery {
    host: Option<String>,
}

/// `GET /v1/decision?host=H`: what the gate would do for H, with its reason, the
/// status a client would see and the filing found.
pub async fn decision(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<DecisionQuery>,
) -> Result<Json<Value>, AdminError> {
    let host = query
        .host
        .ok_or_else(|| AdminError::BadRequest("query parameter host is required".into()))?;
    let runtime = admin.gate.current();
    let (normalised, domain, verdict) = decide(&admin, &runtime, &host).await;
    let policy = &runtime.config.policy;
    let decision = disposition(verdict.reason, policy.mode, policy.on_registry_error);
    let block_status = rejection::block_status(policy);
    let status = match decision {
        Disposition::Block => rejection::status_for(verdict.reason, block_status).as_u16(),
        Disposition::Allow | Disposition::WouldBlock => 200,
    };
    Ok(Json(json!({
        "input": host,
        "host": normalised,
        "registrable_domain": domain,
        "decision": decision.as_str(),
        "reason": verdict.reason.as_str(),
        "status": status,
        "filing": verdict.filing.as_deref(),
    })))
}

/// The normalised host, its registrable domain and the gate's verdict for `host`.
async fn decide(
    admin: &Admin,
    runtime: &Runtime,
    host: &str,
) -> (Option<String>, Option<String>, Verdict) {
    let found = admin
        .gate
        .state
        .verdict_for_host(host, runtime.rule_policy())
        .await;
    let normalised = match &found.authority {
        Ok(Authority::Name(name)) => Some(name.as_str().to_string()),
        Ok(Authority::Ip(ip)) => Some(ip.to_string()),
        Err(_) => None,
    };
    (
        normalised,
        found.domain.map(|d| d.into_string()),
        found.verdict,
    )
}
