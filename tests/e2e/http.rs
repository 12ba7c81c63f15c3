//! HTTP through the connection manager: routing, local replies, protocols, stats.

use bytes::Bytes;

use crate::support::*;

#[tokio::test]
async fn http1_request_is_routed_to_the_upstream_with_envoy_headers_and_stats() {
    let up = echo_upstream("a").await;
    let yaml = one_route(up, "", "", "");
    let p = Proxy::start(&yaml);
    let addr = p.listener("in").await;
    let (status, headers, body) = http1_request(
        addr,
        "POST",
        "/hello?x=1",
        "example.com",
        &[("x-custom", "v")],
        Bytes::from("ping"),
    )
    .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["upstream"], "a");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["uri"], "/hello?x=1");
    assert_eq!(v["body"], "ping");
    assert_eq!(v["headers"]["host"], "example.com");
    assert_eq!(v["headers"]["x-custom"], "v");
    assert_eq!(v["headers"]["x-forwarded-proto"], "http");
    assert_eq!(v["headers"]["x-request-id"].as_str().unwrap().len(), 36);
    assert_eq!(
        v["headers"]["x-envoy-expected-rq-timeout-ms"], "15000",
        "the default route timeout"
    );
    assert_eq!(headers["server"], "envoy");
    assert!(headers.contains_key("x-envoy-upstream-service-time"));
    p.wait_stat("cluster.b.upstream_rq_200", 1).await;
    assert_eq!(p.stat("cluster.b.upstream_rq_2xx").await, 1);
    assert_eq!(p.stat("cluster.b.upstream_rq_total").await, 1);
    assert_eq!(p.stat("cluster.b.upstream_cx_total").await, 1);
    assert_eq!(p.stat("http.in.downstream_rq_2xx").await, 1);
    assert_eq!(p.stat("http.in.downstream_rq_total").await, 1);
    assert_eq!(p.stat("listener.127.0.0.1_0.downstream_cx_total").await, 1);
}

#[tokio::test]
async fn keep_alive_reuses_the_upstream_connection() {
    let up = echo_upstream("a").await;
    let yaml = one_route(up, "", "", "");
    let p = Proxy::start(&yaml);
    let addr = p.listener("in").await;
    for _ in 0..5 {
        assert_eq!(get(addr, "/").await.0, 200);
    }
    p.wait_stat("cluster.b.upstream_rq_total", 5).await;
    assert_eq!(p.stat("cluster.b.upstream_cx_total").await, 1);
}

#[tokio::test]
async fn h2c_downstream_and_http2_upstream() {
    let up = echo_upstream("h2").await;
    let yaml = one_route(up, "", "", H2_UPSTREAM);
    let p = Proxy::start(&yaml);
    let addr = p.listener("in").await;
    let (status, _, body) = h2c_get(addr, "/x").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["version"], "HTTP/2.0");
    let (status, _, body) = get(addr, "/y").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["version"], "HTTP/2.0",
        "an HTTP/1.1 request goes upstream over HTTP/2"
    );
    p.wait_stat("http.in.downstream_rq_http2_total", 1).await;
    assert_eq!(p.stat("http.in.downstream_rq_http1_total").await, 1);
    assert_eq!(p.stat("cluster.b.upstream_cx_http2_total").await, 1);
}

#[tokio::test]
async fn downstream_h2_goes_upstream_as_http1_without_protocol_options() {
    let up = echo_upstream("h1").await;
    let yaml = one_route(up, "", "", "");
    let p = Proxy::start(&yaml);
    let (status, _, body) = h2c_get(p.listener("in").await, "/x").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["version"], "HTTP/1.1");
}

#[tokio::test]
async fn local_replies_carry_envoy_status_codes() {
    let up = echo_upstream("a").await;
    let vhosts = r#"            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /none}
                route: {cluster: empty}
              - match: {prefix: /refused}
                route: {cluster: refused}
              - match: {prefix: /slow}
                route: {cluster: b, timeout: 0.2s, prefix_rewrite: /sleep/1000}
              - match: {prefix: /direct}
                direct_response: {status: 418, body: {inline_string: teapot}}
              - match: {prefix: /redirect}
                redirect: {host_redirect: other.example, path_redirect: /new, response_code: TEMPORARY_REDIRECT}
"#;
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}{}{}",
        http_listener("in", vhosts, ""),
        cluster("b", &[up], ""),
        cluster("empty", &[], ""),
        cluster("refused", &[closed_port()], "")
    );
    let p = Proxy::start(&yaml);
    let addr = p.listener("in").await;
    assert_eq!(get(addr, "/no/route/here").await.0, 404);
    p.wait_stat("http.in.no_route", 1).await;
    let (s, _, b) = get(addr, "/none").await;
    assert_eq!((s, b.as_str()), (503, "no healthy upstream"));
    let (s, _, b) = get(addr, "/refused").await;
    assert_eq!(s, 503);
    assert!(b.contains("connection failure"), "{b}");
    p.wait_stat("cluster.refused.upstream_cx_connect_fail", 1)
        .await;
    let (s, _, b) = get(addr, "/slow").await;
    assert_eq!((s, b.as_str()), (504, "upstream request timeout"));
    p.wait_stat("cluster.b.upstream_rq_timeout", 1).await;
    let (s, h, b) = get(addr, "/direct").await;
    assert_eq!((s, b.as_str()), (418, "teapot"));
    // A local reply carries a Date header of its own, with the current time.
    let date = httpdate::parse_http_date(h["date"].to_str().unwrap()).unwrap();
    let now = std::time::SystemTime::now();
    let skew = now.duration_since(date).unwrap_or_else(|e| e.duration());
    assert!(skew < std::time::Duration::from_secs(3), "{:?}", h["date"]);
    let (s, h, _) = get(addr, "/redirect?q=1").await;
    assert_eq!(s, 307);
    assert_eq!(h["location"], "http://other.example/new?q=1");
    p.wait_stat("http.in.downstream_rq_5xx", 3).await;
    assert_eq!(p.stat("http.in.rq_direct_response").await, 1);
    assert_eq!(p.stat("cluster.empty.upstream_cx_none_healthy").await, 1);
}

#[tokio::test]
async fn circuit_breaker_overflow_answers_503() {
    let up = echo_upstream("a").await;
    let cb = "    circuit_breakers:\n      thresholds:\n      - {max_requests: 1}\n";
    let yaml = one_route(up, "", "", cb);
    let p = Proxy::start(&yaml);
    let addr = p.listener("in").await;
    let slow = tokio::spawn(async move { get(addr, "/sleep/800").await.0 });
    p.wait_stat("cluster.b.upstream_rq_active", 1).await;
    let (s, _, b) = get(addr, "/").await;
    assert_eq!(s, 503);
    assert!(b.contains("overflow"), "{b}");
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(p.stat("cluster.b.upstream_rq_pending_overflow").await, 1);
}

#[tokio::test]
async fn weighted_clusters_honour_zero_weights_and_header_mutations() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let vhosts = r#"            - name: all
              domains: ["*"]
              request_headers_to_add: [{header: {key: x-vh, value: "1"}}]
              response_headers_to_add: [{header: {key: x-resp, value: vh}}]
              routes:
              - match: {prefix: /}
                request_headers_to_remove: [x-drop]
                route:
                  weighted_clusters:
                    clusters:
                    - {name: a, weight: 0}
                    - {name: b, weight: 100, request_headers_to_add: [{header: {key: x-wc, value: b}}]}
"#;
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}{}",
        http_listener("in", vhosts, ""),
        cluster("a", &[a], ""),
        cluster("b", &[b], "")
    );
    let p = Proxy::start(&yaml);
    let addr = p.listener("in").await;
    for _ in 0..10 {
        let (s, h, body) =
            http1_request(addr, "GET", "/", "h", &[("x-drop", "1")], Bytes::new()).await;
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["upstream"], "b");
        assert_eq!(v["headers"]["x-vh"], "1");
        assert_eq!(v["headers"]["x-wc"], "b");
        assert!(v["headers"].get("x-drop").is_none());
        assert_eq!(h["x-resp"], "vh");
    }
    p.wait_stat("cluster.b.upstream_rq_total", 10).await;
    assert_eq!(p.stat("cluster.a.upstream_rq_total").await, 0);
}

#[tokio::test]
async fn virtual_hosts_by_authority_and_header_matching() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let vhosts = r#"            - name: api
              domains: ["api.example.com"]
              routes:
              - match: {prefix: /, headers: [{name: x-canary, string_match: {exact: "yes"}}]}
                route: {cluster: b}
              - match: {prefix: /}
                route: {cluster: a}
            - name: wild
              domains: ["*.example.com"]
              routes:
              - match: {prefix: /p/}
                route: {cluster: b, prefix_rewrite: /rewritten/}
"#;
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}{}",
        http_listener("in", vhosts, ""),
        cluster("a", &[a], ""),
        cluster("b", &[b], "")
    );
    let p = Proxy::start(&yaml);
    let addr = p.listener("in").await;
    let up = |body: String| serde_json::from_str::<serde_json::Value>(&body).unwrap();
    let (_, _, body) = http1_request(addr, "GET", "/", "api.example.com", &[], Bytes::new()).await;
    assert_eq!(up(body)["upstream"], "a");
    let (_, _, body) = http1_request(
        addr,
        "GET",
        "/",
        "api.example.com",
        &[("x-canary", "yes")],
        Bytes::new(),
    )
    .await;
    assert_eq!(up(body)["upstream"], "b");
    let (_, _, body) =
        http1_request(addr, "GET", "/p/q", "www.example.com", &[], Bytes::new()).await;
    let v = up(body);
    assert_eq!(v["upstream"], "b");
    assert_eq!(v["uri"], "/rewritten/q");
    assert_eq!(v["headers"]["x-envoy-original-path"], "/p/q");
    let (s, _, _) = http1_request(addr, "GET", "/", "other.org", &[], Bytes::new()).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn websocket_upgrade_is_proxied() {
    use futures_util::{SinkExt, StreamExt};
    let up = ws_echo().await;
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        http_listener(
            "in",
            &routes_to("ws", ""),
            "          upgrade_configs: [{upgrade_type: websocket}]\n"
        ),
        cluster("ws", &[up], "")
    );
    let p = Proxy::start(&yaml);
    let addr = p.listener("in").await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat"))
        .await
        .expect("upgrade succeeds");
    assert_eq!(resp.status(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::text("hello"))
        .await
        .unwrap();
    let m = ws.next().await.unwrap().unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), "hello");
    assert_eq!(p.stat("http.in.downstream_cx_upgrades_total").await, 1);
}

#[tokio::test]
async fn upgrade_without_upgrade_config_is_refused() {
    let up = ws_echo().await;
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        http_listener("in", &routes_to("ws", ""), ""),
        cluster("ws", &[up], "")
    );
    let p = Proxy::start(&yaml);
    let addr = p.listener("in").await;
    let err = tokio_tungstenite::connect_async(format!("ws://{addr}/chat"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
}

#[tokio::test]
async fn strict_dns_cluster_resolves_its_hostname() {
    strict_dns("").await;
}

#[tokio::test]
async fn strict_dns_cluster_with_respect_dns_ttl() {
    strict_dns("    respect_dns_ttl: true\n").await;
}

async fn strict_dns(extra: &str) {
    let up = echo_upstream("dns").await;
    let dns = format!(
        "  - name: named\n    type: STRICT_DNS\n{extra}    dns_lookup_family: V4_ONLY\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: named\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{address: {{socket_address: {{address: localhost, port_value: {}}}}}}}\n",
        up.port()
    );
    let vhosts = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: /}\n                route: {cluster: named, auto_host_rewrite: true}\n";
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{dns}",
        http_listener("in", vhosts, "")
    );
    let p = Proxy::start(&yaml);
    p.wait_stat("cluster.named.membership_healthy", 1).await;
    let (s, _, body) = get(p.listener("in").await, "/").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["upstream"], "dns");
    assert_eq!(
        v["headers"]["host"], "localhost",
        "auto_host_rewrite uses the DNS name"
    );
}

#[tokio::test]
async fn max_connections_queues_requests_and_max_pending_overflows() {
    let up = echo_upstream("a").await;
    let cb = "    circuit_breakers:\n      thresholds:\n      - {max_connections: 1, max_pending_requests: 1}\n";
    let yaml = one_route(up, "", "", cb);
    let p = Proxy::start(&yaml);
    let addr = p.listener("in").await;
    let first = tokio::spawn(async move { get(addr, "/sleep/600").await.0 });
    p.wait_stat("cluster.b.upstream_cx_active", 1).await;
    // The second request waits for the only connection; the third overflows the queue.
    let second = tokio::spawn(async move { get(addr, "/").await.0 });
    p.wait_stat("cluster.b.upstream_rq_pending_active", 1).await;
    let (s, _, b) = get(addr, "/").await;
    assert_eq!(s, 503);
    assert!(b.contains("overflow"), "{b}");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
    assert_eq!(p.stat("cluster.b.upstream_rq_pending_overflow").await, 1);
    assert_eq!(p.stat("cluster.b.upstream_rq_pending_total").await, 2);
    assert_eq!(p.stat("cluster.b.upstream_cx_total").await, 1);
}

#[tokio::test]
async fn oversized_request_headers_are_refused() {
    let up = echo_upstream("a").await;
    let yaml = one_route(up, "          max_request_headers_kb: 1\n", "", "");
    let p = Proxy::start(&yaml);
    let addr = p.listener("in").await;
    let big = "x".repeat(10 * 1024);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(format!("GET / HTTP/1.1\r\nhost: h\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    assert_eq!(get(addr, "/").await.0, 200);
}

#[tokio::test]
async fn upstream_idle_connections_close_after_idle_timeout() {
    let up = echo_upstream("a").await;
    let opts = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        common_http_protocol_options: {idle_timeout: 0.5s}\n        explicit_http_config: {http_protocol_options: {}}\n";
    let yaml = one_route(up, "", "", opts);
    let p = Proxy::start(&yaml);
    assert_eq!(get(p.listener("in").await, "/").await.0, 200);
    p.wait_stat("cluster.b.upstream_cx_active", 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    p.wait_stat("cluster.b.upstream_cx_idle_timeout", 1).await;
    p.wait_stat("cluster.b.upstream_cx_active", 0).await;
    assert_eq!(p.stat("cluster.b.upstream_cx_destroy").await, 1);
}

#[tokio::test]
async fn max_requests_per_connection_opens_new_upstream_connections() {
    let up = echo_upstream("a").await;
    let yaml = one_route(up, "", "", "    max_requests_per_connection: 2\n");
    let p = Proxy::start(&yaml);
    let addr = p.listener("in").await;
    for _ in 0..4 {
        assert_eq!(get(addr, "/").await.0, 200);
    }
    p.wait_stat("cluster.b.upstream_rq_total", 4).await;
    assert_eq!(p.stat("cluster.b.upstream_cx_total").await, 2);
}

#[tokio::test]
async fn malformed_http_gets_400_and_the_proxy_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = echo_upstream("a").await;
    let yaml = one_route(up, "", "", "");
    let p = Proxy::start(&yaml);
    let addr = p.listener("in").await;
    for garbage in [
        &b"\x16\x03\x01\x02\x00garbage\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
        b"NOT A REQUEST AT ALL\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .expect("closed");
        let head = String::from_utf8_lossy(&buf);
        assert!(
            head.is_empty() || head.starts_with("HTTP/1.1 400"),
            "{head}"
        );
    }
    p.wait_stat("http.in.downstream_cx_protocol_error", 3).await;
    assert_eq!(get(addr, "/").await.0, 200);
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let up = echo_upstream("a").await;
    let p = Proxy::start(&one_route(up, "", "", ""));
    let addr = p.listener("in").await;
    let big = "y".repeat(4 * 1024 * 1024);
    let (s, _, body) = http1_request(addr, "POST", "/", "h", &[], Bytes::from(big.clone())).await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["body"].as_str().unwrap().len(), big.len());
    p.wait_stat("cluster.b.upstream_rq_200", 1).await;
}
