//! The embedded registry: SQLite (bundled) in WAL mode with `synchronous = FULL`, so
//! an acknowledged change survives `kill -9` and power loss alike.
//!
//! Filings are stored as their JSON document (the admin API's filing object) next to
//! the columns the queries need. `filing_domains` has a partial unique index on
//! `(domain) WHERE live = 1`: "one live filing per registrable domain" holds in the
//! database itself, not only in code. One connection writes and one reads; SQLite
//! calls run on tokio's blocking pool so they never stall the data plane.
//!
//! The writes are `workflow`'s, run inside one IMMEDIATE transaction over the
//! storage operations below (`WriteTx`); with the outbox on (`with_outbox(true)`,
//! when `[notify] url` is set) the change and its notification commit together.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::workflow::{self, decode, encode, run_ready, WriteTx};
use super::{
    status_counts, Change, ImportRecord, ListFilter, Lookup, Outbox, OutboxEvent, Registry,
    RegistryError, Submitted, CHANGES_BATCH,
};
use crate::model::filing::{Action, Filing, Status, Submission};
use crate::model::host::RegistrableDomain;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS filings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS filing_domains (
    domain TEXT NOT NULL,
    filing_id INTEGER NOT NULL REFERENCES filings(id),
    live INTEGER NOT NULL,
    PRIMARY KEY (domain, filing_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS one_live_filing_per_domain
    ON filing_domains(domain) WHERE live = 1;
CREATE INDEX IF NOT EXISTS filings_by_revision ON filings(revision);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    filing_id INTEGER NOT NULL,
    payload TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    delivered_at_ms INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(next_attempt_at_ms)
    WHERE delivered_at_ms IS NULL;
";

/// SQLite-backed `Registry`.
#[derive(Clone)]
pub struct SqliteRegistry {
    /// Serialises writes; SQLite allows one writer anyway.
    writer: Arc<Mutex<Connection>>,
    /// Lookups read here so they never wait behind a write transaction (WAL).
    reader: Arc<Mutex<Connection>>,
    /// Whether writes also record notifications in the outbox.
    outbox: bool,
}

impl SqliteRegistry {
    /// Open (creating the file, its directory and the schema when missing).
    pub fn open(path: &Path) -> Result<SqliteRegistry, RegistryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let writer = open_connection(path)?;
        writer.execute_batch(SCHEMA)?;
        let reader = open_connection(path)?;
        Ok(SqliteRegistry {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            outbox: false,
        })
    }

    /// Record (or not) every submission and transition in the durable outbox.
    pub fn with_outbox(mut self, on: bool) -> SqliteRegistry {
        self.outbox = on;
        self
    }

    async fn with_conn<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, RegistryError> + Send + 'static,
    {
        let conn = Arc::clone(conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite half-written (the
            // transaction rolls back on drop), so a poisoned lock is safe to reuse.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, RegistryError> + Send + 'static,
    {
        Self::with_conn(&self.reader, f).await
    }

    async fn write<T, F>(&self, f: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Transaction<'_>) -> Result<T, RegistryError> + Send + 'static,
    {
        Self::with_conn(&self.writer, move |conn| {
            let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

fn open_connection(path: &Path) -> Result<Connection, RegistryError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn load(conn: &Connection, id: i64) -> Result<Option<Filing>, RegistryError> {
    let doc: Option<String> = conn
        .query_row("SELECT doc FROM filings WHERE id = ?1", [id], |row| {
            row.get(0)
        })
        .optional()?;
    doc.map(|doc| decode(id, &doc)).transpose()
}

fn current_revision(conn: &Connection) -> Result<i64, RegistryError> {
    Ok(
        conn.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |row| {
            row.get(0)
        })?,
    )
}

fn lookup_in(conn: &Connection, domain: &str) -> Result<Option<Filing>, RegistryError> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT f.id, f.doc FROM filing_domains d JOIN filings f ON f.id = d.filing_id
             WHERE d.domain = ?1 ORDER BY d.live DESC, f.revision DESC LIMIT 1",
            [domain],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    row.map(|(id, doc)| decode(id, &doc)).transpose()
}

fn list_in(conn: &Connection, filter: &ListFilter) -> Result<Vec<Filing>, RegistryError> {
    let limit = filter
        .limit
        .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let mut stmt = conn.prepare_cached(
        "SELECT f.id, f.doc FROM filings f
         WHERE (?1 IS NULL OR f.status = ?1)
           AND (?2 IS NULL OR f.id IN (SELECT filing_id FROM filing_domains WHERE domain = ?2))
         ORDER BY f.id LIMIT ?3",
    )?;
    let status = filter.status.map(Status::as_str);
    let domain = filter.domain.as_ref().map(|d| d.as_str().to_string());
    let rows = stmt.query_map(params![status, domain, limit], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, doc) = row?;
        out.push(decode(id, &doc)?);
    }
    Ok(out)
}

#[async_trait]
impl Registry for SqliteRegistry {
    async fn lookup(&self, domain: &RegistrableDomain) -> Result<Lookup, RegistryError> {
        let domain = domain.as_str().to_string();
        self.read(move |conn| {
            let tx = conn.transaction()?;
            let filing = lookup_in(&tx, &domain)?;
            let revision = current_revision(&tx)?;
            Ok(Lookup { filing, revision })
        })
        .await
    }

    async fn get(&self, id: i64) -> Result<Option<Filing>, RegistryError> {
        self.read(move |conn| load(conn, id)).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Filing>, RegistryError> {
        let filter = filter.clone();
        self.read(move |conn| list_in(conn, &filter)).await
    }

    async fn submit(
        &self,
        submission: Submission,
        actor: &str,
    ) -> Result<Submitted, RegistryError> {
        let actor = actor.to_string();
        let outbox = self.outbox;
        self.write(move |tx| run_ready(workflow::submit(tx, submission, &actor, outbox)))
            .await
    }

    async fn transition(
        &self,
        id: i64,
        action: Action,
        actor: &str,
    ) -> Result<Filing, RegistryError> {
        let actor = actor.to_string();
        let outbox = self.outbox;
        self.write(move |tx| run_ready(workflow::transition(tx, id, action, &actor, outbox)))
            .await
    }

    async fn import(&self, records: Vec<ImportRecord>) -> Result<usize, RegistryError> {
        self.write(move |tx| run_ready(workflow::import(tx, records)))
            .await
    }

    async fn export(&self) -> Result<Vec<Filing>, RegistryError> {
        self.read(|conn| list_in(conn, &ListFilter::default()))
            .await
    }

    async fn counts_by_status(&self) -> Result<BTreeMap<Status, u64>, RegistryError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT status, COUNT(*) FROM filings GROUP BY status")?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(status_counts(rows.collect::<Result<Vec<_>, _>>()?))
        })
        .await
    }

    async fn revision(&self) -> Result<i64, RegistryError> {
        self.read(|conn| current_revision(conn)).await
    }

    async fn filed_domains(&self) -> Result<Vec<String>, RegistryError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT DISTINCT domain FROM filing_domains")?;
            let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn changes_since(&self, revision: i64) -> Result<Vec<Change>, RegistryError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, revision, doc FROM filings WHERE revision > ?1 ORDER BY revision LIMIT ?2",
            )?;
            let rows = stmt.query_map([revision, CHANGES_BATCH], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?))
            })?;
            let mut changes = Vec::new();
            for row in rows {
                let (id, revision, doc) = row?;
                changes.push(Change { revision, domains: decode(id, &doc)?.domains });
            }
            Ok(changes)
        })
        .await
    }

    async fn is_empty(&self) -> Result<bool, RegistryError> {
        self.read(|conn| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM filings", [], |row| row.get(0))?;
            Ok(n == 0)
        })
        .await
    }

    fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        self.outbox
            .then(|| Arc::new(self.clone()) as Arc<dyn Outbox>)
    }
}

/// The storage operations of the shared write path, in one IMMEDIATE transaction.
impl WriteTx for Transaction<'_> {
    async fn load(&mut self, id: i64) -> Result<Option<Filing>, RegistryError> {
        load(self, id)
    }

    async fn live_holder(
        &mut self,
        domain: &str,
        except: i64,
    ) -> Result<Option<i64>, RegistryError> {
        Ok(self
            .prepare_cached(
                "SELECT filing_id FROM filing_domains
                 WHERE domain = ?1 AND live = 1 AND filing_id != ?2",
            )?
            .query_row(params![domain, except], |row| row.get(0))
            .optional()?)
    }

    async fn entity_holds_number(
        &mut self,
        certificate: Option<&str>,
        name: &str,
    ) -> Result<bool, RegistryError> {
        let known: Option<i64> = self
            .query_row(
                "SELECT id FROM filings WHERE status IN ('approved', 'disconnected') AND (
                     (?1 IS NOT NULL AND upper(trim(json_extract(doc, '$.entity.certificate_number'))) = ?1)
                  OR (?1 IS NULL AND trim(json_extract(doc, '$.entity.name')) = ?2))
                 LIMIT 1",
                params![certificate, name],
                |row| row.get(0),
            )
            .optional()?;
        Ok(known.is_some())
    }

    async fn bump_revision(&mut self) -> Result<i64, RegistryError> {
        Ok(self.query_row(
            "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
            [],
            |row| row.get(0),
        )?)
    }

    async fn insert_filing(&mut self, status: Status, revision: i64) -> Result<i64, RegistryError> {
        self.execute(
            "INSERT INTO filings (status, doc, revision) VALUES (?1, '{}', ?2)",
            params![status.as_str(), revision],
        )?;
        Ok(self.last_insert_rowid())
    }

    async fn put_filing(&mut self, filing: &Filing, revision: i64) -> Result<(), RegistryError> {
        self.execute(
            "INSERT INTO filings (id, status, doc, revision) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET status = excluded.status, doc = excluded.doc,
             revision = excluded.revision",
            params![filing.id, filing.status.as_str(), encode(filing), revision],
        )?;
        Ok(())
    }

    async fn replace_domains(
        &mut self,
        id: i64,
        domains: &[String],
        live: bool,
    ) -> Result<Option<String>, RegistryError> {
        self.execute("DELETE FROM filing_domains WHERE filing_id = ?1", [id])?;
        let mut stmt = self.prepare_cached(
            "INSERT OR IGNORE INTO filing_domains (domain, filing_id, live) VALUES (?1, ?2, ?3)",
        )?;
        for domain in domains {
            if stmt.execute(params![domain, id, live])? == 0 {
                return Ok(Some(domain.clone()));
            }
        }
        Ok(None)
    }

    async fn enqueue(
        &mut self,
        filing_id: i64,
        now_ms: i64,
        payload: impl FnOnce(i64) -> String,
    ) -> Result<(), RegistryError> {
        self.execute(
            "INSERT INTO outbox (filing_id, payload, created_at_ms, next_attempt_at_ms)
             VALUES (?1, '', ?2, ?2)",
            params![filing_id, now_ms],
        )?;
        let id = self.last_insert_rowid();
        self.execute(
            "UPDATE outbox SET payload = ?1 WHERE id = ?2",
            params![payload(id), id],
        )?;
        Ok(())
    }

    /// AUTOINCREMENT already hands out ids above every explicit one.
    async fn ids_imported(&mut self) -> Result<(), RegistryError> {
        Ok(())
    }
}

#[async_trait]
impl Outbox for SqliteRegistry {
    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEvent>, RegistryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, payload, attempts FROM outbox
                 WHERE delivered_at_ms IS NULL AND next_attempt_at_ms <= ?1
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
                "SELECT MIN(next_attempt_at_ms) FROM outbox WHERE delivered_at_ms IS NULL",
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
