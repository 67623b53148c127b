//! The PostgreSQL registry's durable outbox: the notifications its writes enqueue,
//! claimed, delivered and settled by every node's `notify::Notifier`.

use async_trait::async_trait;

use super::{PostgresRegistry, OUTBOX_CLAIM_MS};
use crate::registry::{Outbox, OutboxEvent, RegistryError};

/// Every node of a fleet runs a notifier: `due` claims events (pushing their next
/// attempt past a lease, skipping rows another node is claiming), so each event is
/// attempted by one node at a time.
#[async_trait]
impl Outbox for PostgresRegistry {
    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEvent>, RegistryError> {
        let client = self.pool.get().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "UPDATE icpgate_outbox SET next_attempt_at_ms = $1 + $3
                 WHERE id IN (SELECT id FROM icpgate_outbox o
                              WHERE delivered_at_ms IS NULL AND next_attempt_at_ms <= $1
                                AND NOT EXISTS (SELECT 1 FROM icpgate_outbox e
                                                WHERE e.filing_id = o.filing_id AND e.id < o.id
                                                  AND e.delivered_at_ms IS NULL)
                              ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING id, payload, attempts",
                &[&now_ms, &limit, &OUTBOX_CLAIM_MS],
            )
            .await?;
        let mut events = rows
            .iter()
            .map(|row| {
                let attempts: i32 = row.try_get(2)?;
                Ok(OutboxEvent {
                    id: row.try_get(0)?,
                    payload: row.try_get(1)?,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>, RegistryError>>()?;
        events.sort_by_key(|e| e.id);
        Ok(events)
    }

    async fn next_due(&self) -> Result<Option<i64>, RegistryError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT MIN(next_attempt_at_ms) FROM icpgate_outbox o
                 WHERE delivered_at_ms IS NULL
                   AND NOT EXISTS (SELECT 1 FROM icpgate_outbox e
                                   WHERE e.filing_id = o.filing_id AND e.id < o.id
                                     AND e.delivered_at_ms IS NULL)",
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn delivered(&self, id: i64, now_ms: i64) -> Result<(), RegistryError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE icpgate_outbox SET delivered_at_ms = $1, attempts = attempts + 1, last_error = NULL
                 WHERE id = $2",
                &[&now_ms, &id],
            )
            .await?;
        Ok(())
    }

    async fn failed(&self, id: i64, next_at_ms: i64, error: &str) -> Result<(), RegistryError> {
        let error: String = error.chars().take(500).collect();
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE icpgate_outbox SET attempts = attempts + 1, next_attempt_at_ms = $1, last_error = $2
                 WHERE id = $3",
                &[&next_at_ms, &error, &id],
            )
            .await?;
        Ok(())
    }

    async fn prune_delivered(&self, before_ms: i64) -> Result<u64, RegistryError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                "DELETE FROM icpgate_outbox WHERE delivered_at_ms IS NOT NULL AND delivered_at_ms < $1",
                &[&before_ms],
            )
            .await?)
    }

    async fn pending(&self) -> Result<u64, RegistryError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT COUNT(*) FROM icpgate_outbox WHERE delivered_at_ms IS NULL",
                &[],
            )
            .await?;
        let count: i64 = row.try_get(0)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
