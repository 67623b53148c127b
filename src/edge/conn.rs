//! What one connection knows about its client, fixed for the connection's life, and
//! the two addresses a connection has: the TCP peer (perhaps a load balancer) and
//! the client (the PROXY header's source when one is required, else the peer).
//! Distinct types, so one cannot be passed where the other is meant: trust
//! decisions (`listen.proxy_protocol_from`) read the peer, logs and forwarding
//! headers the client.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::model::host::{HostName, RegistrableDomain};

/// The address the TCP connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The address of the client the connection speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl PeerAddr {
    pub fn ip(&self) -> IpAddr {
        self.0.ip()
    }

    /// The peer speaks for itself: no PROXY header names another client.
    pub fn as_client(self) -> ClientAddr {
        ClientAddr(self.0)
    }
}

impl ClientAddr {
    pub fn ip(&self) -> IpAddr {
        self.0.ip()
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What one connection knows about its client, fixed for the connection's life.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address (from the PROXY header when one was required).
    pub client: ClientAddr,
    /// The SNI of a TLS connection, and its registrable domain.
    pub tls: Option<TlsInfo>,
}

#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub sni: HostName,
    pub sni_domain: Option<RegistrableDomain>,
}

impl ConnInfo {
    pub fn proto(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}
