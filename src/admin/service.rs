//! The admin router as what the admin listener serves (`edge::listener::Serve`), so
//! admin connections go through the data plane's accept loop: its connection limit,
//! client deadlines and drain on SIGTERM.
//!
//! Before routing, a Host the listener does not answer is refused (`hosts`, 421),
//! the client's address is put on the request (for `throttle`), and empty path
//! segments are dropped (`/v1/filings/` and `/v1//filings` are `/v1/filings`); after
//! it, a refusal is logged by its code.

use std::future::Future;
use std::sync::Arc;

use axum::middleware::{from_fn_with_state, map_response};
use axum::Router;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use tower::ServiceExt;

use crate::admin::error::Refusal;
use crate::admin::hosts::{only_known_hosts, AdminHosts};
use crate::admin::{nosniff, router, Admin};
use crate::edge::conn::ConnInfo;
use crate::edge::listener::Serve;
use crate::edge::proxy_body::{boxed, ProxyBody};

/// The admin API, ready for a listener.
pub struct AdminService {
    router: Router,
}

impl AdminService {
    /// The admin API for the listener bound to `listen`.
    pub fn new(admin: Arc<Admin>, listen: std::net::SocketAddr) -> AdminService {
        let hosts = Arc::new(AdminHosts {
            listen,
            gate: Arc::clone(&admin.gate),
        });
        let router = router(admin)
            .layer(from_fn_with_state(hosts, only_known_hosts))
            .layer(map_response(nosniff));
        AdminService { router }
    }
}

impl Serve for AdminService {
    fn call(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send {
        request.extensions_mut().insert(conn.client);
        if conn.tls.is_some() {
            request
                .extensions_mut()
                .insert(crate::admin::console::ServedOverTls);
        }
        if let Some(uri) = without_empty_segments(request.uri()) {
            *request.uri_mut() = uri;
        }
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let router = self.router.clone();
        async move {
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if let Some(Refusal(code)) = response.extensions().get::<Refusal>() {
                tracing::debug!(%method, %path, error = code, "admin request refused");
            }
            response.map(boxed)
        }
    }
}

/// `uri` with its path's empty segments dropped, or None when it has none.
fn without_empty_segments(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let mut canonical = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        canonical.push('/');
        canonical.push_str(segment);
    }
    if canonical.is_empty() {
        canonical.push('/');
    }
    if canonical == path {
        return None;
    }
    let with_query = match uri.query() {
        Some(query) => format!("{canonical}?{query}"),
        None => canonical,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(with_query).ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_segments_are_dropped() {
        let cases = [
            ("/v1/filings/", Some("/v1/filings")),
            ("/v1//filings?domain=a.cn", Some("/v1/filings?domain=a.cn")),
            ("//", Some("/")),
            (
                "http://admin/v1/filings/7/",
                Some("http://admin/v1/filings/7"),
            ),
            ("/v1/filings", None),
            ("/", None),
        ];
        for (input, want) in cases {
            let uri: Uri = input.parse().expect("uri");
            let got = without_empty_segments(&uri).map(|u| u.to_string());
            assert_eq!(got.as_deref(), want, "{input}");
        }
    }
}
