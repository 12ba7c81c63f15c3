//! Filter-chain selection in Envoy's documented order: destination port, destination IP,
//! server name, transport protocol, application protocols, direct source IP, source type,
//! source IP, source port. At each step only the most specific matching criterion survives;
//! there is no backtracking. A pure function over the connection's facts.

use std::net::{IpAddr, SocketAddr};

use crate::config::common::Cidr;
use crate::config::listener::{FilterChainMatch, SourceType};

/// What is known of a connection when its chain is chosen.
#[derive(Debug, Clone)]
pub struct ConnectionFacts<'a> {
    /// Local (destination) address.
    pub local: SocketAddr,
    /// Peer (source) address.
    pub remote: SocketAddr,
    /// The peer address as seen directly (same as remote without PROXY protocol).
    pub direct_remote: SocketAddr,
    /// SNI, lowercase.
    pub server_name: Option<&'a str>,
    /// `tls` or `raw_buffer`.
    pub transport_protocol: &'a str,
    /// ALPN offered.
    pub application_protocols: &'a [String],
}

/// The index of the chain that matches, if any.
pub fn select(chains: &[&FilterChainMatch], f: &ConnectionFacts<'_>) -> Option<usize> {
    let mut cands: Vec<usize> = (0..chains.len()).collect();
    // Destination port.
    cands = narrow(&cands, |i| match chains[i].destination_port {
        Some(p) if p == f.local.port() => Some(1),
        Some(_) => None,
        None => Some(0),
    });
    // Destination IP: the longest matching prefix wins.
    cands = narrow(&cands, |i| {
        cidr_score(&chains[i].prefix_ranges, f.local.ip())
    });
    // Server names: exact beats longer wildcard beats shorter wildcard beats none.
    cands = narrow(&cands, |i| {
        server_name_score(&chains[i].server_names, f.server_name)
    });
    // Transport protocol.
    cands = narrow(&cands, |i| {
        let t = &chains[i].transport_protocol;
        if t.is_empty() {
            Some(0)
        } else if t == f.transport_protocol {
            Some(1)
        } else {
            None
        }
    });
    // Application protocols.
    cands = narrow(&cands, |i| {
        let a = &chains[i].application_protocols;
        if a.is_empty() {
            Some(0)
        } else if a.iter().any(|p| f.application_protocols.contains(p)) {
            Some(1)
        } else {
            None
        }
    });
    cands = narrow(&cands, |i| {
        cidr_score(&chains[i].direct_source_prefix_ranges, f.direct_remote.ip())
    });
    cands = narrow(&cands, |i| match chains[i].source_type {
        SourceType::Any => Some(0),
        SourceType::SameIpOrLoopback if is_local(f) => Some(1),
        SourceType::External if !is_local(f) => Some(1),
        _ => None,
    });
    cands = narrow(&cands, |i| {
        cidr_score(&chains[i].source_prefix_ranges, f.remote.ip())
    });
    cands = narrow(&cands, |i| {
        let p = &chains[i].source_ports;
        if p.is_empty() {
            Some(0)
        } else if p.contains(&f.remote.port()) {
            Some(1)
        } else {
            None
        }
    });
    cands.first().copied()
}

fn is_local(f: &ConnectionFacts<'_>) -> bool {
    f.remote.ip().is_loopback() || f.remote.ip() == f.local.ip()
}

/// Keeps the candidates with the highest score; `None` means "does not match".
fn narrow(cands: &[usize], score: impl Fn(usize) -> Option<u32>) -> Vec<usize> {
    let scored: Vec<(usize, u32)> = cands
        .iter()
        .filter_map(|&i| score(i).map(|s| (i, s)))
        .collect();
    let Some(best) = scored.iter().map(|(_, s)| *s).max() else {
        return Vec::new();
    };
    scored
        .into_iter()
        .filter(|(_, s)| *s == best)
        .map(|(i, _)| i)
        .collect()
}

fn cidr_score(ranges: &[Cidr], ip: IpAddr) -> Option<u32> {
    if ranges.is_empty() {
        return Some(0);
    }
    ranges
        .iter()
        .filter(|r| r.contains(ip))
        .map(|r| r.len as u32 + 1)
        .max()
}

fn server_name_score(names: &[String], sni: Option<&str>) -> Option<u32> {
    if names.is_empty() {
        return Some(0);
    }
    let sni = sni?;
    let mut best = None;
    for n in names {
        let s = if n == sni {
            Some(u32::MAX)
        } else if let Some(suffix) = n.strip_prefix('*') {
            (sni.len() > suffix.len() && sni.ends_with(suffix)).then_some(suffix.len() as u32 + 1)
        } else {
            None
        };
        best = best.max(s);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> FilterChainMatch {
        FilterChainMatch::default()
    }

    fn facts(local: &str, remote: &str) -> ConnectionFacts<'static> {
        ConnectionFacts {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            direct_remote: remote.parse().unwrap(),
            server_name: None,
            transport_protocol: "raw_buffer",
            application_protocols: &[],
        }
    }

    #[test]
    fn destination_port_beats_catch_all() {
        let a = m();
        let b = FilterChainMatch {
            destination_port: Some(80),
            ..m()
        };
        let chains = [&a, &b];
        assert_eq!(
            select(&chains, &facts("10.0.0.1:80", "10.0.0.2:5000")),
            Some(1)
        );
        assert_eq!(
            select(&chains, &facts("10.0.0.1:81", "10.0.0.2:5000")),
            Some(0)
        );
    }

    #[test]
    fn longest_prefix_wins_and_no_backtracking() {
        let wide = FilterChainMatch {
            prefix_ranges: vec![Cidr {
                addr: "10.0.0.0".parse().unwrap(),
                len: 8,
            }],
            ..m()
        };
        let narrow_ = FilterChainMatch {
            prefix_ranges: vec![Cidr {
                addr: "10.1.0.0".parse().unwrap(),
                len: 16,
            }],
            source_ports: vec![1],
            ..m()
        };
        let chains = [&wide, &narrow_];
        assert_eq!(select(&chains, &facts("10.2.0.1:80", "1.1.1.1:1")), Some(0));
        assert_eq!(select(&chains, &facts("10.1.0.1:80", "1.1.1.1:1")), Some(1));
        // The /16 chain is most specific for 10.1/16 but its source port does not match: no
        // fallback to the /8 chain.
        assert_eq!(select(&chains, &facts("10.1.0.1:80", "1.1.1.1:2")), None);
    }

    #[test]
    fn transport_and_source_type() {
        let tls = FilterChainMatch {
            transport_protocol: "tls".into(),
            ..m()
        };
        let local = FilterChainMatch {
            source_type: SourceType::SameIpOrLoopback,
            ..m()
        };
        let chains = [&tls, &local];
        assert_eq!(
            select(&chains, &facts("127.0.0.1:80", "127.0.0.1:9")),
            Some(1)
        );
        assert_eq!(select(&chains, &facts("10.0.0.1:80", "10.0.0.9:9")), None);
    }

    #[test]
    fn server_names_exact_then_longest_wildcard() {
        let a = FilterChainMatch {
            server_names: vec!["*.example.com".into()],
            ..m()
        };
        let b = FilterChainMatch {
            server_names: vec!["api.example.com".into()],
            ..m()
        };
        let c = FilterChainMatch {
            server_names: vec!["*.b.example.com".into()],
            ..m()
        };
        let chains = [&a, &b, &c];
        let mut f = facts("10.0.0.1:443", "1.1.1.1:1");
        f.server_name = Some("api.example.com");
        assert_eq!(select(&chains, &f), Some(1));
        f.server_name = Some("x.b.example.com");
        assert_eq!(select(&chains, &f), Some(2));
        f.server_name = Some("y.example.com");
        assert_eq!(select(&chains, &f), Some(0));
    }
}
