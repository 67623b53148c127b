//! The PostgreSQL registry's reads of many rows: pages of filings (keyset on id, one
//! statement per combination of filters so each uses its index), the filed-domain
//! index streamed from one query in batches, so neither holds more than a batch, and
//! the stored documents streamed the same way to the start-up check
//! (`document_check`).

use deadpool_postgres::GenericClient;
use futures_util::StreamExt;

use std::sync::atomic::Ordering;

use super::{filing_at, sql};
use crate::model::filing::{Filing, Status};
use crate::registry::document_check::{self, DocumentSink};
use crate::registry::{ListFilter, RegistryError};

/// Domains per batch of `filed_domain_batches`.
const DOMAIN_BATCH: usize = 8192;

/// One page of filings: those after `filter.after`, in id order, at most
/// `filter.limit` (all of them without one).
pub(super) async fn list<C: GenericClient>(
    client: &C,
    filter: &ListFilter,
) -> Result<Vec<Filing>, RegistryError> {
    let status = filter.status.map(Status::as_str);
    let domain = filter.domain.as_ref().map(|d| d.as_str());
    let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    let after = filter.after.unwrap_or(0);
    let rows = match (status, domain) {
        (None, None) => client.query(sql::LIST_ALL, &[&after, &limit]).await?,
        (Some(status), None) => {
            client
                .query(sql::LIST_BY_STATUS, &[&status, &after, &limit])
                .await?
        }
        (None, Some(domain)) => {
            client
                .query(sql::LIST_BY_DOMAIN, &[&domain, &after, &limit])
                .await?
        }
        (Some(status), Some(domain)) => {
            client
                .query(
                    sql::LIST_BY_STATUS_AND_DOMAIN,
                    &[&status, &domain, &after, &limit],
                )
                .await?
        }
    };
    rows.iter()
        .map(|row| filing_at(row, row.try_get(0)?, 1))
        .collect()
}

/// Send every filed domain (one per domain row: a domain some filings share comes
/// more than once) to `batches` as one query streams them; stops early, without
/// error, when the receiver is gone.
pub(super) async fn filed_domain_batches<C: GenericClient>(
    client: &C,
    batches: &tokio::sync::mpsc::Sender<Vec<String>>,
) -> Result<(), RegistryError> {
    let rows = client
        .query_raw(
            "SELECT domain FROM icpgate_filing_domains",
            std::iter::empty::<i64>(),
        )
        .await?;
    let mut rows = std::pin::pin!(rows);
    let mut batch = Vec::with_capacity(DOMAIN_BATCH);
    while let Some(row) = rows.next().await {
        batch.push(row?.try_get::<_, String>(0)?);
        if batch.len() == DOMAIN_BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(DOMAIN_BATCH));
            if batches.send(full).await.is_err() {
                return Ok(());
            }
        }
    }
    if !batch.is_empty() {
        let _ = batches.send(batch).await;
    }
    Ok(())
}

/// Send every stored filing document to `sink` in batches as one query streams
/// them, stopping early once one did not read (`DocumentCheck` decodes them).
pub(super) async fn read_documents<C: GenericClient>(
    client: &C,
    sink: DocumentSink,
) -> Result<(), RegistryError> {
    let rows = client
        .query_raw(
            "SELECT id, doc::text FROM icpgate_filings",
            std::iter::empty::<i64>(),
        )
        .await?;
    let mut rows = std::pin::pin!(rows);
    let mut batch = Vec::with_capacity(document_check::BATCH);
    while let Some(row) = rows.next().await {
        let row = row?;
        batch.push((row.try_get::<_, i64>(0)?, row.try_get::<_, String>(1)?));
        if batch.len() == document_check::BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(document_check::BATCH));
            if sink.failed.load(Ordering::Relaxed) || sink.batches.send(full).await.is_err() {
                return Ok(());
            }
        }
    }
    if !batch.is_empty() {
        let _ = sink.batches.send(batch).await;
    }
    Ok(())
}
