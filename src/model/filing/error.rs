//! Why a filing step, a submission or an imported filing was refused: one variant
//! per rule, each message naming the field or the rule so the admin API's 400 or
//! 409 and an import's line error say what to fix.

use super::{DetailError, IcpNumber, Status};

/// Why a step (or a submission, or an imported filing) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("cannot {action} a filing in status {from}; allowed next steps: {allowed}")]
    Illegal {
        action: &'static str,
        from: Status,
        allowed: String,
    },
    #[error("approving a new filing requires an icp_number")]
    IcpNumberRequired,
    #[error("a failed review requires a reason")]
    ReasonRequired,
    #[error(transparent)]
    Detail(#[from] DetailError),
    #[error("icp_number {given} does not match the number {existing} this access-existing filing carries")]
    IcpNumberMismatch {
        existing: IcpNumber,
        given: IcpNumber,
    },
    #[error("an icp_number is accepted only when approving")]
    IcpNumberOnRejection,
    #[error("accessing an existing filing requires its icp_number")]
    AccessExistingRequiresIcpNumber,
    #[error("a new filing receives its icp_number on approval; do not supply one")]
    IcpNumberOnNewFiling,
    #[error("a filing in status {0} must carry an icp_number")]
    MissingIcpNumber(Status),
    #[error("an actor is required: every step records who made it")]
    ActorRequired,
    #[error("a change must supply entity, website or both")]
    NothingToChange,
    #[error("a filing must cover at least one domain")]
    DomainsRequired,
    #[error("domains must not contain an empty name")]
    EmptyDomain,
    #[error("domain {0} is listed twice")]
    DuplicateDomain(String),
    #[error("domain {domain:?}: {reason}")]
    BadDomain { domain: String, reason: String },
    #[error("domain {domain:?} is not a registrable domain: file {file} instead (it covers every name under it)")]
    NotRegistrable { domain: String, file: String },
    #[error("domain {0:?} is a public suffix: nothing under it alone can be filed")]
    PublicSuffix(String),
    #[error("icp_number {number} is not issued by the entity's province {province}")]
    IcpNumberProvince { number: IcpNumber, province: String },
    #[error("icp_number {0} names no website: a website's number ends in -N, e.g. {0}-1")]
    IcpNumberWithoutWebsite(IcpNumber),
    #[error("an entity change of this filing is already under review: wait for its outcome")]
    ChangePending,
    #[error("an entity change keeps the filing's icp_number: do not supply one")]
    IcpNumberOnChangeReview,
    #[error("a change cannot replace the entity (another certificate number is another entity): cancel this filing and file anew")]
    EntityReplaced,
    #[error(
        "filing_password: accessing an existing filing requires its filing password (备案密码)"
    )]
    FilingPasswordRequired,
    #[error("filing_password: only an access-existing filing carries a filing password")]
    FilingPasswordOnNewFiling,
}
