//! What a matched route does to a request before it is forwarded (header mutations, path and
//! host rewrites) and the redirects it answers with.

use http::{HeaderName, HeaderValue, Request, Response};

use super::Body;
use crate::config::route::{Redirect, RedirectPath};

static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");

/// Applies request header mutations of every level, most specific last unless the route
/// configuration says most specific wins.
pub fn apply_request_mutations(
    rc: &crate::config::route::RouteConfig,
    vh: &crate::config::route::VirtualHost,
    route: &crate::config::route::Route,
    weighted: Option<&crate::config::route::WeightedCluster>,
    headers: &mut http::HeaderMap,
) {
    let levels = [
        weighted.map(|w| &w.request_headers),
        Some(&route.request_headers),
        Some(&vh.request_headers),
        Some(&rc.request_headers),
    ];
    if rc.most_specific_wins {
        for l in levels.iter().rev().flatten() {
            l.apply(headers);
        }
    } else {
        for l in levels.iter().flatten() {
            l.apply(headers);
        }
    }
}

/// Applies the route's host and path rewrites, recording the original path and host.
pub fn rewrite<B>(
    action: &crate::config::route::RouteAction,
    weighted: Option<&crate::config::route::WeightedCluster>,
    req: &mut Request<B>,
    pm: &crate::config::route::PathMatch,
) {
    let host = weighted
        .and_then(|w| w.host_rewrite_literal.clone())
        .or_else(|| match &action.host_rewrite {
            crate::config::route::HostRewrite::Literal(h) => Some(h.clone()),
            _ => None,
        });
    if let Some(h) = host
        && let Ok(v) = HeaderValue::from_str(&h)
    {
        if let Some(orig) = req.headers().get(http::header::HOST).cloned() {
            req.headers_mut().insert(X_FORWARDED_HOST.clone(), orig);
        }
        req.headers_mut().insert(http::header::HOST, v);
    }
    if action.prefix_rewrite.is_none() && action.regex_rewrite.is_none() {
        return;
    }
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let (path, query) = match pq.find('?') {
        Some(i) => (pq[..i].to_string(), pq[i..].to_string()),
        None => (pq.clone(), String::new()),
    };
    let new_path = if let Some(pre) = &action.prefix_rewrite {
        match pm {
            crate::config::route::PathMatch::Prefix(p)
            | crate::config::route::PathMatch::PathSeparatedPrefix(p) => {
                let rest = if path.len() >= p.len() {
                    &path[p.len()..]
                } else {
                    ""
                };
                Some(format!("{pre}{rest}"))
            }
            crate::config::route::PathMatch::Path(_) => Some(pre.clone()),
            crate::config::route::PathMatch::Regex(_) => Some(pre.clone()),
        }
    } else {
        action
            .regex_rewrite
            .as_ref()
            .map(|(re, sub)| re.replace_all(&path, sub.as_str()).into_owned())
    };
    if let Some(np) = new_path {
        if let Ok(v) = HeaderValue::from_str(&path) {
            req.headers_mut().insert(X_ENVOY_ORIGINAL_PATH.clone(), v);
        }
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = format!("{np}{query}").parse() {
            parts.path_and_query = Some(pq);
            if let Ok(u) = http::Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
        }
    }
}

/// Builds the redirect response for a request.
pub fn redirect(
    rd: &Redirect,
    authority: &str,
    path_and_query: &str,
    pm: &crate::config::route::PathMatch,
) -> Response<Body> {
    let (host_only, port) = match authority.rsplit_once(':') {
        Some((h, p))
            if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(']')
                || authority.starts_with('[') && authority.contains("]:") =>
        {
            (h.to_string(), Some(p.to_string()))
        }
        _ => (authority.to_string(), None),
    };
    let scheme = rd.scheme.clone().unwrap_or_else(|| "http".into());
    let host = rd.host.clone().unwrap_or(host_only);
    let port = match (rd.port, &rd.scheme) {
        (Some(p), _) => Some(p.to_string()),
        (None, Some(_)) => None,
        (None, None) => port,
    };
    let default_port = (scheme == "http" && port.as_deref() == Some("80"))
        || (scheme == "https" && port.as_deref() == Some("443"));
    let (path, query) = match path_and_query.find('?') {
        Some(i) => (&path_and_query[..i], &path_and_query[i..]),
        None => (path_and_query, ""),
    };
    let new_path = match &rd.path {
        RedirectPath::Keep => path.to_string(),
        RedirectPath::Path(p) => p.clone(),
        RedirectPath::Prefix(pre) => match pm {
            crate::config::route::PathMatch::Prefix(p)
            | crate::config::route::PathMatch::PathSeparatedPrefix(p) => {
                format!("{pre}{}", path.get(p.len()..).unwrap_or(""))
            }
            _ => pre.clone(),
        },
        RedirectPath::Regex(re, sub) => re.replace_all(path, sub.as_str()).into_owned(),
    };
    let (new_path, query) = match new_path.find('?') {
        Some(i) => (new_path[..i].to_string(), new_path[i..].to_string()),
        None => (new_path, query.to_string()),
    };
    let query = if rd.strip_query { String::new() } else { query };
    let port = match port {
        Some(p) if !default_port => format!(":{p}"),
        _ => String::new(),
    };
    let location = format!("{scheme}://{host}{port}{new_path}{query}");
    let mut r = Response::new(super::empty_body());
    *r.status_mut() =
        http::StatusCode::from_u16(rd.status).unwrap_or(http::StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}
