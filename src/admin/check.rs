//! `GET /v1/check?domain=D[&dns=true]`: `icpgate check` for one domain over HTTP,
//! with the running config's policy and `[dns]`.

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;

use crate::admin::error::AdminError;
use crate::admin::extract::{de_flag, Json, Query};
use crate::admin::Admin;
use crate::compliance::{CheckError, Checker, Report};

/// `GET /v1/check?domain=D[&dns=true]`.
#[derive(Debug, Deserialize)]
pub struct CheckQuery {
    domain: Option<String>,
    #[serde(default, deserialize_with = "de_flag")]
    dns: bool,
}

/// `GET /v1/check`: one [`Report`].
pub async fn check(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<CheckQuery>,
) -> Result<Json<Report>, AdminError> {
    let domain = query
        .domain
        .ok_or_else(|| AdminError::BadRequest("query parameter domain is required".into()))?;
    let runtime = admin.gate.current();
    let checker = Checker::new(Arc::clone(&admin.registry), &runtime.config, query.dns)
        .map_err(|e| AdminError::Unavailable(e.to_string()))?;
    let report = checker.check(&domain).await.map_err(|e| match e {
        CheckError::Registry(error) => AdminError::from(error),
        other => AdminError::Unavailable(other.to_string()),
    })?;
    Ok(Json(report))
}
