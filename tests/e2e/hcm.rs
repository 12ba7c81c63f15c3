//! Connection-manager behaviours: timeouts, path normalization, header rules, compression,
//! draining.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn one(hcm_extra: &str, route_extra: &str, up: std::net::SocketAddr) -> String {
    one_route(up, hcm_extra, route_extra, "")
}

#[tokio::test]
async fn stream_idle_timeout_answers_408_before_response_headers() {
    let up = echo_upstream("slow").await;
    let p = Proxy::start(&one(
        "          stream_idle_timeout: 0.2s\n",
        ", timeout: 5s",
        up,
    ));
    let addr = p.listener("in").await;
    let (s, _, b) = get(addr, "/sleep/1500").await;
    assert_eq!((s, b.as_str()), (408, "stream timeout"));
    p.wait_stat("http.in.downstream_rq_idle_timeout", 1).await;
    // A route idle_timeout overrides the connection manager's.
    let p2 = Proxy::start(&one(
        "          stream_idle_timeout: 0.2s\n",
        ", idle_timeout: 3s",
        up,
    ));
    assert_eq!(get(p2.listener("in").await, "/sleep/500").await.0, 200);
}

#[tokio::test]
async fn connection_idle_timeout_closes_idle_connections() {
    let up = echo_upstream("a").await;
    let p = Proxy::start(&one(
        "          common_http_protocol_options: {idle_timeout: 0.3s}\n",
        "",
        up,
    ));
    let addr = p.listener("in").await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Idle now: the proxy closes the connection after about 0.3s.
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was not closed");
    p.wait_stat("http.in.downstream_cx_idle_timeout", 1).await;
}

#[tokio::test]
async fn connection_idle_timeout_waits_for_a_response_body_still_streaming() {
    // An upstream that sends half its body at once and the rest after 1.5 s, three times the
    // connection's idle timeout: the stream is active until the body is sent.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
                s.write_all(head.as_bytes()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                s.write_all(b"world").await.unwrap();
                let _ = s.read(&mut buf).await;
            });
        }
    });
    let p = Proxy::start(&one(
        "          common_http_protocol_options: {idle_timeout: 0.5s}\n",
        "",
        up,
    ));
    let mut s = tokio::net::TcpStream::connect(p.listener("in").await)
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !got.ends_with(b"helloworld") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the body's second half arrives")
            .unwrap();
        assert!(n > 0, "closed mid-body: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    // Read at once: the idle timeout can only have fired before the body ended (0.5 s of
    // margin after it).
    assert_eq!(p.stat("http.in.downstream_cx_idle_timeout").await, 0);
    // Idle once the body is sent: closed by the idle timeout then.
    assert_closed_promptly(&mut s, "idle after the response").await;
    p.wait_stat("http.in.downstream_cx_idle_timeout", 1).await;
}

#[tokio::test]
async fn normalize_path_and_merge_slashes() {
    let up = echo_upstream("a").await;
    let p = Proxy::start(&one(
        "          normalize_path: true\n          merge_slashes: true\n",
        "",
        up,
    ));
    let addr = p.listener("in").await;
    let (s, _, body) = get(addr, "/a/./b/../c//d/%7Eu?q=/../").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["uri"], "/a/c/d/~u?q=/../");
    assert_eq!(get(addr, "/../etc").await.0, 400);
}

#[tokio::test]
async fn headers_with_underscores_are_rejected_or_dropped_as_configured() {
    let up = echo_upstream("a").await;
    let reject = Proxy::start(&one(
        "          common_http_protocol_options: {headers_with_underscores_action: REJECT_REQUEST}\n",
        "",
        up,
    ));
    let (s, _, _) = http1_request(
        reject.listener("in").await,
        "GET",
        "/",
        "h",
        &[("x_bad", "1")],
        Bytes::new(),
    )
    .await;
    assert_eq!(s, 400);
    reject
        .wait_stat("http.in.requests_rejected_with_underscores_in_headers", 1)
        .await;
    let drop = Proxy::start(&one(
        "          common_http_protocol_options: {headers_with_underscores_action: DROP_HEADER}\n",
        "",
        up,
    ));
    let (s, _, body) = http1_request(
        drop.listener("in").await,
        "GET",
        "/",
        "h",
        &[("x_bad", "1"), ("x-good", "1")],
        Bytes::new(),
    )
    .await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["headers"].get("x_bad").is_none());
    assert_eq!(v["headers"]["x-good"], "1");
}

#[tokio::test]
async fn via_use_remote_address_and_request_id_rules() {
    let up = echo_upstream("a").await;
    let p = Proxy::start(&one(
        "          via: pilotfish-test\n          use_remote_address: true\n          always_set_request_id_in_response: true\n",
        "",
        up,
    ));
    let addr = p.listener("in").await;
    let (_, h, body) = http1_request(
        addr,
        "GET",
        "/",
        "h",
        &[("x-forwarded-for", "1.2.3.4"), ("x-request-id", "abc")],
        Bytes::new(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["headers"]["via"], "pilotfish-test");
    assert_eq!(h["via"], "pilotfish-test");
    assert_eq!(v["headers"]["x-forwarded-for"], "1.2.3.4,127.0.0.1");
    // Loopback is internal: the request id is kept and echoed.
    assert_eq!(v["headers"]["x-envoy-internal"], "true");
    assert_eq!(v["headers"]["x-request-id"], "abc");
    assert_eq!(h["x-request-id"], "abc");
}

#[tokio::test]
async fn without_use_remote_address_the_trusted_forwarded_for_decides_internal() {
    let up = echo_upstream("a").await;
    let p = Proxy::start(&one("", "", up));
    let addr = p.listener("in").await;
    let internal = |xff: Option<&'static str>| async move {
        let headers: Vec<(&str, &str)> = xff.map(|v| ("x-forwarded-for", v)).into_iter().collect();
        let (s, _, body) = http1_request(addr, "GET", "/", "h", &headers, Bytes::new()).await;
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        // The client's x-forwarded-proto is absent: the connection's scheme is set.
        assert_eq!(v["headers"]["x-forwarded-proto"], "http");
        v["headers"]["x-envoy-internal"]
            .as_str()
            .map(str::to_string)
    };
    // xff_num_trusted_hops 0: the last address is the client's.
    assert_eq!(
        internal(Some("8.8.8.8, 10.1.2.3")).await.as_deref(),
        Some("true")
    );
    assert_eq!(internal(Some("10.1.2.3, 8.8.8.8")).await, None);
    // No x-forwarded-for: the client is unknown, so not internal.
    assert_eq!(internal(None).await, None);
}

#[tokio::test]
async fn gzip_compressor_on_a_plain_config() {
    let up = echo_upstream("a").await;
    let compressor = r#"          http_filters:
          - name: gzip
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              compressor_library:
                name: text
                typed_config: {"@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip}
              response_direction_config: {common_config: {content_type: [application/json]}}
"#;
    let yaml = one("", "", up).replace("          http_filters:\n", compressor);
    let p = Proxy::start(&yaml);
    let addr = p.listener("in").await;
    let (_, h, _) = http1_request(
        addr,
        "GET",
        "/",
        "h",
        &[("accept-encoding", "gzip")],
        Bytes::new(),
    )
    .await;
    assert_eq!(h["content-encoding"], "gzip");
    assert!(!h.contains_key("content-length"));
    let (_, h, body) = http1_request(addr, "GET", "/", "h", &[], Bytes::new()).await;
    assert!(!h.contains_key("content-encoding"));
    assert!(body.contains("\"upstream\":\"a\""));
    p.wait_stat("http.in.compressor.text.gzip.compressed", 1)
        .await;
    assert_eq!(
        p.stat("http.in.compressor.text.gzip.not_compressed").await,
        1
    );
}

#[tokio::test]
async fn unhealthy_endpoints_take_no_traffic_until_panic() {
    let a = echo_upstream("healthy").await;
    let b = echo_upstream("unhealthy").await;
    let c = echo_upstream("unhealthy2").await;
    let eps = |list: &[(std::net::SocketAddr, &str)]| -> String {
        list.iter()
            .map(|(addr, st)| format!("        - {{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}, health_status: {st}}}\n", addr.port()))
            .collect()
    };
    let cl = |name: &str, list: String, panic: &str| {
        format!(
            "  - name: {name}\n    connect_timeout: 1s\n{panic}    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n{list}"
        )
    };
    let yaml = format!(
        "static_resources:\n  listeners:\n{}{}  clusters:\n{}{}",
        http_listener("one", &routes_to("mostly_healthy", ""), ""),
        http_listener("two", &routes_to("mostly_unhealthy", ""), ""),
        cl(
            "mostly_healthy",
            eps(&[(a, "HEALTHY"), (b, "UNHEALTHY")]),
            "    common_lb_config: {healthy_panic_threshold: {value: 40}}\n"
        ),
        cl(
            "mostly_unhealthy",
            eps(&[(a, "HEALTHY"), (b, "UNHEALTHY"), (c, "DRAINING")]),
            ""
        ),
    );
    let p = Proxy::start(&yaml);
    let one = p.listener("one").await;
    for _ in 0..10 {
        let (_, _, body) = get(one, "/").await;
        assert!(body.contains("\"upstream\":\"healthy\""), "{body}");
    }
    // One of three healthy is below the default 50% panic threshold: all hosts take traffic.
    let two = p.listener("two").await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..60 {
        let (_, _, body) = get(two, "/").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        seen.insert(v["upstream"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        p.stat("cluster.mostly_unhealthy.membership_healthy").await,
        1
    );
    assert_eq!(p.stat("cluster.mostly_unhealthy.membership_total").await, 3);
}

#[tokio::test]
async fn drain_listeners_inboundonly_discourages_only_inbound_connections() {
    let up = echo_upstream("a").await;
    let inbound = http_listener("inbound", &routes_to("b", ""), "").replace(
        "    filter_chains:",
        "    traffic_direction: INBOUND\n    filter_chains:",
    );
    let yaml = format!(
        "static_resources:\n  listeners:\n{}{}  clusters:\n{}",
        inbound,
        http_listener("outbound", &routes_to("b", ""), ""),
        cluster("b", &[up], "")
    );
    let p = Proxy::start_with(&yaml, &["--drain-strategy", "immediate"]);
    let (i, o) = (p.listener("inbound").await, p.listener("outbound").await);
    assert_eq!(
        p.admin_post("/drain_listeners?inboundonly&graceful&skip_exit")
            .await
            .0,
        200
    );
    let (s, h, _) = get(i, "/").await;
    assert_eq!(s, 200, "a draining listener still serves");
    assert_eq!(h["connection"], "close");
    let (s, h, _) = get(o, "/").await;
    assert_eq!(s, 200);
    assert!(
        !h.contains_key("connection"),
        "the outbound listener is not draining"
    );
    // Without graceful, listeners stop accepting at once.
    assert_eq!(p.admin_post("/drain_listeners").await.0, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(o).await.is_err(),
        "the listener still accepts"
    );
    assert_eq!(
        p.admin("/ready").await.0,
        200,
        "draining listeners does not stop the server"
    );
}

#[test]
fn invalid_component_log_level_is_an_error() {
    let (code, _, err) = run(&[
        "--component-log-level",
        "nosuch:debug",
        "--config-yaml",
        "{}",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid component"), "{err}");
}

#[tokio::test]
async fn request_timeout_answers_408_when_the_body_is_too_slow() {
    let up = echo_upstream("a").await;
    let p = Proxy::start(&one("          request_timeout: 0.3s\n", "", up));
    let addr = p.listener("in").await;
    let (s, _, _) = http1_request(addr, "POST", "/", "h", &[], Bytes::from("quick")).await;
    assert_eq!(s, 200, "a request received in time passes");
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 10\r\n\r\nab")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.ends_with("request timeout"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(2));
    p.wait_stat("http.in.downstream_rq_timeout", 1).await;
}

#[tokio::test]
async fn require_tls_redirects_plaintext_requests() {
    let up = echo_upstream("a").await;
    let vhost = |mode: &str| {
        format!(
            "            - name: all\n              domains: [\"*\"]\n              require_tls: {mode}\n              routes:\n              - match: {{prefix: /}}\n                route: {{cluster: b}}\n"
        )
    };
    let all = Proxy::start(&format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        http_listener("in", &vhost("ALL"), ""),
        cluster("b", &[up], "")
    ));
    let addr = all.listener("in").await;
    let (s, h, _) = http1_request(addr, "GET", "/x?y=1", "api.example", &[], Bytes::new()).await;
    assert_eq!(s, 301);
    assert_eq!(h["location"], "https://api.example/x?y=1");
    // A trusted x-forwarded-proto says the client used TLS.
    let (s, _, _) = http1_request(
        addr,
        "GET",
        "/x",
        "h",
        &[("x-forwarded-proto", "https")],
        Bytes::new(),
    )
    .await;
    assert_eq!(s, 200);
    let external = Proxy::start(&format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        http_listener(
            "in",
            &vhost("EXTERNAL_ONLY"),
            "          use_remote_address: true\n"
        ),
        cluster("b", &[up], "")
    ));
    // Loopback is an internal address: no redirect.
    assert_eq!(get(external.listener("in").await, "/").await.0, 200);
}

#[tokio::test]
async fn x_forwarded_client_cert_from_a_plaintext_client_is_removed_unless_always_forwarded() {
    let up = echo_upstream("a").await;
    for (mode, kept) in [
        ("SANITIZE", false),
        ("FORWARD_ONLY", false),
        ("APPEND_FORWARD", false),
        ("SANITIZE_SET", false),
        ("ALWAYS_FORWARD_ONLY", true),
    ] {
        let p = Proxy::start(&one_route(
            up,
            &format!("          forward_client_cert_details: {mode}\n"),
            "",
            "",
        ));
        let (s, _, body) = http1_request(
            p.listener("in").await,
            "GET",
            "/",
            "x",
            &[("x-forwarded-client-cert", "By=spoofed")],
            Bytes::new(),
        )
        .await;
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["headers"].get("x-forwarded-client-cert").is_some(),
            kept,
            "{mode}: {body}"
        );
    }
}
