//! xDS: the proxy programmed by the in-process control plane over ADS (state of the world and
//! delta): initial config, updates, warming, NACKs and reconnects.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use pilotfish::xds::harness::{
    ControlPlane, eds_cluster, from_yaml, load_assignment, rds_listener, weighted_route,
};
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

/// Sets a whole config: clusters `a` and `b` (EDS) with their endpoints, listener `in`, and
/// route `r` sending everything to `a`.
async fn initial_config(cp: &ControlPlane, a: SocketAddr, b: SocketAddr) {
    cp.set("1", &[eds_cluster("a"), eds_cluster("b")]);
    cp.set(
        "1",
        &[load_assignment("a", &[a]), load_assignment("b", &[b])],
    );
    cp.set("1", &[rds_listener("in", "in", "r")]);
    cp.set("1", &[weighted_route("r", &[("a", 1)])]);
}

/// A live proxy programmed over ADS (`api_type`) with `initial_config`, its control plane and
/// its upstreams.
struct Served {
    cp: ControlPlane,
    cp_addr: SocketAddr,
    proxy: Proxy,
    /// Listener `in`.
    listener: SocketAddr,
    /// The echo upstreams of clusters `a` and `b`.
    a: SocketAddr,
    b: SocketAddr,
}

async fn served(api_type: &str, args: &[&str]) -> Served {
    let (a, b) = (echo_upstream("a").await, echo_upstream("b").await);
    let (cp, cp_addr) = control_plane().await;
    initial_config(&cp, a, b).await;
    let proxy = Proxy::start_with(&ads_bootstrap(cp_addr, api_type, ""), args);
    proxy.wait_live().await;
    let listener = proxy.listener("in").await;
    Served {
        cp,
        cp_addr,
        proxy,
        listener,
        a,
        b,
    }
}

async fn upstream_of(addr: SocketAddr) -> String {
    let (s, _, body) = get(addr, "/").await;
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["upstream"].as_str().unwrap().to_string()
}

async fn initial_config_is_served(api_type: &str) {
    let Served {
        cp,
        proxy: p,
        listener: l,
        ..
    } = served(api_type, &[]).await;
    for t in [
        type_url::CLUSTER,
        type_url::ENDPOINT,
        type_url::LISTENER,
        type_url::ROUTE,
    ] {
        cp.wait_ack(t, "1").await;
    }
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
    let Served {
        cp,
        proxy: p,
        listener: l,
        ..
    } = served(api_type, &[]).await;
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

#[tokio::test]
async fn route_change_under_load_fails_no_request() {
    let Served {
        cp,
        proxy: _p,
        listener: l,
        ..
    } = served("DELTA_GRPC", &[]).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(get(l, "/").await.0);
            }
            statuses
        }));
    }
    for v in 2..8 {
        let to = if v % 2 == 0 { "b" } else { "a" };
        cp.set(&v.to_string(), &[weighted_route("r", &[(to, 1)])]);
        cp.wait_ack(type_url::ROUTE, &v.to_string()).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for t in load {
        let statuses = t.await.unwrap();
        total += statuses.len();
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
    assert!(total > 20, "only {total} requests ran");
    assert_eq!(
        upstream_of(l).await,
        "a",
        "the last route (version 7) applies"
    );
}

#[tokio::test]
async fn endpoints_added_and_removed() {
    let Served {
        cp,
        proxy: p,
        listener: l,
        a,
        b,
        ..
    } = served("GRPC", &[]).await;
    let a2 = echo_upstream("a2").await;
    assert_eq!(upstream_of(l).await, "a");
    cp.set(
        "2",
        &[load_assignment("a", &[a, a2]), load_assignment("b", &[b])],
    );
    cp.wait_ack(type_url::ENDPOINT, "2").await;
    assert_eq!(p.stat("cluster.a.membership_total").await, 2);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(upstream_of(l).await);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    cp.set(
        "3",
        &[load_assignment("a", &[a2]), load_assignment("b", &[b])],
    );
    cp.wait_ack(type_url::ENDPOINT, "3").await;
    for _ in 0..10 {
        assert_eq!(upstream_of(l).await, "a2");
    }
    assert_eq!(p.stat("cluster.a.membership_total").await, 1);
    assert_eq!(p.stat("cluster.a.update_success").await, 3);
}

#[tokio::test]
async fn listener_replaced_while_long_requests_are_in_flight() {
    let Served {
        cp,
        proxy: p,
        listener: l,
        ..
    } = served("GRPC", &["--drain-strategy", "immediate"]).await;
    let long: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { get(l, "/sleep/1500").await }))
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The same listener with another stat prefix: a new version that replaces the old one.
    let replaced = rds_listener("in", "in_v2", "r");
    cp.set("2", &[replaced]);
    cp.wait_ack(type_url::LISTENER, "2").await;
    p.wait_stat("listener_manager.listener_modified", 1).await;
    for t in long {
        let (s, h, _) = t.await.unwrap();
        assert_eq!(s, 200, "a request in flight finishes");
        assert_eq!(h["connection"], "close", "its connection drains");
    }
    assert_eq!(
        p.listener("in").await,
        l,
        "the new version keeps the socket"
    );
    assert_eq!(upstream_of(l).await, "a");
    p.wait_stat("http.in_v2.downstream_rq_total", 1).await;
    assert_eq!(p.stat("http.in.downstream_rq_total").await, 3);
}

#[tokio::test]
async fn a_bad_resource_is_nacked_while_the_rest_apply() {
    let Served {
        cp,
        proxy: p,
        listener: l,
        a,
        b,
        ..
    } = served("GRPC", &[]).await;
    let c = echo_upstream("c").await;
    let bad: Cluster =
        from_yaml("name: bad\ntype: EDS\nconnect_timeout: 1s\nlb_policy: MAGLEV\neds_cluster_config: {eds_config: {ads: {}}}").unwrap();
    cp.set(
        "2",
        &[eds_cluster("a"), eds_cluster("b"), eds_cluster("c"), bad],
    );
    cp.set(
        "2",
        &[
            load_assignment("a", &[a]),
            load_assignment("b", &[b]),
            load_assignment("c", &[c]),
        ],
    );
    let err = cp
        .wait_answer(type_url::CLUSTER, "2", std::time::Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        err.contains("\"bad\"") && err.contains("lb_policy"),
        "{err}"
    );
    assert_eq!(p.stat("cluster_manager.cds.update_rejected").await, 1);
    cp.set("2", &[weighted_route("r", &[("c", 1)])]);
    cp.wait_ack(type_url::ROUTE, "2").await;
    assert_eq!(upstream_of(l).await, "c", "the valid new cluster applied");
    let (_, clusters) = p.admin("/clusters").await;
    assert!(!clusters.contains("bad::"), "{clusters}");
    // The fixed version is taken.
    let fixed: Cluster = from_yaml(
        "name: bad\ntype: EDS\nconnect_timeout: 1s\neds_cluster_config: {eds_config: {ads: {}}}",
    )
    .unwrap();
    cp.set(
        "3",
        &[eds_cluster("a"), eds_cluster("b"), eds_cluster("c"), fixed],
    );
    cp.wait_ack(type_url::CLUSTER, "3").await;
    assert_eq!(p.stat("cluster_manager.cds.update_success").await, 2);
}

async fn control_plane_away_and_back(api_type: &str) {
    let Served {
        cp,
        proxy: p,
        listener: l,
        cp_addr,
        ..
    } = served(api_type, &[]).await;
    cp.stop();
    p.wait_stat("control_plane.connected_state", 0).await;
    for _ in 0..5 {
        assert_eq!(upstream_of(l).await, "a", "the last config keeps serving");
    }
    cp.set("2", &[weighted_route("r", &[("b", 1)])]);
    let listener = tokio::net::TcpListener::bind(cp_addr).await.unwrap();
    cp.serve_tcp(listener);
    cp.wait_ack(type_url::ROUTE, "2").await;
    assert_eq!(upstream_of(l).await, "b");
    assert_eq!(p.stat("control_plane.connected_state").await, 1);
    assert!(cp.streams_opened() >= 2);
    assert!(p.stat("cluster_manager.cds.update_failure").await >= 1);
}

#[tokio::test]
async fn sotw_control_plane_away_and_back() {
    control_plane_away_and_back("GRPC").await;
}

#[tokio::test]
async fn delta_control_plane_away_and_back() {
    control_plane_away_and_back("DELTA_GRPC").await;
}

#[tokio::test]
async fn config_dump_shows_dynamic_and_warming_resources() {
    let Served { cp, proxy: p, .. } = served("GRPC", &[]).await;
    // A listener whose route configuration never comes stays warming.
    cp.set(
        "2",
        &[
            rds_listener("in", "in", "r"),
            rds_listener("w", "w", "missing"),
        ],
    );
    cp.wait_ack(type_url::LISTENER, "2").await;
    p.wait_stat("listener_manager.total_listeners_warming", 1)
        .await;
    let (s, body) = p.admin("/config_dump?include_eds").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let configs = v["configs"].as_array().unwrap();
    let by_type = |t: &str| {
        configs
            .iter()
            .find(|c| c["@type"] == format!("type.googleapis.com/envoy.admin.v3.{t}"))
            .unwrap_or_else(|| panic!("no {t} in {body}"))
            .clone()
    };
    let clusters = by_type("ClustersConfigDump");
    assert_eq!(clusters["version_info"], "1");
    let active = clusters["dynamic_active_clusters"].as_array().unwrap();
    assert_eq!(active.len(), 2);
    assert_eq!(active[0]["version_info"], "1");
    assert_eq!(active[0]["cluster"]["name"], "a");
    assert!(active[0]["last_updated"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        clusters["static_clusters"][0]["cluster"]["name"],
        "xds-grpc"
    );
    let eps = by_type("EndpointsConfigDump");
    assert_eq!(
        eps["dynamic_endpoint_configs"][0]["endpoint_config"]["cluster_name"],
        "a"
    );
    let listeners = by_type("ListenersConfigDump");
    assert_eq!(listeners["version_info"], "2");
    let dl = listeners["dynamic_listeners"].as_array().unwrap();
    let find = |n: &str| dl.iter().find(|l| l["name"] == n).unwrap().clone();
    assert_eq!(find("in")["active_state"]["version_info"], "1");
    assert_eq!(find("w")["warming_state"]["version_info"], "2");
    assert!(find("w").get("active_state").is_none());
    let routes = by_type("RoutesConfigDump");
    assert_eq!(
        routes["dynamic_route_configs"][0]["route_config"]["name"],
        "r"
    );
    // Without include_eds there is no endpoints section.
    let (_, body) = p.admin("/config_dump").await;
    assert!(!body.contains("EndpointsConfigDump"));
}

#[tokio::test]
async fn malformed_resources_are_nacked_and_the_last_good_config_serves() {
    use envoy_types::pb::google::protobuf::Any;
    let Served {
        cp,
        proxy: p,
        listener: l,
        ..
    } = served("GRPC", &[]).await;
    let garbage = Any {
        type_url: type_url::CLUSTER.into(),
        value: vec![0xff, 0xff, 0xff],
    };
    let wrong_type = pilotfish::xds::harness::any(&rds_listener("x", "x", "r"));
    cp.set_any(
        type_url::CLUSTER,
        "2",
        vec![
            ("g".into(), garbage),
            ("x".into(), wrong_type),
            ("a".into(), pilotfish::xds::harness::any(&eds_cluster("a"))),
            ("b".into(), pilotfish::xds::harness::any(&eds_cluster("b"))),
        ],
    );
    let err = cp
        .wait_answer(type_url::CLUSTER, "2", std::time::Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(err.contains("cannot decode"), "{err}");
    assert!(err.contains("Listener\" in a"), "{err}");
    // A route naming a cluster that does not exist answers 503 NC, as Envoy.
    cp.set("2", &[weighted_route("r", &[("nope", 1)])]);
    cp.wait_ack(type_url::ROUTE, "2").await;
    let (s, _, _) = get(l, "/").await;
    assert_eq!(s, 503);
    cp.set("3", &[weighted_route("r", &[("a", 1)])]);
    cp.wait_ack(type_url::ROUTE, "3").await;
    assert_eq!(upstream_of(l).await, "a");
    assert_eq!(p.stat("cluster_manager.active_clusters").await, 3);
}

/// A DiscoveryResponse file of one STATIC cluster `a` with endpoint `up`.
fn clusters_file(version: &str, up: SocketAddr) -> String {
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: a
  connect_timeout: 1s
  load_assignment:
    cluster_name: a
    endpoints:
    - lb_endpoints:
      - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}
"#,
        up.ip(),
        up.port()
    )
}

/// A DiscoveryResponse file of one listener `in` on `port` answering `body` directly at
/// /direct and sending the rest to cluster `a`.
fn listeners_file(version: &str, port: u16, body: &str) -> String {
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: in
  address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: in
        route_config:
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{prefix: /direct}}
              direct_response: {{status: 200, body: {{inline_string: "{body}"}}}}
            - match: {{prefix: /}}
              route: {{cluster: a}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    )
}

#[tokio::test]
async fn harness_binary_replays_files_over_a_unix_socket() {
    let up = echo_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("xds.sock");
    let (cf, lf) = (dir.path().join("c.yaml"), dir.path().join("l.yaml"));
    let port = free_port();
    std::fs::write(&cf, clusters_file("1", up)).unwrap();
    std::fs::write(&lf, listeners_file("1", port, "one")).unwrap();
    let mut harness = std::process::Command::new(env!("CARGO_BIN_EXE_xds-harness"))
        .args(["--uds", sock.to_str().unwrap()])
        .args([&cf, &lf])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "harness did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let yaml = format!(
        r#"dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds-grpc
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{pipe: {{path: {}}}}}}}
"#,
        sock.display()
    );
    let p = Proxy::start(&yaml);
    p.wait_live().await;
    let l = p.listener("in").await;
    assert_eq!(l.port(), port);
    assert_eq!(get(l, "/direct").await.2, "one");
    assert_eq!(upstream_of(l).await, "a");
    std::fs::write(&lf, listeners_file("2", port, "two")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(l, "/direct").await.2 != "two" {
        assert!(std::time::Instant::now() < deadline, "update not applied");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The harness prints answers every 300 ms.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let _ = harness.kill();
    let out = harness.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("ACK type.googleapis.com/envoy.config.listener.v3.Listener \"2\""),
        "{out}"
    );
}

#[tokio::test]
async fn path_config_sources_are_watched() {
    let up = echo_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let (cf, lf) = (dir.path().join("c.yaml"), dir.path().join("l.yaml"));
    let port = free_port();
    std::fs::write(&cf, clusters_file("1", up)).unwrap();
    std::fs::write(&lf, listeners_file("1", port, "one")).unwrap();
    let yaml = format!(
        "dynamic_resources:\n  cds_config: {{path_config_source: {{path: {}}}, resource_api_version: V3}}\n  lds_config: {{path_config_source: {{path: {}}}, resource_api_version: V3}}\n",
        cf.display(),
        lf.display()
    );
    let p = Proxy::start(&yaml);
    p.wait_live().await;
    let l = p.listener("in").await;
    assert_eq!(get(l, "/direct").await.2, "one");
    assert_eq!(upstream_of(l).await, "a");
    std::fs::write(
        &lf,
        "version_info: broken\nresources: [{\"@type\": nope}]\n",
    )
    .unwrap();
    p.wait_stat("listener_manager.lds.update_rejected", 1).await;
    assert_eq!(
        get(l, "/direct").await.2,
        "one",
        "the last good config serves"
    );
    std::fs::write(&lf, listeners_file("3", port, "three")).unwrap();
    p.wait_stat("listener_manager.lds.update_success", 2).await;
    // The old version stops accepting as the new one starts on the workers; a connection
    // that raced the swap may still reach the old one, so look for the new answer a while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let body = get(l, "/direct").await.2;
        if body == "three" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {body:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn per_type_api_config_sources_have_their_own_streams() {
    let up = echo_upstream("a").await;
    let (cp, cp_addr) = control_plane().await;
    let port = free_port();
    let c: Cluster = from_yaml(&clusters_file("1", up))
        .map(
            |r: envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse| {
                prost::Message::decode(r.resources[0].value.as_slice()).unwrap()
            },
        )
        .unwrap();
    let l: Listener = from_yaml(&listeners_file("1", port, "one"))
        .map(
            |r: envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse| {
                prost::Message::decode(r.resources[0].value.as_slice()).unwrap()
            },
        )
        .unwrap();
    cp.set("1", &[c]);
    cp.set("1", &[l]);
    let api = |t: &str| {
        format!(
            "{{api_config_source: {{api_type: {t}, transport_api_version: V3, grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]}}, resource_api_version: V3}}"
        )
    };
    let yaml = format!(
        "dynamic_resources:\n  cds_config: {}\n  lds_config: {}\nstatic_resources:\n  clusters:\n{}",
        api("GRPC"),
        api("DELTA_GRPC"),
        cluster("xds-grpc", &[cp_addr], H2_UPSTREAM)
    );
    let p = Proxy::start(&yaml);
    p.wait_live().await;
    cp.wait_ack(type_url::CLUSTER, "1").await;
    cp.wait_ack(type_url::LISTENER, "1").await;
    let l = p.listener("in").await;
    assert_eq!(get(l, "/direct").await.2, "one");
    assert_eq!(upstream_of(l).await, "a");
    assert_eq!(cp.streams_opened(), 2, "one stream per type");
    let answers = cp.answers();
    assert!(
        answers
            .iter()
            .any(|a| a.type_url == type_url::CLUSTER && !a.delta)
    );
    assert!(
        answers
            .iter()
            .any(|a| a.type_url == type_url::LISTENER && a.delta)
    );
}

#[test]
fn sources_pilotfish_cannot_serve_are_refused_by_path() {
    // RDS from its own stream, and EDS without ADS.
    let yaml = r#"static_resources:
  listeners:
  - name: in
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          rds:
            route_config_name: r
            config_source: {api_config_source: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: x}}]}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: e
    type: EDS
    connect_timeout: 1s
    eds_cluster_config: {eds_config: {ads: {}}}
  - name: x
    connect_timeout: 1s
    load_assignment: {cluster_name: x}
"#;
    let (code, err) = validate(yaml);
    assert_ne!(code, 0);
    assert!(
        err.contains("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.rds.config_source")
            && err.contains("RDS is served over ADS only"),
        "{err}"
    );
    assert!(
        err.contains("static_resources.clusters[0].eds_cluster_config.eds_config"),
        "{err}"
    );
    // REST sources are refused by path.
    let rest = "dynamic_resources:\n  cds_config: {api_config_source: {api_type: REST, cluster_names: [x]}}\nstatic_resources:\n  clusters:\n  - name: x\n    connect_timeout: 1s\n    load_assignment: {cluster_name: x}\n";
    let (code, err) = validate(rest);
    assert_ne!(code, 0);
    assert!(
        err.contains("dynamic_resources.cds_config.api_config_source.api_type"),
        "{err}"
    );
}
