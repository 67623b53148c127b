//! Opening the registry a config names, and seeding an empty one: the one path
//! `serve`, `check` and the tests take, so each sees the registry the same way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::{Backend, RegistryConfig};
use crate::registry::postgres::PostgresRegistry;
use crate::registry::sqlite::SqliteRegistry;
use crate::registry::{jsonl, Registry, RegistryError, SecretError, SecretKey};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("registry.backend = \"postgres\" needs registry.url")]
    PostgresUrlMissing,
    #[error("{0}")]
    SecretKey(#[from] SecretError),
    #[error("{path}: {source}")]
    Seed {
        path: PathBuf,
        source: Box<SeedError>,
    },
}

/// Why a JSON Lines file (`registry.seed`, `registry import`) was not imported.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("{0}")]
    Parse(#[from] jsonl::JsonlError),
    #[error("{0}")]
    Store(#[from] RegistryError),
}

/// Open the registry a config names; with `outbox`, every change also records its
/// notification.
pub async fn open(config: &RegistryConfig, outbox: bool) -> Result<Arc<dyn Registry>, OpenError> {
    let key = secret_key(config)?;
    match config.backend {
        Backend::Sqlite => Ok(Arc::new(
            SqliteRegistry::open(&config.path)?
                .with_outbox(outbox)
                .with_secret_key(key),
        )),
        Backend::Postgres => {
            let url = config.url.as_deref().ok_or(OpenError::PostgresUrlMissing)?;
            Ok(Arc::new(
                PostgresRegistry::connect(url)
                    .await?
                    .with_outbox(outbox)
                    .with_secret_key(key),
            ))
        }
    }
}

/// The key of `registry.secret_key_env`: a variable named but unset or short is
/// refused at start; none named keeps no filing password (said once, here).
fn secret_key(config: &RegistryConfig) -> Result<Option<Arc<SecretKey>>, OpenError> {
    match config.secret_key_env.as_deref() {
        Some(var) => Ok(Some(Arc::new(SecretKey::from_env(var)?))),
        None => {
            tracing::info!(
                "registry.secret_key_env is not set: filing passwords are required but not kept"
            );
            Ok(None)
        }
    }
}

/// Open the registry and import `registry.seed` into it when it is empty, so a
/// fresh install serves (and `check` answers) the example filings.
pub async fn open_seeded(
    config: &RegistryConfig,
    outbox: bool,
) -> Result<Arc<dyn Registry>, OpenError> {
    let registry = open(config, outbox).await?;
    if let Some(seed) = &config.seed {
        if registry.is_empty().await? {
            let count = import_file(registry.as_ref(), seed).await?;
            tracing::info!(count, seed = %seed.display(), "seeded an empty registry");
        }
    }
    Ok(registry)
}

/// How far an import of a file has got, for a progress display in another task:
/// `lines` of the file in all, `parsed` of them read, `stored` records stored (in
/// the one transaction, so nothing is kept unless all are).
#[derive(Debug, Default)]
pub struct ImportProgress {
    pub lines: AtomicUsize,
    pub parsed: AtomicUsize,
    pub stored: Arc<AtomicUsize>,
}

/// Import `path` (JSON Lines) into `registry`, all or nothing.
pub async fn import_file(registry: &dyn Registry, path: &Path) -> Result<usize, OpenError> {
    import_file_with(registry, path, &ImportProgress::default()).await
}

/// `import_file`, reporting how far it has got in `progress`.
pub async fn import_file_with(
    registry: &dyn Registry,
    path: &Path,
    progress: &ImportProgress,
) -> Result<usize, OpenError> {
    let seed_error = |source: SeedError| OpenError::Seed {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let text = std::fs::read_to_string(path).map_err(|e| seed_error(e.into()))?;
    progress
        .lines
        .store(text.lines().count(), Ordering::Relaxed);
    let records =
        jsonl::parse_counted(&text, &progress.parsed).map_err(|e| seed_error(e.into()))?;
    drop(text);
    registry
        .import_counted(records, Arc::clone(&progress.stored))
        .await
        .map_err(|e| seed_error(e.into()))
}
