//! The registry's one error type, the same for every backend: what a caller can act
//! on (not found, a taken domain with its holder, an illegal step, a bad import line)
//! is a variant of its own; a failing store is `Unavailable` with its typed cause.

use crate::model::filing::TransitionError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("filing {0} not found")]
    NotFound(i64),
    #[error("domain {domain} already belongs to live filing {filing_id}")]
    DomainTaken { domain: String, filing_id: i64 },
    #[error("filing id {0} already exists")]
    IdTaken(i64),
    /// One live ICP number belongs to one entity: `filing_id` holds `number` (its
    /// entity part) for another entity.
    #[error("ICP number {number} belongs to another entity: filing {filing_id} holds it")]
    NumberTaken { number: String, filing_id: i64 },
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("line {line}: {source}")]
    AtLine {
        line: usize,
        source: Box<RegistryError>,
    },
    #[error("stored filing {id} is unreadable: {source}")]
    Corrupt { id: i64, source: serde_json::Error },
    #[error("registry storage error: {0}")]
    Unavailable(#[from] StorageError),
}

/// Why the store itself failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("postgres pool: {0}")]
    PoolBuild(#[from] deadpool_postgres::BuildError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("registry task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Another writer took and released `domain` between this write's two looks at
    /// it; nothing was stored, the write may be retried.
    #[error("domain {domain} changed hands during this write; retry")]
    LostRace { domain: String },
    /// A filing password could not be sealed or opened.
    #[error("filing password: {0}")]
    Secret(#[from] super::SecretError),
    /// A synchronous backend's operation did not complete at once (a bug).
    #[error("a synchronous registry operation did not complete")]
    Stalled,
    /// The database was upgraded by a newer release: this one must not write to it.
    #[error("registry schema is at version {found}, newer than this release knows ({known}); run the newer release")]
    SchemaTooNew { found: i64, known: i64 },
    /// The SQLite file this registry opened was deleted or replaced under it: a write
    /// would land in an unlinked file and be lost at the next start, so none is made.
    #[error(
        "registry file {path} was removed or replaced since it was opened; restore it and restart"
    )]
    FileReplaced { path: String },
    /// An import's input stopped before its end; nothing was stored (the reader
    /// names the line).
    #[error("the import's input failed; nothing was stored")]
    ImportAborted,
    /// The in-memory registry was told to fail (tests of outage handling).
    #[error("the in-memory registry is down (test fault)")]
    Down,
}

impl RegistryError {
    /// This error, as the failure of an import's line `line`.
    pub fn at_line(line: usize) -> impl Fn(RegistryError) -> RegistryError + Copy {
        move |source| RegistryError::AtLine {
            line,
            source: Box::new(source),
        }
    }

    /// Whether the store itself failed (as opposed to the request being refused).
    pub fn is_unavailable(&self) -> bool {
        match self {
            RegistryError::Unavailable(_) | RegistryError::Corrupt { .. } => true,
            RegistryError::AtLine { source, .. } => source.is_unavailable(),
            RegistryError::NotFound(_)
            | RegistryError::DomainTaken { .. }
            | RegistryError::IdTaken(_)
            | RegistryError::NumberTaken { .. }
            | RegistryError::Transition(_) => false,
        }
    }
}

macro_rules! unavailable_from {
    ($($source:ty),* $(,)?) => {$(
        impl From<$source> for RegistryError {
            fn from(error: $source) -> RegistryError {
                RegistryError::Unavailable(StorageError::from(error))
            }
        }
    )*};
}

unavailable_from!(
    rusqlite::Error,
    tokio_postgres::Error,
    deadpool_postgres::PoolError,
    deadpool_postgres::BuildError,
    std::io::Error,
    tokio::task::JoinError,
);
