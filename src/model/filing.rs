//! The filing model (备案) and its lifecycle state machine — the one place where a
//! filing's status may change. Pure: no I/O, no clock except `now_rfc3339`.
//!
//! A filing is made by an [`Entity`] for a [`Website`] covering one or more
//! registrable domains, for one [`Product`] (which decides the upstream pool). It is
//! either a new filing ([`Kind::New`], which receives its [`IcpNumber`] on approval)
//! or access to a filing made with another provider ([`Kind::AccessExisting`], which
//! carries its number from the start).
//!
//! # The state machine
//!
//! ```text
//!   submit / resubmit
//!        │
//!        ▼           pass                      pass (ICP number)
//!  initial_review ────────► authority_review ──────────────────► approved ──► cancelled
//!        │                        │                                  │    └─► disconnected
//!        │ fail (reason)          │ fail (reason)                    │
//!        ▼                        ▼                                  │
//!     rejected ◄──────────────────┘                                  │
//!        │ resubmit ─► initial_review                                │
//!        │                                                           │
//!  initial_review, authority_review, rejected, approved ─ abandon ─► abandoned
//! ```
//!
//! | from | action (`Action::name`) | to |
//! |---|---|---|
//! | — | submit ([`Filing::submit`]) | `initial_review` |
//! | `initial_review` | `initial-review`, approve | `authority_review` |
//! | `initial_review` | `initial-review`, reject (reason required) | `rejected` |
//! | `authority_review` | `authority-review`, approve (ICP number required) | `approved` |
//! | `authority_review` | `authority-review`, reject (reason required) | `rejected` |
//! | `rejected` | `resubmit` (may replace entity, website, product) | `initial_review` |
//! | `initial_review`, `authority_review`, `rejected`, `approved` | `abandon` | `abandoned` |
//! | `approved` | `cancel` | `cancelled` |
//! | `approved` | `disconnect` | `disconnected` |
//! | `initial_review`, `authority_review`, `rejected`, `approved` | `change` (变更) | unchanged |
//! | `abandoned`, `cancelled`, `disconnected` | — (terminal) | — |
//!
//! Contract: [`Filing::apply`] either performs one step — new status, new fields,
//! `updated_at`, and one [`HistoryEntry`] (who, when, from, to, reason) — or returns
//! a [`TransitionError`] and leaves the filing exactly as it was.

mod details;
mod icp_number;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use details::{Contact, DetailError, Entity, EntityType, Website};
pub use icp_number::{IcpNumber, IcpNumberError, PROVINCES};

/// Where a filing is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InitialReview,
    AuthorityReview,
    Approved,
    Rejected,
    Abandoned,
    Cancelled,
    Disconnected,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::InitialReview,
        Status::AuthorityReview,
        Status::Approved,
        Status::Rejected,
        Status::Abandoned,
        Status::Cancelled,
        Status::Disconnected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::InitialReview => "initial_review",
            Status::AuthorityReview => "authority_review",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Abandoned => "abandoned",
            Status::Cancelled => "cancelled",
            Status::Disconnected => "disconnected",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A live filing still claims its domains: a registrable domain belongs to at
    /// most one live filing (`initial_review`, `authority_review`, `approved`,
    /// `rejected`).
    pub fn is_live(self) -> bool {
        !self.is_terminal()
    }

    /// No step leads out of a terminal status (`abandoned`, `cancelled`,
    /// `disconnected`).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Abandoned | Status::Cancelled | Status::Disconnected
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new filing, or access through this provider to one filed elsewhere
/// (接入已有备案).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    New,
    AccessExisting,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::New => "new",
            Kind::AccessExisting => "access_existing",
        }
    }
}

/// The hosted product the domains are bound to; decides the upstream pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Product {
    /// 旺铺
    Storefront,
    /// 企业官网
    CorporateSite,
}

impl Product {
    pub const ALL: [Product; 2] = [Product::Storefront, Product::CorporateSite];

    pub fn as_str(self) -> &'static str {
        match self {
            Product::Storefront => "storefront",
            Product::CorporateSite => "corporate_site",
        }
    }

    pub fn parse(s: &str) -> Option<Product> {
        Product::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded step: who moved the filing from which status to which, when, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    /// RFC 3339, UTC.
    pub at: String,
    pub actor: String,
    /// `None` for the submission.
    pub from: Option<Status>,
    pub to: Status,
    pub reason: Option<String>,
}

/// A filing: the admin API's filing object and one line of `registry export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filing {
    pub id: i64,
    #[serde(default)]
    pub kind: Kind,
    pub product: Product,
    pub status: Status,
    /// Registrable domains, punycode, already normalised by the caller.
    pub domains: Vec<String>,
    #[serde(default)]
    pub icp_number: Option<IcpNumber>,
    pub entity: Entity,
    pub website: Website,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    pub created_at: String,
    pub updated_at: String,
}

/// What a submission (`POST /v1/filings`) supplies; the rest is assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    #[serde(default)]
    pub kind: Kind,
    pub product: Product,
    /// Registrable domains, punycode, already normalised by the caller.
    pub domains: Vec<String>,
    /// Required for `access_existing`; refused for `new` (assigned on approval).
    #[serde(default)]
    pub icp_number: Option<IcpNumber>,
    pub entity: Entity,
    pub website: Website,
}

/// One step of the workflow, as the admin API names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// 初审 by the access provider.
    InitialReview {
        approve: bool,
        reason: Option<String>,
    },
    /// 管局审核 by the provincial communications administration.
    AuthorityReview {
        approve: bool,
        icp_number: Option<IcpNumber>,
        reason: Option<String>,
    },
    /// Edit and resubmit a rejected filing.
    Resubmit {
        entity: Option<Entity>,
        website: Option<Website>,
        product: Option<Product>,
    },
    /// 放弃当前备案
    Abandon { reason: Option<String> },
    /// 注销
    Cancel { reason: Option<String> },
    /// 取消接入
    Disconnect { reason: Option<String> },
    /// 变更: change details of an approved (or live) filing without changing status;
    /// recorded in history with from == to.
    ChangeDetails {
        entity: Option<Entity>,
        website: Option<Website>,
    },
}

impl Action {
    /// Every action name, in workflow order.
    pub const NAMES: [&'static str; 7] = [
        "initial-review",
        "authority-review",
        "resubmit",
        "abandon",
        "cancel",
        "disconnect",
        "change",
    ];

    /// The admin API's name for this step (`/v1/filings/{id}/<name>`).
    pub fn name(&self) -> &'static str {
        match self {
            Action::InitialReview { .. } => "initial-review",
            Action::AuthorityReview { .. } => "authority-review",
            Action::Resubmit { .. } => "resubmit",
            Action::Abandon { .. } => "abandon",
            Action::Cancel { .. } => "cancel",
            Action::Disconnect { .. } => "disconnect",
            Action::ChangeDetails { .. } => "change",
        }
    }
}

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
}

/// The action names each status accepts: the state machine's edges.
fn allowed_in(status: Status) -> &'static [&'static str] {
    match status {
        Status::InitialReview => &["initial-review", "abandon", "change"],
        Status::AuthorityReview => &["authority-review", "abandon", "change"],
        Status::Rejected => &["resubmit", "abandon", "change"],
        Status::Approved => &["abandon", "cancel", "disconnect", "change"],
        Status::Abandoned | Status::Cancelled | Status::Disconnected => &[],
    }
}

impl Filing {
    /// Create a filing from a submission: validated, status `initial_review`,
    /// history holding the submission.
    pub fn submit(
        id: i64,
        submission: Submission,
        actor: &str,
        now: &str,
    ) -> Result<Filing, TransitionError> {
        let actor = required_actor(actor)?;
        submission.validate()?;
        let status = Status::InitialReview;
        let Submission {
            kind,
            product,
            domains,
            icp_number,
            entity,
            website,
        } = submission;
        Ok(Filing {
            id,
            kind,
            product,
            status,
            domains,
            icp_number,
            entity,
            website,
            history: vec![HistoryEntry {
                at: now.to_owned(),
                actor,
                from: None,
                to: status,
                reason: None,
            }],
            created_at: now.to_owned(),
            updated_at: now.to_owned(),
        })
    }

    /// Apply one workflow step at time `now` (RFC 3339 string) by `actor`; on success
    /// status/fields/updated_at/history are updated; on error the filing is unchanged.
    pub fn apply(&mut self, action: Action, actor: &str, now: &str) -> Result<(), TransitionError> {
        let from = self.status;
        if !allowed_in(from).contains(&action.name()) {
            return Err(TransitionError::Illegal {
                action: action.name(),
                from,
                allowed: describe_allowed(from),
            });
        }
        let actor = required_actor(actor)?;
        let mut next = self.clone();
        let (to, reason) = next.step(action)?;
        next.status = to;
        next.updated_at = now.to_owned();
        next.history.push(HistoryEntry {
            at: now.to_owned(),
            actor,
            from: Some(from),
            to,
            reason,
        });
        *self = next;
        Ok(())
    }

    /// The actions legal from the current status (names as `Action::name()`).
    pub fn allowed_actions(&self) -> Vec<&'static str> {
        allowed_in(self.status).to_vec()
    }

    /// A copy with personal data (certificate number, owner phone and e-mail)
    /// masked: the one masking of the admin API's lists and of reads without a token.
    pub fn masked(&self) -> Filing {
        Filing {
            entity: self.entity.masked(),
            website: self.website.masked(),
            ..self.clone()
        }
    }

    /// Check the invariants `submit` and `apply` keep, for filings that arrive from
    /// elsewhere (`registry import`): domains, details, and an ICP number wherever
    /// one is required.
    pub fn validate(&self) -> Result<(), TransitionError> {
        validate_domains(&self.domains)?;
        self.entity.validate()?;
        self.website.validate()?;
        let needs_number = self.kind == Kind::AccessExisting
            || matches!(
                self.status,
                Status::Approved | Status::Cancelled | Status::Disconnected
            );
        if needs_number && self.icp_number.is_none() {
            return Err(TransitionError::MissingIcpNumber(self.status));
        }
        Ok(())
    }

    /// Perform `action`'s changes on `self` (a scratch copy) and return the target
    /// status and the reason to record. The caller has checked legality.
    fn step(&mut self, action: Action) -> Result<(Status, Option<String>), TransitionError> {
        match action {
            Action::InitialReview { approve, reason } => {
                review_outcome(approve, reason, Status::AuthorityReview)
            }
            Action::AuthorityReview {
                approve,
                icp_number,
                reason,
            } => self.authority_review(approve, icp_number, reason),
            Action::Resubmit {
                entity,
                website,
                product,
            } => {
                self.replace_details(entity, website)?;
                if let Some(product) = product {
                    self.product = product;
                }
                Ok((Status::InitialReview, None))
            }
            Action::Abandon { reason } => Ok((Status::Abandoned, clean_reason(reason))),
            Action::Cancel { reason } => Ok((Status::Cancelled, clean_reason(reason))),
            Action::Disconnect { reason } => Ok((Status::Disconnected, clean_reason(reason))),
            Action::ChangeDetails { entity, website } => {
                let note = change_note(entity.is_some(), website.is_some())?;
                self.replace_details(entity, website)?;
                Ok((self.status, Some(note)))
            }
        }
    }

    /// 管局审核: approval settles the ICP number; rejection needs a reason.
    fn authority_review(
        &mut self,
        approve: bool,
        given: Option<IcpNumber>,
        reason: Option<String>,
    ) -> Result<(Status, Option<String>), TransitionError> {
        if !approve {
            if given.is_some() {
                return Err(TransitionError::IcpNumberOnRejection);
            }
            return review_outcome(false, reason, Status::Approved);
        }
        let number = match (self.kind, self.icp_number.take(), given) {
            (Kind::AccessExisting, Some(existing), Some(given)) if existing != given => {
                return Err(TransitionError::IcpNumberMismatch { existing, given });
            }
            (Kind::AccessExisting, existing, given) => existing.or(given),
            (Kind::New, existing, given) => given.or(existing),
        };
        self.icp_number = Some(number.ok_or(TransitionError::IcpNumberRequired)?);
        Ok((Status::Approved, clean_reason(reason)))
    }

    /// Replace entity and/or website after validating the replacements.
    fn replace_details(
        &mut self,
        entity: Option<Entity>,
        website: Option<Website>,
    ) -> Result<(), TransitionError> {
        if let Some(entity) = entity {
            entity.validate()?;
            self.entity = entity;
        }
        if let Some(website) = website {
            website.validate()?;
            self.website = website;
        }
        Ok(())
    }
}

impl Submission {
    /// Check domains, details, and the ICP number rule for the kind.
    pub fn validate(&self) -> Result<(), TransitionError> {
        validate_domains(&self.domains)?;
        self.entity.validate()?;
        self.website.validate()?;
        match (self.kind, &self.icp_number) {
            (Kind::New, Some(_)) => Err(TransitionError::IcpNumberOnNewFiling),
            (Kind::AccessExisting, None) => Err(TransitionError::AccessExistingRequiresIcpNumber),
            _ => Ok(()),
        }
    }
}

/// A review's result: `pass_to` on approval; `rejected` with a required reason.
fn review_outcome(
    approve: bool,
    reason: Option<String>,
    pass_to: Status,
) -> Result<(Status, Option<String>), TransitionError> {
    let reason = clean_reason(reason);
    if approve {
        return Ok((pass_to, reason));
    }
    match reason {
        Some(reason) => Ok((Status::Rejected, Some(reason))),
        None => Err(TransitionError::ReasonRequired),
    }
}

/// The history note for a change of details (变更).
fn change_note(entity: bool, website: bool) -> Result<String, TransitionError> {
    match (entity, website) {
        (true, true) => Ok("changed entity and website".to_owned()),
        (true, false) => Ok("changed entity".to_owned()),
        (false, true) => Ok("changed website".to_owned()),
        (false, false) => Err(TransitionError::NothingToChange),
    }
}

/// A trimmed reason; blank counts as none.
fn clean_reason(reason: Option<String>) -> Option<String> {
    reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
}

fn required_actor(actor: &str) -> Result<String, TransitionError> {
    let actor = actor.trim();
    if actor.is_empty() {
        return Err(TransitionError::ActorRequired);
    }
    Ok(actor.to_owned())
}

fn validate_domains(domains: &[String]) -> Result<(), TransitionError> {
    if domains.is_empty() {
        return Err(TransitionError::DomainsRequired);
    }
    let mut seen = std::collections::HashSet::new();
    for domain in domains {
        if domain.trim().is_empty() {
            return Err(TransitionError::EmptyDomain);
        }
        if !seen.insert(domain.as_str()) {
            return Err(TransitionError::DuplicateDomain(domain.clone()));
        }
    }
    Ok(())
}

/// The allowed next steps of `status`, for error messages.
fn describe_allowed(status: Status) -> String {
    let allowed = allowed_in(status);
    if allowed.is_empty() {
        return format!("none ({status} is final)");
    }
    allowed.join(", ")
}

/// The current time as RFC 3339 UTC with seconds precision, e.g.
/// `2024-05-01T08:00:00Z`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
