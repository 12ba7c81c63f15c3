//! Access logs: Envoy's default format, custom text and JSON formats, HTTP and TCP.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn file_log(path: &std::path::Path, format: &str) -> String {
    format!(
        "          access_log:\n          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n{format}",
        path.display()
    )
}

async fn read_lines(path: &std::path::Path, want: usize) -> Vec<String> {
    for _ in 0..100 {
        if let Ok(s) = std::fs::read_to_string(path) {
            let lines: Vec<String> = s.lines().map(str::to_string).collect();
            if lines.len() >= want {
                return lines;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} has fewer than {want} lines", path.display());
}

#[tokio::test]
async fn http_default_format_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let up = echo_upstream("a").await;
    let p = Proxy::start_with(
        &one_route(up, &file_log(&log, ""), "", ""),
        &["--file-flush-interval-msec", "50"],
    );
    let addr = p.listener("in").await;
    let (s, _, _) = http1_request(
        addr,
        "POST",
        "/hello?x=1",
        "example.com",
        &[("user-agent", "test-agent"), ("x-request-id", "rid-1")],
        Bytes::from("12345"),
    )
    .await;
    assert_eq!(s, 200);
    let lines = read_lines(&log, 1).await;
    let l = &lines[0];
    assert!(l.starts_with('['), "{l}");
    assert!(l.contains("] \"POST /hello?x=1 HTTP/1.1\" 200 - 5 "), "{l}");
    assert!(
        l.contains("\"-\" \"test-agent\" \"rid-1\" \"example.com\""),
        "{l}"
    );
    assert!(l.ends_with(&format!("\"{up}\"")), "{l}");
}

#[tokio::test]
async fn http_json_format_with_upstream_details() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let up = echo_upstream("a").await;
    let format = "              log_format:\n                json_format:\n                  code: \"%RESPONSE_CODE%\"\n                  flags: \"%RESPONSE_FLAGS%\"\n                  details: \"%RESPONSE_CODE_DETAILS%\"\n                  cluster: \"%UPSTREAM_CLUSTER%\"\n                  sent: \"%BYTES_SENT%\"\n                  method: \"%REQ(:METHOD)%\"\n                  sni: \"%REQUESTED_SERVER_NAME%\"\n";
    let vhosts = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - name: to_b\n                match: {prefix: /ok}\n                route: {cluster: b}\n              - match: {prefix: /dead}\n                route: {cluster: dead}\n";
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}{}",
        http_listener("in", vhosts, &file_log(&log, format)),
        cluster("b", &[up], ""),
        cluster("dead", &[closed_port()], "")
    );
    let p = Proxy::start_with(&yaml, &["--file-flush-interval-msec", "50"]);
    let addr = p.listener("in").await;
    let (_, _, body) = get(addr, "/ok").await;
    assert_eq!(get(addr, "/dead").await.0, 503);
    let lines = read_lines(&log, 2).await;
    let ok: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(ok["code"], 200);
    assert_eq!(ok["flags"], "-");
    assert_eq!(ok["details"], "via_upstream");
    assert_eq!(ok["cluster"], "b");
    assert_eq!(ok["sent"], body.len() as u64);
    assert_eq!(ok["method"], "GET");
    assert!(ok["sni"].is_null());
    let dead: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(dead["code"], 503);
    assert_eq!(dead["flags"], "UF");
    assert_eq!(
        dead["details"],
        "upstream_reset_before_response_started{connection_failure}"
    );
}

#[tokio::test]
async fn tcp_proxy_logs_bytes_and_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tcp.log");
    let up = tcp_echo().await;
    let yaml = format!(
        "static_resources:\n  listeners:\n  - name: t\n    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n    filter_chains:\n    - filters:\n      - name: tcp\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: t\n          cluster: echo\n          access_log:\n          - name: file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n              log_format: {{text_format_source: {{inline_string: \"%BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_HOST% %UPSTREAM_CLUSTER% %RESPONSE_FLAGS%\\n\"}}}}\n  clusters:\n{}",
        log.display(),
        cluster("echo", &[up], "")
    );
    let p = Proxy::start_with(&yaml, &["--file-flush-interval-msec", "50"]);
    let mut s = tokio::net::TcpStream::connect(p.listener("t").await)
        .await
        .unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).await.unwrap();
    drop(s);
    let lines = read_lines(&log, 1).await;
    assert_eq!(lines[0], format!("5 5 {up} echo -"));
}

#[test]
fn unsupported_operator_is_refused_with_its_path() {
    let yaml = one_route(
        "127.0.0.1:1".parse().unwrap(),
        &file_log(
            std::path::Path::new("/dev/null"),
            "              log_format: {text_format_source: {inline_string: \"%DYNAMIC_METADATA(x)%\"}}\n",
        ),
        "",
        "",
    );
    let (code, err) = validate(&format!(
        "admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}\n{yaml}"
    ));
    assert_ne!(code, 0);
    assert!(
        err.contains("typed_config.access_log[0].typed_config"),
        "{err}"
    );
    assert!(err.contains("DYNAMIC_METADATA"), "{err}");
}
