//! Bulk import into SQLite: records are stored as they arrive, in the caller's one
//! IMMEDIATE transaction, with multi-row `INSERT`s of filing and domain rows.
//!
//! Same contract as `workflow::import` (which stays the one definition of it): ids
//! kept when given and handed out as AUTOINCREMENT would otherwise, one revision per
//! filing, a domain live in at most one filing, every record or none. The fast path
//! leaves those checks to the schema — the primary key refuses a taken id, the
//! partial unique index a second live holder, one query over the chunk an ICP number
//! another entity claims — and each chunk runs under a savepoint: when one is
//! refused, the chunk is rolled back and run again through `workflow::import`, which
//! names the refused record's line and the holder.

use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction};

use crate::model::filing::Kind;
use crate::registry::workflow::{
    self, encode, entity_identity, number_key, review_since_ms, run_ready,
};
use crate::registry::{FilingType, ImportAborted, ImportRecord, RegistryError, StorageError};

/// Filings per savepoint: a refused chunk is run again record by record.
const CHUNK: usize = 2048;
/// Rows per multi-row `INSERT` (9 or 3 parameters each, far under SQLite's limit);
/// the rows left over after the last full statement go in one at a time, so only
/// two statement texts per table are ever prepared.
const ROWS_PER_INSERT: usize = 128;

/// Columns of a filing row as `insert_rows` writes it.
const FILING_COLUMNS: usize = 9;

/// Store every record of `batches` in `tx` (the caller commits only on `Ok`),
/// counting them in `stored`; an error names the line of the record refused, and an
/// aborted batch stops the import.
pub(super) fn run(
    tx: &mut Transaction<'_>,
    batches: impl Iterator<Item = Result<Vec<ImportRecord>, ImportAborted>>,
    stored: &AtomicUsize,
) -> Result<usize, RegistryError> {
    let mut high = highest_id(tx)?;
    let mut count = 0;
    for batch in batches {
        let mut batch = batch.map_err(|ImportAborted| StorageError::ImportAborted)?;
        for chunk in batch.chunks_mut(CHUNK) {
            high = store_chunk(tx, chunk, high)?;
            count += chunk.len();
            stored.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    }
    Ok(count)
}

/// The id AUTOINCREMENT would build on: the highest ever handed out or stored.
fn highest_id(conn: &Connection) -> Result<i64, RegistryError> {
    let sequence: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'filings'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    let stored: Option<i64> =
        conn.query_row("SELECT MAX(id) FROM filings", [], |row| row.get(0))?;
    Ok(sequence.unwrap_or(0).max(stored.unwrap_or(0)))
}

/// Store `chunk` after ids up to `high`; returns the new highest id.
fn store_chunk(
    tx: &mut Transaction<'_>,
    chunk: &mut [ImportRecord],
    high: i64,
) -> Result<i64, RegistryError> {
    let savepoint = tx.savepoint()?;
    let stored = match insert_rows(&savepoint, chunk, high) {
        Ok((high, revisions)) if !number_claimed_by_another(&savepoint, revisions)? => Some(high),
        Ok(_) => None,
        Err(error) if refused_by_schema(&error) => None,
        Err(error) => return Err(error),
    };
    match stored {
        Some(high) => {
            savepoint.commit()?;
            Ok(high)
        }
        None => {
            // Rolled back to the savepoint: the exact path names the refused line.
            drop(savepoint);
            let again = AtomicUsize::new(0);
            run_ready(workflow::import(tx, chunk.to_vec(), &again))?;
            highest_id(tx)
        }
    }
}

/// Whether SQLite refused a row for a constraint (a taken id, a domain already live).
fn refused_by_schema(error: &RegistryError) -> bool {
    matches!(
        error,
        RegistryError::Unavailable(StorageError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
            if e.code == rusqlite::ErrorCode::ConstraintViolation
    )
}

/// One live ICP number belongs to one entity: whether a filing stored at one of
/// `revisions` claims a number whose other claimant is another entity (the same
/// certificate number when both give one, else the same name, as
/// `workflow::check_number_holders` decides).
fn number_claimed_by_another(
    conn: &Connection,
    revisions: (i64, i64),
) -> Result<bool, RegistryError> {
    let clash: Option<i64> = conn
        .prepare_cached(super::sql::NUMBER_CLAIMED_IN_CHUNK)?
        .query_row([revisions.0, revisions.1], |row| row.get(0))
        .optional()?;
    Ok(clash.is_some())
}

/// Insert the filing and domain rows of `chunk`, one revision per filing, ids after
/// `high` where none is given; returns the new highest id and the first and last
/// revision given.
fn insert_rows(
    conn: &Connection,
    chunk: &mut [ImportRecord],
    mut high: i64,
) -> Result<(i64, (i64, i64)), RegistryError> {
    let n = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
    let last_revision: i64 = conn
        .prepare_cached(
            "UPDATE meta SET value = value + ?1 WHERE key = 'revision' RETURNING value",
        )?
        .query_row([n], |row| row.get(0))?;
    let mut revision = last_revision - n;
    let mut filings = Vec::with_capacity(chunk.len() * FILING_COLUMNS);
    let mut domains = Vec::new();
    for record in chunk.iter_mut() {
        let id = record.id.unwrap_or(high + 1);
        high = high.max(id);
        revision += 1;
        let filing = &mut record.filing;
        filing.id = id;
        let (certificate, name) = entity_identity(&filing.entity);
        // Only an access-existing filing's type follows from the record itself.
        let filing_type = (filing.kind == Kind::AccessExisting)
            .then(|| Value::Text(FilingType::AccessExisting.as_str().to_string()));
        filings.extend([
            Value::Integer(id),
            Value::Text(filing.status.as_str().to_string()),
            Value::Text(encode(filing)),
            Value::Integer(revision),
            certificate.map_or(Value::Null, Value::Text),
            Value::Text(name),
            filing_type.unwrap_or(Value::Null),
            number_key(filing).map_or(Value::Null, Value::Text),
            review_since_ms(filing).map_or(Value::Null, Value::Integer),
        ]);
        let live = i64::from(filing.status.is_live());
        for domain in &filing.domains {
            domains.extend([
                Value::Text(domain.clone()),
                Value::Integer(id),
                Value::Integer(live),
            ]);
        }
    }
    insert_values(
        conn,
        "filings (id, status, doc, revision, entity_certificate, entity_name, filing_type, \
         icp_entity_key, review_since)",
        FILING_COLUMNS,
        filings,
    )?;
    insert_values(conn, "filing_domains (domain, filing_id, live)", 3, domains)?;
    Ok((high, (last_revision - n + 1, last_revision)))
}

/// `INSERT INTO <into> VALUES (?, …), …` of `values`, `width` to a row:
/// `ROWS_PER_INSERT` rows per statement, then the rest one row per statement.
fn insert_values(
    conn: &Connection,
    into: &str,
    width: usize,
    values: Vec<Value>,
) -> Result<(), RegistryError> {
    let statement = |rows: usize| {
        let row = format!("({})", vec!["?"; width].join(", "));
        format!("INSERT INTO {into} VALUES {}", vec![row; rows].join(", "))
    };
    let mut values = values.into_iter();
    let mut rows_left = values.len() / width;
    if rows_left >= ROWS_PER_INSERT {
        let mut many = conn.prepare_cached(&statement(ROWS_PER_INSERT))?;
        while rows_left >= ROWS_PER_INSERT {
            many.execute(rusqlite::params_from_iter(
                values.by_ref().take(ROWS_PER_INSERT * width),
            ))?;
            rows_left -= ROWS_PER_INSERT;
        }
    }
    if rows_left > 0 {
        let mut one = conn.prepare_cached(&statement(1))?;
        for _ in 0..rows_left {
            one.execute(rusqlite::params_from_iter(values.by_ref().take(width)))?;
        }
    }
    Ok(())
}
