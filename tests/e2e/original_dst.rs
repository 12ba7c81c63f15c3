//! ORIGINAL_DST clusters and upstream_bind_config on loopback (the captured paths, which need
//! iptables, are in capture.rs).

use bytes::Bytes;

use crate::support::*;

const PASSTHROUGH: &str = "    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n";

fn passthrough(name: &str, extra: &str) -> String {
    format!("  - name: {name}\n    connect_timeout: 1s\n{PASSTHROUGH}{extra}")
}

#[tokio::test]
async fn override_header_picks_the_destination_and_the_source_is_bound() {
    let a = peer_http("127.0.0.1:0".parse().unwrap(), "a").await;
    let b = peer_http("127.0.0.1:0".parse().unwrap(), "b").await;
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        http_listener("in", &routes_to("pt", ""), ""),
        passthrough(
            "pt",
            "    cleanup_interval: 60s\n    original_dst_lb_config: {use_http_header: true}\n    upstream_bind_config: {source_address: {address: 127.0.0.6, port_value: 0}}\n"
        )
    );
    let p = Proxy::start(&yaml);
    let l = p.listener("in").await;
    for (up, name) in [(a, "a"), (b, "b"), (a, "a")] {
        let (s, _, body) = http1_request(
            l,
            "GET",
            "/x",
            "svc",
            &[("x-envoy-original-dst-host", &up.to_string())],
            Bytes::new(),
        )
        .await;
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["upstream"], name);
        let peer: std::net::SocketAddr = v["peer"].as_str().unwrap().parse().unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.6", "upstream_bind_config");
    }
    // One host per destination, kept across requests.
    assert_eq!(p.stat("cluster.pt.membership_total").await, 2);
    // No header and no original destination: no host, as Envoy's original_dst balancer.
    let (s, _, body) = http1_request(l, "GET", "/x", "svc", &[], Bytes::new()).await;
    assert_eq!(s, 503);
    assert_eq!(body, "no healthy upstream");
    p.wait_stat("cluster.pt.upstream_cx_none_healthy", 1).await;
    // A header that is not ip:port is not a destination either.
    let (s, _, _) = http1_request(
        l,
        "GET",
        "/x",
        "svc",
        &[("x-envoy-original-dst-host", "reviews:9080")],
        Bytes::new(),
    )
    .await;
    assert_eq!(s, 503);
}

#[tokio::test]
async fn port_override_replaces_the_destination_port() {
    let up = peer_http("127.0.0.1:0".parse().unwrap(), "up").await;
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        http_listener("in", &routes_to("pt", ""), ""),
        passthrough(
            "pt",
            &format!(
                "    original_dst_lb_config: {{use_http_header: true, http_header_name: x-dst, upstream_port_override: {}}}\n",
                up.port()
            )
        )
    );
    let p = Proxy::start(&yaml);
    let (s, _, body) = http1_request(
        p.listener("in").await,
        "GET",
        "/",
        "svc",
        &[("x-dst", "127.0.0.1:1")],
        Bytes::new(),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("\"upstream\":\"up\""), "{body}");
}

/// A connection made to the capturing listener itself has no original destination of its
/// own, so the passthrough cluster has no host for it: it is closed instead of looping back.
#[tokio::test]
async fn a_connection_to_the_capturing_listener_is_not_looped() {
    let yaml = format!(
        "static_resources:\n  listeners:\n  - name: virtualOutbound\n    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n    use_original_dst: true\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: PassthroughCluster\n          cluster: PassthroughCluster\n  clusters:\n{}",
        passthrough("PassthroughCluster", "")
    );
    let p = Proxy::start(&yaml);
    let addr = p.listener("virtualOutbound").await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_closed_promptly(&mut s, "no host to pass through to").await;
    p.wait_stat("cluster.PassthroughCluster.upstream_cx_none_healthy", 1)
        .await;
    p.wait_stat("listener.127.0.0.1_0.downstream_cx_active", 0)
        .await;
    assert_eq!(
        p.stat("cluster.PassthroughCluster.upstream_cx_total").await,
        0
    );
}

#[test]
fn original_dst_settings_that_cannot_work_are_refused_by_path() {
    let cases = [
        (
            "    type: ORIGINAL_DST\n    lb_policy: ROUND_ROBIN\n",
            "static_resources.clusters[0].lb_policy",
        ),
        (
            "    lb_policy: CLUSTER_PROVIDED\n",
            "static_resources.clusters[0].lb_policy",
        ),
        (
            "    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    original_dst_lb_config: {metadata_key: {key: k, path: [{key: p}]}}\n",
            "static_resources.clusters[0].original_dst_lb_config.metadata_key",
        ),
        (
            "    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}\n",
            "static_resources.clusters[0].load_assignment",
        ),
        (
            "    upstream_bind_config: {source_address: {address: 127.0.0.6, port_value: 0}, freebind: true}\n",
            "static_resources.clusters[0].upstream_bind_config.freebind",
        ),
        (
            "    original_dst_lb_config: {use_http_header: true}\n",
            "static_resources.clusters[0].original_dst_lb_config",
        ),
    ];
    for (extra, path) in cases {
        let yaml = format!(
            "static_resources:\n  clusters:\n  - name: c\n    connect_timeout: 1s\n{extra}"
        );
        let (code, err) = validate(&yaml);
        assert_ne!(code, 0, "{extra}");
        assert!(err.contains(path), "{extra}: want {path} in {err}");
    }
}
