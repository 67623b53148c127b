//! The in-memory registry, for tests: the same write path (`workflow`) as the
//! durable backends over the same storage operations, kept in a map instead of a
//! database, plus the faults a test needs (an outage, a slow lookup).
//!
//! Filings are kept as their stored JSON document, like the durable backends, so an
//! unreadable document is `Corrupt` here too. A write works on a copy of the state
//! and replaces it only on success: every write is all or nothing. Nothing survives
//! the process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::secret::SecretKey;
use super::workflow::{
    self, decode, encode, entity_identity, number_key, open_password, review_since_ms, run_ready,
    NumberHolder, WriteTx,
};
use super::{
    Change, FilingType, ImportRecord, ListFilter, Lookup, Outbox, OutboxEvent, Registry,
    RegistryError, StorageError, Submitted, CHANGES_BATCH,
};
use crate::model::filing::{Action, Filing, FilingPassword, Status, Submission};
use crate::model::host::RegistrableDomain;

/// A `Registry` (and `Outbox`) in memory. Clones share the same filings.
#[derive(Clone, Default)]
pub struct MemoryRegistry {
    state: Arc<Mutex<State>>,
    faults: Arc<Faults>,
    /// Whether writes also record notifications in the outbox.
    outbox: bool,
    /// Seals kept filing passwords (`registry.secret_key_env`).
    secret_key: Option<Arc<SecretKey>>,
}

/// What a test can make the registry do wrong, and what it counts.
#[derive(Default)]
struct Faults {
    /// Every call fails with `StorageError::Down`.
    down: AtomicBool,
    /// How long a lookup takes after it has read the state (milliseconds).
    lookup_delay_ms: AtomicU64,
    lookups: AtomicUsize,
}

/// Everything the registry holds: the tables of the durable backends.
#[derive(Clone, Default)]
struct State {
    filings: BTreeMap<i64, Row>,
    /// `(domain, filing id)` -> whether the filing is live.
    domains: BTreeMap<(String, i64), bool>,
    revision: i64,
    /// The highest filing id ever stored (ids are never reused).
    last_id: i64,
    outbox: BTreeMap<i64, Event>,
    last_event: i64,
}

#[derive(Clone)]
struct Row {
    status: Status,
    doc: String,
    revision: i64,
    filing_type: Option<FilingType>,
    sealed_password: Option<String>,
    /// `workflow::review_since_ms`, as the durable backends store it.
    review_since: Option<i64>,
}

#[derive(Clone)]
struct Event {
    filing_id: i64,
    payload: String,
    attempts: u32,
    next_attempt_at_ms: i64,
    delivered_at_ms: Option<i64>,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> MemoryRegistry {
        MemoryRegistry::default()
    }

    /// Record (or not) every submission and transition in the outbox.
    pub fn with_outbox(mut self, on: bool) -> MemoryRegistry {
        self.outbox = on;
        self
    }

    /// Seal kept filing passwords with `key` (`registry.secret_key_env`); without
    /// one they are not kept.
    pub fn with_secret_key(mut self, key: Option<Arc<SecretKey>>) -> Self {
        self.secret_key = key;
        self
    }

    /// Make every call fail (`StorageError::Down`) until told otherwise.
    pub fn set_down(&self, down: bool) {
        self.faults.down.store(down, Ordering::SeqCst);
    }

    /// Make each lookup answer `delay` after it read the state, like a read
    /// transaction that began before a concurrent write committed.
    pub fn set_lookup_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.faults.lookup_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// How many lookups were asked of this registry so far.
    pub fn lookups(&self) -> usize {
        self.faults.lookups.load(Ordering::SeqCst)
    }

    /// Replace the stored document of filing `id` with `doc` as it is (for tests of
    /// unreadable documents); false when there is no such filing.
    pub fn replace_document(&self, id: i64, doc: &str) -> bool {
        match self.lock().filings.get_mut(&id) {
            Some(row) => {
                row.doc = doc.to_string();
                true
            }
            None => false,
        }
    }

    /// `replace_document` as a write would do it: at the next revision, so the
    /// change feed sees it (for tests of a feed meeting an unreadable document).
    pub fn rewrite_document(&self, id: i64, doc: &str) -> bool {
        let mut state = self.lock();
        let revision = state.revision + 1;
        match state.filings.get_mut(&id) {
            Some(row) => {
                row.doc = doc.to_string();
                row.revision = revision;
                state.revision = revision;
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No call panics while holding the lock with the state half-written (writes
        // replace it whole), so a poisoned lock is safe to reuse.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn up(&self) -> Result<(), RegistryError> {
        if self.faults.down.load(Ordering::SeqCst) {
            return Err(StorageError::Down.into());
        }
        Ok(())
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&State) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        self.up()?;
        f(&self.lock())
    }

    /// Run `f` on a copy of the state; keep the copy only when it succeeds.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        self.up()?;
        let mut state = self.lock();
        let mut staged = state.clone();
        let out = f(&mut staged)?;
        *state = staged;
        Ok(out)
    }
}

impl State {
    fn get(&self, id: i64) -> Result<Option<Filing>, RegistryError> {
        self.filings
            .get(&id)
            .map(|row| decode(id, &row.doc))
            .transpose()
    }

    /// The ids of the filings with a row for `domain`, with whether each is live.
    fn domain_rows<'a>(&'a self, domain: &'a str) -> impl Iterator<Item = (i64, bool)> + 'a {
        self.domains
            .range((domain.to_string(), i64::MIN)..=(domain.to_string(), i64::MAX))
            .map(|((_, id), live)| (*id, *live))
    }

    fn lookup(&self, domain: &str) -> Result<Option<Filing>, RegistryError> {
        let best = self
            .domain_rows(domain)
            .filter_map(|(id, live)| Some((live, self.filings.get(&id)?.revision, id)))
            .max();
        best.map(|(_, _, id)| self.get(id))
            .transpose()
            .map(Option::flatten)
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Filing>, RegistryError> {
        let in_domain: Option<BTreeSet<i64>> = filter
            .domain
            .as_ref()
            .map(|d| self.domain_rows(d.as_str()).map(|(id, _)| id).collect());
        let after = filter.after.unwrap_or(0);
        self.filings
            .range(after.saturating_add(1)..)
            .filter(|(_, row)| filter.status.is_none_or(|s| row.status == s))
            .filter(|(id, _)| in_domain.as_ref().is_none_or(|ids| ids.contains(id)))
            .take(filter.limit.unwrap_or(usize::MAX))
            .map(|(id, row)| decode(*id, &row.doc))
            .collect()
    }
}

/// The storage operations of the shared write path, on the staged copy.
impl WriteTx for State {
    async fn load(&mut self, id: i64) -> Result<Option<Filing>, RegistryError> {
        self.get(id)
    }

    async fn live_holder(
        &mut self,
        domain: &str,
        except: i64,
    ) -> Result<Option<i64>, RegistryError> {
        Ok(self
            .domain_rows(domain)
            .find(|(id, live)| *live && *id != except)
            .map(|(id, _)| id))
    }

    async fn entity_holds_number(
        &mut self,
        certificate: Option<&str>,
        name: &str,
    ) -> Result<bool, RegistryError> {
        for (id, row) in &self.filings {
            if !matches!(row.status, Status::Approved | Status::Disconnected) {
                continue;
            }
            let (their_certificate, their_name) = entity_identity(&decode(*id, &row.doc)?.entity);
            let same = match certificate {
                Some(certificate) => their_certificate.as_deref() == Some(certificate),
                None => their_name == name,
            };
            if same {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn number_holders(
        &mut self,
        entity_key: &str,
        except: i64,
    ) -> Result<Vec<NumberHolder>, RegistryError> {
        let mut holders = Vec::new();
        for (id, row) in self.filings.iter().filter(|(id, _)| **id != except) {
            let filing = decode(*id, &row.doc)?;
            if number_key(&filing).as_deref() == Some(entity_key) {
                let (certificate, name) = entity_identity(&filing.entity);
                holders.push(NumberHolder {
                    id: *id,
                    certificate,
                    name,
                });
            }
        }
        Ok(holders)
    }

    async fn set_sealed_password(
        &mut self,
        id: i64,
        sealed: Option<&str>,
    ) -> Result<bool, RegistryError> {
        let Some(row) = self.filings.get_mut(&id) else {
            return Ok(false);
        };
        let changed = row.sealed_password.as_deref() != sealed;
        row.sealed_password = sealed.map(str::to_owned);
        Ok(changed)
    }

    async fn bump_revision(&mut self) -> Result<i64, RegistryError> {
        self.revision += 1;
        Ok(self.revision)
    }

    async fn insert_filing(&mut self, status: Status, revision: i64) -> Result<i64, RegistryError> {
        self.last_id += 1;
        let doc = "{}".to_string();
        let row = Row {
            status,
            doc,
            revision,
            filing_type: None,
            sealed_password: None,
            review_since: None,
        };
        self.filings.insert(self.last_id, row);
        Ok(self.last_id)
    }

    async fn put_filing(&mut self, filing: &Filing, revision: i64) -> Result<(), RegistryError> {
        let kept = self.filings.get(&filing.id);
        let filing_type = kept.and_then(|row| row.filing_type);
        let sealed_password = kept.and_then(|row| row.sealed_password.clone());
        let row = Row {
            status: filing.status,
            doc: encode(filing),
            revision,
            filing_type,
            sealed_password,
            review_since: review_since_ms(filing),
        };
        self.filings.insert(filing.id, row);
        self.last_id = self.last_id.max(filing.id);
        Ok(())
    }

    async fn set_filing_type(
        &mut self,
        id: i64,
        filing_type: FilingType,
    ) -> Result<(), RegistryError> {
        if let Some(row) = self.filings.get_mut(&id) {
            row.filing_type = Some(filing_type);
        }
        Ok(())
    }

    async fn replace_domains(
        &mut self,
        id: i64,
        domains: &[String],
        live: bool,
    ) -> Result<Option<String>, RegistryError> {
        self.domains.retain(|(_, filing_id), _| *filing_id != id);
        for domain in domains {
            if live && self.domain_rows(domain).any(|(_, live)| live) {
                return Ok(Some(domain.clone()));
            }
            self.domains.insert((domain.clone(), id), live);
        }
        Ok(None)
    }

    async fn enqueue(
        &mut self,
        filing_id: i64,
        now_ms: i64,
        payload: impl FnOnce(i64) -> String,
    ) -> Result<(), RegistryError> {
        self.last_event += 1;
        let event = Event {
            filing_id,
            payload: payload(self.last_event),
            attempts: 0,
            next_attempt_at_ms: now_ms,
            delivered_at_ms: None,
        };
        self.outbox.insert(self.last_event, event);
        Ok(())
    }

    async fn ids_imported(&mut self) -> Result<(), RegistryError> {
        Ok(())
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn lookup(&self, domain: &RegistrableDomain) -> Result<Lookup, RegistryError> {
        self.faults.lookups.fetch_add(1, Ordering::SeqCst);
        let read = self.read(|state| {
            Ok(Lookup {
                filing: state.lookup(domain.as_str())?,
                revision: state.revision,
            })
        });
        let delay = self.faults.lookup_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        read
    }

    async fn get(&self, id: i64) -> Result<Option<Filing>, RegistryError> {
        self.read(|state| state.get(id))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Filing>, RegistryError> {
        self.read(|state| state.list(filter))
    }

    async fn submit(
        &self,
        submission: Submission,
        actor: &str,
    ) -> Result<Submitted, RegistryError> {
        let key = self.secret_key.as_deref();
        self.write(|state| run_ready(workflow::submit(state, submission, actor, self.outbox, key)))
    }

    async fn transition(
        &self,
        id: i64,
        action: Action,
        actor: &str,
    ) -> Result<Filing, RegistryError> {
        let key = self.secret_key.as_deref();
        self.write(|state| {
            run_ready(workflow::transition(
                state,
                id,
                action,
                actor,
                self.outbox,
                key,
            ))
        })
    }

    async fn import(&self, records: Vec<ImportRecord>) -> Result<usize, RegistryError> {
        let stored = AtomicUsize::new(0);
        self.write(|state| run_ready(workflow::import(state, records, &stored)))
    }

    async fn filing_type(&self, id: i64) -> Result<Option<FilingType>, RegistryError> {
        self.read(|state| Ok(state.filings.get(&id).and_then(|row| row.filing_type)))
    }

    async fn filing_password(&self, id: i64) -> Result<Option<FilingPassword>, RegistryError> {
        let sealed = self.read(|state| {
            Ok(state
                .filings
                .get(&id)
                .and_then(|row| row.sealed_password.clone()))
        })?;
        open_password(self.secret_key.as_deref(), id, sealed)
    }

    async fn export(&self) -> Result<Vec<Filing>, RegistryError> {
        self.list(&ListFilter::default()).await
    }

    async fn counts_by_status(&self) -> Result<BTreeMap<Status, u64>, RegistryError> {
        self.read(|state| {
            let mut counts: BTreeMap<Status, u64> = Status::ALL.iter().map(|s| (*s, 0)).collect();
            for row in state.filings.values() {
                *counts.entry(row.status).or_default() += 1;
            }
            Ok(counts)
        })
    }

    async fn revision(&self) -> Result<i64, RegistryError> {
        self.read(|state| Ok(state.revision))
    }

    async fn initial_reviews_entered_by(&self, cutoff_ms: i64) -> Result<u64, RegistryError> {
        self.read(|state| {
            let entered_by = |row: &&Row| {
                row.status == Status::InitialReview
                    && row.review_since.is_some_and(|since| since <= cutoff_ms)
            };
            let count = state.filings.values().filter(entered_by).count();
            Ok(u64::try_from(count).unwrap_or(u64::MAX))
        })
    }

    async fn is_empty(&self) -> Result<bool, RegistryError> {
        self.read(|state| Ok(state.filings.is_empty()))
    }

    async fn filed_domains(&self) -> Result<Vec<String>, RegistryError> {
        self.read(|state| {
            let domains: BTreeSet<&String> = state.domains.keys().map(|(d, _)| d).collect();
            Ok(domains.into_iter().cloned().collect())
        })
    }

    async fn changes_since(&self, revision: i64) -> Result<Vec<Change>, RegistryError> {
        self.read(|state| {
            let mut rows: Vec<(i64, i64)> = state
                .filings
                .iter()
                .filter(|(_, row)| row.revision > revision)
                .map(|(id, row)| (row.revision, *id))
                .collect();
            rows.sort_unstable();
            rows.truncate(usize::try_from(CHANGES_BATCH).unwrap_or(usize::MAX));
            let changes = rows.into_iter().map(|(revision, filing_id)| {
                let (domains, unreadable) = match state.get(filing_id) {
                    Ok(filing) => (filing.map(|f| f.domains).unwrap_or_default(), None),
                    Err(error) => {
                        let rows = state.domains.keys().filter(|(_, id)| *id == filing_id);
                        let domains = rows.map(|(domain, _)| domain.clone()).collect();
                        (domains, Some(error.to_string()))
                    }
                };
                Change {
                    revision,
                    filing_id,
                    domains,
                    unreadable,
                }
            });
            Ok(changes.collect())
        })
    }

    fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        self.outbox
            .then(|| Arc::new(self.clone()) as Arc<dyn Outbox>)
    }
}

#[async_trait]
impl Outbox for MemoryRegistry {
    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEvent>, RegistryError> {
        self.read(|state| {
            // One filing's events go in order: only its oldest pending one is due.
            let mut waiting = BTreeSet::new();
            Ok(state
                .outbox
                .iter()
                .filter(|(_, e)| e.delivered_at_ms.is_none())
                .filter(|(_, e)| waiting.insert(e.filing_id))
                .filter(|(_, e)| e.next_attempt_at_ms <= now_ms)
                .take(limit)
                .map(|(id, e)| OutboxEvent {
                    id: *id,
                    payload: e.payload.clone(),
                    attempts: e.attempts,
                })
                .collect())
        })
    }

    async fn next_due(&self) -> Result<Option<i64>, RegistryError> {
        self.read(|state| {
            let mut waiting = BTreeSet::new();
            Ok(state
                .outbox
                .values()
                .filter(|e| e.delivered_at_ms.is_none())
                .filter(|e| waiting.insert(e.filing_id))
                .map(|e| e.next_attempt_at_ms)
                .min())
        })
    }

    async fn delivered(&self, id: i64, now_ms: i64) -> Result<(), RegistryError> {
        self.write(|state| {
            if let Some(event) = state.outbox.get_mut(&id) {
                event.delivered_at_ms = Some(now_ms);
                event.attempts += 1;
            }
            Ok(())
        })
    }

    async fn failed(&self, id: i64, next_at_ms: i64, _error: &str) -> Result<(), RegistryError> {
        self.write(|state| {
            if let Some(event) = state.outbox.get_mut(&id) {
                event.next_attempt_at_ms = next_at_ms;
                event.attempts += 1;
            }
            Ok(())
        })
    }

    async fn pending(&self) -> Result<u64, RegistryError> {
        self.read(|state| {
            let pending = state
                .outbox
                .values()
                .filter(|e| e.delivered_at_ms.is_none());
            Ok(u64::try_from(pending.count()).unwrap_or(u64::MAX))
        })
    }

    async fn prune_delivered(&self, before_ms: i64) -> Result<u64, RegistryError> {
        self.write(|state| {
            let before = state.outbox.len();
            state
                .outbox
                .retain(|_, e| e.delivered_at_ms.is_none_or(|at| at >= before_ms));
            Ok(u64::try_from(before - state.outbox.len()).unwrap_or(u64::MAX))
        })
    }
}
