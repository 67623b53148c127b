//! Every registrable domain that has, or ever had, a filing: the gate's first
//! question. A domain outside this set is `not_filed` without a cache entry or a
//! registry lookup, so a flood of random names (scanners, SPEC §5) never reaches the
//! registry and never evicts real answers from the decision cache.
//!
//! Contract: the set is a superset of the domains the registry holds filings for.
//! It is loaded at start-up, and every write seen — in this process (admin API) or
//! through the change feed (other nodes and processes) — adds its domains before the
//! cache is invalidated. Filings are never deleted, so nothing is ever removed.
//!
//! Loading also reads every stored filing document once (`Registry::check_documents`,
//! beside the domain stream): a document that does not read fails the load naming
//! its filing, so the gate refuses to start instead of serving without it.
//!
//! Fail closed on a document that stops reading later (the change feed names it):
//! the domains of that filing are answered `not_filed` — whatever other filings
//! share them, and without a registry lookup, so neither `stale_if_error` nor
//! `on_registry_error = "allow"` can open them — until a later change of that
//! filing reads again.
//!
//! Compact at ten million domains: the set holds a 64-bit fingerprint of each
//! domain (SipHash under a key drawn at start, so no one can aim names at a
//! collision), about 9 to 18 bytes a domain instead of a `String` each. A
//! fingerprint match is the rare false positive (about one in 2^64 / n) that costs
//! one registry lookup, which answers exactly: the superset contract holds.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::model::host::RegistrableDomain;
use crate::registry::{Registry, RegistryError};

/// Batches of domains read ahead while loading.
const LOAD_READ_AHEAD: usize = 4;

pub struct FiledDomains {
    /// Fingerprints of the filed domains. Reads on every request take the lock
    /// shared; writes are rare (filing changes), short, and in place.
    set: RwLock<Fingerprints>,
    /// The domains of filings whose stored document does not read, answered as not
    /// filed. Almost always empty: `any_unreadable` spares requests its lock.
    unreadable: Mutex<Unreadable>,
    any_unreadable: AtomicBool,
    /// The fingerprints' key, drawn per process.
    keys: RandomState,
}

/// The domains of unreadable filings, by filing and by fingerprint (a domain
/// several unreadable filings share is held until the last of them reads again).
#[derive(Default)]
struct Unreadable {
    by_filing: HashMap<i64, Vec<u64>>,
    holders: HashMap<u64, usize>,
}

/// A set of fingerprints: they are hashes already, so the set uses them as is.
type Fingerprints = HashSet<u64, BuildHasherDefault<AlreadyHashed>>;

/// The `Hasher` of a set of 64-bit hashes: the value is its own hash.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; any other input still hashes deterministically.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl FiledDomains {
    pub fn new(domains: impl IntoIterator<Item = String>) -> FiledDomains {
        let filed = FiledDomains {
            set: RwLock::default(),
            unreadable: Mutex::default(),
            any_unreadable: AtomicBool::new(false),
            keys: RandomState::new(),
        };
        let domains: Vec<String> = domains.into_iter().collect();
        filed.insert_all(domains.iter().map(String::as_str));
        filed
    }

    /// The index of every domain `registry` holds, read by one streaming query in
    /// batches: no more than a few batches of strings are held at once. Beside it,
    /// every stored document is read once: the first that does not read fails the
    /// load (`RegistryError::Corrupt`, naming the filing).
    pub async fn load(registry: &dyn Registry) -> Result<FiledDomains, RegistryError> {
        let filed = FiledDomains::new(Vec::new());
        let (batches, mut received) = tokio::sync::mpsc::channel(LOAD_READ_AHEAD);
        let read = registry.filed_domain_batches(batches);
        let index = async {
            while let Some(batch) = received.recv().await {
                filed.insert_all(batch.iter().map(String::as_str));
            }
        };
        let (read, (), checked) = tokio::join!(read, index, registry.check_documents());
        read?;
        let documents = checked?;
        tracing::debug!(documents, "every stored filing document reads");
        Ok(filed)
    }

    pub fn contains(&self, domain: &RegistrableDomain) -> bool {
        let fingerprint = self.fingerprint(domain.as_str());
        if !self.read().contains(&fingerprint) {
            return false;
        }
        !self.any_unreadable.load(Ordering::Acquire)
            || !self.quarantine().holders.contains_key(&fingerprint)
    }

    /// Filing `filing_id`'s stored document does not read: answer its `domains` as
    /// not filed (replacing what was held for it before) until [`Self::readable`].
    pub fn unreadable<'a>(&self, filing_id: i64, domains: impl IntoIterator<Item = &'a str>) {
        let fingerprints: Vec<u64> = domains.into_iter().map(|d| self.fingerprint(d)).collect();
        let mut quarantine = self.quarantine();
        quarantine.release(filing_id);
        for fingerprint in &fingerprints {
            *quarantine.holders.entry(*fingerprint).or_default() += 1;
        }
        quarantine.by_filing.insert(filing_id, fingerprints);
        self.any_unreadable.store(true, Ordering::Release);
    }

    /// Filing `filing_id`'s stored document reads (again): its domains are answered
    /// from the registry as before.
    pub fn readable(&self, filing_id: i64) {
        if !self.any_unreadable.load(Ordering::Acquire) {
            return;
        }
        let mut quarantine = self.quarantine();
        quarantine.release(filing_id);
        self.any_unreadable
            .store(!quarantine.by_filing.is_empty(), Ordering::Release);
    }

    /// How many filings are held as unreadable.
    pub fn unreadable_filings(&self) -> usize {
        self.quarantine().by_filing.len()
    }

    /// Add `domains` (registrable, normalised) under one lock.
    pub fn insert_all<'a>(&self, domains: impl IntoIterator<Item = &'a str> + Clone) {
        let fingerprints: Vec<u64> = domains
            .into_iter()
            .map(|domain| self.fingerprint(domain))
            .collect();
        self.write().extend(fingerprints);
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fingerprint(&self, domain: &str) -> u64 {
        self.keys.hash_one(domain)
    }

    // A panic while holding the lock cannot leave the set half-changed (`extend`
    // of plain integers), so a poisoned lock is safe to keep using.
    fn read(&self) -> RwLockReadGuard<'_, Fingerprints> {
        self.set
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Fingerprints> {
        self.set
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // `Unreadable` is changed only by calls that cannot panic halfway (map inserts
    // and removals of integers), so a poisoned lock is safe to keep using.
    fn quarantine(&self) -> MutexGuard<'_, Unreadable> {
        self.unreadable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Unreadable {
    /// Stop holding filing `filing_id`'s domains.
    fn release(&mut self, filing_id: i64) {
        for fingerprint in self.by_filing.remove(&filing_id).unwrap_or_default() {
            if let Some(holders) = self.holders.get_mut(&fingerprint) {
                *holders -= 1;
                if *holders == 0 {
                    self.holders.remove(&fingerprint);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::host::HostName;

    fn domain(name: &str) -> RegistrableDomain {
        HostName::parse(name)
            .ok()
            .and_then(|h| h.registrable_domain())
            .unwrap_or_else(|| panic!("{name} has a registrable domain"))
    }

    #[test]
    fn knows_loaded_and_inserted_domains_only() {
        let filed = FiledDomains::new(["example.com".to_string()]);
        assert!(filed.contains(&domain("example.com")));
        assert!(!filed.contains(&domain("random-1234.cn")));
        filed.insert_all(["new.cn", "other.com.cn"]);
        assert!(filed.contains(&domain("new.cn")) && filed.contains(&domain("other.com.cn")));
        assert!(
            filed.contains(&domain("example.com")),
            "nothing is ever removed"
        );
        assert_eq!(filed.len(), 3);
        filed.insert_all(["new.cn"]);
        assert_eq!(filed.len(), 3, "a domain is held once");
    }

    #[test]
    fn the_domains_of_an_unreadable_filing_are_not_filed_until_it_reads() {
        let filed = FiledDomains::new(["a.cn", "b.cn", "shared.cn"].map(String::from));
        filed.unreadable(7, ["a.cn", "shared.cn"]);
        filed.unreadable(8, ["shared.cn"]);
        assert!(!filed.contains(&domain("a.cn")) && !filed.contains(&domain("shared.cn")));
        assert!(
            filed.contains(&domain("b.cn")),
            "other filings' domains still filed"
        );
        assert_eq!(filed.unreadable_filings(), 2);
        filed.readable(7);
        assert!(filed.contains(&domain("a.cn")));
        assert!(
            !filed.contains(&domain("shared.cn")),
            "held while another unreadable filing has it"
        );
        filed.unreadable(8, ["b.cn"]);
        assert!(filed.contains(&domain("shared.cn")) && !filed.contains(&domain("b.cn")));
        filed.readable(8);
        assert!(filed.contains(&domain("b.cn")));
        assert_eq!(filed.unreadable_filings(), 0);
    }

    #[tokio::test]
    async fn loading_refuses_a_registry_with_an_unreadable_document() {
        let registry = crate::registry::memory::MemoryRegistry::new();
        let lines =
            "{\"domains\":[\"ok.cn\"],\"product\":\"storefront\",\"status\":\"rejected\"}\n\
                     {\"domains\":[\"bad.cn\"],\"product\":\"storefront\",\"status\":\"rejected\"}";
        let records = crate::registry::jsonl::parse(lines).expect("parse");
        registry.import(records).await.expect("import");
        assert!(registry.replace_document(2, "{\"id\": \"not a filing\"}"));
        match FiledDomains::load(&registry).await {
            Err(RegistryError::Corrupt { id: 2, .. }) => {}
            Err(other) => panic!("want Corrupt naming filing 2, got {other:?}"),
            Ok(_) => panic!("want Corrupt naming filing 2, got an index"),
        }
    }

    #[tokio::test]
    async fn loads_every_domain_of_the_registry_in_batches() {
        let registry = crate::registry::memory::MemoryRegistry::new();
        let lines: String = (0..20_000)
            .map(|i| {
                format!(
                    "{{\"domains\":[\"d{i}.cn\"],\"product\":\"storefront\",\"status\":\"rejected\"}}\n"
                )
            })
            .collect();
        let records = crate::registry::jsonl::parse(&lines).expect("parse");
        registry.import(records).await.expect("import");
        let filed = FiledDomains::load(&registry).await.expect("load");
        assert_eq!(filed.len(), 20_000);
        assert!(filed.contains(&domain("d0.cn")) && filed.contains(&domain("d19999.cn")));
        assert!(!filed.contains(&domain("d20000.cn")));
    }
}
