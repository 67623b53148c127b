//! The data plane: listeners and connections, PROXY protocol, client deadlines, TLS
//! gated by SNI, the hyper service, forwarding, upstream pools and block pages.

pub mod acme;
mod block_page;
pub mod client_deadlines;
pub mod conn;
pub mod forward;
pub mod listener;
pub mod proxy;
pub mod proxy_body;
pub mod proxy_protocol;
pub mod rejection;
pub mod request_id;
pub mod reset_rate;
pub mod tls;
pub mod tunnel;
pub mod upstream;
