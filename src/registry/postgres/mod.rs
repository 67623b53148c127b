//! The fleet registry: every node points at one PostgreSQL database.
//!
//! Same contract as the SQLite backend (see `registry/mod.rs`): filings are JSONB
//! documents beside a domain index whose partial unique index keeps one live filing
//! per registrable domain; each write is `workflow`'s, in one transaction over the
//! storage operations below, and takes the next revision from `icpgate_meta` (the
//! row lock orders writers, so revisions become visible in order). Each write
//! transaction sends `NOTIFY icpgate_registry`, delivered on commit;
//! a dedicated LISTEN connection per node turns that into a wake-up for the change
//! feed, which then catches up by revision — a lost notification only delays the
//! catch-up to the next poll, it never loses a change.
//!
//! Beside this file: `pages` (list pages and the streamed filed-domain index),
//! `import` (bulk import with binary COPY), `outbox` (the notifications).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Transaction,
};
use tokio::sync::Notify;
use tokio_postgres::types::Json;
use tokio_postgres::{AsyncMessage, NoTls};

mod import;
mod outbox;
mod pages;
pub mod sql;

use super::migrations;
use super::secret::SecretKey;
use super::workflow::{
    self, decode, entity_identity, now_ms, number_key, open_password, review_since_ms,
    NumberHolder, WriteTx,
};
use super::{
    status_counts, Change, FilingType, ImportFeed, ImportRecord, ListFilter, Lookup, Outbox,
    Registry, RegistryError, Submitted, CHANGES_BATCH,
};
use crate::model::filing::{Action, Filing, FilingPassword, Status, Submission};
use crate::model::host::RegistrableDomain;

const CHANNEL: &str = "icpgate_registry";
/// The NOTIFY channel of ACME certificates stored by any node ([`super::acme_store`]).
pub(super) const ACME_CHANNEL: &str = "icpgate_acme";

/// How long a node's claim on a due notification keeps other nodes' notifiers off
/// it; an attempt records its outcome well within this (the notifier's attempt
/// timeout is shorter), and a node that dies mid-attempt frees it when it expires.
const OUTBOX_CLAIM_MS: i64 = 60_000;

/// PostgreSQL-backed `Registry`.
#[derive(Clone)]
pub struct PostgresRegistry {
    pool: Pool,
    /// Woken by NOTIFY from any node's write.
    changed: Arc<Notify>,
    /// Woken by NOTIFY from any node's stored ACME certificate.
    acme_changed: Arc<Notify>,
    /// Whether writes also record notifications in the outbox.
    outbox: bool,
    /// Seals kept filing passwords (`registry.secret_key_env`).
    secret_key: Option<Arc<SecretKey>>,
}

impl PostgresRegistry {
    /// Connect, bring the schema up to date (`migrations`), and start listening for
    /// changes.
    pub async fn connect(url: &str) -> Result<PostgresRegistry, RegistryError> {
        let config: tokio_postgres::Config = url.parse()?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()?;
        migrate(&mut *pool.get().await?).await?;
        let changed = Arc::new(Notify::new());
        let acme_changed = Arc::new(Notify::new());
        let wake = [Arc::clone(&changed), Arc::clone(&acme_changed)];
        tokio::spawn(listen_forever(config, wake));
        Ok(PostgresRegistry {
            pool,
            changed,
            acme_changed,
            outbox: false,
            secret_key: None,
        })
    }

    /// Record (or not) every submission and transition in the durable outbox.
    pub fn with_outbox(mut self, on: bool) -> PostgresRegistry {
        self.outbox = on;
        self
    }

    /// Seal kept filing passwords with `key` (`registry.secret_key_env`); without
    /// one they are not kept.
    pub fn with_secret_key(mut self, key: Option<Arc<SecretKey>>) -> Self {
        self.secret_key = key;
        self
    }
}

/// Apply the pending migrations in one transaction under the advisory lock: nodes
/// starting at once queue on the lock; the first migrates, the others then find
/// nothing to do.
async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), RegistryError> {
    let tx = client.transaction().await?;
    tx.batch_execute(migrations::POSTGRES_VERSION_TABLE).await?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM icpgate_schema_version",
            &[],
        )
        .await?
        .try_get(0)?;
    for migration in migrations::pending(migrations::POSTGRES, current)? {
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO icpgate_schema_version (version, name, applied_at_ms) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &now_ms()],
        )
        .await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "registry schema migrated"
        );
    }
    tx.commit().await?;
    Ok(())
}

/// Commit a write transaction, telling every node's change feed about it.
async fn commit(tx: Transaction<'_>) -> Result<(), RegistryError> {
    tx.execute(&format!("NOTIFY {CHANNEL}"), &[]).await?;
    tx.commit().await?;
    Ok(())
}

/// Keep one LISTEN connection open (reconnecting with backoff) and wake
/// `[changed, acme_changed]` on every notification of their channel, both after
/// every reconnect (changes may have been missed).
async fn listen_forever(config: tokio_postgres::Config, wake: [Arc<Notify>; 2]) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match listen_once(&config, &wake).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(error) => tracing::warn!(%error, "registry change listener lost; reconnecting"),
        }
        wake.iter().for_each(|w| w.notify_one());
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    [changed, acme_changed]: &[Arc<Notify>; 2],
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (sender, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = futures_util::StreamExt::next(&mut stream).await {
            match message {
                Ok(AsyncMessage::Notification(note)) => {
                    if sender.send(note.channel() == ACME_CHANNEL).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {ACME_CHANNEL}"))
        .await?;
    changed.notify_one();
    acme_changed.notify_one();
    while let Some(acme) = messages.recv().await {
        match acme {
            true => acme_changed.notify_one(),
            false => changed.notify_one(),
        }
    }
    drop(client);
    driver.await.unwrap_or(Ok(()))
}

/// The filing in column `doc` (a `doc::text`) of `row`, under `id`; an unreadable
/// document is `Corrupt`, never a panic.
fn filing_at(row: &tokio_postgres::Row, id: i64, doc: usize) -> Result<Filing, RegistryError> {
    let doc: String = row.try_get(doc)?;
    decode(id, &doc)
}

async fn load<C: GenericClient>(
    client: &C,
    id: i64,
    lock: bool,
) -> Result<Option<Filing>, RegistryError> {
    let sql = if lock {
        sql::LOAD_FOR_UPDATE
    } else {
        sql::LOAD
    };
    let row = client.query_opt(sql, &[&id]).await?;
    row.map(|row| filing_at(&row, id, 0)).transpose()
}

#[async_trait]
impl Registry for PostgresRegistry {
    async fn lookup(&self, domain: &RegistrableDomain) -> Result<Lookup, RegistryError> {
        let client = self.pool.get().await?;
        let row = client.query_one(sql::LOOKUP, &[&domain.as_str()]).await?;
        let revision: i64 = row.try_get(0)?;
        let id: Option<i64> = row.try_get(1)?;
        let filing = id.map(|id| filing_at(&row, id, 2)).transpose()?;
        Ok(Lookup { filing, revision })
    }

    async fn get(&self, id: i64) -> Result<Option<Filing>, RegistryError> {
        let client = self.pool.get().await?;
        load(&client, id, false).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Filing>, RegistryError> {
        let client = self.pool.get().await?;
        pages::list(&client, filter).await
    }

    async fn submit(
        &self,
        submission: Submission,
        actor: &str,
    ) -> Result<Submitted, RegistryError> {
        let mut client = self.pool.get().await?;
        let mut tx = client.transaction().await?;
        let key = self.secret_key.as_deref();
        let submitted = workflow::submit(&mut tx, submission, actor, self.outbox, key).await?;
        commit(tx).await?;
        Ok(submitted)
    }

    async fn transition(
        &self,
        id: i64,
        action: Action,
        actor: &str,
    ) -> Result<Filing, RegistryError> {
        let mut client = self.pool.get().await?;
        let mut tx = client.transaction().await?;
        let key = self.secret_key.as_deref();
        let filing = workflow::transition(&mut tx, id, action, actor, self.outbox, key).await?;
        commit(tx).await?;
        Ok(filing)
    }

    async fn import(&self, records: Vec<ImportRecord>) -> Result<usize, RegistryError> {
        let (batch, feed) = tokio::sync::mpsc::channel(1);
        let _ = batch.send(Ok(records)).await;
        drop(batch);
        self.import_feed(feed, Arc::default()).await
    }

    async fn import_feed(
        &self,
        feed: ImportFeed,
        stored: Arc<AtomicUsize>,
    ) -> Result<usize, RegistryError> {
        let mut client = self.pool.get().await?;
        let mut tx = client.transaction().await?;
        let count = import::run(&mut tx, feed, &stored).await?;
        commit(tx).await?;
        Ok(count)
    }

    async fn filing_type(&self, id: i64) -> Result<Option<FilingType>, RegistryError> {
        let client = self.pool.get().await?;
        let row = client.query_opt(sql::FILING_TYPE, &[&id]).await?;
        let stored: Option<String> = row.map(|row| row.try_get(0)).transpose()?.flatten();
        Ok(stored.as_deref().and_then(FilingType::parse))
    }

    async fn filing_password(&self, id: i64) -> Result<Option<FilingPassword>, RegistryError> {
        let client = self.pool.get().await?;
        let row = client.query_opt(sql::SEALED_PASSWORD, &[&id]).await?;
        let sealed: Option<String> = row.map(|row| row.try_get(0)).transpose()?.flatten();
        open_password(self.secret_key.as_deref(), id, sealed)
    }

    async fn export(&self) -> Result<Vec<Filing>, RegistryError> {
        self.list(&ListFilter::default()).await
    }

    async fn counts_by_status(&self) -> Result<BTreeMap<Status, u64>, RegistryError> {
        let client = self.pool.get().await?;
        let rows = client
            .query("SELECT status, n FROM icpgate_filing_counts", &[])
            .await?;
        let rows = rows
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<_>, RegistryError>>()?;
        Ok(status_counts(rows))
    }

    async fn revision(&self) -> Result<i64, RegistryError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_one("SELECT value FROM icpgate_meta WHERE key = 'revision'", &[])
            .await?
            .try_get(0)?)
    }

    async fn initial_reviews_entered_by(&self, cutoff_ms: i64) -> Result<u64, RegistryError> {
        let client = self.pool.get().await?;
        let n: i64 = client
            .query_one(sql::INITIAL_REVIEWS_ENTERED_BY, &[&cutoff_ms])
            .await?
            .try_get(0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn is_empty(&self) -> Result<bool, RegistryError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one("SELECT NOT EXISTS (SELECT 1 FROM icpgate_filings)", &[])
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn filed_domains(&self) -> Result<Vec<String>, RegistryError> {
        let client = self.pool.get().await?;
        let rows = client
            .query("SELECT DISTINCT domain FROM icpgate_filing_domains", &[])
            .await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    async fn filed_domain_batches(
        &self,
        batches: tokio::sync::mpsc::Sender<Vec<String>>,
    ) -> Result<(), RegistryError> {
        let client = self.pool.get().await?;
        pages::filed_domain_batches(&client, &batches).await
    }

    /// Streamed from one query on a pooled connection of its own, so the
    /// filed-domain index loads beside it, and decoded on every core
    /// (`document_check`).
    async fn check_documents(&self) -> Result<u64, RegistryError> {
        let client = self.pool.get().await?;
        let (sink, check) = super::document_check::DocumentCheck::start();
        let read = pages::read_documents(&client, sink).await;
        let checked = tokio::task::spawn_blocking(move || check.finish()).await?;
        read?;
        checked
    }

    async fn changes_since(&self, revision: i64) -> Result<Vec<Change>, RegistryError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(sql::CHANGES_SINCE, &[&revision, &CHANGES_BATCH])
            .await?;
        let mut changes = Vec::with_capacity(rows.len());
        for row in &rows {
            let (filing_id, revision) = (row.try_get(0)?, row.try_get(1)?);
            changes.push(match filing_at(row, filing_id, 2) {
                Ok(filing) => Change {
                    revision,
                    filing_id,
                    domains: filing.domains,
                    unreadable: None,
                },
                Err(error @ RegistryError::Corrupt { .. }) => {
                    let domains = client.query(sql::DOMAINS_OF, &[&filing_id]).await?;
                    Change {
                        revision,
                        filing_id,
                        domains: domains
                            .iter()
                            .map(|row| row.try_get(0))
                            .collect::<Result<_, _>>()?,
                        unreadable: Some(error.to_string()),
                    }
                }
                Err(error) => return Err(error),
            });
        }
        Ok(changes)
    }

    fn change_signal(&self) -> Option<Arc<Notify>> {
        Some(Arc::clone(&self.changed))
    }

    fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        self.outbox
            .then(|| Arc::new(self.clone()) as Arc<dyn Outbox>)
    }

    fn acme_store(&self) -> Option<Arc<dyn super::AcmeStore>> {
        Some(Arc::new(super::acme_store::PgAcmeStore {
            pool: self.pool.clone(),
            stored: Arc::clone(&self.acme_changed),
        }))
    }
}

/// The storage operations of the shared write path, in one transaction.
impl WriteTx for Transaction<'_> {
    async fn load(&mut self, id: i64) -> Result<Option<Filing>, RegistryError> {
        load(self, id, true).await
    }

    async fn live_holder(
        &mut self,
        domain: &str,
        except: i64,
    ) -> Result<Option<i64>, RegistryError> {
        let statement = self.prepare_cached(sql::LIVE_HOLDER).await?;
        let row = self.query_opt(&statement, &[&domain, &except]).await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    async fn entity_holds_number(
        &mut self,
        certificate: Option<&str>,
        name: &str,
    ) -> Result<bool, RegistryError> {
        let (sql, key) = match certificate {
            Some(certificate) => (sql::HOLDS_NUMBER_BY_CERTIFICATE, certificate),
            None => (sql::HOLDS_NUMBER_BY_NAME, name),
        };
        let statement = self.prepare_cached(sql).await?;
        Ok(self.query_opt(&statement, &[&key]).await?.is_some())
    }

    async fn number_holders(
        &mut self,
        entity_key: &str,
        except: i64,
    ) -> Result<Vec<NumberHolder>, RegistryError> {
        let statement = self.prepare_cached(sql::NUMBER_HOLDERS).await?;
        let rows = self.query(&statement, &[&entity_key, &except]).await?;
        let holder = |row: &tokio_postgres::Row| -> Result<NumberHolder, tokio_postgres::Error> {
            Ok(NumberHolder {
                id: row.try_get(0)?,
                certificate: row.try_get(1)?,
                name: row.try_get(2)?,
            })
        };
        Ok(rows.iter().map(holder).collect::<Result<_, _>>()?)
    }

    async fn set_sealed_password(
        &mut self,
        id: i64,
        sealed: Option<&str>,
    ) -> Result<bool, RegistryError> {
        let statement = self.prepare_cached(sql::SET_SEALED_PASSWORD).await?;
        Ok(self.execute(&statement, &[&id, &sealed]).await? > 0)
    }

    async fn bump_revision(&mut self) -> Result<i64, RegistryError> {
        let statement = self.prepare_cached(sql::BUMP_REVISION).await?;
        Ok(self.query_one(&statement, &[]).await?.try_get(0)?)
    }

    async fn insert_filing(&mut self, status: Status, revision: i64) -> Result<i64, RegistryError> {
        let statement = self.prepare_cached(sql::INSERT_FILING).await?;
        let row = self
            .query_one(&statement, &[&status.as_str(), &revision])
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn put_filing(&mut self, filing: &Filing, revision: i64) -> Result<(), RegistryError> {
        let (certificate, name) = entity_identity(&filing.entity);
        let statement = self.prepare_cached(sql::PUT_FILING).await?;
        self.execute(
            &statement,
            &[
                &filing.id,
                &filing.status.as_str(),
                &Json(filing),
                &revision,
                &certificate,
                &name,
                &number_key(filing),
                &review_since_ms(filing),
            ],
        )
        .await?;
        Ok(())
    }

    async fn set_filing_type(
        &mut self,
        id: i64,
        filing_type: FilingType,
    ) -> Result<(), RegistryError> {
        let statement = self.prepare_cached(sql::SET_FILING_TYPE).await?;
        self.execute(&statement, &[&id, &filing_type.as_str()])
            .await?;
        Ok(())
    }

    /// `ON CONFLICT DO NOTHING` leaves a domain another live filing holds (a node
    /// that won a race after the workflow's check) unclaimed, and the transaction
    /// usable to name that holder.
    async fn replace_domains(
        &mut self,
        id: i64,
        domains: &[String],
        live: bool,
    ) -> Result<Option<String>, RegistryError> {
        let delete = self.prepare_cached(sql::DELETE_DOMAINS).await?;
        self.execute(&delete, &[&id]).await?;
        let insert = self.prepare_cached(sql::INSERT_DOMAIN).await?;
        for domain in domains {
            if self.execute(&insert, &[domain, &id, &live]).await? == 0 {
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
        let enqueue = self.prepare_cached(sql::ENQUEUE).await?;
        let id: i64 = self
            .query_one(&enqueue, &[&filing_id, &now_ms])
            .await?
            .try_get(0)?;
        let set_payload = self.prepare_cached(sql::SET_PAYLOAD).await?;
        self.execute(&set_payload, &[&payload(id), &id]).await?;
        Ok(())
    }

    /// Explicit ids must not collide with the ids the sequence hands out later.
    async fn ids_imported(&mut self) -> Result<(), RegistryError> {
        self.execute(
            "SELECT setval(pg_get_serial_sequence('icpgate_filings', 'id'),
                    GREATEST((SELECT MAX(id) FROM icpgate_filings), 1))",
            &[],
        )
        .await?;
        Ok(())
    }
}
