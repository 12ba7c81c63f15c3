//! Listener configuration: address, filter chains and their match criteria.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3 as listener;

use super::common::{Cidr, socket_address};
use super::error::{ConfigError, index, join};
use super::filters::{NetworkFilter, network_filters};

/// `traffic_direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficDirection {
    /// Unspecified.
    Unspecified,
    /// Inbound.
    Inbound,
    /// Outbound.
    Outbound,
}

/// `drain_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainType {
    /// Drains on modification and on server drain.
    Default,
    /// Drains only on modification.
    ModifyOnly,
}

/// `FilterChainMatch.source_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceType {
    /// Any source.
    Any,
    /// Source and destination on the same host.
    SameIpOrLoopback,
    /// Any other source.
    External,
}

/// Match criteria of one filter chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FilterChainMatch {
    /// Destination port.
    pub destination_port: Option<u16>,
    /// Destination IP ranges.
    pub prefix_ranges: Vec<Cidr>,
    /// Direct source IP ranges.
    pub direct_source_prefix_ranges: Vec<Cidr>,
    /// Source type.
    pub source_type: SourceType,
    /// Source IP ranges.
    pub source_prefix_ranges: Vec<Cidr>,
    /// Source ports.
    pub source_ports: Vec<u16>,
    /// SNI names (exact or `*.suffix`), lowercase.
    pub server_names: Vec<String>,
    /// `tls` / `raw_buffer` / empty.
    pub transport_protocol: String,
    /// ALPN values.
    pub application_protocols: Vec<String>,
}

impl Default for FilterChainMatch {
    /// Matches every connection.
    fn default() -> Self {
        Self {
            destination_port: None,
            prefix_ranges: Vec::new(),
            direct_source_prefix_ranges: Vec::new(),
            source_type: SourceType::Any,
            source_prefix_ranges: Vec::new(),
            source_ports: Vec::new(),
            server_names: Vec::new(),
            transport_protocol: String::new(),
            application_protocols: Vec::new(),
        }
    }
}

/// One filter chain.
#[derive(Debug)]
pub struct FilterChain {
    /// Name.
    pub name: String,
    /// Match criteria.
    pub matcher: FilterChainMatch,
    /// Network filters; the last is terminal.
    pub filters: Vec<NetworkFilter>,
    /// TLS termination (transport socket `envoy.transport_sockets.tls`).
    pub tls: Option<Arc<super::tls::DownstreamTls>>,
    /// How long the TLS handshake may take.
    pub transport_socket_connect_timeout: Option<std::time::Duration>,
}

/// A converted listener.
#[derive(Debug)]
pub struct Listener {
    /// Name.
    pub name: Arc<str>,
    /// Bind address.
    pub address: SocketAddr,
    /// Prefix of its `listener.<prefix>.` stats: stat_prefix or `<ip>_<port>`.
    pub stat_prefix: String,
    /// Listener filters, run before filter-chain matching.
    pub listener_filters: super::listener_filter::ListenerFilters,
    /// Filter chains.
    pub filter_chains: Vec<Arc<FilterChain>>,
    /// The chain used when none matches.
    pub default_filter_chain: Option<Arc<FilterChain>>,
    /// Direction.
    pub traffic_direction: TrafficDirection,
    /// Open a socket.
    pub bind_to_port: bool,
    /// Hand redirected connections to the listener of their original destination.
    pub use_original_dst: bool,
    /// One socket per worker with SO_REUSEPORT.
    pub reuse_port: bool,
    /// Not counted against the global connection limit.
    pub ignore_global_conn_limit: bool,
    /// Drain type.
    pub drain_type: DrainType,
    /// listen() backlog.
    pub backlog: u32,
    /// The original proto, for /config_dump.
    pub proto: super::common::Encoded<listener::Listener>,
}

impl Listener {
    /// Converts a Listener.
    pub fn from_proto(l: &listener::Listener, path: &str) -> Result<Self, ConfigError> {
        if l.name.is_empty() {
            return Err(ConfigError::new(join(path, "name"), "must not be empty"));
        }
        let a = l
            .address
            .as_ref()
            .ok_or_else(|| ConfigError::new(join(path, "address"), "is required"))?;
        let address = socket_address(a, &join(path, "address"))?;
        let listener_filters = super::listener_filter::ListenerFilters::from_proto(l, path)?;
        for (set, name) in [
            (
                l.transparent.as_ref().is_some_and(|v| v.value),
                "transparent",
            ),
            (l.freebind.as_ref().is_some_and(|v| v.value), "freebind"),
            (!l.socket_options.is_empty(), "socket_options"),
            (!l.additional_addresses.is_empty(), "additional_addresses"),
            (l.udp_listener_config.is_some(), "udp_listener_config"),
            (l.api_listener.is_some(), "api_listener"),
            (
                l.connection_balance_config.is_some(),
                "connection_balance_config",
            ),
            (
                l.tcp_fast_open_queue_length.is_some(),
                "tcp_fast_open_queue_length",
            ),
            (!l.access_log.is_empty(), "access_log"),
            (l.filter_chain_matcher.is_some(), "filter_chain_matcher"),
        ] {
            if set {
                return Err(ConfigError::unsupported(join(path, name)));
            }
        }
        let mut filter_chains = Vec::new();
        for (i, fc) in l.filter_chains.iter().enumerate() {
            let p = index(path, "filter_chains", i);
            let chain = FilterChain::from_proto(fc, &p)?;
            if let Some(j) = filter_chains
                .iter()
                .position(|c: &Arc<FilterChain>| c.matcher == chain.matcher)
            {
                return Err(ConfigError::new(
                    join(&p, "filter_chain_match"),
                    format!(
                        "multiple filter chains with the same matching rules are defined (also filter_chains[{j}])"
                    ),
                ));
            }
            filter_chains.push(Arc::new(chain));
        }
        let default_filter_chain = match &l.default_filter_chain {
            Some(fc) => Some(Arc::new(FilterChain::from_proto(
                fc,
                &join(path, "default_filter_chain"),
            )?)),
            None => None,
        };
        if filter_chains.is_empty() && default_filter_chain.is_none() {
            return Err(ConfigError::new(
                join(path, "filter_chains"),
                "a listener needs at least one filter chain",
            ));
        }
        let traffic_direction = match l.traffic_direction {
            0 => TrafficDirection::Unspecified,
            1 => TrafficDirection::Inbound,
            2 => TrafficDirection::Outbound,
            n => {
                return Err(ConfigError::new(
                    join(path, "traffic_direction"),
                    format!("unknown value {n}"),
                ));
            }
        };
        let stat_prefix = if l.stat_prefix.is_empty() {
            match address {
                SocketAddr::V4(a) => format!("{}_{}", a.ip(), a.port()),
                SocketAddr::V6(a) => format!("[{}]_{}", a.ip(), a.port()),
            }
        } else {
            l.stat_prefix.clone()
        };
        Ok(Self {
            name: Arc::from(l.name.as_str()),
            address,
            stat_prefix,
            listener_filters,
            filter_chains,
            default_filter_chain,
            traffic_direction,
            bind_to_port: l.bind_to_port.as_ref().map(|v| v.value).unwrap_or(true),
            use_original_dst: l.use_original_dst.as_ref().is_some_and(|v| v.value),
            reuse_port: l
                .enable_reuse_port
                .as_ref()
                .map(|v| v.value)
                .unwrap_or(true),
            ignore_global_conn_limit: l.ignore_global_conn_limit,
            drain_type: if l.drain_type == 1 {
                DrainType::ModifyOnly
            } else {
                DrainType::Default
            },
            backlog: l.tcp_backlog_size.as_ref().map(|v| v.value).unwrap_or(1024),
            proto: super::common::Encoded::new(l),
        })
    }
}

impl FilterChain {
    fn from_proto(fc: &listener::FilterChain, path: &str) -> Result<Self, ConfigError> {
        let tls = match &fc.transport_socket {
            None => None,
            Some(ts) => {
                super::filters::downstream_transport_socket(ts, &join(path, "transport_socket"))?
            }
        };
        if fc.use_proxy_proto.is_some() {
            return Err(ConfigError::unsupported(join(path, "use_proxy_proto")));
        }
        let m = fc.filter_chain_match.clone().unwrap_or_default();
        let mp = join(path, "filter_chain_match");
        let cidrs = |v: &[envoy_types::pb::envoy::config::core::v3::CidrRange],
                     f: &str|
         -> Result<Vec<Cidr>, ConfigError> {
            v.iter()
                .enumerate()
                .map(|(i, c)| Cidr::from_proto(c, &index(&mp, f, i)))
                .collect()
        };
        if m.address_suffix.len() + m.suffix_len.as_ref().map(|_| 1).unwrap_or(0) > 0 {
            return Err(ConfigError::unsupported(join(&mp, "address_suffix")));
        }
        let port = |p: u32, f: &str| -> Result<u16, ConfigError> {
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| ConfigError::new(join(&mp, f), format!("{p} is not a port")))
        };
        let matcher = FilterChainMatch {
            destination_port: m
                .destination_port
                .as_ref()
                .map(|v| port(v.value, "destination_port"))
                .transpose()?,
            prefix_ranges: cidrs(&m.prefix_ranges, "prefix_ranges")?,
            direct_source_prefix_ranges: cidrs(
                &m.direct_source_prefix_ranges,
                "direct_source_prefix_ranges",
            )?,
            source_type: match m.source_type {
                0 => SourceType::Any,
                1 => SourceType::SameIpOrLoopback,
                2 => SourceType::External,
                n => {
                    return Err(ConfigError::new(
                        join(&mp, "source_type"),
                        format!("unknown value {n}"),
                    ));
                }
            },
            source_prefix_ranges: cidrs(&m.source_prefix_ranges, "source_prefix_ranges")?,
            source_ports: m
                .source_ports
                .iter()
                .map(|p| port(*p, "source_ports"))
                .collect::<Result<_, _>>()?,
            server_names: m
                .server_names
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            transport_protocol: m.transport_protocol.clone(),
            application_protocols: m.application_protocols.clone(),
        };
        let transport_socket_connect_timeout = fc
            .transport_socket_connect_timeout
            .as_ref()
            .map(|d| super::common::duration(d, &join(path, "transport_socket_connect_timeout")))
            .transpose()?
            .filter(|d| !d.is_zero());
        Ok(Self {
            name: fc.name.clone(),
            matcher,
            filters: network_filters(&fc.filters, path)?,
            tls,
            transport_socket_connect_timeout,
        })
    }
}

impl Listener {
    /// The RDS sources its connection managers name, with the path of each.
    pub fn rds_sources(&self) -> Vec<(String, &super::source::ConfigSource)> {
        let mut out = Vec::new();
        for (i, chain) in self
            .filter_chains
            .iter()
            .chain(self.default_filter_chain.iter())
            .enumerate()
        {
            for (j, f) in chain.filters.iter().enumerate() {
                if let super::filters::NetworkFilter::HttpConnectionManager(h) = f
                    && let super::hcm::Routes::Rds { source, .. } = &h.routes
                {
                    out.push((
                        format!("filter_chains[{i}].filters[{j}].typed_config.rds.config_source"),
                        source,
                    ));
                }
            }
        }
        out
    }
}
