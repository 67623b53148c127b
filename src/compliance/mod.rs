//! `icpgate check` and `GET /v1/check`: is a domain filed, under which ICP number,
//! would the gate serve it, and (with DNS) is it already pointed at us?
//!
//! Contract:
//! - the filing side applies exactly the gate rule (`decision::decide` with the
//!   config's `RulePolicy`) to the registry's answer, read directly (no cache):
//!   invalid input → `invalid_host`, an IP → `ip_literal`, a bare public suffix →
//!   `not_filed` with `registrable_domain: null`. `policy.mode` does not soften the
//!   answer: `decision` is what enforcement would do;
//! - without DNS an input is compliant when the gate allows it; with DNS when it is
//!   allowed *and* points here (see [`Verdict`]);
//! - a registry failure fails the whole check (exit 2), never a row;
//! - many inputs are checked at most [`IN_FLIGHT`] at a time, reports come back in
//!   input order.

pub mod dns;
pub mod output;

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use crate::config::Config;
use crate::gate::decision::{decide, FilingFacts, HostReading, Reason, RulePolicy};
use crate::model::filing::{Product, Status};
use crate::model::host::{Authority, HostName};
use crate::registry::{Registry, RegistryError};

pub use dns::{DnsProbe, DnsReport, DnsSetupError};
pub use output::Format;

/// How many inputs are checked concurrently.
pub const IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Open(#[from] crate::registry::OpenError),
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Dns(#[from] DnsSetupError),
    #[error("cannot read the domain list {path}: {source}")]
    ReadList {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no domains to check")]
    NoInput,
}

/// The compliance verdict of one input once DNS is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Allowed by the gate rule and pointed here.
    Compliant,
    /// Pointed here but not allowed: whoever connects it is responsible.
    Violation,
    /// Allowed, but DNS points elsewhere (or nowhere).
    NotPointed,
    /// Neither allowed nor pointed here: nothing is connected yet.
    NotConnected,
    /// DNS could not answer (timeout, SERVFAIL...).
    DnsError,
    /// Not a domain name (invalid input or an IP address): nothing to resolve.
    Invalid,
}

impl Verdict {
    /// Pure: the verdict from the gate's answer and the DNS report.
    pub fn of(reason: Reason, dns: &DnsReport) -> Verdict {
        let allowed = reason == Reason::Filed;
        match (reason, dns.unresolved, allowed, dns.points_here) {
            (Reason::InvalidHost | Reason::IpLiteral | Reason::MissingHost, ..) => Verdict::Invalid,
            (_, true, ..) => Verdict::DnsError,
            (_, false, true, true) => Verdict::Compliant,
            (_, false, false, true) => Verdict::Violation,
            (_, false, true, false) => Verdict::NotPointed,
            (_, false, false, false) => Verdict::NotConnected,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Compliant => "compliant",
            Verdict::Violation => "violation",
            Verdict::NotPointed => "not_pointed",
            Verdict::NotConnected => "not_connected",
            Verdict::DnsError => "dns_error",
            Verdict::Invalid => "invalid",
        }
    }
}

/// The answer for one input (the JSON object of `check --format json` and `/v1/check`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub input: String,
    /// The normalised host (punycode), or the IP address; null when invalid.
    pub host: Option<String>,
    pub registrable_domain: Option<String>,
    pub filing_id: Option<i64>,
    pub filing_status: Option<Status>,
    pub product: Option<Product>,
    pub icp_number: Option<String>,
    /// `allow` or `block`, under enforcement.
    pub decision: &'static str,
    pub reason: Reason,
    /// What the exit code counts: allowed (and, with DNS, pointed here).
    pub compliant: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

/// Checks inputs against one registry, policy and (optionally) resolver.
pub struct Checker {
    registry: Arc<dyn Registry>,
    policy: RulePolicy,
    dns: Option<DnsProbe>,
}

impl Checker {
    pub fn new(
        registry: Arc<dyn Registry>,
        config: &Config,
        with_dns: bool,
    ) -> Result<Checker, CheckError> {
        let dns = with_dns.then(|| DnsProbe::new(&config.dns)).transpose()?;
        Ok(Checker {
            registry,
            policy: RulePolicy::of(&config.policy),
            dns,
        })
    }

    /// Check one input.
    pub async fn check(&self, input: &str) -> Result<Report, CheckError> {
        let (mut report, host) = self.rule(input).await?;
        if let Some(probe) = &self.dns {
            let dns = match &host {
                Some(host) => probe.probe(host).await,
                None => DnsReport {
                    error: Some("not a domain name: not looked up".to_string()),
                    ..DnsReport::default()
                },
            };
            let verdict = Verdict::of(report.reason, &dns);
            report.compliant = verdict == Verdict::Compliant;
            report.verdict = Some(verdict);
            report.dns = Some(dns);
        }
        Ok(report)
    }

    /// Check every input, [`IN_FLIGHT`] at a time; `progress(done, total)` after each.
    pub async fn check_all(
        &self,
        inputs: &[String],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<Report>, CheckError> {
        let total = inputs.len();
        let mut done: Vec<Option<Report>> = vec![None; total];
        let mut results = stream::iter(inputs.iter().enumerate())
            .map(|(index, input)| async move { (index, self.check(input).await) })
            .buffer_unordered(IN_FLIGHT);
        let mut finished = 0;
        while let Some((index, result)) = results.next().await {
            if let Some(slot) = done.get_mut(index) {
                *slot = Some(result?);
            }
            finished += 1;
            progress(finished, total);
        }
        Ok(done.into_iter().flatten().collect())
    }

    /// The gate rule for `input`; also the host to resolve, when it is a name.
    async fn rule(&self, input: &str) -> Result<(Report, Option<HostName>), CheckError> {
        let mut report = Report {
            input: input.to_string(),
            host: None,
            registrable_domain: None,
            filing_id: None,
            filing_status: None,
            product: None,
            icp_number: None,
            decision: "block",
            reason: Reason::InvalidHost,
            compliant: false,
            dns: None,
            verdict: None,
        };
        let reading = HostReading::of(input.trim());
        let host = match &reading.authority {
            Ok(Authority::Name(host)) => host.clone(),
            Ok(Authority::Ip(ip)) => {
                report.host = Some(ip.to_string());
                report.reason = Reason::IpLiteral;
                return Ok((report, None));
            }
            Err(_) => return Ok((report, None)),
        };
        report.host = Some(host.to_string());
        report.reason = reading.refusal().unwrap_or(Reason::NotFiled);
        if let Some(domain) = reading.domain {
            // The registry itself, not the gate's cache: a check states the registry.
            let found = self.registry.lookup(&domain).await?;
            let facts = found.filing.as_ref().map(FilingFacts::of);
            report.reason = decide(facts.as_ref(), self.policy);
            if let Some(facts) = facts {
                report.filing_id = Some(facts.id);
                report.filing_status = Some(facts.status);
                report.product = Some(facts.product);
                report.icp_number = facts.icp_number;
            }
            report.registrable_domain = Some(domain.into_string());
        }
        if report.reason == Reason::Filed {
            report.decision = "allow";
            report.compliant = true;
        }
        Ok((report, Some(host)))
    }
}

/// The domains of a list file: one per line, `#` starts a comment, blank lines and
/// surrounding whitespace ignored, a UTF-8 byte-order mark skipped.
pub fn parse_list(text: &str) -> Vec<String> {
    text.trim_start_matches('\u{feff}')
        .lines()
        .map(|line| {
            line.split_once('#')
                .map_or(line, |(before, _)| before)
                .trim()
        })
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_skip_comments_and_blanks() {
        let text =
            "\u{feff}# staff list\nexample.com\n\n  shop.例子.中国  \nfoo.cn # pending\n#\n   \n";
        assert_eq!(
            parse_list(text),
            ["example.com", "shop.例子.中国", "foo.cn"]
        );
    }

    #[test]
    fn verdicts() {
        let here = DnsReport {
            points_here: true,
            ..DnsReport::default()
        };
        let elsewhere = DnsReport::default();
        let failed = DnsReport {
            unresolved: true,
            ..DnsReport::default()
        };
        let cases = [
            // filed and pointed here
            (Reason::Filed, &here, Verdict::Compliant),
            // pointed here without an approved filing
            (Reason::NotFiled, &here, Verdict::Violation),
            (Reason::PendingReview, &here, Verdict::Violation),
            // filed but pointed elsewhere
            (Reason::Filed, &elsewhere, Verdict::NotPointed),
            // neither: nothing connected
            (Reason::Cancelled, &elsewhere, Verdict::NotConnected),
            // DNS failed: unknown, whatever the filing
            (Reason::Filed, &failed, Verdict::DnsError),
            // not a domain at all
            (Reason::IpLiteral, &here, Verdict::Invalid),
            (Reason::InvalidHost, &elsewhere, Verdict::Invalid),
        ];
        for (reason, dns, want) in cases {
            assert_eq!(Verdict::of(reason, dns), want, "{reason} {dns:?}");
        }
    }
}
