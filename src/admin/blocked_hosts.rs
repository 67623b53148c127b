//! `GET /v1/blocked-hosts?limit=N`: the gate's top-K of blocked registrable domains.

use crate::admin::{json_response, query_param, AdminError};
use crate::edge::proxy_body::ProxyBody;
use crate::observe::blocked_hosts::BlockedHosts;

/// Default and largest `limit` of `GET /v1/blocked-hosts`.
const DEFAULT_LIMIT: usize = 20;

/// `GET /v1/blocked-hosts?limit=N`: the most blocked registrable domains.
pub fn serve_top(
    hosts: &BlockedHosts,
    query: Option<&str>,
) -> Result<http::Response<ProxyBody>, AdminError> {
    let limit = match query_param(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                AdminError::BadRequest(format!("limit must be a positive number, not {text:?}"))
            })?,
    };
    Ok(json_response(
        http::StatusCode::OK,
        &serde_json::json!({
            "capacity": hosts.capacity(),
            "total": hosts.total(),
            "blocked_hosts": hosts.top(limit.min(hosts.capacity())),
        }),
    ))
}
