//! Sealing what a fleet stores in the registry: AES-256-GCM with a key every node
//! reads from its environment (or a file), so the database alone never reveals an
//! account or certificate private key. Each record is bound to what it is (its
//! name, as associated data): a sealed record moved to another row does not open.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// The shortest secret accepted (characters): a passphrase, or 32 random bytes
/// in hex or base64.
pub const MIN_SECRET_CHARS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the storage key has {0} characters; at least {MIN_SECRET_CHARS} are needed")]
    ShortSecret(usize),
    #[error("a stored record does not open with this storage key (another key, or altered)")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// Seals and opens records with one key.
pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl Sealer {
    /// The sealer for `secret` (trimmed), whose SHA-256 is the AES key.
    pub fn from_secret(secret: &str) -> Result<Sealer, SealError> {
        let secret = secret.trim();
        if secret.chars().count() < MIN_SECRET_CHARS {
            return Err(SealError::ShortSecret(secret.chars().count()));
        }
        let digest = Sha256::digest(secret.as_bytes());
        let key = UnboundKey::new(&AES_256_GCM, &digest).map_err(|_| SealError::Seal)?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }

    /// `plain` sealed for the record `what`: a random nonce, then the ciphertext
    /// and its tag.
    pub fn seal(&self, what: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| SealError::Seal)?;
        let mut data = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(what.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(out)
    }

    pub fn open(&self, what: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(what.as_bytes()), &mut data)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_sealed_record_opens_only_as_itself_with_its_key() {
        let sealer = Sealer::from_secret(SECRET).expect("sealer");
        let sealed = sealer.seal("cert:shop.cn", b"private key").expect("seal");
        assert!(
            !sealed.windows(11).any(|w| w == b"private key"),
            "not in the clear"
        );
        let other = Sealer::from_secret(&SECRET.replace('0', "1")).expect("sealer");
        let mut flipped = sealed.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        // record, sealer, opens
        let cases = [
            ("cert:shop.cn", &sealer, &sealed, true),
            ("cert:www.shop.cn", &sealer, &sealed, false), // moved to another row
            ("cert:shop.cn", &other, &sealed, false),      // another key
            ("cert:shop.cn", &sealer, &flipped, false),    // altered
        ];
        for (what, sealer, sealed, opens) in cases {
            let opened = sealer.open(what, sealed);
            assert_eq!(opened.is_ok(), opens, "{what}");
        }
        assert_eq!(
            sealer.open("cert:shop.cn", &sealed).ok().as_deref(),
            Some(b"private key".as_slice())
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            Sealer::from_secret("  short  "),
            Err(SealError::ShortSecret(5))
        ));
    }
}
