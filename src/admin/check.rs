//! `GET /v1/check?domain=D[&dns=true]`: `icpgate check` for one domain over HTTP.

use std::sync::Arc;

use crate::admin::{json_response, query_param, Admin, AdminError};
use crate::compliance::{CheckError, Checker};
use crate::edge::proxy_body::ProxyBody;

/// `GET /v1/check?domain=D[&dns=true]`: one [`Report`], with the running config's
/// policy and `[dns]`.
pub async fn serve_check(
    admin: &Admin,
    query: Option<&str>,
) -> Result<http::Response<ProxyBody>, AdminError> {
    let domain = query_param(query, "domain")
        .ok_or_else(|| AdminError::BadRequest("query parameter domain is required".into()))?;
    let with_dns = match query_param(query, "dns").as_deref() {
        None | Some("false" | "0" | "") => false,
        Some("true" | "1") => true,
        Some(other) => {
            return Err(AdminError::BadRequest(format!(
                "dns must be true or false, not {other:?}"
            )))
        }
    };
    let runtime = admin.gate.current();
    let checker = Checker::new(Arc::clone(&admin.registry), &runtime.config, with_dns)
        .map_err(|e| AdminError::Unavailable(e.to_string()))?;
    let report = checker.check(&domain).await.map_err(|e| match e {
        CheckError::Registry(error) => AdminError::from(error),
        other => AdminError::Unavailable(other.to_string()),
    })?;
    Ok(json_response(http::StatusCode::OK, &report))
}
