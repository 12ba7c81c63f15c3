//! xDS: the proxy programmed by the in-process control plane over ADS (state of the world and
//! delta): initial config, updates, warming, NACKs and reconnects.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use pilotfish::xds::harness::{ControlPlane, from_yaml};
use pilotfish::xds::type_url;

use crate::support::*;

/// A control plane on a fresh loopback port.
pub async fn control_plane() -> (ControlPlane, SocketAddr) {
    let cp = ControlPlane::new();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = cp.serve_tcp(l);
    (cp, addr)
}

/// A bootstrap whose listeners and clusters come over ADS (`GRPC` or `DELTA_GRPC`) from `cp`.
pub fn ads_bootstrap(cp: SocketAddr, api_type: &str, extra_clusters: &str) -> String {
    format!(
        r#"node: {{id: sidecar~10.0.0.1~app.ns~ns.svc.cluster.local, cluster: app.ns}}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 0s}}
  lds_config: {{ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 0s}}
static_resources:
  clusters:
{}{extra_clusters}"#,
        cluster("xds-grpc", &[cp], H2_UPSTREAM)
    )
}

/// An EDS cluster.
pub fn eds_cluster(name: &str) -> Cluster {
    from_yaml(&format!(
        "name: {name}\ntype: EDS\nconnect_timeout: 1s\neds_cluster_config: {{eds_config: {{ads: {{}}, resource_api_version: V3}}}}"
    ))
    .unwrap()
}

/// A load assignment of `name` with `hosts` (weight 1 each).
pub fn endpoints(name: &str, hosts: &[SocketAddr]) -> ClusterLoadAssignment {
    let eps: String = hosts
        .iter()
        .map(|a| {
            format!(
                "  - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    from_yaml(&format!(
        "cluster_name: {name}\nendpoints:\n- lb_endpoints:\n{eps}"
    ))
    .unwrap()
}

/// An HTTP listener on 127.0.0.1:0 reading route configuration `route` by RDS.
pub fn rds_listener(name: &str, route: &str) -> Listener {
    from_yaml(&format!(
        r#"name: {name}
address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: {name}
      rds: {{route_config_name: {route}, config_source: {{ads: {{}}, resource_api_version: V3}}}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    ))
    .unwrap()
}

/// A route configuration sending every request to `clusters` with the given weights.
pub fn weighted_route(name: &str, clusters: &[(&str, u32)]) -> RouteConfiguration {
    let action = if clusters.len() == 1 {
        format!("{{cluster: {}}}", clusters[0].0)
    } else {
        let w: Vec<String> = clusters
            .iter()
            .map(|(c, w)| format!("{{name: {c}, weight: {w}}}"))
            .collect();
        format!("{{weighted_clusters: {{clusters: [{}]}}}}", w.join(", "))
    };
    from_yaml(&format!(
        "name: {name}\nvirtual_hosts:\n- name: all\n  domains: [\"*\"]\n  routes:\n  - match: {{prefix: /}}\n    route: {action}\n"
    ))
    .unwrap()
}

/// Sets a whole config: clusters `a` and `b` (EDS) with their endpoints, listener `in`, and
/// route `r` sending everything to `route_to`.
async fn initial_config(cp: &ControlPlane, a: SocketAddr, b: SocketAddr) {
    cp.set("1", &[eds_cluster("a"), eds_cluster("b")]);
    cp.set("1", &[endpoints("a", &[a]), endpoints("b", &[b])]);
    cp.set("1", &[rds_listener("in", "r")]);
    cp.set("1", &[weighted_route("r", &[("a", 1)])]);
}

async fn upstream_of(addr: SocketAddr) -> String {
    let (s, _, body) = get(addr, "/").await;
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["upstream"].as_str().unwrap().to_string()
}

async fn initial_config_is_served(api_type: &str) {
    let (a, b) = (echo_upstream("a").await, echo_upstream("b").await);
    let (cp, cp_addr) = control_plane().await;
    initial_config(&cp, a, b).await;
    let p = Proxy::start(&ads_bootstrap(cp_addr, api_type, ""));
    for t in [
        type_url::CLUSTER,
        type_url::ENDPOINT,
        type_url::LISTENER,
        type_url::ROUTE,
    ] {
        cp.wait_ack(t, "1").await;
    }
    p.wait_live().await;
    let l = p.listener("in").await;
    assert_eq!(upstream_of(l).await, "a");
    assert_eq!(p.stat("cluster_manager.cds.update_success").await, 1);
    assert_eq!(p.stat("listener_manager.lds.update_success").await, 1);
    assert_eq!(p.stat("cluster_manager.cds.update_rejected").await, 0);
    assert_eq!(p.stat("control_plane.connected_state").await, 1);
    assert_eq!(p.stat("cluster_manager.active_clusters").await, 3);
    assert_eq!(p.stat("listener_manager.total_listeners_active").await, 1);
    assert_eq!(p.stat("http.in.rds.r.update_success").await, 1);
    assert_eq!(p.stat("cluster.a.update_success").await, 1);
    assert_eq!(p.stat("listener_manager.workers_started").await, 1);
    // pilot-agent's readiness query.
    let (_, body) = p
        .admin("/stats?usedonly&filter=^(cluster_manager\\.cds|listener_manager\\.lds)\\.(update_success|update_rejected)$")
        .await;
    assert!(
        body.contains("cluster_manager.cds.update_success: 1")
            && body.contains("listener_manager.lds.update_success: 1"),
        "{body}"
    );
    // The node went on the first request only.
    let reqs = cp.requests();
    assert!(!reqs.is_empty());
    let delta = api_type == "DELTA_GRPC";
    assert!(reqs.iter().all(|(d, _, _)| *d == delta));
    // EDS and RDS were asked for by name.
    assert!(
        reqs.iter()
            .any(|(_, t, n)| t == type_url::ENDPOINT && n.contains(&"a".to_string())),
        "{reqs:?}"
    );
}

#[tokio::test]
async fn sotw_initial_config_is_served() {
    initial_config_is_served("GRPC").await;
}

#[tokio::test]
async fn delta_initial_config_is_served() {
    initial_config_is_served("DELTA_GRPC").await;
}

async fn canary_shift(api_type: &str) {
    let (a, b) = (echo_upstream("a").await, echo_upstream("b").await);
    let (cp, cp_addr) = control_plane().await;
    initial_config(&cp, a, b).await;
    let p = Proxy::start(&ads_bootstrap(cp_addr, api_type, ""));
    p.wait_live().await;
    let l = p.listener("in").await;
    let count = |n: usize| async move {
        let mut seen = std::collections::HashMap::new();
        for _ in 0..n {
            *seen.entry(upstream_of(l).await).or_insert(0) += 1;
        }
        seen
    };
    let seen = count(20).await;
    assert_eq!(seen.get("a"), Some(&20), "{seen:?}");
    cp.set("2", &[weighted_route("r", &[("a", 50), ("b", 50)])]);
    cp.wait_ack(type_url::ROUTE, "2").await;
    let seen = count(60).await;
    assert!(
        seen.get("a").copied().unwrap_or(0) > 10 && seen.get("b").copied().unwrap_or(0) > 10,
        "{seen:?}"
    );
    cp.set("3", &[weighted_route("r", &[("a", 0), ("b", 100)])]);
    cp.wait_ack(type_url::ROUTE, "3").await;
    let seen = count(20).await;
    assert_eq!(seen.get("b"), Some(&20), "{seen:?}");
    assert_eq!(p.stat("http.in.rds.r.update_success").await, 3);
}

#[tokio::test]
async fn sotw_canary_weight_shift() {
    canary_shift("GRPC").await;
}

#[tokio::test]
async fn delta_canary_weight_shift() {
    canary_shift("DELTA_GRPC").await;
}
