//! The admin API on `admin.address`: readiness, stats, config dump, clusters, listeners,
//! health-check toggles, logging, draining and shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::bootstrap::json::to_json;
use crate::http::{Body, full_body};
use crate::server::{Server, ServerState};
use crate::stats::{TextQuery, render_prometheus, render_text};

/// Serves the admin API on `listener` until shutdown.
pub async fn serve(server: Arc<Server>, listener: TcpListener) {
    // Envoy's admin listener stats, which pilot-agent reads for active connections.
    let total = server.stats.counter("listener.admin.downstream_cx_total");
    let active = server.stats.gauge("listener.admin.downstream_cx_active");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let server = server.clone();
        total.inc();
        active.inc();
        let active = active.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&server, req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            active.dec();
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full_body(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn text(body: impl Into<Bytes>) -> Response<Body> {
    reply(StatusCode::OK, "text/plain; charset=UTF-8", body)
}

fn query_params(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The byte two hex digits spell, if they are hex digits.
fn hex_byte(hi: u8, lo: u8) -> Result<u8, ()> {
    let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8).ok_or(());
    Ok(d(hi)? << 4 | d(lo)?)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match hex_byte(b[i + 1], b[i + 2]) {
                Ok(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Handles one admin request.
pub fn handle(server: &Arc<Server>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let params = query_params(req.uri().query());
    let has = |k: &str| params.iter().any(|(p, _)| p == k);
    let get = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.clone());
    let post = req.method() == Method::POST;
    let mutating = matches!(
        path.as_str(),
        "/quitquitquit"
            | "/healthcheck/fail"
            | "/healthcheck/ok"
            | "/drain_listeners"
            | "/logging"
            | "/reset_counters"
    );
    if mutating && !post {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "This admin endpoint requires POST.\n",
        );
    }
    match path.as_str() {
        "/ready" => {
            let state = server.state.value();
            let (code, name) = match state {
                0 => (StatusCode::OK, "LIVE"),
                1 => (StatusCode::SERVICE_UNAVAILABLE, "DRAINING"),
                2 => (StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING"),
                _ => (StatusCode::SERVICE_UNAVAILABLE, "INITIALIZING"),
            };
            reply(code, "text/plain; charset=UTF-8", format!("{name}\n"))
        }
        "/server_info" => {
            let state = match server.state.value() {
                0 => "LIVE",
                1 => "DRAINING",
                2 => "PRE_INITIALIZING",
                _ => "INITIALIZING",
            };
            let info = serde_json::json!({
                "version": crate::bootstrap::cli::version_line(),
                "state": state,
                "hot_restart_version": "disabled",
                "command_line_options": {"concurrency": server.concurrency},
                "node": {"id": server.config.node.id, "cluster": server.config.node.cluster},
                "uptime_current_epoch": format!("{}s", server.uptime()),
                "uptime_all_epochs": format!("{}s", server.uptime()),
            });
            reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&info).unwrap_or_default(),
            )
        }
        "/stats" => {
            let filter = match get("filter") {
                Some(f) if !f.is_empty() => match regex::Regex::new(&f) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        return reply(
                            StatusCode::BAD_REQUEST,
                            "text/plain",
                            format!("Invalid regex: {e}\n"),
                        );
                    }
                },
                _ => None,
            };
            refresh_server_gauges(server);
            if get("format").as_deref() == Some("prometheus") {
                return text(render_prometheus(
                    &server.stats,
                    has("usedonly"),
                    filter.as_ref(),
                ));
            }
            if get("format").as_deref() == Some("json") {
                let body = render_text(
                    &server.stats,
                    &TextQuery {
                        used_only: has("usedonly"),
                        filter,
                    },
                );
                let stats: Vec<serde_json::Value> = body
                    .lines()
                    .filter_map(|l| l.split_once(": "))
                    .map(|(n, v)| match v.parse::<i64>() {
                        Ok(i) => serde_json::json!({"name": n, "value": i}),
                        Err(_) => serde_json::json!({"name": n, "value": v}),
                    })
                    .collect();
                return reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::json!({"stats": stats}).to_string(),
                );
            }
            text(render_text(
                &server.stats,
                &TextQuery {
                    used_only: has("usedonly"),
                    filter,
                },
            ))
        }
        "/stats/prometheus" => {
            refresh_server_gauges(server);
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=UTF-8",
                render_prometheus(&server.stats, has("usedonly"), None),
            )
        }
        "/config_dump" => {
            let r = config_dump(server, get("mask").or(get("resource")), has("include_eds"));
            crate::bootstrap::descriptors::release_later();
            r
        }
        "/clusters" => clusters(server, get("format").as_deref() == Some("json")),
        "/listeners" => {
            let entries = server.listeners.active();
            let addr = |e: &crate::listener::manager::ListenerEntry| {
                e.bound.unwrap_or(e.listener.config.address)
            };
            if get("format").as_deref() == Some("json") {
                let v: Vec<_> = entries
                    .iter()
                    .map(|e| {
                        let a = addr(e);
                        serde_json::json!({"name": &*e.listener.config.name, "local_address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}}})
                    })
                    .collect();
                reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::json!({"listener_statuses": v}).to_string(),
                )
            } else {
                text(
                    entries
                        .iter()
                        .map(|e| format!("{}::{}\n", e.listener.config.name, addr(e)))
                        .collect::<String>(),
                )
            }
        }
        "/memory" => {
            let rss = crate::sys::rss_bytes().unwrap_or(0);
            reply(StatusCode::OK, "application/json", serde_json::json!({"allocated": rss.to_string(), "heap_size": rss.to_string(), "pageheap_unmapped": "0", "pageheap_free": "0", "total_thread_cache": "0", "total_physical_bytes": rss.to_string()}).to_string())
        }
        "/quitquitquit" => {
            server.request_shutdown();
            text("OK\n")
        }
        "/healthcheck/fail" => {
            server.health_failed.store(true, Ordering::Relaxed);
            server.stats.gauge("server.live").set(0);
            text("OK\n")
        }
        "/healthcheck/ok" => {
            server.health_failed.store(false, Ordering::Relaxed);
            server.stats.gauge("server.live").set(1);
            text("OK\n")
        }
        "/drain_listeners" => {
            server.drain_listeners(has("inboundonly"), has("graceful"), has("skip_exit"));
            text("OK\n")
        }
        "/logging" => crate::app::logging_admin(&params),
        "/" => text(
            "admin commands are: /ready /server_info /stats /stats/prometheus /config_dump /clusters /listeners /memory /logging /healthcheck/fail /healthcheck/ok /drain_listeners /quitquitquit\n",
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "invalid path. admin commands are listed at /\n",
        ),
    }
}

fn config_dump(server: &Server, mask: Option<String>, include_eds: bool) -> Response<Body> {
    let cfg = &server.config;
    let bootstrap = serde_json::json!({
        "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
        "bootstrap": to_json(&cfg.bootstrap),
        "last_updated": timestamp(server.started_at),
    });
    let typed = |v: serde_json::Value, name: &str| with_type(v, name);
    const CLUSTER: &str = "envoy.config.cluster.v3.Cluster";
    const LISTENER: &str = "envoy.config.listener.v3.Listener";
    let mut static_clusters = Vec::new();
    let mut dynamic_clusters = Vec::new();
    for c in server.clusters.all() {
        let item = |with_version: bool| {
            let mut v = serde_json::json!({
                "cluster": typed(to_json(&c.config.proto.decode()), CLUSTER),
                "last_updated": timestamp(c.last_updated),
            });
            if with_version {
                v["version_info"] = c.version.clone().into();
            }
            v
        };
        if c.added_via_api {
            dynamic_clusters.push(item(true));
        } else {
            static_clusters.push(item(false));
        }
    }
    let warming_clusters: Vec<_> = server
        .clusters
        .warming()
        .iter()
        .map(|c| {
            serde_json::json!({
                "version_info": c.version,
                "cluster": typed(to_json(&c.config.proto.decode()), CLUSTER),
                "last_updated": timestamp(c.last_updated),
            })
        })
        .collect();
    let versions = server.xds_versions();
    let mut clusters = serde_json::json!({
        "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
        "static_clusters": static_clusters,
        "dynamic_active_clusters": dynamic_clusters,
        "dynamic_warming_clusters": warming_clusters,
    });
    if let Some(v) = versions.get("cds") {
        clusters["version_info"] = v.clone().into();
    }
    let mut static_listeners = Vec::new();
    let mut dynamic: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    let state = |e: &crate::listener::manager::ListenerEntry| {
        serde_json::json!({
            "version_info": e.version,
            "listener": typed(to_json(&e.listener.config.proto.decode()), LISTENER),
            "last_updated": timestamp(e.last_updated),
        })
    };
    for e in server.listeners.active() {
        if e.added_via_api {
            dynamic.insert(
                e.listener.config.name.to_string(),
                serde_json::json!({"name": &*e.listener.config.name, "active_state": state(&e)}),
            );
        } else {
            static_listeners.push(serde_json::json!({
                "listener": typed(to_json(&e.listener.config.proto.decode()), LISTENER),
                "last_updated": timestamp(e.last_updated),
            }));
        }
    }
    for e in server.listeners.warming() {
        let name = e.listener.config.name.to_string();
        let slot = dynamic
            .entry(name.clone())
            .or_insert_with(|| serde_json::json!({"name": name}));
        slot["warming_state"] = state(&e);
    }
    let mut listeners = serde_json::json!({
        "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
        "static_listeners": static_listeners,
        "dynamic_listeners": dynamic.into_values().collect::<Vec<_>>(),
    });
    if let Some(v) = versions.get("lds") {
        listeners["version_info"] = v.clone().into();
    }
    let dynamic_routes: Vec<_> = server
        .rds
        .providers()
        .iter()
        .filter_map(|p| p.current())
        .map(|v| {
            serde_json::json!({
                "version_info": v.version,
                "route_config": typed(to_json(&v.proto.decode()), "envoy.config.route.v3.RouteConfiguration"),
                "last_updated": timestamp(v.last_updated),
            })
        })
        .collect();
    let endpoints = include_eds.then(|| {
        let mut seen = std::collections::BTreeSet::new();
        let dynamic: Vec<_> = server
            .clusters
            .all()
            .into_iter()
            .chain(server.clusters.warming())
            .filter_map(|c| c.assignment.load_full())
            .filter(|a| seen.insert(a.name.clone()))
            .map(|a| {
                serde_json::json!({
                    "version_info": a.version,
                    "endpoint_config": typed(to_json(&a.proto.decode()), "envoy.config.endpoint.v3.ClusterLoadAssignment"),
                    "last_updated": timestamp(a.last_updated),
                })
            })
            .collect();
        serde_json::json!({
            "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "dynamic_endpoint_configs": dynamic,
        })
    });
    let mut routes_static = Vec::new();
    for l in &cfg
        .bootstrap
        .static_resources
        .as_ref()
        .map(|s| s.listeners.clone())
        .unwrap_or_default()
    {
        for fc in &l.filter_chains {
            for f in &fc.filters {
                use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType as CT;
                use prost::Message;
                if let Some(CT::TypedConfig(a)) = &f.config_type
                    && let Ok(h) = envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager::decode(a.value.as_slice()) {
                        use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier as RS;
                        if let Some(RS::RouteConfig(rc)) = &h.route_specifier {
                            routes_static.push(serde_json::json!({"route_config": with_type(to_json(rc), "envoy.config.route.v3.RouteConfiguration")}));
                        }
                    }
            }
        }
    }
    let routes = serde_json::json!({
        "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
        "static_route_configs": routes_static,
        "dynamic_route_configs": dynamic_routes,
    });
    let mut all = vec![bootstrap, clusters];
    all.extend(endpoints);
    all.extend([listeners, routes, secrets_dump()]);
    let configs: Vec<_> = match mask.as_deref() {
        None | Some("") => all,
        Some(m) => {
            let want: Vec<&str> = m.split(',').collect();
            let keep = |t: &str| match t {
                "BootstrapConfigDump" => want.contains(&"bootstrap"),
                "ClustersConfigDump" => want.iter().any(|w| w.contains("clusters")),
                "ListenersConfigDump" => want.iter().any(|w| w.contains("listeners")),
                "RoutesConfigDump" => want.iter().any(|w| w.contains("route_configs")),
                "EndpointsConfigDump" => want.iter().any(|w| w.contains("endpoint")),
                "SecretsConfigDump" => want.iter().any(|w| w.contains("secrets")),
                _ => false,
            };
            all.into_iter()
                .filter(|c| {
                    c["@type"]
                        .as_str()
                        .map(|t| keep(t.rsplit('.').next().unwrap_or("")))
                        .unwrap_or(false)
                })
                .collect()
        }
    };
    let mut dump = serde_json::json!({"configs": configs});
    redact(&mut dump);
    reply(
        StatusCode::OK,
        "application/json",
        serde_json::to_string_pretty(&dump).unwrap_or_default(),
    )
}

/// The SecretsConfigDump: static secrets, secrets that arrived, and secrets still awaited.
fn secrets_dump() -> serde_json::Value {
    const SECRET: &str = "envoy.extensions.transport_sockets.tls.v3.Secret";
    let (mut statics, mut active, mut warming) = (Vec::new(), Vec::new(), Vec::new());
    for slot in crate::tls::secret::store().live() {
        let d = slot.dump();
        let mut v = serde_json::json!({"name": d.name});
        if let Some(t) = d.last_updated {
            v["last_updated"] = timestamp(t).into();
        }
        match &d.secret {
            Some(secret) => v["secret"] = with_type(to_json(secret), SECRET),
            None => v["secret"] = with_type(serde_json::json!({"name": d.name}), SECRET),
        }
        if d.is_static {
            statics.push(v);
            continue;
        }
        v["version_info"] = d.version.into();
        if d.secret.is_some() {
            active.push(v);
        } else {
            warming.push(v);
        }
    }
    serde_json::json!({
        "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
        "static_secrets": statics,
        "dynamic_active_secrets": active,
        "dynamic_warming_secrets": warming,
    })
}

/// Hides private keys wherever they appear (static secrets, inline TLS contexts, SDS
/// secrets), as Envoy redacts sensitive fields: inline values become `[redacted]`.
fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "private_key" || k == "privateKey" {
                    if let serde_json::Value::Object(ds) = child {
                        for (dk, dv) in ds.iter_mut() {
                            match dk.as_str() {
                                "inline_bytes" | "inlineBytes" => {
                                    *dv = "W3JlZGFjdGVkXQ==".into();
                                }
                                "inline_string" | "inlineString" => *dv = "[redacted]".into(),
                                _ => {}
                            }
                        }
                    }
                } else {
                    redact(child);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

/// A time as the proto3 JSON mapping writes a Timestamp (RFC 3339, UTC, milliseconds).
fn timestamp(t: std::time::SystemTime) -> String {
    crate::access_log::format::rfc3339_millis(t)
}

fn with_type(mut v: serde_json::Value, name: &str) -> serde_json::Value {
    if let serde_json::Value::Object(m) = &mut v {
        m.insert(
            "@type".into(),
            serde_json::Value::String(format!("type.googleapis.com/{name}")),
        );
    }
    v
}

fn clusters(server: &Server, json: bool) -> Response<Body> {
    let mut out = String::new();
    let mut jv = Vec::new();
    for c in server.clusters.all() {
        let name = &c.config.name;
        let t = &c.config.thresholds;
        if !json {
            out.push_str(&format!("{name}::default_priority::max_connections::{}\n{name}::default_priority::max_pending_requests::{}\n{name}::default_priority::max_requests::{}\n{name}::default_priority::max_retries::{}\n", t.max_connections, t.max_pending_requests, t.max_requests, t.max_retries));
            out.push_str(&format!("{name}::added_via_api::false\n"));
        }
        let mut hosts = Vec::new();
        for h in &c.all_hosts() {
            if json {
                let address = match &h.target {
                    crate::upstream::connect::Target::Socket(a) => {
                        serde_json::json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}})
                    }
                    crate::upstream::connect::Target::Pipe(p) => {
                        serde_json::json!({"pipe": {"path": p}})
                    }
                };
                hosts.push(serde_json::json!({"address": address, "weight": h.weight, "health_status": {"eds_health_status": if h.healthy { "HEALTHY" } else { "UNHEALTHY" }}, "stats": [{"name": "rq_active", "value": h.active_requests.load(Ordering::Relaxed)}]}));
            } else {
                out.push_str(&format!("{name}::{h}::rq_active::{}\n{name}::{h}::health_flags::{}\n{name}::{h}::weight::{}\n", h.active_requests.load(Ordering::Relaxed), if h.healthy { "healthy" } else { "/failed_eds_health" }, h.weight));
            }
        }
        jv.push(
            serde_json::json!({"name": &**name, "added_via_api": false, "host_statuses": hosts}),
        );
    }
    if json {
        reply(
            StatusCode::OK,
            "application/json",
            serde_json::json!({"cluster_statuses": jv}).to_string(),
        )
    } else {
        text(out)
    }
}

/// Updates the gauges that are read rather than counted: uptime and memory.
pub fn refresh_server_gauges(server: &Server) {
    server
        .stats
        .gauge("server.uptime")
        .set(server.uptime() as i64);
    if let Some(rss) = crate::sys::rss_bytes() {
        // Envoy reports its allocator's figures; the resident set is the closest honest one.
        server
            .stats
            .gauge("server.memory_physical_size")
            .set(rss as i64);
    }
    let active = crate::listener::ACTIVE_DOWNSTREAM.load(Ordering::Relaxed);
    server
        .stats
        .gauge("server.total_connections")
        .set(active as i64);
}

/// Marks the server LIVE (called once listeners are up).
pub fn set_live(server: &Server) {
    server.state.set(ServerState::Live as i64);
    server.stats.gauge("server.live").set(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_never_splits_characters() {
        assert_eq!(percent_decode("a%41+b"), "aA b");
        assert_eq!(percent_decode("%é%4"), "%é%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
