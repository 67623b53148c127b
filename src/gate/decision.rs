//! The gate rule as a pure function: a normalised host, the filing found for its
//! registrable domain and the policy in force go in; allow or block with one reason
//! comes out. No I/O happens here, so every rule of SPEC §2 is unit-testable.

use serde::Serialize;

use crate::config::{Mode, OnRegistryError, Policy};
use crate::model::filing::{Filing, Kind, Product, Status};
use crate::model::host::{Authority, HostError, RegistrableDomain};
pub use crate::model::reason::Reason;

/// What the gate needs to know of a filing: small, cheap to clone, no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilingFacts {
    pub id: i64,
    pub kind: Kind,
    pub product: Product,
    pub status: Status,
    pub icp_number: Option<String>,
}

impl FilingFacts {
    pub fn of(filing: &Filing) -> FilingFacts {
        FilingFacts {
            id: filing.id,
            kind: filing.kind,
            product: filing.product,
            status: filing.status,
            icp_number: filing.icp_number.as_ref().map(|n| n.as_str().to_string()),
        }
    }
}

/// The parts of `[policy]` the rule itself reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct RulePolicy {
    /// Serve an access-existing filing once its initial review passed (SPEC §2).
    pub access_existing_after_initial_review: bool,
}

impl RulePolicy {
    /// The rule's switches as `[policy]` sets them.
    pub fn of(policy: &Policy) -> RulePolicy {
        RulePolicy {
            access_existing_after_initial_review: policy.access_existing_after_initial_review,
        }
    }
}

/// The gate rule for a registrable domain: allow (`Reason::Filed`) only for an
/// approved filing, or, when the policy switch is on, an access-existing filing that
/// passed initial review.
pub fn decide(filing: Option<&FilingFacts>, policy: RulePolicy) -> Reason {
    let Some(filing) = filing else {
        return Reason::NotFiled;
    };
    match filing.status {
        Status::Approved => Reason::Filed,
        Status::AuthorityReview
            if policy.access_existing_after_initial_review
                && filing.kind == Kind::AccessExisting =>
        {
            Reason::Filed
        }
        Status::InitialReview | Status::AuthorityReview => Reason::PendingReview,
        Status::Rejected => Reason::Rejected,
        Status::Abandoned => Reason::Abandoned,
        Status::Cancelled => Reason::Cancelled,
        Status::Disconnected => Reason::Disconnected,
    }
}

/// What the gate does with a request once its reason is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Forwarded: an approved filing, or the registry is down and policy allows.
    Allow,
    /// Forwarded in report-only mode, counted as what enforcement would block.
    WouldBlock,
    Block,
}

impl Disposition {
    /// The `decision` label of `icpgate_requests_total` and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Allow => "allow",
            Disposition::WouldBlock => "would_block",
            Disposition::Block => "block",
        }
    }

    pub fn forwards(self) -> bool {
        self != Disposition::Block
    }
}

/// The one place `policy.mode` and `policy.on_registry_error` act on a reason —
/// for requests, TLS handshakes and `/v1/decision` alike. A request without a usable
/// host is a client error and blocked even in report-only mode.
pub fn disposition(reason: Reason, mode: Mode, on_registry_error: OnRegistryError) -> Disposition {
    match reason {
        Reason::Filed => Disposition::Allow,
        Reason::RegistryUnavailable if on_registry_error == OnRegistryError::Allow => {
            Disposition::Allow
        }
        Reason::MissingHost | Reason::InvalidHost => Disposition::Block,
        _ if mode == Mode::ReportOnly => Disposition::WouldBlock,
        _ => Disposition::Block,
    }
}

/// A raw host (`Host`, `:authority`, a query parameter, a line of a list) read the
/// one way the gate reads it: an address or an unusable name is refused before any
/// lookup, a public suffix is never filed, and a name otherwise stands for its
/// registrable domain. The data plane, the decision endpoint and `icpgate check`
/// all start here, so they cannot disagree on what a host is.
#[derive(Debug, Clone)]
pub struct HostReading {
    pub authority: Result<Authority, HostError>,
    /// The registrable domain to look up; None for addresses, bad names and suffixes.
    pub domain: Option<RegistrableDomain>,
}

impl HostReading {
    pub fn of(raw: &str) -> HostReading {
        let authority = Authority::parse(raw);
        let domain = match &authority {
            Ok(Authority::Name(name)) => name.registrable_domain(),
            _ => None,
        };
        HostReading { authority, domain }
    }

    /// The refusal decided without a lookup, or None when the registry must be asked
    /// about `domain`.
    pub fn refusal(&self) -> Option<Reason> {
        match (&self.authority, &self.domain) {
            (Err(_), _) => Some(Reason::InvalidHost),
            (Ok(Authority::Ip(_)), _) => Some(Reason::IpLiteral),
            (Ok(Authority::Name(_)), None) => Some(Reason::NotFiled),
            (Ok(Authority::Name(_)), Some(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kind: Kind, status: Status) -> FilingFacts {
        FilingFacts {
            id: 1,
            kind,
            product: Product::Storefront,
            status,
            icp_number: None,
        }
    }

    #[test]
    fn policy_turns_reasons_into_dispositions() {
        use Disposition::*;
        let cases = [
            // enforce: only a filed host is forwarded
            (Reason::Filed, Mode::Enforce, OnRegistryError::Deny, Allow),
            (
                Reason::NotFiled,
                Mode::Enforce,
                OnRegistryError::Deny,
                Block,
            ),
            (
                Reason::RegistryUnavailable,
                Mode::Enforce,
                OnRegistryError::Deny,
                Block,
            ),
            // registry down and policy says allow
            (
                Reason::RegistryUnavailable,
                Mode::Enforce,
                OnRegistryError::Allow,
                Allow,
            ),
            // report-only forwards what it would block...
            (
                Reason::PendingReview,
                Mode::ReportOnly,
                OnRegistryError::Deny,
                WouldBlock,
            ),
            (
                Reason::IpLiteral,
                Mode::ReportOnly,
                OnRegistryError::Deny,
                WouldBlock,
            ),
            (
                Reason::SniMismatch,
                Mode::ReportOnly,
                OnRegistryError::Deny,
                WouldBlock,
            ),
            // ...but never a request without a usable host
            (
                Reason::InvalidHost,
                Mode::ReportOnly,
                OnRegistryError::Allow,
                Block,
            ),
            (
                Reason::MissingHost,
                Mode::ReportOnly,
                OnRegistryError::Allow,
                Block,
            ),
        ];
        for (reason, mode, on_error, want) in cases {
            assert_eq!(
                disposition(reason, mode, on_error),
                want,
                "{reason} {mode:?} {on_error:?}"
            );
        }
    }

    #[test]
    fn only_approved_filings_are_served() {
        let off = RulePolicy::default();
        let on = RulePolicy {
            access_existing_after_initial_review: true,
        };
        let cases = [
            // no filing at all
            (None, off, Reason::NotFiled),
            // approved new filing
            (Some(facts(Kind::New, Status::Approved)), off, Reason::Filed),
            // both review stages block
            (
                Some(facts(Kind::New, Status::InitialReview)),
                off,
                Reason::PendingReview,
            ),
            (
                Some(facts(Kind::New, Status::AuthorityReview)),
                off,
                Reason::PendingReview,
            ),
            // the switch does not open a *new* filing under authority review
            (
                Some(facts(Kind::New, Status::AuthorityReview)),
                on,
                Reason::PendingReview,
            ),
            // access-existing under authority review: blocked by default, served with the switch
            (
                Some(facts(Kind::AccessExisting, Status::AuthorityReview)),
                off,
                Reason::PendingReview,
            ),
            (
                Some(facts(Kind::AccessExisting, Status::AuthorityReview)),
                on,
                Reason::Filed,
            ),
            // the switch never opens initial review
            (
                Some(facts(Kind::AccessExisting, Status::InitialReview)),
                on,
                Reason::PendingReview,
            ),
            // revocations and returns
            (
                Some(facts(Kind::New, Status::Rejected)),
                on,
                Reason::Rejected,
            ),
            (
                Some(facts(Kind::New, Status::Abandoned)),
                on,
                Reason::Abandoned,
            ),
            (
                Some(facts(Kind::New, Status::Cancelled)),
                on,
                Reason::Cancelled,
            ),
            (
                Some(facts(Kind::AccessExisting, Status::Disconnected)),
                on,
                Reason::Disconnected,
            ),
        ];
        for (filing, policy, want) in cases {
            assert_eq!(
                decide(filing.as_ref(), policy),
                want,
                "{filing:?} {policy:?}"
            );
        }
    }
}

#[cfg(test)]
mod reading_tests {
    use super::*;

    #[test]
    fn a_host_reads_into_a_refusal_or_a_domain_to_look_up() {
        let table: &[(&str, Option<Reason>, Option<&str>)] = &[
            // a subdomain stands for its registrable domain
            ("www.Shop.example.CN:8080", None, Some("example.cn")),
            // an IPv4 address is refused before any lookup
            ("192.0.2.1", Some(Reason::IpLiteral), None),
            // so is a bracketed IPv6 address with a port
            ("[2001:db8::1]:443", Some(Reason::IpLiteral), None),
            // a public suffix is never filed
            ("com.cn", Some(Reason::NotFiled), None),
            // garbage is an invalid host
            ("exa mple.cn", Some(Reason::InvalidHost), None),
            // an empty authority too
            ("", Some(Reason::InvalidHost), None),
        ];
        for (raw, refusal, domain) in table {
            let reading = HostReading::of(raw);
            assert_eq!(reading.refusal(), *refusal, "{raw}");
            assert_eq!(
                reading.domain.as_ref().map(|d| d.as_str()),
                *domain,
                "{raw}"
            );
        }
    }
}
