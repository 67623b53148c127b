//! Shared test fixtures, one file per role; `use common::*;` brings in all but TLS.
//!
//! - `origin`: in-process origins (an echo server, a refusing address);
//! - `seed`: registry seed lines and admin submissions;
//! - `gate`: `TestGate`, the gate started in this process, and its config text;
//! - `process`: the real `icpgate` binary as a child process;
//! - `client`: HTTP/1.1, HTTP/2 and raw clients, and the `Reply` they return;
//! - `console`: the review console's forms and session cookie;
//! - `dns` (used as `common::dns::*`): a DNS responder on loopback;
//! - `metrics`: reading `/metrics` samples;
//! - `pg`: a throwaway PostgreSQL database;
//! - `wait`: the one polling loop;
//! - `tools`: skipping locally, failing under CI, when something is missing;
//! - `pebble` (used as `common::pebble::*`): the ACME test CA on loopback;
//! - `ari` (used as `common::ari::*`): renewal information (RFC 9773) for Pebble;
//! - `tls` (used as `common::tls::*`): a test CA, TLS clients and requests.
#![allow(dead_code)]

pub mod ari;
pub mod client;
pub mod console;
pub mod dns;
pub mod gate;
pub mod metrics;
pub mod origin;
pub mod pebble;
pub mod pg;
pub mod process;
pub mod seed;
pub mod tls;
pub mod tools;
pub mod wait;

// Each test binary uses some of these; the rest would warn as unused.
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use console::*;
#[allow(unused_imports)]
pub use gate::*;
#[allow(unused_imports)]
pub use metrics::*;
#[allow(unused_imports)]
pub use origin::*;
#[allow(unused_imports)]
pub use pg::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use seed::*;
#[allow(unused_imports)]
pub use tools::*;
#[allow(unused_imports)]
pub use wait::*;
