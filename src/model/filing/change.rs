//! 变更: changing a filing's details without changing its status.
//!
//! - contacts (`entity.owner`, the website and its owner) change at once: access is
//!   not interrupted, and the seed asks to keep contacts current;
//! - the entity's registered details (name, type, province) under the same
//!   certificate number change at once while the filing is still under review or
//!   rejected; on an approved filing they become a [`PendingChange`] that goes
//!   through initial review and authority review (the same `initial-review` and
//!   `authority-review` steps) while the approved filing keeps serving, and is
//!   applied on approval; the history records the submission, each review and the
//!   outcome;
//! - another certificate number is another entity: refused (cancel and file anew).

use serde::{Deserialize, Serialize};

use super::rules::{check_number_fits, check_same_entity};
use super::text::REASON_MAX_CHARS;
use super::{Entity, Filing, IcpNumber, Status, TransitionError, Website};

/// A change of an approved filing's entity, under review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingChange {
    /// The entity as it will be once the change is approved.
    pub entity: Entity,
    /// Where the change is: `initial_review` or `authority_review`.
    pub review: Status,
}

impl Filing {
    /// The `change` step: apply contacts and website at once; the entity's
    /// registered details at once, or as a pending change of an approved filing.
    pub(super) fn change(
        &mut self,
        entity: Option<Entity>,
        website: Option<Website>,
    ) -> Result<(Status, Option<String>), TransitionError> {
        if entity.is_none() && website.is_none() {
            return Err(TransitionError::NothingToChange);
        }
        let mut notes = Vec::new();
        if let Some(website) = website {
            website.validate()?;
            self.website = website;
            notes.push("changed website");
        }
        if let Some(entity) = entity {
            entity.validate()?;
            check_same_entity(&self.entity, &entity)?;
            let registered = same_registered_details(&self.entity, &entity);
            if self.status == Status::Approved && !registered {
                if self.pending_change.is_some() {
                    return Err(TransitionError::ChangePending);
                }
                check_number_fits_if_any(self.icp_number.as_ref(), &entity)?;
                self.entity.owner = entity.owner.clone();
                self.pending_change = Some(PendingChange {
                    entity,
                    review: Status::InitialReview,
                });
                notes.push("entity change submitted for initial review");
            } else {
                self.entity = entity;
                notes.push("changed entity");
            }
        }
        check_number_fits_if_any(self.icp_number.as_ref(), &self.entity)?;
        Ok((self.status, Some(notes.join("; "))))
    }

    /// A review step of the pending change (`authority` for 管局审核): approval
    /// moves it on, and the authority's applies it; a rejection (reason required)
    /// drops it. The filing keeps its status and number throughout.
    pub(super) fn review_change(
        &mut self,
        authority: bool,
        approve: bool,
        icp_number: Option<IcpNumber>,
        reason: Option<String>,
    ) -> Result<(Status, Option<String>), TransitionError> {
        if icp_number.is_some() {
            return Err(TransitionError::IcpNumberOnChangeReview);
        }
        let Some(pending) = self.pending_change.take() else {
            return Err(TransitionError::NothingToChange);
        };
        let outcome = match (authority, approve) {
            (false, true) => {
                self.pending_change = Some(PendingChange {
                    review: Status::AuthorityReview,
                    ..pending
                });
                "entity change passed initial review"
            }
            (true, true) => {
                check_number_fits_if_any(self.icp_number.as_ref(), &pending.entity)?;
                let owner = self.entity.owner.take();
                self.entity = Entity {
                    owner,
                    ..pending.entity
                };
                "entity change approved and applied"
            }
            (_, false) if reason.is_none() => return Err(TransitionError::ReasonRequired),
            (_, false) => "entity change rejected",
        };
        Ok((self.status, Some(note(outcome, reason))))
    }
}

/// Name, type, province and certificate number: what the authority registered.
fn same_registered_details(current: &Entity, proposed: &Entity) -> bool {
    current.name.trim() == proposed.name.trim()
        && current.entity_type == proposed.entity_type
        && current.province.as_deref().map(str::trim) == proposed.province.as_deref().map(str::trim)
        && current.certificate_key() == proposed.certificate_key()
}

fn check_number_fits_if_any(
    number: Option<&IcpNumber>,
    entity: &Entity,
) -> Result<(), TransitionError> {
    number.map_or(Ok(()), |number| check_number_fits(number, entity))
}

/// `outcome`, with the reviewer's reason when given, within the reason limit.
fn note(outcome: &str, reason: Option<String>) -> String {
    let text = match reason {
        Some(reason) => format!("{outcome}: {reason}"),
        None => outcome.to_owned(),
    };
    text.chars().take(REASON_MAX_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::super::details::tests::{entity, website};
    use super::super::{Action, Contact, Kind, Product, Submission};
    use super::*;

    const T: &str = "2024-05-01T08:00:00Z";

    fn approved() -> Filing {
        let submission = Submission {
            kind: Kind::New,
            product: Product::Storefront,
            domains: vec!["a.cn".into()],
            icp_number: None,
            entity: entity(),
            website: website(),
            filing_password: None,
        };
        let mut f = Filing::submit(1, submission, "applicant", T).unwrap();
        let pass = |approve| Action::InitialReview {
            approve,
            reason: None,
        };
        f.apply(pass(true), "reviewer", T).unwrap();
        let number = IcpNumber::parse("浙ICP备30000001号-1").ok();
        let authority = Action::AuthorityReview {
            approve: true,
            icp_number: number,
            reason: None,
        };
        f.apply(authority, "authority", T).unwrap();
        f
    }

    fn change(entity: Entity) -> Action {
        Action::ChangeDetails {
            entity: Some(entity),
            website: None,
        }
    }

    #[test]
    fn a_renamed_entity_is_reviewed_while_the_filing_keeps_serving() {
        let mut f = approved();
        let renamed = Entity {
            name: "杭州新名科技有限公司".into(),
            owner: Some(Contact {
                name: "王五".into(),
                ..Contact::default()
            }),
            ..entity()
        };
        f.apply(change(renamed.clone()), "owner", T).unwrap();
        // Still approved with the registered name; the contact applies at once.
        assert_eq!(f.status, Status::Approved);
        assert_eq!(f.entity.name, entity().name);
        assert_eq!(f.entity.owner, renamed.owner);
        assert_eq!(f.allowed_actions()[0], "initial-review");
        // A second entity change waits for the first.
        assert_eq!(
            f.clone().apply(change(renamed.clone()), "owner", T),
            Err(TransitionError::ChangePending)
        );
        let initial = Action::InitialReview {
            approve: true,
            reason: None,
        };
        f.apply(initial, "reviewer", T).unwrap();
        assert_eq!(f.allowed_actions()[0], "authority-review");
        let authority = |icp_number| Action::AuthorityReview {
            approve: true,
            icp_number,
            reason: None,
        };
        let number = IcpNumber::parse("浙ICP备30000001号-1").ok();
        assert_eq!(
            f.clone().apply(authority(number), "authority", T),
            Err(TransitionError::IcpNumberOnChangeReview)
        );
        f.apply(authority(None), "authority", T).unwrap();
        assert_eq!(
            (f.status, f.entity.name.as_str()),
            (Status::Approved, "杭州新名科技有限公司")
        );
        assert_eq!(f.pending_change, None);
        let notes: Vec<_> = f.history[3..]
            .iter()
            .map(|h| h.reason.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            notes,
            [
                "entity change submitted for initial review",
                "entity change passed initial review",
                "entity change approved and applied"
            ]
        );
    }

    #[test]
    fn a_rejected_entity_change_is_dropped_and_contacts_apply_at_once() {
        let mut f = approved();
        let renamed = Entity {
            name: "改名".into(),
            ..entity()
        };
        f.apply(change(renamed), "owner", T).unwrap();
        let reject = |reason: Option<&str>| Action::InitialReview {
            approve: false,
            reason: reason.map(str::to_owned),
        };
        assert_eq!(
            f.clone().apply(reject(None), "reviewer", T),
            Err(TransitionError::ReasonRequired)
        );
        f.apply(reject(Some("名称核验不符")), "reviewer", T)
            .unwrap();
        assert_eq!(
            (f.status, f.pending_change.is_none()),
            (Status::Approved, true)
        );
        assert_eq!(f.entity.name, entity().name);
        // Only the person in charge changes: at once, no review.
        let new_owner = Entity {
            owner: None,
            ..entity()
        };
        f.apply(change(new_owner.clone()), "owner", T).unwrap();
        assert_eq!(
            (f.entity.clone(), f.pending_change.is_none()),
            (new_owner, true)
        );
    }
}
