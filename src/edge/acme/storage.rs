//! Where the ACME account and the certificates it obtained persist: [`Storage`],
//! a directory for a single node ([`DirStorage`], `acme.storage`, owner-only) or
//! the registry for a fleet ([`super::fleet::FleetStorage`]).
//!
//! Layout: `account.json` holds the CA's directory URL and the account credentials
//! (its private key included); `certs/NAME.pem` holds one name's chain followed by
//! its private key. Every file is written to a temporary name and renamed, so a
//! crash never leaves a half-written key or certificate in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::host::HostName;

/// Why storage could not be read or written; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a stored ACME account: {source}")]
    Account {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("registry: {0}")]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Seal(#[from] super::seal::SealError),
    #[error("stored ACME account: {0}")]
    Json(#[from] serde_json::Error),
}

/// Where this node keeps its ACME state.
pub enum Storage {
    Dir(DirStorage),
    Fleet(Box<super::fleet::FleetStorage>),
}

impl Storage {
    /// The account stored for `directory`.
    pub async fn account(&self, directory: &str) -> Result<Option<StoredAccount>, StorageError> {
        match self {
            Storage::Dir(dir) => Ok(dir.account()?.filter(|a| a.directory == directory)),
            Storage::Fleet(fleet) => fleet.account(directory).await,
        }
    }

    pub async fn save_account(&self, account: &StoredAccount) -> Result<(), StorageError> {
        match self {
            Storage::Dir(dir) => dir.save_account(account),
            Storage::Fleet(fleet) => fleet.save_account(account).await,
        }
    }

    /// Certificates stored after `revision` (a directory has none: all, at 0).
    pub async fn certificates_since(
        &self,
        revision: i64,
    ) -> Result<Vec<(StoredCert, i64)>, StorageError> {
        match self {
            Storage::Dir(dir) => Ok(dir.certificates()?.into_iter().map(|c| (c, 0)).collect()),
            Storage::Fleet(fleet) => fleet.certificates_since(revision).await,
        }
    }

    /// Store `cert`; returns its revision (0 in a directory).
    pub async fn save_certificate(&self, cert: &StoredCert) -> Result<i64, StorageError> {
        match self {
            Storage::Dir(dir) => dir.save_certificate(cert).map(|()| 0),
            Storage::Fleet(fleet) => fleet.save_certificate(cert).await,
        }
    }

    /// The registry, when the fleet shares this storage.
    pub fn shared(&self) -> Option<&Arc<dyn crate::registry::AcmeStore>> {
        match self {
            Storage::Dir(_) => None,
            Storage::Fleet(fleet) => Some(&fleet.store),
        }
    }
}

/// The account as stored: which CA it belongs to, and instant-acme's credentials.
#[derive(Serialize, Deserialize)]
pub struct StoredAccount {
    pub directory: String,
    pub credentials: instant_acme::AccountCredentials,
}

/// One certificate as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCert {
    pub name: HostName,
    /// The chain, then the private key, in PEM.
    pub pem: String,
}

/// The storage directory of one node.
#[derive(Debug, Clone)]
pub struct DirStorage {
    root: PathBuf,
}

impl DirStorage {
    /// Use `root`, creating it (and `certs/`) owner-only when missing.
    pub fn open(root: &Path) -> Result<DirStorage, StorageError> {
        let storage = DirStorage {
            root: root.to_path_buf(),
        };
        create_private_dir(&storage.certs_dir())?;
        Ok(storage)
    }

    fn account_file(&self) -> PathBuf {
        self.root.join("account.json")
    }

    fn certs_dir(&self) -> PathBuf {
        self.root.join("certs")
    }

    /// The stored account, if one was ever created.
    pub fn account(&self) -> Result<Option<StoredAccount>, StorageError> {
        let path = self.account_file();
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StorageError::Io { path, source }),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| StorageError::Account { path, source })
    }

    pub fn save_account(&self, account: &StoredAccount) -> Result<(), StorageError> {
        let path = self.account_file();
        let text = serde_json::to_vec_pretty(account).map_err(|source| StorageError::Account {
            path: path.clone(),
            source,
        })?;
        write_private(&path, &text)
    }

    /// Every stored certificate whose file name is a valid host name; other files
    /// are skipped with a warning (an operator's leftovers are not ours to delete).
    pub fn certificates(&self) -> Result<Vec<StoredCert>, StorageError> {
        let dir = self.certs_dir();
        let entries = std::fs::read_dir(&dir).map_err(|source| StorageError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                continue;
            }
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let Ok(name) = HostName::parse(stem) else {
                tracing::warn!(file = %path.display(), "ACME storage: not a host name, skipped");
                continue;
            };
            let pem = std::fs::read_to_string(&path)
                .map_err(|source| StorageError::Io { path, source })?;
            out.push(StoredCert { name, pem });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn save_certificate(&self, cert: &StoredCert) -> Result<(), StorageError> {
        let path = self.certs_dir().join(format!("{}.pem", cert.name.as_str()));
        write_private(&path, cert.pem.as_bytes())
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StorageError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StorageError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// Write `bytes` to `path` owner-only, through a temporary file and a rename.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let io = |source| StorageError::Io {
        path: tmp.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_round_trip_and_strangers_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = DirStorage::open(&dir.path().join("acme")).expect("open");
        assert!(storage.account().expect("account").is_none());
        let cert = StoredCert {
            name: HostName::parse("www.shop.cn").expect("host"),
            pem: "chain and key".to_owned(),
        };
        storage.save_certificate(&cert).expect("save");
        std::fs::write(dir.path().join("acme/certs/not a host.pem"), "x").expect("write");
        std::fs::write(dir.path().join("acme/certs/notes.txt"), "x").expect("write");
        assert_eq!(storage.certificates().expect("list"), vec![cert]);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("acme/certs/www.shop.cn.pem"))
                .expect("meta")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_broken_account_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = DirStorage::open(dir.path()).expect("open");
        std::fs::write(dir.path().join("account.json"), "{").expect("write");
        let error = storage.account().err().map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("account.json")),
            "{error:?}"
        );
    }
}
