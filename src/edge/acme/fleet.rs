//! ACME storage for a fleet (`acme.storage = "registry"`): the account and the
//! certificates in the PostgreSQL registry, sealed with the nodes' storage key
//! ([`super::seal`]), and followed by revision so that a certificate one node
//! obtains is served by every node as soon as the registry's NOTIFY arrives, or
//! within [`FEED_FALLBACK`] when it does not (the listener reconnecting).

use std::sync::Arc;
use std::time::Duration;

use super::seal::Sealer;
use super::storage::{StorageError, StoredAccount, StoredCert};
use crate::model::host::HostName;
use crate::registry::AcmeStore;

/// How often a node waiting on another node's order looks for its certificate.
pub const FEED_POLL: Duration = Duration::from_millis(500);

/// How often a node looks for certificates other nodes stored when no NOTIFY came.
pub const FEED_FALLBACK: Duration = Duration::from_secs(5);

/// The registry-backed storage of one node.
pub struct FleetStorage {
    pub store: Arc<dyn AcmeStore>,
    sealer: Sealer,
}

fn account_record(directory: &str) -> String {
    format!("acme-account:{directory}")
}

fn cert_record(name: &HostName) -> String {
    format!("acme-certificate:{}", name.as_str())
}

impl FleetStorage {
    pub fn new(store: Arc<dyn AcmeStore>, sealer: Sealer) -> FleetStorage {
        FleetStorage { store, sealer }
    }

    pub async fn account(&self, directory: &str) -> Result<Option<StoredAccount>, StorageError> {
        let Some(sealed) = self.store.account(directory).await? else {
            return Ok(None);
        };
        let plain = self.sealer.open(&account_record(directory), &sealed)?;
        Ok(Some(serde_json::from_slice(&plain)?))
    }

    pub async fn save_account(&self, account: &StoredAccount) -> Result<(), StorageError> {
        let plain = serde_json::to_vec(account)?;
        let sealed = self
            .sealer
            .seal(&account_record(&account.directory), &plain)?;
        Ok(self.store.save_account(&account.directory, &sealed).await?)
    }

    /// Certificates stored after `revision`, with their revisions; a record that
    /// does not open (another key) or names no host is skipped with a warning.
    pub async fn certificates_since(
        &self,
        revision: i64,
    ) -> Result<Vec<(StoredCert, i64)>, StorageError> {
        let mut out = Vec::new();
        for row in self.store.certificates_since(revision).await? {
            let Ok(name) = HostName::parse(&row.name) else {
                tracing::warn!(name = %row.name, "ACME registry storage: not a host name, skipped");
                continue;
            };
            let opened = self
                .sealer
                .open(&cert_record(&name), &row.sealed)
                .map(|plain| String::from_utf8_lossy(&plain).into_owned());
            match opened {
                Ok(pem) => out.push((StoredCert { name, pem }, row.revision)),
                Err(error) => {
                    tracing::warn!(name = %row.name, %error, "ACME registry storage: certificate skipped")
                }
            }
        }
        Ok(out)
    }

    pub async fn save_certificate(&self, cert: &StoredCert) -> Result<i64, StorageError> {
        let sealed = self
            .sealer
            .seal(&cert_record(&cert.name), cert.pem.as_bytes())?;
        Ok(self
            .store
            .save_certificate(cert.name.as_str(), &sealed)
            .await?)
    }
}
