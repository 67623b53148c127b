//! Statements of the write and lookup paths, named for the index-use check
//! (`tests/registry_uses_indexes.rs`): none may scan `filings` or `filing_domains`.

pub const LOAD: &str = "SELECT doc FROM filings WHERE id = ?1";
pub const REVISION: &str = "SELECT value FROM meta WHERE key = 'revision'";
pub const LOOKUP: &str =
    "SELECT f.id, f.doc FROM filing_domains d JOIN filings f ON f.id = d.filing_id
     WHERE d.domain = ?1 ORDER BY d.live DESC, f.revision DESC LIMIT 1";
/// A page of filings: those after the cursor id, in id order, `LIMIT` rows.
pub const LIST_ALL: &str =
    "SELECT f.id, f.doc FROM filings f WHERE f.id > ?1 ORDER BY f.id LIMIT ?2";
pub const LIST_BY_STATUS: &str = "SELECT f.id, f.doc FROM filings f
     WHERE f.status = ?1 AND f.id > ?2 ORDER BY f.id LIMIT ?3";
pub const LIST_BY_DOMAIN: &str = "SELECT f.id, f.doc FROM filings f
     WHERE f.id IN (SELECT filing_id FROM filing_domains WHERE domain = ?1)
       AND f.id > ?2
     ORDER BY f.id LIMIT ?3";
pub const LIST_BY_STATUS_AND_DOMAIN: &str = "SELECT f.id, f.doc FROM filings f
     WHERE f.status = ?1
       AND f.id IN (SELECT filing_id FROM filing_domains WHERE domain = ?2)
       AND f.id > ?3
     ORDER BY f.id LIMIT ?4";
pub const FILING_TYPE: &str = "SELECT filing_type FROM filings WHERE id = ?1";
pub const CHANGES_SINCE: &str = "SELECT id, revision, doc FROM filings
     WHERE revision > ?1 ORDER BY revision LIMIT ?2";
/// The domains of a filing whose document does not read (the change feed).
pub const DOMAINS_OF: &str = "SELECT domain FROM filing_domains WHERE filing_id = ?1";
pub const LIVE_HOLDER: &str = "SELECT filing_id FROM filing_domains
     WHERE domain = ?1 AND live = 1 AND filing_id != ?2";
pub const HOLDS_NUMBER_BY_CERTIFICATE: &str = "SELECT 1 FROM filings
     WHERE entity_certificate = ?1 AND status IN ('approved', 'disconnected') LIMIT 1";
pub const HOLDS_NUMBER_BY_NAME: &str = "SELECT 1 FROM filings
     WHERE entity_name = ?1 AND status IN ('approved', 'disconnected') LIMIT 1";
pub const NUMBER_HOLDERS: &str = "SELECT id, entity_certificate, coalesce(entity_name, '')
     FROM filings WHERE icp_entity_key = ?1 AND id != ?2 LIMIT 64";
pub const BUMP_REVISION: &str =
    "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value";
pub const INSERT_FILING: &str = "INSERT INTO filings (status, doc, revision) VALUES (?1, '{}', ?2)";
pub const PUT_FILING: &str = "INSERT INTO filings
     (id, status, doc, revision, entity_certificate, entity_name, icp_entity_key,
      review_since)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT(id) DO UPDATE SET status = excluded.status, doc = excluded.doc,
     revision = excluded.revision, entity_certificate = excluded.entity_certificate,
     entity_name = excluded.entity_name, icp_entity_key = excluded.icp_entity_key,
     review_since = excluded.review_since";
pub const SET_FILING_TYPE: &str = "UPDATE filings SET filing_type = ?2 WHERE id = ?1";
pub const SET_SEALED_PASSWORD: &str =
    "UPDATE filings SET sealed_password = ?2 WHERE id = ?1 AND sealed_password IS NOT ?2";
pub const SEALED_PASSWORD: &str = "SELECT sealed_password FROM filings WHERE id = ?1";
pub const DELETE_DOMAINS: &str = "DELETE FROM filing_domains WHERE filing_id = ?1";
pub const INSERT_DOMAIN: &str =
    "INSERT OR IGNORE INTO filing_domains (domain, filing_id, live) VALUES (?1, ?2, ?3)";
pub const ENQUEUE: &str = "INSERT INTO outbox
     (filing_id, payload, created_at_ms, next_attempt_at_ms) VALUES (?1, '', ?2, ?2)";
pub const SET_PAYLOAD: &str = "UPDATE outbox SET payload = ?1 WHERE id = ?2";
/// Whether a filing an import chunk stored (revisions ?1..=?2) claims an ICP
/// number another entity holds (`import::number_claimed_by_another`).
pub const NUMBER_CLAIMED_IN_CHUNK: &str = "SELECT 1 FROM filings a
     JOIN filings b ON b.icp_entity_key = a.icp_entity_key AND b.id != a.id
     WHERE a.revision BETWEEN ?1 AND ?2 AND a.icp_entity_key IS NOT NULL
       AND CASE WHEN a.entity_certificate IS NOT NULL AND b.entity_certificate IS NOT NULL
                THEN a.entity_certificate != b.entity_certificate
                ELSE coalesce(a.entity_name, '') != coalesce(b.entity_name, '') END
     LIMIT 1";
/// The overdue gauge: filings in initial review entered at or before a cutoff
/// (`working_days::overdue_cutoff_ms`), one range of `filings_by_review_since`.
pub const INITIAL_REVIEWS_ENTERED_BY: &str = "SELECT COUNT(*) FROM filings
     WHERE status = 'initial_review' AND review_since <= ?1";

/// Every statement a write or a lookup runs (and the list pages), by name.
pub const INDEXED: &[(&str, &str)] = &[
    ("load", LOAD),
    ("revision", REVISION),
    ("lookup", LOOKUP),
    ("list_all", LIST_ALL),
    ("list_by_status", LIST_BY_STATUS),
    ("list_by_domain", LIST_BY_DOMAIN),
    ("list_by_status_and_domain", LIST_BY_STATUS_AND_DOMAIN),
    ("filing_type", FILING_TYPE),
    ("changes_since", CHANGES_SINCE),
    ("domains_of", DOMAINS_OF),
    ("live_holder", LIVE_HOLDER),
    ("holds_number_by_certificate", HOLDS_NUMBER_BY_CERTIFICATE),
    ("holds_number_by_name", HOLDS_NUMBER_BY_NAME),
    ("number_holders", NUMBER_HOLDERS),
    ("bump_revision", BUMP_REVISION),
    ("insert_filing", INSERT_FILING),
    ("put_filing", PUT_FILING),
    ("set_filing_type", SET_FILING_TYPE),
    ("set_sealed_password", SET_SEALED_PASSWORD),
    ("sealed_password", SEALED_PASSWORD),
    ("delete_domains", DELETE_DOMAINS),
    ("insert_domain", INSERT_DOMAIN),
    ("enqueue", ENQUEUE),
    ("set_payload", SET_PAYLOAD),
    ("number_claimed_in_chunk", NUMBER_CLAIMED_IN_CHUNK),
    ("initial_reviews_entered_by", INITIAL_REVIEWS_ENTERED_BY),
];
