//! The registry's schema history: versioned migrations for SQLite and PostgreSQL,
//! applied in order when a backend opens (so also by `registry import`).
//!
//! Contract:
//! - the applied versions are recorded, one row each, in `schema_version`
//!   (`icpgate_schema_version` in PostgreSQL); a database without that table is at
//!   version 0;
//! - migration 1 is the schema of the release before migrations existed, written
//!   with `IF NOT EXISTS`, so a registry that release created is recognised and
//!   upgraded in place, and a fresh one is created by the same path;
//! - every pending migration and its version row commit in ONE transaction, taken
//!   with the store's write lock (SQLite `BEGIN IMMEDIATE`; PostgreSQL
//!   `pg_advisory_xact_lock`): nodes starting at once apply each migration once, the
//!   others wait and then find nothing to do; a failed migration leaves the schema
//!   as it was;
//! - a database at a version this binary does not know is refused
//!   ([`StorageError::SchemaTooNew`]): it was upgraded by a newer release.
//!
//! Migrations are append-only: a released migration is never edited.

use super::StorageError;

/// One step of the schema history.
#[derive(Debug)]
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    /// Statements run as one batch inside the migration transaction.
    pub sql: &'static str,
}

/// The migrations to apply over a database at `current`, in order.
pub(crate) fn pending(
    all: &'static [Migration],
    current: i64,
) -> Result<&'static [Migration], StorageError> {
    let known = all.last().map_or(0, |m| m.version);
    if current > known {
        return Err(StorageError::SchemaTooNew {
            found: current,
            known,
        });
    }
    let applied = all.iter().take_while(|m| m.version <= current).count();
    Ok(&all[applied..])
}

/// The table recording applied versions (SQLite), created before reading it.
pub(crate) const SQLITE_VERSION_TABLE: &str = "
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at_ms INTEGER NOT NULL
);";

/// The SQLite schema history.
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "the schema before versioned migrations",
        sql: "
CREATE TABLE IF NOT EXISTS filings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS filing_domains (
    domain TEXT NOT NULL,
    filing_id INTEGER NOT NULL REFERENCES filings(id),
    live INTEGER NOT NULL,
    PRIMARY KEY (domain, filing_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS one_live_filing_per_domain
    ON filing_domains(domain) WHERE live = 1;
CREATE INDEX IF NOT EXISTS filings_by_revision ON filings(revision);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    filing_id INTEGER NOT NULL,
    payload TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    delivered_at_ms INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(next_attempt_at_ms)
    WHERE delivered_at_ms IS NULL;
",
    },
    Migration {
        version: 2,
        name: "indexes for every write and lookup path; stored filing type and entity identity",
        // `filing_type` is the seed's filing type as classified at submission (NULL
        // when unknown: filings stored before this migration, imports); only an
        // access-existing filing's type follows from the document itself.
        // `entity_certificate` / `entity_name` are `workflow::entity_identity` of the
        // document, so classifying a submission is an index search, not a scan.
        sql: "
CREATE INDEX IF NOT EXISTS filing_domains_by_filing ON filing_domains(filing_id);
CREATE INDEX IF NOT EXISTS filings_by_status ON filings(status);
ALTER TABLE filings ADD COLUMN filing_type TEXT;
ALTER TABLE filings ADD COLUMN entity_certificate TEXT;
ALTER TABLE filings ADD COLUMN entity_name TEXT;
UPDATE filings SET
    entity_certificate = NULLIF(upper(trim(json_extract(doc, '$.entity.certificate_number'))), ''),
    entity_name = trim(json_extract(doc, '$.entity.name')),
    filing_type = CASE WHEN json_extract(doc, '$.kind') = 'access_existing'
                       THEN 'access_existing' END
WHERE json_valid(doc);
CREATE INDEX IF NOT EXISTS filings_by_entity_certificate ON filings(entity_certificate);
CREATE INDEX IF NOT EXISTS filings_by_entity_name ON filings(entity_name);
",
    },
    Migration {
        version: 3,
        name: "filing counts by status, kept by triggers",
        // The gauges read seven rows instead of counting the registry: at ten
        // million filings a count holds the one reader for seconds. Kept by the
        // database itself, so every writer (an older node, a bulk import, the
        // shell) keeps it right.
        sql: "
CREATE TABLE IF NOT EXISTS filing_counts (
    status TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO filing_counts (status, n) SELECT status, COUNT(*) FROM filings GROUP BY status;
CREATE TRIGGER IF NOT EXISTS filing_counts_on_insert AFTER INSERT ON filings
BEGIN
    INSERT INTO filing_counts (status, n) VALUES (NEW.status, 1)
        ON CONFLICT (status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS filing_counts_on_update AFTER UPDATE OF status ON filings
    WHEN OLD.status IS NOT NEW.status
BEGIN
    UPDATE filing_counts SET n = n - 1 WHERE status = OLD.status;
    INSERT INTO filing_counts (status, n) VALUES (NEW.status, 1)
        ON CONFLICT (status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS filing_counts_on_delete AFTER DELETE ON filings
BEGIN
    UPDATE filing_counts SET n = n - 1 WHERE status = OLD.status;
END;
",
    },
    Migration {
        version: 4,
        name: "filing rules: claimed ICP numbers, sealed filing passwords, ordered delivery per filing",
        // The outbox index finds a filing's earlier pending event (one filing's
        // events are delivered in order). `icp_entity_key` is `workflow::number_key`: the entity part of the number
        // (`浙ICP备12345678号`) of a filing that claims one (`Status::claims_number`),
        // so one entity per number is an index search. `sealed_password` holds an
        // access-existing filing's filing password, sealed, until initial review ends;
        // it is never part of the document (exports, the API, the outbox).
        sql: "
ALTER TABLE filings ADD COLUMN icp_entity_key TEXT;
ALTER TABLE filings ADD COLUMN sealed_password TEXT;
UPDATE filings SET icp_entity_key =
    substr(json_extract(doc, '$.icp_number'), 1, instr(json_extract(doc, '$.icp_number'), '号'))
WHERE json_valid(doc) AND json_extract(doc, '$.icp_number') IS NOT NULL
  AND status NOT IN ('rejected', 'cancelled');
CREATE INDEX IF NOT EXISTS filings_by_icp_entity_key ON filings(icp_entity_key);
CREATE INDEX IF NOT EXISTS outbox_pending_by_filing ON outbox(filing_id, id)
    WHERE delivered_at_ms IS NULL;
",
    },
    Migration {
        version: 5,
        name: "ACME accounts, certificates and challenges (fleet storage)",
        // Kept in step with PostgreSQL's migration 5; only a PostgreSQL registry
        // stores ACME state (`acme.storage = "registry"`), a single node keeps it in
        // a directory.
        sql: "
CREATE TABLE IF NOT EXISTS acme_accounts (directory TEXT PRIMARY KEY, sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS acme_certificates (
    name TEXT PRIMARY KEY,
    sealed BLOB NOT NULL,
    revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS acme_challenges (
    name TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    key_authorization TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
",
    },
    Migration {
        version: 6,
        name: "when each filing in initial review entered it, indexed for the overdue gauge",
        // `review_since` is `workflow::review_since_ms`: Unix milliseconds (whole
        // seconds) of the last history entry moving the filing into initial review,
        // else its `updated_at`, while it is in initial review; NULL otherwise or
        // when no timestamp reads (`model::working_days::entered_initial_review`).
        // The overdue gauge then counts one index range instead of reading every
        // filing in review. Filings written by a node of an older release during a
        // rolling upgrade have NULL here and are not counted until rewritten.
        sql: "
ALTER TABLE filings ADD COLUMN review_since INTEGER;
UPDATE filings SET review_since = 1000 * coalesce(
    (SELECT unixepoch(json_extract(filings.doc, entry.fullkey || '.at'))
       FROM json_each(filings.doc, '$.history') AS entry
      WHERE json_extract(filings.doc, entry.fullkey || '.to') = 'initial_review'
      ORDER BY entry.key DESC LIMIT 1),
    unixepoch(json_extract(doc, '$.updated_at')))
WHERE status = 'initial_review' AND json_valid(doc);
CREATE INDEX IF NOT EXISTS filings_by_review_since ON filings(status, review_since);
",
    },
];

/// The table recording applied versions (PostgreSQL), created under the lock.
pub(crate) const POSTGRES_VERSION_TABLE: &str = "
SELECT pg_advisory_xact_lock(7253019);
CREATE TABLE IF NOT EXISTS icpgate_schema_version (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL
);";

/// The PostgreSQL schema history.
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "the schema before versioned migrations",
        sql: "
CREATE TABLE IF NOT EXISTS icpgate_filings (
    id BIGSERIAL PRIMARY KEY,
    status TEXT NOT NULL,
    doc JSONB NOT NULL,
    revision BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS icpgate_filing_domains (
    domain TEXT NOT NULL,
    filing_id BIGINT NOT NULL REFERENCES icpgate_filings(id),
    live BOOLEAN NOT NULL,
    PRIMARY KEY (domain, filing_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS icpgate_one_live_filing_per_domain
    ON icpgate_filing_domains(domain) WHERE live;
CREATE INDEX IF NOT EXISTS icpgate_filings_by_revision ON icpgate_filings(revision);
CREATE TABLE IF NOT EXISTS icpgate_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS icpgate_outbox (
    id BIGSERIAL PRIMARY KEY,
    filing_id BIGINT NOT NULL,
    payload TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    delivered_at_ms BIGINT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS icpgate_outbox_pending ON icpgate_outbox(next_attempt_at_ms)
    WHERE delivered_at_ms IS NULL;
INSERT INTO icpgate_meta (key, value) VALUES ('revision', 0) ON CONFLICT DO NOTHING;
",
    },
    Migration {
        version: 2,
        name: "indexes for every write and lookup path; stored filing type and entity identity",
        // As SQLite's migration 2. Nodes of the previous release still writing during
        // a rolling upgrade leave the new columns NULL on the rows they write: their
        // filings are then not recognised when classifying (a new website reported
        // as a first filing) until rewritten by this release. Nothing else reads them.
        sql: "
CREATE INDEX IF NOT EXISTS icpgate_filing_domains_by_filing
    ON icpgate_filing_domains(filing_id);
CREATE INDEX IF NOT EXISTS icpgate_filings_by_status ON icpgate_filings(status, id);
ALTER TABLE icpgate_filings
    ADD COLUMN IF NOT EXISTS filing_type TEXT,
    ADD COLUMN IF NOT EXISTS entity_certificate TEXT,
    ADD COLUMN IF NOT EXISTS entity_name TEXT;
UPDATE icpgate_filings SET
    entity_certificate = NULLIF(upper(trim(doc->'entity'->>'certificate_number')), ''),
    entity_name = trim(doc->'entity'->>'name'),
    filing_type = CASE WHEN doc->>'kind' = 'access_existing' THEN 'access_existing' END;
CREATE INDEX IF NOT EXISTS icpgate_filings_by_entity_certificate
    ON icpgate_filings(entity_certificate);
CREATE INDEX IF NOT EXISTS icpgate_filings_by_entity_name ON icpgate_filings(entity_name);
",
    },
    Migration {
        version: 3,
        name: "filing counts by status, kept by triggers",
        // As SQLite's migration 3, with statement-level triggers over transition
        // tables: a COPY of a million rows moves the counts once, not per row.
        sql: "
CREATE TABLE IF NOT EXISTS icpgate_filing_counts (status TEXT PRIMARY KEY, n BIGINT NOT NULL);
INSERT INTO icpgate_filing_counts (status, n)
    SELECT status, COUNT(*) FROM icpgate_filings GROUP BY status;
CREATE OR REPLACE FUNCTION icpgate_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO icpgate_filing_counts AS c (status, n)
        SELECT status, COUNT(*) FROM icpgate_new_rows GROUP BY status
        ON CONFLICT (status) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION icpgate_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO icpgate_filing_counts AS c (status, n)
        SELECT status, SUM(moved) FROM (
            SELECT status, -COUNT(*) AS moved FROM icpgate_old_rows GROUP BY status
            UNION ALL
            SELECT status, COUNT(*) FROM icpgate_new_rows GROUP BY status
        ) AS changes GROUP BY status
        ON CONFLICT (status) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION icpgate_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE icpgate_filing_counts AS c SET n = c.n - gone.n
        FROM (SELECT status, COUNT(*) AS n FROM icpgate_old_rows GROUP BY status) AS gone
        WHERE c.status = gone.status;
    RETURN NULL;
END $$;
CREATE TRIGGER icpgate_filing_counts_on_insert AFTER INSERT ON icpgate_filings
    REFERENCING NEW TABLE AS icpgate_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION icpgate_count_inserted();
CREATE TRIGGER icpgate_filing_counts_on_update AFTER UPDATE ON icpgate_filings
    REFERENCING OLD TABLE AS icpgate_old_rows NEW TABLE AS icpgate_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION icpgate_count_updated();
CREATE TRIGGER icpgate_filing_counts_on_delete AFTER DELETE ON icpgate_filings
    REFERENCING OLD TABLE AS icpgate_old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION icpgate_count_deleted();
",
    },
    Migration {
        version: 4,
        name: "filing rules: claimed ICP numbers, sealed filing passwords, ordered delivery per filing",
        // As SQLite's migration 4.
        sql: "
ALTER TABLE icpgate_filings
    ADD COLUMN IF NOT EXISTS icp_entity_key TEXT,
    ADD COLUMN IF NOT EXISTS sealed_password TEXT;
UPDATE icpgate_filings SET icp_entity_key = split_part(doc->>'icp_number', '号', 1) || '号'
WHERE doc->>'icp_number' IS NOT NULL AND status NOT IN ('rejected', 'cancelled');
CREATE INDEX IF NOT EXISTS icpgate_filings_by_icp_entity_key
    ON icpgate_filings(icp_entity_key);
CREATE INDEX IF NOT EXISTS icpgate_outbox_pending_by_filing ON icpgate_outbox(filing_id, id)
    WHERE delivered_at_ms IS NULL;
",
    },
    Migration {
        version: 5,
        name: "ACME accounts, certificates and challenges (fleet storage)",
        // Private keys are sealed by the nodes (AES-256-GCM, a key from their
        // environment) before they reach this table. A certificate's revision comes
        // from its own sequence: nodes follow new certificates by it.
        sql: "
CREATE TABLE IF NOT EXISTS icpgate_acme_accounts (directory TEXT PRIMARY KEY, sealed BYTEA NOT NULL);
CREATE SEQUENCE IF NOT EXISTS icpgate_acme_revision;
CREATE TABLE IF NOT EXISTS icpgate_acme_certificates (
    name TEXT PRIMARY KEY,
    sealed BYTEA NOT NULL,
    revision BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS icpgate_acme_certificates_by_revision
    ON icpgate_acme_certificates(revision);
CREATE TABLE IF NOT EXISTS icpgate_acme_challenges (
    name TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    key_authorization TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
",
    },
    Migration {
        version: 6,
        name: "when each filing in initial review entered it, indexed for the overdue gauge",
        // As SQLite's migration 6. A timestamp that does not read leaves NULL (the
        // function below), never a failed migration.
        sql: "
ALTER TABLE icpgate_filings ADD COLUMN IF NOT EXISTS review_since BIGINT;
CREATE OR REPLACE FUNCTION icpgate_unix_ms(stamp TEXT) RETURNS BIGINT
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN floor(extract(epoch FROM stamp::timestamptz))::bigint * 1000;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
UPDATE icpgate_filings SET review_since = coalesce(
    (SELECT icpgate_unix_ms(entry->>'at')
       FROM jsonb_array_elements(CASE jsonb_typeof(doc->'history')
                                 WHEN 'array' THEN doc->'history' ELSE '[]' END)
            WITH ORDINALITY AS h(entry, n)
      WHERE entry->>'to' = 'initial_review'
      ORDER BY n DESC LIMIT 1),
    icpgate_unix_ms(doc->>'updated_at'))
WHERE status = 'initial_review';
CREATE INDEX IF NOT EXISTS icpgate_filings_by_review_since
    ON icpgate_filings(status, review_since);
",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_are_numbered_from_one_without_gaps() {
        for all in [SQLITE, POSTGRES] {
            let versions: Vec<i64> = all.iter().map(|m| m.version).collect();
            let want: Vec<i64> = (1..=i64::try_from(all.len()).unwrap_or(0)).collect();
            assert_eq!(versions, want);
        }
        assert_eq!(SQLITE.len(), POSTGRES.len(), "both backends at one version");
    }

    #[test]
    fn pending_starts_after_the_current_version_and_refuses_a_newer_one() {
        assert_eq!(pending(SQLITE, 0).map(<[_]>::len).ok(), Some(SQLITE.len()));
        assert_eq!(pending(SQLITE, 1).map(|m| m[0].version).ok(), Some(2));
        let last = i64::try_from(SQLITE.len()).unwrap_or(0);
        assert_eq!(pending(SQLITE, last).map(<[_]>::len).ok(), Some(0));
        assert!(matches!(
            pending(SQLITE, last + 1),
            Err(StorageError::SchemaTooNew { .. })
        ));
    }
}
