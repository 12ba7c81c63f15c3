//! Route selection: virtual host by :authority, then the first route whose match holds.
//! Pure functions over the request's parts.

use crate::config::route::{
    HeaderMatchKind, HeaderMatcher, PathMatch, Route, RouteConfig, RouteMatch, VirtualHost,
};

/// Finds the virtual host for `authority` in Envoy's order: exact, longest `*suffix`,
/// longest `prefix*`, then `*`.
pub fn find_virtual_host<'a>(rc: &'a RouteConfig, authority: &str) -> Option<&'a VirtualHost> {
    // Hosts arrive lower-case almost always: only a host with capitals is copied.
    let lower = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(authority.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(authority)
    };
    let mut host = &*lower;
    if rc.ignore_port_in_host_matching {
        host = strip_port(host);
    }
    let idx = rc
        .exact
        .get(host)
        .copied()
        .or_else(|| {
            rc.suffixes
                .iter()
                .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
                .map(|(_, i)| *i)
        })
        .or_else(|| {
            rc.prefixes
                .iter()
                .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
                .map(|(_, i)| *i)
        })
        .or(rc.catch_all)?;
    rc.virtual_hosts.get(idx)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find("]:") {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i)
            if host[i + 1..].bytes().all(|b| b.is_ascii_digit())
                && host[..i].find(':').is_none() =>
        {
            &host[..i]
        }
        _ => host,
    }
}

/// The request facts route matching reads.
pub struct RequestFacts<'a> {
    /// The :path (with query).
    pub path: &'a str,
    /// The headers.
    pub headers: &'a http::HeaderMap,
    /// :method.
    pub method: &'a str,
    /// :authority.
    pub authority: &'a str,
    /// :scheme.
    pub scheme: &'a str,
}

/// The first route of `vh` that matches.
pub fn find_route<'a>(vh: &'a VirtualHost, req: &RequestFacts<'_>) -> Option<&'a Route> {
    vh.routes.iter().find(|r| route_matches(&r.matcher, req))
}

/// Whether a route's match conditions hold for the request.
pub fn route_matches(m: &RouteMatch, req: &RequestFacts<'_>) -> bool {
    let (path, query) = match req.path.find('?') {
        Some(i) => (&req.path[..i], Some(&req.path[i + 1..])),
        None => (req.path, None),
    };
    let path_for_match = req.path.split('#').next().unwrap_or(req.path);
    let folded;
    let (p, pq) = if m.case_sensitive {
        (path, path_for_match)
    } else {
        folded = (path.to_lowercase(), path_for_match.to_lowercase());
        (folded.0.as_str(), folded.1.as_str())
    };
    let ok = match &m.path {
        PathMatch::Prefix(pre) => pq.starts_with(pre.as_str()),
        PathMatch::Path(exact) => p == exact,
        PathMatch::Regex(re) => re.is_match(path),
        PathMatch::PathSeparatedPrefix(pre) => {
            p.starts_with(pre.as_str()) && matches!(p.as_bytes().get(pre.len()), None | Some(b'/'))
        }
    };
    if !ok {
        return false;
    }
    if m.grpc && !is_grpc(req.headers) {
        return false;
    }
    if !m.headers.iter().all(|h| header_matches(h, req)) {
        return false;
    }
    m.query_parameters.iter().all(|q| {
        let value = query.and_then(|qs| {
            qs.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == q.name).then_some(v)
            })
        });
        match (&q.value, value) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(sm), Some(v)) => sm.matches(v),
        }
    })
}

/// Whether the request is gRPC (content-type application/grpc*).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct == "application/grpc"
                || ct.starts_with("application/grpc+")
                || ct.starts_with("application/grpc;")
        })
}

fn header_matches(h: &HeaderMatcher, req: &RequestFacts<'_>) -> bool {
    let joined;
    let value: Option<&str> = match h.name.as_str() {
        ":method" => Some(req.method),
        ":path" => Some(req.path),
        ":authority" | "host" => Some(req.authority),
        ":scheme" => Some(req.scheme),
        name => {
            let mut all = req
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok());
            match (all.next(), all.next()) {
                (None, _) => None,
                (Some(one), None) => Some(one),
                (Some(first), Some(second)) => {
                    let mut s = format!("{first},{second}");
                    for v in all {
                        s.push(',');
                        s.push_str(v);
                    }
                    joined = s;
                    Some(joined.as_str())
                }
            }
        }
    };
    let value = match value {
        None if h.treat_missing_as_empty => Some(""),
        v => v,
    };
    let result = match (&h.kind, value) {
        (HeaderMatchKind::Present(want), v) => v.is_some() == *want,
        (_, None) => return false,
        (HeaderMatchKind::String(sm), Some(v)) => sm.matches(v),
        (HeaderMatchKind::Range(start, end), Some(v)) => {
            v.parse::<i64>().is_ok_and(|n| n >= *start && n < *end)
        }
    };
    result != h.invert
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::json::{decode, parse_yaml};
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

    fn rc(yaml: &str) -> RouteConfig {
        let (p, _, _) =
            decode::<RouteConfiguration>(parse_yaml(yaml, "-").unwrap(), "", false).unwrap();
        RouteConfig::from_proto(&p, "").unwrap()
    }

    fn facts<'a>(path: &'a str, headers: &'a http::HeaderMap) -> RequestFacts<'a> {
        RequestFacts {
            path,
            headers,
            method: "GET",
            authority: "x",
            scheme: "http",
        }
    }

    #[test]
    fn virtual_host_order() {
        let r = rc(r#"
virtual_hosts:
- {name: exact, domains: ["a.com", "a.com:8080"], routes: []}
- {name: suffix, domains: ["*.a.com"], routes: []}
- {name: longer_suffix, domains: ["*.b.a.com"], routes: []}
- {name: prefix, domains: ["api.*"], routes: []}
- {name: any, domains: ["*"], routes: []}
"#);
        let name = |h: &str| find_virtual_host(&r, h).map(|v| v.name.clone()).unwrap();
        assert_eq!(name("a.com"), "exact");
        assert_eq!(name("A.COM:8080"), "exact");
        assert_eq!(name("x.a.com"), "suffix");
        assert_eq!(name("x.b.a.com"), "longer_suffix");
        assert_eq!(name("api.z.org"), "prefix");
        assert_eq!(name("other"), "any");
        assert_eq!(name("a.com:9"), "any");
    }

    #[test]
    fn ignore_port_in_host_matching() {
        let r = rc(
            "ignore_port_in_host_matching: true\nvirtual_hosts: [{name: v, domains: [a.com], routes: []}]",
        );
        assert!(find_virtual_host(&r, "a.com:1234").is_some());
        assert!(find_virtual_host(&r, "b.com:1234").is_none());
    }

    #[test]
    fn path_matching() {
        let r = rc(r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - {name: exact, match: {path: /exact}, direct_response: {status: 200}}
  - {name: regex, match: {safe_regex: {regex: "/re/[0-9]+"}}, direct_response: {status: 200}}
  - {name: sep, match: {path_separated_prefix: /api}, direct_response: {status: 200}}
  - {name: nocase, match: {prefix: /CaSe, case_sensitive: false}, direct_response: {status: 200}}
  - {name: hdr, match: {prefix: /h, headers: [{name: x-a, string_match: {exact: b}}, {name: x-not, present_match: true, invert_match: true}]}, direct_response: {status: 200}}
  - {name: q, match: {prefix: /q, query_parameters: [{name: k, string_match: {prefix: v}}]}, direct_response: {status: 200}}
  - {name: all, match: {prefix: /}, direct_response: {status: 200}}
"#);
        let vh = &r.virtual_hosts[0];
        let mut h = http::HeaderMap::new();
        let name = |p: &str, h: &http::HeaderMap| {
            find_route(vh, &facts(p, h))
                .map(|r| r.name.clone())
                .unwrap()
        };
        assert_eq!(name("/exact", &h), "exact");
        assert_eq!(name("/exact?x=1", &h), "exact");
        assert_eq!(name("/exactly", &h), "all");
        assert_eq!(name("/re/123", &h), "regex");
        assert_eq!(name("/re/123?q", &h), "regex");
        assert_eq!(name("/re/12a", &h), "all");
        assert_eq!(name("/api", &h), "sep");
        assert_eq!(name("/api/x", &h), "sep");
        assert_eq!(name("/apix", &h), "all");
        assert_eq!(name("/case/x", &h), "nocase");
        assert_eq!(name("/h", &h), "all");
        h.insert("x-a", "b".parse().unwrap());
        assert_eq!(name("/h", &h), "hdr");
        h.insert("x-not", "1".parse().unwrap());
        assert_eq!(name("/h", &h), "all");
        assert_eq!(name("/q?k=vv", &h), "q");
        assert_eq!(name("/q?k=x", &h), "all");
    }
}
