//! The filing rules the authority enforces beyond the state machine's edges, checked
//! by [`Filing::apply`](super::Filing::apply), [`Submission::validate`](super::Submission::validate)
//! and [`Filing::validate`](super::Filing::validate) alike:
//!
//! - an ICP number is issued by the entity's province (a `浙` entity holds `浙ICP备…`)
//!   and a website's number carries its `-N`;
//! - a change (变更) keeps the entity: another certificate number is another entity,
//!   which must cancel and file anew;
//! - a reason is free text within [`REASON_MAX_CHARS`](super::text::REASON_MAX_CHARS).

use super::text::{check_text, NAME_MAX_CHARS, REASON_MAX_CHARS};
use super::{Entity, HistoryEntry, IcpNumber, TransitionError};
use crate::model::host::HostName;

/// A website's number (`-N`), issued by the entity's province when it names one.
pub(super) fn check_number_fits(
    number: &IcpNumber,
    entity: &Entity,
) -> Result<(), TransitionError> {
    if number.website_index().is_none() {
        return Err(TransitionError::IcpNumberWithoutWebsite(number.clone()));
    }
    if let Some(province) = entity.province.as_deref().map(str::trim) {
        if province != number.province() {
            return Err(TransitionError::IcpNumberProvince {
                number: number.clone(),
                province: province.to_owned(),
            });
        }
    }
    Ok(())
}

/// A change may correct the entity's details, never swap the entity: both
/// certificate numbers given and different is another entity.
pub(super) fn check_same_entity(
    current: &Entity,
    proposed: &Entity,
) -> Result<(), TransitionError> {
    match (current.certificate_key(), proposed.certificate_key()) {
        (Some(current), Some(proposed)) if current != proposed => {
            Err(TransitionError::EntityReplaced)
        }
        _ => Ok(()),
    }
}

/// A trimmed reason within the limits; blank counts as none.
pub(super) fn clean_reason(reason: Option<String>) -> Result<Option<String>, TransitionError> {
    let Some(reason) = reason else {
        return Ok(None);
    };
    check_text("reason", &reason, REASON_MAX_CHARS)?;
    let reason = reason.trim();
    Ok((!reason.is_empty()).then(|| reason.to_owned()))
}

/// An imported history entry keeps the limits a recorded step keeps.
pub(super) fn check_history_entry(entry: &HistoryEntry) -> Result<(), TransitionError> {
    check_text("history.actor", &entry.actor, NAME_MAX_CHARS)?;
    if let Some(reason) = &entry.reason {
        check_text("history.reason", reason, REASON_MAX_CHARS)?;
    }
    Ok(())
}

/// At least one domain, each listed once, each a registrable domain (ICANN section)
/// in its normal form: a subdomain, or a name under a private suffix such as
/// `github.io`, names the domain to file instead.
pub(super) fn validate_domains(domains: &[String]) -> Result<(), TransitionError> {
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
        check_registrable(domain)?;
    }
    Ok(())
}

fn check_registrable(domain: &str) -> Result<(), TransitionError> {
    let host = HostName::parse(domain).map_err(|e| TransitionError::BadDomain {
        domain: domain.chars().take(64).collect(),
        reason: e.to_string(),
    })?;
    match host.registrable_domain() {
        Some(registrable) if registrable.as_str() == domain => Ok(()),
        Some(registrable) => Err(TransitionError::NotRegistrable {
            domain: domain.to_owned(),
            file: registrable.into_string(),
        }),
        None => Err(TransitionError::PublicSuffix(domain.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::super::details::DetailError;
    use super::*;

    fn entity(province: Option<&str>, certificate: Option<&str>) -> Entity {
        Entity {
            name: "杭州示例科技有限公司".into(),
            province: province.map(str::to_owned),
            certificate_number: certificate.map(str::to_owned),
            ..Entity::default()
        }
    }

    fn number(text: &str) -> IcpNumber {
        IcpNumber::parse(text).unwrap()
    }

    #[test]
    fn a_number_fits_its_entity() {
        let zhe = entity(Some("浙"), None);
        let cases: Vec<(IcpNumber, &Entity, bool)> = vec![
            // the entity's province and a website index
            (number("浙ICP备30000001号-1"), &zhe, true),
            // another province's number
            (number("京ICP备30000001号-1"), &zhe, false),
            // the entity's number alone names no website
            (number("浙ICP备30000001号"), &zhe, false),
        ];
        for (n, e, ok) in cases {
            assert_eq!(check_number_fits(&n, e).is_ok(), ok, "{n}");
        }
        // an entity without a province is checked for the website index only
        let anywhere = entity(None, None);
        assert!(check_number_fits(&number("京ICP备30000001号-2"), &anywhere).is_ok());
    }

    #[test]
    fn a_change_keeps_the_certificate_number() {
        let a = entity(Some("浙"), Some("91330100MA27XXXX1X"));
        let cases: Vec<(Entity, bool)> = vec![
            // the same number, written in lower case with spaces
            (entity(Some("浙"), Some(" 91330100ma27xxxx1x ")), true),
            // another number: another entity
            (entity(Some("京"), Some("91110000MA01YYYY2Y")), false),
            // no number given: nothing to compare
            (entity(Some("浙"), None), true),
        ];
        for (proposed, ok) in cases {
            assert_eq!(check_same_entity(&a, &proposed).is_ok(), ok, "{proposed:?}");
        }
    }

    #[test]
    fn reasons_are_trimmed_and_limited() {
        assert_eq!(clean_reason(None), Ok(None));
        assert_eq!(clean_reason(Some("  ".into())), Ok(None));
        assert_eq!(
            clean_reason(Some(" 域名不符 ".into())),
            Ok(Some("域名不符".into()))
        );
        let long = "x".repeat(REASON_MAX_CHARS + 1);
        assert_eq!(
            clean_reason(Some(long)),
            Err(TransitionError::Detail(DetailError::TooLong {
                field: "reason",
                max: REASON_MAX_CHARS
            }))
        );
        assert_eq!(
            clean_reason(Some("a\r\nb".into())),
            Err(TransitionError::Detail(DetailError::ControlCharacter {
                field: "reason"
            }))
        );
    }
}
