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
//! `tls.ticket_key_file`, `upstreams.*.ca_file`) are kept as written and resolve against the process's
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
//! # ticket_key_file = "/run/secrets/icpgate-ticket-key"  # 48 random bytes shared by a
//! #                              # fleet: tickets resume on any node; re-read on reload
//!
//! [admin]
//! token_env = "ICPGATE_ADMIN_TOKEN"   # env var holding the admin bearer token
//! # token_file = "/run/secrets/icpgate-admin-token"  # wins over token_env; re-read on reload
//! # tokens_file = "/etc/icpgate/admin-tokens"  # named tokens: "NAME SHA256" lines; the actor in history
//! public_reads = false           # true: reads without personal data need no token
//! hosts = []                     # Host names answered besides localhost, 127.0.0.1, ::1
//!                                # and the listen address; others get 421 (DNS rebinding)
//! session_ttl = "8h"             # how long a review console sign-in lasts (1m..7days)
//! # grafana_url = "https://grafana.example.com/d/icpgate"  # the console links to it
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
//! h2_max_concurrent_streams = 128  # HTTP/2 streams open at once per connection
//! h2_max_resets_per_second = 100 # streams a client may cancel per second; more: GOAWAY
//! # worker_threads = 4           # data-plane threads (1..=1024); unset: one per CPU
//!
//! [notify]                       # webhook on filing changes, off by default
//! # url = "https://..."
//! # secret = "..."               # HMAC key; needs url
//! # ca_file = "hook-ca.pem"      # extra trust root for an https receiver
//!
//! [acme]                         # certificates on demand for filed names, off by default
//! # directory = "https://acme-v02.api.letsencrypt.org/directory"  # needs listen.https
//! # ca_file = "acme-ca.pem"      # extra trust roots for the CA's API
//! # email = "ops@example.cn"     # account contact
//! challenge = "tls-alpn-01"      # "tls-alpn-01" (listen.https) | "http-01" (listen.http)
//! renew_before = "30d"           # renew this long before expiry
//! max_orders_per_hour = 100
//! # storage = "/var/lib/icpgate/acme"  # account + certificates; default tls.certs_dir/.acme
//! #   storage = "registry"       # a fleet: in the PostgreSQL registry, keys sealed with:
//! storage_key_env = "ICPGATE_ACME_STORAGE_KEY"  # env var holding the storage key (32+ chars)
//! # storage_key_file = "/run/secrets/acme-storage-key"  # wins over storage_key_env
//! ```
//!
//! On reload (SIGHUP) most settings apply at once;
//! [`Config::restart_required_changes`] names those that only take effect after a
//! restart.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod locate;
mod shape;
mod validate;

use locate::{locate_key, locate_parent, parse_error};
pub use shape::*;
pub use validate::redact_url;

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
    pub acme: AcmeConfig,
    /// The file this configuration was read from (for messages and reload).
    pub source: PathBuf,
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
    acme: AcmeConfig,
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
            acme: self.acme,
            source,
        }
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
            (
                "tls.ticket_key_file",
                a.tls.ticket_key_file != b.tls.ticket_key_file,
            ),
            ("log.format", a.log.format != b.log.format),
            ("acme", a.acme != b.acme),
            (
                "limits.worker_threads",
                a.limits.worker_threads != b.limits.worker_threads,
            ),
        ];
        changes
            .into_iter()
            .filter_map(|(key, changed)| changed.then_some(key))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use super::*;
    use crate::model::filing::Product;

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
ticket_key_file = "/run/secrets/ticket.key"

[admin]
token_env = "GATE_TOKEN"
session_ttl = "12h"
grafana_url = "https://grafana.example/d/icpgate"

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
        assert_eq!(c.policy.default_pool, Product::CorporateSite);
        assert_eq!(c.upstreams.pool(Product::Storefront).servers.len(), 3);
        assert!(c.upstreams.pool(Product::CorporateSite).tls);
        assert_eq!(c.tls.certs_dir, Some(PathBuf::from("certs")));
        assert_eq!(
            c.tls.ticket_key_file,
            Some(PathBuf::from("/run/secrets/ticket.key"))
        );
        assert_eq!(c.admin.token_env, "GATE_TOKEN");
        assert_eq!(c.admin.session_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(
            c.admin.grafana_url.as_deref(),
            Some("https://grafana.example/d/icpgate")
        );
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
                "ticket key without https",
                "[tls]\nticket_key_file = \"ticket.key\"\n",
                &[":2:", "tls.ticket_key_file: set but listen.https is not"],
            ),
            // [acme]: the directory needs the https listener; the rest needs the directory.
            (
                "acme without https",
                "[acme]\ndirectory = \"https://ca.example/dir\"\n",
                &[":2:", "acme.directory: needs listen.https"],
            ),
            (
                "acme key without a directory",
                "[acme]\nemail = \"ops@example.cn\"\n",
                &[":2:", "acme.email: set but acme.directory is not"],
            ),
            (
                "acme directory that is no URL",
                "[listen]\nhttps = \"127.0.0.1:8443\"\n[tls]\ncerts_dir = \"c\"\n[acme]\ndirectory = \"ca.example\"\n",
                &[":6:", "acme.directory:"],
            ),
            (
                "acme email that is no address",
                "[listen]\nhttps = \"127.0.0.1:8443\"\n[tls]\ncerts_dir = \"c\"\n[acme]\ndirectory = \"https://ca.example/dir\"\nemail = \"ops at example\"\n",
                &[":7:", "acme.email:"],
            ),
            (
                "acme http-01 without the http listener",
                "[listen]\nhttp = \"\"\nhttps = \"127.0.0.1:8443\"\n[tls]\ncerts_dir = \"c\"\n[acme]\ndirectory = \"https://ca.example/dir\"\nchallenge = \"http-01\"\n",
                &["acme.challenge:", "listen.http"],
            ),
            (
                "acme challenge unknown",
                "[acme]\nchallenge = \"dns-01\"\n",
                &[":2:", "dns-01"],
            ),
            (
                "acme zero budget",
                "[listen]\nhttps = \"127.0.0.1:8443\"\n[tls]\ncerts_dir = \"c\"\n[acme]\ndirectory = \"https://ca.example/dir\"\nmax_orders_per_hour = 0\n",
                &["acme.max_orders_per_hour: must be greater than zero"],
            ),
            (
                "acme order_timeout longer than a client waits",
                "[listen]\nhttps = \"127.0.0.1:8443\"\n[tls]\ncerts_dir = \"c\"\n[acme]\ndirectory = \"https://ca.example/dir\"\norder_timeout = \"10m\"\n",
                &["acme.order_timeout: must be greater than zero and at most 5m"],
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
                "no worker threads",
                "[limits]\nworker_threads = 0\n",
                &["limits.worker_threads: must be greater than zero"],
            ),
            (
                "absurd worker threads",
                "[limits]\nworker_threads = 100000\n",
                &["limits.worker_threads: 100000 is too many: at most 1024"],
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
                "admin host with a port",
                "[admin]\nhosts = [\"admin.example:9090\"]\n",
                &[":2:", "admin.hosts:", "not a host name"],
            ),
            (
                "admin host with a scheme",
                "[admin]\nhosts = [\"http://admin.example\"]\n",
                &["admin.hosts:"],
            ),
            // The console's keys: a session of seconds or of months, a link that is no URL.
            (
                "console session too short",
                "[admin]\nsession_ttl = \"10s\"\n",
                &[":2:", "admin.session_ttl:", "between 1m and 7days"],
            ),
            (
                "console session too long",
                "[admin]\nsession_ttl = \"30days\"\n",
                &["admin.session_ttl:"],
            ),
            (
                "console session not a duration",
                "[admin]\nsession_ttl = \"soon\"\n",
                &["admin.session_ttl", "invalid duration"],
            ),
            (
                "grafana link not a URL",
                "[admin]\ngrafana_url = \"grafana.example\"\n",
                &["admin.grafana_url:", "not an http(s) URL"],
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
            // ACME with every key.
            (
                "acme",
                "[listen]\nhttps = \"127.0.0.1:8443\"\n[tls]\ncerts_dir = \"c\"\n[acme]\ndirectory = \"https://ca.example/dir\"\nca_file = \"ca.pem\"\nemail = \"ops@example.cn\"\nchallenge = \"http-01\"\nrenew_before = \"20d\"\nmax_orders_per_hour = 5\nstorage = \"/var/lib/icpgate/acme\"\n",
            ),
            ("block 404", "[policy]\nblock_status = 404\n"),
            ("empty pools", "[upstreams.storefront]\nservers = []\n"),
        ];
        for (what, text) in cases {
            if let Err(e) = parse(text) {
                panic!("{what}: {e}");
            }
        }
    }

    /// Secrets never reach a message: `notify.secret`, and the credentials of a URL
    /// (`registry.url`, `notify.url`, or a URL-like string anywhere).
    #[test]
    fn errors_never_quote_secrets() {
        let cases = [
            "[notify]\nurl = \"ftp://hook:Pw0rdSecret@h.example/x\"\n",
            "[notify]\nurl = \"https://h.example/\"\nsecret = 1234567\n",
            "[notify]\nsecret = \"Pw0rdSecret\"\n",
            "[registry]\nurl = 1234567\n",
            "[policy]\noperator_url = \"gopher://op:Pw0rdSecret@x/\"\n",
            "[upstreams.storefront]\nservers = [\"user:Pw0rdSecret@origin:80\"]\n",
            "[admin]\nhosts = [\"http://u:Pw0rdSecret@admin\"]\n",
        ];
        for text in cases {
            let error = match parse(text) {
                Ok(_) => panic!("{text}: accepted"),
                Err(e) => e.to_string(),
            };
            assert!(!error.contains("Pw0rdSecret"), "{error}");
            assert!(!error.contains("1234567"), "{error}");
            assert!(error.contains("icpgate.toml:"), "{error}");
        }
        let redacted = [
            (
                "postgres://user:pass@db:5432/icp",
                "postgres://***@db:5432/icp",
            ),
            (
                "https://hook@h.example/x?a=b@c",
                "https://***@h.example/x?a=b@c",
            ),
            ("https://h.example/x@y", "https://h.example/x@y"),
            ("user:pass@origin:80", "***@origin:80"),
            ("postgres://db/icp", "postgres://db/icp"),
        ];
        for (url, want) in redacted {
            assert_eq!(redact_url(url), want, "{url}");
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
        new.tls.ticket_key_file = Some(PathBuf::from("ticket.key"));
        assert_eq!(
            old.restart_required_changes(&new),
            [
                "listen.http",
                "registry.path",
                "tls.certs_dir",
                "tls.ticket_key_file"
            ]
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
