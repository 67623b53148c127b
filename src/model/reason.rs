//! The closed set of reasons the gate allows or blocks a request for: the
//! `X-Icpgate-Reason` header, the `reason` metric label and the block page's key.

use serde::Serialize;

/// Why the gate allowed or blocked a request; the `X-Icpgate-Reason` header value and
/// the `reason` metric label. The set is closed: adding one is a public-interface change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Filed,
    NotFiled,
    PendingReview,
    Rejected,
    Abandoned,
    Cancelled,
    Disconnected,
    IpLiteral,
    MissingHost,
    InvalidHost,
    SniMismatch,
    RegistryUnavailable,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::Filed,
        Reason::NotFiled,
        Reason::PendingReview,
        Reason::Rejected,
        Reason::Abandoned,
        Reason::Cancelled,
        Reason::Disconnected,
        Reason::IpLiteral,
        Reason::MissingHost,
        Reason::InvalidHost,
        Reason::SniMismatch,
        Reason::RegistryUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Filed => "filed",
            Reason::NotFiled => "not_filed",
            Reason::PendingReview => "pending_review",
            Reason::Rejected => "rejected",
            Reason::Abandoned => "abandoned",
            Reason::Cancelled => "cancelled",
            Reason::Disconnected => "disconnected",
            Reason::IpLiteral => "ip_literal",
            Reason::MissingHost => "missing_host",
            Reason::InvalidHost => "invalid_host",
            Reason::SniMismatch => "sni_mismatch",
            Reason::RegistryUnavailable => "registry_unavailable",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
