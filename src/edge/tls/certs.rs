//! The certificate set served on `listen.https`, loaded from `tls.certs_dir`.
//!
//! Contract:
//! - A certificate is a PEM pair `NAME.crt` + `NAME.key`, or one `NAME.pem` holding
//!   the chain and the key. Other files in the directory are ignored.
//! - The names a certificate serves come from its subjectAltName DNS entries
//!   (wildcards `*.example.com` cover exactly one more label), never from file names.
//!   An exact name wins over a wildcard; between two files naming the same host, the
//!   first file in name order wins (and the overlap is logged).
//! - A set is all or nothing: any broken file (unreadable, bad PEM, no key, a key
//!   that does not match its certificate, no DNS names) fails the load with an error
//!   naming that file, and [`CertStore::reload`] keeps the previous set.
//! - The set is held in an `ArcSwap`: a reload never touches open connections.
//! - [`CertStore::watch`] polls the directory's names, sizes and mtimes every few
//!   seconds and reloads on a change (no inotify dependency).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::ServerConfig;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use super::Resumption;
use crate::model::host::HostName;

/// Why a certificate directory could not be loaded; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read certificate directory {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: invalid PEM: {source}")]
    Pem {
        file: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{file}: no certificate in the file")]
    NoCertificate { file: PathBuf },
    #[error("{file}: no private key in the file")]
    NoKey { file: PathBuf },
    #[error("{file}: no matching {expected} file beside it")]
    Unpaired {
        file: PathBuf,
        expected: &'static str,
    },
    #[error("{file}: both NAME.pem and NAME.crt/NAME.key exist; keep one form")]
    Ambiguous { file: PathBuf },
    #[error("{file}: certificate cannot be parsed: {source:?}")]
    Certificate {
        file: PathBuf,
        source: webpki::Error,
    },
    #[error("{file}: the private key is unusable or does not match the certificate: {source}")]
    Key {
        file: PathBuf,
        source: rustls::Error,
    },
    #[error("{file}: the certificate names no DNS host in subjectAltName")]
    NoNames { file: PathBuf },
}

/// One loaded certificate, ready to answer a handshake.
#[derive(Debug)]
pub struct Served {
    /// The TLS config offering exactly this certificate (ALPN, versions set).
    pub config: Arc<ServerConfig>,
    /// The file it came from, for logs.
    pub file: PathBuf,
}

/// The certificates of one load of the directory, indexed by the names they serve.
#[derive(Debug, Default)]
pub struct CertSet {
    exact: HashMap<HostName, Arc<Served>>,
    /// Keyed by the parent of the wildcard: `*.example.com` → `example.com`.
    wildcard: HashMap<HostName, Arc<Served>>,
    files: usize,
}

impl CertSet {
    /// The certificate covering `host`, if any.
    pub fn find(&self, host: &HostName) -> Option<Arc<Served>> {
        if let Some(served) = self.exact.get(host) {
            return Some(Arc::clone(served));
        }
        let (_, parent) = host.as_str().split_once('.')?;
        let parent = HostName::parse(parent).ok()?;
        self.wildcard.get(&parent).map(Arc::clone)
    }

    /// How many certificates the set holds.
    pub fn len(&self) -> usize {
        self.files
    }

    pub fn is_empty(&self) -> bool {
        self.files == 0
    }

    /// Load every certificate in `dir`; the first broken file fails the whole load.
    pub(crate) fn load(dir: &Path, resumption: &Resumption) -> Result<CertSet, CertError> {
        let mut set = CertSet::default();
        for source in sources(dir)? {
            let (key, names) = source.load()?;
            let config =
                super::server_config(Arc::new(key), resumption).map_err(|e| CertError::Key {
                    file: source.cert.clone(),
                    source: e,
                })?;
            let served = Arc::new(Served {
                config,
                file: source.cert.clone(),
            });
            for name in names {
                set.insert(name, &served);
            }
            set.files += 1;
        }
        Ok(set)
    }

    fn insert(&mut self, name: SanName, served: &Arc<Served>) {
        let (map, host) = match name {
            SanName::Exact(host) => (&mut self.exact, host),
            SanName::Wildcard(parent) => (&mut self.wildcard, parent),
        };
        if let Some(first) = map.get(&host) {
            tracing::warn!(name = %host.as_str(), kept = %first.file.display(), ignored = %served.file.display(), "two certificates name the same host");
            return;
        }
        map.insert(host, Arc::clone(served));
    }
}

/// A name from a certificate's subjectAltName.
enum SanName {
    Exact(HostName),
    /// `*.parent`: covers one label under `parent`.
    Wildcard(HostName),
}

/// One certificate's files: the chain's file and the key's (the same for `.pem`).
struct Source {
    cert: PathBuf,
    key: PathBuf,
}

impl Source {
    fn load(&self) -> Result<(CertifiedKey, Vec<SanName>), CertError> {
        let cert_pem = read(&self.cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| CertError::Pem {
                file: self.cert.clone(),
                source,
            })?;
        let Some(leaf) = chain.first() else {
            return Err(CertError::NoCertificate {
                file: self.cert.clone(),
            });
        };
        let names = san_names(leaf).map_err(|source| CertError::Certificate {
            file: self.cert.clone(),
            source,
        })?;
        if names.is_empty() {
            return Err(CertError::NoNames {
                file: self.cert.clone(),
            });
        }
        let key_pem = if self.key == self.cert {
            cert_pem
        } else {
            read(&self.key)?
        };
        let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
            Ok(key) => key,
            Err(rustls_pki_types::pem::Error::NoItemsFound) => {
                return Err(CertError::NoKey {
                    file: self.key.clone(),
                })
            }
            Err(source) => {
                return Err(CertError::Pem {
                    file: self.key.clone(),
                    source,
                })
            }
        };
        let certified =
            CertifiedKey::from_der(chain, key, &super::provider()).map_err(|source| {
                CertError::Key {
                    file: self.key.clone(),
                    source,
                }
            })?;
        Ok((certified, names))
    }
}

fn read(file: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(file).map_err(|source| CertError::Read {
        file: file.to_path_buf(),
        source,
    })
}

/// The DNS names of a certificate's subjectAltName, normalised.
fn san_names(leaf: &CertificateDer<'_>) -> Result<Vec<SanName>, webpki::Error> {
    let cert = webpki::EndEntityCert::try_from(leaf)?;
    let names = cert
        .valid_dns_names()
        .filter_map(|name| match name.strip_prefix("*.") {
            Some(parent) => HostName::parse(parent).ok().map(SanName::Wildcard),
            None => HostName::parse(name).ok().map(SanName::Exact),
        })
        .collect();
    Ok(names)
}

/// The certificate sources in `dir`, in file-name order.
fn sources(dir: &Path) -> Result<Vec<Source>, CertError> {
    #[derive(Default)]
    struct Files {
        crt: Option<PathBuf>,
        key: Option<PathBuf>,
        pem: Option<PathBuf>,
    }
    let entries = std::fs::read_dir(dir).map_err(|source| CertError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut by_stem: BTreeMap<String, Files> = BTreeMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else {
            continue;
        };
        let files = by_stem
            .entry(stem.to_string_lossy().into_owned())
            .or_default();
        match ext.to_str() {
            Some("crt") => files.crt = Some(path),
            Some("key") => files.key = Some(path),
            Some("pem") => files.pem = Some(path),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for files in by_stem.into_values() {
        let source = match files {
            Files {
                pem: Some(pem),
                crt: None,
                key: None,
            } => Source {
                cert: pem.clone(),
                key: pem,
            },
            Files { pem: Some(pem), .. } => return Err(CertError::Ambiguous { file: pem }),
            Files {
                crt: Some(cert),
                key: Some(key),
                ..
            } => Source { cert, key },
            Files {
                crt: Some(file), ..
            } => {
                return Err(CertError::Unpaired {
                    file,
                    expected: ".key",
                })
            }
            Files {
                key: Some(file), ..
            } => {
                return Err(CertError::Unpaired {
                    file,
                    expected: ".crt",
                })
            }
            Files { .. } => continue,
        };
        out.push(source);
    }
    Ok(out)
}

/// What the watcher compares: each file's name, size and mtime.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(dir: &Path) -> Fingerprint {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Fingerprint = entries
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            Some((entry.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    out.sort();
    out
}

/// The live certificate set of the https listener.
pub struct CertStore {
    dir: PathBuf,
    current: ArcSwap<CertSet>,
    /// Outlives every reload, so sessions do too.
    resumption: Resumption,
    /// The directory as last loaded (or last tried), so the watcher reloads once
    /// per change and a broken file is reported once, not every poll.
    seen: Mutex<Fingerprint>,
}

impl CertStore {
    /// Load `dir`, every certificate resuming sessions through `resumption`; at
    /// start-up a broken file is an error (nothing to fall back to).
    pub fn open(dir: &Path, resumption: Resumption) -> Result<CertStore, CertError> {
        let seen = fingerprint(dir);
        let set = CertSet::load(dir, &resumption)?;
        if set.is_empty() {
            tracing::warn!(dir = %dir.display(), "no certificates: every TLS handshake will be refused");
        }
        tracing::info!(dir = %dir.display(), certificates = set.len(), "certificates loaded");
        Ok(CertStore {
            dir: dir.to_path_buf(),
            current: ArcSwap::from_pointee(set),
            resumption,
            seen: Mutex::new(seen),
        })
    }

    /// The session resumption every certificate of the store shares (ACME's
    /// certificates share it too).
    pub fn resumption(&self) -> &Resumption {
        &self.resumption
    }

    /// The certificate covering `host` in the current set.
    pub fn find(&self, host: &HostName) -> Option<Arc<Served>> {
        self.current.load().find(host)
    }

    /// Re-read the directory and swap the new set in; on error the previous set
    /// stays in force and the error (naming the file) is logged and returned.
    pub fn reload(&self) -> Result<usize, CertError> {
        let seen = fingerprint(&self.dir);
        if let Ok(mut last) = self.seen.lock() {
            *last = seen;
        }
        match CertSet::load(&self.dir, &self.resumption) {
            Ok(set) => {
                let count = set.len();
                self.current.store(Arc::new(set));
                tracing::info!(dir = %self.dir.display(), certificates = count, "certificates reloaded");
                Ok(count)
            }
            Err(error) => {
                tracing::error!(%error, "certificate reload refused: the previous certificates stay in force");
                Err(error)
            }
        }
    }

    /// Reload whenever the directory changes, polling every `every`, until `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
            }
            let now = fingerprint(&self.dir);
            let changed = self.seen.lock().map(|last| *last != now).unwrap_or(true);
            if changed {
                let _ = self.reload();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resumption() -> Resumption {
        Resumption::new().expect("ticketer")
    }

    fn write_self_signed(dir: &Path, name: &str, sans: &[&str]) {
        let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let Ok(issued) = rcgen::generate_simple_self_signed(names) else {
            panic!("rcgen failed");
        };
        let pem = format!(
            "{}{}",
            issued.cert.pem(),
            issued.signing_key.serialize_pem()
        );
        std::fs::write(dir.join(format!("{name}.pem")), pem).expect("write pem");
    }

    #[test]
    fn names_come_from_sans_with_one_label_wildcards() {
        crate::edge::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        write_self_signed(dir.path(), "a", &["example.com", "*.example.com"]);
        write_self_signed(dir.path(), "b", &["deep.shop.example.com"]);
        write_self_signed(dir.path(), "c", &["xn--fsqu00a.xn--fiqs8s"]);
        let set = CertSet::load(dir.path(), &resumption()).expect("load");
        assert_eq!(set.len(), 3);
        // host, the file expected to serve it (None: no certificate).
        let cases = [
            ("example.com", Some("a.pem")),
            ("shop.example.com", Some("a.pem")),      // wildcard
            ("deep.shop.example.com", Some("b.pem")), // exact beats nothing
            ("x.y.example.com", None),                // a wildcard covers one label
            ("badexample.com", None),                 // not a suffix match
            ("example.org", None),
            ("xn--fsqu00a.xn--fiqs8s", Some("c.pem")), // IDN SANs are punycode
            ("a", None),                               // nothing to strip
        ];
        for (host, expected) in cases {
            let host = HostName::parse(host).expect("host");
            let got = set.find(&host).map(|s| {
                s.file
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            assert_eq!(got.as_deref(), expected, "{}", host.as_str());
        }
    }

    #[test]
    fn file_names_do_not_grant_names() {
        crate::edge::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        write_self_signed(dir.path(), "example.com", &["other.net"]);
        let set = CertSet::load(dir.path(), &resumption()).expect("load");
        assert!(set
            .find(&HostName::parse("example.com").expect("host"))
            .is_none());
        assert!(set
            .find(&HostName::parse("other.net").expect("host"))
            .is_some());
    }

    #[test]
    fn other_files_are_ignored_and_an_empty_dir_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("README"), "notes").expect("write");
        std::fs::write(dir.path().join("serial.srl"), "01").expect("write");
        let set = CertSet::load(dir.path(), &resumption()).expect("load");
        assert!(set.is_empty());
    }
}
