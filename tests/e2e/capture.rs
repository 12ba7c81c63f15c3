//! Transparent capture end to end, as in an Istio pod: `pilotfish iptables` installs
//! istio-iptables' REDIRECT rules in a pod network namespace, the proxy runs there with the
//! proxy's group id, and an application in the pod and a client in another namespace talk
//! through it. Needs root (see netns.rs).

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::netns;
use crate::support::*;

const PROXY_GID: u32 = 1337;

fn tcp_chain(name: &str, port_match: &str, cluster: &str) -> String {
    format!(
        r#"    - name: {name}
{port_match}      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: {cluster}
          cluster: {cluster}
"#
    )
}

fn hcm(prefix: &str, cluster: &str, listener: &str) -> String {
    format!(
        r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {prefix}
          route_config:
            response_headers_to_add:
            - header: {{key: x-listener, value: "{listener}"}}
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: /}}
                route: {{cluster: "{cluster}"}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    )
}

/// The listeners and clusters istiod gives a sidecar, cut down to one outbound HTTP service
/// (`remote:8080`, a bind_to_port: false listener the 15001 listener hands off to) and one
/// inbound HTTP port (8000); other inbound HTTP (found by http_inspector) and TCP (port 8002,
/// a server-first protocol, so not inspected) pass through to the original destination, as does other
/// outbound traffic.
fn pod_bootstrap(remote: SocketAddr) -> String {
    let passthrough = |name: &str, bind: bool| {
        format!(
            "  - name: \"{name}\"\n    connect_timeout: 1s\n    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n{}",
            if bind {
                "    upstream_bind_config: {source_address: {address: 127.0.0.6, port_value: 0}}\n"
            } else {
                ""
            }
        )
    };
    format!(
        r#"static_resources:
  listeners:
  - name: virtualOutbound
    address: {{socket_address: {{address: 0.0.0.0, port_value: 15001}}}}
    use_original_dst: true
    traffic_direction: OUTBOUND
    filter_chains:
{blackhole_out}{catchall_out}  - name: 0.0.0.0_8080
    address: {{socket_address: {{address: 0.0.0.0, port_value: 8080}}}}
    bind_to_port: false
    traffic_direction: OUTBOUND
    filter_chains:
    - filters:
{outbound_hcm}  - name: virtualInbound
    address: {{socket_address: {{address: 0.0.0.0, port_value: 15006}}}}
    traffic_direction: INBOUND
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}}
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}
      filter_disabled: {{destination_port_range: {{start: 8002, end: 8003}}}}
    - name: envoy.filters.listener.http_inspector
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}}
      filter_disabled: {{destination_port_range: {{start: 8002, end: 8003}}}}
    filter_chains:
{blackhole_in}    - name: 0.0.0.0_8000
      filter_chain_match: {{destination_port: 8000}}
      filters:
{inbound_hcm}    - name: virtualInbound-catchall-http
      filter_chain_match: {{transport_protocol: raw_buffer, application_protocols: [http/1.1, h2c]}}
      filters:
{catchall_http}{catchall_in}  clusters:
  - name: BlackHoleCluster
    connect_timeout: 1s
    load_assignment: {{cluster_name: BlackHoleCluster}}
{pt}{ipt}{in8000}  - name: "outbound|8080||remote.default.svc.cluster.local"
    connect_timeout: 1s
    load_assignment:
      cluster_name: remote
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {rip}, port_value: {rport}}}}}}}
"#,
        blackhole_out = tcp_chain(
            "virtualOutbound-blackhole",
            "      filter_chain_match: {destination_port: 15001}\n",
            "BlackHoleCluster"
        ),
        catchall_out = tcp_chain("virtualOutbound-catchall-tcp", "", "PassthroughCluster"),
        outbound_hcm = hcm(
            "outbound_0.0.0.0_8080",
            "outbound|8080||remote.default.svc.cluster.local",
            "0.0.0.0_8080"
        ),
        blackhole_in = tcp_chain(
            "virtualInbound-blackhole",
            "      filter_chain_match: {destination_port: 15006}\n",
            "BlackHoleCluster"
        ),
        inbound_hcm = hcm("inbound_0.0.0.0_8000", "inbound|8000||", "virtualInbound"),
        catchall_http = hcm(
            "inbound_passthrough",
            "InboundPassthroughCluster",
            "virtualInbound-catchall-http"
        ),
        catchall_in = tcp_chain(
            "virtualInbound",
            "      filter_chain_match: {transport_protocol: raw_buffer}\n",
            "InboundPassthroughCluster"
        ),
        pt = passthrough("PassthroughCluster", false),
        ipt = passthrough("InboundPassthroughCluster", true),
        in8000 = passthrough("inbound|8000||", true),
        rip = remote.ip(),
        rport = remote.port(),
    )
}

/// Runs `pilotfish iptables` in `ns` with the sidecar's flags (all outbound and inbound TCP
/// captured; the proxy's uid and gid let through), then `extra`, with environment `env`.
fn install_capture(ns: &netns::Netns, env: &[&str], extra: &[&str]) {
    let sidecar = [
        "-p", "15001", "-z", "15006", "-u", "1337", "-g", "1337", "-m", "REDIRECT", "-i", "*",
        "-b", "*",
    ];
    let mut args = vec!["env"];
    args.extend_from_slice(env);
    args.extend_from_slice(&[bin(), "iptables"]);
    args.extend_from_slice(&sidecar);
    args.extend_from_slice(extra);
    ns.exec(&args);
}

async fn read_peer_line(s: &mut TcpStream) -> SocketAddr {
    let mut line = String::new();
    let mut r = BufReader::new(s);
    tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line))
        .await
        .expect("peer line in time")
        .unwrap();
    line.trim()
        .strip_prefix("peer=")
        .unwrap_or_else(|| panic!("not a peer line: {line:?}"))
        .parse()
        .unwrap()
}

async fn echo_round(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(buf, msg);
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn captured_traffic_reaches_its_original_destination_both_ways() {
    let Some(net) = netns::pair() else {
        return;
    };
    let (cip, pip) = (net.client_ip, net.pod_ip);
    let at = |ip, port| SocketAddr::V4(SocketAddrV4::new(ip, port));
    let any = |port| SocketAddr::V4(SocketAddrV4::new([0, 0, 0, 0].into(), port));
    // The remote services, and the application's ports in the pod.
    let _remote = net.client.serve(move || async move {
        peer_http(any(8080), "remote").await;
        peer_tcp(any(9000)).await;
        peer_tcp(any(9001)).await;
    });
    let _app = net.pod.serve(move || async move {
        peer_http(any(8000), "app").await;
        peer_tcp(any(8001)).await;
        peer_tcp(any(8002)).await;
        peer_http(any(8003), "app-8003").await;
    });
    // Everything is captured but outbound port 9001 and inbound port 8001.
    install_capture(&net.pod, &[], &["-o", "9001", "-d", "8001"]);
    let rules = net.pod.exec(&["iptables-save", "-t", "nat"]);
    assert!(
        rules.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"),
        "{rules}"
    );

    let yaml = pod_bootstrap(at(cip, 8080));
    let client = net.client.clone();
    net.pod.block_on(move || async move {
        let p = Proxy::start_as(&yaml, &[], Some(PROXY_GID));
        p.wait_live().await;

        // Outbound HTTP/1.1: the application calls remote:8080; 15001 hands the connection
        // to the 0.0.0.0_8080 listener, whose route sends it to the remote service.
        let (s, h, body) =
            http1_request(at(cip, 8080), "GET", "/out", "remote", &[], Bytes::new()).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(
            h["x-listener"], "0.0.0.0_8080",
            "handed off by original destination"
        );
        let v = json(&body);
        assert_eq!(v["upstream"], "remote");
        let peer: SocketAddr = v["peer"].as_str().unwrap().parse().unwrap();
        assert_eq!(peer.ip(), pip, "the proxy connects from the pod's address");
        // Outbound h2c on the same path.
        let (s, h, body) = h2c_get(at(cip, 8080), "/h2c").await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(h["x-listener"], "0.0.0.0_8080");
        assert_eq!(json(&body)["upstream"], "remote");
        p.wait_stat("listener.0.0.0.0_8080.downstream_cx_total", 2)
            .await;
        assert_eq!(
            p.stat("http.outbound_0.0.0.0_8080.downstream_rq_http2_total")
                .await,
            1
        );
        assert_eq!(
            p.stat("cluster.outbound|8080||remote.default.svc.cluster.local.upstream_rq_total")
                .await,
            2
        );
        // The hand-off leaves nothing on the capturing listener.
        assert_eq!(
            p.stat("listener.0.0.0.0_15001.downstream_cx_total").await,
            0
        );

        // Outbound plain TCP with no listener of its own: 15001's catch-all chain passes it
        // through to the original destination.
        let mut s = TcpStream::connect(at(cip, 9000)).await.unwrap();
        assert_eq!(read_peer_line(&mut s).await.ip(), pip);
        echo_round(&mut s, b"through the passthrough cluster").await;
        drop(s);
        p.wait_stat("cluster.PassthroughCluster.upstream_cx_total", 1)
            .await;
        p.wait_stat("listener.0.0.0.0_15001.downstream_cx_total", 1)
            .await;

        // An excluded outbound port bypasses the proxy.
        let mut s = TcpStream::connect(at(cip, 9001)).await.unwrap();
        assert_eq!(read_peer_line(&mut s).await.ip(), pip);
        echo_round(&mut s, b"direct").await;
        drop(s);

        // A closed port: the application's connect succeeds (the kernel accepts for the
        // proxy), then the connection closes at once when the proxy's own connect fails.
        let mut s = TcpStream::connect(at(cip, 9999)).await.unwrap();
        assert_closed_promptly(&mut s, "the proxy's connect failed").await;
        p.wait_stat("cluster.PassthroughCluster.upstream_cx_connect_fail", 1)
            .await;
        assert_eq!(
            p.stat("cluster.PassthroughCluster.upstream_cx_total").await,
            1
        );

        // A peer that resets mid-stream: the proxy closes its upstream side too.
        let mut s = TcpStream::connect(at(cip, 9000)).await.unwrap();
        read_peer_line(&mut s).await;
        echo_round(&mut s, b"before the reset").await;
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
        p.wait_stat("cluster.PassthroughCluster.upstream_cx_destroy", 2)
            .await;
        p.wait_stat("cluster.PassthroughCluster.upstream_cx_active", 0)
            .await;

        // Inbound: the client calls the application's ports; 15006 restores the original
        // destination, and the proxy connects to the application from 127.0.0.6.
        let inbound = tokio::task::spawn_blocking(move || {
            client.block_on(move || async move {
                let (s, h, body) =
                    http1_request(at(pip, 8000), "GET", "/in", "app", &[], Bytes::new()).await;
                let (s2, _, body2) = h2c_get(at(pip, 8000), "/in-h2c").await;
                let other = h2c_get(at(pip, 8003), "/other").await;
                let mut t = TcpStream::connect(at(pip, 8002)).await.unwrap();
                let tcp_peer = read_peer_line(&mut t).await;
                echo_round(&mut t, b"inbound tcp").await;
                let mut d = TcpStream::connect(at(pip, 8001)).await.unwrap();
                let direct_peer = read_peer_line(&mut d).await;
                (s, h, body, s2, body2, tcp_peer, direct_peer, other)
            })
        })
        .await
        .unwrap();
        let (s, h, body, s2, body2, tcp_peer, direct_peer, other) = inbound;
        assert_eq!(s, 200, "{body}");
        assert_eq!(h["x-listener"], "virtualInbound");
        let v = json(&body);
        assert_eq!(v["upstream"], "app");
        let peer: SocketAddr = v["peer"].as_str().unwrap().parse().unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.6", "{body}");
        assert_eq!(s2, 200, "{body2}");
        assert_eq!(json(&body2)["upstream"], "app");
        assert_eq!(tcp_peer.ip().to_string(), "127.0.0.6");
        assert_eq!(
            direct_peer.ip(),
            cip,
            "excluded inbound port bypasses the proxy"
        );
        // HTTP to a port without a chain of its own: http_inspector finds h2c, the
        // catch-all HTTP chain routes it to its original destination.
        let (s3, h3, body3) = other;
        assert_eq!(s3, 200, "{body3}");
        assert_eq!(h3["x-listener"], "virtualInbound-catchall-http");
        let v = json(&body3);
        assert_eq!(v["upstream"], "app-8003");
        assert!(
            v["peer"].as_str().unwrap().starts_with("127.0.0.6:"),
            "{body3}"
        );
        assert_eq!(p.stat("http_inspector.http2_found").await, 2);
        assert_eq!(p.stat("http_inspector.http11_found").await, 1);
        p.wait_stat("cluster.inbound|8000||.upstream_rq_total", 2)
            .await;
        p.wait_stat("cluster.InboundPassthroughCluster.upstream_rq_total", 1)
            .await;
        assert_eq!(
            p.stat("tcp.InboundPassthroughCluster.downstream_cx_total")
                .await,
            1
        );
        // Nothing else went through either listener, and nothing is left open.
        assert_eq!(
            p.stat("listener.0.0.0.0_15006.downstream_cx_total").await,
            4
        );
        assert_eq!(
            p.stat("listener.0.0.0.0_15001.downstream_cx_total").await,
            3
        );
        p.wait_stat("listener.0.0.0.0_15001.downstream_cx_active", 0)
            .await;
        p.wait_stat("listener.0.0.0.0_8080.downstream_cx_active", 0)
            .await;
    });
    // Cleanup leaves no ISTIO_ chain behind.
    net.pod.exec(&[bin(), "iptables", "--cleanup-only"]);
    let rules = net.pod.exec(&["iptables-save", "-t", "nat"]);
    assert!(!rules.contains("ISTIO_"), "{rules}");
}

/// IPv6 (`ENABLE_INBOUND_IPV6=true`): a connection redirected by ip6tables keeps its original
/// destination (IP6T_SO_ORIGINAL_DST) and is handed off by it or passed through to it; an
/// inbound one reaches the application from ::6.
#[test]
fn ipv6_captured_connections_keep_their_original_destination() {
    let Some(net) = netns::pair() else {
        return;
    };
    let (cip6, pip6) = (net.client_ip6, net.pod_ip6);
    let at6 = |ip, port| SocketAddr::new(std::net::IpAddr::V6(ip), port);
    let any6 = |port| SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port);
    let _remote = net.client.serve(move || async move {
        peer_http(any6(8080), "remote").await;
        peer_tcp(any6(9000)).await;
    });
    let _app = net.pod.serve(move || async move {
        peer_tcp(any6(8002)).await;
    });
    // istio-iptables with IPv6 on: the same chains in ip6tables, and ::6 on lo.
    install_capture(&net.pod, &["ENABLE_INBOUND_IPV6=true"], &[]);
    let rules = net.pod.exec(&["ip6tables-save", "-t", "nat"]);
    assert!(
        rules.contains("-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN"),
        "{rules}"
    );
    let yaml = format!(
        r#"static_resources:
  listeners:
  - name: virtualOutbound
    address: {{socket_address: {{address: "::", port_value: 15001}}}}
    use_original_dst: true
    filter_chains:
{catchall}  - name: "[::]_8080"
    address: {{socket_address: {{address: "::", port_value: 8080}}}}
    bind_to_port: false
    filter_chains:
    - filters:
{hcm}  - name: virtualInbound
    address: {{socket_address: {{address: "::", port_value: 15006}}}}
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}}
    filter_chains:
{inbound}  clusters:
  - name: PassthroughCluster
    connect_timeout: 1s
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
  - name: InboundPassthroughCluster
    connect_timeout: 1s
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    upstream_bind_config:
      source_address: {{address: 127.0.0.6, port_value: 0}}
      extra_source_addresses: [{{address: {{address: "::6", port_value: 0}}}}]
"#,
        inbound = tcp_chain("virtualInbound", "", "InboundPassthroughCluster"),
        catchall = tcp_chain("virtualOutbound-catchall-tcp", "", "PassthroughCluster"),
        hcm = hcm("outbound_8080", "PassthroughCluster", "[::]_8080"),
    );
    let client = net.client.clone();
    net.pod.block_on(move || async move {
        let p = Proxy::start_as(&yaml, &[], Some(PROXY_GID));
        p.wait_live().await;
        let (s, h, body) =
            http1_request(at6(cip6, 8080), "GET", "/v6", "remote", &[], Bytes::new()).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(
            h["x-listener"], "[::]_8080",
            "handed off by original destination"
        );
        let v = json(&body);
        assert_eq!(v["upstream"], "remote");
        let peer: SocketAddr = v["peer"].as_str().unwrap().parse().unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V6(pip6));

        let mut s = TcpStream::connect(at6(cip6, 9000)).await.unwrap();
        assert_eq!(
            read_peer_line(&mut s).await.ip(),
            std::net::IpAddr::V6(pip6)
        );
        echo_round(&mut s, b"v6 passthrough").await;
        drop(s);
        p.wait_stat("cluster.PassthroughCluster.upstream_cx_total", 2)
            .await;
        assert_eq!(
            p.stat("tcp.PassthroughCluster.downstream_cx_total").await,
            1
        );
        // Inbound over IPv6: to the application from ::6.
        let app_peer = tokio::task::spawn_blocking(move || {
            client.block_on(move || async move {
                let mut t = TcpStream::connect(at6(pip6, 8002)).await.unwrap();
                let peer = read_peer_line(&mut t).await;
                echo_round(&mut t, b"v6 inbound").await;
                peer
            })
        })
        .await
        .unwrap();
        assert_eq!(app_peer.ip().to_string(), "::6");
        p.wait_stat("cluster.InboundPassthroughCluster.upstream_cx_total", 1)
            .await;
    });
}
