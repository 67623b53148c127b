//! How much personal data a filing shows, in three views:
//!
//! - [`Filing::public_view`], for a reader without a token: no personal data at all
//!   — no contacts, no certificate number, an individual entity's name masked (a
//!   person's name is personal data; a company's is public in the authority's
//!   register), and no free-text reasons (a reason once carried a name and a phone);
//! - [`Filing::masked`], for a reader with a token: names in clear, phones, e-mails
//!   and certificate numbers masked;
//! - the filing itself, for a reader allowed to reveal who asked to (the admin API
//!   checks and audits that, in `admin::privacy`).

use super::details::mask_middle;
use super::{Entity, EntityType, Filing, HistoryEntry, PendingChange, Website};

impl Filing {
    /// Phones, e-mails and certificate numbers masked; names in clear.
    pub fn masked(&self) -> Filing {
        let pending_change = self.pending_change.as_ref().map(|p| PendingChange {
            entity: p.entity.masked(),
            review: p.review,
        });
        Filing {
            entity: self.entity.masked(),
            website: self.website.masked(),
            pending_change,
            ..self.clone()
        }
    }

    /// No personal data: what anyone who can reach the admin port may read.
    pub fn public_view(&self) -> Filing {
        let entity = public_entity(&self.entity);
        let pending_change = self.pending_change.as_ref().map(|p| PendingChange {
            entity: public_entity(&p.entity),
            review: p.review,
        });
        let website = Website {
            name: self.website.name.clone(),
            owner: None,
        };
        let history = self
            .history
            .iter()
            .map(|entry| HistoryEntry {
                reason: None,
                ..entry.clone()
            })
            .collect();
        Filing {
            entity,
            website,
            history,
            pending_change,
            ..self.clone()
        }
    }
}

/// An entity without personal data: no certificate number or contact, and an
/// individual's name masked.
fn public_entity(entity: &Entity) -> Entity {
    Entity {
        name: match entity.entity_type {
            EntityType::Individual => mask_middle(&entity.name),
            _ => entity.name.clone(),
        },
        certificate_number: None,
        owner: None,
        ..entity.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::super::details::tests::{entity, website};
    use super::super::{Kind, Product, Status};
    use super::*;

    fn filing(entity_type: EntityType) -> Filing {
        Filing {
            id: 1,
            kind: Kind::New,
            product: Product::Storefront,
            status: Status::Rejected,
            domains: vec!["a.cn".into()],
            icp_number: None,
            entity: Entity {
                entity_type,
                name: "王小明".into(),
                ..entity()
            },
            website: website(),
            history: vec![HistoryEntry {
                at: "2024-05-01T08:00:00Z".into(),
                actor: "reviewer".into(),
                from: Some(Status::InitialReview),
                to: Status::Rejected,
                reason: Some("联系人王小明 13800000000 不符".into()),
            }],
            created_at: "2024-05-01T08:00:00Z".into(),
            updated_at: "2024-05-01T08:00:00Z".into(),
            pending_change: None,
        }
    }

    #[test]
    fn the_public_view_carries_no_personal_data() {
        let private = [
            "王小明",
            "13800000000",
            "13900000001",
            "张三",
            "李四",
            "91330100MA2CXXXX1X",
            "ops@example.cn",
        ];
        for entity_type in [EntityType::Individual, EntityType::Enterprise] {
            let text = serde_json::to_string(&filing(entity_type).public_view()).unwrap();
            for secret in private {
                // an enterprise's name is public (the authority's register shows it)
                if entity_type == EntityType::Enterprise && secret == "王小明" {
                    continue;
                }
                assert!(
                    !text.contains(secret),
                    "{entity_type:?}: {secret} in {text}"
                );
            }
        }
        // the masked view keeps names, masks numbers
        let masked = filing(EntityType::Individual).masked();
        let owner = masked.website.owner.unwrap_or_default();
        assert_eq!(
            (owner.name.as_str(), owner.phone.as_deref()),
            ("张三", Some("138****0000"))
        );
    }
}
