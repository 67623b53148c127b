//! Session resumption for `listen.https`: the session-ID cache and the ticketer
//! every certificate's config shares, kept across certificate reloads.
//!
//! Contract: without `tls.ticket_key_file`, tickets are sealed by rustls' own
//! per-process ticketer; with it, by a [`FleetTicketer`] over that file, re-read by
//! [`Resumption::reload_ticket_keys`] on SIGHUP. TLS 1.2 session IDs stay in a
//! per-process cache either way.

use std::path::Path;
use std::sync::Arc;

use rustls::server::{
    ProducesTickets, ServerConfig, ServerSessionMemoryCache, StoresServerSessions,
};

use super::tickets::{FleetTicketer, TicketKeyError};

/// TLS 1.2 sessions kept for clients that resume by session ID (ticket-less).
const SESSION_CACHE_ENTRIES: usize = 4096;

/// Session resumption shared by every certificate's config and kept across
/// certificate reloads, so a reload (or a renewal) does not cost every client a full
/// handshake. Sharing is safe here: rustls resumes a session only for the SNI it was
/// made for, one SNI is always served by one certificate, and no config asks for
/// client certificates. A resumption is still gated: the SNI is decided from the
/// ClientHello before any config, and so any session, is chosen.
///
/// Tickets (TLS 1.3, and TLS 1.2 clients that ask) are stateless. Without
/// `tls.ticket_key_file` they are sealed by rustls' own ticketer, with keys that
/// rotate every 6 hours and live 12, per process: in a fleet a client resumes only
/// on the node that issued its ticket. With it, by a [`FleetTicketer`] over that
/// file, so any node holding the same file resumes them. TLS 1.2 session IDs
/// (clients without tickets) stay in a per-process cache either way.
#[derive(Clone)]
pub struct Resumption {
    storage: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
    /// The ticketer again when it is the fleet's, for reloads of its file.
    fleet: Option<Arc<FleetTicketer>>,
}

impl Resumption {
    /// Per-process tickets (rustls' rotating ticketer).
    pub fn new() -> Result<Resumption, rustls::Error> {
        Ok(Resumption {
            storage: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
            ticketer: rustls::crypto::ring::Ticketer::new()?,
            fleet: None,
        })
    }

    /// Tickets sealed with the keys of `tls.ticket_key_file`.
    pub fn shared_by_fleet(tickets: Arc<FleetTicketer>) -> Resumption {
        Resumption {
            storage: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
            ticketer: Arc::clone(&tickets) as Arc<dyn ProducesTickets>,
            fleet: Some(tickets),
        }
    }

    /// `shared_by_fleet` over `ticket_key_file` when set, else `new`. A bad key
    /// file is an error naming it.
    pub fn from_ticket_key_file(
        ticket_key_file: Option<&Path>,
    ) -> Result<Resumption, ResumptionError> {
        match ticket_key_file {
            Some(file) => {
                let tickets = FleetTicketer::open(file)?;
                tracing::info!(file = %file.display(), "TLS session tickets sealed with tls.ticket_key_file");
                Ok(Resumption::shared_by_fleet(Arc::new(tickets)))
            }
            None => Ok(Resumption::new()?),
        }
    }

    /// Make `config` resume through this.
    pub(crate) fn apply_to(&self, config: &mut ServerConfig) {
        config.session_storage = Arc::clone(&self.storage);
        config.ticketer = Arc::clone(&self.ticketer);
    }

    /// Re-read `tls.ticket_key_file` (SIGHUP): a new key seals from now on, the
    /// one it replaces still opens for one ticket lifetime. On error (logged) the
    /// keys in force stay. Without the file there is nothing to reload.
    pub fn reload_ticket_keys(&self) -> Result<(), TicketKeyError> {
        let Some(tickets) = &self.fleet else {
            return Ok(());
        };
        match tickets.reload() {
            Ok(true) => {
                tracing::info!(file = %tickets.file().display(), "TLS ticket key rotated; the previous key still opens tickets for one lifetime");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(error) => {
                tracing::error!(%error, "TLS ticket key reload refused: the keys in force stay");
                Err(error)
            }
        }
    }
}

/// Why session resumption cannot be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum ResumptionError {
    #[error(transparent)]
    TicketKey(#[from] TicketKeyError),
    #[error("TLS session tickets cannot be set up: {0}")]
    Ticketer(#[from] rustls::Error),
}

impl std::fmt::Debug for Resumption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resumption").finish_non_exhaustive()
    }
}
