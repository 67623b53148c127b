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
//!
//! Beside this file: `pages` (list pages and the streamed filed-domain index),
//! `import` (bulk import with multi-row inserts), `outbox` (the notifications),
//! `file_identity` (a write to a file deleted or replaced since opening is refused).

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

mod file_identity;
mod import;
mod outbox;
mod pages;
pub mod sql;

use super::document_check::DocumentCheck;
use super::error::StorageError;
use super::migrations;
use super::secret::SecretKey;
use super::workflow::{
    self, decode, encode, entity_identity, now_ms, number_key, open_password, review_since_ms,
    run_ready, NumberHolder, WriteTx,
};
use super::{
    status_counts, Change, FilingType, ImportFeed, ImportRecord, ListFilter, Lookup, Outbox,
    Registry, RegistryError, Submitted, CHANGES_BATCH,
};
use crate::model::filing::{Action, Filing, FilingPassword, Status, Submission};
use crate::model::host::RegistrableDomain;
use file_identity::FileIdentity;

/// SQLite-backed `Registry`.
#[derive(Clone)]
pub struct SqliteRegistry {
    /// Serialises writes; SQLite allows one writer anyway.
    writer: Arc<Mutex<Connection>>,
    /// Lookups read here so they never wait behind a write transaction (WAL).
    reader: Arc<Mutex<Connection>>,
    /// Whether writes also record notifications in the outbox.
    outbox: bool,
    /// The file opened; a write to a file deleted or replaced since is refused.
    file: Arc<FileIdentity>,
    /// Seals kept filing passwords (`registry.secret_key_env`).
    secret_key: Option<Arc<SecretKey>>,
}

impl SqliteRegistry {
    /// Open (creating the file and its directory when missing) and bring the schema
    /// up to date (`migrations`).
    /// A new database file is created readable by its owner only (0600; SQLite
    /// gives its WAL and shared-memory files the same mode): it holds personal data.
    pub fn open(path: &Path) -> Result<SqliteRegistry, RegistryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        create_private(path)?;
        let mut writer = open_connection(path)?;
        migrate(&mut writer)?;
        let reader = open_connection(path)?;
        Ok(SqliteRegistry {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            outbox: false,
            file: Arc::new(FileIdentity::of(path).map_err(StorageError::from)?),
            secret_key: None,
        })
    }

    /// Record (or not) every submission and transition in the durable outbox.
    pub fn with_outbox(mut self, on: bool) -> SqliteRegistry {
        self.outbox = on;
        self
    }

    /// Seal kept filing passwords with `key` (`registry.secret_key_env`); without
    /// one they are not kept.
    pub fn with_secret_key(mut self, key: Option<Arc<SecretKey>>) -> Self {
        self.secret_key = key;
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
        let file = Arc::clone(&self.file);
        Self::with_conn(&self.writer, move |conn| {
            file.check()?;
            let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

/// Create `path` with mode 0600 when it does not exist yet (an existing file keeps
/// the mode its owner gave it).
fn create_private(path: &Path) -> Result<(), RegistryError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error.into()),
    }
}

impl SqliteRegistry {
    /// Run an import in one write transaction with a page cache large enough that
    /// the indexes being filled stay in memory until the commit, and statement
    /// journals in memory (SQLite fixes where they go when the transaction
    /// begins); then give that memory back.
    ///
    /// When no other connection has the file open (the `registry import` command,
    /// seeding at first start), the transaction runs under a rollback journal
    /// instead of the WAL: in WAL mode every page of the import is written twice,
    /// once into the WAL and once more by the checkpoint after the commit (10 GiB
    /// each way at ten million filings), while a rollback journal holds only the
    /// pages the file had before, none for a fresh registry. All or nothing holds
    /// either way. Our own reader connection is closed for the import (an open
    /// connection keeps the file in WAL mode) and opened again after it; when
    /// another process holds the file, the import stays in the WAL.
    async fn bulk_import<F>(&self, import: F) -> Result<usize, RegistryError>
    where
        F: FnOnce(&mut Transaction<'_>) -> Result<usize, RegistryError> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        let writer = Arc::clone(&self.writer);
        let file = Arc::clone(&self.file);
        tokio::task::spawn_blocking(move || {
            let mut reader = reader
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut writer = writer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            file.check()?;
            drop(std::mem::replace(
                &mut *reader,
                Connection::open_in_memory()?,
            ));
            let journal = ImportJournal::enter(&mut writer);
            let imported = (|| -> Result<usize, RegistryError> {
                writer.pragma_update(None, "cache_size", IMPORT_CACHE_KIB)?;
                writer.pragma_update(None, "temp_store", "MEMORY")?;
                let mut tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let count = import(&mut tx)?;
                tx.commit()?;
                Ok(count)
            })();
            // Whatever the import's outcome, the connections go back as they were.
            let restored = (|| -> Result<(), RegistryError> {
                writer.pragma_update(None, "cache_size", DEFAULT_CACHE_KIB)?;
                writer.pragma_update(None, "temp_store", "DEFAULT")?;
                journal.leave(&mut writer)
            })();
            let reopened = open_connection(file.path()).map(|conn| *reader = conn);
            let count = imported?;
            restored?;
            reopened?;
            Ok(count)
        })
        .await?
    }
}

/// The journal an import ran under: the rollback journal when the file could be
/// taken out of WAL mode, the WAL otherwise.
enum ImportJournal {
    Rollback,
    Wal,
}

impl ImportJournal {
    /// Leave WAL mode if no other connection holds the file; never wait for one.
    fn enter(conn: &mut Connection) -> ImportJournal {
        let switched = conn.busy_timeout(std::time::Duration::ZERO).and_then(|()| {
            conn.pragma_update_and_check(None, "journal_mode", "TRUNCATE", |row| {
                row.get::<_, String>(0)
            })
        });
        let _ = conn.busy_timeout(BUSY_TIMEOUT);
        match switched {
            Ok(mode) if mode.eq_ignore_ascii_case("truncate") => ImportJournal::Rollback,
            Ok(mode) => {
                tracing::info!(%mode, "import runs in the WAL: the journal mode did not change");
                ImportJournal::Wal
            }
            Err(error) => {
                tracing::info!(%error, "import runs in the WAL: another connection holds the registry");
                ImportJournal::Wal
            }
        }
    }

    /// Back to WAL mode, which every other connection expects.
    fn leave(self, conn: &mut Connection) -> Result<(), RegistryError> {
        if let ImportJournal::Rollback = self {
            let mode: String =
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StorageError::Io(std::io::Error::other(format!(
                    "registry stayed in journal mode {mode} after an import"
                )))
                .into());
            }
        }
        Ok(())
    }
}

/// The page cache of an import, in KiB (SQLite's negative `cache_size`).
const IMPORT_CACHE_KIB: i64 = -262_144;
/// SQLite's default page cache, in KiB.
const DEFAULT_CACHE_KIB: i64 = -2_000;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn open_connection(path: &Path) -> Result<Connection, RegistryError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Apply the pending migrations in one IMMEDIATE transaction: a second process
/// opening at the same time waits for the write lock, then finds nothing to do.
fn migrate(conn: &mut Connection) -> Result<(), RegistryError> {
    // Building an index over a large registry may hold the lock for a while.
    conn.busy_timeout(std::time::Duration::from_secs(600))?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(migrations::SQLITE_VERSION_TABLE)?;
    let current: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |row| row.get(0),
    )?;
    for migration in migrations::pending(migrations::SQLITE, current)? {
        tx.execute_batch(migration.sql)?;
        tx.execute(
            "INSERT INTO schema_version (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
            params![migration.version, migration.name, now_ms()],
        )?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "registry schema migrated"
        );
    }
    tx.commit()?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(())
}

fn load(conn: &Connection, id: i64) -> Result<Option<Filing>, RegistryError> {
    let doc: Option<String> = conn
        .prepare_cached(sql::LOAD)?
        .query_row([id], |row| row.get(0))
        .optional()?;
    doc.map(|doc| decode(id, &doc)).transpose()
}

fn current_revision(conn: &Connection) -> Result<i64, RegistryError> {
    Ok(conn
        .prepare_cached(sql::REVISION)?
        .query_row([], |row| row.get(0))?)
}

fn lookup_in(conn: &Connection, domain: &str) -> Result<Option<Filing>, RegistryError> {
    let row: Option<(i64, String)> = conn
        .prepare_cached(sql::LOOKUP)?
        .query_row([domain], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    row.map(|(id, doc)| decode(id, &doc)).transpose()
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
        self.read(move |conn| pages::list(conn, &filter)).await
    }

    async fn submit(
        &self,
        submission: Submission,
        actor: &str,
    ) -> Result<Submitted, RegistryError> {
        let actor = actor.to_string();
        let (outbox, key) = (self.outbox, self.secret_key.clone());
        self.write(move |tx| {
            let key = key.as_deref();
            run_ready(workflow::submit(tx, submission, &actor, outbox, key))
        })
        .await
    }

    async fn transition(
        &self,
        id: i64,
        action: Action,
        actor: &str,
    ) -> Result<Filing, RegistryError> {
        let actor = actor.to_string();
        let (outbox, key) = (self.outbox, self.secret_key.clone());
        self.write(move |tx| {
            let key = key.as_deref();
            run_ready(workflow::transition(tx, id, action, &actor, outbox, key))
        })
        .await
    }

    async fn import(&self, records: Vec<ImportRecord>) -> Result<usize, RegistryError> {
        let stored = Arc::new(AtomicUsize::new(0));
        self.bulk_import(move |tx| import::run(tx, std::iter::once(Ok(records)), &stored))
            .await
    }

    async fn import_feed(
        &self,
        mut feed: ImportFeed,
        stored: Arc<AtomicUsize>,
    ) -> Result<usize, RegistryError> {
        self.bulk_import(move |tx| {
            let batches = std::iter::from_fn(|| feed.blocking_recv());
            import::run(tx, batches, &stored)
        })
        .await
    }

    async fn filing_type(&self, id: i64) -> Result<Option<FilingType>, RegistryError> {
        self.read(move |conn| {
            let stored: Option<Option<String>> = conn
                .prepare_cached(sql::FILING_TYPE)?
                .query_row([id], |row| row.get(0))
                .optional()?;
            Ok(stored.flatten().as_deref().and_then(FilingType::parse))
        })
        .await
    }

    async fn filing_password(&self, id: i64) -> Result<Option<FilingPassword>, RegistryError> {
        let sealed = self
            .read(move |conn| {
                let stored: Option<Option<String>> = conn
                    .prepare_cached(sql::SEALED_PASSWORD)?
                    .query_row([id], |row| row.get(0))
                    .optional()?;
                Ok(stored.flatten())
            })
            .await?;
        open_password(self.secret_key.as_deref(), id, sealed)
    }

    async fn export(&self) -> Result<Vec<Filing>, RegistryError> {
        self.read(|conn| pages::list(conn, &ListFilter::default()))
            .await
    }

    async fn counts_by_status(&self) -> Result<BTreeMap<Status, u64>, RegistryError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT status, n FROM filing_counts")?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(status_counts(rows.collect::<Result<Vec<_>, _>>()?))
        })
        .await
    }

    async fn revision(&self) -> Result<i64, RegistryError> {
        self.read(|conn| current_revision(conn)).await
    }

    async fn initial_reviews_entered_by(&self, cutoff_ms: i64) -> Result<u64, RegistryError> {
        self.read(move |conn| {
            let n: i64 = conn
                .prepare_cached(sql::INITIAL_REVIEWS_ENTERED_BY)?
                .query_row([cutoff_ms], |row| row.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    /// Read on a connection of its own, so the filed-domain index loads beside it,
    /// and decoded on every core (`document_check`).
    async fn check_documents(&self) -> Result<u64, RegistryError> {
        let path = self.file.path().to_path_buf();
        let (sink, check) = DocumentCheck::start();
        let read = tokio::task::spawn_blocking(move || {
            let conn = Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            pages::read_documents(&conn, sink)
        })
        .await;
        let checked = tokio::task::spawn_blocking(move || check.finish()).await?;
        read??;
        checked
    }

    async fn filed_domains(&self) -> Result<Vec<String>, RegistryError> {
        let (batches, mut received) = tokio::sync::mpsc::channel(4);
        let mut domains = Vec::new();
        let read = self.filed_domain_batches(batches);
        let collect = async {
            while let Some(batch) = received.recv().await {
                domains.extend(batch);
            }
        };
        tokio::join!(read, collect).0?;
        Ok(domains)
    }

    async fn filed_domain_batches(
        &self,
        batches: tokio::sync::mpsc::Sender<Vec<String>>,
    ) -> Result<(), RegistryError> {
        self.read(move |conn| pages::filed_domain_batches(conn, &batches))
            .await
    }

    async fn changes_since(&self, revision: i64) -> Result<Vec<Change>, RegistryError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(sql::CHANGES_SINCE)?;
            let rows = stmt.query_map([revision, CHANGES_BATCH], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })?;
            let mut changes = Vec::new();
            for row in rows {
                let (id, revision, doc) = row?;
                changes.push(match decode(id, &doc) {
                    Ok(filing) => Change {
                        revision,
                        filing_id: id,
                        domains: filing.domains,
                        unreadable: None,
                    },
                    Err(error) => {
                        let mut domains = conn.prepare_cached(sql::DOMAINS_OF)?;
                        let domains = domains.query_map([id], |row| row.get(0))?;
                        Change {
                            revision,
                            filing_id: id,
                            domains: domains.collect::<Result<_, _>>()?,
                            unreadable: Some(error.to_string()),
                        }
                    }
                });
            }
            Ok(changes)
        })
        .await
    }

    async fn is_empty(&self) -> Result<bool, RegistryError> {
        self.read(|conn| {
            let any: bool = conn.query_row("SELECT EXISTS (SELECT 1 FROM filings)", [], |row| {
                row.get(0)
            })?;
            Ok(!any)
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
            .prepare_cached(sql::LIVE_HOLDER)?
            .query_row(params![domain, except], |row| row.get(0))
            .optional()?)
    }

    async fn entity_holds_number(
        &mut self,
        certificate: Option<&str>,
        name: &str,
    ) -> Result<bool, RegistryError> {
        let (statement, key) = match certificate {
            Some(certificate) => (sql::HOLDS_NUMBER_BY_CERTIFICATE, certificate),
            None => (sql::HOLDS_NUMBER_BY_NAME, name),
        };
        Ok(self.prepare_cached(statement)?.exists([key])?)
    }

    async fn number_holders(
        &mut self,
        entity_key: &str,
        except: i64,
    ) -> Result<Vec<NumberHolder>, RegistryError> {
        let mut statement = self.prepare_cached(sql::NUMBER_HOLDERS)?;
        let rows = statement.query_map(params![entity_key, except], |row| {
            Ok(NumberHolder {
                id: row.get(0)?,
                certificate: row.get(1)?,
                name: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn set_sealed_password(
        &mut self,
        id: i64,
        sealed: Option<&str>,
    ) -> Result<bool, RegistryError> {
        let changed = self
            .prepare_cached(sql::SET_SEALED_PASSWORD)?
            .execute(params![id, sealed])?;
        Ok(changed > 0)
    }

    async fn bump_revision(&mut self) -> Result<i64, RegistryError> {
        Ok(self
            .prepare_cached(sql::BUMP_REVISION)?
            .query_row([], |row| row.get(0))?)
    }

    async fn insert_filing(&mut self, status: Status, revision: i64) -> Result<i64, RegistryError> {
        self.prepare_cached(sql::INSERT_FILING)?
            .execute(params![status.as_str(), revision])?;
        Ok(self.last_insert_rowid())
    }

    async fn put_filing(&mut self, filing: &Filing, revision: i64) -> Result<(), RegistryError> {
        let (certificate, name) = entity_identity(&filing.entity);
        self.prepare_cached(sql::PUT_FILING)?.execute(params![
            filing.id,
            filing.status.as_str(),
            encode(filing),
            revision,
            certificate,
            name,
            number_key(filing),
            review_since_ms(filing)
        ])?;
        Ok(())
    }

    async fn set_filing_type(
        &mut self,
        id: i64,
        filing_type: FilingType,
    ) -> Result<(), RegistryError> {
        self.prepare_cached(sql::SET_FILING_TYPE)?
            .execute(params![id, filing_type.as_str()])?;
        Ok(())
    }

    async fn replace_domains(
        &mut self,
        id: i64,
        domains: &[String],
        live: bool,
    ) -> Result<Option<String>, RegistryError> {
        self.prepare_cached(sql::DELETE_DOMAINS)?.execute([id])?;
        let mut stmt = self.prepare_cached(sql::INSERT_DOMAIN)?;
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
        self.prepare_cached(sql::ENQUEUE)?
            .execute(params![filing_id, now_ms])?;
        let id = self.last_insert_rowid();
        self.prepare_cached(sql::SET_PAYLOAD)?
            .execute(params![payload(id), id])?;
        Ok(())
    }

    /// AUTOINCREMENT already hands out ids above every explicit one.
    async fn ids_imported(&mut self) -> Result<(), RegistryError> {
        Ok(())
    }
}
