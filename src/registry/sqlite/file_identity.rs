//! The identity of the SQLite file a registry opened (device and inode). A database
//! deleted or replaced while the gate runs keeps accepting writes into the unlinked
//! file, which vanish at the next start; comparing the identity before each write
//! turns that silent loss into a refused write (503) while reads keep serving.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::registry::error::StorageError;

#[derive(Debug, Clone)]
pub struct FileIdentity {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl FileIdentity {
    /// The identity of `path` now (just after it was opened).
    pub fn of(path: &Path) -> std::io::Result<FileIdentity> {
        let meta = std::fs::metadata(path)?;
        Ok(FileIdentity {
            path: path.to_path_buf(),
            device: meta.dev(),
            inode: meta.ino(),
        })
    }

    /// The path opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ok while `path` is still the file that was opened.
    pub fn check(&self) -> Result<(), StorageError> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.dev() == self.device && meta.ino() == self.inode => Ok(()),
            _ => Err(StorageError::FileReplaced {
                path: self.path.display().to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_deleted_or_replaced_is_noticed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.db");
        std::fs::write(&path, b"one").expect("write");
        let identity = FileIdentity::of(&path).expect("identity");
        // Held open as SQLite holds it, so its inode is not reused while we look.
        let _held = std::fs::File::open(&path).expect("hold the file open");
        // the same file, even rewritten in place, is the same file
        std::fs::write(&path, b"two").expect("rewrite");
        assert!(identity.check().is_ok());
        // deleted
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(
            identity.check(),
            Err(StorageError::FileReplaced { .. })
        ));
        // replaced by another file under the same name
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"three").expect("write other");
        std::fs::rename(&other, &path).expect("rename");
        assert!(matches!(
            identity.check(),
            Err(StorageError::FileReplaced { .. })
        ));
    }
}
