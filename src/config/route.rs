//! Route configuration: virtual hosts, routes, matches and actions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3 as route;

use super::common::{HeaderMutations, StringMatch, full_regex, timeout_or};
use super::error::{ConfigError, index, join};

/// A converted `RouteConfiguration`.
#[derive(Debug)]
pub struct RouteConfig {
    /// Its name.
    pub name: String,
    /// Virtual hosts in config order.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Exact domain -> vhost index.
    pub exact: HashMap<String, usize>,
    /// `*.suffix` / `*-suffix` wildcards as (suffix, vhost), longest first.
    pub suffixes: Vec<(String, usize)>,
    /// `prefix*` wildcards as (prefix, vhost), longest first.
    pub prefixes: Vec<(String, usize)>,
    /// The `*` vhost.
    pub catch_all: Option<usize>,
    /// Strip the port from :authority before matching.
    pub ignore_port_in_host_matching: bool,
    /// Request header mutations.
    pub request_headers: HeaderMutations,
    /// Response header mutations.
    pub response_headers: HeaderMutations,
    /// Headers only internal requests may carry.
    pub internal_only_headers: Vec<http::HeaderName>,
    /// Apply route-level mutations last (most specific wins).
    pub most_specific_wins: bool,
}

/// A virtual host.
#[derive(Debug)]
pub struct VirtualHost {
    /// Its name (used in stats).
    pub name: String,
    /// Routes in order; the first match wins.
    pub routes: Vec<Route>,
    /// Request header mutations.
    pub request_headers: HeaderMutations,
    /// Response header mutations.
    pub response_headers: HeaderMutations,
    /// Redirect plaintext requests to https.
    pub require_tls: RequireTls,
    /// Send `x-envoy-attempt-count` upstream.
    pub include_request_attempt_count: bool,
    /// Send `x-envoy-attempt-count` downstream.
    pub include_attempt_count_in_response: bool,
}

/// `VirtualHost.require_tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequireTls {
    /// No requirement.
    None,
    /// Every request must use TLS.
    All,
    /// Only external requests must use TLS.
    ExternalOnly,
}

/// A route.
#[derive(Debug)]
pub struct Route {
    /// Its name.
    pub name: String,
    /// When it applies.
    pub matcher: RouteMatch,
    /// What it does.
    pub action: Action,
    /// Request header mutations.
    pub request_headers: HeaderMutations,
    /// Response header mutations.
    pub response_headers: HeaderMutations,
}

/// A route's match conditions.
#[derive(Debug)]
pub struct RouteMatch {
    /// The path condition.
    pub path: PathMatch,
    /// Whether prefix/path matching is case sensitive (default true).
    pub case_sensitive: bool,
    /// Header conditions, all of which must hold.
    pub headers: Vec<HeaderMatcher>,
    /// Query parameter conditions, all of which must hold.
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// Only gRPC requests.
    pub grpc: bool,
}

/// The path condition of a route.
#[derive(Debug)]
pub enum PathMatch {
    /// Path starts with.
    Prefix(String),
    /// Path equals.
    Path(String),
    /// Full regex match of the path without query.
    Regex(regex::Regex),
    /// Prefix followed by end, `?` or `/`.
    PathSeparatedPrefix(String),
}

/// A header condition.
#[derive(Debug)]
pub struct HeaderMatcher {
    /// The header (`:method`, `:authority`, `:path`, `:scheme` are pseudo-headers).
    pub name: String,
    /// The condition on its value.
    pub kind: HeaderMatchKind,
    /// Negate.
    pub invert: bool,
    /// A missing header is matched as the empty string.
    pub treat_missing_as_empty: bool,
}

/// How a header matcher compares.
#[derive(Debug)]
pub enum HeaderMatchKind {
    /// Present (true) or absent (false).
    Present(bool),
    /// Value matcher.
    String(StringMatch),
    /// Integer range [start, end).
    Range(i64, i64),
}

/// A query parameter condition.
#[derive(Debug)]
pub struct QueryParameterMatcher {
    /// Parameter name.
    pub name: String,
    /// None means "present".
    pub value: Option<StringMatch>,
}

/// What a route does.
#[derive(Debug)]
pub enum Action {
    /// Forward upstream.
    Route(RouteAction),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer directly.
    DirectResponse {
        /// Status code.
        status: u16,
        /// Body.
        body: Option<bytes::Bytes>,
    },
}

/// How the upstream cluster is chosen.
#[derive(Debug)]
pub enum ClusterSpecifier {
    /// A fixed cluster.
    Cluster(Arc<str>),
    /// The cluster named by a request header.
    Header(http::HeaderName),
    /// Weighted choice.
    Weighted(Vec<WeightedCluster>, u64),
}

/// One weighted cluster.
#[derive(Debug)]
pub struct WeightedCluster {
    /// Cluster name.
    pub name: Arc<str>,
    /// Weight (0 allowed).
    pub weight: u64,
    /// Request header mutations.
    pub request_headers: HeaderMutations,
    /// Response header mutations.
    pub response_headers: HeaderMutations,
    /// Host rewrite for this cluster.
    pub host_rewrite_literal: Option<String>,
}

/// How the Host header is rewritten.
#[derive(Debug, Clone)]
pub enum HostRewrite {
    /// Unchanged.
    None,
    /// To a literal.
    Literal(String),
    /// To the upstream host's hostname (for DNS clusters).
    Auto,
}

/// The forwarding action.
#[derive(Debug)]
pub struct RouteAction {
    /// Which cluster.
    pub cluster: ClusterSpecifier,
    /// Status when the cluster does not exist (503 default, or 404).
    pub cluster_not_found_status: u16,
    /// Replace the matched prefix.
    pub prefix_rewrite: Option<String>,
    /// Regex substitution on the path.
    pub regex_rewrite: Option<(regex::Regex, String)>,
    /// Host rewrite.
    pub host_rewrite: HostRewrite,
    /// Upstream timeout (None = disabled). Default 15s.
    pub timeout: Option<Duration>,
    /// The timeout in milliseconds, as x-envoy-expected-rq-timeout-ms carries it (built once).
    pub timeout_ms_header: Option<http::HeaderValue>,
    /// Per-stream idle timeout override.
    pub idle_timeout: Option<Option<Duration>>,
    /// Per-route upgrade overrides: (type, enabled).
    pub upgrades: Vec<(String, bool)>,
}

/// A redirect action.
#[derive(Debug)]
pub struct Redirect {
    /// New scheme.
    pub scheme: Option<String>,
    /// New host.
    pub host: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// Path change.
    pub path: RedirectPath,
    /// Status code.
    pub status: u16,
    /// Drop the query string.
    pub strip_query: bool,
}

/// How a redirect changes the path.
#[derive(Debug)]
pub enum RedirectPath {
    /// Keep it.
    Keep,
    /// Replace the whole path.
    Path(String),
    /// Replace the matched prefix.
    Prefix(String),
    /// Regex substitution.
    Regex(regex::Regex, String),
}

impl RouteConfig {
    /// Converts a RouteConfiguration; `clusters` is the set of known cluster names, or None when
    /// clusters are not checked.
    pub fn from_proto(rc: &route::RouteConfiguration, path: &str) -> Result<Self, ConfigError> {
        let mut virtual_hosts = Vec::with_capacity(rc.virtual_hosts.len());
        let mut exact = HashMap::new();
        let mut suffixes = Vec::new();
        let mut prefixes = Vec::new();
        let mut catch_all = None;
        let mut names = std::collections::HashSet::new();
        for (i, vh) in rc.virtual_hosts.iter().enumerate() {
            let p = index(path, "virtual_hosts", i);
            if !names.insert(vh.name.clone()) {
                return Err(ConfigError::new(
                    join(&p, "name"),
                    format!("duplicate virtual host name {:?}", vh.name),
                ));
            }
            if vh.domains.is_empty() {
                return Err(ConfigError::new(
                    join(&p, "domains"),
                    "at least one domain is required",
                ));
            }
            for (j, d) in vh.domains.iter().enumerate() {
                let dp = index(&p, "domains", j);
                let d = d.to_ascii_lowercase();
                let dup = if d == "*" {
                    catch_all.replace(i).is_some()
                } else if let Some(s) = d.strip_prefix('*') {
                    let dup = suffixes.iter().any(|(x, _)| x == s);
                    suffixes.push((s.to_string(), i));
                    dup
                } else if let Some(s) = d.strip_suffix('*') {
                    let dup = prefixes.iter().any(|(x, _)| x == s);
                    prefixes.push((s.to_string(), i));
                    dup
                } else {
                    if d.contains('*') {
                        return Err(ConfigError::new(
                            dp,
                            "a wildcard may only be at the start or end",
                        ));
                    }
                    exact.insert(d.clone(), i).is_some()
                };
                if dup {
                    return Err(ConfigError::new(
                        dp,
                        format!("domain {d:?} is in more than one virtual host"),
                    ));
                }
            }
            virtual_hosts.push(VirtualHost::from_proto(vh, &p)?);
        }
        suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        let max_body = rc
            .max_direct_response_body_size_bytes
            .as_ref()
            .map(|v| v.value)
            .unwrap_or(4096) as usize;
        for (i, vh) in virtual_hosts.iter().enumerate() {
            for (j, r) in vh.routes.iter().enumerate() {
                if let Action::DirectResponse { body: Some(b), .. } = &r.action
                    && b.len() > max_body
                {
                    return Err(ConfigError::new(
                        format!(
                            "{}.routes[{j}].direct_response.body",
                            index(path, "virtual_hosts", i)
                        ),
                        format!(
                            "{} bytes is more than max_direct_response_body_size_bytes ({max_body})",
                            b.len()
                        ),
                    ));
                }
            }
        }
        let mut internal_only_headers = Vec::new();
        for (i, h) in rc.internal_only_headers.iter().enumerate() {
            internal_only_headers.push(
                http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    ConfigError::new(index(path, "internal_only_headers", i), "not a header name")
                })?,
            );
        }
        Ok(Self {
            name: rc.name.clone(),
            virtual_hosts,
            exact,
            suffixes,
            prefixes,
            catch_all,
            ignore_port_in_host_matching: rc.ignore_port_in_host_matching,
            request_headers: HeaderMutations::from_proto(
                &rc.request_headers_to_add,
                &rc.request_headers_to_remove,
                path,
                "request_headers_to_add",
                "request_headers_to_remove",
            )?,
            response_headers: HeaderMutations::from_proto(
                &rc.response_headers_to_add,
                &rc.response_headers_to_remove,
                path,
                "response_headers_to_add",
                "response_headers_to_remove",
            )?,
            internal_only_headers,
            most_specific_wins: rc.most_specific_header_mutations_wins,
        })
    }

    /// Every cluster name a route refers to statically, with the route's path.
    pub fn referenced_clusters(&self) -> Vec<Arc<str>> {
        let mut out = Vec::new();
        for vh in &self.virtual_hosts {
            for r in &vh.routes {
                if let Action::Route(a) = &r.action {
                    match &a.cluster {
                        ClusterSpecifier::Cluster(c) => out.push(c.clone()),
                        ClusterSpecifier::Weighted(w, _) => {
                            out.extend(w.iter().map(|w| w.name.clone()))
                        }
                        ClusterSpecifier::Header(_) => {}
                    }
                }
            }
        }
        out
    }
}

impl VirtualHost {
    fn from_proto(vh: &route::VirtualHost, path: &str) -> Result<Self, ConfigError> {
        let mut routes = Vec::with_capacity(vh.routes.len());
        for (i, r) in vh.routes.iter().enumerate() {
            routes.push(Route::from_proto(r, &index(path, "routes", i))?);
        }
        let require_tls = match vh.require_tls {
            0 => RequireTls::None,
            1 => RequireTls::ExternalOnly,
            2 => RequireTls::All,
            n => {
                return Err(ConfigError::new(
                    join(path, "require_tls"),
                    format!("unknown value {n}"),
                ));
            }
        };
        Ok(Self {
            name: vh.name.clone(),
            routes,
            request_headers: HeaderMutations::from_proto(
                &vh.request_headers_to_add,
                &vh.request_headers_to_remove,
                path,
                "request_headers_to_add",
                "request_headers_to_remove",
            )?,
            response_headers: HeaderMutations::from_proto(
                &vh.response_headers_to_add,
                &vh.response_headers_to_remove,
                path,
                "response_headers_to_add",
                "response_headers_to_remove",
            )?,
            require_tls,
            include_request_attempt_count: vh.include_request_attempt_count,
            include_attempt_count_in_response: vh.include_attempt_count_in_response,
        })
    }
}

impl Route {
    fn from_proto(r: &route::Route, path: &str) -> Result<Self, ConfigError> {
        let m = r
            .r#match
            .as_ref()
            .ok_or_else(|| ConfigError::new(join(path, "match"), "is required"))?;
        let matcher = RouteMatch::from_proto(m, &join(path, "match"))?;
        use route::route::Action as A;
        let action = match &r.action {
            Some(A::Route(a)) => Action::Route(RouteAction::from_proto(a, &join(path, "route"))?),
            Some(A::Redirect(rd)) => {
                Action::Redirect(Redirect::from_proto(rd, &join(path, "redirect"))?)
            }
            Some(A::DirectResponse(d)) => {
                let p = join(path, "direct_response");
                if !(200..600).contains(&d.status) {
                    return Err(ConfigError::new(
                        join(&p, "status"),
                        format!("{} is not in [200, 600)", d.status),
                    ));
                }
                let body = match &d.body {
                    None => None,
                    Some(ds) => Some(data_source(ds, &join(&p, "body"))?),
                };
                Action::DirectResponse {
                    status: d.status as u16,
                    body,
                }
            }
            Some(A::FilterAction(_)) => {
                return Err(ConfigError::unsupported(join(path, "filter_action")));
            }
            Some(A::NonForwardingAction(_)) => {
                return Err(ConfigError::unsupported(join(
                    path,
                    "non_forwarding_action",
                )));
            }
            None => {
                return Err(ConfigError::new(
                    path,
                    "one of route, redirect or direct_response is required",
                ));
            }
        };
        Ok(Self {
            name: r.name.clone(),
            matcher,
            action,
            request_headers: HeaderMutations::from_proto(
                &r.request_headers_to_add,
                &r.request_headers_to_remove,
                path,
                "request_headers_to_add",
                "request_headers_to_remove",
            )?,
            response_headers: HeaderMutations::from_proto(
                &r.response_headers_to_add,
                &r.response_headers_to_remove,
                path,
                "response_headers_to_add",
                "response_headers_to_remove",
            )?,
        })
    }
}

/// Reads an inline DataSource (files are read once, now).
pub fn data_source(
    ds: &envoy_types::pb::envoy::config::core::v3::DataSource,
    path: &str,
) -> Result<bytes::Bytes, ConfigError> {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier as S;
    match &ds.specifier {
        Some(S::InlineString(s)) => Ok(bytes::Bytes::from(s.clone())),
        Some(S::InlineBytes(b)) => Ok(bytes::Bytes::from(b.clone())),
        Some(S::Filename(f)) => std::fs::read(f)
            .map(bytes::Bytes::from)
            .map_err(|e| ConfigError::new(join(path, "filename"), format!("cannot read {f}: {e}"))),
        Some(S::EnvironmentVariable(v)) => std::env::var(v).map(bytes::Bytes::from).map_err(|_| {
            ConfigError::new(
                join(path, "environment_variable"),
                format!("{v} is not set"),
            )
        }),
        None => Ok(bytes::Bytes::new()),
    }
}

impl RouteMatch {
    fn from_proto(m: &route::RouteMatch, path: &str) -> Result<Self, ConfigError> {
        use route::route_match::PathSpecifier as P;
        let case_sensitive = m.case_sensitive.as_ref().map(|v| v.value).unwrap_or(true);
        let fold = |s: &String| {
            if case_sensitive {
                s.clone()
            } else {
                s.to_lowercase()
            }
        };
        let pm = match &m.path_specifier {
            Some(P::Prefix(p)) => PathMatch::Prefix(fold(p)),
            Some(P::Path(p)) => PathMatch::Path(fold(p)),
            Some(P::SafeRegex(r)) => {
                let re = if case_sensitive {
                    r.regex.clone()
                } else {
                    format!("(?i){}", r.regex)
                };
                PathMatch::Regex(full_regex(&re, &join(path, "safe_regex.regex"))?)
            }
            Some(P::PathSeparatedPrefix(p)) => {
                if p.contains(['?', '#']) || (p.ends_with('/') && p != "/") {
                    return Err(ConfigError::new(
                        join(path, "path_separated_prefix"),
                        "must not contain ?, # or end with /",
                    ));
                }
                PathMatch::PathSeparatedPrefix(fold(p))
            }
            Some(P::ConnectMatcher(_)) => {
                return Err(ConfigError::unsupported(join(path, "connect_matcher")));
            }
            Some(P::PathMatchPolicy(_)) => {
                return Err(ConfigError::unsupported(join(path, "path_match_policy")));
            }
            None => {
                return Err(ConfigError::new(
                    path,
                    "a path specifier (prefix, path, safe_regex, ...) is required",
                ));
            }
        };
        let mut headers = Vec::new();
        for (i, h) in m.headers.iter().enumerate() {
            headers.push(HeaderMatcher::from_proto(h, &index(path, "headers", i))?);
        }
        let mut query_parameters = Vec::new();
        for (i, q) in m.query_parameters.iter().enumerate() {
            let p = index(path, "query_parameters", i);
            use route::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
            let value = match &q.query_parameter_match_specifier {
                Some(Q::StringMatch(s)) => {
                    Some(StringMatch::from_proto(s, &join(&p, "string_match"))?)
                }
                Some(Q::PresentMatch(true)) | None => None,
                Some(Q::PresentMatch(false)) => {
                    return Err(ConfigError::new(
                        join(&p, "present_match"),
                        "present_match: false is not allowed",
                    ));
                }
            };
            query_parameters.push(QueryParameterMatcher {
                name: q.name.clone(),
                value,
            });
        }
        Ok(Self {
            path: pm,
            case_sensitive,
            headers,
            query_parameters,
            grpc: m.grpc.is_some(),
        })
    }
}

impl HeaderMatcher {
    fn from_proto(h: &route::HeaderMatcher, path: &str) -> Result<Self, ConfigError> {
        use route::header_matcher::HeaderMatchSpecifier as H;
        let kind = match &h.header_match_specifier {
            None => HeaderMatchKind::Present(true),
            Some(H::PresentMatch(p)) => HeaderMatchKind::Present(*p),
            Some(H::ExactMatch(s)) => HeaderMatchKind::String(StringMatch::exact(s)),
            Some(H::PrefixMatch(s)) => HeaderMatchKind::String(StringMatch::prefix(s)),
            Some(H::SuffixMatch(s)) => HeaderMatchKind::String(StringMatch::suffix(s)),
            Some(H::ContainsMatch(s)) => HeaderMatchKind::String(StringMatch::contains(s)),
            Some(H::SafeRegexMatch(r)) => HeaderMatchKind::String(StringMatch::regex(full_regex(
                &r.regex,
                &join(path, "safe_regex_match.regex"),
            )?)),
            Some(H::StringMatch(s)) => {
                HeaderMatchKind::String(StringMatch::from_proto(s, &join(path, "string_match"))?)
            }
            Some(H::RangeMatch(r)) => HeaderMatchKind::Range(r.start, r.end),
        };
        Ok(Self {
            name: h.name.to_ascii_lowercase(),
            kind,
            invert: h.invert_match,
            treat_missing_as_empty: h.treat_missing_header_as_empty,
        })
    }
}

impl RouteAction {
    fn from_proto(a: &route::RouteAction, path: &str) -> Result<Self, ConfigError> {
        use route::route_action::ClusterSpecifier as C;
        let cluster = match &a.cluster_specifier {
            Some(C::Cluster(c)) if !c.is_empty() => {
                ClusterSpecifier::Cluster(Arc::from(c.as_str()))
            }
            Some(C::Cluster(_)) => {
                return Err(ConfigError::new(join(path, "cluster"), "must not be empty"));
            }
            Some(C::ClusterHeader(h)) => ClusterSpecifier::Header(
                http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    ConfigError::new(join(path, "cluster_header"), "not a header name")
                })?,
            ),
            Some(C::WeightedClusters(w)) => {
                let wp = join(path, "weighted_clusters");
                if w.clusters.is_empty() {
                    return Err(ConfigError::new(
                        join(&wp, "clusters"),
                        "at least one cluster is required",
                    ));
                }
                let mut list = Vec::new();
                for (i, c) in w.clusters.iter().enumerate() {
                    let cp = index(&wp, "clusters", i);
                    if c.name.is_empty() {
                        return Err(ConfigError::new(join(&cp, "name"), "must not be empty"));
                    }
                    use route::weighted_cluster::cluster_weight::HostRewriteSpecifier as HR;
                    list.push(WeightedCluster {
                        name: Arc::from(c.name.as_str()),
                        weight: c.weight.as_ref().map(|v| v.value as u64).unwrap_or(0),
                        request_headers: HeaderMutations::from_proto(
                            &c.request_headers_to_add,
                            &c.request_headers_to_remove,
                            &cp,
                            "request_headers_to_add",
                            "request_headers_to_remove",
                        )?,
                        response_headers: HeaderMutations::from_proto(
                            &c.response_headers_to_add,
                            &c.response_headers_to_remove,
                            &cp,
                            "response_headers_to_add",
                            "response_headers_to_remove",
                        )?,
                        host_rewrite_literal: c
                            .host_rewrite_specifier
                            .as_ref()
                            .map(|HR::HostRewriteLiteral(h)| h.clone()),
                    });
                }
                let sum: u64 = list.iter().map(|c| c.weight).sum();
                let total = match &w.total_weight {
                    Some(t) if t.value as u64 != sum => {
                        return Err(ConfigError::new(
                            join(&wp, "total_weight"),
                            format!("is {} but the weights add up to {sum}", t.value),
                        ));
                    }
                    _ => sum,
                };
                if total == 0 {
                    return Err(ConfigError::new(
                        join(&wp, "clusters"),
                        "the weights must add up to more than 0",
                    ));
                }
                ClusterSpecifier::Weighted(list, total)
            }
            Some(C::ClusterSpecifierPlugin(_)) | Some(C::InlineClusterSpecifierPlugin(_)) => {
                return Err(ConfigError::unsupported(join(
                    path,
                    "cluster_specifier_plugin",
                )));
            }
            None => {
                return Err(ConfigError::new(
                    path,
                    "one of cluster, cluster_header or weighted_clusters is required",
                ));
            }
        };
        let cluster_not_found_status = match a.cluster_not_found_response_code {
            0 => 503,
            1 => 404,
            2 => 500,
            n => {
                return Err(ConfigError::new(
                    join(path, "cluster_not_found_response_code"),
                    format!("unknown value {n}"),
                ));
            }
        };
        let regex_rewrite = match &a.regex_rewrite {
            None => None,
            Some(r) => {
                let p = join(path, "regex_rewrite");
                let pat = r
                    .pattern
                    .as_ref()
                    .ok_or_else(|| ConfigError::new(join(&p, "pattern"), "is required"))?;
                let re = regex::Regex::new(&pat.regex).map_err(|e| {
                    ConfigError::new(join(&p, "pattern.regex"), format!("invalid regex: {e}"))
                })?;
                Some((re, re2_substitution(&r.substitution)))
            }
        };
        if a.path_rewrite_policy.is_some() {
            return Err(ConfigError::unsupported(join(path, "path_rewrite_policy")));
        }
        use route::route_action::HostRewriteSpecifier as HR;
        let host_rewrite = match &a.host_rewrite_specifier {
            None => HostRewrite::None,
            Some(HR::HostRewriteLiteral(h)) => HostRewrite::Literal(h.clone()),
            Some(HR::AutoHostRewrite(b)) if b.value => HostRewrite::Auto,
            Some(HR::AutoHostRewrite(_)) => HostRewrite::None,
            Some(HR::HostRewriteHeader(_)) => {
                return Err(ConfigError::unsupported(join(path, "host_rewrite_header")));
            }
            Some(HR::HostRewritePathRegex(_)) => {
                return Err(ConfigError::unsupported(join(
                    path,
                    "host_rewrite_path_regex",
                )));
            }
            Some(HR::HostRewrite(_)) => {
                return Err(ConfigError::unsupported(join(path, "host_rewrite")));
            }
        };
        let mut upgrades = Vec::new();
        for (i, u) in a.upgrade_configs.iter().enumerate() {
            if u.connect_config.is_some() {
                return Err(ConfigError::unsupported(join(
                    &index(path, "upgrade_configs", i),
                    "connect_config",
                )));
            }
            upgrades.push((
                u.upgrade_type.to_ascii_lowercase(),
                u.enabled.as_ref().map(|v| v.value).unwrap_or(true),
            ));
        }
        let timeout = timeout_or(
            a.timeout.as_ref(),
            Some(Duration::from_secs(15)),
            &join(path, "timeout"),
        )?;
        Ok(Self {
            cluster,
            cluster_not_found_status,
            prefix_rewrite: (!a.prefix_rewrite.is_empty()).then(|| a.prefix_rewrite.clone()),
            regex_rewrite,
            host_rewrite,
            timeout,
            timeout_ms_header: timeout.map(|t| http::HeaderValue::from(t.as_millis() as u64)),
            idle_timeout: match &a.idle_timeout {
                None => None,
                Some(d) => Some(timeout_or(Some(d), None, &join(path, "idle_timeout"))?),
            },
            upgrades,
        })
    }
}

impl Redirect {
    fn from_proto(r: &route::RedirectAction, path: &str) -> Result<Self, ConfigError> {
        use route::redirect_action::{PathRewriteSpecifier as P, SchemeRewriteSpecifier as S};
        let scheme = match &r.scheme_rewrite_specifier {
            Some(S::HttpsRedirect(true)) => Some("https".to_string()),
            Some(S::HttpsRedirect(false)) | None => None,
            Some(S::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
        };
        let path_change = match &r.path_rewrite_specifier {
            None => RedirectPath::Keep,
            Some(P::PathRedirect(p)) => RedirectPath::Path(p.clone()),
            Some(P::PrefixRewrite(p)) => RedirectPath::Prefix(p.clone()),
            Some(P::RegexRewrite(rr)) => {
                let pat = rr.pattern.as_ref().ok_or_else(|| {
                    ConfigError::new(join(path, "regex_rewrite.pattern"), "is required")
                })?;
                let re = regex::Regex::new(&pat.regex).map_err(|e| {
                    ConfigError::new(
                        join(path, "regex_rewrite.pattern.regex"),
                        format!("invalid regex: {e}"),
                    )
                })?;
                RedirectPath::Regex(re, re2_substitution(&rr.substitution))
            }
            Some(P::PathRewrite(_)) => {
                return Err(ConfigError::unsupported(join(path, "path_rewrite")));
            }
        };
        let status = match r.response_code {
            0 => 301,
            1 => 302,
            2 => 303,
            3 => 307,
            4 => 308,
            n => {
                return Err(ConfigError::new(
                    join(path, "response_code"),
                    format!("unknown value {n}"),
                ));
            }
        };
        if r.port_redirect > 65535 {
            return Err(ConfigError::new(
                join(path, "port_redirect"),
                "is not a port",
            ));
        }
        Ok(Self {
            scheme,
            host: (!r.host_redirect.is_empty()).then(|| r.host_redirect.clone()),
            port: (r.port_redirect != 0).then_some(r.port_redirect as u16),
            path: path_change,
            status,
            strip_query: r.strip_query,
        })
    }
}

/// RE2 substitutions use `\1`; the regex crate uses `${1}`.
fn re2_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                let d = chars.next().unwrap_or('0');
                out.push_str(&format!("${{{d}}}"));
            }
            '\\' if chars.peek() == Some(&'\\') => {
                chars.next();
                out.push('\\');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_syntax() {
        assert_eq!(re2_substitution(r"/v2/\1/x$"), "/v2/${1}/x$$");
    }
}
