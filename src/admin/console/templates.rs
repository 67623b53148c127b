//! The console's HTML: minijinja templates compiled into the binary
//! (`include_str!`, no build step), auto-escaped, and what every page shares — the
//! catalog `t` of its language, the signed-in actor, the session's CSRF token for
//! its forms, the flash message and the path the language link returns to
//! ([`Frame`]).

use std::sync::{Arc, OnceLock};

use axum::extract::FromRequestParts;
use axum::response::{Html, IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;
use minijinja::{context, Environment, Value};

use crate::admin::console::i18n::Lang;
use crate::admin::console::session::{Flash, Staff};
use crate::admin::console::Console;

/// The templates, by file name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("queue.html", include_str!("templates/queue.html")),
    ("filing.html", include_str!("templates/filing.html")),
    ("check.html", include_str!("templates/check.html")),
    ("traffic.html", include_str!("templates/traffic.html")),
    ("search.html", include_str!("templates/search.html")),
    ("error.html", include_str!("templates/error.html")),
];

/// A page of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Login,
    Queue,
    Filing,
    Check,
    Traffic,
    Search,
    Error,
}

impl Page {
    fn template(self) -> &'static str {
        match self {
            Page::Login => "login.html",
            Page::Queue => "queue.html",
            Page::Filing => "filing.html",
            Page::Check => "check.html",
            Page::Traffic => "traffic.html",
            Page::Search => "search.html",
            Page::Error => "error.html",
        }
    }
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            // The templates are part of the binary: a syntax error is caught by the
            // test that renders every page, never in production.
            if let Err(error) = env.add_template(name, source) {
                tracing::error!(template = name, %error, "console template does not compile");
            }
        }
        env
    })
}

/// What a signed-in page shows around its content.
#[derive(Debug, Clone)]
pub struct Frame {
    pub staff: Staff,
    pub lang: Lang,
    pub flash: Option<Flash>,
    /// The path and query of this page, for the language link.
    pub here: String,
}

impl FromRequestParts<Arc<Console>> for Frame {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Frame, Response> {
        let staff = Staff::from_request_parts(parts, console).await?;
        let lang = Lang::of_headers(&parts.headers);
        let flash = console.sessions.take_flash(&staff.id);
        let here = parts
            .uri
            .path_and_query()
            .map_or("/console/", |p| p.as_str())
            .to_string();
        Ok(Frame {
            staff,
            lang,
            flash,
            here,
        })
    }
}

impl Frame {
    /// This page with `content`.
    pub fn render(&self, which: Page, content: Value) -> Response {
        page(which, self.lang, Some(self), content).into_response()
    }

    /// An error page (`key` from the catalog, then `detail`) with `status`.
    pub fn error(&self, status: StatusCode, key: &str, detail: &str) -> Response {
        let content = context! { message => self.lang.text(key), detail => detail };
        (status, page(Page::Error, self.lang, Some(self), content)).into_response()
    }
}

/// Render `which` in `lang`; signed-in pages pass their frame.
pub fn page(which: Page, lang: Lang, frame: Option<&Frame>, content: Value) -> Response {
    let flash = frame.and_then(|f| f.flash.as_ref()).map(|f| {
        context! { ok => f.ok, text => lang.text(f.key), detail => f.detail.clone() }
    });
    let here = frame.map_or("/console/login", |f| f.here.as_str());
    let shared = context! {
        t => lang.table(),
        lang => lang.code(),
        html_lang => lang.html_lang(),
        other_lang => lang.other().code(),
        other_lang_name => lang.other().text("lang_name"),
        back_encoded => super::query_encode(here),
        actor => frame.map(|f| f.staff.actor.clone()),
        csrf => frame.map(|f| f.staff.csrf.clone()),
        flash => flash,
    };
    let rendered = environment()
        .get_template(which.template())
        .and_then(|t| t.render(context! { ..content, ..shared }));
    match rendered {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(page = which.template(), %error, "console page failed to render");
            plain_error(StatusCode::INTERNAL_SERVER_ERROR, lang, "render_failed")
        }
    }
}

/// A plain-text error in `lang`, for when no page can be rendered.
pub fn plain_error(status: StatusCode, lang: Lang, key: &str) -> Response {
    let headers = [(http::header::CONTENT_LANGUAGE, lang.html_lang())];
    (status, headers, format!("{}\n", lang.text(key))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::console::i18n::CATALOG;

    #[test]
    fn every_template_compiles() {
        let env = environment();
        for (name, _) in TEMPLATES {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
    }

    /// Every `t.key` a template names is in the catalog: no page shows a "?".
    #[test]
    fn every_text_a_template_names_is_in_the_catalog() {
        for (name, source) in TEMPLATES {
            for (at, _) in source.match_indices("t.") {
                let before = source[..at].chars().last().unwrap_or(' ');
                if before.is_alphanumeric() || before == '_' || before == '.' {
                    continue;
                }
                let key: String = source[at + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    CATALOG.iter().any(|(k, _, _)| *k == key),
                    "{name}: t.{key} is not in the catalog"
                );
            }
        }
    }

    /// The answers given when no page can be rendered are in the reader's language.
    #[test]
    fn plain_errors_are_in_both_languages() {
        let cases = [
            (Lang::En, "render_failed", "failed to render"),
            (Lang::Zh, "render_failed", "渲染失败"),
            (Lang::En, "session_failed", "No session could be opened"),
            (Lang::Zh, "session_failed", "无法创建会话"),
        ];
        for (lang, key, words) in cases {
            let response = plain_error(StatusCode::SERVICE_UNAVAILABLE, lang, key);
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()["content-language"], lang.html_lang());
            let body = futures_util::FutureExt::now_or_never(axum::body::to_bytes(
                response.into_body(),
                1 << 20,
            ))
            .and_then(Result::ok)
            .unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains(words), "{key} in {lang:?}: {text}");
        }
    }

    #[test]
    fn the_login_page_renders_in_both_languages() {
        for (lang, word) in [(Lang::En, "Sign in"), (Lang::Zh, "登录")] {
            let response = page(Page::Login, lang, None, context! {});
            assert_eq!(response.status(), StatusCode::OK);
            let body = futures_util::FutureExt::now_or_never(axum::body::to_bytes(
                response.into_body(),
                1 << 20,
            ))
            .and_then(Result::ok)
            .unwrap_or_default();
            let html = String::from_utf8_lossy(&body);
            assert!(html.contains(word), "{html}");
            assert!(html.contains("name=\"token\""), "{html}");
        }
    }
}
