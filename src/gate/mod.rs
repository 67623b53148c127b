//! The decision: the pure rule, the decision cache in front of the registry, the
//! filed-domain index the TLS handshake consults, and the change feed that keeps
//! them in step with writes made anywhere.

pub mod change_feed;
pub mod decision;
pub mod decision_cache;
pub mod filed_domains;
pub mod gauges;
pub mod state;

pub use state::{GateState, HostVerdict, Verdict};
