//! The pure model: host names and registrable domains, filings and their state
//! machine, ICP numbers, working days. No I/O; every other layer builds on it.

pub mod filing;
pub mod host;
pub mod reason;
pub mod working_days;
