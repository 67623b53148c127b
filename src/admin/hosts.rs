//! The Host names the admin listener answers, against DNS rebinding: a page on
//! `evil.example` whose name is made to resolve to 127.0.0.1 reaches the listener
//! with `Host: evil.example`, and is refused (421 `misdirected_host`).
//!
//! Answered: `localhost`, `127.0.0.1`, `::1`, the listen address (when it listens on
//! `0.0.0.0` or `::`, any IP literal: its own addresses are all of them, and no DNS
//! name can rebind to a literal), and the names of `admin.hosts` (read from the
//! running config, so a reload applies them). Names are compared without their port,
//! case-insensitively and without one trailing dot: port-forwards and proxies change
//! ports, and the port is not what rebinding changes. A request with no Host at all
//! is refused the same way.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header;

use crate::admin::error::AdminError;
use crate::edge::proxy::Gate;

/// Names every admin listener answers.
const ALWAYS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The Host names one admin listener answers.
pub struct AdminHosts {
    /// The address the listener is bound to.
    pub listen: SocketAddr,
    /// Its running config holds `admin.hosts`.
    pub gate: Arc<Gate>,
}

impl AdminHosts {
    /// Whether a request naming `authority` (`host[:port]`) is answered.
    pub fn answers(&self, authority: &str) -> bool {
        let Some(name) = host_of(authority) else {
            return false;
        };
        if ALWAYS.contains(&name.as_str()) {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            let own = self.listen.ip();
            if own.is_unspecified() || ip.to_canonical() == own.to_canonical() {
                return true;
            }
        }
        let runtime = self.gate.current();
        let listed = &runtime.config.admin.hosts;
        listed
            .iter()
            .any(|entry| host_of(entry).as_deref() == Some(name.as_str()))
    }
}

/// The layer: refuse a request whose Host this listener does not answer.
pub async fn only_known_hosts(
    State(hosts): State<Arc<AdminHosts>>,
    request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if !hosts.answers(&authority) {
        let shown: String = authority.chars().take(255).collect();
        return Err(AdminError::MisdirectedHost(shown));
    }
    Ok(next.run(request).await)
}

/// The name of `host[:port]`, `[v6][:port]` or a bare IPv6 literal: lowercase,
/// without brackets, port or one trailing dot; None when empty.
fn host_of(authority: &str) -> Option<String> {
    let authority = authority.trim();
    let name = if let Some(rest) = authority.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(v6, _)| v6)
    } else if authority.matches(':').count() == 1 {
        authority
            .split_once(':')
            .map_or(authority, |(host, _)| host)
    } else {
        authority
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_port_brackets_case_and_one_trailing_dot() {
        let cases = [
            ("127.0.0.1:9090", Some("127.0.0.1")),
            ("LocalHost.", Some("localhost")),
            ("localhost:1", Some("localhost")),
            ("[::1]:9090", Some("::1")),
            ("[::1]", Some("::1")),
            ("::1", Some("::1")),
            ("admin.example:443", Some("admin.example")),
            ("", None),
            (":9090", None),
        ];
        for (authority, want) in cases {
            assert_eq!(host_of(authority).as_deref(), want, "{authority:?}");
        }
    }
}
