//! What a submission (`POST /v1/filings`) supplies, and the checks it passes before
//! it becomes a filing in `initial_review`.

use serde::{Deserialize, Serialize};

use super::rules::{check_number_fits, validate_domains};
use super::{Entity, FilingPassword, IcpNumber, Kind, Product, TransitionError, Website};

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
    /// Required for `access_existing`, refused for `new`; write-only (never
    /// serialised), kept sealed by the registry until initial review ends.
    #[serde(default, skip_serializing)]
    pub filing_password: Option<FilingPassword>,
}

impl Submission {
    /// Check domains, details, and the ICP number rule for the kind.
    pub fn validate(&self) -> Result<(), TransitionError> {
        validate_domains(&self.domains)?;
        self.entity.validate()?;
        self.website.validate()?;
        match (self.kind, &self.icp_number, &self.filing_password) {
            (Kind::New, Some(_), _) => Err(TransitionError::IcpNumberOnNewFiling),
            (Kind::New, None, Some(_)) => Err(TransitionError::FilingPasswordOnNewFiling),
            (Kind::New, None, None) => Ok(()),
            (Kind::AccessExisting, None, _) => {
                Err(TransitionError::AccessExistingRequiresIcpNumber)
            }
            (Kind::AccessExisting, Some(number), password) => {
                check_number_fits(number, &self.entity)?;
                password
                    .as_ref()
                    .map(|_| ())
                    .ok_or(TransitionError::FilingPasswordRequired)
            }
        }
    }
}
