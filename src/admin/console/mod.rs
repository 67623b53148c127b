//! The review console for compliance staff, under `/console/` on the admin
//! listener: server-rendered HTML in English and Chinese, no script, the one
//! stylesheet embedded in the binary.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET, POST | /console/login | the sign-in form; a token opens a session (`session`) |
//! | POST | /console/logout | ends the session |
//! | GET | /console/lang?to=zh&back=P | switch language (cookie), back to P (`i18n`) |
//! | GET | /console/assets/console.css | the stylesheet |
//! | GET | /console/?page=N | the review queue (`queue`) |
//! | GET | /console/filings/{id} | a filing, personal data masked (`filing`) |
//! | POST | /console/filings/{id}/{initial-review, authority-review, abandon, cancel, disconnect} | one step, 303 back with a flash |
//! | POST | /console/filings/{id}/reveal | the filing with personal data, audited |
//! | GET | /console/filings/{id}/{step or reveal} | 303 to the filing (a reload, a language switch) |
//! | GET, POST | /console/check, POST /console/check.csv | verdicts of a list (`check`) |
//! | GET | /console/traffic | top blocked domains and the block rate (`traffic`) |
//! | GET | /console/search?q= | by domain or ICP number (`search`) |
//!
//! Every page but the login and the stylesheet needs a session (else 303 to the
//! login); every POST but the login needs the session's CSRF token (else 403).
//! Every answer carries `X-Frame-Options: DENY`, a `Content-Security-Policy` that
//! allows no script and no framing, `Referrer-Policy: no-referrer` and (but the
//! stylesheet) `Cache-Control: no-store`. The routes are not in the API's route
//! table nor in `docs/openapi.json`, which document `/v1`.

mod check;
mod filing;
mod i18n;
mod queue;
mod search;
mod session;
mod templates;
mod traffic;

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::map_response;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{header, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;

use crate::admin::auth::Guard;
use crate::admin::extract::MAX_BODY;
use crate::admin::Admin;

pub use i18n::Lang;
use session::{Sessions, Staff};
use templates::{page, Page};

/// A request that came over TLS (the session cookie is then `Secure`); the admin
/// service marks it.
#[derive(Debug, Clone, Copy)]
pub struct ServedOverTls;

/// What the console's handlers share.
pub struct Console {
    pub admin: Arc<Admin>,
    /// The admin API's auth guard: the console's failed sign-ins count against the
    /// same per-address limit as the API's.
    pub guard: Arc<Guard>,
    pub sessions: Sessions,
}

/// The stylesheet, embedded.
const STYLESHEET: &str = include_str!("assets/console.css");

/// The console's routes, with their security headers.
pub fn router(admin: Arc<Admin>, guard: Arc<Guard>) -> Router {
    let console = Arc::new(Console {
        admin,
        guard,
        sessions: Sessions::default(),
    });
    Router::new()
        .route("/console", get(queue::queue))
        .route("/console/", get(queue::queue))
        .route(
            "/console/login",
            get(session::login_form).post(session::login),
        )
        .route("/console/logout", post(session::logout))
        .route("/console/lang", get(i18n::switch))
        .route("/console/assets/console.css", get(stylesheet))
        .route("/console/filings/{id}", get(filing::show))
        .route(
            "/console/filings/{id}/reveal",
            get(filing::back_to_filing).post(filing::reveal),
        )
        .route(
            "/console/filings/{id}/{step}",
            get(filing::back_to_filing).post(filing::step),
        )
        .route("/console/check", get(check::form).post(check::run))
        .route("/console/check.csv", post(check::csv))
        .route("/console/traffic", get(traffic::traffic))
        .route("/console/search", get(search::search))
        .route("/console/{*rest}", get(not_found).post(not_found))
        .with_state(console)
        .layer(map_response(security_headers))
}

/// The headers of every console answer.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::REFERRER_POLICY, "no-referrer");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// Any other console path: the login without a session, else a 404 page.
async fn not_found(frame: Result<templates::Frame, Response>) -> Response {
    match frame {
        Ok(frame) => frame.error(StatusCode::NOT_FOUND, "not_found", ""),
        Err(_) => Redirect::to("/console/login").into_response(),
    }
}

/// A form body (`application/x-www-form-urlencoded`, at most `MAX_BODY` bytes),
/// or a 400 page naming what is wrong.
pub(crate) async fn read_form<T: DeserializeOwned>(request: Request) -> Result<T, Response> {
    let lang = Lang::of_headers(request.headers());
    let bad = |detail: String| {
        let content =
            minijinja::context! { message => lang.text("flash_bad_input"), detail => detail };
        (
            StatusCode::BAD_REQUEST,
            page(Page::Error, lang, None, content),
        )
            .into_response()
    };
    let body = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|e| bad(e.to_string()))?;
    serde_urlencoded::from_bytes(&body).map_err(|e| bad(e.to_string()))
}

/// The 403 of a form without the session's CSRF token.
pub(crate) fn csrf_refused(lang: Lang, staff: &Staff) -> Response {
    tracing::info!(
        actor = staff.actor,
        "console form refused: CSRF token missing or wrong"
    );
    let content = minijinja::context! { message => lang.text("csrf_refused"), detail => "" };
    (
        StatusCode::FORBIDDEN,
        page(Page::Error, lang, None, content),
    )
        .into_response()
}

/// `text` percent-encoded for a query value (RFC 3986 unreserved characters kept).
pub(crate) fn query_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        let cases = [
            // a plain path stays readable
            ("/console/filings/7", "/console/filings/7"),
            // a query's own separators are encoded
            ("/console/?page=2&x=1", "/console/%3Fpage%3D2%26x%3D1"),
            // UTF-8 bytes one by one
            (
                "/console/search?q=例子",
                "/console/search%3Fq%3D%E4%BE%8B%E5%AD%90",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(query_encode(text), want, "{text}");
        }
    }
}
