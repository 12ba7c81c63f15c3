//! The field-support table: for each Envoy message pilotfish converts, the fields it honours
//! and the fields it ignores on purpose (each with the reason ignoring it cannot change
//! behaviour). Any other field that is set is refused with its path. Messages not listed here
//! are leaves honoured whole (durations, wrappers, addresses' parts) or are checked by the
//! converter that reads them.

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use super::error::{ConfigError, ConfigErrors};
use crate::bootstrap::descriptors;

struct Spec {
    message: &'static str,
    supported: &'static [&'static str],
    ignored: &'static [(&'static str, &'static str)],
}

const INFO: &str = "informational only: nothing reads it";

static TABLE: &[Spec] = &[
    Spec {
        message: "envoy.config.bootstrap.v3.Bootstrap",
        supported: &[
            "node",
            "static_resources",
            "dynamic_resources",
            "admin",
            "stats_config",
            "overload_manager",
            "cluster_manager",
            "bootstrap_extensions",
            "stats_sinks",
            "stats_flush_interval",
            "deferred_stat_options",
        ],
        ignored: &[
            (
                "layered_runtime",
                "runtime layers only tune Envoy feature flags whose defaults pilotfish already follows",
            ),
            (
                "application_log_config",
                "log line format of the process log only",
            ),
            (
                "tracing",
                "a tracer only acts on connection managers with tracing set, which are refused while one is configured",
            ),
            (
                "node_context_params",
                "xDS context parameters are not used by pilotfish",
            ),
            (
                "enable_dispatcher_stats",
                "dispatcher stats are not emitted",
            ),
            (
                "stats_server_version_override",
                "only changes the server.version stat",
            ),
            (
                "watchdog",
                "watchdog actions only tune miss/megamiss reporting",
            ),
            (
                "watchdogs",
                "watchdog actions only tune miss/megamiss reporting",
            ),
            (
                "header_prefix",
                "refused when not x-envoy (checked by the converter)",
            ),
        ],
    },
    Spec {
        message: "envoy.config.bootstrap.v3.Bootstrap.DeferredStatOptions",
        supported: &["enable_deferred_creation_stats"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.bootstrap.v3.Bootstrap.StaticResources",
        supported: &["listeners", "clusters", "secrets"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.bootstrap.v3.Admin",
        supported: &[
            "address",
            "access_log",
            "access_log_path",
            "ignore_global_conn_limit",
        ],
        ignored: &[("profile_path", "the CPU profiler endpoint is not offered")],
    },
    Spec {
        message: "envoy.config.bootstrap.v3.ClusterManager",
        supported: &[],
        ignored: &[
            (
                "local_cluster_name",
                "zone-aware routing is not offered, so the local cluster is not read",
            ),
            (
                "enable_deferred_cluster_creation",
                "clusters are cheap to create eagerly; only memory differs",
            ),
            (
                "outlier_detection",
                "outlier event logging: no outlier detection runs yet",
            ),
        ],
    },
    Spec {
        message: "envoy.config.core.v3.SocketAddress",
        supported: &["protocol", "address", "port_value", "ipv4_compat"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.Address",
        supported: &["socket_address", "pipe"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.Pipe",
        supported: &["path"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.listener.v3.Listener",
        supported: &[
            "name",
            "address",
            "filter_chains",
            "default_filter_chain",
            "traffic_direction",
            "bind_to_port",
            "use_original_dst",
            "stat_prefix",
            "listener_filters",
            "listener_filters_timeout",
            "continue_on_listener_filters_timeout",
            "enable_reuse_port",
            "drain_type",
            "ignore_global_conn_limit",
            "bypass_overload_manager",
            "tcp_backlog_size",
        ],
        ignored: &[
            ("metadata", INFO),
            (
                "per_connection_buffer_limit_bytes",
                "a flow-control watermark: reads pause when hyper's bounded buffers fill, whatever the limit",
            ),
            (
                "max_connections_to_accept_per_socket_event",
                "accept batching only; every pending connection is accepted",
            ),
        ],
    },
    Spec {
        message: "envoy.config.listener.v3.FilterChain",
        supported: &[
            "filter_chain_match",
            "filters",
            "name",
            "transport_socket",
            "transport_socket_connect_timeout",
        ],
        ignored: &[("metadata", INFO)],
    },
    Spec {
        message: "envoy.config.listener.v3.ListenerFilter",
        supported: &["name", "typed_config", "filter_disabled"],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
        supported: &[],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
        supported: &[],
        ignored: &[(
            "traffic_direction",
            "selects which Windows redirect record to read; on Linux the original destination is always SO_ORIGINAL_DST",
        )],
    },
    Spec {
        message: "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        supported: &[
            "initial_read_buffer_size",
            "enable_ja3_fingerprinting",
            "enable_ja4_fingerprinting",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.TransportSocket",
        supported: &["name", "typed_config"],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        supported: &["common_tls_context", "require_client_certificate"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.cluster.v3.Cluster.TransportSocketMatch",
        supported: &["name", "match", "transport_socket"],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        supported: &["common_tls_context", "sni"],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext",
        supported: &[
            "tls_params",
            "tls_certificates",
            "tls_certificate_sds_secret_configs",
            "validation_context",
            "validation_context_sds_secret_config",
            "combined_validation_context",
            "alpn_protocols",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig",
        supported: &["name", "sds_config"],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext",
        supported: &[
            "default_validation_context",
            "validation_context_sds_secret_config",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.transport_sockets.tls.v3.Secret",
        supported: &["name", "tls_certificate", "validation_context"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.WatchedDirectory",
        supported: &["path"],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.transport_sockets.tls.v3.TlsParameters",
        supported: &[
            "tls_minimum_protocol_version",
            "tls_maximum_protocol_version",
            "cipher_suites",
            "ecdh_curves",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.transport_sockets.tls.v3.TlsCertificate",
        supported: &["certificate_chain", "private_key", "watched_directory"],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext",
        supported: &[
            "trusted_ca",
            "match_typed_subject_alt_names",
            "match_subject_alt_names",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher",
        supported: &["san_type", "matcher"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.DataSource",
        supported: &["filename", "inline_bytes", "inline_string"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.listener.v3.FilterChainMatch",
        supported: &[
            "destination_port",
            "prefix_ranges",
            "direct_source_prefix_ranges",
            "source_type",
            "source_prefix_ranges",
            "source_ports",
            "server_names",
            "transport_protocol",
            "application_protocols",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.listener.v3.Filter",
        supported: &["name", "typed_config"],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        supported: &[
            "stat_prefix",
            "cluster",
            "weighted_clusters",
            "idle_timeout",
            "max_connect_attempts",
            "access_log",
            "max_downstream_connection_duration",
        ],
        ignored: &[(
            "metadata_match",
            "subset load balancing is refused on clusters, so it never selects",
        )],
    },
    Spec {
        message: "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight",
        supported: &["name", "weight"],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        supported: &[
            "codec_type",
            "stat_prefix",
            "route_config",
            "rds",
            "http_filters",
            "server_name",
            "server_header_transformation",
            "max_request_headers_kb",
            "stream_idle_timeout",
            "request_timeout",
            "request_headers_timeout",
            "use_remote_address",
            "xff_num_trusted_hops",
            "internal_address_config",
            "skip_xff_append",
            "via",
            "generate_request_id",
            "preserve_external_request_id",
            "always_set_request_id_in_response",
            "upgrade_configs",
            "common_http_protocol_options",
            "http_protocol_options",
            "http2_protocol_options",
            "access_log",
            "normalize_path",
            "merge_slashes",
            "path_with_escaped_slashes_action",
            "forward_client_cert_details",
            "set_current_client_cert_details",
        ],
        ignored: &[
            (
                "tracing",
                "without a tracer it only shapes trace sampling, which nothing reads; with one it is refused",
            ),
            (
                "request_id_extension",
                "UUID request ids are what pilotfish generates; the trace-sampling option has no tracer to feed",
            ),
        ],
    },
    Spec {
        message: "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
        supported: &["name", "typed_config", "is_optional", "disabled"],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.filters.http.compressor.v3.Compressor",
        supported: &[
            "content_length",
            "content_type",
            "disable_on_etag_header",
            "remove_accept_encoding_header",
            "compressor_library",
            "request_direction_config",
            "response_direction_config",
            "choose_first",
        ],
        ignored: &[(
            "runtime_enabled",
            "runtime overrides are not offered; the default (enabled) applies",
        )],
    },
    Spec {
        message: "envoy.extensions.filters.http.compressor.v3.Compressor.CommonDirectionConfig",
        supported: &["enabled", "min_content_length", "content_type"],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.filters.http.compressor.v3.Compressor.ResponseDirectionConfig",
        supported: &[
            "common_config",
            "disable_on_etag_header",
            "remove_accept_encoding_header",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.compression.gzip.compressor.v3.Gzip",
        supported: &["compression_level"],
        ignored: &[
            (
                "memory_level",
                "zlib tuning: output stays valid gzip, only its size differs",
            ),
            (
                "window_bits",
                "zlib tuning: output stays valid gzip, only its size differs",
            ),
            (
                "compression_strategy",
                "zlib tuning: output stays valid gzip, only its size differs",
            ),
            ("chunk_size", "buffer size only"),
        ],
    },
    Spec {
        message: "envoy.extensions.compression.brotli.compressor.v3.Brotli",
        supported: &["quality"],
        ignored: &[
            (
                "window_bits",
                "encoder tuning: output stays valid brotli, only its size differs",
            ),
            (
                "input_block_bits",
                "encoder tuning: output stays valid brotli, only its size differs",
            ),
            (
                "encoder_mode",
                "encoder tuning: output stays valid brotli, only its size differs",
            ),
            (
                "disable_literal_context_modeling",
                "encoder tuning: output stays valid brotli, only its size differs",
            ),
            ("chunk_size", "buffer size only"),
        ],
    },
    Spec {
        message: "envoy.extensions.compression.zstd.compressor.v3.Zstd",
        supported: &["compression_level", "dictionary"],
        ignored: &[
            (
                "enable_checksum",
                "frame checksum only; decoders accept frames with or without it",
            ),
            (
                "strategy",
                "encoder tuning: output stays valid zstd, only its size differs",
            ),
            ("chunk_size", "buffer size only"),
        ],
    },
    Spec {
        message: "envoy.config.core.v3.SubstitutionFormatString",
        supported: &[
            "text_format",
            "json_format",
            "text_format_source",
            "omit_empty_values",
            "formatters",
            "json_format_options",
        ],
        ignored: &[(
            "content_type",
            "only local reply bodies use it; access logs have no content type",
        )],
    },
    Spec {
        message: "envoy.config.accesslog.v3.AccessLog",
        supported: &["name", "filter", "typed_config"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.route.v3.RouteConfiguration",
        supported: &[
            "name",
            "virtual_hosts",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "ignore_port_in_host_matching",
            "max_direct_response_body_size_bytes",
            "internal_only_headers",
            "most_specific_header_mutations_wins",
        ],
        ignored: &[
            (
                "validate_clusters",
                "references to unknown clusters always answer 503 at request time",
            ),
            ("metadata", INFO),
        ],
    },
    Spec {
        message: "envoy.config.route.v3.VirtualHost",
        supported: &[
            "name",
            "domains",
            "routes",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "require_tls",
            "include_request_attempt_count",
            "include_attempt_count_in_response",
        ],
        ignored: &[("metadata", INFO)],
    },
    Spec {
        message: "envoy.config.route.v3.Route",
        supported: &[
            "name",
            "match",
            "route",
            "redirect",
            "direct_response",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
        ],
        ignored: &[
            ("metadata", INFO),
            (
                "decorator",
                "decorators only name tracing spans; no tracer is configured",
            ),
            ("stat_prefix", "per-route stats are not emitted"),
        ],
    },
    Spec {
        message: "envoy.config.route.v3.RouteMatch",
        supported: &[
            "prefix",
            "path",
            "safe_regex",
            "path_separated_prefix",
            "case_sensitive",
            "headers",
            "query_parameters",
            "grpc",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.route.v3.RouteAction",
        supported: &[
            "cluster",
            "cluster_header",
            "weighted_clusters",
            "cluster_not_found_response_code",
            "prefix_rewrite",
            "regex_rewrite",
            "host_rewrite_literal",
            "auto_host_rewrite",
            "timeout",
            "idle_timeout",
            "upgrade_configs",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.route.v3.WeightedCluster",
        supported: &["clusters", "total_weight"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.route.v3.WeightedCluster.ClusterWeight",
        supported: &[
            "name",
            "weight",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "host_rewrite_literal",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.route.v3.RedirectAction",
        supported: &[
            "scheme_redirect",
            "https_redirect",
            "host_redirect",
            "port_redirect",
            "path_redirect",
            "prefix_rewrite",
            "regex_rewrite",
            "response_code",
            "strip_query",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.route.v3.HeaderMatcher",
        supported: &[
            "name",
            "exact_match",
            "safe_regex_match",
            "present_match",
            "prefix_match",
            "suffix_match",
            "contains_match",
            "string_match",
            "invert_match",
            "treat_missing_header_as_empty",
            "range_match",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.route.v3.QueryParameterMatcher",
        supported: &["name", "string_match", "present_match"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.cluster.v3.Cluster",
        supported: &[
            "name",
            "alt_stat_name",
            "type",
            "connect_timeout",
            "lb_policy",
            "load_assignment",
            "circuit_breakers",
            "typed_extension_protocol_options",
            "dns_lookup_family",
            "dns_refresh_rate",
            "respect_dns_ttl",
            "max_requests_per_connection",
            "upstream_connection_options",
            "least_request_lb_config",
            "common_lb_config",
            "http2_protocol_options",
            "http_protocol_options",
            "common_http_protocol_options",
            "protocol_selection",
            "dns_jitter",
            "dns_failure_refresh_rate",
            "eds_cluster_config",
            "transport_socket",
            "transport_socket_matches",
            "cleanup_interval",
            "original_dst_lb_config",
            "upstream_bind_config",
        ],
        ignored: &[
            ("metadata", INFO),
            ("track_cluster_stats", "optional extra stats only"),
            (
                "per_connection_buffer_limit_bytes",
                "a flow-control watermark: reads pause when hyper's bounded buffers fill, whatever the limit",
            ),
            (
                "typed_dns_resolver_config",
                "refused unless it is the default c-ares resolver (checked by the converter)",
            ),
        ],
    },
    Spec {
        message: "envoy.config.cluster.v3.Cluster.OriginalDstLbConfig",
        supported: &[
            "use_http_header",
            "http_header_name",
            "upstream_port_override",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.BindConfig",
        supported: &["source_address", "extra_source_addresses"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.ExtraSourceAddress",
        supported: &["address"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.cluster.v3.Cluster.CommonLbConfig",
        supported: &["healthy_panic_threshold"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.cluster.v3.CircuitBreakers",
        supported: &["thresholds"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.cluster.v3.CircuitBreakers.Thresholds",
        supported: &[
            "priority",
            "max_connections",
            "max_pending_requests",
            "max_requests",
            "max_retries",
            "track_remaining",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.endpoint.v3.ClusterLoadAssignment",
        supported: &["cluster_name", "endpoints", "policy"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.endpoint.v3.ClusterLoadAssignment.Policy",
        supported: &["overprovisioning_factor"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.cluster.v3.Cluster.EdsClusterConfig",
        supported: &["eds_config", "service_name"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.bootstrap.v3.Bootstrap.DynamicResources",
        supported: &["lds_config", "cds_config", "ads_config"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.ConfigSource",
        supported: &[
            "ads",
            "api_config_source",
            "path_config_source",
            "path",
            "initial_fetch_timeout",
            "resource_api_version",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.PathConfigSource",
        supported: &["path"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.ApiConfigSource",
        supported: &[
            "api_type",
            "transport_api_version",
            "grpc_services",
            "set_node_on_first_message_only",
        ],
        ignored: &[
            ("refresh_delay", "only REST sources poll; they are refused"),
            (
                "request_timeout",
                "only REST sources poll; they are refused",
            ),
        ],
    },
    Spec {
        message: "envoy.config.core.v3.GrpcService",
        supported: &["envoy_grpc"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.GrpcService.EnvoyGrpc",
        supported: &["cluster_name", "authority"],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.filters.network.http_connection_manager.v3.Rds",
        supported: &["config_source", "route_config_name"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.endpoint.v3.LocalityLbEndpoints",
        supported: &["locality", "lb_endpoints", "priority"],
        ignored: &[
            ("metadata", INFO),
            (
                "load_balancing_weight",
                "locality weights only apply with locality_weighted_lb_config, which is refused",
            ),
        ],
    },
    Spec {
        message: "envoy.config.endpoint.v3.LbEndpoint",
        supported: &[
            "endpoint",
            "health_status",
            "load_balancing_weight",
            "metadata",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.endpoint.v3.Endpoint",
        supported: &["address", "hostname"],
        ignored: &[],
    },
    Spec {
        message: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        supported: &[
            "explicit_http_config",
            "use_downstream_protocol_config",
            "auto_config",
            "common_http_protocol_options",
            "upstream_http_protocol_options",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.HttpProtocolOptions",
        supported: &[
            "idle_timeout",
            "max_requests_per_connection",
            "max_headers_count",
            "headers_with_underscores_action",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.Http1ProtocolOptions",
        supported: &["accept_http_10"],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.Http2ProtocolOptions",
        supported: &[
            "max_concurrent_streams",
            "initial_stream_window_size",
            "initial_connection_window_size",
        ],
        ignored: &[],
    },
    Spec {
        message: "envoy.config.core.v3.UpstreamHttpProtocolOptions",
        supported: &[
            "auto_sni",
            "auto_san_validation",
            "override_auto_sni_header",
        ],
        ignored: &[],
    },
];

/// Checks every set field of `msg` (recursively, through Anys and repeated fields) against the
/// table, recording an error naming the path of each unsupported one.
pub fn check(msg: &DynamicMessage, path: &str, errors: &mut ConfigErrors) {
    let name = msg.descriptor().full_name().to_string();
    let spec = TABLE.iter().find(|s| s.message == name);
    if name == "google.protobuf.Any" {
        check_any(msg, path, errors);
        return;
    }
    for (field, value) in msg.fields() {
        let fname = field.name();
        let fpath = super::error::join(path, fname);
        if let Some(spec) = spec {
            if spec.ignored.iter().any(|(f, _)| *f == fname) {
                tracing::debug!("{fpath}: ignored on purpose");
                continue;
            }
            if !spec.supported.contains(&fname) {
                errors.push(ConfigError::unsupported(fpath));
                continue;
            }
        }
        check_value(value, &fpath, errors);
    }
}

fn check_value(value: &Value, path: &str, errors: &mut ConfigErrors) {
    match value {
        Value::Message(m) => check(m, path, errors),
        Value::List(items) => {
            for (i, v) in items.iter().enumerate() {
                check_value(v, &format!("{path}[{i}]"), errors);
            }
        }
        Value::Map(map) => {
            for (k, v) in map {
                let key = match k {
                    prost_reflect::MapKey::String(s) => s.clone(),
                    other => format!("{other:?}"),
                };
                check_value(v, &format!("{path}[{key:?}]"), errors);
            }
        }
        _ => {}
    }
}

fn check_any(msg: &DynamicMessage, path: &str, errors: &mut ConfigErrors) {
    let type_url = msg
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let bytes = msg
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let Some(desc) = descriptors::message(descriptors::type_name(&type_url)) else {
        return;
    };
    if let Ok(inner) = DynamicMessage::decode(desc, bytes) {
        check(&inner, path, errors);
    }
}

/// Checks a prost message by round-tripping it through its descriptor.
pub fn check_message<M: prost::Message + prost::Name>(
    msg: &M,
    path: &str,
    errors: &mut ConfigErrors,
) {
    let Some(desc) = descriptors::message(&M::full_name()) else {
        return;
    };
    if let Ok(d) = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()) {
        check(&d, path, errors);
    }
}
