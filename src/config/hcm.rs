//! HTTP connection manager configuration.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;

use super::common::{Cidr, timeout_or};
use super::error::{ConfigError, index, join};
use super::filters;
use super::route::RouteConfig;

/// Which HTTP codec serves downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/1.1, or HTTP/2 when the connection starts with the h2 preface.
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (h2c prior knowledge on plaintext).
    Http2,
}

/// `forward_client_cert_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardClientCert {
    /// Remove x-forwarded-client-cert.
    Sanitize,
    /// Pass it through on mTLS connections; remove it otherwise.
    ForwardOnly,
    /// On mTLS connections append the client certificate's details; remove it otherwise.
    AppendForward,
    /// On mTLS connections replace it with the client certificate's details; remove it
    /// otherwise.
    SanitizeSet,
    /// Always pass it through.
    AlwaysForwardOnly,
}

/// `set_current_client_cert_details`: which client certificate fields x-forwarded-client-cert
/// carries (By and Hash always).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCertDetails {
    /// Subject.
    pub subject: bool,
    /// DNS SANs.
    pub dns: bool,
    /// URI SANs.
    pub uri: bool,
}

/// The route table of a connection manager: inline, or fetched by RDS.
#[derive(Debug, Clone)]
pub enum Routes {
    /// `route_config`.
    Static(Arc<RouteConfig>),
    /// `rds`: the route configuration named `name`, from `source`.
    Rds {
        /// `route_config_name`.
        name: String,
        /// `config_source`.
        source: super::source::ConfigSource,
    },
}

/// A converted HttpConnectionManager.
#[derive(Debug)]
pub struct HcmConfig {
    /// `http.<stat_prefix>.` stats.
    pub stat_prefix: String,
    /// Codec.
    pub codec: Codec,
    /// Where the route table comes from.
    pub routes: Routes,
    /// HTTP filters before the router.
    pub http_filters: Vec<filters::HttpFilter>,
    /// The router filter's options.
    pub router: filters::RouterConfig,
    /// `server` response header value (default "envoy").
    pub server_name: http::HeaderValue,
    /// What to do with the upstream's server header.
    pub server_header: ServerHeader,
    /// Max request header size.
    pub max_request_headers_kb: u32,
    /// Stream idle timeout (default 5 min; None disables).
    pub stream_idle_timeout: Option<Duration>,
    /// Whole-request timeout (None disables).
    pub request_timeout: Option<Duration>,
    /// Time allowed to receive request headers.
    pub request_headers_timeout: Option<Duration>,
    /// Connection idle timeout (default 1h).
    pub idle_timeout: Option<Duration>,
    /// Use the peer address as the client address.
    pub use_remote_address: bool,
    /// Trusted hops in x-forwarded-for.
    pub xff_num_trusted_hops: u32,
    /// Internal address ranges (None = Envoy's RFC1918 default).
    pub internal_cidrs: Option<Vec<Cidr>>,
    /// Do not append the peer to x-forwarded-for.
    pub skip_xff_append: bool,
    /// `via` header value.
    pub via: Option<http::HeaderValue>,
    /// Generate x-request-id.
    pub generate_request_id: bool,
    /// Keep x-request-id from external clients.
    pub preserve_external_request_id: bool,
    /// Echo x-request-id in responses.
    pub always_set_request_id_in_response: bool,
    /// Enabled upgrade types (lowercase).
    pub upgrades: Vec<String>,
    /// Accept HTTP/1.0.
    pub accept_http_10: bool,
    /// HTTP/2 max concurrent streams.
    pub http2_max_concurrent_streams: Option<u32>,
    /// HTTP/2 initial stream window.
    pub http2_initial_stream_window_size: Option<u32>,
    /// HTTP/2 initial connection window.
    pub http2_initial_connection_window_size: Option<u32>,
    /// Normalize the path (RFC 3986).
    pub normalize_path: bool,
    /// Merge adjacent slashes.
    pub merge_slashes: bool,
    /// XFCC handling.
    pub forward_client_cert: ForwardClientCert,
    /// The fields APPEND_FORWARD and SANITIZE_SET add.
    pub client_cert_details: ClientCertDetails,
    /// Access logs written as each request ends.
    pub access_logs: Vec<std::sync::Arc<crate::access_log::AccessLogger>>,
    /// `tracing` is set (tracing decisions would be made).
    pub tracing: bool,
    /// `tracing.provider` is set.
    pub tracing_provider: bool,
    /// Reject headers with underscores.
    pub reject_underscore_headers: UnderscoreAction,
}

/// `server_header_transformation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeader {
    /// Always our server name.
    Overwrite,
    /// Ours only when the upstream set none.
    AppendIfAbsent,
    /// The upstream's, or none.
    PassThrough,
}

/// `headers_with_underscores_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderscoreAction {
    /// Allow.
    Allow,
    /// Reject the request with 400.
    RejectRequest,
    /// Drop the header.
    DropHeader,
}

impl HcmConfig {
    /// Converts an HttpConnectionManager; `path` points at its typed_config.
    pub fn from_proto(h: &hcm::HttpConnectionManager, path: &str) -> Result<Self, ConfigError> {
        use hcm::http_connection_manager::{CodecType, RouteSpecifier as RS};
        let codec = match CodecType::try_from(h.codec_type) {
            Ok(CodecType::Auto) => Codec::Auto,
            Ok(CodecType::Http1) => Codec::Http1,
            Ok(CodecType::Http2) => Codec::Http2,
            Ok(CodecType::Http3) => {
                return Err(ConfigError::new(
                    join(path, "codec_type"),
                    "HTTP3 is not supported",
                ));
            }
            Err(_) => {
                return Err(ConfigError::new(
                    join(path, "codec_type"),
                    format!("unknown value {}", h.codec_type),
                ));
            }
        };
        if h.stat_prefix.is_empty() {
            return Err(ConfigError::new(
                join(path, "stat_prefix"),
                "must not be empty",
            ));
        }
        let routes = match &h.route_specifier {
            Some(RS::RouteConfig(rc)) => Routes::Static(Arc::new(RouteConfig::from_proto(
                rc,
                &join(path, "route_config"),
            )?)),
            Some(RS::Rds(r)) => {
                let rp = join(path, "rds");
                if r.route_config_name.is_empty() {
                    return Err(ConfigError::new(
                        join(&rp, "route_config_name"),
                        "must not be empty",
                    ));
                }
                let cs = r
                    .config_source
                    .as_ref()
                    .ok_or_else(|| ConfigError::new(join(&rp, "config_source"), "is required"))?;
                Routes::Rds {
                    name: r.route_config_name.clone(),
                    source: super::source::config_source(cs, &join(&rp, "config_source"))?,
                }
            }
            Some(RS::ScopedRoutes(_)) => {
                return Err(ConfigError::unsupported(join(path, "scoped_routes")));
            }
            None => return Err(ConfigError::new(path, "route_config or rds is required")),
        };
        let (http_filters, router) = filters::http_filters(&h.http_filters, path)?;
        let server_header = match h.server_header_transformation {
            0 => ServerHeader::Overwrite,
            1 => ServerHeader::AppendIfAbsent,
            2 => ServerHeader::PassThrough,
            n => {
                return Err(ConfigError::new(
                    join(path, "server_header_transformation"),
                    format!("unknown value {n}"),
                ));
            }
        };
        let max_kb = h
            .max_request_headers_kb
            .as_ref()
            .map(|v| v.value)
            .unwrap_or(60);
        if !(1..=8192).contains(&max_kb) {
            return Err(ConfigError::new(
                join(path, "max_request_headers_kb"),
                "must be in [1, 8192]",
            ));
        }
        let internal_cidrs = match &h.internal_address_config {
            None => None,
            Some(c) => {
                let p = join(path, "internal_address_config");
                if c.unix_sockets {
                    return Err(ConfigError::unsupported(join(&p, "unix_sockets")));
                }
                let mut v = Vec::new();
                for (i, r) in c.cidr_ranges.iter().enumerate() {
                    v.push(Cidr::from_proto(r, &index(&p, "cidr_ranges", i))?);
                }
                Some(v)
            }
        };
        let mut upgrades = Vec::new();
        for (i, u) in h.upgrade_configs.iter().enumerate() {
            let p = index(path, "upgrade_configs", i);
            if !u.filters.is_empty() {
                return Err(ConfigError::unsupported(join(&p, "filters")));
            }
            if u.enabled.as_ref().map(|v| v.value).unwrap_or(true) {
                upgrades.push(u.upgrade_type.to_ascii_lowercase());
            }
        }
        let common = h.common_http_protocol_options.unwrap_or_default();
        let cp = join(path, "common_http_protocol_options");
        if common.max_connection_duration.is_some()
            || common.max_stream_duration.is_some()
            || common.max_headers_count.is_some()
            || common.max_requests_per_connection.is_some()
        {
            return Err(ConfigError::unsupported(cp.clone()));
        }
        let reject_underscore_headers = match common.headers_with_underscores_action {
            0 => UnderscoreAction::Allow,
            1 => UnderscoreAction::RejectRequest,
            2 => UnderscoreAction::DropHeader,
            n => {
                return Err(ConfigError::new(
                    join(&cp, "headers_with_underscores_action"),
                    format!("unknown value {n}"),
                ));
            }
        };
        if let Some(o) = &h.http_protocol_options {
            let p = join(path, "http_protocol_options");
            if o.allow_absolute_url.is_some()
                || !o.default_host_for_http_10.is_empty()
                || o.header_key_format.is_some()
                || o.enable_trailers
                || o.allow_chunked_length
            {
                return Err(ConfigError::unsupported(p));
            }
        }
        let path_action = h.path_with_escaped_slashes_action;
        if path_action > 1 {
            return Err(ConfigError::new(
                join(path, "path_with_escaped_slashes_action"),
                "only KEEP_UNCHANGED is supported",
            ));
        }
        let access_logs = crate::access_log::from_protos(&h.access_log, path, "access_log")?;
        let forward_client_cert = match h.forward_client_cert_details {
            0 => ForwardClientCert::Sanitize,
            1 => ForwardClientCert::ForwardOnly,
            2 => ForwardClientCert::AppendForward,
            3 => ForwardClientCert::SanitizeSet,
            4 => ForwardClientCert::AlwaysForwardOnly,
            n => {
                return Err(ConfigError::new(
                    join(path, "forward_client_cert_details"),
                    format!("unknown value {n}"),
                ));
            }
        };
        let client_cert_details = match &h.set_current_client_cert_details {
            None => ClientCertDetails::default(),
            Some(d) => {
                let p = join(path, "set_current_client_cert_details");
                if d.cert || d.chain {
                    return Err(ConfigError::new(
                        join(&p, if d.cert { "cert" } else { "chain" }),
                        "the PEM certificate in x-forwarded-client-cert is not implemented yet",
                    ));
                }
                ClientCertDetails {
                    subject: d.subject.as_ref().is_some_and(|v| v.value),
                    dns: d.dns,
                    uri: d.uri,
                }
            }
        };
        let via = if h.via.is_empty() {
            None
        } else {
            Some(
                http::HeaderValue::from_str(&h.via)
                    .map_err(|_| ConfigError::new(join(path, "via"), "not a valid header value"))?,
            )
        };
        Ok(Self {
            stat_prefix: h.stat_prefix.clone(),
            codec,
            routes,
            http_filters,
            router,
            server_name: if h.server_name.is_empty() {
                http::HeaderValue::from_static("envoy")
            } else {
                http::HeaderValue::from_str(&h.server_name).map_err(|_| {
                    ConfigError::new(join(path, "server_name"), "is not a valid header value")
                })?
            },
            server_header,
            max_request_headers_kb: max_kb,
            stream_idle_timeout: timeout_or(
                h.stream_idle_timeout.as_ref(),
                Some(Duration::from_secs(300)),
                &join(path, "stream_idle_timeout"),
            )?,
            request_timeout: timeout_or(
                h.request_timeout.as_ref(),
                None,
                &join(path, "request_timeout"),
            )?,
            request_headers_timeout: timeout_or(
                h.request_headers_timeout.as_ref(),
                None,
                &join(path, "request_headers_timeout"),
            )?,
            idle_timeout: timeout_or(
                common.idle_timeout.as_ref(),
                Some(Duration::from_secs(3600)),
                &join(&cp, "idle_timeout"),
            )?,
            use_remote_address: h
                .use_remote_address
                .as_ref()
                .map(|v| v.value)
                .unwrap_or(false),
            xff_num_trusted_hops: h.xff_num_trusted_hops,
            internal_cidrs,
            skip_xff_append: h.skip_xff_append,
            via,
            generate_request_id: h
                .generate_request_id
                .as_ref()
                .map(|v| v.value)
                .unwrap_or(true),
            preserve_external_request_id: h.preserve_external_request_id,
            always_set_request_id_in_response: h.always_set_request_id_in_response,
            upgrades,
            accept_http_10: h
                .http_protocol_options
                .as_ref()
                .map(|o| o.accept_http_10)
                .unwrap_or(false),
            http2_max_concurrent_streams: h
                .http2_protocol_options
                .as_ref()
                .and_then(|o| o.max_concurrent_streams.as_ref().map(|v| v.value)),
            http2_initial_stream_window_size: h
                .http2_protocol_options
                .as_ref()
                .and_then(|o| o.initial_stream_window_size.as_ref().map(|v| v.value)),
            http2_initial_connection_window_size: h
                .http2_protocol_options
                .as_ref()
                .and_then(|o| o.initial_connection_window_size.as_ref().map(|v| v.value)),
            normalize_path: h.normalize_path.as_ref().map(|v| v.value).unwrap_or(false),
            merge_slashes: h.merge_slashes,
            forward_client_cert,
            client_cert_details,
            reject_underscore_headers,
            access_logs,
            tracing: h.tracing.is_some(),
            tracing_provider: h.tracing.as_ref().is_some_and(|t| t.provider.is_some()),
        })
    }
}
