//! tcp_proxy end to end.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn tcp_listener(name: &str, cluster: &str) -> String {
    format!(
        "  - name: {name}\n    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: {name}\n          cluster: {cluster}\n"
    )
}

#[tokio::test]
async fn tcp_proxy_echoes_and_counts_bytes() {
    let up = tcp_echo().await;
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        tcp_listener("t", "echo"),
        cluster("echo", &[up], "")
    );
    let p = Proxy::start(&yaml);
    let addr = p.listener("t").await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"hello tcp").await.unwrap();
    let mut buf = [0u8; 9];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello tcp");
    drop(s);
    p.wait_stat("tcp.t.downstream_cx_rx_bytes_total", 9).await;
    assert_eq!(p.stat("tcp.t.downstream_cx_tx_bytes_total").await, 9);
    assert_eq!(p.stat("tcp.t.downstream_cx_total").await, 1);
    assert_eq!(p.stat("cluster.echo.upstream_cx_total").await, 1);
}

#[tokio::test]
async fn tcp_proxy_closes_downstream_when_upstream_refuses() {
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        tcp_listener("t", "dead"),
        cluster("dead", &[closed_port()], "")
    );
    let p = Proxy::start(&yaml);
    let mut s = tokio::net::TcpStream::connect(p.listener("t").await)
        .await
        .unwrap();
    assert_closed_promptly(&mut s, "the upstream connect failed").await;
    p.wait_stat("cluster.dead.upstream_cx_connect_fail", 1)
        .await;
}
