//! The SQLite registry's reads of many rows: pages of filings (keyset on id, one
//! statement per combination of filters so each uses its index), the filed-domain
//! index streamed in batches, so neither holds more than a batch in memory, and the
//! stored documents streamed the same way to the start-up check (`document_check`).

use rusqlite::types::Value;
use rusqlite::Connection;

use super::sql;
use crate::model::filing::{Filing, Status};
use std::sync::atomic::Ordering;

use crate::registry::document_check::{self, DocumentSink};
use crate::registry::workflow::decode;
use crate::registry::{ListFilter, RegistryError};

/// Domains per batch of `filed_domain_batches`.
const DOMAIN_BATCH: usize = 8192;

/// One page of filings: those after `filter.after`, in id order, at most
/// `filter.limit` (all of them without one).
pub(super) fn list(conn: &Connection, filter: &ListFilter) -> Result<Vec<Filing>, RegistryError> {
    let limit = Value::Integer(
        filter
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)),
    );
    let after = Value::Integer(filter.after.unwrap_or(0));
    let status = filter.status.map(Status::as_str);
    let domain = filter.domain.as_ref().map(|d| d.as_str());
    let text = |s: &str| Value::Text(s.to_string());
    let (statement, args) = match (status, domain) {
        (None, None) => (sql::LIST_ALL, vec![after, limit]),
        (Some(status), None) => (sql::LIST_BY_STATUS, vec![text(status), after, limit]),
        (None, Some(domain)) => (sql::LIST_BY_DOMAIN, vec![text(domain), after, limit]),
        (Some(status), Some(domain)) => (
            sql::LIST_BY_STATUS_AND_DOMAIN,
            vec![text(status), text(domain), after, limit],
        ),
    };
    let mut stmt = conn.prepare_cached(statement)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, doc) = row?;
        out.push(decode(id, &doc)?);
    }
    Ok(out)
}

/// Send every distinct filed domain to `batches`, read by one query over the domain
/// index; stops early, without error, when the receiver is gone.
pub(super) fn filed_domain_batches(
    conn: &Connection,
    batches: &tokio::sync::mpsc::Sender<Vec<String>>,
) -> Result<(), RegistryError> {
    let mut stmt = conn.prepare_cached("SELECT DISTINCT domain FROM filing_domains")?;
    let mut rows = stmt.query([])?;
    let mut batch = Vec::with_capacity(DOMAIN_BATCH);
    while let Some(row) = rows.next()? {
        batch.push(row.get::<_, String>(0)?);
        if batch.len() == DOMAIN_BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(DOMAIN_BATCH));
            if batches.blocking_send(full).is_err() {
                return Ok(());
            }
        }
    }
    if !batch.is_empty() {
        let _ = batches.blocking_send(batch);
    }
    Ok(())
}

/// Send every stored filing document to `sink` in batches as one query reads them,
/// stopping early once one did not read (`DocumentCheck` decodes them).
pub(super) fn read_documents(conn: &Connection, sink: DocumentSink) -> Result<(), RegistryError> {
    let mut stmt = conn.prepare("SELECT id, doc FROM filings")?;
    let mut rows = stmt.query([])?;
    let mut batch = Vec::with_capacity(document_check::BATCH);
    while let Some(row) = rows.next()? {
        let doc = match row.get_ref(1)? {
            rusqlite::types::ValueRef::Text(text) => String::from_utf8_lossy(text).into_owned(),
            _ => String::new(),
        };
        batch.push((row.get::<_, i64>(0)?, doc));
        if batch.len() == document_check::BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(document_check::BATCH));
            if sink.failed.load(Ordering::Relaxed) || sink.batches.blocking_send(full).is_err() {
                return Ok(());
            }
        }
    }
    if !batch.is_empty() {
        let _ = sink.batches.blocking_send(batch);
    }
    Ok(())
}
