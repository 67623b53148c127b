//! The admin API on axum, on its own listener (SPEC §3): the route table, the state
//! its handlers share, and the router built from both. JSON in and out; errors are
//! `{"error": "...", "detail": ...}` (`error`).
//!
//! | method | path | token | what |
//! |---|---|---|---|
//! | GET  | /healthz | – | the process is up |
//! | GET  | /readyz | – | the registry answers |
//! | GET  | /metrics | – | Prometheus text |
//! | GET  | /v1/openapi.json | read | the OpenAPI 3 document of this API (`docs/openapi.json`) |
//! | GET  | /v1/decision?host=H | read | what the gate would do for H, with the filing it found |
//! | GET  | /v1/check?domain=D&dns=true | read | compliance check of D (`check`) |
//! | GET  | /v1/blocked-hosts?limit=N | read | most blocked registrable domains (`blocked_hosts`) |
//! | POST | /v1/filings | needed | submit (201, `initial_review`, with its `filing_type`) |
//! | GET  | /v1/filings?domain=&status=&limit= | read | list (personal data masked; none without a token) |
//! | GET  | /v1/filings/{id}?reveal=true | read | one filing (masked; none without a token; revealed to a `reveal` grant, audited) |
//! | POST | /v1/filings/{id}/{initial-review, authority-review, resubmit, abandon, cancel, disconnect, change} | needed | one workflow step |
//!
//! Who may call what is a column of the table ([`Access`]), enforced by the layers of
//! `auth`: "read" needs a token unless `admin.public_reads` is on. Every answer
//! carries `X-Content-Type-Options: nosniff`; the admin listener answers only the
//! Host names of `hosts` (`AdminService`). [`routes`] lists the table and `docs/openapi.json` documents exactly its
//! rows (a test holds them equal). To add an endpoint, add a handler and a row in
//! `table`, and the operation to the document.
//!
//! Modules: `auth` (token layers, the actor), `throttle` (failed authentications
//! per client), `hosts` (the Host names answered), `error` (the one error type),
//! `extract` (extractors and the JSON reply), `filings` (the lifecycle), `reads`
//! (health, metrics, decision), `check`, `blocked_hosts`, `tokens` (who holds a
//! token), `privacy` (who sees personal data; the audited reveal), `service` (the
//! router as the admin listener's service), `console` (the review console under
//! `/console/`: HTML for staff, outside this table and the OpenAPI document).

mod auth;
mod blocked_hosts;
mod check;
pub mod console;
mod error;
mod extract;
mod filings;
mod hosts;
pub mod privacy;
mod reads;
mod service;
mod throttle;
pub mod tokens;

use std::sync::Arc;

use axum::handler::Handler;
use axum::middleware::{from_fn_with_state, map_response};
use axum::response::Response;
use axum::routing::{self, MethodRouter};
use axum::Router;

use crate::edge::proxy::Gate;
use crate::registry::Registry;

pub use error::AdminError;
pub use hosts::AdminHosts;
pub use service::AdminService;

/// The OpenAPI 3 document of this API, kept in the repository.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// The admin service's shared state.
pub struct Admin {
    pub registry: Arc<dyn Registry>,
    pub gate: Arc<Gate>,
    /// The bearer tokens in force (none: writes are refused with 403); reloadable.
    pub token: Arc<tokens::AdminToken>,
    /// Wakes the webhook notifier after a write (None: no `[notify] url`).
    pub notifier: Option<Arc<tokio::sync::Notify>>,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Open,
    /// Like `TokenNeeded`, unless `admin.public_reads`: then anyone, and a valid
    /// token widens the answer (personal data).
    Read,
    /// Only a caller with a valid token: 403 when none is configured, else 401.
    TokenNeeded,
}

/// One row of the route table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// axum's pattern: `{id}` matches one segment.
    pub path: &'static str,
    pub access: Access,
}

/// A row and its handler.
struct Entry {
    route: Route,
    handler: MethodRouter<Arc<Admin>>,
}

type State = Arc<Admin>;

fn get<H: Handler<T, State>, T: 'static>(path: &'static str, access: Access, h: H) -> Entry {
    let route = Route {
        method: "GET",
        path,
        access,
    };
    let handler = routing::get(h);
    Entry { route, handler }
}

fn post<H: Handler<T, State>, T: 'static>(path: &'static str, access: Access, h: H) -> Entry {
    let route = Route {
        method: "POST",
        path,
        access,
    };
    let handler = routing::post(h);
    Entry { route, handler }
}

/// Every route the admin listener serves.
fn table() -> Vec<Entry> {
    use Access::{Open, Read, TokenNeeded};
    vec![
        get("/healthz", Open, reads::healthz),
        get("/readyz", Open, reads::readyz),
        get("/metrics", Open, reads::metrics),
        get("/v1/openapi.json", Read, reads::openapi),
        get("/v1/decision", Read, reads::decision),
        get("/v1/check", Read, check::check),
        get("/v1/blocked-hosts", Read, blocked_hosts::top),
        get("/v1/filings", Read, filings::list),
        post("/v1/filings", TokenNeeded, filings::submit),
        get("/v1/filings/{id}", Read, filings::get),
        post(
            "/v1/filings/{id}/initial-review",
            TokenNeeded,
            filings::step,
        ),
        post(
            "/v1/filings/{id}/authority-review",
            TokenNeeded,
            filings::step,
        ),
        post("/v1/filings/{id}/resubmit", TokenNeeded, filings::step),
        post("/v1/filings/{id}/abandon", TokenNeeded, filings::step),
        post("/v1/filings/{id}/cancel", TokenNeeded, filings::step),
        post("/v1/filings/{id}/disconnect", TokenNeeded, filings::step),
        post("/v1/filings/{id}/change", TokenNeeded, filings::step),
    ]
}

/// The route table, without its handlers.
pub fn routes() -> Vec<Route> {
    table().into_iter().map(|entry| entry.route).collect()
}

/// The admin API: every row of the table behind its access layer; 404 for a path
/// no row has, 405 for a method a path does not take; `nosniff` on every answer.
pub fn router(admin: Arc<Admin>) -> Router {
    let guard = Arc::new(auth::Guard {
        token: Arc::clone(&admin.token),
        gate: Arc::clone(&admin.gate),
        failures: throttle::AuthFailures::default(),
    });
    let mut router = Router::new();
    for Entry { route, handler } in table() {
        let guard = Arc::clone(&guard);
        let handler = match route.access {
            Access::Open => handler,
            Access::Read => handler.route_layer(from_fn_with_state(guard, auth::read)),
            Access::TokenNeeded => {
                handler.route_layer(from_fn_with_state(guard, auth::require_token))
            }
        };
        router = router.route(route.path, handler);
    }
    let console = console::router(Arc::clone(&admin), Arc::clone(&guard));
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(admin)
        .merge(console)
        .layer(map_response(nosniff))
}

/// `X-Content-Type-Options: nosniff`: no browser reads an answer as other than its
/// declared type (a JSON error quoting input never runs as HTML or script).
async fn nosniff(mut response: Response) -> Response {
    response.headers_mut().insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    response
}

async fn not_found() -> AdminError {
    AdminError::NotFound
}

async fn method_not_allowed() -> AdminError {
    AdminError::MethodNotAllowed
}

#[cfg(test)]
mod tests;
