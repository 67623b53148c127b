//! The TOML shape: one struct per section with its defaults, each
//! `deny_unknown_fields`, and the serde helpers for the values TOML has no type for
//! (durations, optional addresses, nameservers, CIDRs).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::model::filing::Product;

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
    /// The environment variable holding the key (at least 32 characters) that seals
    /// the filing passwords of access-existing filings. Unset: passwords are
    /// required but not kept (a reviewer checks them with the applicant).
    pub secret_key_env: Option<String>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            backend: Backend::Sqlite,
            path: PathBuf::from("data/icpgate.db"),
            url: None,
            seed: None,
            secret_key_env: None,
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
    pub default_pool: Product,
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
            default_pool: Product::Storefront,
            operator: "icpgate".to_owned(),
            operator_url: "https://beian.miit.gov.cn/".to_owned(),
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
    pub fn pool(&self, name: Product) -> &Pool {
        match name {
            Product::Storefront => &self.storefront,
            Product::CorporateSite => &self.corporate_site,
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
    /// 48 random bytes (16-byte key name + 32-byte AES-256-GCM key) sealing TLS
    /// session tickets, so every node holding the same file resumes a client's
    /// session; re-read on reload. Unset: per-process ticket keys.
    pub ticket_key_file: Option<PathBuf>,
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
    /// Let anyone read what holds no personal data (decisions, checks, blocked
    /// hosts, filings masked, the OpenAPI document); off: every endpoint but
    /// `/healthz`, `/readyz` and `/metrics` needs a token.
    pub public_reads: bool,
    /// Host names (or IP literals) the admin listener answers besides its own
    /// address, `localhost`, `127.0.0.1` and `::1`; any other Host is refused (421),
    /// against DNS rebinding. Ports are not compared.
    pub hosts: Vec<String>,
    /// How long a console sign-in lasts (the session cookie's lifetime).
    #[serde(deserialize_with = "de_duration")]
    pub session_ttl: Duration,
    /// The Grafana dashboard the console's traffic page links to (http or https URL).
    pub grafana_url: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            token_env: "ICPGATE_ADMIN_TOKEN".to_owned(),
            token_file: None,
            tokens_file: None,
            public_reads: false,
            hosts: Vec::new(),
            session_ttl: Duration::from_secs(8 * 3600),
            grafana_url: None,
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
    /// HTTP/2 streams one client connection may have open at once (advertised in
    /// SETTINGS; a stream beyond it is refused).
    pub h2_max_concurrent_streams: u32,
    /// Requests (HTTP/2 streams) one connection may cancel before their answer in
    /// one second; one more closes it with a GOAWAY (rapid reset, CVE-2023-44487).
    pub h2_max_resets_per_second: u32,
    /// Data-plane threads, each a current-thread runtime with its own listening
    /// socket per address; unset: one per CPU.
    pub worker_threads: Option<usize>,
}

/// Most accepted `limits.worker_threads`: more threads than this is a typo, not a
/// machine.
pub const MAX_WORKER_THREADS: usize = 1024;

impl Limits {
    /// The data plane's thread count: `worker_threads`, else the CPUs this process
    /// may run on.
    pub fn workers(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
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
            h2_max_concurrent_streams: 128,
            h2_max_resets_per_second: 100,
            worker_threads: None,
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

/// How the ACME CA checks that the gate answers for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum AcmeChallenge {
    /// RFC 8737, answered on `listen.https`.
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// RFC 8555 §8.3, answered on `listen.http`.
    #[serde(rename = "http-01")]
    Http01,
}

/// `[acme]`: certificates on demand for filed names (off while `directory` is unset).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// The CA's ACME directory URL.
    pub directory: Option<String>,
    /// Extra trust roots (PEM) for the CA's API: private CAs and tests.
    pub ca_file: Option<PathBuf>,
    /// Contact address given to the CA with the account.
    pub email: Option<String>,
    pub challenge: AcmeChallenge,
    /// Renew this long before a certificate expires.
    #[serde(deserialize_with = "de_duration")]
    pub renew_before: Duration,
    /// Orders placed per hour at most, across all names (the CA's rate limits).
    pub max_orders_per_hour: u32,
    /// How long a ClientHello waits for its name's order before its handshake fails.
    #[serde(deserialize_with = "de_duration")]
    pub order_timeout: Duration,
    /// Directory holding the account key and the certificates; unset:
    /// `.acme` inside `tls.certs_dir`; `"registry"`: the PostgreSQL registry,
    /// shared by the fleet, private keys sealed with the storage key.
    pub storage: Option<PathBuf>,
    /// The environment variable holding the storage key (`storage = "registry"`).
    pub storage_key_env: String,
    /// A file holding the storage key; wins over `storage_key_env`.
    pub storage_key_file: Option<PathBuf>,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            directory: None,
            ca_file: None,
            email: None,
            challenge: AcmeChallenge::TlsAlpn01,
            renew_before: Duration::from_secs(30 * 86_400),
            max_orders_per_hour: 100,
            order_timeout: Duration::from_secs(25),
            storage: None,
            storage_key_env: "ICPGATE_ACME_STORAGE_KEY".to_owned(),
            storage_key_file: None,
        }
    }
}

impl AcmeConfig {
    /// Whether the fleet's registry holds the ACME state (`storage = "registry"`).
    pub fn in_registry(&self) -> bool {
        self.storage.as_deref() == Some(std::path::Path::new("registry"))
    }

    /// Where the account and certificates live, given the https certificates' directory.
    pub fn storage_dir(&self, certs_dir: &std::path::Path) -> PathBuf {
        self.storage
            .clone()
            .unwrap_or_else(|| certs_dir.join(".acme"))
    }
}
