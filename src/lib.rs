//! icpgate: an inline reverse proxy that enforces "file first, then connect"
//! (先备案、后接入). See README.md for the architecture and one request's path.
#![forbid(unsafe_code)]

pub mod config;
pub mod decision;
pub mod filing;
pub mod host;
pub mod rejection;
