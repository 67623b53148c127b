//! The SQLite registry's durable outbox: the notifications its writes enqueue,
//! read and settled by `notify::Notifier`.

use async_trait::async_trait;
use rusqlite::params;

use super::SqliteRegistry;
use crate::registry::{Outbox, OutboxEvent, RegistryError};

#[async_trait]
impl Outbox for SqliteRegistry {
    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEvent>, RegistryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, payload, attempts FROM outbox o
                 WHERE delivered_at_ms IS NULL AND next_attempt_at_ms <= ?1
                   AND NOT EXISTS (SELECT 1 FROM outbox e
                                   WHERE e.filing_id = o.filing_id AND e.id < o.id
                                     AND e.delivered_at_ms IS NULL)
                 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now_ms, limit], |row| {
                Ok(OutboxEvent {
                    id: row.get(0)?,
                    payload: row.get(1)?,
                    attempts: row.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<i64>, RegistryError> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT MIN(next_attempt_at_ms) FROM outbox o
                 WHERE delivered_at_ms IS NULL
                   AND NOT EXISTS (SELECT 1 FROM outbox e
                                   WHERE e.filing_id = o.filing_id AND e.id < o.id
                                     AND e.delivered_at_ms IS NULL)",
                [],
                |row| row.get(0),
            )?)
        })
        .await
    }

    async fn delivered(&self, id: i64, now_ms: i64) -> Result<(), RegistryError> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE outbox SET delivered_at_ms = ?1, attempts = attempts + 1,
                 last_error = NULL WHERE id = ?2",
                params![now_ms, id],
            )?;
            Ok(())
        })
        .await
    }

    async fn failed(&self, id: i64, next_at_ms: i64, error: &str) -> Result<(), RegistryError> {
        let error: String = error.chars().take(500).collect();
        self.write(move |tx| {
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at_ms = ?1,
                 last_error = ?2 WHERE id = ?3",
                params![next_at_ms, error, id],
            )?;
            Ok(())
        })
        .await
    }

    async fn prune_delivered(&self, before_ms: i64) -> Result<u64, RegistryError> {
        self.write(move |tx| {
            let n = tx.execute(
                "DELETE FROM outbox WHERE delivered_at_ms IS NOT NULL AND delivered_at_ms < ?1",
                [before_ms],
            )?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn pending(&self) -> Result<u64, RegistryError> {
        self.read(|conn| {
            let n: i64 = conn.query_row(
                "SELECT COUNT(*) FROM outbox WHERE delivered_at_ms IS NULL",
                [],
                |row| row.get(0),
            )?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }
}
