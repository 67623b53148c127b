//! icpgate: an inline reverse proxy that enforces China's ICP filing rule, "file
//! first, then connect" (先备案、后接入).
//!
//! # The layers
//!
//! One folder per layer; imports point down only (`tests/layers.rs` fails, naming
//! file and line, on any import against the direction):
//!
//! ```text
//! app          wiring from Config, signals, reload, drain            uses everything below
//! admin        the admin API (axum): filings, decision, check, auth  uses the layers below
//! notify       webhook delivery of the registry's outbox             uses edge's connector
//! compliance   `icpgate check`: filing + DNS verdicts, output        │
//! edge         the data plane: listeners, PROXY, TLS, hyper service, │
//!              forwarding, upstream pools, block pages               │
//! gate         the rule, decision cache, filed-domain index,         │
//!              change feed, the shared GateState                     │
//! registry     the Registry trait, backends, import/export, opening  │
//! observe      metrics, process metrics, top blocked hosts           (model only)
//! config       TOML -> validated Config, errors with file:line/key   │
//! model        host names, filings and their state machine, ICP      ▼
//!              numbers, reasons, working days — pure, no I/O
//! ```
//!
//! # One request
//!
//! 1. [`edge::listener`] accepts (connection limit, slow-client deadlines), reads a
//!    PROXY header when required ([`edge::proxy_protocol`]), and on the https
//!    listener [`edge::tls`] completes the handshake only for an SNI with an
//!    approved filing; then hyper serves the connection;
//! 2. [`edge::proxy::Gate::serve`] reads the authority and [`model::host`]
//!    normalises it (400 on garbage, `ip_literal` for addresses, a public suffix is
//!    never filed);
//! 3. [`gate::GateState::verdict`] answers from the filed-domain index and the
//!    decision cache, asking the [`registry`] once per domain on a miss, and
//!    [`gate::decision::decide`] applies the rule: only an approved filing is served;
//! 4. a refusal becomes a block page in [`edge::rejection`]; an admission goes
//!    through [`edge::forward`] and [`edge::upstream`] to the product's pool,
//!    streaming both ways; metrics and the access log are written once, in `serve`.
//!
//! The [`admin`] API drives the filing lifecycle ([`model::filing`]); every write
//! reaches the gate at once through `GateState::note_writes`, and
//! [`gate::change_feed`] does the same for writes made by other nodes or processes
//! (PostgreSQL NOTIFY and registry revisions). [`notify`] delivers each change to an
//! optional webhook from a durable outbox. [`compliance`] answers `icpgate check`,
//! and [`observe::blocked_hosts`] keeps the most-blocked domains of live traffic.
//! [`app`] builds all of it from [`config`] and owns reload and shutdown.
#![forbid(unsafe_code)]

pub mod model;

pub mod config;

pub mod observe;

pub mod registry;

pub mod gate;

pub mod compliance;
pub mod edge;
pub mod notify;

pub mod admin;

pub mod app;
