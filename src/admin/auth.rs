//! Bearer-token auth as layers, and the [`Actor`] they hand to handlers.
//!
//! A caller presents `Authorization: Bearer <token>` (the scheme in any case): the
//! shared token (from `admin.token_file`, else the environment variable named by
//! `admin.token_env`) or a named token of `admin.tokens_file` (`tokens`), compared in
//! constant time.
//!
//! - [`require_token`] guards the writes: with no token configured it answers 403
//!   saying how to set one; a missing or wrong token is a 401 (with
//!   `WWW-Authenticate: Bearer`); otherwise the request goes on carrying its `Actor`.
//! - [`read`] guards the reads: the same as `require_token`, unless
//!   `admin.public_reads` is on; then anyone reads, and a valid token only widens the
//!   answer (personal data in `GET /v1/filings/{id}`).
//!
//! Credentials that match no token are failures: counted in
//! `icpgate_admin_auth_failures_total` and limited per client address (`throttle`);
//! a client over the limit gets 429 from both layers, whatever it presents.
//!
//! The actor recorded in the history is a named token's name; with the shared token
//! it is the caller's `X-Icpgate-Actor`, else "admin".

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, OptionalFromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::request::Parts;
use http::{header, HeaderMap};

use crate::admin::error::AdminError;
use crate::admin::privacy::Grants;
use crate::admin::throttle::AuthFailures;
use crate::admin::tokens::{AdminToken, Caller};
use crate::edge::conn::ClientAddr;
use crate::edge::proxy::Gate;

/// Who is calling, as recorded in a filing's history. Extracting it where the auth
/// layer did not put it is a 401: a route without the layer cannot write by mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

/// What the auth layers share: the tokens, the failures so far, and the gate (its
/// running config says whether reads are public; its metrics count failures).
pub struct Guard {
    pub token: Arc<AdminToken>,
    pub gate: Arc<Gate>,
    pub failures: AuthFailures,
}

/// What a request's credentials amount to.
enum Credentials {
    Valid(Actor, Grants),
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that matches no token (or is no bearer token).
    Wrong,
    /// No token is configured at all.
    NoneConfigured,
}

impl Guard {
    /// The client's address (unknown in tests that call the router directly).
    fn client(request: &Request) -> IpAddr {
        request
            .extensions()
            .get::<ClientAddr>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), ClientAddr::ip)
    }

    /// Refuse a client over the failure limit; else judge its credentials, counting
    /// a wrong one.
    fn check(&self, request: &Request) -> Result<Credentials, AdminError> {
        let client = Guard::client(request);
        let now = Instant::now();
        if let Some(seconds) = self.failures.blocked(client, now) {
            return Err(AdminError::TooManyFailures(seconds));
        }
        let credentials = credentials(&self.token, request.headers());
        if matches!(credentials, Credentials::Wrong) {
            self.failures.record(client, now);
            self.gate.state.metrics.admin_auth_failures.inc();
        }
        Ok(credentials)
    }

    fn public_reads(&self) -> bool {
        self.gate.current().config.admin.public_reads
    }
}

/// The layer of the routes that need a token.
pub async fn require_token(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    let (actor, grants) = match guard.check(&request)? {
        Credentials::Valid(actor, grants) => (actor, grants),
        Credentials::Missing | Credentials::Wrong => return Err(AdminError::Unauthorized),
        Credentials::NoneConfigured => {
            return Err(AdminError::NoTokenConfigured(
                guard.token.source().to_string(),
            ))
        }
    };
    request.extensions_mut().insert(actor);
    request.extensions_mut().insert(grants);
    Ok(next.run(request).await)
}

/// The layer of the reads: a token needed, unless `admin.public_reads`.
pub async fn read(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    match (guard.check(&request)?, guard.public_reads()) {
        (Credentials::Valid(actor, grants), _) => {
            request.extensions_mut().insert(actor);
            request.extensions_mut().insert(grants);
        }
        (_, true) => {}
        (Credentials::Missing | Credentials::Wrong, false) => return Err(AdminError::Unauthorized),
        (Credentials::NoneConfigured, false) => {
            return Err(AdminError::NoTokenConfigured(
                guard.token.source().to_string(),
            ))
        }
    }
    Ok(next.run(request).await)
}

fn credentials(token: &AdminToken, headers: &HeaderMap) -> Credentials {
    if !token.is_configured() {
        return Credentials::NoneConfigured;
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Credentials::Missing;
    };
    let caller = value
        .to_str()
        .ok()
        .and_then(bearer)
        .and_then(|presented| token.caller(presented));
    match caller {
        Some(caller) => {
            let grants = Grants {
                reveal: token.may_reveal(&caller),
            };
            Credentials::Valid(actor_of(headers, caller), grants)
        }
        None => Credentials::Wrong,
    }
}

/// The token of an `Authorization` value in the `Bearer` scheme, whose name is
/// case-insensitive (RFC 9110 §11.1); None for another scheme or no token.
fn bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, token) = value.split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A named token's name; with the shared token, the `X-Icpgate-Actor` header (1–64
/// characters, no control characters), else "admin".
fn actor_of(headers: &HeaderMap, caller: Caller) -> Actor {
    if let Caller::Named(name) = caller {
        return Actor(name);
    }
    let claimed = headers
        .get("x-icpgate-actor")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| !c.is_control()));
    Actor(claimed.unwrap_or("admin").to_string())
}

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Actor, AdminError> {
        parts
            .extensions
            .get::<Actor>()
            .cloned()
            .ok_or(AdminError::Unauthorized)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Actor {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Actor>, Infallible> {
        Ok(parts.extensions.get::<Actor>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        let cases = [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("BeArEr   abc  ", Some("abc")),
            ("Bearer\tabc", Some("abc")),
            ("Basic abc", None),
            ("Bearerabc", None),
            ("Bearer ", None),
            ("Bearer", None),
            ("abc", None),
        ];
        for (value, want) in cases {
            assert_eq!(bearer(value), want, "{value:?}");
        }
    }

    #[test]
    fn the_actor_is_the_named_token_or_the_claim_of_the_shared_one() {
        let long = "x".repeat(65);
        let cases = [
            // a named token's name wins over any claim
            (
                Caller::Named("alice".into()),
                vec![("x-icpgate-actor", "bob")],
                "alice",
            ),
            // the shared token: the claim, trimmed
            (Caller::Shared, vec![("x-icpgate-actor", " bob ")], "bob"),
            // no claim, an empty one or an overlong one: "admin"
            (Caller::Shared, vec![], "admin"),
            (Caller::Shared, vec![("x-icpgate-actor", "  ")], "admin"),
            (
                Caller::Shared,
                vec![("x-icpgate-actor", long.as_str())],
                "admin",
            ),
        ];
        for (caller, pairs, want) in cases {
            assert_eq!(actor_of(&headers(&pairs), caller), Actor(want.into()));
        }
    }
}
