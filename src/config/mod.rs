//! The internal model: immutable, `Arc`-shared, converted from Envoy protos before anything
//! shared changes. A config that converts is one pilotfish can honour in full.

pub mod bind;
pub mod cluster;
pub mod common;
pub mod compressor;
pub mod error;
pub mod fields;
pub mod filters;
pub mod hcm;
pub mod listener;
pub mod listener_filter;
pub mod original_dst;
pub mod route;
pub mod secret;
pub mod source;
pub mod tcp_proxy;
pub mod tls;
pub mod tls_params;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use prost_reflect::DynamicMessage;

pub use error::{ConfigError, ConfigErrors};

use crate::stats::{Pattern, StatsMatcher, TagExtractor, TagProducer};
use common::socket_address;
use error::{index, join};

/// The node identity, sent to control planes and shown by /server_info.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// node.id.
    pub id: String,
    /// node.cluster.
    pub cluster: String,
}

/// Histogram bucket bounds by stat name pattern.
pub type HistogramBuckets = Vec<(Pattern, Arc<[f64]>)>;

/// Everything the server runs, converted from a bootstrap.
#[derive(Debug)]
pub struct ServerConfig {
    /// Node identity.
    pub node: Node,
    /// Admin listener address.
    pub admin_address: Option<SocketAddr>,
    /// Static listeners.
    pub listeners: Vec<Arc<listener::Listener>>,
    /// Static clusters.
    pub clusters: Vec<Arc<cluster::Cluster>>,
    /// `static_resources.secrets`, held so the store keeps them.
    pub static_secrets: Vec<Arc<crate::tls::secret::SecretSlot>>,
    /// Tag extractors.
    pub tags: TagProducer,
    /// Stats inclusion/exclusion.
    pub stats_matcher: StatsMatcher,
    /// Histogram bucket bounds by stat name pattern.
    pub histogram_buckets: HistogramBuckets,
    /// Statsd sinks: (UDP target, prefix).
    pub statsd_sinks: Vec<(SocketAddr, String)>,
    /// How often stats sinks are flushed.
    pub stats_flush_interval: std::time::Duration,
    /// `deferred_stat_options.enable_deferred_creation_stats`.
    pub deferred_stats: bool,
    /// Global downstream connection limit from the overload manager.
    pub max_downstream_connections: Option<u64>,
    /// Where dynamic listeners and clusters come from.
    pub dynamic: source::Dynamic,
    /// The bootstrap as loaded, for /config_dump.
    pub bootstrap: Bootstrap,
    /// Things accepted with a note (printed at start-up).
    pub warnings: Vec<String>,
}

const DOWNSTREAM_CONNECTIONS: &str =
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig";
const INTERNAL_LISTENER: &str = "envoy.extensions.bootstrap.internal_listener.v3.InternalListener";

/// The fields of a bootstrap (in its reflection form) that pilotfish refuses: known fields
/// that would change behaviour and are not implemented. Run before [`build`], so the decoded
/// descriptors can be freed before building allocates.
pub fn check_fields(dynamic: &DynamicMessage) -> ConfigErrors {
    let mut errs = ConfigErrors::default();
    fields::check(dynamic, "", &mut errs);
    errs
}

/// Converts a whole bootstrap, gathering every error after those [`check_fields`] found.
pub fn build(b: &Bootstrap, field_errors: ConfigErrors) -> Result<ServerConfig, ConfigErrors> {
    let mut errs = field_errors;
    let warnings = Vec::new();

    let node = b
        .node
        .as_ref()
        .map(|n| Node {
            id: n.id.clone(),
            cluster: n.cluster.clone(),
        })
        .unwrap_or_default();
    if !b.header_prefix.is_empty() && b.header_prefix != "x-envoy" {
        errs.push(ConfigError::unsupported("header_prefix"));
    }

    let admin_address = b.admin.as_ref().and_then(|a| {
        for (i, l) in a.access_log.iter().enumerate() {
            if !is_dev_null_log(l) {
                errs.push(ConfigError::new(
                    index("admin", "access_log", i),
                    "admin access logs other than /dev/null are not implemented yet",
                ));
            }
        }
        if !a.access_log_path.is_empty() && a.access_log_path != "/dev/null" {
            errs.push(ConfigError::new(
                "admin.access_log_path",
                "admin access logs other than /dev/null are not implemented yet",
            ));
        }
        a.address
            .as_ref()
            .and_then(|addr| errs.keep(socket_address(addr, "admin.address")))
    });

    let mut listeners = Vec::new();
    let mut clusters = Vec::new();
    let mut static_secrets = Vec::new();
    if let Some(sr) = &b.static_resources {
        // Secrets first: listeners and clusters name them.
        for (i, s) in sr.secrets.iter().enumerate() {
            let p = index("static_resources", "secrets", i);
            if s.name.is_empty() {
                errs.push(ConfigError::new(join(&p, "name"), "must not be empty"));
                continue;
            }
            use crate::tls::secret::{SecretSource, store};
            if store().find(&SecretSource::Static, &s.name).is_some() {
                errs.push(ConfigError::new(
                    join(&p, "name"),
                    format!("duplicate secret name {:?}", s.name),
                ));
                continue;
            }
            if let Some(parsed) = errs.keep(secret::secret(s, &p)) {
                let slot = store().slot(SecretSource::Static, &s.name, Default::default());
                slot.install(s.clone(), parsed, "");
                static_secrets.push(slot);
            }
        }
        let mut names = HashMap::new();
        let mut addrs = HashMap::new();
        for (i, l) in sr.listeners.iter().enumerate() {
            let p = index("static_resources", "listeners", i);
            if let Some(j) = names.insert(l.name.clone(), i) {
                errs.push(ConfigError::new(
                    join(&p, "name"),
                    format!("duplicate listener name {:?} (also listeners[{j}])", l.name),
                ));
                continue;
            }
            if let Some(l) = errs.keep(listener::Listener::from_proto(l, &p)) {
                // Port 0 asks the kernel for a fresh port, so it never collides.
                if l.bind_to_port
                    && l.address.port() != 0
                    && let Some(j) = addrs.insert(l.address, i)
                {
                    errs.push(ConfigError::new(
                        join(&p, "address"),
                        format!("address {} is already used by listeners[{j}]", l.address),
                    ));
                }
                listeners.push(Arc::new(l));
            }
        }
        let mut cnames = HashMap::new();
        for (i, c) in sr.clusters.iter().enumerate() {
            let p = index("static_resources", "clusters", i);
            if let Some(j) = cnames.insert(c.name.clone(), i) {
                errs.push(ConfigError::new(
                    join(&p, "name"),
                    format!("duplicate cluster name {:?} (also clusters[{j}])", c.name),
                ));
                continue;
            }
            if let Some(c) = errs.keep(cluster::Cluster::from_proto(c, &p)) {
                clusters.push(Arc::new(c));
            }
        }
    }
    let dynamic = b
        .dynamic_resources
        .as_ref()
        .map(|d| source::dynamic(d, &mut errs))
        .unwrap_or_default();
    let known: HashSet<&str> = clusters.iter().map(|c| &*c.name).collect();
    // Static routes may name clusters CDS brings later; only a static-only config is checked.
    if dynamic.cds.is_none() {
        for (i, l) in listeners.iter().enumerate() {
            check_route_clusters(l, &known, i, &mut errs);
        }
    }
    for c in dynamic.clusters() {
        if !known.contains(c) {
            errs.push(ConfigError::new(
                "dynamic_resources",
                format!("xDS cluster {c:?} is not a static cluster"),
            ));
        }
    }
    for (i, l) in listeners.iter().enumerate() {
        for (path, src) in l.rds_sources() {
            if src.source != source::Source::Ads || dynamic.ads.is_none() {
                errs.push(ConfigError::new(
                    join(&index("static_resources", "listeners", i), &path),
                    "RDS is served over ADS only (ads: {} with dynamic_resources.ads_config)",
                ));
            }
        }
    }
    for (i, c) in clusters.iter().enumerate() {
        if let Some(e) = &c.eds
            && e.source.source == source::Source::Ads
            && dynamic.ads.is_none()
        {
            errs.push(ConfigError::new(
                join(
                    &index("static_resources", "clusters", i),
                    "eds_cluster_config.eds_config",
                ),
                "ads: {} needs dynamic_resources.ads_config",
            ));
        }
    }

    let mut max_downstream_connections = None;
    if let Some(om) = &b.overload_manager {
        if !om.actions.is_empty() {
            errs.push(ConfigError::unsupported("overload_manager.actions"));
        }
        if om.buffer_factory_config.is_some() || !om.loadshed_points.is_empty() {
            errs.push(ConfigError::unsupported("overload_manager"));
        }
        for (i, m) in om.resource_monitors.iter().enumerate() {
            let p = index("overload_manager", "resource_monitors", i);
            use envoy_types::pb::envoy::config::overload::v3::resource_monitor::ConfigType as CT;
            match &m.config_type {
                Some(CT::TypedConfig(a))
                    if crate::bootstrap::descriptors::type_name(&a.type_url)
                        == DOWNSTREAM_CONNECTIONS =>
                {
                    use prost::Message;
                    match envoy_types::pb::envoy::extensions::resource_monitors::downstream_connections::v3::DownstreamConnectionsConfig::decode(a.value.as_slice()) {
                        Ok(c) => max_downstream_connections = Some(c.max_active_downstream_connections.max(0) as u64),
                        Err(e) => errs.push(ConfigError::new(join(&p, "typed_config"), e.to_string())),
                    }
                }
                _ => errs.push(ConfigError::new(
                    join(&p, "typed_config"),
                    format!("resource monitor {:?} is not implemented", m.name),
                )),
            }
        }
    }

    for (i, e) in b.bootstrap_extensions.iter().enumerate() {
        let p = index("", "bootstrap_extensions", i);
        let t = e
            .typed_config
            .as_ref()
            .map(|a| crate::bootstrap::descriptors::type_name(&a.type_url).to_string())
            .unwrap_or_default();
        if t == INTERNAL_LISTENER {
            // Internal listeners only matter to listeners with an envoy_internal_address, which
            // are refused; enabling the registry alone changes nothing.
            continue;
        }
        errs.push(ConfigError::new(
            join(&p, "typed_config"),
            format!("bootstrap extension {t:?} is not supported"),
        ));
    }

    let (tags, stats_matcher, histogram_buckets) = stats_settings(b, &mut errs);
    let statsd_sinks = stats_sinks(b, &mut errs);
    let stats_flush_interval = match &b.stats_flush_interval {
        Some(d) => errs
            .keep(common::duration(d, "stats_flush_interval"))
            .unwrap_or_default(),
        None => std::time::Duration::from_secs(5),
    };
    if stats_flush_interval.is_zero() || stats_flush_interval > std::time::Duration::from_secs(300)
    {
        errs.push(ConfigError::new(
            "stats_flush_interval",
            "must be in (0s, 300s]",
        ));
    }
    check_tracing(b, &listeners, &mut errs);

    let cfg = ServerConfig {
        node,
        admin_address,
        listeners,
        clusters,
        static_secrets,
        deferred_stats: b
            .deferred_stat_options
            .as_ref()
            .is_some_and(|d| d.enable_deferred_creation_stats),
        tags,
        stats_matcher,
        histogram_buckets,
        statsd_sinks,
        stats_flush_interval,
        max_downstream_connections,
        dynamic,
        bootstrap: b.clone(),
        warnings,
    };
    errs.into_result(cfg)
}

fn is_dev_null_log(l: &envoy_types::pb::envoy::config::accesslog::v3::AccessLog) -> bool {
    use envoy_types::pb::envoy::config::accesslog::v3::access_log::ConfigType as CT;
    use prost::Message;
    match &l.config_type {
        Some(CT::TypedConfig(a)) => {
            envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog::decode(
                a.value.as_slice(),
            )
            .map(|f| f.path == "/dev/null")
            .unwrap_or(false)
        }
        None => false,
    }
}

fn check_route_clusters(
    l: &listener::Listener,
    known: &HashSet<&str>,
    i: usize,
    errs: &mut ConfigErrors,
) {
    let p = index("static_resources", "listeners", i);
    let chains = l
        .filter_chains
        .iter()
        .enumerate()
        .map(|(j, c)| (index(&p, "filter_chains", j), c))
        .chain(
            l.default_filter_chain
                .iter()
                .map(|c| (join(&p, "default_filter_chain"), c)),
        );
    for (cp, chain) in chains {
        for f in &chain.filters {
            if let filters::NetworkFilter::HttpConnectionManager(h) = f
                && let hcm::Routes::Static(rc) = &h.routes
            {
                for c in rc.referenced_clusters() {
                    if !known.contains(&*c) {
                        errs.push(ConfigError::new(
                            format!(
                                "{cp}.filters[{}].typed_config.route_config",
                                chain.filters.len() - 1
                            ),
                            format!("route refers to unknown cluster {c:?}"),
                        ));
                    }
                }
            }
        }
    }
}

fn stats_settings(
    b: &Bootstrap,
    errs: &mut ConfigErrors,
) -> (TagProducer, StatsMatcher, HistogramBuckets) {
    let Some(sc) = &b.stats_config else {
        return (
            TagProducer::default_envoy(),
            StatsMatcher::default(),
            Vec::new(),
        );
    };
    let mut custom = Vec::new();
    for (i, t) in sc.stats_tags.iter().enumerate() {
        let p = index("stats_config", "stats_tags", i);
        use envoy_types::pb::envoy::config::metrics::v3::tag_specifier::TagValue as TV;
        match &t.tag_value {
            Some(TV::Regex(r)) => {
                if let Some(e) = errs.keep(
                    TagExtractor::regex(&t.tag_name, r)
                        .map_err(|e| ConfigError::new(join(&p, "regex"), e)),
                ) {
                    custom.push(e);
                }
            }
            Some(TV::FixedValue(v)) => custom.push(TagExtractor::fixed(&t.tag_name, v)),
            None => errs.push(ConfigError::new(
                &p,
                "regex or fixed_value is required (default tag names are not looked up)",
            )),
        }
    }
    let use_defaults = sc
        .use_all_default_tags
        .as_ref()
        .map(|v| v.value)
        .unwrap_or(true);
    let tags = TagProducer::new(custom, use_defaults);
    let matcher = match &sc.stats_matcher {
        None => StatsMatcher::default(),
        Some(m) => {
            use envoy_types::pb::envoy::config::metrics::v3::stats_matcher::StatsMatcher as SM;
            let pats = |l: &envoy_types::pb::envoy::r#type::matcher::v3::ListStringMatcher,
                        f: &str,
                        errs: &mut ConfigErrors|
             -> Vec<Pattern> {
                let mut out = Vec::new();
                for (i, s) in l.patterns.iter().enumerate() {
                    let p = format!("stats_config.stats_matcher.{f}.patterns[{i}]");
                    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern as MP;
                    match &s.match_pattern {
                        Some(MP::Exact(v)) => out.push(Pattern::Exact(v.clone())),
                        Some(MP::Prefix(v)) => out.push(Pattern::Prefix(v.clone())),
                        Some(MP::Suffix(v)) => out.push(Pattern::Suffix(v.clone())),
                        Some(MP::Contains(v)) => out.push(Pattern::Contains(v.clone())),
                        Some(MP::SafeRegex(r)) => {
                            if let Some(re) = errs.keep(common::full_regex(
                                &r.regex,
                                &format!("{p}.safe_regex.regex"),
                            )) {
                                out.push(Pattern::Regex(re));
                            }
                        }
                        _ => errs.push(ConfigError::unsupported(p)),
                    }
                }
                out
            };
            match &m.stats_matcher {
                Some(SM::RejectAll(true)) => StatsMatcher::reject_all(),
                Some(SM::RejectAll(false)) | None => StatsMatcher::default(),
                Some(SM::InclusionList(l)) => {
                    StatsMatcher::new(pats(l, "inclusion_list", errs), vec![])
                }
                Some(SM::ExclusionList(l)) => {
                    StatsMatcher::new(vec![], pats(l, "exclusion_list", errs))
                }
            }
        }
    };
    let mut buckets = Vec::new();
    for (i, h) in sc.histogram_bucket_settings.iter().enumerate() {
        let p = index("stats_config", "histogram_bucket_settings", i);
        let Some(m) = &h.r#match else {
            errs.push(ConfigError::new(join(&p, "match"), "is required"));
            continue;
        };
        let Some(pat) = errs.keep(pattern(m, &join(&p, "match"))) else {
            continue;
        };
        if h.bins.is_some() {
            errs.push(ConfigError::unsupported(join(&p, "bins")));
        }
        if h.buckets.is_empty() || h.buckets.windows(2).any(|w| w[0] >= w[1]) || h.buckets[0] <= 0.0
        {
            errs.push(ConfigError::new(
                join(&p, "buckets"),
                "must be positive, unique and increasing",
            ));
            continue;
        }
        buckets.push((pat, Arc::from(h.buckets.as_slice())));
    }
    (tags, matcher, buckets)
}

fn pattern(
    m: &envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher,
    path: &str,
) -> Result<Pattern, ConfigError> {
    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern as MP;
    if m.ignore_case {
        return Err(ConfigError::unsupported(join(path, "ignore_case")));
    }
    Ok(match &m.match_pattern {
        Some(MP::Exact(v)) => Pattern::Exact(v.clone()),
        Some(MP::Prefix(v)) => Pattern::Prefix(v.clone()),
        Some(MP::Suffix(v)) => Pattern::Suffix(v.clone()),
        Some(MP::Contains(v)) => Pattern::Contains(v.clone()),
        Some(MP::SafeRegex(r)) => Pattern::Regex(common::full_regex(
            &r.regex,
            &join(path, "safe_regex.regex"),
        )?),
        _ => return Err(ConfigError::unsupported(path)),
    })
}

const STATSD_SINK: &str = "envoy.config.metrics.v3.StatsdSink";

fn stats_sinks(b: &Bootstrap, errs: &mut ConfigErrors) -> Vec<(SocketAddr, String)> {
    use envoy_types::pb::envoy::config::metrics::v3::{
        StatsdSink, stats_sink::ConfigType as CT, statsd_sink::StatsdSpecifier as SS,
    };
    use prost::Message;
    let mut out = Vec::new();
    for (i, s) in b.stats_sinks.iter().enumerate() {
        let p = index("", "stats_sinks", i);
        let Some(CT::TypedConfig(any)) = &s.config_type else {
            errs.push(ConfigError::new(join(&p, "typed_config"), "is required"));
            continue;
        };
        let tp = join(&p, "typed_config");
        if crate::bootstrap::descriptors::type_name(&any.type_url) != STATSD_SINK {
            errs.push(ConfigError::new(
                &tp,
                format!("stats sink {} is not implemented", any.type_url),
            ));
            continue;
        }
        let Some(sink) = errs.keep(
            StatsdSink::decode(any.value.as_slice())
                .map_err(|e| ConfigError::new(&tp, e.to_string())),
        ) else {
            continue;
        };
        match &sink.statsd_specifier {
            Some(SS::Address(a)) => {
                if let Some(addr) = errs.keep(socket_address(a, &join(&tp, "address"))) {
                    out.push((
                        addr,
                        if sink.prefix.is_empty() {
                            "envoy".to_string()
                        } else {
                            sink.prefix.clone()
                        },
                    ));
                }
            }
            Some(SS::TcpClusterName(_)) => {
                errs.push(ConfigError::unsupported(join(&tp, "tcp_cluster_name")))
            }
            None => errs.push(ConfigError::new(join(&tp, "address"), "is required")),
        }
    }
    out
}

/// A configured tracer only acts on connection managers with `tracing` set. Those are refused
/// while a tracer is configured (no tracer is implemented), so a tracer alone changes nothing.
fn check_tracing(b: &Bootstrap, listeners: &[Arc<listener::Listener>], errs: &mut ConfigErrors) {
    let tracer = b.tracing.as_ref().is_some_and(|t| t.http.is_some());
    for (i, l) in listeners.iter().enumerate() {
        for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            for f in &chain.filters {
                if let filters::NetworkFilter::HttpConnectionManager(h) = f
                    && (h.tracing_provider || (tracer && h.tracing))
                {
                    errs.push(ConfigError::new(
                        format!(
                            "{}: http_connection_manager.tracing",
                            index("static_resources", "listeners", i)
                        ),
                        "tracing is not implemented yet",
                    ));
                }
            }
        }
    }
}
