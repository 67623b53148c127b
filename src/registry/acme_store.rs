//! ACME state shared by a fleet through the PostgreSQL registry: the account and
//! the certificates (sealed by the nodes: this layer never sees a private key in
//! the clear), the challenge answers of the orders in flight (so whichever node the
//! CA reaches can answer), and one order per name at a time (an advisory lock held
//! in a transaction for the length of the order).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::RegistryError;

/// One stored certificate: chain and key as sealed by a node, and the revision
/// nodes follow new certificates by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedCert {
    pub name: String,
    pub sealed: Vec<u8>,
    pub revision: i64,
}

/// A future the store runs while holding a lock.
pub type Locked<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

#[async_trait]
pub trait AcmeStore: Send + Sync + 'static {
    async fn account(&self, directory: &str) -> Result<Option<Vec<u8>>, RegistryError>;
    async fn save_account(&self, directory: &str, sealed: &[u8]) -> Result<(), RegistryError>;
    /// Woken when any node stored a certificate (PostgreSQL NOTIFY).
    fn certificate_stored(&self) -> Arc<Notify>;
    /// Certificates stored (or replaced) after `revision`, oldest first.
    async fn certificates_since(&self, revision: i64) -> Result<Vec<SealedCert>, RegistryError>;
    /// Store `name`'s certificate; returns its revision.
    async fn save_certificate(&self, name: &str, sealed: &[u8]) -> Result<i64, RegistryError>;
    /// Run `order` holding `name`'s fleet-wide order lock; false, without running
    /// it, when another node holds the lock (it is ordering that name).
    async fn while_locked(&self, name: &str, order: Locked<'_>) -> Result<bool, RegistryError>;
    async fn publish_challenge(
        &self,
        name: &str,
        token: &str,
        key_authorization: &str,
        expires_at_ms: i64,
    ) -> Result<(), RegistryError>;
    async fn withdraw_challenge(&self, name: &str) -> Result<(), RegistryError>;
    /// The unexpired challenge answer for `name`: its token and key authorization.
    async fn challenge(
        &self,
        name: &str,
        now_ms: i64,
    ) -> Result<Option<(String, String)>, RegistryError>;
}

/// The advisory lock key of `name`'s orders (a namespace keeps it apart from the
/// registry's own locks).
fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(format!("icpgate-acme-order:{name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// [`AcmeStore`] over the PostgreSQL registry's pool.
pub struct PgAcmeStore {
    pub(super) pool: Pool,
    /// Woken by the registry's LISTEN connection (`icpgate_acme`).
    pub(super) stored: Arc<Notify>,
}

#[async_trait]
impl AcmeStore for PgAcmeStore {
    fn certificate_stored(&self) -> Arc<Notify> {
        Arc::clone(&self.stored)
    }

    async fn account(&self, directory: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT sealed FROM icpgate_acme_accounts WHERE directory = $1",
                &[&directory],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn save_account(&self, directory: &str, sealed: &[u8]) -> Result<(), RegistryError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO icpgate_acme_accounts (directory, sealed) VALUES ($1, $2)
                 ON CONFLICT (directory) DO UPDATE SET sealed = EXCLUDED.sealed",
                &[&directory, &sealed],
            )
            .await?;
        Ok(())
    }

    async fn certificates_since(&self, revision: i64) -> Result<Vec<SealedCert>, RegistryError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT name, sealed, revision FROM icpgate_acme_certificates
                 WHERE revision > $1 ORDER BY revision",
                &[&revision],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SealedCert {
                    name: r.try_get(0)?,
                    sealed: r.try_get(1)?,
                    revision: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn save_certificate(&self, name: &str, sealed: &[u8]) -> Result<i64, RegistryError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "INSERT INTO icpgate_acme_certificates (name, sealed, revision)
                 VALUES ($1, $2, nextval('icpgate_acme_revision'))
                 ON CONFLICT (name) DO UPDATE
                 SET sealed = EXCLUDED.sealed, revision = EXCLUDED.revision
                 RETURNING revision",
                &[&name, &sealed],
            )
            .await?;
        // Every node's feed wakes once this is visible (autocommitted above).
        let channel = super::postgres::ACME_CHANNEL;
        client.batch_execute(&format!("NOTIFY {channel}")).await?;
        Ok(row.try_get(0)?)
    }

    async fn while_locked(&self, name: &str, order: Locked<'_>) -> Result<bool, RegistryError> {
        let mut client = self.pool.get().await?;
        // A transaction-scoped lock: released when the transaction ends, however
        // the order ends (and by the server if this node dies).
        let tx = client.transaction().await?;
        let row = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&lock_key(name)])
            .await?;
        let locked: bool = row.try_get(0)?;
        if locked {
            order.await;
        }
        tx.rollback().await?;
        Ok(locked)
    }

    async fn publish_challenge(
        &self,
        name: &str,
        token: &str,
        key_authorization: &str,
        expires_at_ms: i64,
    ) -> Result<(), RegistryError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO icpgate_acme_challenges (name, token, key_authorization, expires_at_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET token = EXCLUDED.token,
                     key_authorization = EXCLUDED.key_authorization,
                     expires_at_ms = EXCLUDED.expires_at_ms",
                &[&name, &token, &key_authorization, &expires_at_ms],
            )
            .await?;
        Ok(())
    }

    async fn withdraw_challenge(&self, name: &str) -> Result<(), RegistryError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "DELETE FROM icpgate_acme_challenges WHERE name = $1",
                &[&name],
            )
            .await?;
        Ok(())
    }

    async fn challenge(
        &self,
        name: &str,
        now_ms: i64,
    ) -> Result<Option<(String, String)>, RegistryError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT token, key_authorization FROM icpgate_acme_challenges
                 WHERE name = $1 AND expires_at_ms > $2",
                &[&name, &now_ms],
            )
            .await?;
        Ok(row
            .map(|r| Ok::<_, RegistryError>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_differ_by_name_and_are_stable() {
        assert_eq!(lock_key("shop.cn"), lock_key("shop.cn"));
        assert_ne!(lock_key("shop.cn"), lock_key("www.shop.cn"));
    }
}
