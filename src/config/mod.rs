//! Configuration: turns the TOML file into a validated [`Config`], or an error
//! that names the file, the line and the key at fault.
//!
//! Loading runs in three steps: TOML syntax, then the serde shape (every section
//! is `deny_unknown_fields` with defaults, so a misspelt key is an error, never
//! silently ignored), then `Config::validate` for rules that span keys.
//! `icpgate config check` prints the first problem, e.g.
//! ``config/icpgate.toml:5:1: unknown field `blok_status` in [policy], expected one of ...``.
//!
//! Durations are strings in humantime syntax: `"500ms"`, `"60s"`, `"1m"`, `"1h 30m"`.
//! Relative paths (`registry.path`, `registry.seed`, `tls.certs_dir`,
//! `upstreams.*.ca_file`) are kept as written and resolve against the process's
//! working directory, not against the config file's directory.
//!
//! Every key, with its default:
//!
//! ```toml
//! [listen]
//! http = "127.0.0.1:8080"        # plain-HTTP listener; "" disables it
//! https = ""                     # TLS listener, off by default; needs tls.certs_dir
//! admin = "127.0.0.1:9090"       # admin API, metrics, health; "" disables it
//! proxy_protocol = false         # require a PROXY v1/v2 header on every connection
//! proxy_protocol_from = []       # CIDRs or IPs allowed to send it; [] = any peer
//! trusted_proxies = []           # CIDRs or IPs whose X-Forwarded-For/PROXY we believe
//!
//! [registry]
//! backend = "sqlite"             # "sqlite" | "postgres"
//! path = "data/icpgate.db"       # sqlite file
//! # url = "postgres://..."       # required when backend = "postgres"
//! # seed = "filings.jsonl"       # JSON Lines imported at start-up
//!
//! [cache]
//! ttl = "60s"                    # how long an answer is cached; "0s" disables caching
//! negative_ttl = "5s"            # the same for "no filing" answers
//! max_entries = 100000
//! stale_if_error = "300s"        # serve a cached answer this long past its ttl
//!                                # while the registry is unreachable
//!
//! [policy]
//! mode = "enforce"               # "enforce" | "report-only" (log would_block, forward)
//! on_registry_error = "deny"     # "deny" | "allow" when the registry is down
//! block_status = 451             # 451, 403 or 404
//! access_existing_after_initial_review = false
//! default_pool = "storefront"    # "storefront" | "corporate_site"
//! operator = "icpgate"           # who blocks: named in the block page and Link header
//! operator_url = "https://beian.miit.gov.cn/"   # Link: <...>; rel="blocked-by"
//!
//! [upstreams.storefront]         # and [upstreams.corporate_site], same keys
//! servers = []                   # ["host:port", ...]
//! tls = false                    # speak TLS to the origin
//! # ca_file = "origin-ca.pem"    # trust roots for the origin; needs tls = true
//!
//! [tls]
//! # certs_dir = "certs"          # required when listen.https is set
//!
//! [admin]
//! token_env = "ICPGATE_ADMIN_TOKEN"   # env var holding the admin bearer token
//! # token_file = "/run/secrets/icpgate-admin-token"  # wins over token_env; re-read on reload
//! # tokens_file = "/etc/icpgate/admin-tokens"  # named tokens: "NAME SHA256" lines; the actor in history
//!
//! [dns]                          # for `icpgate check --dns`
//! access_ips = []                # our addresses a filed domain should resolve to
//! cname_targets = []             # or names it should CNAME to
//! nameservers = []               # "ip" or "ip:port"; empty = system resolver
//!
//! [log]
//! format = "text"                # "text" | "json"
//! level = "info"                 # EnvFilter directive; RUST_LOG overrides
//!
//! [limits]
//! header_read_timeout = "10s"
//! max_header_bytes = 65536       # at least 1024
//! max_connections = 10000
//! idle_timeout = "60s"
//! max_body_bytes = 10485760      # 10 MiB
//! upstream_timeout = "30s"
//! upstream_connect_timeout = "5s"
//! drain_timeout = "30s"          # graceful shutdown budget
//!
//! [notify]                       # webhook on filing changes, off by default
//! # url = "https://..."
//! # secret = "..."               # HMAC key; needs url
//! # ca_file = "hook-ca.pem"      # extra trust root for an https receiver
//! ```
//!
//! On reload (SIGHUP) most settings apply at once;
//! [`Config::restart_required_changes`] names those that only take effect after a
//! restart.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: Listen,
    pub registry: RegistryConfig,
    pub cache: CacheConfig,
    pub policy: Policy,
    pub upstreams: Upstreams,
    pub tls: TlsConfig,
    pub admin: AdminConfig,
    pub dns: DnsConfig,
    pub log: LogConfig,
    pub limits: Limits,
    pub notify: NotifyConfig,
    /// The file this configuration was read from (for messages and reload).
    pub source: PathBuf,
}

/// `[listen]`: where the gate accepts connections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    #[serde(deserialize_with = "de_opt_addr")]
    pub http: Option<SocketAddr>,
    #[serde(deserialize_with = "de_opt_addr")]
    pub https: Option<SocketAddr>,
    #[serde(deserialize_with = "de_opt_addr")]
    pub admin: Option<SocketAddr>,
    /// Every connection on http/https starts with a PROXY protocol v1/v2 header.
    pub proxy_protocol: bool,
    /// The load balancers allowed to send a PROXY header; a connection from any
    /// other peer is closed unread. Empty: any peer (the port must be firewalled).
    pub proxy_protocol_from: Vec<IpNet>,
    /// Peers allowed to tell us the client address.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            http: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            https: None,
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            proxy_protocol: false,
            proxy_protocol_from: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Which store holds the filings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Sqlite,
    Postgres,
}

/// `[registry]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    pub backend: Backend,
    /// SQLite file (sqlite backend only).
    pub path: PathBuf,
    /// Connection string (postgres backend only, required there).
    pub url: Option<String>,
    /// JSON Lines of filings imported at start-up.
    pub seed: Option<PathBuf>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            backend: Backend::Sqlite,
            path: PathBuf::from("data/icpgate.db"),
            url: None,
            seed: None,
        }
    }
}

/// `[cache]`: the decision cache in front of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    #[serde(deserialize_with = "de_duration")]
    pub ttl: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub negative_ttl: Duration,
    pub max_entries: u64,
    /// How long a cached answer may be served past its ttl while the registry is
    /// unreachable.
    #[serde(deserialize_with = "de_duration")]
    pub stale_if_error: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            max_entries: 100_000,
            stale_if_error: Duration::from_secs(300),
        }
    }
}

/// Whether a block is enforced or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Enforce,
    ReportOnly,
}

/// What to do when the registry cannot answer and nothing usable is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRegistryError {
    #[default]
    Deny,
    Allow,
}

/// `[policy]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub mode: Mode,
    pub on_registry_error: OnRegistryError,
    /// Status of a block response: 451, 403 or 404.
    pub block_status: u16,
    pub access_existing_after_initial_review: bool,
    /// Pool for hosts whose filing names none.
    pub default_pool: PoolName,
    /// Who blocks, for the `Link: rel="blocked-by"` header and the page.
    pub operator: String,
    /// The `Link` target.
    pub operator_url: String,
}

/// Status codes `policy.block_status` may take.
pub const BLOCK_STATUSES: [u16; 3] = [403, 404, 451];

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mode: Mode::Enforce,
            on_registry_error: OnRegistryError::Deny,
            block_status: 451,
            access_existing_after_initial_review: false,
            default_pool: PoolName::Storefront,
            operator: "icpgate".to_owned(),
            operator_url: "https://beian.miit.gov.cn/".to_owned(),
        }
    }
}

/// The upstream pools, one per product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolName {
    #[default]
    Storefront,
    CorporateSite,
}

impl PoolName {
    pub const ALL: [PoolName; 2] = [PoolName::Storefront, PoolName::CorporateSite];

    /// The name as written in the config and in the `pool` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolName::Storefront => "storefront",
            PoolName::CorporateSite => "corporate_site",
        }
    }
}

/// `[upstreams.storefront]` and `[upstreams.corporate_site]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstreams {
    pub storefront: Pool,
    pub corporate_site: Pool,
}

impl Upstreams {
    pub fn pool(&self, name: PoolName) -> &Pool {
        match name {
            PoolName::Storefront => &self.storefront,
            PoolName::CorporateSite => &self.corporate_site,
        }
    }
}

/// One upstream pool.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pool {
    /// `"host:port"` entries (IPv6 as `"[::1]:443"`); validated, may be empty.
    pub servers: Vec<String>,
    /// Speak TLS to these servers.
    pub tls: bool,
    /// Extra trust roots for the origin's certificate (needs `tls = true`).
    pub ca_file: Option<PathBuf>,
}

/// `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Required when `listen.https` is set.
    pub certs_dir: Option<PathBuf>,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Name of the environment variable holding the bearer token.
    pub token_env: String,
    /// A file holding the bearer token (e.g. a mounted Kubernetes Secret); when set
    /// it wins over `token_env`, and a reload re-reads it, so the token rotates
    /// without a restart.
    pub token_file: Option<PathBuf>,
    /// Named tokens, one per person or system (`NAME SHA256` lines, see
    /// `admin_tokens`); their name is the actor in the filing history. Re-read on
    /// reload.
    pub tokens_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            token_env: "ICPGATE_ADMIN_TOKEN".to_owned(),
            token_file: None,
            tokens_file: None,
        }
    }
}

/// `[dns]`: what `check --dns` expects a connected domain to point at.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    pub access_ips: Vec<IpAddr>,
    pub cname_targets: Vec<String>,
    /// Resolvers to ask; empty means the system resolver. Port defaults to 53.
    #[serde(deserialize_with = "de_nameservers")]
    pub nameservers: Vec<SocketAddr>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    #[default]
    Text,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// EnvFilter directive, e.g. `"info"` or `"icpgate=debug,info"`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// `[limits]`: protection against slow, oversized and too many clients.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    #[serde(deserialize_with = "de_duration")]
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    pub max_body_bytes: u64,
    #[serde(deserialize_with = "de_duration")]
    pub upstream_timeout: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub upstream_connect_timeout: Duration,
}

/// Smallest accepted `limits.max_header_bytes`.
pub const MIN_HEADER_BYTES: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 65_536,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(60),
            max_body_bytes: 10 * 1024 * 1024,
            upstream_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            upstream_connect_timeout: Duration::from_secs(5),
        }
    }
}

/// `[notify]`: webhook for filing changes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    pub url: Option<String>,
    pub secret: Option<String>,
    /// Extra trust root (PEM) for an `https://` receiver with a private CA.
    pub ca_file: Option<PathBuf>,
}

/// A network prefix such as `10.0.0.0/8`; a bare IP is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Whether `ip` lies inside this prefix (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the top `prefix` bits of two `width`-bit numbers agree.
fn prefix_eq(a: u128, b: u128, width: u8, prefix: u8) -> bool {
    let shift = u32::from(width.saturating_sub(prefix));
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("invalid IP network {s:?}: bad address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid IP network {s:?}: prefix must be 0..={max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Bad TOML, an unknown key, a wrong type or an unparsable value.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// Well-formed but refused by `Config::validate`; `line` is where `key` is
    /// written, when it is written at all.
    #[error("{}{}: {key}: {message}", .path.display(), line_suffix(.line))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

fn line_suffix(line: &Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

/// The file's shape: every section optional, unknown sections refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    listen: Listen,
    registry: RegistryConfig,
    cache: CacheConfig,
    policy: Policy,
    upstreams: Upstreams,
    tls: TlsConfig,
    admin: AdminConfig,
    dns: DnsConfig,
    log: LogConfig,
    limits: Limits,
    notify: NotifyConfig,
}

impl RawConfig {
    fn into_config(self, source: PathBuf) -> Config {
        Config {
            listen: self.listen,
            registry: self.registry,
            cache: self.cache,
            policy: self.policy,
            upstreams: self.upstreams,
            tls: self.tls,
            admin: self.admin,
            dns: self.dns,
            log: self.log,
            limits: self.limits,
            notify: self.notify,
            source,
        }
    }
}

/// A validation failure before it is tied to a file.
#[derive(Debug)]
struct Problem {
    key: String,
    message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text, path)
    }

    /// Parses and validates `text`; `origin` names it in errors and becomes `source`.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        // Syntax first, so shape errors below can be given their key.
        text.parse::<toml::Table>()
            .map_err(|e| parse_error(text, origin, &e, false))?;
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| parse_error(text, origin, &e, true))?;
        let config = raw.into_config(origin.to_owned());
        config.validate().map_err(|p| ConfigError::Invalid {
            path: origin.to_owned(),
            line: locate_key(text, &p.key).or_else(|| locate_parent(text, &p.key)),
            key: p.key,
            message: p.message,
        })?;
        Ok(config)
    }

    /// Settings that differ between `self` (running) and `new` in a way that only
    /// takes effect after a restart: listener addresses, the registry backend and
    /// where it lives, whether TLS is configured at all, and the log format.
    pub fn restart_required_changes(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (self, new);
        let changes = [
            ("listen.http", a.listen.http != b.listen.http),
            ("listen.https", a.listen.https != b.listen.https),
            ("listen.admin", a.listen.admin != b.listen.admin),
            ("registry.backend", a.registry.backend != b.registry.backend),
            ("registry.path", a.registry.path != b.registry.path),
            ("registry.url", a.registry.url != b.registry.url),
            (
                "tls.certs_dir",
                a.tls.certs_dir.is_some() != b.tls.certs_dir.is_some(),
            ),
            ("log.format", a.log.format != b.log.format),
        ];
        changes
            .into_iter()
            .filter_map(|(key, changed)| changed.then_some(key))
            .collect()
    }

    /// Rules a single key's type cannot express. Returns the first problem found.
    fn validate(&self) -> Result<(), Problem> {
        self.validate_listen()?;
        self.validate_registry()?;
        self.validate_policy()?;
        for name in PoolName::ALL {
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
        ];
        if let Some((key, _)) = positive.into_iter().find(|(_, zero)| *zero) {
            return Err(problem(key, "must be greater than zero"));
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
        if self.log.level.trim().is_empty() {
            return Err(problem("log.level", "must not be empty"));
        }
        if let Some(bad) = self.dns.cname_targets.iter().find(|t| !is_plain_name(t)) {
            return Err(problem(
                "dns.cname_targets",
                format!("{bad:?} is not a host name"),
            ));
        }
        self.validate_notify()
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

fn validate_pool(name: PoolName, pool: &Pool) -> Result<(), Problem> {
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
    let bad = |why: &str| format!("{server:?} is not host:port: {why}");
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
        _ => Err(problem(key, format!("{url:?} is not an http(s) URL"))),
    }
}

// ---- serde helpers: values parsed here get their key and line from the span ----

/// Accepts a TOML string; anything else is refused as "expected {0}".
struct Text(&'static str);

impl serde::de::Visitor<'_> for Text {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = d.deserialize_str(Text("a duration string such as \"60s\" or \"500ms\""))?;
    humantime::parse_duration(s.trim())
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
}

/// A socket address, or `""` for "this listener is off".
fn de_opt_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = d.deserialize_str(Text("an address string such as \"127.0.0.1:8080\""))?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim().parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid address {s:?}: expected ip:port, e.g. \"127.0.0.1:8080\" or \"[::]:443\""
        ))
    })
}

/// `"ip"` or `"ip:port"`; port 53 when omitted.
fn de_nameservers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    list.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "invalid nameserver {s:?}: expected ip or ip:port"
                    ))
                })
        })
        .collect()
}

// ---- locating keys in the text ----

/// Turns a toml error into `Parse` with line/column; `shape` errors (the syntax
/// was fine) are prefixed with the key they concern.
fn parse_error(text: &str, path: &Path, e: &toml::de::Error, shape: bool) -> ConfigError {
    let offset = e.span().map_or(0, |s| s.start);
    let (line, column) = line_col(text, offset);
    let message = e.message().trim().to_owned();
    let message = match key_at(text, offset).filter(|_| shape) {
        Some(key) => with_key(&key, message),
        None => message,
    };
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

/// `unknown field `x`, expected ...` → `unknown field `x` in [section], expected ...`;
/// anything else → `key: message`.
fn with_key(key: &str, message: String) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return format!("{key}: {message}");
    };
    let section = match key.rsplit_once('.') {
        Some((parent, _)) => format!("in [{parent}]"),
        None => "at top level".to_owned(),
    };
    match rest.split_once('`') {
        Some((field, tail)) => format!("unknown field `{field}` {section}{tail}"),
        None => format!("{message} ({section})"),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// One line of TOML, as far as locating keys needs.
enum LineKind {
    /// `[a.b]` or `[[a.b]]`
    Header(String),
    /// `key = ...` (dotted keys joined)
    Key(String),
    Other,
}

fn classify(line: &str) -> LineKind {
    let t = line.trim();
    if let Some(h) = t.strip_prefix('[') {
        let h = h.trim_start_matches('[');
        return match h.split_once(']') {
            Some((name, _)) => LineKind::Header(normalise_key(name)),
            None => LineKind::Other,
        };
    }
    if t.starts_with('#') {
        return LineKind::Other;
    }
    match t.split_once('=') {
        Some((k, _)) if looks_like_key(k) => LineKind::Key(normalise_key(k)),
        _ => LineKind::Other,
    }
}

/// Bare or quoted key characters with balanced quotes, so an `=` inside a
/// string on a continuation line is not taken for a key.
fn looks_like_key(k: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || " \t_-.\"'".contains(c);
    !k.trim().is_empty()
        && k.chars().all(allowed)
        && k.matches('"').count() % 2 == 0
        && k.matches('\'').count() % 2 == 0
}

/// `a . "b"` → `a.b` (best effort: quoted keys containing dots are rare here).
fn normalise_key(k: &str) -> String {
    k.split('.')
        .map(|part| part.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect::<Vec<_>>()
        .join(".")
}

fn join_key(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

/// The dotted key whose header or value sits at byte `offset`. A value spanning
/// several lines (an array) belongs to the last `key =` above it.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let target = line_col(text, offset).0;
    let mut table = String::new();
    let mut last_key = None;
    for (i, line) in text.lines().enumerate() {
        let here = i + 1 == target;
        match classify(line) {
            LineKind::Header(h) if here => return Some(h),
            LineKind::Header(h) => {
                table = h;
                last_key = None;
            }
            LineKind::Key(k) => last_key = Some(join_key(&table, &k)),
            LineKind::Other => {}
        }
        if here {
            return last_key;
        }
    }
    None
}

/// 1-based line where the dotted `key` (or the section `key`) is written.
fn locate_key(text: &str, key: &str) -> Option<usize> {
    let mut table = String::new();
    for (i, line) in text.lines().enumerate() {
        let full = match classify(line) {
            LineKind::Header(h) => {
                table = h;
                table.clone()
            }
            LineKind::Key(k) => join_key(&table, &k),
            LineKind::Other => continue,
        };
        if full == key {
            return Some(i + 1);
        }
    }
    None
}

/// Line of the section holding `key`, for a key that is not written (a missing
/// required value).
fn locate_parent(text: &str, key: &str) -> Option<usize> {
    let (parent, _) = key.rsplit_once('.')?;
    locate_key(text, parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("config/icpgate.toml"))
    }

    fn defaults() -> Config {
        RawConfig::default().into_config(PathBuf::from("config/icpgate.toml"))
    }

    const FULL: &str = r#"
[listen]
http = "0.0.0.0:80"
https = "[::]:443"
admin = "127.0.0.1:9191"
proxy_protocol = true
trusted_proxies = ["10.0.0.0/8", "127.0.0.1", "fd00::/8"]

[registry]
backend = "postgres"
path = "/var/lib/icpgate/icpgate.db"
url = "postgres://icpgate@db/icpgate"
seed = "seed/filings.jsonl"

[cache]
ttl = "2m"
negative_ttl = "500ms"
max_entries = 5000
stale_if_error = "1h"

[policy]
mode = "report-only"
on_registry_error = "allow"
block_status = 403
access_existing_after_initial_review = true
default_pool = "corporate_site"
operator = "Example Cloud"
operator_url = "https://cloud.example/icp"

[upstreams.storefront]
servers = ["10.1.0.1:8080", "shop.internal:80", "[::1]:8443"]

[upstreams.corporate_site]
servers = ["corp.internal:443"]
tls = true
ca_file = "certs/origin-ca.pem"

[tls]
certs_dir = "certs"

[admin]
token_env = "GATE_TOKEN"

[dns]
access_ips = ["203.0.113.10", "2001:db8::10"]
cname_targets = ["gate.cloud.example"]
nameservers = ["1.1.1.1", "[2606:4700::1111]:5353"]

[log]
format = "json"
level = "icpgate=debug,info"

[limits]
header_read_timeout = "2s"
max_header_bytes = 16384
max_connections = 500
idle_timeout = "90s"
max_body_bytes = 1048576
upstream_timeout = "15s"
drain_timeout = "10s"
upstream_connect_timeout = "1s"

[notify]
url = "https://hooks.example/icp"
secret = "s3cret"
"#;

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = parse("").map_err(|e| e.to_string());
        assert_eq!(c, Ok(defaults()));
        let c = defaults();
        assert_eq!(c.listen.http, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.listen.admin, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(c.cache.ttl, Duration::from_secs(60));
        assert_eq!(c.policy.block_status, 451);
        assert_eq!(c.limits.max_body_bytes, 10 << 20);
    }

    /// docs/configuration.md's TOML block is the operators' reference: the same
    /// check as for the module doc.
    #[test]
    fn configuration_doc_example_is_the_defaults() {
        let example: String = include_str!("../../docs/configuration.md")
            .lines()
            .skip_while(|l| l.trim() != "```toml")
            .skip(1)
            .take_while(|l| l.trim() != "```")
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(example.contains("[limits]"), "example not found");
        assert_eq!(parse(&example).map_err(|e| e.to_string()), Ok(defaults()));
    }

    /// The module doc's TOML block is what operators copy: it must parse, and
    /// to exactly the defaults it claims.
    #[test]
    fn module_doc_example_is_the_defaults() {
        let source = include_str!("mod.rs");
        let example: String = source
            .lines()
            .map_while(|l| l.strip_prefix("//!"))
            .skip_while(|l| l.trim() != "```toml")
            .skip(1)
            .take_while(|l| l.trim() != "```")
            .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
            .collect();
        assert!(example.contains("[limits]"), "example not found");
        assert_eq!(parse(&example).map_err(|e| e.to_string()), Ok(defaults()));
    }

    #[test]
    fn full_config_sets_every_key() {
        let c = match parse(FULL) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.listen.https, Some("[::]:443".parse().unwrap()));
        assert!(c.listen.proxy_protocol);
        assert_eq!(c.listen.trusted_proxies.len(), 3);
        assert_eq!(c.registry.backend, Backend::Postgres);
        assert_eq!(c.registry.seed, Some(PathBuf::from("seed/filings.jsonl")));
        assert_eq!(c.cache.negative_ttl, Duration::from_millis(500));
        assert_eq!(c.cache.stale_if_error, Duration::from_secs(3600));
        assert_eq!(c.policy.mode, Mode::ReportOnly);
        assert_eq!(c.policy.on_registry_error, OnRegistryError::Allow);
        assert_eq!(c.policy.default_pool, PoolName::CorporateSite);
        assert_eq!(c.upstreams.pool(PoolName::Storefront).servers.len(), 3);
        assert!(c.upstreams.pool(PoolName::CorporateSite).tls);
        assert_eq!(c.tls.certs_dir, Some(PathBuf::from("certs")));
        assert_eq!(c.admin.token_env, "GATE_TOKEN");
        assert_eq!(c.dns.nameservers[0], "1.1.1.1:53".parse().unwrap());
        assert_eq!(c.dns.nameservers[1].port(), 5353);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.limits.upstream_connect_timeout, Duration::from_secs(1));
        assert_eq!(c.notify.secret.as_deref(), Some("s3cret"));
        assert_ne!(c, defaults());
    }

    #[test]
    fn refused_configs_name_line_and_key() {
        // (what the case pins, file text, substrings the message must contain)
        let cases: &[(&str, &str, &[&str])] = &[
            // A misspelt section is refused at top level, on its header line.
            (
                "unknown section",
                "[polcy]\nmode = \"enforce\"\n",
                &["icpgate.toml:1:", "unknown field `polcy` at top level"],
            ),
            // A misspelt key names itself, its section and its line.
            (
                "unknown key",
                "[listen]\nhttp = \"127.0.0.1:1\"\n\n[policy]\nblok_status = 403\n",
                &[
                    "icpgate.toml:5:1:",
                    "unknown field `blok_status` in [policy]",
                    "expected one of",
                ],
            ),
            // A misspelt pool is an unknown key of [upstreams].
            (
                "unknown pool",
                "[upstreams.storfront]\nservers = []\n",
                &[":1:", "`storfront` in [upstreams]"],
            ),
            // A number where a string belongs, and the reverse.
            (
                "wrong type",
                "[policy]\nblock_status = \"451\"\n",
                &[":2:16:", "policy.block_status: invalid type: string"],
            ),
            (
                "duration as number",
                "[cache]\nttl = 60\n",
                &[":2:7:", "cache.ttl:", "duration string"],
            ),
            // humantime refuses it; the key is named.
            (
                "bad duration",
                "[limits]\nidle_timeout = \"abc\"\n",
                &[":2:", "limits.idle_timeout: invalid duration \"abc\""],
            ),
            (
                "bad listen address",
                "[listen]\nhttp = \"localhost\"\n",
                &[":2:8:", "listen.http: invalid address \"localhost\""],
            ),
            (
                "bad enum value",
                "[policy]\nmode = \"enfoce\"\n",
                &[":2:", "policy.mode: unknown variant `enfoce`"],
            ),
            (
                "bad CIDR",
                "[listen]\ntrusted_proxies = [\"10.0.0.0/40\"]\n",
                &[":2:", "listen.trusted_proxies:", "prefix"],
            ),
            // Broken TOML syntax gives a position, no key.
            ("syntax", "[listen\nbroken = \n", &["icpgate.toml:1:"]),
            // Validation after parsing: the key's own line when it is written.
            (
                "server without port",
                "[upstreams.storefront]\nservers = [\n  \"a:1\",\n  \"host\",\n]\n",
                &[
                    "icpgate.toml:2: upstreams.storefront.servers:",
                    "\"host\"",
                    "no port",
                ],
            ),
            (
                "server with empty host",
                "[upstreams.corporate_site]\nservers = [\":80\"]\n",
                &["upstreams.corporate_site.servers:", "bad host"],
            ),
            (
                "server port 0",
                "[upstreams.storefront]\nservers = [\"a:0\"]\n",
                &["upstreams.storefront.servers:", "port"],
            ),
            // A required key that is missing points at its section.
            (
                "postgres without url",
                "[registry]\nbackend = \"postgres\"\n",
                &["icpgate.toml:1: registry.url: required"],
            ),
            (
                "https without certs_dir",
                "[listen]\nhttps = \"127.0.0.1:8443\"\n",
                &["tls.certs_dir: required when listen.https is set"],
            ),
            (
                "PROXY senders named without PROXY protocol",
                "[listen]\nproxy_protocol_from = [\"10.0.0.0/8\"]\n",
                &[
                    ":2:",
                    "listen.proxy_protocol_from: only applies with listen.proxy_protocol = true",
                ],
            ),
            (
                "a PROXY sender that is no network",
                "[listen]\nproxy_protocol = true\nproxy_protocol_from = [\"lb.internal\"]\n",
                &[":3:", "listen.proxy_protocol_from:"],
            ),
            (
                "block_status 200",
                "[policy]\nblock_status = 200\n",
                &["icpgate.toml:2: policy.block_status: 200 refused"],
            ),
            // Dotted keys at top level are located too.
            (
                "dotted key",
                "policy.block_status = 302\n",
                &["icpgate.toml:1: policy.block_status"],
            ),
            (
                "no data listener",
                "[listen]\nhttp = \"\"\n",
                &["icpgate.toml:1: listen: at least one"],
            ),
            (
                "zero header timeout",
                "[limits]\nheader_read_timeout = \"0s\"\n",
                &["limits.header_read_timeout: must be greater than zero"],
            ),
            (
                "zero upstream timeout",
                "[limits]\nupstream_timeout = \"0s\"\n",
                &["limits.upstream_timeout:"],
            ),
            (
                "zero connections",
                "[limits]\nmax_connections = 0\n",
                &["limits.max_connections:"],
            ),
            (
                "tiny header limit",
                "[limits]\nmax_header_bytes = 100\n",
                &["limits.max_header_bytes: 100 is too small"],
            ),
            (
                "empty log level",
                "[log]\nlevel = \" \"\n",
                &["log.level: must not be empty"],
            ),
            (
                "ca_file without tls",
                "[upstreams.storefront]\nca_file = \"ca.pem\"\n",
                &["upstreams.storefront.ca_file: set but tls = false"],
            ),
            (
                "operator_url not http",
                "[policy]\noperator_url = \"beian.miit.gov.cn\"\n",
                &["policy.operator_url:"],
            ),
            (
                "secret without url",
                "[notify]\nsecret = \"x\"\n",
                &["notify.secret:"],
            ),
            (
                "bad nameserver",
                "[dns]\nnameservers = [\"dns.google\"]\n",
                &["dns.nameservers: invalid nameserver"],
            ),
        ];
        for (what, text, wanted) in cases {
            let err = match parse(text) {
                Ok(_) => panic!("{what}: accepted"),
                Err(e) => e.to_string(),
            };
            for w in *wanted {
                assert!(err.contains(w), "{what}: {err:?} lacks {w:?}");
            }
        }
    }

    #[test]
    fn accepted_edge_values() {
        // (what the case pins, file text)
        let cases = [
            // ttl 0 means "do not cache".
            (
                "zero ttls",
                "[cache]\nttl = \"0s\"\nnegative_ttl = \"0s\"\nstale_if_error = \"0s\"\n",
            ),
            // https alone, with certificates, and the http listener switched off.
            (
                "https only",
                "[listen]\nhttp = \"\"\nhttps = \"127.0.0.1:8443\"\n[tls]\ncerts_dir = \"certs\"\n",
            ),
            // admin switched off.
            ("no admin", "[listen]\nadmin = \"\"\n"),
            ("block 404", "[policy]\nblock_status = 404\n"),
            ("empty pools", "[upstreams.storefront]\nservers = []\n"),
        ];
        for (what, text) in cases {
            if let Err(e) = parse(text) {
                panic!("{what}: {e}");
            }
        }
    }

    #[test]
    fn load_names_an_unreadable_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = Config::load(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.toml: cannot read"), "{err}");
        let file = dir.path().join("gate.toml");
        std::fs::write(&file, "[policy]\nblock_status = 403\n").unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!((c.policy.block_status, c.source), (403, file));
    }

    #[test]
    fn restart_required_changes_lists_only_restart_keys() {
        let old = defaults();
        let mut new = old.clone();
        new.policy.block_status = 403;
        new.policy.mode = Mode::ReportOnly;
        new.cache.ttl = Duration::ZERO;
        assert!(old.restart_required_changes(&new).is_empty());
        new.listen.http = Some("127.0.0.1:8081".parse().unwrap());
        new.registry.path = PathBuf::from("other.db");
        new.tls.certs_dir = Some(PathBuf::from("certs"));
        assert_eq!(
            old.restart_required_changes(&new),
            ["listen.http", "registry.path", "tls.certs_dir"]
        );
    }

    #[test]
    fn ipnet_parses_and_contains() {
        // (network, address, inside?)
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            // Host bits in the network are ignored.
            ("10.1.2.3/8", "10.9.9.9", true),
            // A bare IP is a /32.
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::/0", "2001:db8::1", true),
            // IPv4-mapped IPv6 peers match IPv4 networks.
            ("192.0.2.0/24", "::ffff:192.0.2.7", true),
            // Families never mix otherwise.
            ("0.0.0.0/0", "::1", false),
        ];
        for (net, ip, inside) in cases {
            let net: IpNet = net.parse().unwrap();
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(net.contains(&ip), inside, "{net} contains {ip}");
        }
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "x", "10.0.0.0/", ""] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            "10.0.0.0/8".parse::<IpNet>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }
}
