//! Bearer-token auth as a layer, and the [`Actor`] it hands to handlers.
//!
//! Writes need `Authorization: Bearer <token>`: the shared token (from
//! `admin.token_file`, else the environment variable named by `admin.token_env`) or a
//! named token of `admin.tokens_file` (`tokens`), compared in constant time.
//!
//! - [`require_token`] guards the routes that need a token: with no token configured
//!   it answers 403 saying how to set one; a missing or wrong token is a 401 (with
//!   `WWW-Authenticate: Bearer`); otherwise the request goes on carrying its `Actor`.
//! - [`identify`] guards the routes where a token only widens the answer (personal
//!   data in `GET /v1/filings/{id}`): a valid token adds the `Actor`, anything else
//!   goes on without one.
//!
//! The actor recorded in the history is a named token's name; with the shared token
//! it is the caller's `X-Icpgate-Actor`, else "admin".

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::request::Parts;
use http::{header, HeaderMap};

use crate::admin::error::AdminError;
use crate::admin::tokens::{AdminToken, Caller};

/// Who is calling, as recorded in a filing's history. Extracting it where the auth
/// layer did not put it is a 401: a route without the layer cannot write by mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

/// The layer of the routes that need a token.
pub async fn require_token(
    State(token): State<Arc<AdminToken>>,
    mut request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    let actor = authenticate(&token, request.headers())?;
    request.extensions_mut().insert(actor);
    Ok(next.run(request).await)
}

/// The layer of the routes where a token is optional.
pub async fn identify(
    State(token): State<Arc<AdminToken>>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Ok(actor) = authenticate(&token, request.headers()) {
        request.extensions_mut().insert(actor);
    }
    next.run(request).await
}

fn authenticate(token: &AdminToken, headers: &HeaderMap) -> Result<Actor, AdminError> {
    if !token.is_configured() {
        return Err(AdminError::NoTokenConfigured(token.source().to_string()));
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(AdminError::Unauthorized)?;
    let caller = token
        .caller(presented.trim())
        .ok_or(AdminError::Unauthorized)?;
    Ok(actor_of(headers, caller))
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
