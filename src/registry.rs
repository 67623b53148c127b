//! The filing registry: one `Registry` trait that the gate, the admin API and the CLI
//! use, whatever stores the filings (embedded SQLite by default; PostgreSQL for fleets).
//!
//! Contract every backend keeps:
//! - a registrable domain belongs to at most one *live* filing (`Status::is_live`);
//! - every write is one transaction, applied through `Filing::apply`, and bumps the
//!   registry revision, which only ever grows;
//! - `lookup` answers with the revision it read at, so a cache can tell an answer
//!   older than a write it already saw.

pub mod jsonl;
pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::filing::{
    Action, Entity, Filing, IcpNumber, Kind, Product, Status, TransitionError, Website,
};
use crate::host::RegistrableDomain;

/// A submission (`POST /v1/filings`), validated at the edge.
#[derive(Debug, Clone)]
pub struct NewFiling {
    pub kind: Kind,
    pub product: Product,
    pub domains: Vec<RegistrableDomain>,
    pub icp_number: Option<IcpNumber>,
    pub entity: Entity,
    pub website: Website,
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
    pub domains: Vec<String>,
}

/// Filters of `GET /v1/filings?domain=&status=`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub domain: Option<RegistrableDomain>,
    pub status: Option<Status>,
    pub limit: Option<usize>,
}

/// One record of an import, with the line it came from so errors can name it.
#[derive(Debug, Clone)]
pub struct ImportRecord {
    pub line: usize,
    /// Kept when given (a round trip keeps ids); assigned otherwise.
    pub id: Option<i64>,
    pub filing: Filing,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("registry storage error: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored filing {id} is unreadable: {source}")]
    Corrupt { id: i64, source: serde_json::Error },
    #[error("registry task failed: {0}")]
    Task(String),
    #[error("postgres registry: {0}")]
    Postgres(String),
    #[error("filing {0} not found")]
    NotFound(i64),
    #[error("domain {domain} already belongs to live filing {filing_id}")]
    DomainTaken { domain: String, filing_id: i64 },
    #[error("filing id {0} already exists")]
    IdTaken(i64),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("line {line}: {source}")]
    AtLine {
        line: usize,
        source: Box<RegistryError>,
    },
}

impl RegistryError {
    /// Whether the store itself failed (as opposed to the request being refused).
    pub fn is_unavailable(&self) -> bool {
        match self {
            RegistryError::Sqlite(_)
            | RegistryError::Io(_)
            | RegistryError::Corrupt { .. }
            | RegistryError::Task(_)
            | RegistryError::Postgres(_) => true,
            RegistryError::AtLine { source, .. } => source.is_unavailable(),
            RegistryError::NotFound(_)
            | RegistryError::DomainTaken { .. }
            | RegistryError::IdTaken(_)
            | RegistryError::Transition(_) => false,
        }
    }
}

/// Where filings live. Implementations are cheap to share (`Arc<dyn Registry>`).
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// The filing that decides traffic for `domain` (a registrable domain).
    async fn lookup(&self, domain: &RegistrableDomain) -> Result<Lookup, RegistryError>;
    async fn get(&self, id: i64) -> Result<Option<Filing>, RegistryError>;
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Filing>, RegistryError>;
    /// Store a submission in `initial_review`.
    async fn submit(&self, new: NewFiling, actor: &str) -> Result<Filing, RegistryError>;
    /// Apply one workflow step; the filing is unchanged when it is refused.
    async fn transition(
        &self,
        id: i64,
        action: Action,
        actor: &str,
    ) -> Result<Filing, RegistryError>;
    /// Store every record or none.
    async fn import(&self, records: Vec<ImportRecord>) -> Result<usize, RegistryError>;
    /// Every filing, by id.
    async fn export(&self) -> Result<Vec<Filing>, RegistryError>;
    /// How many filings are in each status (every status present, zeros included).
    async fn counts_by_status(&self) -> Result<BTreeMap<Status, u64>, RegistryError>;
    /// The current revision: grows with every write.
    async fn revision(&self) -> Result<i64, RegistryError>;
    /// Whether the store holds no filing at all (for `registry.seed`).
    async fn is_empty(&self) -> Result<bool, RegistryError>;
    /// Writes after `revision`, oldest first (at most a bounded batch per call).
    async fn changes_since(&self, revision: i64) -> Result<Vec<Change>, RegistryError>;
    /// Woken when another process may have written (PostgreSQL NOTIFY); backends
    /// without one are polled.
    fn change_signal(&self) -> Option<Arc<Notify>> {
        None
    }
}

impl From<tokio_postgres::Error> for RegistryError {
    fn from(error: tokio_postgres::Error) -> RegistryError {
        RegistryError::Postgres(error.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for RegistryError {
    fn from(error: deadpool_postgres::PoolError) -> RegistryError {
        RegistryError::Postgres(error.to_string())
    }
}

/// Build the filing a submission starts as.
pub fn submitted_filing(new: NewFiling, actor: &str, now: &str) -> Filing {
    Filing {
        id: 0,
        kind: new.kind,
        product: new.product,
        status: Status::InitialReview,
        domains: new.domains.into_iter().map(|d| d.into_string()).collect(),
        icp_number: new.icp_number,
        entity: new.entity,
        website: new.website,
        history: vec![crate::filing::HistoryEntry {
            at: now.to_string(),
            actor: actor.to_string(),
            from: None,
            to: Status::InitialReview,
            reason: Some("submitted".to_string()),
        }],
        created_at: now.to_string(),
        updated_at: now.to_string(),
    }
}
