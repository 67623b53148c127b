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
//! Compact at ten million domains: the set holds a 64-bit fingerprint of each
//! domain (SipHash under a key drawn at start, so no one can aim names at a
//! collision), about 9 to 18 bytes a domain instead of a `String` each. A
//! fingerprint match is the rare false positive (about one in 2^64 / n) that costs
//! one registry lookup, which answers exactly: the superset contract holds.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::model::host::RegistrableDomain;
use crate::registry::{Registry, RegistryError};

/// Batches of domains read ahead while loading.
const LOAD_READ_AHEAD: usize = 4;

pub struct FiledDomains {
    /// Fingerprints of the filed domains. Reads on every request take the lock
    /// shared; writes are rare (filing changes), short, and in place.
    set: RwLock<Fingerprints>,
    /// The fingerprints' key, drawn per process.
    keys: RandomState,
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
            keys: RandomState::new(),
        };
        let domains: Vec<String> = domains.into_iter().collect();
        filed.insert_all(domains.iter().map(String::as_str));
        filed
    }

    /// The index of every domain `registry` holds, read by one streaming query in
    /// batches: no more than a few batches of strings are held at once.
    pub async fn load(registry: &dyn Registry) -> Result<FiledDomains, RegistryError> {
        let filed = FiledDomains::new(Vec::new());
        let (batches, mut received) = tokio::sync::mpsc::channel(LOAD_READ_AHEAD);
        let read = registry.filed_domain_batches(batches);
        let index = async {
            while let Some(batch) = received.recv().await {
                filed.insert_all(batch.iter().map(String::as_str));
            }
        };
        let (read, ()) = tokio::join!(read, index);
        read?;
        Ok(filed)
    }

    pub fn contains(&self, domain: &RegistrableDomain) -> bool {
        let fingerprint = self.fingerprint(domain.as_str());
        self.read().contains(&fingerprint)
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
