//! The addresses of a downstream connection as filters see them (Envoy's connection info
//! provider): the local address is the original destination once the original_dst listener
//! filter restored it.

use std::net::SocketAddr;

/// A downstream connection's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The local address: the original destination when restored, else the socket's.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// Whether `local` was restored from the original destination of a redirected
    /// connection.
    pub local_restored: bool,
}

impl ConnectionInfo {
    /// A connection's addresses as accepted (an IPv4 local address seen through a
    /// dual-stack socket counts as IPv4, for listener lookup and filter-chain matching).
    pub fn accepted(local: SocketAddr, remote: SocketAddr) -> Self {
        ConnectionInfo {
            local: canonical(local),
            remote,
            local_restored: false,
        }
    }

    /// Restores the original destination `dst` of a redirected connection. A destination
    /// equal to the socket's own address was not redirected (the connection was made to the
    /// proxy itself) and is not restored, so an ORIGINAL_DST cluster never connects a
    /// connection back to the listener it came from.
    pub fn restore_local(&mut self, dst: SocketAddr) {
        let dst = canonical(dst);
        if dst != self.local {
            self.local = dst;
            self.local_restored = true;
        }
    }
}

/// An IPv4 address seen through a dual-stack socket, as IPv4.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => a,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_only_a_redirected_destination() {
        let local: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        let remote: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let mut c = ConnectionInfo::accepted(local, remote);
        c.restore_local(local);
        assert!(!c.local_restored, "a connection made to the proxy itself");
        c.restore_local("10.0.0.9:8080".parse().unwrap());
        assert!(c.local_restored);
        assert_eq!(c.local, "10.0.0.9:8080".parse().unwrap());
    }

    #[test]
    fn a_mapped_local_address_is_ipv4() {
        let c = ConnectionInfo::accepted(
            "[::ffff:127.0.0.1]:80".parse().unwrap(),
            "[::ffff:10.1.2.3]:5".parse().unwrap(),
        );
        assert_eq!(c.local, "127.0.0.1:80".parse().unwrap());
    }
}
