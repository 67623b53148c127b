//! Bulk import into PostgreSQL: records are stored as they arrive, in the caller's
//! one transaction, with binary `COPY` of filing and domain rows.
//!
//! Same contract as `workflow::import` (which stays the one definition of it): ids
//! kept when given and taken from the id sequence otherwise, one revision per
//! filing, a domain live in at most one filing, every record or none. The fast path
//! leaves those checks to the schema — the primary key refuses a taken id, the
//! partial unique index a second live holder, one query over the chunk an ICP number
//! another entity claims — and each chunk runs under a savepoint: when one is
//! refused, the chunk is rolled back and run again through `workflow::import`, which
//! names the refused record's line and the holder.

use std::sync::atomic::{AtomicUsize, Ordering};

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Json, ToSql, Type};

use crate::model::filing::Kind;
use crate::registry::workflow::{self, entity_identity, number_key, review_since_ms, WriteTx};
use crate::registry::{
    FilingType, ImportAborted, ImportFeed, ImportRecord, RegistryError, StorageError,
};

/// Filings per `COPY` (and per savepoint: a refused chunk is run again record by
/// record).
const CHUNK: usize = 4096;

/// Store every record of `feed` in `tx` (the caller commits only on `Ok`), counting
/// them in `stored`; an error names the line of the record refused, and an aborted
/// feed stops the import.
pub(super) async fn run(
    tx: &mut Transaction<'_>,
    mut feed: ImportFeed,
    stored: &AtomicUsize,
) -> Result<usize, RegistryError> {
    // The table grows by millions of rows inside this one transaction, where no
    // statistics describe them: with a `LIMIT 1` making any plan look cheap, the
    // planner read the whole table for each chunk's number check — a sequential
    // scan, or with those off a merge join over two full index scans (a 10 M
    // import slowed to ~0.5 s per chunk and rising). The check is meant as a
    // nested loop from the chunk's revision range into the entity-key index, and
    // every statement an import runs has its index (`tests/registry_uses_indexes.rs`
    // checks them with sequential scans off, as here).
    tx.batch_execute(super::sql::IMPORT_PLANNER).await?;
    let mut count = 0;
    while let Some(batch) = feed.recv().await {
        let mut batch = batch.map_err(|ImportAborted| StorageError::ImportAborted)?;
        for chunk in batch.chunks_mut(CHUNK) {
            store_chunk(tx, chunk).await?;
            count += chunk.len();
            stored.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    }
    tx.ids_imported().await?;
    Ok(count)
}

/// Store `chunk` under a savepoint; when the schema refuses a row, again through
/// the exact path, which names the line.
async fn store_chunk(
    tx: &mut Transaction<'_>,
    chunk: &mut [ImportRecord],
) -> Result<(), RegistryError> {
    tx.batch_execute("SAVEPOINT icpgate_import").await?;
    let stored = match copy_rows(tx, chunk).await {
        Ok(revisions) => !number_claimed_by_another(tx, revisions).await?,
        Err(error) if refused_by_schema(&error) => false,
        Err(error) => return Err(error),
    };
    if stored {
        tx.batch_execute("RELEASE SAVEPOINT icpgate_import").await?;
    } else {
        tx.batch_execute("ROLLBACK TO SAVEPOINT icpgate_import")
            .await?;
        let again = AtomicUsize::new(0);
        workflow::import(tx, chunk.to_vec(), &again).await?;
    }
    Ok(())
}

/// One live ICP number belongs to one entity: whether a filing stored at one of
/// `revisions` claims a number whose other claimant is another entity (the same
/// certificate number when both give one, else the same name, as
/// `workflow::check_number_holders` decides).
async fn number_claimed_by_another(
    tx: &Transaction<'_>,
    revisions: (i64, i64),
) -> Result<bool, RegistryError> {
    let clash = tx
        .query_one(
            super::sql::NUMBER_CLAIMED_IN_CHUNK,
            &[&revisions.0, &revisions.1],
        )
        .await?;
    Ok(clash.get::<_, bool>(0))
}

/// Whether PostgreSQL refused a row for a unique key (a taken id, a domain already
/// live).
fn refused_by_schema(error: &RegistryError) -> bool {
    matches!(
        error,
        RegistryError::Unavailable(StorageError::Postgres(e))
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
    )
}

/// COPY the filing and domain rows of `chunk`, one revision per filing, ids from
/// the sequence where none is given; the first and last revision given.
async fn copy_rows(
    tx: &mut Transaction<'_>,
    chunk: &mut [ImportRecord],
) -> Result<(i64, i64), RegistryError> {
    let n = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
    let last_revision: i64 = tx
        .query_one(
            "UPDATE icpgate_meta SET value = value + $1 WHERE key = 'revision' RETURNING value",
            &[&n],
        )
        .await?
        .try_get(0)?;
    let wanted = chunk.iter().filter(|r| r.id.is_none()).count();
    let mut fresh = fresh_ids(tx, wanted).await?.into_iter();
    for record in chunk.iter_mut() {
        record.filing.id = match record.id {
            Some(id) => id,
            None => fresh.next().ok_or_else(|| {
                StorageError::Io(std::io::Error::other(
                    "the id sequence gave fewer ids than asked",
                ))
            })?,
        };
    }
    copy_filings(tx, chunk, last_revision - n).await?;
    copy_domains(tx, chunk).await?;
    Ok((last_revision - n + 1, last_revision))
}

/// COPY the filing rows of `chunk`, at the revisions after `revision`.
async fn copy_filings(
    tx: &Transaction<'_>,
    chunk: &[ImportRecord],
    mut revision: i64,
) -> Result<(), RegistryError> {
    let sink = tx
        .copy_in(
            "COPY icpgate_filings (id, status, doc, revision, entity_certificate, entity_name,
             filing_type, icp_entity_key, review_since) FROM STDIN BINARY",
        )
        .await?;
    let types = [
        Type::INT8,
        Type::TEXT,
        Type::JSONB,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
    ];
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
    for record in chunk {
        revision += 1;
        let filing = &record.filing;
        let (certificate, name) = entity_identity(&filing.entity);
        // Only an access-existing filing's type follows from the record itself.
        let filing_type =
            (filing.kind == Kind::AccessExisting).then_some(FilingType::AccessExisting.as_str());
        let number = number_key(filing);
        let review_since = review_since_ms(filing);
        let row: [&(dyn ToSql + Sync); 9] = [
            &filing.id,
            &filing.status.as_str(),
            &Json(filing),
            &revision,
            &certificate,
            &name,
            &filing_type,
            &number,
            &review_since,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.as_mut().finish().await?;
    Ok(())
}

/// COPY the domain rows of `chunk`'s filings.
async fn copy_domains(tx: &Transaction<'_>, chunk: &[ImportRecord]) -> Result<(), RegistryError> {
    let sink = tx
        .copy_in("COPY icpgate_filing_domains (domain, filing_id, live) FROM STDIN BINARY")
        .await?;
    let types = [Type::TEXT, Type::INT8, Type::BOOL];
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
    for record in chunk {
        let filing = &record.filing;
        let live = filing.status.is_live();
        for domain in &filing.domains {
            let row: [&(dyn ToSql + Sync); 3] = [domain, &filing.id, &live];
            writer.as_mut().write(&row).await?;
        }
    }
    writer.as_mut().finish().await?;
    Ok(())
}

/// `n` ids from the filings' id sequence, in order.
async fn fresh_ids(tx: &Transaction<'_>, n: usize) -> Result<Vec<i64>, RegistryError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let rows = tx
        .query(
            "SELECT nextval(pg_get_serial_sequence('icpgate_filings', 'id'))
             FROM generate_series(1, $1::bigint)",
            &[&n],
        )
        .await?;
    let mut ids = rows
        .iter()
        .map(|row| row.try_get::<_, i64>(0))
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort_unstable();
    Ok(ids)
}
