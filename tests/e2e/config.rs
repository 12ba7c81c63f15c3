//! Bad input and validation: every error names its path, exits non-zero and binds nothing.

use crate::support::*;

const ROUTER: &str =
    "{\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}";

fn listener_yaml(port: u16, vhosts: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          route_config: {{virtual_hosts: [{vhosts}]}}
          http_filters: [{{name: router, typed_config: {ROUTER}}}]
  clusters:
  - name: c
    load_assignment: {{cluster_name: c, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}}}}}]}}]}}
"#
    )
}

fn assert_refused(yaml: &str, path: &str, what: &str) {
    let (code, err) = validate(yaml);
    assert_ne!(code, 0, "config was accepted: {yaml}");
    assert!(err.contains(path), "error does not name {path}: {err}");
    assert!(err.contains(what), "error does not say {what}: {err}");
}

#[test]
fn valid_config_passes_validate() {
    let (code, err) = validate(&listener_yaml(
        0,
        "{name: v, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: c}}]}",
    ));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn malformed_yaml_is_refused() {
    assert_refused("static_resources: [unclosed", "", "malformed");
}

#[test]
fn unknown_field_is_refused_with_its_path() {
    let y = listener_yaml(0, "{name: v, domains: ['*'], bogus_field: 1, routes: []}");
    assert_refused(&y, "virtual_hosts[0]", "bogus_field");
}

#[test]
fn unknown_field_is_skipped_with_allow_unknown_static_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.yaml");
    std::fs::write(
        &path,
        listener_yaml(0, "{name: v, domains: ['*'], bogus_field: 1, routes: []}"),
    )
    .unwrap();
    let (code, _, err) = run(&[
        "--mode",
        "validate",
        "--allow-unknown-static-fields",
        "-c",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn unsupported_field_is_refused_with_its_path() {
    let y = listener_yaml(
        0,
        "{name: v, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: c, hash_policy: [{header: {header_name: x}}]}}]}",
    );
    assert_refused(
        &y,
        "virtual_hosts[0].routes[0].route.hash_policy",
        "unsupported field",
    );
}

#[test]
fn unknown_type_url_is_refused() {
    let y = listener_yaml(0, "{name: v, domains: ['*'], routes: []}").replace(
        "envoy.extensions.filters.http.router.v3.Router",
        "example.NoSuchFilter",
    );
    assert_refused(&y, "static_resources.listeners[0]", "example.NoSuchFilter");
}

#[test]
fn route_to_missing_cluster_is_refused() {
    let y = listener_yaml(
        0,
        "{name: v, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: nope}}]}",
    );
    assert_refused(
        &y,
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config",
        "unknown cluster \"nope\"",
    );
}

#[test]
fn duplicate_listener_name_is_refused() {
    let y = listener_yaml(0, "{name: v, domains: ['*'], routes: []}");
    let dup = y.replace("  clusters:", "  - name: l\n    address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n    filter_chains: [{filters: [{name: t, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: c}}]}]\n  clusters:");
    assert_refused(
        &dup,
        "static_resources.listeners[1].name",
        "duplicate listener name",
    );
}

#[test]
fn serve_mode_with_bad_config_exits_non_zero_and_binds_nothing() {
    let port = closed_port().port();
    let y = listener_yaml(
        port,
        "{name: v, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: nope}}]}",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.yaml");
    std::fs::write(&path, y).unwrap();
    let (code, _, err) = run(&["-c", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown cluster"), "{err}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} is bound"
    );
}

#[test]
fn unknown_flag_is_an_error() {
    let (code, _, err) = run(&["--no-such-flag"]);
    assert_ne!(code, 0);
    assert!(err.contains("--no-such-flag"), "{err}");
}

#[test]
fn config_yaml_merges_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.yaml");
    std::fs::write(
        &path,
        listener_yaml(
            0,
            "{name: v, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: nope}}]}",
        ),
    )
    .unwrap();
    // The override adds the missing cluster (repeated fields append, as Envoy's merge does).
    let extra =
        "static_resources: {clusters: [{name: nope, load_assignment: {cluster_name: nope}}]}";
    let (code, _, err) = run(&[
        "--mode",
        "validate",
        "-c",
        path.to_str().unwrap(),
        "--config-yaml",
        extra,
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn istio_bootstraps_validate() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/istio-bootstrap");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "SKIPPED: {} is absent; Istio bootstrap validation not run",
            dir.display()
        );
        return;
    };
    let mut failures = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        let (code, _, err) = run(&[
            "--mode",
            "validate",
            "--allow-unknown-static-fields",
            "-c",
            p.to_str().unwrap(),
        ]);
        if code != 0 {
            failures.push(format!("{}: {err}", p.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn upstream_http2_stream_limit_is_refused_with_its_path() {
    let base = listener_yaml(0, "{name: v, domains: ['*'], routes: []}");
    let h2 = base.replace(
        "  - name: c\n",
        "  - name: c\n    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: {http2_protocol_options: {max_concurrent_streams: 10}}\n",
    );
    assert_refused(
        &h2,
        "explicit_http_config.http2_protocol_options.max_concurrent_streams",
        "stream limit",
    );
}

#[test]
fn oversized_direct_response_body_is_refused() {
    let y = listener_yaml(0, "{name: v, domains: ['*'], routes: [{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: '0123456789'}}}]}")
        .replace("route_config: {", "route_config: {max_direct_response_body_size_bytes: 4, ");
    assert_refused(
        &y,
        "virtual_hosts[0].routes[0].direct_response.body",
        "max_direct_response_body_size_bytes",
    );
}

#[test]
fn upstream_protocol_options_not_honoured_are_refused() {
    let base = listener_yaml(0, "{name: v, domains: ['*'], routes: []}");
    let opts = |inner: &str| {
        base.replace(
            "  - name: c\n",
            &format!("  - name: c\n    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n{inner}"),
        )
    };
    assert_refused(
        &opts(
            "        common_http_protocol_options: {max_headers_count: 10}\n        explicit_http_config: {http_protocol_options: {}}\n",
        ),
        "common_http_protocol_options.max_headers_count",
        "unsupported field",
    );
    assert_refused(
        &opts("        explicit_http_config: {http_protocol_options: {accept_http_10: true}}\n"),
        "explicit_http_config.http_protocol_options",
        "unsupported field",
    );
}
