//! The extension registry: every extension type URL pilotfish knows, and what it does with it.
//! One table, so the answer to "is X supported?" is in one place.

use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use super::error::{ConfigError, index, join};
use super::hcm::HcmConfig;
use super::tcp_proxy::TcpProxyConfig;
use crate::bootstrap::descriptors::type_name;

/// What pilotfish does with an extension type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Implemented as Envoy documents it.
    Implemented,
    /// Refused with the reason.
    Refused(&'static str),
}

/// The registry: (type name, where it goes, support).
pub const REGISTRY: &[(&str, &str, Support)] = &[
    (
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "downstream transport socket",
        Support::Implemented,
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "upstream transport socket",
        Support::Implemented,
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "network filter",
        Support::Implemented,
    ),
    (
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "network filter",
        Support::Implemented,
    ),
    (
        "envoy.extensions.filters.http.router.v3.Router",
        "HTTP filter",
        Support::Implemented,
    ),
    (
        "envoy.extensions.filters.http.compressor.v3.Compressor",
        "HTTP filter",
        Support::Implemented,
    ),
    (
        "envoy.extensions.filters.network.rbac.v3.RBAC",
        "network filter",
        Support::Refused("RBAC is not implemented yet"),
    ),
    (
        "envoy.extensions.filters.http.rbac.v3.RBAC",
        "HTTP filter",
        Support::Refused("RBAC is not implemented yet"),
    ),
    (
        "envoy.extensions.filters.http.fault.v3.HTTPFault",
        "HTTP filter",
        Support::Refused("fault injection is not implemented yet"),
    ),
    (
        "envoy.extensions.filters.http.cors.v3.Cors",
        "HTTP filter",
        Support::Refused("CORS is not implemented yet"),
    ),
    (
        "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
        "HTTP filter",
        Support::Refused("gRPC stats are not implemented yet"),
    ),
    (
        "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        "listener filter",
        Support::Implemented,
    ),
    (
        "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
        "listener filter",
        Support::Implemented,
    ),
    (
        "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
        "listener filter",
        Support::Implemented,
    ),
];

/// The network filters of one chain, ending in a terminal filter.
#[derive(Debug, Clone)]
pub enum NetworkFilter {
    /// tcp_proxy.
    TcpProxy(Arc<TcpProxyConfig>),
    /// http_connection_manager.
    HttpConnectionManager(Arc<HcmConfig>),
}

/// An HTTP filter before the router.
#[derive(Debug, Clone)]
pub enum HttpFilter {
    /// Response compression.
    Compressor(Arc<super::compressor::CompressorConfig>),
}

/// The registry entry of a typed_config, which must be an implemented extension of `kind`.
pub fn lookup(any: &Any, path: &str, kind: &str) -> Result<&'static str, ConfigError> {
    let name = type_name(&any.type_url);
    match REGISTRY.iter().find(|(t, _, _)| *t == name) {
        Some((t, k, Support::Implemented)) if *k == kind => Ok(t),
        Some((_, k, Support::Implemented)) => Err(ConfigError::new(
            path,
            format!("{} is a {k}, not a {kind}", any.type_url),
        )),
        Some((_, _, Support::Refused(why))) => {
            Err(ConfigError::new(path, format!("{}: {why}", any.type_url)))
        }
        None if crate::bootstrap::descriptors::message(name).is_some() => Err(ConfigError::new(
            path,
            format!("{} is not supported", any.type_url),
        )),
        None => Err(ConfigError::new(
            path,
            format!("unknown type URL {:?}", any.type_url),
        )),
    }
}

fn decode<M: Message + Default>(any: &Any, path: &str) -> Result<M, ConfigError> {
    M::decode(any.value.as_slice())
        .map_err(|e| ConfigError::new(path, format!("cannot decode {}: {e}", any.type_url)))
}

/// A transport socket's typed_config, or None for plaintext (`envoy.transport_sockets.raw_buffer`
/// by name or type); `kind` is the registry kind it must be (downstream or upstream).
fn transport_socket_config<'a>(
    ts: &'a envoy_types::pb::envoy::config::core::v3::TransportSocket,
    path: &str,
    kind: &str,
) -> Result<Option<(&'a Any, String)>, ConfigError> {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    let any = match &ts.config_type {
        Some(ConfigType::TypedConfig(a)) => a,
        None if ts.name == "envoy.transport_sockets.raw_buffer" => return Ok(None),
        None => {
            return Err(ConfigError::new(
                join(path, "typed_config"),
                format!("transport socket {:?} has no typed_config", ts.name),
            ));
        }
    };
    let tp = join(path, "typed_config");
    if type_name(&any.type_url) == "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" {
        return Ok(None);
    }
    lookup(any, &tp, kind)?;
    Ok(Some((any, tp)))
}

/// A filter chain's transport socket: TLS (`DownstreamTlsContext`) or plaintext.
pub fn downstream_transport_socket(
    ts: &envoy_types::pb::envoy::config::core::v3::TransportSocket,
    path: &str,
) -> Result<Option<Arc<super::tls::DownstreamTls>>, ConfigError> {
    let Some((any, tp)) = transport_socket_config(ts, path, "downstream transport socket")? else {
        return Ok(None);
    };
    let ctx = decode::<
        envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext,
    >(any, &tp)?;
    Ok(Some(Arc::new(super::tls::DownstreamTls::from_proto(
        &ctx, &tp,
    )?)))
}

/// A cluster's transport socket: TLS (`UpstreamTlsContext`) or plaintext. `h2`: the cluster
/// speaks HTTP/2; `auto_san`: the cluster checks upstream certificates against the SNI it
/// takes from each request (auto_san_validation).
pub fn upstream_transport_socket(
    ts: &envoy_types::pb::envoy::config::core::v3::TransportSocket,
    path: &str,
    h2: bool,
    auto_san: bool,
) -> Result<Option<Arc<super::tls::UpstreamTls>>, ConfigError> {
    let Some((any, tp)) = transport_socket_config(ts, path, "upstream transport socket")? else {
        return Ok(None);
    };
    let ctx = decode::<
        envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext,
    >(any, &tp)?;
    Ok(Some(Arc::new(super::tls::UpstreamTls::from_proto(
        &ctx, &tp, h2, auto_san,
    )?)))
}

/// The router's own options.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouterConfig {
    /// Do not add x-envoy-* response headers.
    pub suppress_envoy_headers: bool,
}

/// Converts a chain's network filters; the last must be terminal and only the last.
pub fn network_filters(
    filters: &[listener::Filter],
    path: &str,
) -> Result<Vec<NetworkFilter>, ConfigError> {
    if filters.is_empty() {
        return Err(ConfigError::new(
            join(path, "filters"),
            "at least one network filter is required",
        ));
    }
    let mut out = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let p = index(path, "filters", i);
        use listener::filter::ConfigType as CT;
        let any = match &f.config_type {
            Some(CT::TypedConfig(a)) => a,
            Some(CT::ConfigDiscovery(_)) => {
                return Err(ConfigError::unsupported(join(&p, "config_discovery")));
            }
            None => {
                return Err(ConfigError::new(
                    join(&p, "typed_config"),
                    format!("filter {:?} has no typed_config", f.name),
                ));
            }
        };
        let tp = join(&p, "typed_config");
        let t = lookup(any, &tp, "network filter")?;
        let filter = if t.ends_with("HttpConnectionManager") {
            NetworkFilter::HttpConnectionManager(Arc::new(HcmConfig::from_proto(
                &decode::<hcm::HttpConnectionManager>(any, &tp)?,
                &tp,
            )?))
        } else {
            NetworkFilter::TcpProxy(Arc::new(TcpProxyConfig::from_proto(
                &decode::<tcp::TcpProxy>(any, &tp)?,
                &tp,
            )?))
        };
        if i + 1 != filters.len() {
            return Err(ConfigError::new(
                &p,
                "a terminal filter must be the last in the chain",
            ));
        }
        out.push(filter);
    }
    Ok(out)
}

/// Converts an HCM's http_filters: the router must be last; disabled optional filters of
/// unknown types are skipped as Envoy does.
pub fn http_filters(
    filters: &[hcm::HttpFilter],
    path: &str,
) -> Result<(Vec<HttpFilter>, RouterConfig), ConfigError> {
    let mut router = None;
    let mut out = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let p = index(path, "http_filters", i);
        use hcm::http_filter::ConfigType as CT;
        let any = match &f.config_type {
            Some(CT::TypedConfig(a)) => a,
            Some(CT::ConfigDiscovery(_)) => {
                return Err(ConfigError::unsupported(join(&p, "config_discovery")));
            }
            None => {
                return Err(ConfigError::new(
                    join(&p, "typed_config"),
                    format!("filter {:?} has no typed_config", f.name),
                ));
            }
        };
        let tp = join(&p, "typed_config");
        let t = match lookup(any, &tp, "HTTP filter") {
            Ok(t) => t,
            Err(e) if f.is_optional && e.msg.starts_with("unknown type URL") => continue,
            Err(e) => return Err(e),
        };
        if t.ends_with("Compressor") {
            let c = decode::<
                envoy_types::pb::envoy::extensions::filters::http::compressor::v3::Compressor,
            >(any, &tp)?;
            if !f.disabled {
                out.push(HttpFilter::Compressor(Arc::new(
                    super::compressor::CompressorConfig::from_proto(&c, &tp)?,
                )));
            }
            continue;
        }
        if t.ends_with("Router") {
            let r = decode::<envoy_types::pb::envoy::extensions::filters::http::router::v3::Router>(
                any, &tp,
            )?;
            if r.dynamic_stats.is_some()
                || r.start_child_span
                || !r.upstream_log.is_empty()
                || !r.upstream_http_filters.is_empty()
                || !r.strict_check_headers.is_empty()
                || r.respect_expected_rq_timeout
            {
                return Err(ConfigError::new(
                    &tp,
                    "only suppress_envoy_headers is supported on the router",
                ));
            }
            if i + 1 != filters.len() {
                return Err(ConfigError::new(
                    &p,
                    "the router must be the last HTTP filter",
                ));
            }
            router = Some(RouterConfig {
                suppress_envoy_headers: r.suppress_envoy_headers,
            });
        }
    }
    match router {
        Some(r) => Ok((out, r)),
        None => Err(ConfigError::new(
            join(path, "http_filters"),
            "the last HTTP filter must be envoy.filters.http.router",
        )),
    }
}
