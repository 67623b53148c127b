//! The review console as a browser without script sees it: form posts and pages
//! over real sockets, one session cookie, and the CSRF token read off a page.

use std::net::SocketAddr;

use super::client::{http1, Reply};

/// A signed-in (or not yet) console session on one admin listener.
pub struct ConsoleClient {
    pub admin: SocketAddr,
    /// `name=value` of the session cookie, once signed in.
    pub cookie: Option<String>,
    /// Extra headers every request carries (e.g. `accept-language`).
    pub headers: Vec<(String, String)>,
}

/// `pairs` as `application/x-www-form-urlencoded`.
pub fn form_body(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of the first `csrf` field of a page.
pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\"")?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let value = tag.split("value=\"").nth(1)?;
    Some(value.split('"').next()?.to_string())
}

impl ConsoleClient {
    pub fn new(admin: SocketAddr) -> ConsoleClient {
        ConsoleClient {
            admin,
            cookie: None,
            headers: Vec::new(),
        }
    }

    fn request_headers<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut headers = vec![("host", "127.0.0.1")];
        if let Some(cookie) = &self.cookie {
            headers.push(("cookie", cookie.as_str()));
        }
        headers.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        headers.extend_from_slice(extra);
        headers
    }

    pub async fn get(&self, path: &str) -> Reply {
        http1(self.admin, "GET", path, &self.request_headers(&[]), b"").await
    }

    pub async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> Reply {
        let body = form_body(pairs);
        let headers =
            self.request_headers(&[("content-type", "application/x-www-form-urlencoded")]);
        http1(self.admin, "POST", path, &headers, body.as_bytes()).await
    }

    /// Sign in with `token`; the reply (303 with the cookie on success, kept).
    pub async fn sign_in(&mut self, token: &str) -> Reply {
        let reply = self.post("/console/login", &[("token", token)]).await;
        if let Some(cookie) = set_cookie(&reply, "icpgate_console") {
            self.cookie = Some(cookie);
        }
        reply
    }

    /// The CSRF token of the page at `path`.
    pub async fn csrf(&self, path: &str) -> String {
        let page = self.get(path).await;
        csrf_of(&page.text()).unwrap_or_else(|| panic!("no csrf field on {path}: {}", page.text()))
    }
}

/// `name=value` of the `Set-Cookie` for `name`, if the reply sets it.
pub fn set_cookie(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .find(|pair| pair.starts_with(&format!("{name}=")))
}

/// The whole `Set-Cookie` line for `name`.
pub fn set_cookie_line(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}
