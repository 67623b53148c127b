//! `IcpNumber`: a validated ICP filing number such as `浙ICP备12345678号-1`.
//!
//! Contract: `IcpNumber::parse` accepts exactly
//! `<province abbreviation>ICP备<4–10 ASCII digits>号[-<N>]` (N a positive integer
//! without a leading zero) after trimming surrounding whitespace, and rejects
//! everything else with an `IcpNumberError` that says what is wrong and where.
//! The stored text is canonical, so two equal numbers compare and hash equal.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The province-level abbreviations an ICP number (and an entity's province) may use.
pub const PROVINCES: [&str; 31] = [
    "京", "津", "冀", "晋", "蒙", "辽", "吉", "黑", "沪", "苏", "浙", "皖", "闽", "赣", "鲁", "豫",
    "鄂", "湘", "粤", "桂", "琼", "渝", "川", "贵", "云", "藏", "陕", "甘", "青", "宁", "新",
];

/// The valid abbreviations, space-separated, for error messages.
pub(crate) fn provinces_list() -> String {
    PROVINCES.join(" ")
}

/// The canonical `&'static str` for a province abbreviation, if it is one.
pub(crate) fn province(s: &str) -> Option<&'static str> {
    PROVINCES.iter().copied().find(|p| *p == s)
}

/// Shortest and longest entity number accepted (today's numbers have 8 digits,
/// older ones fewer, some newer ones 10).
const ENTITY_DIGITS_MIN: usize = 4;
const ENTITY_DIGITS_MAX: usize = 10;

/// What follows the province abbreviation.
const MARKER: &str = "ICP备";

/// How much of a rejected fragment an error message quotes.
const QUOTE_MAX_CHARS: usize = 16;

/// Why a string is not an ICP number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IcpNumberError {
    #[error("ICP number is empty")]
    Empty,
    #[error(
        "ICP number must start with a province abbreviation (one of {})",
        provinces_list()
    )]
    MissingProvince,
    #[error(
        "unknown province abbreviation '{0}' in ICP number; expected one of {provinces}",
        provinces = provinces_list()
    )]
    UnknownProvince(String),
    #[error("ICP number is missing \"ICP备\" after the province abbreviation")]
    MissingIcpMarker,
    #[error("entity number after \"ICP备\" must be {ENTITY_DIGITS_MIN}–{ENTITY_DIGITS_MAX} digits (usually 8), found {0}")]
    EntityNumberLength(usize),
    #[error("unexpected character '{0}' in the entity number; expected ASCII digits 0-9 followed by \"号\"")]
    EntityNumberChar(char),
    #[error("ICP number is missing \"号\" after the entity number")]
    MissingHao,
    #[error("bad website index after \"-\": '{0}'; expected a positive integer without a leading zero, e.g. \"-1\"")]
    BadWebsiteIndex(String),
    #[error("unexpected trailing text '{0}' after \"号\"; only an optional website index like \"-1\" may follow")]
    TrailingGarbage(String),
}

/// A validated ICP filing number like `浙ICP备12345678号-1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IcpNumber {
    /// Canonical text (trimmed input; every part was checked exactly).
    text: String,
    province: &'static str,
    /// Length of the entity number, which starts right after `<province>ICP备`
    /// (at most `ENTITY_DIGITS_MAX`, so it fits; keeps the type small).
    entity_digits: u8,
    website_index: Option<u32>,
}

impl IcpNumber {
    /// Parse and validate an ICP number; surrounding whitespace is ignored.
    pub fn parse(s: &str) -> Result<IcpNumber, IcpNumberError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(IcpNumberError::Empty);
        }
        let (province, rest) = split_province(s)?;
        let rest = rest
            .strip_prefix(MARKER)
            .ok_or(IcpNumberError::MissingIcpMarker)?;
        let (entity_number, rest) = split_entity_number(rest)?;
        let website_index = parse_website_index(rest)?;
        Ok(IcpNumber {
            text: s.to_owned(),
            province,
            entity_digits: u8::try_from(entity_number.len())
                .map_err(|_| IcpNumberError::EntityNumberLength(entity_number.len()))?,
            website_index,
        })
    }

    /// The whole number, e.g. `浙ICP备12345678号-1`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The province abbreviation, e.g. `浙`.
    pub fn province(&self) -> &str {
        self.province
    }

    /// The entity's number, digits only, e.g. `12345678`.
    pub fn entity_number(&self) -> &str {
        let start = self.province.len() + MARKER.len();
        let end = start + usize::from(self.entity_digits);
        self.text.get(start..end).unwrap_or_default()
    }

    /// N in the `-N` suffix (the entity's N-th website), if present.
    pub fn website_index(&self) -> Option<u32> {
        self.website_index
    }

    /// The entity part without "-N", e.g. `浙ICP备12345678号`; every website of one
    /// entity shares it.
    pub fn entity_key(&self) -> String {
        format!("{}{MARKER}{}号", self.province, self.entity_number())
    }
}

/// Split off the province abbreviation: everything before "ICP" (or, when "ICP" is
/// absent, the first character).
fn split_province(s: &str) -> Result<(&'static str, &str), IcpNumberError> {
    let split_at = match s.find("ICP") {
        Some(at) => at,
        None => s.chars().next().map_or(0, char::len_utf8),
    };
    let (prefix, rest) = s.split_at(split_at);
    if prefix.is_empty() {
        return Err(IcpNumberError::MissingProvince);
    }
    match province(prefix) {
        Some(p) => Ok((p, rest)),
        None => Err(IcpNumberError::UnknownProvince(quote(prefix))),
    }
}

/// Split `12345678号…` into the entity number and what follows "号".
fn split_entity_number(s: &str) -> Result<(&str, &str), IcpNumberError> {
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, after) = s.split_at(digits_end);
    if let Some(c) = after.chars().next().filter(|c| *c != '号') {
        return Err(IcpNumberError::EntityNumberChar(c));
    }
    if !(ENTITY_DIGITS_MIN..=ENTITY_DIGITS_MAX).contains(&digits.len()) {
        return Err(IcpNumberError::EntityNumberLength(digits.len()));
    }
    let rest = after.strip_prefix('号').ok_or(IcpNumberError::MissingHao)?;
    Ok((digits, rest))
}

/// Parse what follows "号": nothing, or `-N`.
fn parse_website_index(s: &str) -> Result<Option<u32>, IcpNumberError> {
    if s.is_empty() {
        return Ok(None);
    }
    let Some(index) = s.strip_prefix('-') else {
        return Err(IcpNumberError::TrailingGarbage(quote(s)));
    };
    let digits_end = index
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(index.len());
    let (digits, trailing) = index.split_at(digits_end);
    let bad = || IcpNumberError::BadWebsiteIndex(quote(index));
    if digits.is_empty() || digits.starts_with('0') {
        return Err(bad());
    }
    let n: u32 = digits.parse().map_err(|_| bad())?;
    if !trailing.is_empty() {
        return Err(IcpNumberError::TrailingGarbage(quote(trailing)));
    }
    Ok(Some(n))
}

/// A fragment of rejected input, short enough to put in an error message.
fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_MAX_CHARS {
        return s.to_owned();
    }
    let mut short: String = s.chars().take(QUOTE_MAX_CHARS).collect();
    short.push('…');
    short
}

impl fmt::Display for IcpNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for IcpNumber {
    type Err = IcpNumberError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IcpNumber::parse(s)
    }
}

impl Serialize for IcpNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for IcpNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        IcpNumber::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid numbers: (input, province, entity number, website index, entity key).
    #[test]
    fn parses_valid_numbers() {
        let cases: &[(&str, &str, &str, Option<u32>, &str)] = &[
            // the usual shape: 8 digits and a website index
            (
                "浙ICP备12345678号-1",
                "浙",
                "12345678",
                Some(1),
                "浙ICP备12345678号",
            ),
            // no website index; a leading zero in the entity number is fine
            (
                "京ICP备05001234号",
                "京",
                "05001234",
                None,
                "京ICP备05001234号",
            ),
            // short old-style entity number
            ("粤ICP备1234号", "粤", "1234", None, "粤ICP备1234号"),
            // 10-digit entity number and a two-digit website index
            (
                "沪ICP备2021012345号-12",
                "沪",
                "2021012345",
                Some(12),
                "沪ICP备2021012345号",
            ),
            // surrounding whitespace is trimmed
            (
                "  新ICP备87654321号-3\n",
                "新",
                "87654321",
                Some(3),
                "新ICP备87654321号",
            ),
        ];
        for (input, province, entity, index, key) in cases {
            let n = IcpNumber::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(n.as_str(), input.trim(), "{input:?}");
            assert_eq!(n.province(), *province, "{input:?}");
            assert_eq!(n.entity_number(), *entity, "{input:?}");
            assert_eq!(n.website_index(), *index, "{input:?}");
            assert_eq!(n.entity_key(), *key, "{input:?}");
        }
    }

    #[test]
    fn rejects_invalid_numbers() {
        use IcpNumberError as E;
        let cases: &[(&str, E)] = &[
            // two-letter non-province prefix
            ("XYICP备1234号", E::UnknownProvince("XY".into())),
            // "备" missing after ICP
            ("浙ICP12345678号", E::MissingIcpMarker),
            // no entity number at all
            ("浙ICP备号", E::EntityNumberLength(0)),
            // a letter inside the entity number
            ("浙ICP备1234567a号", E::EntityNumberChar('a')),
            // "号" missing
            ("浙ICP备12345678", E::MissingHao),
            // dash without an index
            ("浙ICP备12345678号-", E::BadWebsiteIndex(String::new())),
            // website index zero
            ("浙ICP备12345678号-0", E::BadWebsiteIndex("0".into())),
            // website index with a leading zero
            ("浙ICP备12345678号-01", E::BadWebsiteIndex("01".into())),
            // empty, and whitespace only
            ("", E::Empty),
            ("   ", E::Empty),
            // trailing garbage after the number
            ("浙ICP备12345678号abc", E::TrailingGarbage("abc".into())),
            // trailing garbage after the website index
            ("浙ICP备12345678号-1x", E::TrailingGarbage("x".into())),
            // province missing
            ("ICP备12345678号", E::MissingProvince),
            // full-width digits
            ("浙ICP备１２３４５６７８号", E::EntityNumberChar('１')),
            // too short and too long entity numbers
            ("浙ICP备123号", E::EntityNumberLength(3)),
            ("浙ICP备12345678901号", E::EntityNumberLength(11)),
            // full province name instead of the abbreviation
            ("浙江ICP备12345678号", E::UnknownProvince("浙江".into())),
            // province abbreviation but no "ICP" at all
            ("浙12345678号", E::MissingIcpMarker),
            // not an ICP number at all
            ("hello", E::UnknownProvince("h".into())),
            // lowercase marker
            ("浙icp备12345678号", E::MissingIcpMarker),
            // website index overflowing u32
            (
                "浙ICP备12345678号-99999999999",
                E::BadWebsiteIndex("99999999999".into()),
            ),
            // a second number glued on
            ("浙ICP备12345678号-1-2", E::TrailingGarbage("-2".into())),
        ];
        for (input, expected) in cases {
            assert_eq!(IcpNumber::parse(input).as_ref(), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn unknown_province_message_lists_valid_ones() {
        let err = IcpNumber::parse("XYICP备1234号").unwrap_err().to_string();
        assert!(err.contains("'XY'"), "{err}");
        assert!(err.contains("京 津 冀") && err.contains("宁 新"), "{err}");
    }

    #[test]
    fn long_garbage_is_quoted_short() {
        let input = format!("{}ICP备1234号", "X".repeat(1000));
        let err = IcpNumber::parse(&input).unwrap_err().to_string();
        assert!(err.len() < 300, "{err}");
    }

    #[test]
    fn serde_is_a_validated_string() {
        let n = IcpNumber::parse("浙ICP备12345678号-1").unwrap();
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, "\"浙ICP备12345678号-1\"");
        assert_eq!(serde_json::from_str::<IcpNumber>(&json).unwrap(), n);
        let err = serde_json::from_str::<IcpNumber>("\"浙ICP备12345678号-0\"").unwrap_err();
        assert!(err.to_string().contains("bad website index"), "{err}");
    }

    #[test]
    fn every_province_is_accepted() {
        for p in PROVINCES {
            let n = IcpNumber::parse(&format!("{p}ICP备12345678号")).unwrap();
            assert_eq!(n.province(), p);
        }
    }
}
