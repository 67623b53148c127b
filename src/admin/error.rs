//! The admin API's one error type. Every refusal — of a handler, an extractor, the
//! auth layer or the router's fallbacks — is an [`AdminError`], and
//! [`IntoResponse`] turns it into `{"error": code, "detail": message}` with its
//! status, in one exhaustive match.
//!
//! The response carries the code as an extension ([`Refusal`]) so the service can log
//! the refusal by its code alone: a detail may quote input, and input may be
//! personal data.

use axum::extract::rejection::QueryRejection;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde_json::json;

use crate::admin::extract::Json;
use crate::model::filing::TransitionError;
use crate::registry::RegistryError;

/// An admin API failure, answered as JSON.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// How to set a token, for the operator who forgot to.
    #[error("no admin token is configured: {0}")]
    NoTokenConfigured(String),
    /// The Host names no name this listener answers (`admin.hosts`): a DNS
    /// rebinding page, or a name the operator has not listed.
    #[error("this admin listener does not answer the Host {0:?}; add it to admin.hosts")]
    MisdirectedHost(String),
    /// Too many failed authentications from this client: retry after this many seconds.
    #[error("too many failed authentications from this address; retry in {0} s")]
    TooManyFailures(u64),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    /// A valid token that is not allowed this (e.g. a reveal without the grant).
    #[error("{0}")]
    Forbidden(String),
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

/// The code of a refused request, on its response for the service's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal(pub &'static str);

impl AdminError {
    /// The status and the machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AdminError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            AdminError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            AdminError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AdminError::NoTokenConfigured(_) => (StatusCode::FORBIDDEN, "no_token_configured"),
            AdminError::MisdirectedHost(_) => (StatusCode::MISDIRECTED_REQUEST, "misdirected_host"),
            AdminError::TooManyFailures(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_failures"),
            AdminError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AdminError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AdminError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AdminError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable"),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = json!({"error": code, "detail": self.to_string()});
        let mut response = (status, Json(body)).into_response();
        if matches!(self, AdminError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let AdminError::TooManyFailures(seconds) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(Refusal(code));
        response
    }
}

impl From<RegistryError> for AdminError {
    fn from(error: RegistryError) -> AdminError {
        match error {
            RegistryError::NotFound(_) => AdminError::NotFound,
            RegistryError::DomainTaken { .. }
            | RegistryError::IdTaken(_)
            | RegistryError::NumberTaken { .. } => AdminError::Conflict(error.to_string()),
            RegistryError::Transition(
                TransitionError::Illegal { .. }
                | TransitionError::EntityReplaced
                | TransitionError::ChangePending,
            ) => AdminError::Conflict(error.to_string()),
            RegistryError::Transition(_) => AdminError::BadRequest(error.to_string()),
            RegistryError::Unavailable(_) | RegistryError::Corrupt { .. } => {
                AdminError::Unavailable(error.to_string())
            }
            // An import line's error is the line's own, with its number.
            RegistryError::AtLine { .. } if error.is_unavailable() => {
                AdminError::Unavailable(error.to_string())
            }
            RegistryError::AtLine { .. } => AdminError::BadRequest(error.to_string()),
        }
    }
}

/// A query string that does not fit: the detail names the parameter
/// (`status: unknown status "lost"`).
impl From<QueryRejection> for AdminError {
    fn from(rejection: QueryRejection) -> AdminError {
        let detail = std::error::Error::source(&rejection)
            .map_or_else(|| rejection.body_text(), ToString::to_string);
        AdminError::BadRequest(detail)
    }
}
