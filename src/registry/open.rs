//! Opening the registry a config names, and seeding an empty one: the one path
//! `serve`, `check` and the tests take, so each sees the registry the same way. And
//! moving filings in and out as JSON Lines files, streamed both ways (`registry
//! import|export`, `registry.seed`), so memory stays flat at ten million filings.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::{Backend, RegistryConfig};
use crate::registry::postgres::PostgresRegistry;
use crate::registry::sqlite::SqliteRegistry;
use crate::registry::{
    jsonl, ImportAborted, ImportRecord, ListFilter, Registry, RegistryError, SecretError, SecretKey,
};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("registry.backend = \"postgres\" needs registry.url")]
    PostgresUrlMissing,
    #[error("cannot write the export: {0}")]
    Write(std::io::Error),
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
    pub lines: Arc<AtomicUsize>,
    pub parsed: Arc<AtomicUsize>,
    pub stored: Arc<AtomicUsize>,
}

/// Filings per page read by `export_to`.
const EXPORT_PAGE: usize = 1000;

/// Write every filing to `out` as JSON Lines, in id order, page by page as they
/// are read (keyset pages: each filing as it was when its page was read; filings
/// are never deleted, so none is missed). Returns how many were written.
pub async fn export_to<W: Write>(registry: &dyn Registry, out: &mut W) -> Result<usize, OpenError> {
    let mut count = 0;
    let mut after = None;
    loop {
        let page = ListFilter {
            limit: Some(EXPORT_PAGE),
            after,
            ..ListFilter::default()
        };
        let filings = registry.list(&page).await?;
        for filing in &filings {
            serde_json::to_writer(&mut *out, filing)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(OpenError::Write)?;
        }
        count += filings.len();
        match filings.last() {
            Some(last) if filings.len() == EXPORT_PAGE => after = Some(last.id),
            _ => return Ok(count),
        }
    }
}

/// Records per batch handed from the reader to the registry.
const IMPORT_BATCH: usize = 1024;
/// Batches read ahead of the registry: reading and storing overlap, memory stays
/// flat.
const IMPORT_READ_AHEAD: usize = 8;

/// Import `path` (JSON Lines) into `registry`, all or nothing.
pub async fn import_file(registry: &dyn Registry, path: &Path) -> Result<usize, OpenError> {
    import_file_with(registry, path, &ImportProgress::default()).await
}

/// `import_file`, reporting how far it has got in `progress`. The file is read on
/// a thread of its own while the registry stores what was read so far, in one
/// transaction; a line that does not parse aborts it, named with its number.
pub async fn import_file_with(
    registry: &dyn Registry,
    path: &Path,
    progress: &ImportProgress,
) -> Result<usize, OpenError> {
    let seed_error = |source: SeedError| OpenError::Seed {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let (batches, feed) = tokio::sync::mpsc::channel(IMPORT_READ_AHEAD);
    let reader = {
        let path = path.to_path_buf();
        let lines = Arc::clone(&progress.lines);
        let parsed = Arc::clone(&progress.parsed);
        tokio::task::spawn_blocking(move || read_batches(&path, &lines, &parsed, &batches))
    };
    let stored = registry
        .import_feed(feed, Arc::clone(&progress.stored))
        .await;
    // The reader's own failure (unreadable file, a bad line) is why the feed ended.
    match reader.await {
        Ok(Err(error)) => return Err(seed_error(error)),
        Err(join) => return Err(seed_error(RegistryError::from(join).into())),
        Ok(Ok(())) => {}
    }
    stored.map_err(|e| seed_error(e.into()))
}

/// Read `path` line by line into batches of records sent to `batches`; on a line
/// that does not parse (or a read error) send the abort and return why. Stops
/// quietly when the registry has stopped listening (it failed, and says why).
fn read_batches(
    path: &Path,
    lines: &AtomicUsize,
    parsed: &AtomicUsize,
    batches: &tokio::sync::mpsc::Sender<Result<Vec<ImportRecord>, ImportAborted>>,
) -> Result<(), SeedError> {
    let read = || -> Result<(), SeedError> {
        lines.store(count_lines(path)?, Ordering::Relaxed);
        let mut reader = BufReader::new(File::open(path)?);
        let mut batch = Vec::with_capacity(IMPORT_BATCH);
        let mut raw = String::new();
        let mut line = 0;
        loop {
            raw.clear();
            if reader.read_line(&mut raw)? == 0 {
                break;
            }
            line += 1;
            batch.extend(jsonl::parse_line(line, &raw)?);
            parsed.store(line, Ordering::Relaxed);
            if batch.len() == IMPORT_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(IMPORT_BATCH));
                if batches.blocking_send(Ok(full)).is_err() {
                    return Ok(());
                }
            }
        }
        let _ = batches.blocking_send(Ok(batch));
        Ok(())
    };
    let result = read();
    if result.is_err() {
        let _ = batches.blocking_send(Err(ImportAborted));
    }
    result
}

/// The number of lines of `path`, for the progress display's length.
fn count_lines(path: &Path) -> Result<usize, std::io::Error> {
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; 1 << 16];
    let (mut count, mut last) = (0, b'\n');
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        count += buffer[..n].iter().filter(|b| **b == b'\n').count();
        last = buffer[n - 1];
    }
    // A last line without its newline is a line too.
    Ok(count + usize::from(last != b'\n'))
}
