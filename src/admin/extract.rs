//! What comes in and goes out: extractors that refuse bad input with the API's own
//! 400 (`AdminError`) instead of axum's plain-text rejections, the typed query
//! parameters they read, and the JSON reply every endpoint answers with.
//!
//! - [`JsonBody`] reads at most [`MAX_BODY`] bytes of JSON, whatever the
//!   `Content-Type` (scripts send none), and names the failing field
//!   (`entity.type: unknown variant …`); [`JsonOrEmpty`] takes an empty body as the
//!   default (a workflow step without fields).
//! - [`Query`] is axum's query extractor with its rejection mapped; the `de_*`
//!   functions parse parameters into model types with a message naming the value.
//! - [`Json`] answers pretty JSON with `Cache-Control: no-store`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{header, HeaderValue};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};

use crate::admin::error::AdminError;
use crate::model::filing::Status;
use crate::model::host::{HostName, RegistrableDomain};

/// Largest admin request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// A JSON request body, deserialised into `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = AdminError;

    async fn from_request(request: Request, _: &S) -> Result<Self, AdminError> {
        let body = read_body(request).await?;
        parse_json(&body).map(JsonBody)
    }
}

/// A JSON request body, or `T::default()` when the body is empty.
pub struct JsonOrEmpty<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for JsonOrEmpty<T> {
    type Rejection = AdminError;

    async fn from_request(request: Request, _: &S) -> Result<Self, AdminError> {
        let body = read_body(request).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonOrEmpty(T::default()));
        }
        parse_json(&body).map(JsonOrEmpty)
    }
}

async fn read_body(request: Request) -> Result<Bytes, AdminError> {
    axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|e| AdminError::BadRequest(format!("cannot read the request body: {e}")))
}

/// Deserialise a body; the error names the field it is about (`entity.type: …`).
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
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

/// Query parameters (percent-decoded, `+` a space; unknown ones ignored). A value
/// that does not parse is a 400 naming the parameter: `limit: must be a number, not "x"`.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AdminError> {
        let axum::extract::Query(value) = axum::extract::Query::try_from_uri(&parts.uri)?;
        Ok(Query(value))
    }
}

/// `status=`: a filing status by its name.
pub fn de_status<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Status>, D::Error> {
    let text = String::deserialize(d)?;
    Status::parse(&text)
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("unknown status {text:?}")))
}

/// `domain=`: any host name, as its registrable domain.
pub fn de_registrable_domain<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<RegistrableDomain>, D::Error> {
    let text = String::deserialize(d)?;
    let host = HostName::parse(&text).map_err(|e| D::Error::custom(format!("{text:?}: {e}")))?;
    host.registrable_domain()
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{text:?} is a public suffix")))
}

/// `limit=`: a count.
pub fn de_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse::<usize>()
        .map(Some)
        .map_err(|_| D::Error::custom(format!("must be a number, not {text:?}")))
}

/// `limit=` where 0 makes no sense: a count of at least 1.
pub fn de_positive_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("must be a positive number, not {text:?}")))
}

/// A yes/no switch: `true`/`1`, or `false`/`0`/empty.
pub fn de_flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let text = String::deserialize(d)?;
    match text.as_str() {
        "false" | "0" | "" => Ok(false),
        "true" | "1" => Ok(true),
        other => Err(D::Error::custom(format!(
            "must be true or false, not {other:?}"
        ))),
    }
}

/// A JSON reply: pretty-printed, never cached.
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec_pretty(&self.0).unwrap_or_default();
        let mut response = body.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Params {
        host: Option<String>,
        #[serde(default, deserialize_with = "de_status")]
        status: Option<Status>,
        #[serde(default, deserialize_with = "de_count")]
        limit: Option<usize>,
        #[serde(default, deserialize_with = "de_flag")]
        dns: bool,
    }

    fn query(text: &str) -> Result<Params, String> {
        let uri: http::Uri = format!("/x?{text}")
            .parse()
            .map_err(|_| "uri".to_string())?;
        axum::extract::Query::<Params>::try_from_uri(&uri)
            .map(|q| q.0)
            .map_err(|e| match AdminError::from(e) {
                AdminError::BadRequest(detail) => detail,
                other => format!("not a 400: {other}"),
            })
    }

    #[test]
    fn query_parameters_parse_or_name_the_parameter() {
        let ok = |host: Option<&str>, status, limit, dns| {
            Ok(Params {
                host: host.map(str::to_string),
                status,
                limit,
                dns,
            })
        };
        let cases: Vec<(&str, Result<Params, String>)> = vec![
            // plain, unknown parameters ignored
            (
                "host=example.com&x=1",
                ok(Some("example.com"), None, None, false),
            ),
            // Unicode host, percent-encoded UTF-8; `+` is a space
            (
                "host=%E4%BE%8B%E5%AD%90.%E4%B8%AD%E5%9B%BD",
                ok(Some("例子.中国"), None, None, false),
            ),
            ("host=a+b", ok(Some("a b"), None, None, false)),
            // absent
            ("", ok(None, None, None, false)),
            // typed values
            (
                "status=approved&limit=5&dns=1",
                ok(None, Some(Status::Approved), Some(5), true),
            ),
            // bad values name their parameter
            ("status=lost", Err("status: unknown status \"lost\"".into())),
            ("limit=x", Err("limit: must be a number, not \"x\"".into())),
            (
                "dns=maybe",
                Err("dns: must be true or false, not \"maybe\"".into()),
            ),
            // a parameter given twice is ambiguous
            ("host=a&host=b", Err("duplicate field `host`".into())),
        ];
        for (text, want) in cases {
            assert_eq!(query(text), want, "{text}");
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Body {
            inner: Inner,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            count: u32,
        }
        let cases = [
            (
                &br#"{"inner": {"count": "x"}}"#[..],
                "inner.count: invalid type",
            ),
            (b"{", "EOF while parsing"),
            (b"7", "invalid JSON body: invalid type"),
        ];
        for (body, want) in cases {
            match parse_json::<Body>(body) {
                Err(AdminError::BadRequest(detail)) => {
                    assert!(detail.contains(want), "{detail}")
                }
                other => panic!("{want}: {other:?}"),
            }
        }
    }
}
