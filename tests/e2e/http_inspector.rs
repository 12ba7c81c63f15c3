//! The http_inspector listener filter: one port serving HTTP/1.x, h2c and other TCP by
//! application_protocols, as Istio's inbound listeners do; its budget and bad peers.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A listener on 127.0.0.1:0: http_inspector (after tls_inspector), an HTTP chain matching
/// Istio's plaintext HTTP ALPNs with a direct response, and a TCP chain to `tcp` for the rest.
fn inspecting_listener(tcp: std::net::SocketAddr, listener_extra: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: inbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
{listener_extra}    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}
    - name: envoy.filters.listener.http_inspector
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}}
    filter_chains:
    - filter_chain_match: {{transport_protocol: raw_buffer, application_protocols: [http/1.0, http/1.1, h2c]}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http
          http_protocol_options: {{accept_http_10: true}}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: /}}
                direct_response: {{status: 200, body: {{inline_string: "http chain"}}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
    - filter_chain_match: {{transport_protocol: raw_buffer}}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: tcp
  clusters:
{}"#,
        cluster("tcp", &[tcp], "")
    )
}

async fn read_some(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answer in time")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn one_port_tells_http1_h2c_and_tcp_apart() {
    let tcp = peer_tcp("127.0.0.1:0".parse().unwrap()).await;
    let p = Proxy::start(&inspecting_listener(tcp, ""));
    let l = p.listener("inbound").await;

    let (s, _, body) = http1_request(l, "GET", "/", "a", &[], Bytes::new()).await;
    assert_eq!((s, body.as_str()), (200, "http chain"));
    let (s, _, body) = h2c_get(l, "/").await;
    assert_eq!((s, body.as_str()), (200, "http chain"));
    let mut c = TcpStream::connect(l).await.unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).await.unwrap();
    assert!(
        all.starts_with("HTTP/1.0 200") && all.ends_with("http chain"),
        "{all}"
    );

    // Not HTTP: the TCP chain, whose upstream speaks first, then echoes.
    let mut c = TcpStream::connect(l).await.unwrap();
    c.write_all(b"\x00\x01binary hello").await.unwrap();
    let got = read_some(&mut c).await;
    assert!(got.starts_with("peer=127.0.0.1:"), "{got}");

    p.wait_stat("http_inspector.http11_found", 1).await;
    assert_eq!(p.stat("http_inspector.http2_found").await, 1);
    assert_eq!(p.stat("http_inspector.http10_found").await, 1);
    assert_eq!(p.stat("http_inspector.http_not_found").await, 1);
    assert_eq!(p.stat("tls_inspector.tls_not_found").await, 4);
    assert_eq!(p.stat("http.http.downstream_rq_total").await, 3);
}

/// A protocol where the server speaks first: the client sends nothing, so the inspector's
/// budget decides. With continue_on_listener_filters_timeout the connection goes on to the
/// TCP chain when it runs out; without it the connection is closed. Either way it is counted.
#[tokio::test]
async fn server_first_protocols_are_not_stalled_past_the_budget() {
    let tcp = peer_tcp("127.0.0.1:0".parse().unwrap()).await;
    let p = Proxy::start(&inspecting_listener(
        tcp,
        "    listener_filters_timeout: 0.3s\n    continue_on_listener_filters_timeout: true\n",
    ));
    let l = p.listener("inbound").await;
    let started = std::time::Instant::now();
    let mut c = TcpStream::connect(l).await.unwrap();
    let got = read_some(&mut c).await;
    assert!(got.starts_with("peer=127.0.0.1:"), "{got}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    p.wait_stat("listener.127.0.0.1_0.downstream_pre_cx_timeout", 1)
        .await;
    assert_eq!(p.stat("tcp.tcp.downstream_cx_total").await, 1);

    let p = Proxy::start(&inspecting_listener(
        tcp,
        "    listener_filters_timeout: 0.3s\n",
    ));
    let mut c = TcpStream::connect(p.listener("inbound").await)
        .await
        .unwrap();
    assert_eq!(read_some(&mut c).await, "", "closed at the timeout");
    p.wait_stat("listener.127.0.0.1_0.downstream_pre_cx_timeout", 1)
        .await;
    assert_eq!(p.stat("tcp.tcp.downstream_cx_total").await, 0);
}

#[tokio::test]
async fn a_peer_that_leaves_mid_inspection_is_counted_and_the_port_keeps_serving() {
    let tcp = peer_tcp("127.0.0.1:0".parse().unwrap()).await;
    let p = Proxy::start(&inspecting_listener(tcp, ""));
    let l = p.listener("inbound").await;
    for _ in 0..3 {
        let mut c = TcpStream::connect(l).await.unwrap();
        c.write_all(b"GET /half").await.unwrap();
        drop(c);
    }
    // A reset instead of a close.
    let mut c = TcpStream::connect(l).await.unwrap();
    c.write_all(b"POST /x HT").await.unwrap();
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    p.wait_stat("http_inspector.read_error", 4).await;
    assert_eq!(p.stat("http_inspector.http11_found").await, 0);
    let (s, _, body) = http1_request(l, "GET", "/", "a", &[], Bytes::new()).await;
    assert_eq!((s, body.as_str()), (200, "http chain"));
    p.wait_stat("listener.127.0.0.1_0.downstream_cx_active", 0)
        .await;
}
