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
//!
//!  abandoned, disconnected ─ cancel (the authority cancels the number) ─► cancelled
//! ```
//!
//! | from | action (`Action::name`) | to |
//! |---|---|---|
//! | — | submit ([`Filing::submit`]) | `initial_review` |
//! | `initial_review` | `initial-review`, approve | `authority_review` |
//! | `initial_review` | `initial-review`, reject (reason required) | `rejected` |
//! | `authority_review` | `authority-review`, approve (ICP number required) | `approved` |
//! | `authority_review` | `authority-review`, reject (reason required) | `rejected` |
//! | `rejected` | `resubmit` (may replace entity, website, product; an access-existing filing's `icp_number`) | `initial_review` |
//! | `initial_review`, `authority_review`, `rejected`, `approved` | `abandon` | `abandoned` |
//! | `approved`, `abandoned`, `disconnected` | `cancel` | `cancelled` |
//! | `approved` | `disconnect` | `disconnected` |
//! | `initial_review`, `authority_review`, `rejected`, `approved` | `change` (变更) | unchanged |
//! | `cancelled` | — (terminal) | — |
//!
//! Beyond the edges, [`rules`] holds what the authority enforces: a number fits its
//! entity's province and names a website (`-N`), a change keeps the entity, and
//! every text field keeps the limits of [`text`].
//!
//! Contract: [`Filing::apply`] either performs one step — new status, new fields,
//! `updated_at`, and one [`HistoryEntry`] (who, when, from, to, reason) — or returns
//! a [`TransitionError`] and leaves the filing exactly as it was.

mod change;
mod details;
mod error;
mod icp_number;
mod password;
mod privacy;
mod rules;
mod submission;
#[cfg(test)]
mod tests;
mod text;

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use change::PendingChange;
pub use details::{Contact, DetailError, Entity, EntityType, Website};
pub use error::TransitionError;
pub use icp_number::{IcpNumber, IcpNumberError, PROVINCES};
pub use password::{FilingPassword, PASSWORD_MAX_CHARS};
pub use submission::Submission;
pub use text::{NAME_MAX_CHARS, REASON_MAX_CHARS};

use rules::{check_number_fits, clean_reason, validate_domains};

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
        !matches!(
            self,
            Status::Abandoned | Status::Cancelled | Status::Disconnected
        )
    }

    /// A filing in this status claims its ICP number: one live number belongs to
    /// one entity. A rejected filing's number is in question (it may be the wrong
    /// one) and a cancelled one's is gone.
    pub fn claims_number(self) -> bool {
        !matches!(self, Status::Rejected | Status::Cancelled)
    }

    /// No step leads out of a terminal status (`cancelled`); `abandoned` and
    /// `disconnected` no longer claim their domains but may still be cancelled.
    pub fn is_terminal(self) -> bool {
        self == Status::Cancelled
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
    /// A change of the entity under review (变更 of an approved filing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_change: Option<PendingChange>,
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
    /// Edit and resubmit a rejected filing; an access-existing filing may correct
    /// its number.
    Resubmit {
        entity: Option<Entity>,
        website: Option<Website>,
        product: Option<Product>,
        icp_number: Option<IcpNumber>,
        /// A new filing password with a corrected number (kept by the registry).
        filing_password: Option<FilingPassword>,
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

/// The action names each status accepts: the state machine's edges.
fn allowed_in(status: Status) -> &'static [&'static str] {
    match status {
        Status::InitialReview => &["initial-review", "abandon", "change"],
        Status::AuthorityReview => &["authority-review", "abandon", "change"],
        Status::Rejected => &["resubmit", "abandon", "change"],
        Status::Approved => &["abandon", "cancel", "disconnect", "change"],
        Status::Abandoned | Status::Disconnected => &["cancel"],
        Status::Cancelled => &[],
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
            filing_password: _,
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
            pending_change: None,
        })
    }

    /// Apply one workflow step at time `now` (RFC 3339 string) by `actor`; on success
    /// status/fields/updated_at/history are updated; on error the filing is unchanged.
    pub fn apply(&mut self, action: Action, actor: &str, now: &str) -> Result<(), TransitionError> {
        let from = self.status;
        let allowed = self.allowed_actions();
        if !allowed.contains(&action.name()) {
            return Err(TransitionError::Illegal {
                action: action.name(),
                from,
                allowed: describe_allowed(from, &allowed),
            });
        }
        let actor = required_actor(actor)?;
        let mut next = self.clone();
        let (to, reason) = next.step(action)?;
        if to != Status::Approved {
            // A change under review is moot once the filing leaves `approved`.
            next.pending_change = None;
        }
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

    /// The actions legal now (names as `Action::name()`): the status's edges, and
    /// the review step a pending entity change waits for.
    pub fn allowed_actions(&self) -> Vec<&'static str> {
        let mut allowed = allowed_in(self.status).to_vec();
        match self.pending_change.as_ref().map(|p| p.review) {
            Some(Status::InitialReview) => allowed.insert(0, "initial-review"),
            Some(Status::AuthorityReview) => allowed.insert(0, "authority-review"),
            _ => {}
        }
        allowed
    }

    /// Check the invariants `submit` and `apply` keep, for filings that arrive from
    /// elsewhere (`registry import`): domains, details, and an ICP number wherever
    /// one is required.
    pub fn validate(&self) -> Result<(), TransitionError> {
        validate_domains(&self.domains)?;
        // Details may be absent altogether (a filing imported from a record that
        // never kept them); details that are given must be valid.
        if self.entity != Entity::default() {
            self.entity.validate()?;
        }
        if self.website != Website::default() {
            self.website.validate()?;
        }
        for entry in &self.history {
            rules::check_history_entry(entry)?;
        }
        if let Some(pending) = &self.pending_change {
            pending.entity.validate()?;
        }
        // A cancelled filing may never have held a number (cancelled once abandoned).
        let needs_number = self.kind == Kind::AccessExisting
            || matches!(self.status, Status::Approved | Status::Disconnected);
        match &self.icp_number {
            None if needs_number => Err(TransitionError::MissingIcpNumber(self.status)),
            Some(number) => check_number_fits(number, &self.entity),
            None => Ok(()),
        }
    }

    /// Perform `action`'s changes on `self` (a scratch copy) and return the target
    /// status and the reason to record. The caller has checked legality.
    fn step(&mut self, action: Action) -> Result<(Status, Option<String>), TransitionError> {
        match action {
            Action::InitialReview { approve, reason } if self.status == Status::Approved => {
                self.review_change(false, approve, None, clean_reason(reason)?)
            }
            Action::InitialReview { approve, reason } => {
                review_outcome(approve, clean_reason(reason)?, Status::AuthorityReview)
            }
            Action::AuthorityReview {
                approve,
                icp_number,
                reason,
            } if self.status == Status::Approved => {
                self.review_change(true, approve, icp_number, clean_reason(reason)?)
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
                icp_number,
                filing_password,
            } => {
                if filing_password.is_some() && self.kind == Kind::New {
                    return Err(TransitionError::FilingPasswordOnNewFiling);
                }
                self.replace_details(entity, website)?;
                if let Some(product) = product {
                    self.product = product;
                }
                self.correct_number(icp_number)?;
                Ok((Status::InitialReview, None))
            }
            Action::Abandon { reason } => Ok((Status::Abandoned, clean_reason(reason)?)),
            Action::Cancel { reason } => Ok((Status::Cancelled, clean_reason(reason)?)),
            Action::Disconnect { reason } => Ok((Status::Disconnected, clean_reason(reason)?)),
            Action::ChangeDetails { entity, website } => self.change(entity, website),
        }
    }

    /// 管局审核: approval settles the ICP number; rejection needs a reason.
    fn authority_review(
        &mut self,
        approve: bool,
        given: Option<IcpNumber>,
        reason: Option<String>,
    ) -> Result<(Status, Option<String>), TransitionError> {
        let reason = clean_reason(reason)?;
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
        let number = number.ok_or(TransitionError::IcpNumberRequired)?;
        check_number_fits(&number, &self.entity)?;
        self.icp_number = Some(number);
        Ok((Status::Approved, reason))
    }

    /// A resubmitted access-existing filing may correct the number it carries (a
    /// rejection for a wrong number must be fixable); a new filing takes none.
    fn correct_number(&mut self, given: Option<IcpNumber>) -> Result<(), TransitionError> {
        if let Some(number) = given {
            if self.kind == Kind::New {
                return Err(TransitionError::IcpNumberOnNewFiling);
            }
            self.icp_number = Some(number);
        }
        match &self.icp_number {
            Some(number) => check_number_fits(number, &self.entity),
            None => Ok(()),
        }
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

/// A review's result: `pass_to` on approval; `rejected` with a required reason
/// (already cleaned).
fn review_outcome(
    approve: bool,
    reason: Option<String>,
    pass_to: Status,
) -> Result<(Status, Option<String>), TransitionError> {
    if approve {
        return Ok((pass_to, reason));
    }
    match reason {
        Some(reason) => Ok((Status::Rejected, Some(reason))),
        None => Err(TransitionError::ReasonRequired),
    }
}

fn required_actor(actor: &str) -> Result<String, TransitionError> {
    let actor = actor.trim();
    if actor.is_empty() {
        return Err(TransitionError::ActorRequired);
    }
    Ok(actor.to_owned())
}

/// The allowed next steps from `status`, for error messages.
fn describe_allowed(status: Status, allowed: &[&str]) -> String {
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
