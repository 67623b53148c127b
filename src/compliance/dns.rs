//! Where a domain points, through hickory-resolver: A and AAAA for the host (as a
//! fully qualified name, so no search domain is tried), the CNAME chain the
//! resolver followed, and whether any of it lands on this access provider
//! (`dns.access_ips`, `dns.cname_targets`).
//!
//! Contract:
//! - `dns.nameservers` (UDP, then TCP, on each address's port) replaces the system
//!   resolver (`/etc/resolv.conf`) when not empty;
//! - a name that does not exist (NXDOMAIN) or has no address records is a definite
//!   answer: `error` says so, `unresolved` stays false;
//! - a timeout, SERVFAIL or refusal on both lookups leaves the answer unknown:
//!   `unresolved` is true and the verdict is `dns_error`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use serde::Serialize;

use crate::config::DnsConfig;
use crate::model::host::HostName;

/// Longest CNAME chain reported (resolvers stop well before this).
const MAX_CHAIN: usize = 16;

/// Why a resolver could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up DNS resolution: {0}")]
pub struct DnsSetupError(#[from] NetError);

/// What DNS says about one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DnsReport {
    /// A and AAAA addresses at the end of the chain, IPv4 first.
    pub addresses: Vec<IpAddr>,
    /// The names the host's CNAME chain went through, in order, without the host.
    pub cname_chain: Vec<String>,
    /// An address is in `dns.access_ips` or a chain name is in `dns.cname_targets`.
    pub points_here: bool,
    /// What went wrong, if anything (NXDOMAIN, no address records, timeout...).
    pub error: Option<String>,
    /// The answer is unknown (resolution failed), not merely negative.
    #[serde(skip)]
    pub unresolved: bool,
}

/// A resolver plus what "pointed here" means.
pub struct DnsProbe {
    resolver: TokioResolver,
    access_ips: HashSet<IpAddr>,
    cname_targets: HashSet<String>,
}

impl DnsProbe {
    pub fn new(config: &DnsConfig) -> Result<DnsProbe, DnsSetupError> {
        let mut builder = if config.nameservers.is_empty() {
            TokioResolver::builder_tokio()?
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options = builder.options_mut();
        options.timeout = Duration::from_secs(3);
        options.attempts = 2;
        options.preserve_intermediates = true;
        Ok(DnsProbe {
            resolver: builder.build()?,
            access_ips: config.access_ips.iter().copied().collect(),
            cname_targets: config.cname_targets.iter().map(|t| normal(t)).collect(),
        })
    }

    /// Resolve `host` (A and AAAA concurrently) and judge where it points.
    pub async fn probe(&self, host: &HostName) -> DnsReport {
        let Ok(name) = Name::from_ascii(format!("{host}.")) else {
            return DnsReport {
                error: Some("not a DNS name".to_string()),
                unresolved: true,
                ..DnsReport::default()
            };
        };
        let (v4, v6) = tokio::join!(
            self.resolver.lookup(name.clone(), RecordType::A),
            self.resolver.lookup(name, RecordType::AAAA),
        );
        let mut report = DnsReport::default();
        let mut errors = Vec::new();
        let mut lookups = Vec::new();
        for result in [v4, v6] {
            match result {
                Ok(lookup) => lookups.push(lookup),
                Err(error) => errors.push(error),
            }
        }
        report.cname_chain = chain(host.as_str(), &lookups);
        report.addresses = addresses(&lookups);
        report.points_here = report.addresses.iter().any(|a| self.access_ips.contains(a))
            || report
                .cname_chain
                .iter()
                .any(|n| self.cname_targets.contains(n));
        if report.addresses.is_empty() {
            (report.error, report.unresolved) = describe(&errors);
        }
        report
    }
}

/// A name as compared: lowercase, no trailing dot.
fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Walk the CNAME records of the answers from `host` to the end of the chain.
fn chain(host: &str, lookups: &[Lookup]) -> Vec<String> {
    let links: Vec<(String, String)> = lookups
        .iter()
        .flat_map(|l| l.answers())
        .filter_map(|record| match &record.data {
            RData::CNAME(target) => Some((
                normal(&record.name.to_ascii()),
                normal(&target.0.to_ascii()),
            )),
            _ => None,
        })
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut current = normal(host);
    while out.len() < MAX_CHAIN {
        let Some((_, next)) = links.iter().find(|(from, _)| *from == current) else {
            break;
        };
        if out.contains(next) {
            break;
        }
        out.push(next.clone());
        current = next.clone();
    }
    out
}

fn addresses(lookups: &[Lookup]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for record in lookups.iter().flat_map(|l| l.answers()) {
        if let Some(ip) = record.data.ip_addr() {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// The error to report when no address was found, and whether the answer is unknown.
fn describe(errors: &[NetError]) -> (Option<String>, bool) {
    if errors.iter().any(NetError::is_nx_domain) {
        return (Some("NXDOMAIN: the name does not exist".to_string()), false);
    }
    if let Some(failure) = errors.iter().find(|e| !e.is_no_records_found()) {
        return (Some(failure.to_string()), true);
    }
    (Some("no A or AAAA records".to_string()), false)
}
