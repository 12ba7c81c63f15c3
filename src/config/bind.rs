//! A cluster's `upstream_bind_config`: the source address its connections bind before they
//! connect (Istio binds 127.0.0.6 so inbound-to-application traffic escapes capture).

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3 as core;

use super::common::{HostAddress, sock_address};
use super::error::{ConfigError, index, join};

/// Source addresses, at most one per IP family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindConfig {
    /// `source_address`.
    source: SocketAddr,
    /// `extra_source_addresses` (of the other family).
    extra: Vec<SocketAddr>,
}

impl BindConfig {
    /// Converts an `upstream_bind_config`.
    pub fn from_proto(b: &core::BindConfig, path: &str) -> Result<Self, ConfigError> {
        if b.freebind.as_ref().is_some_and(|v| v.value) {
            return Err(ConfigError::unsupported(join(path, "freebind")));
        }
        if !b.socket_options.is_empty() {
            return Err(ConfigError::unsupported(join(path, "socket_options")));
        }
        if b.local_address_selector.is_some() {
            return Err(ConfigError::unsupported(join(
                path,
                "local_address_selector",
            )));
        }
        #[allow(deprecated)]
        if !b.additional_source_addresses.is_empty() {
            return Err(ConfigError::unsupported(join(
                path,
                "additional_source_addresses",
            )));
        }
        let ip = |sa: &core::SocketAddress, p: &str| -> Result<SocketAddr, ConfigError> {
            match sock_address(sa, p, false)? {
                HostAddress::Socket(s) => Ok(s),
                _ => Err(ConfigError::new(p, "an IP address is required")),
            }
        };
        let sp = join(path, "source_address");
        let source = ip(
            b.source_address
                .as_ref()
                .ok_or_else(|| ConfigError::new(&sp, "is required"))?,
            &sp,
        )?;
        let mut extra = Vec::new();
        for (i, e) in b.extra_source_addresses.iter().enumerate() {
            let ep = index(path, "extra_source_addresses", i);
            if e.socket_options.is_some() {
                return Err(ConfigError::unsupported(join(&ep, "socket_options")));
            }
            let ap = join(&ep, "address");
            let a = ip(
                e.address
                    .as_ref()
                    .ok_or_else(|| ConfigError::new(&ap, "is required"))?,
                &ap,
            )?;
            if a.is_ipv4() == source.is_ipv4()
                || extra
                    .iter()
                    .any(|x: &SocketAddr| x.is_ipv4() == a.is_ipv4())
            {
                return Err(ConfigError::new(
                    ap,
                    "each IP family may have only one source address",
                ));
            }
            extra.push(a);
        }
        Ok(BindConfig { source, extra })
    }

    /// The address to bind before connecting to `dest`: the source address of its family,
    /// or `source_address` alone when no extra address is configured (as Envoy, which then
    /// binds it whatever the destination's family).
    pub fn source_for(&self, dest: &SocketAddr) -> Option<SocketAddr> {
        if self.extra.is_empty() || self.source.is_ipv4() == dest.is_ipv4() {
            return Some(self.source);
        }
        self.extra
            .iter()
            .find(|a| a.is_ipv4() == dest.is_ipv4())
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(ip: &str) -> core::SocketAddress {
        core::SocketAddress {
            address: ip.into(),
            ..Default::default()
        }
    }

    #[test]
    fn picks_the_source_of_the_destination_family() {
        let b = BindConfig::from_proto(
            &core::BindConfig {
                source_address: Some(sa("127.0.0.6")),
                extra_source_addresses: vec![core::ExtraSourceAddress {
                    address: Some(sa("::6")),
                    socket_options: None,
                }],
                ..Default::default()
            },
            "c",
        )
        .unwrap();
        let v4: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        assert_eq!(b.source_for(&v4), Some("127.0.0.6:0".parse().unwrap()));
        assert_eq!(b.source_for(&v6), Some("[::6]:0".parse().unwrap()));
    }

    #[test]
    fn refuses_what_it_cannot_honour_by_path() {
        let e = BindConfig::from_proto(
            &core::BindConfig {
                source_address: Some(sa("127.0.0.6")),
                freebind: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
                ..Default::default()
            },
            "clusters[0].upstream_bind_config",
        )
        .unwrap_err();
        assert_eq!(e.path, "clusters[0].upstream_bind_config.freebind");
        let e = BindConfig::from_proto(
            &core::BindConfig {
                source_address: Some(sa("127.0.0.6")),
                extra_source_addresses: vec![core::ExtraSourceAddress {
                    address: Some(sa("127.0.0.7")),
                    socket_options: None,
                }],
                ..Default::default()
            },
            "b",
        )
        .unwrap_err();
        assert_eq!(e.path, "b.extra_source_addresses[0].address");
    }
}
