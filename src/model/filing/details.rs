//! The details a filing carries about who files (`Entity`, 主体) and what is filed
//! (`Website`, 网站, with an owner `Contact` who may differ from the entity's).
//!
//! Contract: deserialising only checks shape (unknown fields are refused, absent
//! ones default); `validate()` checks content and names the failing field by its
//! path in the filing object (`entity.name`, `website.owner.phone`, …).
//! `masked()` hides personal data for list views.

use serde::{Deserialize, Serialize};

use super::icp_number::{province, provinces_list};
use super::text::{check_text, NAME_MAX_CHARS};
/// Certificate numbers (unified social credit code, ID card, …): length bounds.
const CERT_MIN_CHARS: usize = 6;
const CERT_MAX_CHARS: usize = 32;
/// Longest e-mail address accepted (RFC 5321 path limit).
const EMAIL_MAX_CHARS: usize = 254;

/// What kind of entity (主体) makes the filing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EntityType {
    #[default]
    Enterprise,
    Individual,
    Government,
    Institution,
    Other,
}

impl EntityType {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Enterprise => "enterprise",
            EntityType::Individual => "individual",
            EntityType::Government => "government",
            EntityType::Institution => "institution",
            EntityType::Other => "other",
        }
    }
}

/// The entity (主体) that makes the filing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Entity {
    pub name: String,
    #[serde(rename = "type")]
    pub entity_type: EntityType,
    /// Certificate (证件) number; personal data, masked in list views.
    pub certificate_number: Option<String>,
    /// Province-level abbreviation, e.g. `浙`.
    pub province: Option<String>,
    /// The person in charge of the entity (主体负责人); personal data.
    pub owner: Option<Contact>,
}

/// A person in charge: of a website (网站负责人) or of the entity (主体负责人).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Contact {
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
}

/// The website being filed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Website {
    pub name: String,
    /// The website's owner, when it differs from the entity's.
    pub owner: Option<Contact>,
}

/// Why filing details are invalid; each variant names the field's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetailError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} must be at most {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error(
        "{field}: unknown province abbreviation '{value}'; expected one of {}",
        provinces_list()
    )]
    UnknownProvince { field: &'static str, value: String },
    #[error("{field} must be {CERT_MIN_CHARS}–{CERT_MAX_CHARS} letters or digits (A-Z, a-z, 0-9)")]
    CertificateNumber { field: &'static str },
    #[error("{field} must be a mainland mobile number (11 digits, 13x–19x) or a landline of digits and hyphens, optionally prefixed with +86")]
    Phone { field: &'static str },
    #[error("{field} must be an e-mail address like name@example.cn")]
    Email { field: &'static str },
    #[error("{field} must not contain control characters (CR, LF, NUL, tab, …)")]
    ControlCharacter { field: &'static str },
    #[error("{field} must not contain bidirectional override or isolate characters")]
    BidiControl { field: &'static str },
    #[error("{field} must contain a visible character, not only invisible ones")]
    Invisible { field: &'static str },
}

impl Entity {
    /// Check content: name, province abbreviation, certificate number, owner.
    pub fn validate(&self) -> Result<(), DetailError> {
        check_name("entity.name", &self.name)?;
        if let Some(owner) = &self.owner {
            owner.validate_at(ENTITY_OWNER)?;
        }
        if let Some(p) = &self.province {
            check_text("entity.province", p, NAME_MAX_CHARS)?;
            if province(p.trim()).is_none() {
                return Err(DetailError::UnknownProvince {
                    field: "entity.province",
                    value: p.chars().take(16).collect(),
                });
            }
        }
        if let Some(cert) = &self.certificate_number {
            let len = cert.chars().count();
            let ok = (CERT_MIN_CHARS..=CERT_MAX_CHARS).contains(&len)
                && cert.chars().all(|c| c.is_ascii_alphanumeric());
            if !ok {
                return Err(DetailError::CertificateNumber {
                    field: "entity.certificate_number",
                });
            }
        }
        Ok(())
    }

    /// A copy with the certificate number and the owner's phone and e-mail masked.
    pub fn masked(&self) -> Self {
        Entity {
            certificate_number: self.certificate_number.as_deref().map(mask_middle),
            owner: self.owner.as_ref().map(Contact::masked),
            ..self.clone()
        }
    }

    /// The certificate number as compared (trimmed, upper-case), if given.
    pub fn certificate_key(&self) -> Option<String> {
        self.certificate_number
            .as_deref()
            .map(|c| c.trim().to_uppercase())
            .filter(|c| !c.is_empty())
    }
}

impl Contact {
    /// Check content; `path` is the contact's own field path (e.g. `website.owner`).
    fn validate_at(&self, path: ContactPath) -> Result<(), DetailError> {
        check_name(path.name, &self.name)?;
        if let Some(phone) = &self.phone {
            check_text(path.phone, phone, EMAIL_MAX_CHARS)?;
            if !is_phone(phone) {
                return Err(DetailError::Phone { field: path.phone });
            }
        }
        if let Some(email) = &self.email {
            check_text(path.email, email, EMAIL_MAX_CHARS)?;
            if !is_email(email) {
                return Err(DetailError::Email { field: path.email });
            }
        }
        Ok(())
    }

    /// A copy with phone and e-mail masked, for list views.
    pub fn masked(&self) -> Self {
        Contact {
            name: self.name.clone(),
            phone: self.phone.as_deref().map(mask_middle),
            email: self.email.as_deref().map(mask_email),
        }
    }
}

/// Field paths of a contact's fields, so errors can name them statically.
struct ContactPath {
    name: &'static str,
    phone: &'static str,
    email: &'static str,
}

const ENTITY_OWNER: ContactPath = ContactPath {
    name: "entity.owner.name",
    phone: "entity.owner.phone",
    email: "entity.owner.email",
};

const WEBSITE_OWNER: ContactPath = ContactPath {
    name: "website.owner.name",
    phone: "website.owner.phone",
    email: "website.owner.email",
};

impl Website {
    /// Check content: name and, if given, the owner contact.
    pub fn validate(&self) -> Result<(), DetailError> {
        check_name("website.name", &self.name)?;
        match &self.owner {
            Some(owner) => owner.validate_at(WEBSITE_OWNER),
            None => Ok(()),
        }
    }

    /// A copy with the owner's personal data masked, for list views.
    pub fn masked(&self) -> Self {
        Website {
            name: self.name.clone(),
            owner: self.owner.as_ref().map(Contact::masked),
        }
    }
}

/// A required name: not blank, within the limits of `text::check_text`.
fn check_name(field: &'static str, name: &str) -> Result<(), DetailError> {
    check_text(field, name, NAME_MAX_CHARS)?;
    if name.trim().is_empty() {
        return Err(DetailError::Empty { field });
    }
    Ok(())
}

/// A mainland mobile (`1[3-9]` + 9 digits) or a landline (`0571-85022088`,
/// `400-123-4567`), either optionally prefixed `+86`.
fn is_phone(s: &str) -> bool {
    let s = s.trim();
    let national = s
        .strip_prefix("+86")
        .map(|rest| rest.strip_prefix(['-', ' ']).unwrap_or(rest))
        .unwrap_or(s);
    is_mobile(national) || is_landline(national)
}

fn is_mobile(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 11
        && b[0] == b'1'
        && (b'3'..=b'9').contains(&b[1])
        && b.iter().all(u8::is_ascii_digit)
}

/// Digits in groups joined by single hyphens, 7–15 digits in all. An unbroken run
/// starting with '1' is a mobile number and must pass `is_mobile` instead.
fn is_landline(s: &str) -> bool {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let looks_mobile = s.starts_with('1') && !s.contains('-');
    !looks_mobile
        && (7..=15).contains(&digits)
        && s.split('-')
            .all(|group| !group.is_empty() && group.bytes().all(|b| b.is_ascii_digit()))
}

/// A simple `local@domain.tld` check: one '@', no whitespace, a dotted domain of
/// non-empty labels, a top-level label of at least two letters.
fn is_email(s: &str) -> bool {
    let s = s.trim();
    if s.chars().count() > EMAIL_MAX_CHARS || s.chars().any(char::is_whitespace) {
        return false;
    }
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    let tld_ok = labels
        .last()
        .is_some_and(|t| t.chars().count() >= 2 && !t.chars().all(|c| c.is_ascii_digit()));
    !local.is_empty() && labels.len() >= 2 && labels.iter().all(label_ok) && tld_ok
}

/// Keep the first 3 and the last 4 (long values) or 2 (short values) characters,
/// replace the rest with '*': `13800000000` → `138****0000`. Values too short to
/// keep both ends keep only their first character.
pub(super) fn mask_middle(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    let (head, tail) = match n {
        0 => (0, 0),
        1..=5 => (1, 0),
        6..=9 => (3, 2),
        _ => (3, 4),
    };
    let hidden = n - head - tail;
    let mut out: String = chars[..head].iter().collect();
    out.extend(std::iter::repeat_n('*', hidden));
    out.extend(&chars[n - tail..]);
    out
}

/// Mask an e-mail's local part except its first character, keep the domain:
/// `ops@example.cn` → `o**@example.cn`.
fn mask_email(s: &str) -> String {
    match s.split_once('@') {
        Some((local, domain)) => {
            let mut chars = local.chars();
            let first: String = chars.next().into_iter().collect();
            let stars = "*".repeat(chars.count());
            format!("{first}{stars}@{domain}")
        }
        None => mask_middle(s),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Valid details with every optional field set (shared with the lifecycle tests).
    pub(in crate::model::filing) fn entity() -> Entity {
        Entity {
            name: "杭州示例科技有限公司".into(),
            entity_type: EntityType::Enterprise,
            certificate_number: Some("91330100MA2CXXXX1X".into()),
            province: Some("浙".into()),
            owner: Some(Contact {
                name: "李四".into(),
                phone: Some("13900000001".into()),
                email: Some("boss@example.cn".into()),
            }),
        }
    }

    pub(in crate::model::filing) fn website() -> Website {
        Website {
            name: "示例旺铺".into(),
            owner: Some(Contact {
                name: "张三".into(),
                phone: Some("13800000000".into()),
                email: Some("ops@example.cn".into()),
            }),
        }
    }

    #[test]
    fn entity_validation() {
        let long = "名".repeat(101);
        let cases: Vec<(&str, Entity, Result<(), DetailError>)> = vec![
            // a complete, valid entity
            ("valid", entity(), Ok(())),
            // optional fields absent
            (
                "minimal",
                Entity {
                    certificate_number: None,
                    province: None,
                    ..entity()
                },
                Ok(()),
            ),
            // empty and blank names
            (
                "empty name",
                Entity {
                    name: String::new(),
                    ..entity()
                },
                Err(DetailError::Empty {
                    field: "entity.name",
                }),
            ),
            (
                "blank name",
                Entity {
                    name: "  ".into(),
                    ..entity()
                },
                Err(DetailError::Empty {
                    field: "entity.name",
                }),
            ),
            // 101 characters (multi-byte counted as one)
            (
                "long name",
                Entity {
                    name: long,
                    ..entity()
                },
                Err(DetailError::TooLong {
                    field: "entity.name",
                    max: 100,
                }),
            ),
            // the person in charge is checked like a website's owner, by its own path
            (
                "owner phone",
                Entity {
                    owner: Some(Contact {
                        phone: Some("12345".into()),
                        ..entity().owner.unwrap_or_default()
                    }),
                    ..entity()
                },
                Err(DetailError::Phone {
                    field: "entity.owner.phone",
                }),
            ),
            (
                "owner name with a line break",
                Entity {
                    owner: Some(Contact {
                        name: "李\n四".into(),
                        ..entity().owner.unwrap_or_default()
                    }),
                    ..entity()
                },
                Err(DetailError::ControlCharacter {
                    field: "entity.owner.name",
                }),
            ),
            // full province name is not an abbreviation
            (
                "province name",
                Entity {
                    province: Some("浙江".into()),
                    ..entity()
                },
                Err(DetailError::UnknownProvince {
                    field: "entity.province",
                    value: "浙江".into(),
                }),
            ),
            // certificate too short, too long, with punctuation, with full-width digits
            (
                "cert short",
                Entity {
                    certificate_number: Some("12345".into()),
                    ..entity()
                },
                Err(DetailError::CertificateNumber {
                    field: "entity.certificate_number",
                }),
            ),
            (
                "cert long",
                Entity {
                    certificate_number: Some("1".repeat(33)),
                    ..entity()
                },
                Err(DetailError::CertificateNumber {
                    field: "entity.certificate_number",
                }),
            ),
            (
                "cert punct",
                Entity {
                    certificate_number: Some("1234-5678".into()),
                    ..entity()
                },
                Err(DetailError::CertificateNumber {
                    field: "entity.certificate_number",
                }),
            ),
            (
                "cert full-width",
                Entity {
                    certificate_number: Some("１２３４５６".into()),
                    ..entity()
                },
                Err(DetailError::CertificateNumber {
                    field: "entity.certificate_number",
                }),
            ),
        ];
        for (name, e, expected) in cases {
            assert_eq!(e.validate(), expected, "{name}");
        }
    }

    #[test]
    fn website_validation() {
        let with_owner = |phone: Option<&str>, email: Option<&str>| Website {
            owner: Some(Contact {
                name: "张三".into(),
                phone: phone.map(str::to_owned),
                email: email.map(str::to_owned),
            }),
            ..website()
        };
        let phone_err = Err(DetailError::Phone {
            field: "website.owner.phone",
        });
        let email_err = Err(DetailError::Email {
            field: "website.owner.email",
        });
        let cases: Vec<(&str, Website, Result<(), DetailError>)> = vec![
            // complete and valid
            ("valid", website(), Ok(())),
            // owner may be absent (same as the entity's)
            (
                "no owner",
                Website {
                    owner: None,
                    ..website()
                },
                Ok(()),
            ),
            // website name empty
            (
                "empty name",
                Website {
                    name: String::new(),
                    ..website()
                },
                Err(DetailError::Empty {
                    field: "website.name",
                }),
            ),
            // owner without a name
            (
                "owner no name",
                Website {
                    owner: Some(Contact::default()),
                    ..website()
                },
                Err(DetailError::Empty {
                    field: "website.owner.name",
                }),
            ),
            // landlines with area code, with +86
            ("landline", with_owner(Some("0571-85022088"), None), Ok(())),
            (
                "+86 landline",
                with_owner(Some("+86-571-85022088"), None),
                Ok(()),
            ),
            (
                "+86 mobile",
                with_owner(Some("+8613912345678"), None),
                Ok(()),
            ),
            // mobile starting 12, too short, letters, double hyphen, trailing hyphen
            (
                "mobile 12x",
                with_owner(Some("12800000000"), None),
                phone_err.clone(),
            ),
            (
                "too short",
                with_owner(Some("12345"), None),
                phone_err.clone(),
            ),
            (
                "letters",
                with_owner(Some("1380000abcd"), None),
                phone_err.clone(),
            ),
            (
                "double hyphen",
                with_owner(Some("0571--85022088"), None),
                phone_err.clone(),
            ),
            (
                "trailing hyphen",
                with_owner(Some("057185022088-"), None),
                phone_err.clone(),
            ),
            // e-mail shapes
            (
                "email ok",
                with_owner(None, Some("a.b+c@mail.example.com.cn")),
                Ok(()),
            ),
            (
                "email no at",
                with_owner(None, Some("ops.example.cn")),
                email_err.clone(),
            ),
            (
                "email no tld",
                with_owner(None, Some("ops@localhost")),
                email_err.clone(),
            ),
            (
                "email empty local",
                with_owner(None, Some("@example.cn")),
                email_err.clone(),
            ),
            (
                "email space",
                with_owner(None, Some("o ps@example.cn")),
                email_err.clone(),
            ),
            (
                "email two at",
                with_owner(None, Some("a@b@example.cn")),
                email_err.clone(),
            ),
            (
                "email empty label",
                with_owner(None, Some("a@example..cn")),
                email_err.clone(),
            ),
            (
                "email 1-char tld",
                with_owner(None, Some("a@example.c")),
                email_err,
            ),
        ];
        for (name, w, expected) in cases {
            assert_eq!(w.validate(), expected, "{name}");
        }
    }

    #[test]
    fn masking() {
        let cases = [
            // phone: first 3, last 4
            ("13800000000", "138****0000"),
            // 18-character certificate number
            ("91330100MA2CXXXX1X", "913***********XX1X"),
            // short values keep the last 2
            ("1234567", "123**67"),
            // very short values keep only the first character
            ("12345", "1****"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(mask_middle(input), expected, "{input}");
        }
        assert_eq!(mask_email("ops@example.cn"), "o**@example.cn");
        assert_eq!(mask_email("张三@例子.中国"), "张*@例子.中国");

        let c = website().owner.unwrap().masked();
        assert_eq!(c.name, "张三");
        assert_eq!(c.phone.as_deref(), Some("138****0000"));
        assert_eq!(c.email.as_deref(), Some("o**@example.cn"));
        let none = Contact {
            name: "x".into(),
            phone: None,
            email: None,
        };
        assert_eq!(none.masked(), none);

        let e = entity().masked();
        assert_eq!(e.certificate_number.as_deref(), Some("913***********XX1X"));
        assert_eq!(e.name, entity().name);
        let w = website().masked();
        assert_eq!(
            w.owner.and_then(|o| o.phone).as_deref(),
            Some("138****0000")
        );
    }

    #[test]
    fn serde_shape() {
        let json = serde_json::to_value(entity()).unwrap();
        assert_eq!(json["type"], "enterprise");
        assert_eq!(json["certificate_number"], "91330100MA2CXXXX1X");
        // absent fields default
        let e: Entity = serde_json::from_str(r#"{"name":"x"}"#).unwrap();
        assert_eq!(e.entity_type, EntityType::Enterprise);
        let e: Entity = serde_json::from_str(r#"{"name":"x","type":"individual"}"#).unwrap();
        assert_eq!(e.entity_type, EntityType::Individual);
        // unknown fields are refused
        assert!(serde_json::from_str::<Entity>(r#"{"name":"x","typo":1}"#).is_err());
        assert!(serde_json::from_str::<Website>(r#"{"name":"x","ownr":null}"#).is_err());
        assert!(serde_json::from_str::<Contact>(r#"{"name":"x","mail":"a"}"#).is_err());
        assert!(serde_json::from_str::<Entity>(r#"{"name":"x","type":"company"}"#).is_err());
    }
}
