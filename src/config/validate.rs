//! `Config::validate`: the rules a single key's type cannot express (keys that need
//! each other, ranges, URLs, server addresses). Returns the first problem, by key;
//! `Config::from_toml_str` ties it to the file and line.

use std::time::Duration;

use super::{
    AcmeChallenge, Backend, Config, Pool, BLOCK_STATUSES, MAX_WORKER_THREADS, MIN_HEADER_BYTES,
};
use crate::model::filing::Product;

/// A validation failure before it is tied to a file.
#[derive(Debug)]
pub(super) struct Problem {
    pub(super) key: String,
    pub(super) message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Rules a single key's type cannot express. Returns the first problem found.
    pub(super) fn validate(&self) -> Result<(), Problem> {
        self.validate_listen()?;
        self.validate_registry()?;
        self.validate_policy()?;
        for name in Product::ALL {
            validate_pool(name, self.upstreams.pool(name))?;
        }
        self.validate_limits()?;
        self.validate_misc()
    }

    fn validate_listen(&self) -> Result<(), Problem> {
        if self.listen.http.is_none() && self.listen.https.is_none() {
            return Err(problem(
                "listen",
                "at least one of listen.http and listen.https must be set",
            ));
        }
        if self.listen.https.is_some() && self.tls.certs_dir.is_none() {
            return Err(problem(
                "tls.certs_dir",
                "required when listen.https is set",
            ));
        }
        if self.tls.ticket_key_file.is_some() && self.listen.https.is_none() {
            return Err(problem(
                "tls.ticket_key_file",
                "set but listen.https is not: tickets are issued there",
            ));
        }
        if !self.listen.proxy_protocol_from.is_empty() && !self.listen.proxy_protocol {
            return Err(problem(
                "listen.proxy_protocol_from",
                "only applies with listen.proxy_protocol = true",
            ));
        }
        Ok(())
    }

    fn validate_registry(&self) -> Result<(), Problem> {
        let r = &self.registry;
        match r.backend {
            Backend::Postgres if r.url.as_deref().is_none_or(|u| u.trim().is_empty()) => {
                Err(problem(
                    "registry.url",
                    "required when registry.backend = \"postgres\"",
                ))
            }
            Backend::Sqlite if r.path.as_os_str().is_empty() => {
                Err(problem("registry.path", "must not be empty"))
            }
            _ => Ok(()),
        }
    }

    fn validate_policy(&self) -> Result<(), Problem> {
        let p = &self.policy;
        if !BLOCK_STATUSES.contains(&p.block_status) {
            return Err(problem(
                "policy.block_status",
                format!("{} refused: must be 451, 403 or 404", p.block_status),
            ));
        }
        if p.operator.trim().is_empty() {
            return Err(problem("policy.operator", "must not be empty"));
        }
        check_http_url("policy.operator_url", &p.operator_url)
    }

    fn validate_limits(&self) -> Result<(), Problem> {
        let l = &self.limits;
        let positive = [
            (
                "limits.header_read_timeout",
                l.header_read_timeout.is_zero(),
            ),
            ("limits.idle_timeout", l.idle_timeout.is_zero()),
            ("limits.upstream_timeout", l.upstream_timeout.is_zero()),
            (
                "limits.upstream_connect_timeout",
                l.upstream_connect_timeout.is_zero(),
            ),
            ("limits.max_connections", l.max_connections == 0),
            ("limits.max_body_bytes", l.max_body_bytes == 0),
            (
                "limits.h2_max_concurrent_streams",
                l.h2_max_concurrent_streams == 0,
            ),
            (
                "limits.h2_max_resets_per_second",
                l.h2_max_resets_per_second == 0,
            ),
            ("limits.worker_threads", l.worker_threads == Some(0)),
        ];
        if let Some((key, _)) = positive.into_iter().find(|(_, zero)| *zero) {
            return Err(problem(key, "must be greater than zero"));
        }
        if let Some(threads) = l.worker_threads.filter(|&n| n > MAX_WORKER_THREADS) {
            return Err(problem(
                "limits.worker_threads",
                format!("{threads} is too many: at most {MAX_WORKER_THREADS}"),
            ));
        }
        if l.max_header_bytes < MIN_HEADER_BYTES {
            return Err(problem(
                "limits.max_header_bytes",
                format!(
                    "{} is too small: at least {MIN_HEADER_BYTES}",
                    l.max_header_bytes
                ),
            ));
        }
        Ok(())
    }

    fn validate_misc(&self) -> Result<(), Problem> {
        let token_env = &self.admin.token_env;
        if token_env.is_empty() || token_env.contains(['=', '\0']) {
            return Err(problem(
                "admin.token_env",
                "must be an environment variable name",
            ));
        }
        self.validate_admin()?;
        if self.log.level.trim().is_empty() {
            return Err(problem("log.level", "must not be empty"));
        }
        if let Some(bad) = self.dns.cname_targets.iter().find(|t| !is_plain_name(t)) {
            return Err(problem(
                "dns.cname_targets",
                format!("{bad:?} is not a host name"),
            ));
        }
        self.validate_notify()?;
        self.validate_acme()
    }

    fn validate_admin(&self) -> Result<(), Problem> {
        for host in &self.admin.hosts {
            let name = host.trim();
            let bare = name
                .strip_prefix('[')
                .and_then(|v6| v6.strip_suffix(']'))
                .unwrap_or(name);
            if bare.parse::<std::net::IpAddr>().is_err() && !is_plain_name(bare) {
                return Err(problem(
                    "admin.hosts",
                    format!(
                        "{:?} is not a host name or IP address (no scheme, port or path)",
                        redact_url(host)
                    ),
                ));
            }
        }
        self.validate_console()
    }

    /// The review console's keys: a session lasts between a minute and a week (a
    /// stolen cookie must not live for ever); the Grafana link is an http(s) URL.
    fn validate_console(&self) -> Result<(), Problem> {
        let ttl = self.admin.session_ttl;
        if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(7 * 86_400) {
            return Err(problem("admin.session_ttl", "must be between 1m and 7days"));
        }
        match &self.admin.grafana_url {
            Some(url) => check_http_url("admin.grafana_url", url),
            None => Ok(()),
        }
    }

    fn validate_notify(&self) -> Result<(), Problem> {
        match (&self.notify.url, &self.notify.secret) {
            (Some(url), _) => check_http_url("notify.url", url),
            (None, Some(_)) => Err(problem("notify.secret", "set but notify.url is not")),
            (None, None) if self.notify.ca_file.is_some() => {
                Err(problem("notify.ca_file", "set but notify.url is not"))
            }
            (None, None) => Ok(()),
        }
    }
}

impl Config {
    /// `[acme]`: a directory URL turns it on; it needs the listener its challenge
    /// is answered on, and every other key needs the directory.
    fn validate_acme(&self) -> Result<(), Problem> {
        let a = &self.acme;
        let Some(directory) = &a.directory else {
            let stray = [
                ("acme.ca_file", a.ca_file.is_some()),
                ("acme.email", a.email.is_some()),
                ("acme.storage", a.storage.is_some()),
                ("acme.storage_key_file", a.storage_key_file.is_some()),
            ];
            return match stray.into_iter().find(|(_, set)| *set) {
                Some((key, _)) => Err(problem(key, "set but acme.directory is not")),
                None => Ok(()),
            };
        };
        check_http_url("acme.directory", directory)?;
        if self.listen.https.is_none() {
            return Err(problem(
                "acme.directory",
                "needs listen.https: certificates are served there",
            ));
        }
        if a.challenge == AcmeChallenge::Http01 && self.listen.http.is_none() {
            return Err(problem(
                "acme.challenge",
                "\"http-01\" needs listen.http: the CA asks there",
            ));
        }
        if let Some(email) = &a.email {
            let well_formed = email.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && is_plain_name(host) && !email.contains(char::is_whitespace)
            });
            if !well_formed {
                return Err(problem(
                    "acme.email",
                    format!("{email:?} is not an email address"),
                ));
            }
        }
        if a.in_registry() && self.registry.backend != Backend::Postgres {
            return Err(problem(
                "acme.storage",
                "\"registry\" needs registry.backend = \"postgres\" (a fleet's shared registry)",
            ));
        }
        if a.storage_key_env.is_empty() || a.storage_key_env.contains(['=', '\0']) {
            return Err(problem(
                "acme.storage_key_env",
                "must be an environment variable name",
            ));
        }
        if a.renew_before.is_zero() {
            return Err(problem("acme.renew_before", "must be greater than zero"));
        }
        if a.max_orders_per_hour == 0 {
            return Err(problem(
                "acme.max_orders_per_hour",
                "must be greater than zero",
            ));
        }
        // A hello held longer than a client waits only holds a connection open.
        if a.order_timeout.is_zero() || a.order_timeout > Duration::from_secs(300) {
            return Err(problem(
                "acme.order_timeout",
                "must be greater than zero and at most 5m",
            ));
        }
        Ok(())
    }
}

fn validate_pool(name: Product, pool: &Pool) -> Result<(), Problem> {
    let key = |field: &str| format!("upstreams.{}.{field}", name.as_str());
    for server in &pool.servers {
        check_server(server).map_err(|m| problem(key("servers"), m))?;
    }
    if pool.ca_file.is_some() && !pool.tls {
        return Err(problem(key("ca_file"), "set but tls = false"));
    }
    Ok(())
}

/// `"host:port"`: a non-empty host (IPv6 in brackets) and a port 1..=65535.
fn check_server(server: &str) -> Result<(), String> {
    let bad = |why: &str| format!("{:?} is not host:port: {why}", redact_url(server));
    let (host, port) = server.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad("port must be 1..=65535")),
    }
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => is_plain_name(host),
    };
    if host_ok {
        Ok(())
    } else {
        Err(bad("bad host"))
    }
}

/// A non-empty name or IPv4 literal: no spaces, colons, slashes or brackets.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, ':' | '/' | '[' | ']' | '@' | '?' | '#'))
}

fn check_http_url(key: &str, url: &str) -> Result<(), Problem> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(()),
        _ => Err(problem(
            key,
            format!("{:?} is not an http(s) URL", redact_url(url)),
        )),
    }
}

/// `url` with the credentials of its authority shown as `***`
/// (`postgres://user:pass@db/x` → `postgres://***@db/x`), for messages and logs. The
/// authority ends at the first `/`, `?` or `#` after the scheme; its userinfo at its
/// last `@`. Anything without an `@` there is returned as it is.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &rest[at..]),
        None => url.to_string(),
    }
}
