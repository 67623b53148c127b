//! The admin API, on its own listener (SPEC §3). JSON in and out; errors are
//! `{"error": "...", "detail": ...}`.
//!
//! | method | path | auth | what |
//! |---|---|---|---|
//! | GET  | /healthz | – | the process is up |
//! | GET  | /readyz | – | the registry answers |
//! | GET  | /metrics | – | Prometheus text |
//! | GET  | /v1/openapi.json | – | the OpenAPI 3 document of this API (`docs/openapi.json`) |
//! | GET  | /v1/decision?host=H | – | what the gate would do for H, with the filing it found |
//! | GET  | /v1/check?domain=D&dns=true | – | compliance check of D (`compliance`) |
//! | GET  | /v1/blocked-hosts?limit=N | – | most blocked registrable domains (`blocked_hosts`) |
//! | POST | /v1/filings | token | submit (201, `initial_review`, with its `filing_type`) |
//! | GET  | /v1/filings?domain=&status= | – | list (personal data masked) |
//! | GET  | /v1/filings/{id} | – / token | one filing (personal data only with the token) |
//! | POST | /v1/filings/{id}/{initial-review, authority-review, resubmit, abandon, cancel, disconnect, change} | token | one workflow step |
//!
//! Writes need `Authorization: Bearer <token>`: the shared token (from
//! `admin.token_file`, else the environment variable named by `admin.token_env`) or a
//! named token of `admin.tokens_file` (`admin_tokens`), compared in constant time.
//! A named token's name is the actor in the history; with the shared token the actor
//! is `X-Icpgate-Actor`, else "admin". With no token configured every write answers
//! 403 saying how to set one.
//!
//! [`ROUTES`] is the route table: the router matches requests against it and
//! `docs/openapi.json` documents exactly its entries (a test holds them equal). To
//! add an endpoint, add an [`Endpoint`] variant, a row in `ROUTES`, an arm in
//! `Admin::dispatch` and the path in the document.
//!
//! Personal data (certificate numbers, phones, e-mails) goes only to authenticated
//! callers and is never logged: refusals are logged by their code alone.

mod blocked_hosts;
mod check;
pub mod tokens;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::admin::tokens::Caller;
use crate::edge::proxy::Gate;
use crate::edge::proxy_body::{full, ProxyBody};
use crate::edge::rejection;
use crate::gate::decision::{disposition, Disposition, Reason};
use crate::model::filing::{
    Action, Entity, Filing, IcpNumber, Product, Status, Submission, TransitionError, Website,
};
use crate::model::host::{Authority, HostName};
use crate::registry::{jsonl, ListFilter, Registry, RegistryError};

/// The OpenAPI 3 document of this API, kept in the repository.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// What a route does; `Admin::dispatch` handles each in one exhaustive match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Decision,
    ListFilings,
    SubmitFiling,
    GetFiling,
    Check,
    BlockedHosts,
    /// One workflow step on `/v1/filings/{id}/<step>`.
    Step(Step),
}

/// The workflow steps of the admin API, one per `Action` (named as `Action::name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    InitialReview,
    AuthorityReview,
    Resubmit,
    Abandon,
    Cancel,
    Disconnect,
    Change,
}

/// One row of the route table: method, path pattern (`{id}` matches one segment).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub endpoint: Endpoint,
}

const fn route(method: &'static str, path: &'static str, endpoint: Endpoint) -> Route {
    Route {
        method,
        path,
        endpoint,
    }
}

/// Every route the admin listener serves.
pub const ROUTES: &[Route] = &[
    route("GET", "/healthz", Endpoint::Healthz),
    route("GET", "/readyz", Endpoint::Readyz),
    route("GET", "/metrics", Endpoint::Metrics),
    route("GET", "/v1/openapi.json", Endpoint::OpenApi),
    route("GET", "/v1/decision", Endpoint::Decision),
    route("GET", "/v1/check", Endpoint::Check),
    route("GET", "/v1/blocked-hosts", Endpoint::BlockedHosts),
    route("GET", "/v1/filings", Endpoint::ListFilings),
    route("POST", "/v1/filings", Endpoint::SubmitFiling),
    route("GET", "/v1/filings/{id}", Endpoint::GetFiling),
    route(
        "POST",
        "/v1/filings/{id}/initial-review",
        Endpoint::Step(Step::InitialReview),
    ),
    route(
        "POST",
        "/v1/filings/{id}/authority-review",
        Endpoint::Step(Step::AuthorityReview),
    ),
    route(
        "POST",
        "/v1/filings/{id}/resubmit",
        Endpoint::Step(Step::Resubmit),
    ),
    route(
        "POST",
        "/v1/filings/{id}/abandon",
        Endpoint::Step(Step::Abandon),
    ),
    route(
        "POST",
        "/v1/filings/{id}/cancel",
        Endpoint::Step(Step::Cancel),
    ),
    route(
        "POST",
        "/v1/filings/{id}/disconnect",
        Endpoint::Step(Step::Disconnect),
    ),
    route(
        "POST",
        "/v1/filings/{id}/change",
        Endpoint::Step(Step::Change),
    ),
];

/// A matched route: what to do and the `{id}` segment, if the pattern has one.
struct Matched<'a> {
    endpoint: Endpoint,
    id: Option<&'a str>,
}

/// Match `path` against `ROUTES`: 404 when no pattern fits, 405 when one fits but
/// not for this method.
fn find_route<'a>(method: &Method, path: &'a str) -> Result<Matched<'a>, AdminError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut path_known = false;
    for route in ROUTES {
        let pattern: Vec<&str> = route.path.split('/').filter(|s| !s.is_empty()).collect();
        if pattern.len() != segments.len() {
            continue;
        }
        let mut id = None;
        let fits = pattern.iter().zip(&segments).all(|(p, s)| {
            if *p == "{id}" {
                id = Some(*s);
                true
            } else {
                p == s
            }
        });
        if !fits {
            continue;
        }
        path_known = true;
        if route.method == method.as_str() {
            let endpoint = route.endpoint;
            return Ok(Matched { endpoint, id });
        }
    }
    Err(if path_known {
        AdminError::MethodNotAllowed
    } else {
        AdminError::NotFound
    })
}

/// Largest admin request body accepted.
const MAX_ADMIN_BODY: usize = 1 << 20;

/// An admin API failure, turned into a response in one place (`into_response`).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("no admin token is configured: {0}")]
    NoTokenConfigured(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::NotFound => StatusCode::NOT_FOUND,
            AdminError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::NoTokenConfigured(_) => StatusCode::FORBIDDEN,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AdminError::NotFound => "not_found",
            AdminError::MethodNotAllowed => "method_not_allowed",
            AdminError::Unauthorized => "unauthorized",
            AdminError::NoTokenConfigured(_) => "no_token_configured",
            AdminError::BadRequest(_) => "bad_request",
            AdminError::Conflict(_) => "conflict",
            AdminError::Unavailable(_) => "registry_unavailable",
        }
    }

    fn into_response(self) -> Response<ProxyBody> {
        let mut response = json_response(
            self.status(),
            &json!({"error": self.code(), "detail": self.to_string()}),
        );
        if matches!(self, AdminError::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<RegistryError> for AdminError {
    fn from(error: RegistryError) -> AdminError {
        if error.is_unavailable() {
            return AdminError::Unavailable(error.to_string());
        }
        match error {
            RegistryError::NotFound(_) => AdminError::NotFound,
            RegistryError::DomainTaken { .. } | RegistryError::IdTaken(_) => {
                AdminError::Conflict(error.to_string())
            }
            RegistryError::Transition(ref transition) => match transition {
                TransitionError::Illegal { .. } => AdminError::Conflict(error.to_string()),
                _ => AdminError::BadRequest(error.to_string()),
            },
            other => AdminError::BadRequest(other.to_string()),
        }
    }
}

/// The admin service's shared state.
pub struct Admin {
    pub registry: Arc<dyn Registry>,
    pub gate: Arc<Gate>,
    /// The bearer token in force (None: writes are refused with 403); reloadable.
    pub token: Arc<tokens::AdminToken>,
    /// Wakes the webhook notifier after a write (None: no `[notify] url`).
    pub notifier: Option<Arc<tokio::sync::Notify>>,
}

type Reply = Result<Response<ProxyBody>, AdminError>;

impl Admin {
    pub async fn serve(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let response = match self.route(request).await {
            Ok(response) => response,
            Err(error) => {
                // The code only: a detail may quote input, and input may be personal.
                tracing::debug!(%method, %path, error = error.code(), "admin request refused");
                error.into_response()
            }
        };
        Ok(response)
    }

    async fn route(&self, request: Request<Incoming>) -> Reply {
        let path = request.uri().path().to_string();
        let matched = find_route(request.method(), &path)?;
        let id = matched.id.map(parse_id).transpose()?;
        self.dispatch(matched.endpoint, id, request).await
    }

    async fn dispatch(
        &self,
        endpoint: Endpoint,
        id: Option<i64>,
        request: Request<Incoming>,
    ) -> Reply {
        let id = || id.ok_or(AdminError::NotFound);
        match endpoint {
            Endpoint::Healthz => Ok(text_response(StatusCode::OK, "ok\n")),
            Endpoint::Readyz => self.ready().await,
            Endpoint::Metrics => Ok(self.metrics()),
            Endpoint::OpenApi => Ok(raw_json_response(StatusCode::OK, OPENAPI)),
            Endpoint::Decision => self.decision(&request).await,
            Endpoint::Check => check::serve_check(self, request.uri().query()).await,
            Endpoint::BlockedHosts => {
                blocked_hosts::serve_top(&self.gate.state.blocked_hosts, request.uri().query())
            }
            Endpoint::ListFilings => self.list(&request).await,
            Endpoint::SubmitFiling => self.submit(request).await,
            Endpoint::GetFiling => self.get(id()?, &request).await,
            Endpoint::Step(step) => self.transition(id()?, step, request).await,
        }
    }

    async fn ready(&self) -> Reply {
        match self.registry.revision().await {
            Ok(revision) => Ok(json_response(
                StatusCode::OK,
                &json!({"ready": true, "registry_revision": revision}),
            )),
            Err(error) => Ok(json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"ready": false, "error": "registry_unavailable", "detail": error.to_string()}),
            )),
        }
    }

    fn metrics(&self) -> Response<ProxyBody> {
        let metrics = &self.gate.state.metrics;
        metrics
            .cache_entries
            .set(i64::try_from(self.gate.state.cache().entry_count()).unwrap_or(i64::MAX));
        metrics
            .filed_domains
            .set(i64::try_from(self.gate.state.filed.len()).unwrap_or(i64::MAX));
        let runtime = self.gate.current();
        for name in [Product::Storefront, Product::CorporateSite] {
            let pool = runtime.upstreams.pool(name);
            metrics
                .upstream_servers_down
                .with_label_values(&[pool.name()])
                .set(i64::try_from(pool.servers_down()).unwrap_or(i64::MAX));
        }
        let mut response = text_response(StatusCode::OK, &metrics.render());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }

    fn authorize(&self, request: &Request<Incoming>) -> Result<Caller, AdminError> {
        if !self.token.is_configured() {
            return Err(AdminError::NoTokenConfigured(
                self.token.source().to_string(),
            ));
        }
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(AdminError::Unauthorized)?;
        self.token
            .caller(presented.trim())
            .ok_or(AdminError::Unauthorized)
    }

    fn is_authorized(&self, request: &Request<Incoming>) -> bool {
        self.authorize(request).is_ok()
    }

    async fn decision(&self, request: &Request<Incoming>) -> Reply {
        let host = query_param(request.uri().query(), "host")
            .ok_or_else(|| AdminError::BadRequest("query parameter host is required".into()))?;
        let runtime = self.gate.current();
        let (normalised, domain, verdict) = match Authority::parse(&host) {
            Ok(Authority::Name(name)) => {
                let domain = name.registrable_domain();
                let verdict = self
                    .gate
                    .state
                    .verdict(domain.as_ref(), runtime.rule_policy())
                    .await;
                (
                    Some(name.as_str().to_string()),
                    domain.map(|d| d.into_string()),
                    verdict,
                )
            }
            Ok(Authority::Ip(ip)) => (
                Some(ip.to_string()),
                None,
                crate::gate::Verdict {
                    reason: Reason::IpLiteral,
                    filing: None,
                },
            ),
            Err(_) => (
                None,
                None,
                crate::gate::Verdict {
                    reason: Reason::InvalidHost,
                    filing: None,
                },
            ),
        };
        let policy = &runtime.config.policy;
        let decision = disposition(verdict.reason, policy.mode, policy.on_registry_error);
        let block_status = rejection::block_status(policy);
        let status = match decision {
            Disposition::Block => rejection::status_for(verdict.reason, block_status).as_u16(),
            Disposition::Allow | Disposition::WouldBlock => 200,
        };
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "input": host,
                "host": normalised,
                "registrable_domain": domain,
                "decision": decision.as_str(),
                "reason": verdict.reason.as_str(),
                "status": status,
                "filing": verdict.filing.as_deref(),
            }),
        ))
    }

    async fn list(&self, request: &Request<Incoming>) -> Reply {
        let query = request.uri().query();
        let domain = query_param(query, "domain")
            .map(|d| registrable(&d))
            .transpose()?;
        let status = query_param(query, "status")
            .map(|s| {
                Status::parse(&s)
                    .ok_or_else(|| AdminError::BadRequest(format!("unknown status {s:?}")))
            })
            .transpose()?;
        let limit = query_param(query, "limit")
            .map(|l| {
                l.parse::<usize>().map_err(|_| {
                    AdminError::BadRequest(format!("limit must be a number, not {l:?}"))
                })
            })
            .transpose()?;
        let filter = ListFilter {
            domain,
            status,
            limit,
        };
        let filings = self.registry.list(&filter).await?;
        let masked: Vec<Filing> = filings.into_iter().map(mask).collect();
        Ok(json_response(StatusCode::OK, &json!({ "filings": masked })))
    }

    async fn get(&self, id: i64, request: &Request<Incoming>) -> Reply {
        let filing = self.registry.get(id).await?.ok_or(AdminError::NotFound)?;
        let filing = if self.is_authorized(request) {
            filing
        } else {
            mask(filing)
        };
        Ok(json_response(StatusCode::OK, &filing))
    }

    async fn submit(&self, request: Request<Incoming>) -> Reply {
        let caller = self.authorize(&request)?;
        let actor = actor_of(&request, caller);
        let mut submission: Submission = read_json(request).await?;
        submission.domains = jsonl::registrable_domains(&submission.domains)
            .map_err(|e| AdminError::BadRequest(format!("domains: {e}")))?;
        let submitted = self.registry.submit(submission, &actor).await?;
        self.after_write(&submitted.filing, &actor, "submit", None)
            .await;
        let mut body = serde_json::to_value(&submitted.filing).unwrap_or_default();
        if let Some(object) = body.as_object_mut() {
            object.insert("filing_type".into(), submitted.filing_type.as_str().into());
        }
        Ok(json_response(StatusCode::CREATED, &body))
    }

    async fn transition(&self, id: i64, step: Step, request: Request<Incoming>) -> Reply {
        let caller = self.authorize(&request)?;
        let actor = actor_of(&request, caller);
        let body: StepBody = read_json_or_empty(request).await?;
        let action = body.into_action(step)?;
        let name = action.name();
        let filing = self.registry.transition(id, action, &actor).await?;
        let before = filing.history.last().and_then(|entry| entry.from);
        self.after_write(&filing, &actor, name, before).await;
        Ok(json_response(StatusCode::OK, &filing))
    }

    /// Enforce a write at once in this process, refresh the gauges, write the audit event.
    async fn after_write(
        &self,
        filing: &Filing,
        actor: &str,
        action: &str,
        before: Option<Status>,
    ) {
        let revision = self.registry.revision().await.unwrap_or(i64::MAX);
        let change = crate::registry::Change {
            revision,
            domains: filing.domains.clone(),
        };
        self.gate.state.note_writes(&[change]).await;
        if let Some(notifier) = &self.notifier {
            notifier.notify_one();
        }
        crate::gate::gauges::refresh_filing_gauges(
            self.registry.as_ref(),
            &self.gate.state.metrics,
        )
        .await;
        tracing::info!(
            target: "icpgate::audit",
            actor,
            action,
            filing_id = filing.id,
            domains = %filing.domains.join(","),
            before = before.map_or("-", Status::as_str),
            after = filing.status.as_str(),
            "filing changed"
        );
    }
}

/// The body of a workflow step; which fields apply depends on the step.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepBody {
    approve: Option<bool>,
    icp_number: Option<String>,
    reason: Option<String>,
    entity: Option<Entity>,
    website: Option<Website>,
    product: Option<Product>,
}

impl StepBody {
    fn into_action(self, step: Step) -> Result<Action, AdminError> {
        let approve = |name: &str| {
            self.approve.ok_or_else(|| {
                AdminError::BadRequest(format!("approve: {name} needs \"approve\": true or false"))
            })
        };
        Ok(match step {
            Step::InitialReview => Action::InitialReview {
                approve: approve("initial-review")?,
                reason: self.reason,
            },
            Step::AuthorityReview => Action::AuthorityReview {
                approve: approve("authority-review")?,
                icp_number: self.icp_number.as_deref().map(parse_icp).transpose()?,
                reason: self.reason,
            },
            Step::Resubmit => Action::Resubmit {
                entity: self.entity,
                website: self.website,
                product: self.product,
            },
            Step::Abandon => Action::Abandon {
                reason: self.reason,
            },
            Step::Cancel => Action::Cancel {
                reason: self.reason,
            },
            Step::Disconnect => Action::Disconnect {
                reason: self.reason,
            },
            Step::Change => Action::ChangeDetails {
                entity: self.entity,
                website: self.website,
            },
        })
    }
}

fn parse_icp(text: &str) -> Result<IcpNumber, AdminError> {
    IcpNumber::parse(text).map_err(|e| AdminError::BadRequest(format!("icp_number: {e}")))
}

fn registrable(input: &str) -> Result<crate::model::host::RegistrableDomain, AdminError> {
    let host = HostName::parse(input)
        .map_err(|e| AdminError::BadRequest(format!("domain {input:?}: {e}")))?;
    host.registrable_domain()
        .ok_or_else(|| AdminError::BadRequest(format!("domain {input:?} is a public suffix")))
}

fn parse_id(text: &str) -> Result<i64, AdminError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(AdminError::NotFound)
}

/// Personal data (certificate numbers, phones, e-mails) masked.
fn mask(mut filing: Filing) -> Filing {
    filing.entity = filing.entity.masked();
    filing.website.owner = filing.website.owner.map(|owner| owner.masked());
    filing
}

/// Who made a change, for the history: a named token's name; with the shared token,
/// the `X-Icpgate-Actor` header, else "admin".
fn actor_of(request: &Request<Incoming>, caller: Caller) -> String {
    if let Caller::Named(name) = caller {
        return name;
    }
    request
        .headers()
        .get("x-icpgate-actor")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| !c.is_control()))
        .unwrap_or("admin")
        .to_string()
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, AdminError> {
    Limited::new(request.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| AdminError::BadRequest(format!("cannot read the request body: {e}")))
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    request: Request<Incoming>,
) -> Result<T, AdminError> {
    let body = read_body(request).await?;
    parse_json(&body)
}

/// Deserialize a body; the error names the field it is about (`entity.type: …`).
fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, AdminError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            AdminError::BadRequest(format!("invalid JSON body: {inner}"))
        } else {
            AdminError::BadRequest(format!("{path}: {inner}"))
        }
    })
}

async fn read_json_or_empty<T: for<'de> Deserialize<'de> + Default>(
    request: Request<Incoming>,
) -> Result<T, AdminError> {
    let body = read_body(request).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(&body)
}

/// The first value of `name` in a query string, percent-decoded (`+` is a space).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key)? == name)
            .then(|| percent_decode(value))
            .flatten()
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

pub fn json_response<T: serde::Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
) -> Response<ProxyBody> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// A response whose body is already JSON text.
fn raw_json_response(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn text_response(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full(text.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_percent_decoded() {
        let cases = [
            // plain
            (Some("host=example.com"), "host", Some("example.com")),
            // Unicode host, percent-encoded UTF-8
            (
                Some("a=1&host=%E4%BE%8B%E5%AD%90.%E4%B8%AD%E5%9B%BD"),
                "host",
                Some("例子.中国"),
            ),
            // absent
            (Some("a=1"), "host", None),
            // broken escape
            (Some("host=%zz"), "host", None),
            // no query at all
            (None, "host", None),
        ];
        for (query, name, want) in cases {
            assert_eq!(query_param(query, name).as_deref(), want, "{query:?}");
        }
    }

    /// The document and the router agree: every route is documented with its method,
    /// and every documented operation is served.
    #[test]
    fn openapi_documents_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let served: std::collections::BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn routes_match_methods_and_ids() {
        let cases = [
            ("GET", "/healthz", Ok(Endpoint::Healthz)),
            ("GET", "/v1/filings/", Ok(Endpoint::ListFilings)),
            (
                "POST",
                "/v1/filings/7/change",
                Ok(Endpoint::Step(Step::Change)),
            ),
            (
                "DELETE",
                "/v1/filings/7",
                Err(StatusCode::METHOD_NOT_ALLOWED),
            ),
            ("POST", "/v1/filings/7/teleport", Err(StatusCode::NOT_FOUND)),
            ("GET", "/nope", Err(StatusCode::NOT_FOUND)),
        ];
        for (method, path, want) in cases {
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            let got = find_route(&method, path)
                .map(|m| m.endpoint)
                .map_err(|e| e.status());
            assert_eq!(got, want, "{method} {path}");
        }
    }
}
