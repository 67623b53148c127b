//! icpgate: an inline reverse proxy that enforces China's ICP filing rule, "file
//! first, then connect" (先备案、后接入).
//!
//! One request's path through the crate:
//!
//! 1. `listener` accepts (connection limit, slow-client deadlines), reads a PROXY
//!    header when required (`proxy_protocol`), and on the https listener `tls`
//!    completes the handshake only for an SNI with an approved filing; then hyper;
//! 2. `proxy::Gate::serve` reads the authority and `host` normalises it (400 on
//!    garbage, `ip_literal` for addresses, a public suffix is never filed);
//! 3. `decision_cache` answers from memory or asks the `registry` once per domain;
//! 4. `decision::decide` applies the rule: only an approved filing is served;
//! 5. a refusal becomes a block page in `rejection`; an admission goes through
//!    `forward` and `upstream` to the product's pool, streaming both ways.
//!
//! The `admin` API drives the filing lifecycle (`filing`) and every write
//! invalidates the cache, so the gate follows the registry at once; `change_feed`
//! does the same for writes made by other nodes or processes (PostgreSQL NOTIFY and
//! registry revisions); `notify` delivers each change to an optional webhook from a
//! durable outbox. `compliance` answers `icpgate check`, and `blocked_hosts` keeps
//! the most-blocked domains of live traffic. `app` builds all of it from `config`
//! and owns reload and shutdown.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod compliance;
pub mod config;
pub mod edge;
pub mod gate;
pub mod model;
pub mod notify;
pub mod observe;
pub mod registry;
