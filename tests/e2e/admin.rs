//! The admin API and the server lifecycle.

use std::time::Duration;

use crate::support::*;

fn direct_listener() -> String {
    let vhosts = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: /}\n                direct_response: {status: 200, body: {inline_string: ok}}\n";
    format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        http_listener("in", vhosts, ""),
        cluster("c", &[closed_port()], "    alt_stat_name: \"c_alt;\"\n")
    )
}

#[tokio::test]
async fn ready_server_info_and_stats_formats() {
    let p = Proxy::start(&direct_listener());
    let (s, b) = p.admin("/ready").await;
    assert_eq!((s, b.as_str()), (200, "LIVE\n"));
    let (_, info) = p.admin("/server_info").await;
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["state"], "LIVE");
    assert_eq!(get(p.listener("in").await, "/").await.0, 200);
    p.wait_stat("http.in.downstream_rq_2xx", 1).await;
    let (_, used) = p.admin("/stats?usedonly&filter=^http\\.in\\.").await;
    assert!(used.contains("http.in.downstream_rq_2xx: 1\n"), "{used}");
    assert!(
        !used.contains("downstream_rq_5xx"),
        "usedonly lists an unused stat: {used}"
    );
    let (_, readiness) = p
        .admin("/stats?filter=^(server\\.state|listener_manager\\.workers_started)")
        .await;
    assert!(readiness.contains("server.state: 0"), "{readiness}");
    assert!(
        readiness.contains("listener_manager.workers_started: 1"),
        "{readiness}"
    );
    let (_, prom) = p.admin("/stats/prometheus").await;
    assert!(prom.contains("envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"in\"} 1"), "{prom}");
    assert!(prom.contains("# TYPE envoy_server_state gauge"), "{prom}");
    // alt_stat_name names the cluster's stats.
    assert!(
        prom.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"c_alt;\"} 0"),
        "{prom}"
    );
}

#[tokio::test]
async fn config_dump_has_envoy_shape() {
    let p = Proxy::start(&direct_listener());
    let (_, body) = p.admin("/config_dump").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let types: Vec<&str> = v["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["@type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
        ]
    );
    assert_eq!(
        v["configs"][1]["static_clusters"][0]["cluster"]["name"],
        "c"
    );
    assert_eq!(
        v["configs"][2]["static_listeners"][0]["listener"]["name"],
        "in"
    );
    let (_, masked) = p.admin("/config_dump?mask=static_clusters").await;
    let m: serde_json::Value = serde_json::from_str(&masked).unwrap();
    assert_eq!(m["configs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn clusters_endpoint_in_envoy_shape() {
    let up = echo_upstream("a").await;
    let p = Proxy::start(&one_route(up, "", "", ""));
    let (_, text) = p.admin("/clusters").await;
    assert!(
        text.contains(&format!("b::{up}::health_flags::healthy")),
        "{text}"
    );
    assert!(
        text.contains("b::default_priority::max_connections::1024"),
        "{text}"
    );
    let (_, body) = p.admin("/clusters?format=json").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let host = &v["cluster_statuses"][0]["host_statuses"][0];
    assert_eq!(host["address"]["socket_address"]["port_value"], up.port());
    assert_eq!(host["health_status"]["eds_health_status"], "HEALTHY");
}

#[tokio::test]
async fn mutating_endpoints_need_post_and_healthcheck_toggles() {
    let p = Proxy::start(&direct_listener());
    assert_eq!(p.admin("/healthcheck/fail").await.0, 405);
    assert_eq!(p.admin_post("/healthcheck/fail").await.0, 200);
    assert_eq!(p.stat("server.live").await, 0);
    assert_eq!(p.admin_post("/healthcheck/ok").await.0, 200);
    assert_eq!(p.stat("server.live").await, 1);
    let (s, _) = p.admin_post("/logging?level=debug").await;
    assert_eq!(s, 200);
    let (s, _) = p.admin_post("/logging?level=nonsense").await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn quitquitquit_drains_and_exits_zero() {
    let mut p = Proxy::start(&direct_listener());
    assert_eq!(p.admin_post("/quitquitquit").await.0, 200);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let up = echo_upstream("slow").await;
    let vhosts = routes_to("slow", "");
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        http_listener("in", &vhosts, ""),
        cluster("slow", &[up], "")
    );
    let mut p = Proxy::start_with(&yaml, &["--drain-strategy", "immediate"]);
    let addr = p.listener("in").await;
    let inflight = tokio::spawn(async move { get(addr, "/sleep/700").await });
    p.wait_stat("http.in.downstream_rq_active", 1).await;
    p.signal("TERM");
    let (status, headers, _) = inflight.await.unwrap();
    assert_eq!(status, 200, "the in-flight request completes");
    assert_eq!(
        headers["connection"], "close",
        "draining answers with Connection: close"
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test]
async fn deferred_stat_options_create_cluster_traffic_stats_on_first_use() {
    let up = echo_upstream("a").await;
    let yaml = format!(
        "deferred_stat_options: {{enable_deferred_creation_stats: true}}\nstatic_resources:\n  listeners:\n{}  clusters:\n{}{}",
        http_listener("in", &routes_to("a", ""), ""),
        cluster("a", &[up], ""),
        cluster("b", &[up], ""),
    );
    let p = Proxy::start(&yaml);
    let (_, before) = p.admin("/stats").await;
    // Membership and circuit-breaker stats exist at once; traffic stats wait for traffic.
    assert!(before.contains("cluster.b.membership_total: 1"), "{before}");
    assert!(!before.contains("cluster.a.upstream_rq_total"), "{before}");
    assert!(!before.contains("cluster.b.upstream_cx_total"), "{before}");
    let (s, _, _) = get(p.listener("in").await, "/").await;
    assert_eq!(s, 200);
    p.wait_stat("cluster.a.upstream_rq_total", 1).await;
    let (_, after) = p.admin("/stats").await;
    assert!(after.contains("cluster.a.upstream_cx_total: 1"), "{after}");
    assert!(!after.contains("cluster.b.upstream_rq_total"), "{after}");
}
