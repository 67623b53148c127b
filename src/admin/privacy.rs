//! Who sees personal data through the admin API, and the one place a reveal is
//! allowed and audited.
//!
//! - without a token (only possible with `admin.public_reads`), a filing is shown
//!   in its public view: no personal data at all (`Filing::public_view`);
//! - with a token, phones, e-mails and certificate numbers stay masked
//!   (`Filing::masked`);
//! - `?reveal=true` shows them in clear, to a named token granted `reveal` in
//!   `admin.tokens_file` only; every reveal is written to the audit log
//!   (`icpgate::audit`, action `reveal`) with the actor, the filing and what was
//!   revealed. [`authorize_reveal`] is that check and that audit write: every
//!   surface that reveals (this API, the console) calls it.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;

use crate::admin::auth::Actor;
use crate::admin::error::AdminError;
use crate::model::filing::Filing;

/// What a caller's token allows beyond reading and writing filings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grants {
    /// May see personal data in clear, on request (`reveal` in `admin.tokens_file`).
    pub reveal: bool,
}

/// Who is reading: the actor when a token was presented, and its grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reader {
    pub actor: Option<Actor>,
    pub grants: Grants,
}

/// How much of a filing a reader sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// No personal data (no token).
    Public,
    /// Phones, e-mails and certificate numbers masked (a token).
    Masked,
    /// Everything, revealed on purpose and audited.
    Revealed,
}

impl View {
    /// `filing` as this view shows it.
    pub fn show(self, filing: Filing) -> Filing {
        match self {
            View::Public => filing.public_view(),
            View::Masked => filing.masked(),
            View::Revealed => filing,
        }
    }
}

impl Reader {
    /// The view of a read that reveals nothing: masked with a token, public without.
    pub fn unrevealed(&self) -> View {
        match self.actor {
            Some(_) => View::Masked,
            None => View::Public,
        }
    }

    /// The view of a read that asks to `reveal` (or not) `what` of filing
    /// `filing_id`; a reveal goes through [`authorize_reveal`].
    pub fn view(&self, reveal: bool, filing_id: i64, what: &str) -> Result<View, AdminError> {
        if !reveal {
            return Ok(self.unrevealed());
        }
        authorize_reveal(self.actor.as_ref(), self.grants, filing_id, what)?;
        Ok(View::Revealed)
    }
}

/// Allow a reveal of `what` (e.g. "personal data", "filing password") of filing
/// `filing_id` to `actor` holding `grants`, and audit it; refuse it otherwise (401
/// without a token, 403 without the grant). The one permission check and audit
/// write of every reveal.
pub fn authorize_reveal(
    actor: Option<&Actor>,
    grants: Grants,
    filing_id: i64,
    what: &str,
) -> Result<(), AdminError> {
    let Some(Actor(actor)) = actor else {
        return Err(AdminError::Unauthorized);
    };
    if !grants.reveal {
        return Err(AdminError::Forbidden(
            "this token may not reveal personal data; grant `reveal` to its name in admin.tokens_file"
                .into(),
        ));
    }
    tracing::info!(
        target: "icpgate::audit",
        actor = actor.as_str(),
        action = "reveal",
        filing_id,
        what,
        "personal data revealed"
    );
    Ok(())
}

impl<S: Send + Sync> FromRequestParts<S> for Reader {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Reader, Infallible> {
        let actor =
            <Actor as OptionalFromRequestParts<S>>::from_request_parts(parts, state).await?;
        let grants = parts
            .extensions
            .get::<Grants>()
            .copied()
            .unwrap_or_default();
        Ok(Reader { actor, grants })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_granted_token_reveals() {
        let reader = |actor: Option<&str>, reveal: bool| Reader {
            actor: actor.map(|a| Actor(a.into())),
            grants: Grants { reveal },
        };
        let cases: Vec<(Reader, bool, Result<View, u16>)> = vec![
            // no token: the public view; asking to reveal is a 401
            (reader(None, false), false, Ok(View::Public)),
            (reader(None, false), true, Err(401)),
            // a token: masked; revealing needs the grant
            (reader(Some("alice"), false), false, Ok(View::Masked)),
            (reader(Some("alice"), false), true, Err(403)),
            (reader(Some("auditor"), true), true, Ok(View::Revealed)),
            // a granted token that does not ask still sees the masked view
            (reader(Some("auditor"), true), false, Ok(View::Masked)),
        ];
        for (reader, reveal, want) in cases {
            let got = reader
                .view(reveal, 7, "personal data")
                .map_err(|e| e.status_and_code().0.as_u16());
            assert_eq!(got, want, "{reader:?} reveal={reveal}");
        }
    }
}
