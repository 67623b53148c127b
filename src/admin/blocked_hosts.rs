//! `GET /v1/blocked-hosts?limit=N`: the gate's top-K of blocked registrable domains.

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::error::AdminError;
use crate::admin::extract::{de_positive_count, Json, Query};
use crate::admin::Admin;

/// Default `limit` of `GET /v1/blocked-hosts`; the largest is the top-K's capacity.
const DEFAULT_LIMIT: usize = 20;

/// `GET /v1/blocked-hosts?limit=N`.
#[derive(Debug, Deserialize)]
pub struct TopQuery {
    #[serde(default, deserialize_with = "de_positive_count")]
    limit: Option<usize>,
}

/// `GET /v1/blocked-hosts`: the most blocked registrable domains.
pub async fn top(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<TopQuery>,
) -> Result<Json<Value>, AdminError> {
    let hosts = &admin.gate.state.blocked_hosts;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    Ok(Json(json!({
        "capacity": hosts.capacity(),
        "total": hosts.total(),
        "blocked_hosts": hosts.top(limit.min(hosts.capacity())),
    })))
}
