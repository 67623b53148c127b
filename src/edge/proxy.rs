//! The data plane's hyper service. `Gate::serve` is the thin outer call that times,
//! counts and logs each request exactly once; `handle` is the rule: read the
//! authority, normalise it, decide, then block or forward.
//!
//! One request: authority (`:authority`, absolute-form URI, else `Host`) →
//! `Authority::parse` (400 on garbage, `ip_literal` for addresses, answered before any
//! lookup) → registrable domain (a bare public suffix is `not_filed` without a lookup)
//! → decision cache → `decide` → block page, or the product's upstream pool.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Limited;
use hyper::body::Incoming;

use crate::config::{Config, IpNet};
use crate::edge::acme::challenge::Challenges;
use crate::edge::conn::ConnInfo;
use crate::edge::forward::{self, ForwardContext};
use crate::edge::proxy_body::{boxed, ProxyBody};
use crate::edge::rejection::{self, BlockContext};
use crate::edge::request_id::RequestIds;
use crate::edge::upstream::{UpstreamBody, UpstreamError, Upstreams};
use crate::gate::decision::{disposition, Disposition, FilingFacts, Reason, RulePolicy};
use crate::gate::{GateState, Verdict};
use crate::model::filing::Product;
use crate::model::host::{Authority, RegistrableDomain};

/// Everything the data plane reads per request that a reload may replace.
pub struct Runtime {
    pub config: Arc<Config>,
    pub upstreams: Upstreams,
}

impl Runtime {
    pub fn new(config: Arc<Config>) -> Runtime {
        let upstreams = Upstreams::new(&config.upstreams, config.limits.upstream_connect_timeout);
        Runtime { config, upstreams }
    }

    pub fn rule_policy(&self) -> RulePolicy {
        RulePolicy::of(&self.config.policy)
    }

    fn trusts(&self, ip: &std::net::IpAddr) -> bool {
        self.config
            .listen
            .trusted_proxies
            .iter()
            .any(|net: &IpNet| net.contains(ip))
    }
}

/// How one request ended, for the metrics and the access log.
struct Outcome {
    decision: &'static str,
    reason: Reason,
    host: Option<String>,
    domain: Option<String>,
    upstream: Option<&'static str>,
}

impl Outcome {
    fn refused(reason: Reason) -> Outcome {
        Outcome {
            decision: "block",
            reason,
            host: None,
            domain: None,
            upstream: None,
        }
    }
}

/// The hyper service of the data plane: the shared gate state, and what a reload
/// replaces (config and upstream pools).
pub struct Gate {
    /// The decision cache, the filed-domain index and the counters, shared with the
    /// admin API and the change feed.
    pub state: Arc<GateState>,
    pub runtime: ArcSwap<Runtime>,
    request_ids: RequestIds,
    /// The ACME challenges being answered (none while ACME is off or idle).
    pub acme_challenges: Arc<Challenges>,
}

type Reply = Response<ProxyBody>;

impl Gate {
    pub fn new(state: Arc<GateState>, runtime: Runtime) -> Gate {
        Gate {
            state,
            runtime: ArcSwap::from_pointee(runtime),
            request_ids: RequestIds::new(),
            acme_challenges: Arc::default(),
        }
    }

    /// The hyper service: never fails; every refusal is a response.
    pub async fn serve(
        self: Arc<Self>,
        request: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Result<Reply, Infallible> {
        let started = Instant::now();
        let runtime = self.runtime.load_full();
        let request_id = self.request_ids.for_request(request.headers());
        let method = request.method().clone();
        let (mut response, outcome) = self.handle(request, &conn, &runtime, &request_id).await;
        // Block pages and forwarded answers carry it already: no second copy.
        if !response.headers().contains_key(rejection::X_REQUEST_ID) {
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response
                    .headers_mut()
                    .insert(rejection::X_REQUEST_ID, value);
            }
        }
        let elapsed = started.elapsed();
        self.state
            .metrics
            .count_request(outcome.decision, outcome.reason);
        self.state.blocked_hosts.observe(
            outcome.decision,
            outcome.reason,
            outcome.domain.as_deref(),
        );
        self.state
            .block_rate
            .observe(outcome.decision, outcome.reason);
        self.state
            .metrics
            .request_duration
            .observe(elapsed.as_secs_f64());
        tracing::info!(
            target: "icpgate::access",
            client = %conn.client.ip(),
            method = %method,
            host = outcome.host.as_deref().unwrap_or("-"),
            registrable_domain = outcome.domain.as_deref().unwrap_or("-"),
            decision = outcome.decision,
            reason = outcome.reason.as_str(),
            status = response.status().as_u16(),
            upstream = outcome.upstream.unwrap_or("-"),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            request_id = %request_id,
            "request"
        );
        Ok(response)
    }

    async fn handle(
        &self,
        request: Request<Incoming>,
        conn: &ConnInfo,
        runtime: &Runtime,
        request_id: &str,
    ) -> (Reply, Outcome) {
        // The CA's HTTP-01 request for a name being validated (only filed names are
        // ever ordered), answered before the rule since the name has no certificate yet.
        if let Some(answered) = self.answer_acme(&request).await {
            return answered;
        }
        let raw_authority = match authority_of(&request) {
            Ok(raw) => raw,
            Err(reason) => {
                return (
                    self.refuse(reason, None, None, None, &request, runtime, request_id),
                    Outcome::refused(reason),
                )
            }
        };
        let found = self
            .state
            .verdict_for_host(&raw_authority, runtime.rule_policy())
            .await;
        let verdict = sni_checked(found.verdict, found.domain.as_ref(), conn);
        // What the page shows: the normalised name, else the raw text.
        let shown = match &found.authority {
            Ok(Authority::Name(name)) => name.as_str(),
            _ => raw_authority.as_str(),
        };
        let mut outcome = Outcome {
            decision: "allow",
            reason: verdict.reason,
            host: None,
            domain: None,
            upstream: None,
        };
        let pool = self.route(&verdict, runtime, &mut outcome);
        if outcome.decision == Disposition::WouldBlock.as_str() {
            let host = logged_host(&found.authority, &raw_authority);
            tracing::info!(target: "icpgate::report_only", reason = verdict.reason.as_str(), host = %host, "would block");
        }
        let reply = match pool {
            None => self.refuse(
                verdict.reason,
                Some(shown),
                found.domain.as_ref(),
                verdict.filing.as_deref(),
                &request,
                runtime,
                request_id,
            ),
            Some(pool) => {
                outcome.upstream = Some(pool.as_str());
                // Boxed: the upstream exchange's state (request, connection,
                // timer) would otherwise sit inline in every request's future and
                // be moved with it, block pages included.
                Box::pin(self.forward(request, pool, &raw_authority, conn, runtime, request_id))
                    .await
            }
        };
        // Moved, not copied, into the log's outcome once the reply is built.
        outcome.host = Some(match found.authority {
            Ok(Authority::Name(name)) => name.into_string(),
            Ok(Authority::Ip(_)) => raw_authority,
            Err(_) => loggable(&raw_authority),
        });
        outcome.domain = found.domain.map(RegistrableDomain::into_string);
        (reply, outcome)
    }

    /// The CA's HTTP-01 request for a name being validated (only filed names are
    /// ever ordered), answered before the rule since the name has no certificate
    /// yet; None for every other request (one prefix comparison).
    async fn answer_acme(&self, request: &Request<Incoming>) -> Option<(Reply, Outcome)> {
        let path = request.uri().path();
        if !path.starts_with(crate::edge::acme::challenge::HTTP01_PREFIX) {
            return None;
        }
        let authority = authority_of(request).ok()?;
        let answer = self
            .acme_challenges
            .answer_http01(&authority, path, &self.state.filed)
            .await?;
        let outcome = Outcome {
            decision: "allow",
            reason: Reason::Filed,
            host: Some(authority),
            domain: None,
            upstream: None,
        };
        Some((answer.map(boxed), outcome))
    }

    /// Which pool serves this verdict, or None to block. Sets the outcome's decision.
    fn route(
        &self,
        verdict: &Verdict,
        runtime: &Runtime,
        outcome: &mut Outcome,
    ) -> Option<Product> {
        let policy = &runtime.config.policy;
        let disposition = disposition(verdict.reason, policy.mode, policy.on_registry_error);
        outcome.decision = disposition.as_str();
        let filed_pool = verdict.filing.as_ref().map(|f| f.product);
        disposition
            .forwards()
            .then(|| filed_pool.unwrap_or(policy.default_pool))
    }

    /// The current runtime, for callers outside a request (admin, TLS handshakes).
    pub fn current(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &self,
        reason: Reason,
        host: Option<&str>,
        domain: Option<&RegistrableDomain>,
        filing: Option<&FilingFacts>,
        request: &Request<Incoming>,
        runtime: &Runtime,
        request_id: &str,
    ) -> Reply {
        let policy = &runtime.config.policy;
        let block_status = rejection::block_status(policy);
        let context = BlockContext {
            host,
            registrable_domain: domain.map(|d| d.as_str()),
            request_id,
            block_status,
            operator: &policy.operator,
            operator_url: &policy.operator_url,
            icp_number: filing.and_then(|f| f.icp_number.as_deref()),
        };
        let wants_json = rejection::wants_json(request.headers().get(header::ACCEPT));
        rejection::block_response(reason, &context, wants_json).map(boxed)
    }

    async fn forward(
        &self,
        mut request: Request<Incoming>,
        pool_name: Product,
        host: &str,
        conn: &ConnInfo,
        runtime: &Runtime,
        request_id: &str,
    ) -> Reply {
        let wants_json = rejection::wants_json(request.headers().get(header::ACCEPT));
        let limits = &runtime.config.limits;
        if declared_length(&request).is_some_and(|len| len > limits.max_body_bytes) {
            return error_reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                request_id,
                wants_json,
            );
        }
        let pool = runtime.upstreams.pool(pool_name);
        let client_upgrade =
            forward::websocket_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        let uri = forward::origin_form(std::mem::take(&mut parts.uri));
        let max_body = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
        let context = ForwardContext {
            client_ip: conn.client.ip(),
            keep_forwarded_for: runtime.trusts(&conn.client.ip()),
            proto: conn.proto(),
            host,
            request_id,
        };
        let upstream_request =
            forward::upstream_request(parts, boxed(Limited::new(body, max_body)), uri, &context);
        let started = Instant::now();
        let result = if client_upgrade.is_some() {
            pool.send_upgrade(upstream_request, host, limits.upstream_timeout)
                .await
        } else {
            pool.send(upstream_request, host, limits.upstream_timeout)
                .await
        };
        self.state
            .metrics
            .upstream_duration
            .with_label_values(&[pool.name()])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(response) => self.answer(
                response,
                pool.name(),
                client_upgrade,
                request_id,
                wants_json,
            ),
            Err(error) => self.upstream_failed(&error, pool.name(), request_id, wants_json),
        }
    }

    /// The upstream's response, on its way back: 5xx counted, a WebSocket switch
    /// the gate forwarded turned into a tunnel, any other 101 refused.
    fn answer(
        &self,
        mut response: Response<UpstreamBody>,
        pool: &'static str,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        request_id: &str,
        wants_json: bool,
    ) -> Reply {
        if response.status().is_server_error() {
            self.state
                .metrics
                .upstream_errors
                .with_label_values(&[pool, "status_5xx"])
                .inc();
        }
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // A tunnel only for the WebSocket switch the gate forwarded: any other
            // 101 would turn the connection into raw bytes to the origin.
            match client_upgrade {
                Some(client) if forward::websocket_upgrade(response.headers()) => {
                    let upstream = hyper::upgrade::on(&mut response);
                    tokio::spawn(crate::edge::tunnel::splice(client, upstream));
                }
                _ => return self.unasked_switch(pool, request_id, wants_json),
            }
        }
        forward::downstream_response(response, request_id, boxed)
    }

    /// A failed exchange: 413 when the client's body passed the limit, else counted
    /// by kind and answered 504 (timeout) or 502.
    fn upstream_failed(
        &self,
        error: &UpstreamError,
        pool: &'static str,
        request_id: &str,
        wants_json: bool,
    ) -> Reply {
        if body_over_limit(error) {
            tracing::info!(
                pool,
                request_id,
                "request body over limits.max_body_bytes; not forwarded whole"
            );
            return error_reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                request_id,
                wants_json,
            );
        }
        tracing::warn!(pool, %error, request_id, "upstream failed");
        self.state
            .metrics
            .upstream_errors
            .with_label_values(&[pool, error.kind()])
            .inc();
        let (status, code) = match error {
            UpstreamError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            UpstreamError::Connect { .. } | UpstreamError::Reset { .. } => {
                (StatusCode::BAD_GATEWAY, "upstream_unavailable")
            }
        };
        error_reply(status, code, request_id, wants_json)
    }

    /// An origin switched protocols without being asked for WebSocket: its 101 is
    /// never passed on (nor its connection reused), the client gets a 502.
    fn unasked_switch(&self, pool: &str, request_id: &str, wants_json: bool) -> Reply {
        tracing::warn!(
            pool,
            request_id,
            "upstream answered 101 to no WebSocket upgrade"
        );
        self.state
            .metrics
            .upstream_errors
            .with_label_values(&[pool, "unasked_switch"])
            .inc();
        error_reply(
            StatusCode::BAD_GATEWAY,
            "upstream_unasked_switch",
            request_id,
            wants_json,
        )
    }
}

/// The verdict for a host on this connection: on TLS, a host under another
/// registrable domain than the SNI is 421 when it is itself served here, else
/// blocked for its own reason (no fronting an unfiled domain behind a filed one).
fn sni_checked(verdict: Verdict, domain: Option<&RegistrableDomain>, conn: &ConnInfo) -> Verdict {
    match &conn.tls {
        Some(tls) if tls.sni_domain.as_ref() != domain && verdict.reason == Reason::Filed => {
            Verdict {
                reason: Reason::SniMismatch,
                filing: verdict.filing,
            }
        }
        _ => verdict,
    }
}

/// A synthetic error page (413, 400, 502, 504, ...) as the data plane's body type.
fn error_reply(status: StatusCode, code: &str, request_id: &str, wants_json: bool) -> Reply {
    rejection::error_response(status, code, request_id, wants_json).map(boxed)
}

/// Whether an upstream exchange failed because the client's (chunked) body passed
/// `limits.max_body_bytes`: the client's fault (413), not the upstream's.
fn body_over_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = current.source();
    }
    false
}

/// An invalid authority as the access log shows it: at most 100 characters, with
/// control characters and quotes escaped, so garbage is visible but cannot forge
/// log lines.
/// The host as the log shows it: the normalised name, an address as written, else
/// the raw text escaped and truncated.
fn logged_host<'a>(
    authority: &'a Result<Authority, crate::model::host::HostError>,
    raw: &'a str,
) -> std::borrow::Cow<'a, str> {
    match authority {
        Ok(Authority::Name(name)) => name.as_str().into(),
        Ok(Authority::Ip(_)) => raw.into(),
        Err(_) => loggable(raw).into(),
    }
}

fn loggable(raw: &str) -> String {
    let truncated: String = raw.chars().take(100).collect();
    let escaped = format!("{truncated:?}");
    escaped.trim_matches('"').to_string()
}

fn declared_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The request's authority: HTTP/2 `:authority` or an absolute-form URI's, else the
/// single `Host`. Two different Host headers are ambiguous and refused, and so is
/// CONNECT.
pub fn authority_of<B>(request: &Request<B>) -> Result<String, Reason> {
    // A reverse proxy has no tunnels to offer: CONNECT's authority-form target is
    // not a site to gate, so it is refused like any unusable host.
    if request.method() == http::Method::CONNECT {
        return Err(Reason::InvalidHost);
    }
    if let Some(authority) = request.uri().authority() {
        // An authority-form target (`GET example.com:80`) is for CONNECT only
        // (RFC 9112 §3.2.3): without a scheme it is no absolute-form URI.
        if request.uri().scheme().is_none() {
            return Err(Reason::InvalidHost);
        }
        return Ok(authority.as_str().to_string());
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let Some(first) = hosts.next() else {
        return Err(Reason::MissingHost);
    };
    // Two Host lines are a 400 even when identical (RFC 9112 §3.2).
    if hosts.next().is_some() {
        return Err(Reason::InvalidHost);
    }
    let value = first.to_str().map_err(|_| Reason::InvalidHost)?.trim();
    if value.is_empty() {
        return Err(Reason::MissingHost);
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_authorities_are_logged_escaped_and_bounded() {
        let cases = [
            // a newline cannot start a forged log line
            ("evil.com\nreason=filed", "evil.com\\nreason=filed"),
            // quotes are escaped
            ("a\"b", "a\\\"b"),
            // plain garbage stays readable
            ("a..b.com", "a..b.com"),
        ];
        for (raw, logged) in cases {
            assert_eq!(loggable(raw), logged, "{raw:?}");
        }
        assert_eq!(loggable(&"x".repeat(500)).len(), 100, "bounded");
    }
}
