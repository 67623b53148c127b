//! Session-ticket keys a fleet shares: `tls.ticket_key_file`, so a client resumes
//! on whichever node the load balancer picks.
//!
//! Contract:
//! - The file holds exactly 48 bytes (e.g. `head -c 48 /dev/urandom`): bytes 0..16
//!   are the key's name, bytes 16..48 its AES-256-GCM key. Anything else (missing,
//!   unreadable, another length) is a [`TicketKeyError`] naming the file and the key.
//! - A ticket is `name (16) || nonce (12, random) || AES-256-GCM(session) || tag (16)`;
//!   the name is authenticated too (it is the AAD). The name tells which key sealed
//!   a ticket, so a ticket from another key is refused without trying to open it.
//! - [`FleetTicketer::reload`] re-reads the file. New bytes become the key that
//!   seals from then on; the key they replace still opens tickets for one ticket
//!   lifetime ([`TICKET_LIFETIME`]), then is dropped. The same bytes change nothing;
//!   a bad file is refused and the keys in force stay.
//! - Opening is panic-free on any input: a ticket that is too short or too long,
//!   under a name no live key has, or that fails authentication opens to `None`,
//!   and rustls falls back to a full handshake.
//!
//! Forward secrecy of resumed sessions is bounded by how often the file is
//! rotated: a key kept for a month opens a month of tickets.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// Length of a ticket key's name, at the front of the file and of every ticket.
pub const KEY_NAME_LEN: usize = 16;
/// Length of the AES-256-GCM key that follows the name in the file.
pub const KEY_LEN: usize = 32;
/// The exact size of `tls.ticket_key_file`.
pub const TICKET_KEY_FILE_LEN: usize = KEY_NAME_LEN + KEY_LEN;

/// How long a ticket is good for (the hint clients get), and how long a replaced
/// key still opens tickets: the same 12 hours as rustls' own ticketer.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

const TAG_LEN: usize = 16;
/// A session state is a few hundred bytes; a longer "ticket" is refused before
/// any decryption (no partitioning-oracle games with huge inputs).
const MAX_SEALED_LEN: usize = 4096;

/// Why `tls.ticket_key_file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TicketKeyError {
    #[error("tls.ticket_key_file {file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "tls.ticket_key_file {file}: holds {len} bytes, expected exactly 48 \
         (16-byte key name + 32-byte AES-256-GCM key; make one with `head -c 48 /dev/urandom`)"
    )]
    Length { file: PathBuf, len: u64 },
    #[error("tls.ticket_key_file {file}: the key is refused by AES-256-GCM")]
    Key { file: PathBuf },
}

/// One ticket key: the name tickets carry and the sealing key.
struct TicketKey {
    name: [u8; KEY_NAME_LEN],
    sealing: LessSafeKey,
    /// The file's bytes, hashed: a reload with the same bytes is no rotation.
    fingerprint: ring::digest::Digest,
}

impl TicketKey {
    fn from_bytes(bytes: &[u8; TICKET_KEY_FILE_LEN], file: &Path) -> Result<Self, TicketKeyError> {
        let (name, key) = bytes.split_at(KEY_NAME_LEN);
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| TicketKeyError::Key {
            file: file.to_path_buf(),
        })?;
        let mut key_name = [0u8; KEY_NAME_LEN];
        key_name.copy_from_slice(name);
        Ok(TicketKey {
            name: key_name,
            sealing: LessSafeKey::new(unbound),
            fingerprint: ring::digest::digest(&ring::digest::SHA256, bytes),
        })
    }

    fn read(file: &Path) -> Result<Self, TicketKeyError> {
        let read_error = |source| TicketKeyError::Read {
            file: file.to_path_buf(),
            source,
        };
        let opened = std::fs::File::open(file).map_err(read_error)?;
        let mut bytes = Vec::with_capacity(TICKET_KEY_FILE_LEN + 1);
        // One byte more than a key tells a long file without reading all of it.
        opened
            .take(TICKET_KEY_FILE_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        let Ok(exact) = <[u8; TICKET_KEY_FILE_LEN]>::try_from(bytes.as_slice()) else {
            let len = std::fs::metadata(file).map_or(bytes.len() as u64, |m| m.len());
            return Err(TicketKeyError::Length {
                file: file.to_path_buf(),
                len,
            });
        };
        TicketKey::from_bytes(&exact, file)
    }

    fn same_bytes(&self, other: &TicketKey) -> bool {
        self.fingerprint.as_ref() == other.fingerprint.as_ref()
    }
}

/// A replaced key, still opening tickets until `until`.
#[derive(Clone)]
struct Retired {
    key: Arc<TicketKey>,
    until: Instant,
}

/// The keys in force: one seals, the retired ones only open.
#[derive(Clone)]
struct Keys {
    current: Arc<TicketKey>,
    retired: Vec<Retired>,
}

/// rustls' ticketer over the keys of `tls.ticket_key_file`; see the module contract.
pub struct FleetTicketer {
    file: PathBuf,
    keys: ArcSwap<Keys>,
    /// Serialises reloads, so two at once cannot retire the same key twice.
    reloading: Mutex<()>,
    random: SystemRandom,
}

impl FleetTicketer {
    /// Read the key file; at start-up a bad file is an error (nothing to fall back to).
    pub fn open(file: &Path) -> Result<FleetTicketer, TicketKeyError> {
        let current = Arc::new(TicketKey::read(file)?);
        warn_if_readable_by_others(file);
        Ok(FleetTicketer {
            file: file.to_path_buf(),
            keys: ArcSwap::from_pointee(Keys {
                current,
                retired: Vec::new(),
            }),
            reloading: Mutex::new(()),
            random: SystemRandom::new(),
        })
    }

    /// The key file this ticketer reads.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Re-read the file: Ok(true) when it held a new key (now sealing), Ok(false)
    /// when it held the key in force. On error the keys in force stay.
    pub fn reload(&self) -> Result<bool, TicketKeyError> {
        let next = TicketKey::read(&self.file)?;
        Ok(self.rotate_at(next, Instant::now()))
    }

    fn rotate_at(&self, next: TicketKey, now: Instant) -> bool {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let keys = self.keys.load_full();
        if keys.current.same_bytes(&next) {
            return false;
        }
        let next = Arc::new(next);
        let mut retired: Vec<Retired> = keys
            .retired
            .iter()
            .filter(|old| old.until > now && !old.key.same_bytes(&next))
            .cloned()
            .collect();
        retired.push(Retired {
            key: Arc::clone(&keys.current),
            until: now + TICKET_LIFETIME,
        });
        self.keys.store(Arc::new(Keys {
            current: next,
            retired,
        }));
        true
    }

    fn seal(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let overhead = KEY_NAME_LEN + NONCE_LEN + TAG_LEN;
        if plain.len() + overhead > MAX_SEALED_LEN {
            return None;
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let keys = self.keys.load();
        let key = &keys.current;
        let mut ticket = Vec::with_capacity(plain.len() + overhead);
        ticket.extend_from_slice(&key.name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        let tag = key
            .sealing
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.name),
                &mut ticket[KEY_NAME_LEN + NONCE_LEN..],
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    fn open_at(&self, ticket: &[u8], now: Instant) -> Option<Vec<u8>> {
        if ticket.len() < KEY_NAME_LEN + NONCE_LEN + TAG_LEN || ticket.len() > MAX_SEALED_LEN {
            return None;
        }
        let (name, rest) = ticket.split_at(KEY_NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let keys = self.keys.load();
        let live = std::iter::once(&keys.current).chain(
            keys.retired
                .iter()
                .filter(|old| old.until > now)
                .map(|old| &old.key),
        );
        // Usually one key has the name; two only if an operator reused a name.
        live.filter(|key| key.name == name).find_map(|key| {
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            let mut buffer = sealed.to_vec();
            let plain = key
                .sealing
                .open_in_place(nonce, Aad::from(key.name), &mut buffer)
                .ok()?
                .len();
            buffer.truncate(plain);
            Some(buffer)
        })
    }
}

impl ProducesTickets for FleetTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME.as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open_at(cipher, Instant::now())
    }
}

impl std::fmt::Debug for FleetTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetTicketer")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// The key opens every session it sealed: say so when others may read it.
fn warn_if_readable_by_others(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(file) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %file.display(), "tls.ticket_key_file is readable by group or others; chmod 0600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, name: &str, fill: u8) -> PathBuf {
        let path = dir.join(name);
        let mut bytes = [fill; TICKET_KEY_FILE_LEN];
        bytes[0] = fill.wrapping_add(1); // the name differs from the key bytes
        std::fs::write(&path, bytes).expect("write key file");
        path
    }

    fn ticketer(fill: u8) -> (tempfile::TempDir, FleetTicketer) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = key_file(dir.path(), "ticket.key", fill);
        let ticketer = FleetTicketer::open(&file).expect("open");
        (dir, ticketer)
    }

    #[test]
    fn a_sealed_ticket_opens_to_what_was_sealed() {
        let (_dir, ticketer) = ticketer(7);
        for plain in [&b""[..], b"x", &[0xA5; 600]] {
            let ticket = ticketer.encrypt(plain).expect("sealed");
            assert_eq!(
                ticket.len(),
                plain.len() + KEY_NAME_LEN + NONCE_LEN + TAG_LEN
            );
            assert_eq!(ticketer.decrypt(&ticket).as_deref(), Some(plain));
        }
        // Random nonces: the same state never seals to the same ticket.
        assert_ne!(ticketer.encrypt(b"s"), ticketer.encrypt(b"s"));
    }

    #[test]
    fn another_node_with_the_same_file_opens_the_ticket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = key_file(dir.path(), "ticket.key", 3);
        let a = FleetTicketer::open(&file).expect("a");
        let b = FleetTicketer::open(&file).expect("b");
        let ticket = a.encrypt(b"session").expect("sealed");
        assert_eq!(b.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
    }

    #[test]
    fn forged_and_foreign_tickets_are_refused() {
        let (_dir, ticketer) = ticketer(1);
        let (_other_dir, other) = ticketer_with_other_key();
        let ticket = ticketer.encrypt(b"session state").expect("sealed");
        let flip = |at: usize| {
            let mut t = ticket.clone();
            t[at] ^= 0x01;
            t
        };
        let last = ticket.len() - 1;
        // case, ticket
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unknown key name", flip(0)),
            ("tampered nonce", flip(KEY_NAME_LEN)),
            ("tampered ciphertext", flip(KEY_NAME_LEN + NONCE_LEN)),
            ("tampered tag", flip(last)),
            ("truncated", ticket[..last].to_vec()),
            (
                "shorter than any ticket",
                ticket[..KEY_NAME_LEN + NONCE_LEN].to_vec(),
            ),
            ("empty", Vec::new()),
            ("oversized", vec![0; MAX_SEALED_LEN + 1]),
            (
                "sealed under another key",
                other.encrypt(b"session state").expect("sealed"),
            ),
        ];
        for (case, forged) in cases {
            assert_eq!(ticketer.decrypt(&forged), None, "{case}");
        }
        assert!(
            ticketer.decrypt(&ticket).is_some(),
            "the genuine ticket opens"
        );
    }

    fn ticketer_with_other_key() -> (tempfile::TempDir, FleetTicketer) {
        ticketer(200)
    }

    #[test]
    fn a_rotated_out_key_opens_for_one_lifetime_then_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = key_file(dir.path(), "ticket.key", 10);
        let ticketer = FleetTicketer::open(&file).expect("open");
        let old_ticket = ticketer.encrypt(b"old").expect("sealed");

        let now = Instant::now();
        let same = TicketKey::read(&file).expect("read");
        assert!(!ticketer.rotate_at(same, now), "the same bytes rotated");
        key_file(dir.path(), "ticket.key", 20);
        let next = TicketKey::read(&file).expect("read");
        assert!(ticketer.rotate_at(next, now), "new bytes did not rotate");

        let new_ticket = ticketer.encrypt(b"new").expect("sealed");
        assert_ne!(new_ticket[..KEY_NAME_LEN], old_ticket[..KEY_NAME_LEN]);
        let within = now + TICKET_LIFETIME - Duration::from_secs(1);
        let after = now + TICKET_LIFETIME + Duration::from_secs(1);
        assert_eq!(
            ticketer.open_at(&old_ticket, within).as_deref(),
            Some(&b"old"[..])
        );
        assert_eq!(ticketer.open_at(&old_ticket, after), None);
        assert_eq!(
            ticketer.open_at(&new_ticket, after).as_deref(),
            Some(&b"new"[..])
        );
    }

    #[test]
    fn a_bad_file_names_itself_and_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let short = dir.path().join("short.key");
        std::fs::write(&short, [1u8; 47]).expect("write");
        let long = dir.path().join("long.key");
        std::fs::write(&long, [1u8; 4096]).expect("write");
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, b"").expect("write");
        // file, what the message must say
        let cases = [
            (short, "holds 47 bytes"),
            (long, "holds 4096 bytes"),
            (empty, "holds 0 bytes"),
            (dir.path().join("missing.key"), "cannot read"),
            (dir.path().to_path_buf(), "cannot read"), // a directory
        ];
        for (file, says) in cases {
            let Err(error) = FleetTicketer::open(&file) else {
                panic!("{} accepted", file.display());
            };
            let text = error.to_string();
            assert!(text.contains("tls.ticket_key_file"), "{text}");
            assert!(text.contains(&file.display().to_string()), "{text}");
            assert!(text.contains(says), "{text}");
        }
    }

    #[test]
    fn a_refused_reload_keeps_the_key_in_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = key_file(dir.path(), "ticket.key", 30);
        let ticketer = FleetTicketer::open(&file).expect("open");
        let ticket = ticketer.encrypt(b"kept").expect("sealed");
        std::fs::write(&file, [9u8; 12]).expect("truncate");
        assert!(ticketer.reload().is_err());
        assert_eq!(ticketer.decrypt(&ticket).as_deref(), Some(&b"kept"[..]));
        let again = ticketer.encrypt(b"still").expect("sealed");
        assert_eq!(
            again[..KEY_NAME_LEN],
            ticket[..KEY_NAME_LEN],
            "sealing key changed"
        );
    }
}
