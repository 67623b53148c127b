//! Who is signed in to the console, and that every POST comes from its own forms.
//!
//! A sign-in (`POST /console/login`) presents an admin token in the form field
//! `token`; a valid one opens a session: a random 256-bit id in the cookie
//! [`SESSION_COOKIE`] (`HttpOnly`, `SameSite=Strict`, `Path=/console`, `Secure` over
//! TLS, `Max-Age` = `admin.session_ttl`), kept in this process with its actor (the
//! named token's name, else "admin"), its expiry, its CSRF token and at most one
//! flash message. A wrong token counts as a failed authentication of the admin API
//! (the same per-address limit, `throttle`) and is answered after a short pause.
//!
//! [`Staff`] is the extractor of every console page: without a live session it
//! answers 303 to the login page. [`Staff::check_csrf`] refuses a form whose `csrf`
//! field is missing or not the session's (403). The sign-in form itself carries no
//! CSRF token: what it posts is a secret the attacker would need already.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::request::Parts;
use http::{header, HeaderValue, StatusCode};
use serde::Deserialize;

use crate::admin::console::i18n::{cookie, Lang};
use crate::admin::console::templates::{page, plain_error, Page};
use crate::admin::console::{Console, ServedOverTls};
use crate::admin::privacy::Grants;
use crate::admin::tokens::{constant_time_eq, Caller};
use crate::edge::conn::ClientAddr;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "icpgate_console";
/// Sessions held at once; past that the one closest to expiry is dropped.
const MAX_SESSIONS: usize = 10_000;
/// The pause before a wrong token's answer.
const FAILURE_PAUSE: Duration = Duration::from_millis(300);

/// A one-shot message shown on the next page: a catalog key and a detail (the
/// API's message for a refused step, in English like the API's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub ok: bool,
    pub key: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone)]
struct Session {
    actor: String,
    /// What the signed-in token allows (a reveal needs `reveal`).
    grants: Grants,
    csrf: String,
    expires: Instant,
    flash: Option<Flash>,
}

/// The open sessions of this process.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Open a session for `actor` lasting `ttl`; its id (None: the operating
    /// system's random generator failed, and no guessable id is ever issued).
    fn open(&self, actor: String, grants: Grants, ttl: Duration) -> Option<String> {
        let id = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut open = self.lock();
        open.retain(|_, s| s.expires > now);
        if open.len() >= MAX_SESSIONS {
            let first = open
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            if let Some(first) = first {
                open.remove(&first);
            }
        }
        let session = Session {
            actor,
            grants,
            csrf,
            expires: now + ttl,
            flash: None,
        };
        open.insert(id.clone(), session);
        Some(id)
    }

    fn find(&self, id: &str) -> Option<Session> {
        let mut open = self.lock();
        match open.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                open.remove(id);
                None
            }
            None => None,
        }
    }

    fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Leave a message for the session's next page.
    pub fn flash(&self, id: &str, flash: Flash) {
        if let Some(session) = self.lock().get_mut(id) {
            session.flash = Some(flash);
        }
    }

    /// The message left for this page, once.
    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.lock().get_mut(id).and_then(|s| s.flash.take())
    }
}

/// 32 random bytes from the operating system as 64 hex digits.
fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A signed-in member of staff, on every console page.
#[derive(Debug, Clone)]
pub struct Staff {
    /// The session id (its cookie's value).
    pub id: String,
    pub actor: String,
    pub grants: Grants,
    pub csrf: String,
}

impl Staff {
    /// Whether a form's `csrf` field is this session's token.
    pub fn csrf_ok(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| constant_time_eq(p.as_bytes(), self.csrf.as_bytes()))
    }
}

impl FromRequestParts<Arc<Console>> for Staff {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Staff, Response> {
        let id = cookie(&parts.headers, SESSION_COOKIE).unwrap_or_default();
        match console.sessions.find(&id) {
            Some(session) => Ok(Staff {
                id,
                actor: session.actor,
                grants: session.grants,
                csrf: session.csrf,
            }),
            None => Err(Redirect::to("/console/login").into_response()),
        }
    }
}

/// `GET /console/login`.
pub async fn login_form(lang: Lang) -> Response {
    login_page(lang, StatusCode::OK, None)
}

fn login_page(lang: Lang, status: StatusCode, error: Option<String>) -> Response {
    let context = minijinja::context! { error => error };
    (status, page(Page::Login, lang, None, context)).into_response()
}

/// The sign-in form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /console/login`: 303 to the queue with a session cookie, or the form again.
pub async fn login(State(console): State<Arc<Console>>, lang: Lang, request: Request) -> Response {
    let client = request
        .extensions()
        .get::<ClientAddr>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), ClientAddr::ip);
    let tls = request.extensions().get::<ServedOverTls>().is_some();
    let now = Instant::now();
    let failures = &console.guard.failures;
    if let Some(seconds) = failures.blocked(client, now) {
        let message = format!("{} {seconds}", lang.text("login_throttled"));
        return login_page(lang, StatusCode::TOO_MANY_REQUESTS, Some(message));
    }
    let form: LoginForm = match super::read_form(request).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let tokens = &console.admin.token;
    if !tokens.is_configured() {
        let message = lang.text("login_no_token").to_string();
        return login_page(lang, StatusCode::FORBIDDEN, Some(message));
    }
    let Some(caller) = tokens.caller(form.token.trim()) else {
        failures.record(client, now);
        console.admin.gate.state.metrics.admin_auth_failures.inc();
        tokio::time::sleep(FAILURE_PAUSE).await;
        let message = lang.text("login_wrong").to_string();
        return login_page(lang, StatusCode::UNAUTHORIZED, Some(message));
    };
    let grants = Grants {
        reveal: tokens.may_reveal(&caller),
    };
    let actor = match caller {
        Caller::Named(name) => name,
        Caller::Shared => "admin".to_string(),
    };
    let ttl = console.admin.gate.current().config.admin.session_ttl;
    let Some(id) = console.sessions.open(actor.clone(), grants, ttl) else {
        tracing::error!("console sign-in refused: the random generator failed");
        return plain_error(StatusCode::SERVICE_UNAVAILABLE, lang, "session_failed");
    };
    tracing::info!(target: "icpgate::audit", actor, action = "console_login", "console sign-in");
    let mut response = Redirect::to("/console/").into_response();
    set_cookie(&mut response, &session_cookie(&id, ttl, tls));
    response
}

/// The session cookie's `Set-Cookie` value.
fn session_cookie(id: &str, ttl: Duration, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        ttl.as_secs()
    )
}

fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The logout form's fields.
#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

/// `POST /console/logout`: end the session, clear the cookie, back to the login.
pub async fn logout(
    State(console): State<Arc<Console>>,
    staff: Staff,
    lang: Lang,
    request: Request,
) -> Response {
    let form: CsrfOnly = match super::read_form(request).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    if !staff.csrf_ok(form.csrf.as_deref()) {
        return super::csrf_refused(lang, &staff);
    }
    console.sessions.close(&staff.id);
    tracing::info!(target: "icpgate::audit", actor = staff.actor, action = "console_logout", "console sign-out");
    let mut response = Redirect::to("/console/login").into_response();
    set_cookie(
        &mut response,
        &format!("{SESSION_COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_its_expiry_and_ends_on_close() {
        let sessions = Sessions::default();
        let id = sessions
            .open("alice".into(), Grants::default(), Duration::from_secs(60))
            .expect("a session");
        assert_eq!(id.len(), 64);
        assert_eq!(sessions.find(&id).map(|s| s.actor), Some("alice".into()));
        assert!(sessions.find("forged").is_none());
        sessions.flash(
            &id,
            Flash {
                ok: true,
                key: "flash_done",
                detail: "x".into(),
            },
        );
        assert!(sessions.take_flash(&id).is_some());
        assert!(sessions.take_flash(&id).is_none(), "a flash shows once");
        sessions.close(&id);
        assert!(sessions.find(&id).is_none());
        let gone = sessions
            .open("bob".into(), Grants::default(), Duration::ZERO)
            .expect("a session");
        assert!(sessions.find(&gone).is_none(), "expired at once");
    }

    #[test]
    fn the_cookie_is_http_only_strict_scoped_and_secure_over_tls() {
        let plain = session_cookie("abc", Duration::from_secs(8 * 3600), false);
        assert_eq!(
            plain,
            "icpgate_console=abc; Path=/console; HttpOnly; SameSite=Strict; Max-Age=28800"
        );
        let tls = session_cookie("abc", Duration::from_secs(60), true);
        assert!(tls.ends_with("; Max-Age=60; Secure"), "{tls}");
    }

    #[test]
    fn only_the_sessions_csrf_token_passes() {
        let staff = Staff {
            id: "s".into(),
            actor: "a".into(),
            grants: Grants::default(),
            csrf: "right".into(),
        };
        assert!(staff.csrf_ok(Some("right")));
        assert!(!staff.csrf_ok(Some("wrong")));
        assert!(!staff.csrf_ok(Some("")));
        assert!(!staff.csrf_ok(None));
    }
}
