//! The filing registry: one `Registry` trait that the gate, the admin API and the CLI
//! use, whatever stores the filings (embedded SQLite by default; PostgreSQL for fleets;
//! memory for tests).
//!
//! Contract every backend keeps:
//! - a registrable domain belongs to at most one *live* filing (`Status::is_live`);
//! - every write is one transaction, applied through `Filing::apply`, and bumps the
//!   registry revision, which only ever grows;
//! - `lookup` answers with the revision it read at, so a cache can tell an answer
//!   older than a write it already saw;
//! - a backend with an [`Outbox`] records every submission and transition as a
//!   notification in the same transaction as the change itself, so a change is never
//!   acknowledged without its notification (see `notify`).
//!
//! The writes (submit, transition, import) are written once, in `workflow`, over the
//! storage operations each backend supplies; backends differ only in their queries.
//! A backend's bulk import (`sqlite/import.rs`, `postgres/import.rs`) stores many
//! records per statement and leaves the checks to the schema; a chunk the schema
//! refuses is run again through `workflow::import`, which names the line.

pub mod acme_store;
mod document_check;
mod error;
pub mod jsonl;
pub mod memory;
mod migrations;
mod open;
pub mod postgres;
mod secret;
pub mod sqlite;
mod workflow;

pub use acme_store::AcmeStore;
pub use error::{RegistryError, StorageError};
pub use open::{
    export_to, import_file, import_file_with, open, open_seeded, ImportProgress, OpenError,
    SeedError,
};
pub use secret::{SecretError, SecretKey, MIN_KEY_CHARS};
pub use workflow::{now_ms, outbox_payload};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use serde::Serialize;

use crate::model::filing::{Action, Filing, FilingPassword, Status, Submission};
use crate::model::host::RegistrableDomain;

/// The seed's "filing type" (备案类型), reported for each submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilingType {
    /// 首次备案: the entity holds no ICP number yet.
    FirstFiling,
    /// 新增网站: the entity already holds an ICP number (another filing of it is
    /// `approved` or `disconnected`), matched by certificate number, else by name.
    NewWebsite,
    /// 接入已有备案: the website is filed with another provider.
    AccessExisting,
}

impl FilingType {
    pub fn as_str(self) -> &'static str {
        match self {
            FilingType::FirstFiling => "first_filing",
            FilingType::NewWebsite => "new_website",
            FilingType::AccessExisting => "access_existing",
        }
    }

    pub fn parse(s: &str) -> Option<FilingType> {
        [
            FilingType::FirstFiling,
            FilingType::NewWebsite,
            FilingType::AccessExisting,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// A stored submission and the filing type it was classified as.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub filing: Filing,
    pub filing_type: FilingType,
}

/// One pending notification of the durable outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub id: i64,
    /// The JSON document to deliver (no personal data).
    pub payload: String,
    /// Delivery attempts made so far.
    pub attempts: u32,
}

/// The durable outbox of filing-change notifications: rows are written in the same
/// transaction as the change (`Registry::submit`, `Registry::transition`) and
/// delivered by `notify::Notifier`.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Undelivered events whose next attempt is due at `now_ms` (Unix milliseconds),
    /// oldest first; of one filing only its oldest undelivered event, so a filing's
    /// events are delivered in order and a failing one holds back only its own.
    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEvent>, RegistryError>;
    /// When the next event `due` would return is due, if any: a filing's later
    /// events waiting behind its undelivered oldest one do not count (they are not
    /// due before it is delivered, and a past time here would make the notifier spin).
    async fn next_due(&self) -> Result<Option<i64>, RegistryError>;
    async fn delivered(&self, id: i64, now_ms: i64) -> Result<(), RegistryError>;
    /// Record a failed attempt and when to try again.
    async fn failed(&self, id: i64, next_at_ms: i64, error: &str) -> Result<(), RegistryError>;
    /// How many events are not yet delivered.
    async fn pending(&self) -> Result<u64, RegistryError>;
    /// Delete events delivered before `before_ms`; returns how many went. Pending
    /// events are never deleted.
    async fn prune_delivered(&self, before_ms: i64) -> Result<u64, RegistryError>;
}

/// The filing a domain resolves to, with the revision the registry was at when read.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The live filing of the domain, else its most recently changed one, else none.
    pub filing: Option<Filing>,
    pub revision: i64,
}

/// A write seen by the change feed: the revision it was made at and the domains of
/// the filing it touched (their cached answers are stale from that revision on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub revision: i64,
    /// The filing written.
    pub filing_id: i64,
    pub domains: Vec<String>,
    /// Why the filing's stored document does not read (`RegistryError::Corrupt`),
    /// when it does not: `domains` then come from its domain rows, and the feed
    /// names it instead of stalling on it.
    pub unreadable: Option<String>,
}

/// Filters of `GET /v1/filings?domain=&status=&limit=&after=`: one page, in id order.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub domain: Option<RegistrableDomain>,
    pub status: Option<Status>,
    pub limit: Option<usize>,
    /// Only filings with a greater id (the previous page's last id): keyset paging,
    /// so a page costs the same wherever it starts.
    pub after: Option<i64>,
}

/// Why an import's input stopped before its end (a line that does not parse, a file
/// that cannot be read): the backend stores nothing, and the reader reports why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportAborted;

/// The records of an import in batches, as they are read; an `Err` aborts it.
pub type ImportFeed = tokio::sync::mpsc::Receiver<Result<Vec<ImportRecord>, ImportAborted>>;

/// One record of an import, with the line it came from so errors can name it.
#[derive(Debug, Clone)]
pub struct ImportRecord {
    pub line: usize,
    /// Kept when given (a round trip keeps ids); assigned otherwise.
    pub id: Option<i64>,
    pub filing: Filing,
}

/// Where filings live. Implementations are cheap to share (`Arc<dyn Registry>`).
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// The filing that decides traffic for `domain` (a registrable domain).
    async fn lookup(&self, domain: &RegistrableDomain) -> Result<Lookup, RegistryError>;
    async fn get(&self, id: i64) -> Result<Option<Filing>, RegistryError>;
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Filing>, RegistryError>;
    /// Validate (`Filing::submit`) and store a submission in `initial_review`;
    /// `submission.domains` are registrable domains, normalised by the caller.
    async fn submit(&self, submission: Submission, actor: &str)
        -> Result<Submitted, RegistryError>;
    /// Apply one workflow step; the filing is unchanged when it is refused.
    async fn transition(
        &self,
        id: i64,
        action: Action,
        actor: &str,
    ) -> Result<Filing, RegistryError>;
    /// Store every record or none.
    async fn import(&self, records: Vec<ImportRecord>) -> Result<usize, RegistryError>;
    /// `import` of records as they arrive on `feed`, in one transaction, counting in
    /// `stored` the records stored so far (nothing is visible, or kept, before the
    /// whole import commits), so another task can draw progress. An aborted feed
    /// stores nothing. Backends that cannot stream collect the feed first and
    /// report the whole import at once when it is done.
    async fn import_feed(
        &self,
        mut feed: ImportFeed,
        stored: Arc<AtomicUsize>,
    ) -> Result<usize, RegistryError> {
        let mut records = Vec::new();
        while let Some(batch) = feed.recv().await {
            records.extend(batch.map_err(|ImportAborted| StorageError::ImportAborted)?);
        }
        let count = self.import(records).await?;
        stored.store(count, Ordering::Relaxed);
        Ok(count)
    }
    /// The seed's filing type of filing `id` as classified when it was submitted;
    /// `None` when unknown (no such filing, stored before filing types were kept,
    /// imported, or a backend that does not keep them).
    async fn filing_type(&self, id: i64) -> Result<Option<FilingType>, RegistryError> {
        let _ = id;
        Ok(None)
    }
    /// The filing password kept (sealed) for filing `id` until its initial review
    /// ends, opened with the registry's key; `None` when none is kept. Never part
    /// of the filing document (so of no export, list, read or notification).
    async fn filing_password(&self, id: i64) -> Result<Option<FilingPassword>, RegistryError>;
    /// Every filing, by id.
    async fn export(&self) -> Result<Vec<Filing>, RegistryError>;
    /// How many filings are in each status (every status present, zeros included).
    async fn counts_by_status(&self) -> Result<BTreeMap<Status, u64>, RegistryError>;
    /// How many filings are in initial review and entered it at or before
    /// `cutoff_ms` (Unix milliseconds): with `working_days::overdue_cutoff_ms(now)`,
    /// the reviews overdue at `now`. The durable backends count one range of the
    /// `(status, review_since)` index; this default reads every filing in initial
    /// review a page at a time (the count before that index, kept for backends
    /// without one and as the reference the index is tested against).
    async fn initial_reviews_entered_by(&self, cutoff_ms: i64) -> Result<u64, RegistryError> {
        const PAGE: usize = 1000;
        let mut page = ListFilter {
            status: Some(Status::InitialReview),
            limit: Some(PAGE),
            ..ListFilter::default()
        };
        let mut count = 0;
        loop {
            let filings = self.list(&page).await?;
            let entered_by = |filing: &&Filing| {
                crate::model::working_days::entered_initial_review(filing)
                    .is_some_and(|since| since.saturating_mul(1000) <= cutoff_ms)
            };
            count += u64::try_from(filings.iter().filter(entered_by).count()).unwrap_or(u64::MAX);
            match filings.last() {
                Some(last) if filings.len() == PAGE => page.after = Some(last.id),
                _ => return Ok(count),
            }
        }
    }
    /// The current revision: grows with every write.
    async fn revision(&self) -> Result<i64, RegistryError>;
    /// Whether the store holds no filing at all (for `registry.seed`).
    async fn is_empty(&self) -> Result<bool, RegistryError>;
    /// Read every stored filing document once (the start-up check: a gate must not
    /// serve with a filing it cannot read); the first that does not read is
    /// `Corrupt`, naming its filing. Returns how many were read. This default reads
    /// them a page at a time through `list`; the durable backends stream them from
    /// one query on a connection of its own, beside the filed-domain index load.
    async fn check_documents(&self) -> Result<u64, RegistryError> {
        const PAGE: usize = 1000;
        let mut page = ListFilter {
            limit: Some(PAGE),
            ..ListFilter::default()
        };
        let mut count = 0;
        loop {
            let filings = self.list(&page).await?;
            count += u64::try_from(filings.len()).unwrap_or(u64::MAX);
            match filings.last() {
                Some(last) if filings.len() == PAGE => page.after = Some(last.id),
                _ => return Ok(count),
            }
        }
    }
    /// Every registrable domain that has a filing, in any status.
    async fn filed_domains(&self) -> Result<Vec<String>, RegistryError>;
    /// `filed_domains` in batches sent to `batches` as one query reads them, so a
    /// caller can index ten million without holding them all as strings. Returns
    /// when every batch is sent (or the receiver is gone).
    async fn filed_domain_batches(
        &self,
        batches: tokio::sync::mpsc::Sender<Vec<String>>,
    ) -> Result<(), RegistryError> {
        let _ = batches.send(self.filed_domains().await?).await;
        Ok(())
    }
    /// Writes after `revision`, oldest first (at most a bounded batch per call). A
    /// filing whose document does not read is a change like any other, marked
    /// `unreadable`, never an error: one bad row must not stall the feed.
    async fn changes_since(&self, revision: i64) -> Result<Vec<Change>, RegistryError>;
    /// Woken when another process may have written (PostgreSQL NOTIFY); backends
    /// without one are polled.
    fn change_signal(&self) -> Option<Arc<Notify>> {
        None
    }
    /// The durable outbox, when this backend records notifications.
    fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        None
    }
    /// Fleet-wide ACME storage, when this backend is shared by nodes (PostgreSQL).
    fn acme_store(&self) -> Option<Arc<dyn AcmeStore>> {
        None
    }
}

/// At most this many changes per `changes_since` call.
pub(crate) const CHANGES_BATCH: i64 = 10_000;

/// `counts_by_status` from a backend's `(status, count)` rows: every status present,
/// zeros included; a status the model does not know is left out.
pub(crate) fn status_counts(
    rows: impl IntoIterator<Item = (String, i64)>,
) -> BTreeMap<Status, u64> {
    let mut counts: BTreeMap<Status, u64> = Status::ALL.iter().map(|s| (*s, 0)).collect();
    for (status, n) in rows {
        if let Some(status) = Status::parse(&status) {
            counts.insert(status, u64::try_from(n).unwrap_or(0));
        }
    }
    counts
}
