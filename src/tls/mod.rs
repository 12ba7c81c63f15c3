//! TLS on rustls: certificates from Envoy's data sources (`certs`), peer SANs and SPIFFE
//! identities (`san`), and the handshake of a listener's TLS transport socket with Envoy's
//! `ssl.*` stats (`server`).

pub mod certs;
pub mod context;
pub mod san;
pub mod secret;
pub mod server;
pub mod verify;
