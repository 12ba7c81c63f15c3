//! Network (L4) filters and what they know of a connection.

pub mod connection_info;
pub mod tcp_proxy;
