//! Every registrable domain that has, or ever had, a filing: the gate's first
//! question. A domain outside this set is `not_filed` without a cache entry or a
//! registry lookup, so a flood of random names (scanners, SPEC §5) never reaches the
//! registry and never evicts real answers from the decision cache.
//!
//! Contract: the set is a superset of the domains the registry holds filings for.
//! It is loaded at start-up, and every write seen — in this process (admin API) or
//! through the change feed (other nodes and processes) — adds its domains before the
//! cache is invalidated. Filings are never deleted, so nothing is ever removed.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::model::host::RegistrableDomain;

pub struct FiledDomains {
    /// Copy-on-write: reads on every request are a pointer load; writes are rare
    /// (filing changes) and batched.
    set: ArcSwap<HashSet<String>>,
}

impl FiledDomains {
    pub fn new(domains: impl IntoIterator<Item = String>) -> FiledDomains {
        FiledDomains {
            set: ArcSwap::from_pointee(domains.into_iter().collect()),
        }
    }

    pub fn contains(&self, domain: &RegistrableDomain) -> bool {
        self.set.load().contains(domain.as_str())
    }

    /// Add `domains` (registrable, normalised) in one swap.
    pub fn insert_all<'a>(&self, domains: impl IntoIterator<Item = &'a str> + Clone) {
        self.set.rcu(|current| {
            let mut next = HashSet::clone(current);
            next.extend(domains.clone().into_iter().map(str::to_string));
            Arc::new(next)
        });
    }

    pub fn len(&self) -> usize {
        self.set.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    }
}
