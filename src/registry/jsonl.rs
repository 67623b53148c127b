//! JSON Lines import and export: one filing per line, the admin API's filing object.
//!
//! An import record needs `domains`, `product` and `status` (and `icp_number` when
//! approved); `id`, `kind`, `entity`, `website`, `history` and the timestamps are
//! optional. Domains are normalised (Unicode to punycode, case); a subdomain or
//! a bare public suffix is refused, naming the registrable domain to file instead. Any bad line rejects the
//! whole file with its line number, before anything is stored.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;

use super::ImportRecord;
use crate::model::filing::{
    now_rfc3339, Entity, Filing, HistoryEntry, IcpNumber, Kind, PendingChange, Product, Status,
    Website,
};
use crate::model::host::HostName;

#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct JsonlError {
    pub line: usize,
    pub message: String,
}

/// The shape of one line; everything but domains, product and status is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    id: Option<i64>,
    #[serde(default)]
    kind: Option<Kind>,
    product: Product,
    status: Status,
    domains: Vec<String>,
    icp_number: Option<IcpNumber>,
    entity: Option<Entity>,
    website: Option<Website>,
    history: Option<Vec<HistoryEntry>>,
    created_at: Option<String>,
    updated_at: Option<String>,
    pending_change: Option<PendingChange>,
}

/// Parse a whole JSON Lines document. Blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<ImportRecord>, JsonlError> {
    parse_counted(text, &AtomicUsize::new(0))
}

/// `parse`, counting in `lines` the lines read so far, for progress.
pub fn parse_counted(text: &str, lines: &AtomicUsize) -> Result<Vec<ImportRecord>, JsonlError> {
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        lines.store(line, Ordering::Relaxed);
        out.extend(parse_line(line, raw)?);
    }
    Ok(out)
}

/// The record on line number `line` (counted from 1), or `None` for a blank line.
pub fn parse_line(line: usize, raw: &str) -> Result<Option<ImportRecord>, JsonlError> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    let record: Record = serde_json::from_str(raw).map_err(|e| JsonlError {
        line,
        message: format!("not a filing record: {e}"),
    })?;
    let id = record.id;
    let filing = into_filing(id, record).map_err(|message| JsonlError { line, message })?;
    Ok(Some(ImportRecord { line, id, filing }))
}

/// Normalise a list of domains (Unicode to punycode, case, a trailing dot), each
/// listed once. Whether each is a registrable domain is the model's rule
/// (`Filing::validate`): a subdomain is refused there, naming the domain to file.
pub fn registrable_domains(domains: &[String]) -> Result<Vec<String>, String> {
    if domains.is_empty() {
        return Err("domains must list at least one domain".to_string());
    }
    let mut out: Vec<String> = Vec::with_capacity(domains.len());
    for input in domains {
        let host = HostName::parse(input).map_err(|e| format!("domain {input:?}: {e}"))?;
        let domain = host.as_str().to_owned();
        if !out.contains(&domain) {
            out.push(domain);
        }
    }
    Ok(out)
}

fn into_filing(id: Option<i64>, record: Record) -> Result<Filing, String> {
    if let Some(id) = id.filter(|id| *id <= 0) {
        return Err(format!("id must be a positive integer, not {id}"));
    }
    let domains = registrable_domains(&record.domains)?;
    let kind = record.kind.unwrap_or(Kind::New);
    // A cancelled filing may never have held a number (the authority cancels
    // abandoned filings too), as `Filing::validate` says.
    let needs_number = kind == Kind::AccessExisting
        || matches!(record.status, Status::Approved | Status::Disconnected);
    if needs_number && record.icp_number.is_none() {
        return Err(format!(
            "icp_number: a {} filing in status {} needs its ICP number",
            kind.as_str(),
            record.status.as_str()
        ));
    }
    // A detail given must be complete (an empty one reads like an absent one below).
    if let Some(entity) = &record.entity {
        entity.validate().map_err(|e| e.to_string())?;
    }
    if let Some(website) = &record.website {
        website.validate().map_err(|e| e.to_string())?;
    }
    let now = now_rfc3339();
    let created_at = record.created_at.unwrap_or_else(|| now.clone());
    let updated_at = record.updated_at.unwrap_or_else(|| created_at.clone());
    let history = record.history.unwrap_or_else(|| {
        vec![HistoryEntry {
            at: now.clone(),
            actor: "import".to_string(),
            from: None,
            to: record.status,
            reason: Some("imported".to_string()),
        }]
    });
    let filing = Filing {
        id: id.unwrap_or(0),
        kind,
        product: record.product,
        status: record.status,
        domains,
        icp_number: record.icp_number,
        entity: record.entity.unwrap_or_default(),
        website: record.website.unwrap_or_default(),
        history,
        created_at,
        updated_at,
        pending_change: record.pending_change,
    };
    // Details are optional on import; the rest keeps every rule a stored filing
    // keeps, so a bad line is named before anything is stored.
    filing.validate().map_err(|e| e.to_string())?;
    Ok(filing)
}

/// One line per filing, in the admin API's shape.
pub fn render(filings: &[Filing]) -> String {
    let mut out = String::new();
    for filing in filings {
        // Serialising plain data (strings, enums, vectors) cannot fail.
        out.push_str(&serde_json::to_string(filing).unwrap_or_default());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_and_full_records_and_names_the_bad_line() {
        let cases: &[(&str, Result<usize, usize>)] = &[
            // minimal approved record
            (r#"{"domains":["example.com"],"product":"storefront","status":"approved","icp_number":"浙ICP备12345678号-1"}"#, Ok(1)),
            // blank lines are skipped, Unicode domain accepted
            ("\n{\"domains\":[\"例子.中国\"],\"product\":\"corporate_site\",\"status\":\"initial_review\"}\n\n", Ok(1)),
            // cancelled without a number: cancelled once abandoned, never approved
            (r#"{"domains":["c.cn"],"product":"storefront","status":"cancelled"}"#, Ok(1)),
            // approved without a number is refused on its line
            ("\n{\"domains\":[\"a.cn\"],\"product\":\"storefront\",\"status\":\"approved\"}", Err(2)),
            // so is an access-existing filing without one, whatever its status
            (r#"{"domains":["a.cn"],"kind":"access_existing","product":"storefront","status":"initial_review"}"#, Err(1)),
            // a given entity must be valid (a bad province)
            (r#"{"domains":["a.cn"],"product":"storefront","status":"rejected","entity":{"name":"x","province":"XX"}}"#, Err(1)),
            // a given website must be valid (an empty name)
            (r#"{"domains":["a.cn"],"product":"storefront","status":"rejected","website":{"name":""}}"#, Err(1)),
            // a bare public suffix is refused
            (r#"{"domains":["com.cn"],"product":"storefront","status":"rejected"}"#, Err(1)),
            // not JSON at all
            ("import os", Err(1)),
            // unknown product
            (r#"{"domains":["a.cn"],"product":"teleport","status":"rejected"}"#, Err(1)),
            // unknown field
            (r#"{"domains":["a.cn"],"product":"storefront","status":"rejected","colour":1}"#, Err(1)),
        ];
        for (text, want) in cases {
            match (parse(text), want) {
                (Ok(records), Ok(n)) => assert_eq!(records.len(), *n, "{text}"),
                (Err(e), Err(line)) => assert_eq!(e.line, *line, "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn domains_normalise_and_an_import_line_names_the_domain_to_file() {
        let got = registrable_domains(&[
            "EXAMPLE.com.cn".into(),
            "example.com.cn.".into(),
            "例子.中国".into(),
        ]);
        assert_eq!(
            got,
            Ok(vec![
                "example.com.cn".to_string(),
                "xn--fsqu00a.xn--fiqs8s".to_string()
            ])
        );
        let line = |domain: &str| {
            format!(r#"{{"domains":["{domain}"],"product":"storefront","status":"rejected"}}"#)
        };
        let cases = [
            // a subdomain: file its registrable domain
            ("shop.example.com.cn", "file example.com.cn instead"),
            // a name under a private suffix is a subdomain of an ICANN domain
            ("myshop.github.io", "file github.io instead"),
            // a Unicode subdomain names the punycode domain
            ("www.例子.中国", "file xn--fsqu00a.xn--fiqs8s instead"),
            // a bare suffix names nothing to file
            ("com.cn", "is a public suffix"),
        ];
        for (input, want) in cases {
            let got = parse(&format!("\n{}", line(input)));
            assert!(
                got.as_ref()
                    .is_err_and(|e| e.line == 2 && e.message.contains(want)),
                "{input}: {got:?}"
            );
        }
    }
}
