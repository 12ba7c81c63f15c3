//! Cluster configuration: discovery type, endpoints, load balancing, circuit breakers and the
//! upstream HTTP protocol.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
use envoy_types::pb::google::protobuf::Struct;
use prost::Message;

use super::common::{HostAddress, address, duration, timeout_or};
use super::error::{ConfigError, index, join};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

/// How endpoints are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// Fixed addresses.
    Static,
    /// Every address each name resolves to.
    StrictDns,
    /// The first address a name resolves to, used for new connections.
    LogicalDns,
    /// Endpoints from EDS.
    Eds,
    /// Each connection's original destination, as a host made on demand.
    OriginalDst,
}

/// The load-balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    /// Weighted round robin.
    RoundRobin,
    /// Power of `choice_count` choices by active requests.
    LeastRequest(u32),
    /// Uniform random.
    Random,
    /// The cluster picks its host itself (ORIGINAL_DST clusters).
    ClusterProvided,
}

/// The protocol spoken to upstream hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge on plaintext).
    Http2,
    /// The downstream request's protocol.
    UseDownstream,
}

/// DNS address family preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsLookupFamily {
    /// IPv4 then IPv6 (Envoy's AUTO prefers v6; V4_PREFERRED prefers v4).
    Auto,
    /// Only IPv4.
    V4Only,
    /// Only IPv6.
    V6Only,
    /// IPv4 first if any.
    V4Preferred,
    /// Both.
    All,
}

/// Circuit breaker thresholds of the DEFAULT priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Connections to the whole cluster.
    pub max_connections: u64,
    /// Requests waiting for a connection.
    pub max_pending_requests: u64,
    /// Requests in flight.
    pub max_requests: u64,
    /// Retries in flight.
    pub max_retries: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// One configured endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Where it is.
    pub address: HostAddress,
    /// Its hostname (for auto_host_rewrite).
    pub hostname: String,
    /// Load-balancing weight (locality weight × endpoint weight).
    pub weight: u32,
    /// Priority of its locality.
    pub priority: u32,
    /// Health status from config (UNHEALTHY/DRAINING/TIMEOUT hosts take no traffic).
    pub healthy: bool,
    /// Its `envoy.transport_socket_match` metadata, which picks its transport socket.
    pub socket_match: Option<Arc<Struct>>,
}

/// One of a cluster's `transport_socket_matches`.
#[derive(Debug)]
pub struct TransportSocketMatch {
    /// Its name.
    pub name: String,
    /// Metadata every field of which an endpoint must carry, equal.
    pub criteria: Struct,
    /// Its transport socket (None: plaintext).
    pub tls: Option<Arc<super::tls::UpstreamTls>>,
}

impl Cluster {
    /// The transport socket of an endpoint with `metadata` (its
    /// `envoy.transport_socket_match`): the first match whose criteria it carries, else the
    /// cluster's `transport_socket`.
    pub fn tls_for(&self, metadata: Option<&Struct>) -> Option<Arc<super::tls::UpstreamTls>> {
        let found = self.transport_socket_matches.iter().find(|m| {
            m.criteria
                .fields
                .iter()
                .all(|(k, v)| metadata.and_then(|md| md.fields.get(k)) == Some(v))
        });
        match found {
            Some(m) => m.tls.clone(),
            None => self.tls.clone(),
        }
    }

    /// The secrets its transport sockets read (it warms until they arrive).
    pub fn secrets(&self) -> Vec<Arc<crate::tls::secret::SecretSlot>> {
        let mut v: Vec<_> = self
            .tls
            .iter()
            .chain(
                self.transport_socket_matches
                    .iter()
                    .filter_map(|m| m.tls.as_ref()),
            )
            .flat_map(|t| t.secrets())
            .collect();
        v.sort_by_key(|s| Arc::as_ptr(s) as usize);
        v.dedup_by(|a, b| Arc::ptr_eq(a, b));
        v
    }
}

/// An EDS cluster's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdsConfig {
    /// The ClusterLoadAssignment name (`service_name`, or the cluster's name).
    pub service_name: String,
    /// Where it comes from.
    pub source: super::source::ConfigSource,
}

/// Envoy's default overprovisioning factor, as a percentage.
pub const DEFAULT_OVERPROVISIONING: u32 = 140;

/// A converted cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Its name.
    pub name: Arc<str>,
    /// The name its stats use (`alt_stat_name` or `name`).
    pub stat_name: String,
    /// Discovery type.
    pub discovery: Discovery,
    /// Connect timeout (default 5s).
    pub connect_timeout: Duration,
    /// Load balancing.
    pub lb_policy: LbPolicy,
    /// Endpoints (of STATIC and DNS clusters).
    pub endpoints: Vec<EndpointConfig>,
    /// The load assignment's overprovisioning factor, as a percentage (Envoy's default 140).
    pub overprovisioning_factor: u32,
    /// Where an EDS cluster's endpoints come from.
    pub eds: Option<EdsConfig>,
    /// Circuit breakers.
    pub thresholds: Thresholds,
    /// Upstream protocol.
    pub protocol: UpstreamProtocol,
    /// TLS origination (`transport_socket` `envoy.transport_sockets.tls`).
    pub tls: Option<Arc<super::tls::UpstreamTls>>,
    /// Transport sockets chosen by endpoint metadata (Istio's auto-mTLS).
    pub transport_socket_matches: Vec<TransportSocketMatch>,
    /// Idle timeout of upstream connections (default 1h).
    pub idle_timeout: Option<Duration>,
    /// Requests per upstream connection before it is closed.
    pub max_requests_per_connection: Option<u32>,
    /// HTTP/2 stream window.
    pub http2_initial_stream_window_size: Option<u32>,
    /// HTTP/2 connection window.
    pub http2_initial_connection_window_size: Option<u32>,
    /// DNS refresh period.
    pub dns_refresh_rate: Duration,
    /// Refresh at the TTL of DNS answers instead of dns_refresh_rate.
    pub respect_dns_ttl: bool,
    /// DNS family.
    pub dns_lookup_family: DnsLookupFamily,
    /// Panic threshold percentage (default 50; 0 disables).
    pub healthy_panic_threshold: f64,
    /// DNS refresh jitter upper bound.
    pub dns_jitter: Duration,
    /// DNS refresh period after a failed resolution.
    pub dns_failure_refresh_rate: Option<Duration>,
    /// TCP keepalive (probes, time, interval).
    pub tcp_keepalive: Option<(Option<u32>, Option<u32>, Option<u32>)>,
    /// SNI from each request's host (`upstream_http_protocol_options.auto_sni`).
    pub auto_sni: Option<Box<AutoSni>>,
    /// The source address connections bind (`upstream_bind_config`).
    pub bind: Option<Box<super::bind::BindConfig>>,
    /// An ORIGINAL_DST cluster's settings.
    pub original_dst: Option<Box<super::original_dst::OriginalDstConfig>>,
    /// The original proto, for /config_dump.
    pub proto: super::common::Encoded<cluster::Cluster>,
}

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

impl Cluster {
    /// Converts a Cluster.
    pub fn from_proto(c: &cluster::Cluster, path: &str) -> Result<Self, ConfigError> {
        if c.name.is_empty() {
            return Err(ConfigError::new(join(path, "name"), "must not be empty"));
        }
        use cluster::cluster::{ClusterDiscoveryType as CDT, DiscoveryType as DT, LbPolicy as LP};
        let discovery = match &c.cluster_discovery_type {
            None => Discovery::Static,
            Some(CDT::Type(t)) => match DT::try_from(*t) {
                Ok(DT::Static) => Discovery::Static,
                Ok(DT::StrictDns) => Discovery::StrictDns,
                Ok(DT::LogicalDns) => Discovery::LogicalDns,
                Ok(DT::Eds) => Discovery::Eds,
                Ok(DT::OriginalDst) => Discovery::OriginalDst,
                Err(_) => {
                    return Err(ConfigError::new(
                        join(path, "type"),
                        format!("unknown value {t}"),
                    ));
                }
            },
            Some(CDT::ClusterType(_)) => {
                return Err(ConfigError::unsupported(join(path, "cluster_type")));
            }
        };
        let lb_policy = match LP::try_from(c.lb_policy) {
            Ok(LP::RoundRobin) => LbPolicy::RoundRobin,
            Ok(LP::LeastRequest) => {
                let n = c
                    .lb_config
                    .as_ref()
                    .and_then(|l| match l {
                        cluster::cluster::LbConfig::LeastRequestLbConfig(l) => {
                            l.choice_count.as_ref().map(|v| v.value)
                        }
                        _ => None,
                    })
                    .unwrap_or(2);
                if n < 2 {
                    return Err(ConfigError::new(
                        join(path, "least_request_lb_config.choice_count"),
                        "must be at least 2",
                    ));
                }
                LbPolicy::LeastRequest(n)
            }
            Ok(LP::Random) => LbPolicy::Random,
            Ok(LP::ClusterProvided) => LbPolicy::ClusterProvided,
            Ok(other) => {
                return Err(ConfigError::new(
                    join(path, "lb_policy"),
                    format!("{} is not implemented", other.as_str_name()),
                ));
            }
            Err(_) => {
                return Err(ConfigError::new(
                    join(path, "lb_policy"),
                    format!("unknown value {}", c.lb_policy),
                ));
            }
        };
        if let Some(cluster::cluster::LbConfig::LeastRequestLbConfig(l)) = &c.lb_config
            && (l.active_request_bias.is_some() || l.slow_start_config.is_some())
        {
            return Err(ConfigError::unsupported(join(
                path,
                "least_request_lb_config",
            )));
        }
        if (discovery == Discovery::OriginalDst) != (lb_policy == LbPolicy::ClusterProvided) {
            return Err(ConfigError::new(
                join(path, "lb_policy"),
                "CLUSTER_PROVIDED is the only policy of ORIGINAL_DST clusters, and only they take it",
            ));
        }
        match &c.lb_config {
            None | Some(cluster::cluster::LbConfig::LeastRequestLbConfig(_)) => {}
            Some(cluster::cluster::LbConfig::OriginalDstLbConfig(_))
                if discovery == Discovery::OriginalDst => {}
            Some(cluster::cluster::LbConfig::OriginalDstLbConfig(_)) => {
                return Err(ConfigError::new(
                    join(path, "original_dst_lb_config"),
                    "only ORIGINAL_DST clusters take it",
                ));
            }
            Some(_) => return Err(ConfigError::unsupported(join(path, "lb_config"))),
        }
        let original_dst = match discovery {
            Discovery::OriginalDst => Some(Box::new(
                super::original_dst::OriginalDstConfig::from_proto(c, path)?,
            )),
            _ => None,
        };
        if discovery == Discovery::OriginalDst
            && c.load_assignment
                .as_ref()
                .is_some_and(|la| !la.endpoints.is_empty())
        {
            return Err(ConfigError::new(
                join(path, "load_assignment"),
                "ORIGINAL_DST clusters take no endpoints",
            ));
        }
        let bind = c
            .upstream_bind_config
            .as_ref()
            .map(|b| super::bind::BindConfig::from_proto(b, &join(path, "upstream_bind_config")))
            .transpose()?
            .map(Box::new);
        let (endpoints, overprovisioning_factor) = match &c.load_assignment {
            Some(la) if discovery != Discovery::Eds => {
                load_assignment(la, &join(path, "load_assignment"), discovery)?
            }
            _ => (Vec::new(), DEFAULT_OVERPROVISIONING),
        };
        let eds = match (&c.eds_cluster_config, discovery) {
            (Some(e), Discovery::Eds) => {
                let p = join(path, "eds_cluster_config");
                let source = e
                    .eds_config
                    .as_ref()
                    .ok_or_else(|| ConfigError::new(join(&p, "eds_config"), "is required"))?;
                Some(EdsConfig {
                    service_name: if e.service_name.is_empty() {
                        c.name.clone()
                    } else {
                        e.service_name.clone()
                    },
                    source: super::source::config_source(source, &join(&p, "eds_config"))?,
                })
            }
            (None, Discovery::Eds) => {
                return Err(ConfigError::new(
                    join(path, "eds_cluster_config"),
                    "is required for EDS clusters",
                ));
            }
            (Some(_), _) => {
                return Err(ConfigError::new(
                    join(path, "eds_cluster_config"),
                    "only EDS clusters take it",
                ));
            }
            (None, _) => None,
        };
        if discovery == Discovery::LogicalDns && endpoints.len() != 1 {
            return Err(ConfigError::new(
                join(path, "load_assignment"),
                "LOGICAL_DNS clusters need exactly one endpoint",
            ));
        }
        let thresholds = thresholds(c, path)?;
        let (protocol, idle_timeout, mut max_requests_per_connection, h2) =
            protocol_options(c, path)?;
        let auto_sni = auto_sni(c, path)?.map(Box::new);
        let auto_san = auto_sni.as_ref().is_some_and(|a| a.san_validation);
        if let Some(v) = &c.max_requests_per_connection {
            max_requests_per_connection = Some(v.value);
        }
        let tls = match &c.transport_socket {
            None => None,
            Some(ts) => super::filters::upstream_transport_socket(
                ts,
                &join(path, "transport_socket"),
                protocol == UpstreamProtocol::Http2,
                auto_san,
            )?,
        };
        let mut transport_socket_matches = Vec::new();
        for (i, m) in c.transport_socket_matches.iter().enumerate() {
            let mp = index(path, "transport_socket_matches", i);
            let tls = match &m.transport_socket {
                None => {
                    return Err(ConfigError::new(
                        join(&mp, "transport_socket"),
                        "is required",
                    ));
                }
                Some(ts) => super::filters::upstream_transport_socket(
                    ts,
                    &join(&mp, "transport_socket"),
                    protocol == UpstreamProtocol::Http2,
                    auto_san,
                )?,
            };
            transport_socket_matches.push(TransportSocketMatch {
                name: m.name.clone(),
                criteria: m.r#match.clone().unwrap_or_default(),
                tls,
            });
        }
        let dns_lookup_family = match c.dns_lookup_family {
            0 => DnsLookupFamily::Auto,
            1 => DnsLookupFamily::V4Only,
            2 => DnsLookupFamily::V6Only,
            3 => DnsLookupFamily::V4Preferred,
            4 => DnsLookupFamily::All,
            n => {
                return Err(ConfigError::new(
                    join(path, "dns_lookup_family"),
                    format!("unknown value {n}"),
                ));
            }
        };
        if let Some(r) = &c.typed_dns_resolver_config
            && r.name != "envoy.network.dns_resolver.cares"
        {
            return Err(ConfigError::new(
                join(path, "typed_dns_resolver_config"),
                format!("resolver {:?} is not supported", r.name),
            ));
        }
        let tcp_keepalive = c
            .upstream_connection_options
            .as_ref()
            .and_then(|o| o.tcp_keepalive.as_ref())
            .map(|k| {
                (
                    k.keepalive_probes.as_ref().map(|v| v.value),
                    k.keepalive_time.as_ref().map(|v| v.value),
                    k.keepalive_interval.as_ref().map(|v| v.value),
                )
            });
        if let Some(o) = &c.upstream_connection_options
            && (o.set_local_interface_name_on_upstream_connections
                || o.happy_eyeballs_config.is_some())
        {
            return Err(ConfigError::unsupported(join(
                path,
                "upstream_connection_options",
            )));
        }
        Ok(Self {
            name: Arc::from(c.name.as_str()),
            stat_name: if c.alt_stat_name.is_empty() {
                c.name.clone()
            } else {
                c.alt_stat_name.clone()
            },
            discovery,
            connect_timeout: match &c.connect_timeout {
                Some(d) => duration(d, &join(path, "connect_timeout"))?,
                None => Duration::from_secs(5),
            },
            lb_policy,
            endpoints,
            overprovisioning_factor,
            eds,
            thresholds,
            protocol,
            tls,
            transport_socket_matches,
            idle_timeout,
            max_requests_per_connection,
            http2_initial_stream_window_size: h2
                .as_ref()
                .and_then(|h| h.initial_stream_window_size.as_ref().map(|v| v.value)),
            http2_initial_connection_window_size: h2
                .as_ref()
                .and_then(|h| h.initial_connection_window_size.as_ref().map(|v| v.value)),
            dns_refresh_rate: match &c.dns_refresh_rate {
                Some(d) => {
                    duration(d, &join(path, "dns_refresh_rate"))?.max(Duration::from_millis(1))
                }
                None => Duration::from_secs(5),
            },
            respect_dns_ttl: c.respect_dns_ttl,
            dns_lookup_family,
            tcp_keepalive,
            auto_sni,
            bind,
            original_dst,
            healthy_panic_threshold: c
                .common_lb_config
                .as_ref()
                .and_then(|l| l.healthy_panic_threshold.as_ref())
                .map(|p| p.value)
                .unwrap_or(50.0),
            dns_jitter: match &c.dns_jitter {
                Some(d) => duration(d, &join(path, "dns_jitter"))?,
                None => Duration::ZERO,
            },
            dns_failure_refresh_rate: match &c.dns_failure_refresh_rate {
                Some(r) => {
                    let p = join(path, "dns_failure_refresh_rate");
                    let base = r.base_interval.as_ref().ok_or_else(|| {
                        ConfigError::new(join(&p, "base_interval"), "is required")
                    })?;
                    Some(duration(base, &join(&p, "base_interval"))?)
                }
                None => None,
            },
            proto: super::common::Encoded::new(c),
        })
    }
}

/// Converts a ClusterLoadAssignment (a cluster's `load_assignment`, or an EDS resource) into
/// endpoints and an overprovisioning factor. DNS names are allowed unless `discovery` is
/// STATIC or EDS.
pub fn load_assignment(
    la: &ClusterLoadAssignment,
    lp: &str,
    discovery: Discovery,
) -> Result<(Vec<EndpointConfig>, u32), ConfigError> {
    let allow_dns = matches!(discovery, Discovery::StrictDns | Discovery::LogicalDns);
    let mut overprovisioning = DEFAULT_OVERPROVISIONING;
    if let Some(policy) = &la.policy {
        let pp = join(lp, "policy");
        if !policy.drop_overloads.is_empty() {
            return Err(ConfigError::unsupported(join(&pp, "drop_overloads")));
        }
        if policy.endpoint_stale_after.is_some() {
            return Err(ConfigError::unsupported(join(&pp, "endpoint_stale_after")));
        }
        if let Some(f) = &policy.overprovisioning_factor {
            if f.value == 0 {
                return Err(ConfigError::new(
                    join(&pp, "overprovisioning_factor"),
                    "must be greater than 0",
                ));
            }
            overprovisioning = f.value;
        }
    }
    if !la.named_endpoints.is_empty() {
        return Err(ConfigError::unsupported(join(lp, "named_endpoints")));
    }
    // Every field is checked here (EDS resources skip the descriptor-based field check, which
    // would cost a decoded descriptor pool per update); of `metadata` only
    // `envoy.transport_socket_match` is read, and `locality` and the locality weight are
    // ignored, as the field table says.
    // Sized exactly: an assignment is kept as long as its cluster (ten thousand of them in a
    // large mesh).
    let total = la.endpoints.iter().map(|l| l.lb_endpoints.len()).sum();
    let mut endpoints = Vec::with_capacity(total);
    for (i, loc) in la.endpoints.iter().enumerate() {
        let locp = index(lp, "endpoints", i);
        if loc.proximity.is_some() {
            return Err(ConfigError::unsupported(join(&locp, "proximity")));
        }
        if loc.lb_config.is_some() {
            return Err(ConfigError::unsupported(join(
                &locp,
                "leds_cluster_locality_config",
            )));
        }
        for (j, lb) in loc.lb_endpoints.iter().enumerate() {
            let ep = index(&locp, "lb_endpoints", j);
            use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier as HI;
            let e = match &lb.host_identifier {
                Some(HI::Endpoint(e)) => e,
                Some(HI::EndpointName(_)) => {
                    return Err(ConfigError::unsupported(join(&ep, "endpoint_name")));
                }
                None => return Err(ConfigError::new(&ep, "endpoint is required")),
            };
            if e.health_check_config.is_some() {
                return Err(ConfigError::unsupported(join(
                    &ep,
                    "endpoint.health_check_config",
                )));
            }
            if !e.additional_addresses.is_empty() {
                return Err(ConfigError::unsupported(join(
                    &ep,
                    "endpoint.additional_addresses",
                )));
            }
            let a = e
                .address
                .as_ref()
                .ok_or_else(|| ConfigError::new(join(&ep, "endpoint.address"), "is required"))?;
            let addr = address(a, &join(&ep, "endpoint.address"), allow_dns)?;
            if let HostAddress::Pipe(_) = addr
                && discovery != Discovery::Static
                && discovery != Discovery::Eds
            {
                return Err(ConfigError::new(
                    join(&ep, "endpoint.address"),
                    "pipe addresses need a STATIC or EDS cluster",
                ));
            }
            let w = lb
                .load_balancing_weight
                .as_ref()
                .map(|v| v.value)
                .unwrap_or(1);
            if w == 0 {
                return Err(ConfigError::new(
                    join(&ep, "load_balancing_weight"),
                    "must be at least 1",
                ));
            }
            let healthy = matches!(lb.health_status, 0 | 1 | 5);
            let socket_match = lb
                .metadata
                .as_ref()
                .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
                .map(|s| Arc::new(s.clone()));
            endpoints.push(EndpointConfig {
                address: addr,
                hostname: e.hostname.clone(),
                weight: w,
                priority: loc.priority,
                healthy,
                socket_match,
            });
        }
    }
    Ok((endpoints, overprovisioning))
}

fn thresholds(c: &cluster::Cluster, path: &str) -> Result<Thresholds, ConfigError> {
    let mut t = Thresholds::default();
    let Some(cb) = &c.circuit_breakers else {
        return Ok(t);
    };
    let p = join(path, "circuit_breakers");
    if !cb.per_host_thresholds.is_empty() {
        return Err(ConfigError::unsupported(join(&p, "per_host_thresholds")));
    }
    for (i, th) in cb.thresholds.iter().enumerate() {
        let tp = index(&p, "thresholds", i);
        if th.retry_budget.is_some() {
            return Err(ConfigError::unsupported(join(&tp, "retry_budget")));
        }
        // Only the DEFAULT priority is used for requests; HIGH thresholds apply to
        // high-priority routes, which are never configured here.
        if th.priority != core::RoutingPriority::Default as i32 {
            continue;
        }
        let v = |w: &Option<envoy_types::pb::google::protobuf::UInt32Value>, d: u64| {
            w.as_ref().map(|v| v.value as u64).unwrap_or(d)
        };
        t = Thresholds {
            max_connections: v(&th.max_connections, 1024),
            max_pending_requests: v(&th.max_pending_requests, 1024),
            max_requests: v(&th.max_requests, 1024),
            max_retries: v(&th.max_retries, 3),
        };
    }
    Ok(t)
}

/// `upstream_http_protocol_options` of a cluster's HttpProtocolOptions: the SNI of each new
/// upstream connection is the request's host (or the value of `override_auto_sni_header`),
/// and with `auto_san_validation` the upstream certificate must carry it as a DNS SAN.
#[derive(Debug, Clone)]
pub struct AutoSni {
    /// The header read instead of the host.
    pub header: Option<http::HeaderName>,
    /// Check the certificate against the SNI instead of the configured SAN matchers.
    pub san_validation: bool,
}

fn auto_sni(c: &cluster::Cluster, path: &str) -> Result<Option<AutoSni>, ConfigError> {
    let Some(any) = c
        .typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)
    else {
        return Ok(None);
    };
    let p = format!(
        "{}[{HTTP_PROTOCOL_OPTIONS:?}]",
        join(path, "typed_extension_protocol_options")
    );
    let o = upstream_http::HttpProtocolOptions::decode(any.value.as_slice())
        .map_err(|e| ConfigError::new(&p, format!("cannot decode: {e}")))?;
    let Some(u) = &o.upstream_http_protocol_options else {
        return Ok(None);
    };
    let up = join(&p, "upstream_http_protocol_options");
    if u.auto_san_validation && !u.auto_sni {
        return Err(ConfigError::new(
            join(&up, "auto_san_validation"),
            "SAN validation against the request's host without auto_sni is not implemented yet",
        ));
    }
    if !u.auto_sni {
        if !u.override_auto_sni_header.is_empty() {
            return Err(ConfigError::new(
                join(&up, "override_auto_sni_header"),
                "only applies with auto_sni",
            ));
        }
        return Ok(None);
    }
    let header = if u.override_auto_sni_header.is_empty() {
        None
    } else {
        Some(
            http::HeaderName::from_bytes(u.override_auto_sni_header.as_bytes()).map_err(|_| {
                ConfigError::new(
                    join(&up, "override_auto_sni_header"),
                    format!("{:?} is not a header name", u.override_auto_sni_header),
                )
            })?,
        )
    };
    Ok(Some(AutoSni {
        header,
        san_validation: u.auto_san_validation,
    }))
}

type ProtocolChoice = (
    UpstreamProtocol,
    Option<Duration>,
    Option<u32>,
    Option<core::Http2ProtocolOptions>,
);

fn protocol_options(c: &cluster::Cluster, path: &str) -> Result<ProtocolChoice, ConfigError> {
    let mut protocol = UpstreamProtocol::Http1;
    let mut h2 = None;
    let mut common = c.common_http_protocol_options;
    // Envoy opens another upstream connection once one carries max_concurrent_streams; the
    // pool keeps one connection per host, so a limit is refused rather than ignored.
    let no_stream_limit = |o: &core::Http2ProtocolOptions, p: String| -> Result<(), ConfigError> {
        match o.max_concurrent_streams {
            Some(_) => Err(ConfigError::new(
                join(&p, "max_concurrent_streams"),
                "a per-connection stream limit on upstream HTTP/2 connections is not implemented yet",
            )),
            None => Ok(()),
        }
    };
    if let Some(o) = &c.http2_protocol_options {
        no_stream_limit(o, join(path, "http2_protocol_options"))?;
    }
    if c.http2_protocol_options.is_some() {
        protocol = UpstreamProtocol::Http2;
        h2 = c.http2_protocol_options.clone();
    }
    if c.http_protocol_options.is_some() {
        return Err(ConfigError::unsupported(join(
            path,
            "http_protocol_options",
        )));
    }
    if c.protocol_selection == 1 {
        protocol = UpstreamProtocol::UseDownstream;
    }
    for (key, any) in &c.typed_extension_protocol_options {
        let p = format!(
            "{}[{key:?}]",
            join(path, "typed_extension_protocol_options")
        );
        let type_name = super::super::bootstrap::descriptors::type_name(&any.type_url);
        if type_name != HTTP_PROTOCOL_OPTIONS {
            return Err(ConfigError::new(
                p,
                format!("unsupported protocol options type {}", any.type_url),
            ));
        }
        let o = upstream_http::HttpProtocolOptions::decode(any.value.as_slice())
            .map_err(|e| ConfigError::new(&p, format!("cannot decode: {e}")))?;
        if o.common_http_protocol_options.is_some() {
            common = o.common_http_protocol_options;
        }
        if !o.http_filters.is_empty() {
            return Err(ConfigError::unsupported(join(&p, "http_filters")));
        }
        use upstream_http::http_protocol_options::{
            UpstreamProtocolOptions as U, explicit_http_config::ProtocolConfig as PC,
        };
        match &o.upstream_protocol_options {
            Some(U::ExplicitHttpConfig(e)) => match &e.protocol_config {
                Some(PC::HttpProtocolOptions(o)) if *o != core::Http1ProtocolOptions::default() => {
                    return Err(ConfigError::unsupported(join(
                        &p,
                        "explicit_http_config.http_protocol_options",
                    )));
                }
                Some(PC::HttpProtocolOptions(_)) => protocol = UpstreamProtocol::Http1,
                Some(PC::Http2ProtocolOptions(o)) => {
                    no_stream_limit(o, join(&p, "explicit_http_config.http2_protocol_options"))?;
                    protocol = UpstreamProtocol::Http2;
                    h2 = Some(o.clone());
                }
                Some(PC::Http3ProtocolOptions(_)) => {
                    return Err(ConfigError::unsupported(join(
                        &p,
                        "explicit_http_config.http3_protocol_options",
                    )));
                }
                None => {
                    return Err(ConfigError::new(
                        join(&p, "explicit_http_config"),
                        "a protocol is required",
                    ));
                }
            },
            Some(U::UseDownstreamProtocolConfig(u)) => {
                protocol = UpstreamProtocol::UseDownstream;
                if let Some(o) = &u.http2_protocol_options {
                    no_stream_limit(
                        o,
                        join(&p, "use_downstream_protocol_config.http2_protocol_options"),
                    )?;
                }
                if u.http2_protocol_options.is_some() {
                    h2 = u.http2_protocol_options.clone();
                }
                if u.http3_protocol_options.is_some() {
                    return Err(ConfigError::unsupported(join(
                        &p,
                        "use_downstream_protocol_config.http3_protocol_options",
                    )));
                }
            }
            Some(U::AutoConfig(_)) => {
                return Err(ConfigError::new(
                    join(&p, "auto_config"),
                    "ALPN-based protocol selection needs TLS, which is not implemented yet",
                ));
            }
            None => {}
        }
    }
    let (idle, max_req) = match &common {
        Some(o) => {
            let p = join(path, "common_http_protocol_options");
            for (set, field) in [
                (
                    o.max_connection_duration.is_some(),
                    "max_connection_duration",
                ),
                (o.max_stream_duration.is_some(), "max_stream_duration"),
                (o.max_headers_count.is_some(), "max_headers_count"),
                (
                    o.headers_with_underscores_action != 0,
                    "headers_with_underscores_action",
                ),
            ] {
                if set {
                    return Err(ConfigError::unsupported(join(&p, field)));
                }
            }
            (
                timeout_or(
                    o.idle_timeout.as_ref(),
                    Some(Duration::from_secs(3600)),
                    &join(&p, "idle_timeout"),
                )?,
                o.max_requests_per_connection.as_ref().map(|v| v.value),
            )
        }
        None => (Some(Duration::from_secs(3600)), None),
    };
    Ok((protocol, idle, max_req, h2))
}
