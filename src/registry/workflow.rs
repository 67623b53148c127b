//! The one write path of the registry: submit, transition and import, written once
//! over the small set of storage operations ([`WriteTx`]) each backend supplies.
//!
//! Contract (every backend gets it from here, none re-implements it):
//! - a submission is classified (the seed's filing type) and stored in
//!   `initial_review`; a transition goes through `Filing::apply` and leaves the
//!   filing untouched when refused;
//! - a registrable domain belongs to at most one live filing: a write that would
//!   make a second one live is refused with `DomainTaken` naming the real holder;
//! - an ICP number (its entity part, `浙ICP备12345678号`) belongs to one entity: a
//!   write that would make another entity's filing claim it
//!   (`Status::claims_number`) is refused with `NumberTaken` naming the holder;
//! - every stored filing bumps the registry revision, which only grows;
//! - a submission's filing type is stored with it (an import's only when it is an
//!   access-existing filing: the others are unknown);
//! - with the outbox on, the notification of each submission and transition is
//!   enqueued in the same transaction as the change;
//! - an import stores every record or none, and names the line of the one refused;
//! - an access-existing filing's password is kept sealed (`SecretKey`) beside the
//!   document, never in it, and erased when its initial review ends; without a key
//!   it is not kept at all.
//!
//! The caller opens the transaction, runs one of [`submit`], [`transition`],
//! [`import`] in it, and commits only on `Ok`. Synchronous backends (SQLite, memory)
//! run these futures with [`run_ready`]: their operations never wait.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::FutureExt;
use serde_json::{json, Value};

use super::{FilingType, ImportRecord, RegistryError, SecretKey, StorageError, Submitted};
use crate::model::filing::{
    now_rfc3339, Action, Entity, Filing, FilingPassword, IcpNumber, Kind, Status, Submission,
    REASON_MAX_CHARS,
};
use crate::model::working_days;

/// The storage operations of one write transaction. Every operation runs inside the
/// transaction the backend opened; nothing is visible to others before its commit.
pub(crate) trait WriteTx {
    /// The stored filing `id`, held against concurrent writers until commit.
    async fn load(&mut self, id: i64) -> Result<Option<Filing>, RegistryError>;
    /// The live filing, other than `except`, that holds `domain`.
    async fn live_holder(
        &mut self,
        domain: &str,
        except: i64,
    ) -> Result<Option<i64>, RegistryError>;
    /// Whether an `approved` or `disconnected` filing exists whose entity has this
    /// certificate number (trimmed, upper-case) when given, else this trimmed name.
    async fn entity_holds_number(
        &mut self,
        certificate: Option<&str>,
        name: &str,
    ) -> Result<bool, RegistryError>;
    /// The filings other than `except` that claim an ICP number whose entity part
    /// is `entity_key` (as stored by `put_filing`), with their entity identity.
    async fn number_holders(
        &mut self,
        entity_key: &str,
        except: i64,
    ) -> Result<Vec<NumberHolder>, RegistryError>;
    /// Keep `sealed` as filing `id`'s sealed filing password (`None`: erase it);
    /// whether the stored value changed (erasing: whether one was kept).
    async fn set_sealed_password(
        &mut self,
        id: i64,
        sealed: Option<&str>,
    ) -> Result<bool, RegistryError>;
    /// Advance the registry revision; returns the new one.
    async fn bump_revision(&mut self) -> Result<i64, RegistryError>;
    /// Reserve a fresh id for a new filing in `status` at `revision`.
    async fn insert_filing(&mut self, status: Status, revision: i64) -> Result<i64, RegistryError>;
    /// Write `filing` under `filing.id` (insert or replace) at `revision`.
    async fn put_filing(&mut self, filing: &Filing, revision: i64) -> Result<(), RegistryError>;
    /// Record the seed's filing type of filing `id`, as classified when stored.
    async fn set_filing_type(
        &mut self,
        id: i64,
        filing_type: FilingType,
    ) -> Result<(), RegistryError>;
    /// Replace the domain rows of filing `id`. When `live`, a domain another live
    /// filing holds is not claimed and is returned (the database's own
    /// one-live-filing-per-domain index refusing it).
    async fn replace_domains(
        &mut self,
        id: i64,
        domains: &[String],
        live: bool,
    ) -> Result<Option<String>, RegistryError>;
    /// Append an outbox event for `filing_id` created at `now_ms`, due at once;
    /// `payload` makes its document from the event's id.
    async fn enqueue(
        &mut self,
        filing_id: i64,
        now_ms: i64,
        payload: impl FnOnce(i64) -> String,
    ) -> Result<(), RegistryError>;
    /// After an import stored explicit ids: ids handed out later must not collide.
    async fn ids_imported(&mut self) -> Result<(), RegistryError>;
}

/// A filing claiming an ICP number, as `WriteTx::number_holders` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NumberHolder {
    pub id: i64,
    /// `entity_identity` of its entity.
    pub certificate: Option<String>,
    pub name: String,
}

/// Validate and store a submission in `initial_review`, with its filing type.
pub(crate) async fn submit<T: WriteTx>(
    tx: &mut T,
    submission: Submission,
    actor: &str,
    outbox: bool,
    key: Option<&SecretKey>,
) -> Result<Submitted, RegistryError> {
    let filing_type = classify(tx, &submission).await?;
    let password = submission.filing_password.clone();
    // Another entity's number is named as such before any other rule about it.
    if let Some(number) = &submission.icp_number {
        check_number_holders(tx, &number.entity_key(), &submission.entity, 0).await?;
    }
    let mut filing = Filing::submit(0, submission, actor, &now_rfc3339())?;
    store(tx, &mut filing, None).await?;
    tx.set_filing_type(filing.id, filing_type).await?;
    keep_password(tx, filing.id, password.as_ref(), key).await?;
    if outbox {
        enqueue(tx, &filing).await?;
    }
    Ok(Submitted {
        filing,
        filing_type,
    })
}

/// Apply one workflow step to filing `id`.
pub(crate) async fn transition<T: WriteTx>(
    tx: &mut T,
    id: i64,
    action: Action,
    actor: &str,
    outbox: bool,
    key: Option<&SecretKey>,
) -> Result<Filing, RegistryError> {
    let mut filing = tx.load(id).await?.ok_or(RegistryError::NotFound(id))?;
    let password = match &action {
        Action::Resubmit {
            filing_password, ..
        } => filing_password.clone(),
        _ => None,
    };
    let from = filing.status;
    // Another entity's number is named as such before any other rule about it.
    if let Some(number) = number_given(&action) {
        check_number_holders(tx, &number.entity_key(), &filing.entity, id).await?;
    }
    filing.apply(action, actor, &now_rfc3339())?;
    // Initial review is where the password is checked: it ends, the password goes,
    // and the step's history entry records that its reviewer had it to verify.
    let review_ended = from == Status::InitialReview && filing.status != Status::InitialReview;
    if review_ended && tx.set_sealed_password(id, None).await? {
        note_password_verified(&mut filing);
    }
    store(tx, &mut filing, Some(id)).await?;
    keep_password(tx, id, password.as_ref(), key).await?;
    if outbox {
        enqueue(tx, &filing).await?;
    }
    Ok(filing)
}

/// Keep an access-existing filing's password sealed until its initial review ends.
/// Without a key (`registry.secret_key_env` unset) it is not kept.
async fn keep_password<T: WriteTx>(
    tx: &mut T,
    id: i64,
    password: Option<&FilingPassword>,
    key: Option<&SecretKey>,
) -> Result<(), RegistryError> {
    let Some(password) = password else {
        return Ok(());
    };
    match key {
        Some(key) => {
            let sealed = key.seal(id, password).map_err(StorageError::from)?;
            tx.set_sealed_password(id, Some(&sealed)).await?;
            Ok(())
        }
        None => {
            tracing::warn!(
                filing_id = id,
                "filing password not kept: registry.secret_key_env is not set"
            );
            Ok(())
        }
    }
}

/// Record on the step that ended initial review (its actor is the reviewer) that
/// the filing password was there to verify, and is erased.
fn note_password_verified(filing: &mut Filing) {
    const NOTE: &str = "filing password verified at initial review, then erased";
    if let Some(entry) = filing.history.last_mut() {
        let note = match entry.reason.take() {
            Some(reason) => format!("{reason} ({NOTE})"),
            None => NOTE.to_owned(),
        };
        entry.reason = Some(note.chars().take(REASON_MAX_CHARS).collect());
    }
}

/// The password sealed as `sealed` for filing `id`, opened with `key`; a sealed
/// value without a key to open it is an error, not a silent `None`.
pub(crate) fn open_password(
    key: Option<&SecretKey>,
    id: i64,
    sealed: Option<String>,
) -> Result<Option<FilingPassword>, RegistryError> {
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let key = key.ok_or(StorageError::Secret(super::SecretError::Unopenable))?;
    Ok(Some(key.open(id, &sealed).map_err(StorageError::from)?))
}

/// Store every record (the caller commits only on `Ok`); an error names its line.
/// `stored` counts the records stored so far, for progress.
pub(crate) async fn import<T: WriteTx>(
    tx: &mut T,
    records: Vec<ImportRecord>,
    stored: &AtomicUsize,
) -> Result<usize, RegistryError> {
    let count = records.len();
    for record in records {
        let at_line = RegistryError::at_line(record.line);
        let mut filing = record.filing;
        filing.validate().map_err(|e| at_line(e.into()))?;
        if let Some(id) = record.id {
            if tx.load(id).await.map_err(at_line)?.is_some() {
                return Err(at_line(RegistryError::IdTaken(id)));
            }
        }
        store(tx, &mut filing, record.id).await.map_err(at_line)?;
        // Only an access-existing filing's type follows from the record itself.
        if filing.kind == Kind::AccessExisting {
            tx.set_filing_type(filing.id, FilingType::AccessExisting)
                .await
                .map_err(at_line)?;
        }
        stored.fetch_add(1, Ordering::Relaxed);
    }
    tx.ids_imported().await?;
    Ok(count)
}

/// Write `filing` (a new one when `id` is `None`) with its domain rows at the next
/// revision, keeping one live filing per domain.
async fn store<T: WriteTx>(
    tx: &mut T,
    filing: &mut Filing,
    id: Option<i64>,
) -> Result<(), RegistryError> {
    let live = filing.status.is_live();
    let except = id.unwrap_or(0);
    if let Some(key) = number_key(filing) {
        check_number_holders(tx, &key, &filing.entity, except).await?;
    }
    if live {
        for domain in &filing.domains {
            if let Some(filing_id) = tx.live_holder(domain, except).await? {
                let domain = domain.clone();
                return Err(RegistryError::DomainTaken { domain, filing_id });
            }
        }
    }
    let revision = tx.bump_revision().await?;
    filing.id = match id {
        Some(id) => id,
        None => tx.insert_filing(filing.status, revision).await?,
    };
    tx.put_filing(filing, revision).await?;
    if let Some(domain) = tx.replace_domains(filing.id, &filing.domains, live).await? {
        // Another writer made it live after the check above: name that holder.
        return match tx.live_holder(&domain, filing.id).await? {
            Some(filing_id) => Err(RegistryError::DomainTaken { domain, filing_id }),
            None => Err(StorageError::LostRace { domain }.into()),
        };
    }
    Ok(())
}

/// Refuse `entity` claiming the ICP number whose entity part is `key` when another
/// entity's filing (not `except`) claims it: the same certificate number when both
/// give one, else the same name, is one entity.
async fn check_number_holders<T: WriteTx>(
    tx: &mut T,
    key: &str,
    entity: &Entity,
    except: i64,
) -> Result<(), RegistryError> {
    let (certificate, name) = entity_identity(entity);
    for holder in tx.number_holders(key, except).await? {
        let same = match (&certificate, &holder.certificate) {
            (Some(ours), Some(theirs)) => ours == theirs,
            _ => name == holder.name,
        };
        if !same {
            return Err(RegistryError::NumberTaken {
                number: key.to_owned(),
                filing_id: holder.id,
            });
        }
    }
    Ok(())
}

/// The ICP number a step gives (approval by the authority, a corrected number).
fn number_given(action: &Action) -> Option<&IcpNumber> {
    match action {
        Action::AuthorityReview {
            approve: true,
            icp_number,
            ..
        }
        | Action::Resubmit { icp_number, .. } => icp_number.as_ref(),
        _ => None,
    }
}

/// The entity part of the ICP number `filing` claims, as stored for
/// `WriteTx::number_holders`; `None` when it claims none.
pub(crate) fn number_key(filing: &Filing) -> Option<String> {
    filing
        .icp_number
        .as_ref()
        .filter(|_| filing.status.claims_number())
        .map(|number| number.entity_key())
}

/// When `filing` entered initial review, as stored beside it for the overdue
/// gauge (`review_since`, Unix milliseconds of whole seconds, the same instant
/// `working_days::entered_initial_review` reads); `None` outside initial review or
/// when no timestamp reads. Every write stores it, so each one that enters initial
/// review (submit, resubmit, import) sets it and each that leaves clears it.
pub(crate) fn review_since_ms(filing: &Filing) -> Option<i64> {
    (filing.status == Status::InitialReview)
        .then(|| working_days::entered_initial_review(filing))
        .flatten()
        .map(|since| since.saturating_mul(1000))
}

/// The seed's filing type: access of an existing filing by its kind; otherwise a new
/// website when the entity already holds an ICP number (another filing of it is
/// approved or disconnected), matched by certificate number when the submission
/// gives one, else by entity name.
async fn classify<T: WriteTx>(
    tx: &mut T,
    submission: &Submission,
) -> Result<FilingType, RegistryError> {
    if submission.kind == Kind::AccessExisting {
        return Ok(FilingType::AccessExisting);
    }
    let (certificate, name) = entity_identity(&submission.entity);
    Ok(
        if tx
            .entity_holds_number(certificate.as_deref(), &name)
            .await?
        {
            FilingType::NewWebsite
        } else {
            FilingType::FirstFiling
        },
    )
}

/// How the seed's filing type recognises a known entity: by its certificate number
/// (trimmed, upper-case) when the submission gives one, else by its trimmed name.
pub(crate) fn entity_identity(entity: &Entity) -> (Option<String>, String) {
    let certificate = entity
        .certificate_number
        .as_deref()
        .map(|c| c.trim().to_uppercase())
        .filter(|c| !c.is_empty());
    (certificate, entity.name.trim().to_string())
}

/// Record the filing's latest step as a notification, in the caller's transaction.
async fn enqueue<T: WriteTx>(tx: &mut T, filing: &Filing) -> Result<(), RegistryError> {
    tx.enqueue(filing.id, now_ms(), |event_id| {
        outbox_payload(event_id, filing).to_string()
    })
    .await
}

/// The notification for the filing's latest history entry. No personal data: only
/// ids, kind, product, domains, the step and the ICP number.
pub fn outbox_payload(event_id: i64, filing: &Filing) -> Value {
    let step = filing.history.last();
    json!({
        "event_id": event_id,
        "filing_id": filing.id,
        "kind": filing.kind.as_str(),
        "product": filing.product.as_str(),
        "domains": filing.domains,
        "from": step.and_then(|s| s.from).map(|s| s.as_str()),
        "to": filing.status.as_str(),
        "actor": step.map(|s| s.actor.as_str()),
        "reason": step.and_then(|s| s.reason.as_deref()),
        "at": step.map_or(filing.updated_at.as_str(), |s| s.at.as_str()),
        "icp_number": filing.icp_number.as_ref().map(|n| n.as_str()),
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The stored document of `filing`.
pub(crate) fn encode(filing: &Filing) -> String {
    // Serialising plain data (strings, enums, vectors) cannot fail.
    serde_json::to_string(filing).unwrap_or_default()
}

/// The filing stored as `doc` under `id`; an unreadable document is `Corrupt`,
/// naming the filing, never a panic.
pub(crate) fn decode(id: i64, doc: &str) -> Result<Filing, RegistryError> {
    let mut filing: Filing =
        serde_json::from_str(doc).map_err(|source| RegistryError::Corrupt { id, source })?;
    filing.id = id;
    Ok(filing)
}

/// Run a write of a synchronous backend to completion: its storage operations never
/// wait, so the future finishes in its first poll.
pub(crate) fn run_ready<T>(
    write: impl Future<Output = Result<T, RegistryError>>,
) -> Result<T, RegistryError> {
    write
        .now_or_never()
        .unwrap_or(Err(StorageError::Stalled.into()))
}
