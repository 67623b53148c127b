//! Sealing the secrets the registry keeps — the filing password (备案密码) of an
//! access-existing filing — with a key from the environment
//! (`registry.secret_key_env`), so the database, its backups and its exports never
//! hold one in clear.
//!
//! Contract: [`SecretKey::seal`] answers `v1:<hex of nonce, ciphertext and tag>`,
//! AES-256-GCM under SHA-256 of the variable's value, with a fresh random nonce and
//! the filing id as associated data (a sealed value copied to another filing does
//! not open). [`SecretKey::open`] reverses it, or fails without saying more. The key
//! never leaves this module; errors name the variable, never its value.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::model::filing::FilingPassword;

/// The fewest characters the key variable's value may have.
pub const MIN_KEY_CHARS: usize = 32;

/// The version prefix of a sealed value.
const VERSION: &str = "v1:";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("registry.secret_key_env names {0}, which is not set")]
    KeyMissing(String),
    #[error("registry.secret_key_env: {0} must hold at least {MIN_KEY_CHARS} characters")]
    KeyTooShort(String),
    #[error("no random nonce could be drawn")]
    Random,
    #[error("a sealed value does not open with this key (was registry.secret_key_env changed?)")]
    Unopenable,
}

/// The key that seals and opens filing passwords.
pub struct SecretKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// The key from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<SecretKey, SecretError> {
        let value = std::env::var(var).map_err(|_| SecretError::KeyMissing(var.to_string()))?;
        if value.chars().count() < MIN_KEY_CHARS {
            return Err(SecretError::KeyTooShort(var.to_string()));
        }
        Ok(SecretKey::from_material(value.as_bytes()))
    }

    /// The key derived from `material` (SHA-256 of it).
    pub fn from_material(material: &[u8]) -> SecretKey {
        let digest: [u8; 32] = Sha256::digest(material).into();
        // A 32-byte key is exactly AES-256's length, so this cannot fail.
        let unbound = UnboundKey::new(&AES_256_GCM, &digest).unwrap_or_else(|_| unreachable!());
        SecretKey {
            key: LessSafeKey::new(unbound),
        }
    }

    /// `password` sealed for filing `filing_id`.
    pub fn seal(&self, filing_id: i64, password: &FilingPassword) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretError::Random)?;
        let mut sealed = password.expose().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(filing_id.to_be_bytes()),
                &mut sealed,
            )
            .map_err(|_| SecretError::Random)?;
        let mut out = String::from(VERSION);
        out.push_str(&hex(&nonce));
        out.push_str(&hex(&sealed));
        Ok(out)
    }

    /// The password sealed for filing `filing_id` as `sealed`.
    pub fn open(&self, filing_id: i64, sealed: &str) -> Result<FilingPassword, SecretError> {
        let bytes = sealed
            .strip_prefix(VERSION)
            .and_then(unhex)
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or(SecretError::Unopenable)?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Unopenable)?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(filing_id.to_be_bytes()), &mut buffer)
            .map_err(|_| SecretError::Unopenable)?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| SecretError::Unopenable)?;
        FilingPassword::new(text).map_err(|_| SecretError::Unopenable)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(text: &str) -> FilingPassword {
        FilingPassword::new(text.into()).unwrap()
    }

    #[test]
    fn a_sealed_password_opens_only_with_its_key_and_filing() {
        let key = SecretKey::from_material(b"k".repeat(32).as_slice());
        let sealed = key.seal(7, &password("Sekret-7781")).unwrap();
        assert!(
            sealed.starts_with("v1:") && !sealed.contains("Sekret"),
            "{sealed}"
        );
        assert_eq!(key.open(7, &sealed), Ok(password("Sekret-7781")));
        // a fresh nonce each time
        assert_ne!(key.seal(7, &password("Sekret-7781")).unwrap(), sealed);
        // another filing, another key, a damaged value: nothing opens
        assert_eq!(key.open(8, &sealed), Err(SecretError::Unopenable));
        let other = SecretKey::from_material(b"x".repeat(32).as_slice());
        assert_eq!(other.open(7, &sealed), Err(SecretError::Unopenable));
        let mut damaged = sealed.clone();
        damaged.replace_range(10..11, if &sealed[10..11] == "0" { "1" } else { "0" });
        assert_eq!(key.open(7, &damaged), Err(SecretError::Unopenable));
        for garbage in ["", "v1:", "v1:zz", "v2:00", "plain"] {
            assert_eq!(
                key.open(7, garbage),
                Err(SecretError::Unopenable),
                "{garbage}"
            );
        }
    }
}
