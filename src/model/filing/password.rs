//! The filing password (备案密码) of an access-existing filing (接入已有备案): the
//! applicant's password at the authority's system, which the access provider's
//! reviewer checks once during initial review.
//!
//! Contract: a [`FilingPassword`] is write-only. It is read from a request body and
//! never written back out: it has no `Serialize`, its `Debug` shows no character of
//! it, and the registry keeps it only sealed (see `registry::secret`).

use std::fmt;

use serde::{Deserialize, Deserializer};

use super::details::DetailError;
use super::text::check_text;

/// Longest filing password accepted, in characters.
pub const PASSWORD_MAX_CHARS: usize = 64;

/// A filing password as given by the applicant; never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct FilingPassword(String);

impl FilingPassword {
    /// A password from its text, checked: not blank, at most
    /// [`PASSWORD_MAX_CHARS`], no control or bidirectional characters.
    pub fn new(text: String) -> Result<FilingPassword, DetailError> {
        check_text("filing_password", &text, PASSWORD_MAX_CHARS)?;
        if text.trim().is_empty() {
            return Err(DetailError::Empty {
                field: "filing_password",
            });
        }
        Ok(FilingPassword(text))
    }

    /// The password itself: for sealing, and for the one deliberate reveal.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for FilingPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FilingPassword(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for FilingPassword {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FilingPassword, D::Error> {
        let text = String::deserialize(d)?;
        FilingPassword::new(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_checked_and_never_shown() {
        let too_long = "x".repeat(PASSWORD_MAX_CHARS + 1);
        let cases: Vec<(&str, bool)> = vec![
            // an ordinary password
            ("Sekret-Filing-PW-7781", true),
            // blank
            ("  ", false),
            // a line break would split a log line if it were ever written
            ("pw\n1", false),
            // over the cap
            (&too_long, false),
        ];
        for (text, ok) in cases {
            assert_eq!(
                FilingPassword::new(text.to_string()).is_ok(),
                ok,
                "{text:?}"
            );
        }
        let password = FilingPassword::new("Sekret-7781".into()).unwrap();
        assert!(!format!("{password:?}").contains("Sekret"));
    }
}
