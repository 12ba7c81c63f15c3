//! Downstream TLS on a filter chain: termination, client certificates (STRICT mTLS), SAN
//! matching, ALPN, Envoy's ssl.* stats, and TLS config errors.

use std::net::SocketAddr;
use std::path::Path;

use crate::support::*;
use crate::test_ca::{self, Leaf, TestCa};

const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";

/// A bootstrap with one TLS HTTP listener `in` (HCM stat prefix `in`, listener stat prefix
/// `tls`) routing to `up`; `validation` is the validation_context YAML (or empty), `extra`
/// more DownstreamTlsContext fields.
fn tls_bootstrap(
    dir: &Path,
    ca: &TestCa,
    server: &Leaf,
    up: SocketAddr,
    validation: &str,
    extra: &str,
) -> String {
    let cert = test_ca::write(dir, "server.pem", &server.cert);
    let key = test_ca::write(dir, "server.key", &server.key);
    let ca_file = test_ca::write(dir, "ca.pem", &ca.pem);
    let validation = validation.replace("CA_FILE", &ca_file.display().to_string());
    format!(
        r#"static_resources:
  listeners:
  - name: in
    stat_prefix: tls
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{filename: {cert}}}
              private_key: {{filename: {key}}}
            alpn_protocols: [h2, http/1.1]
{validation}{extra}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          route_config:
            virtual_hosts:
{routes}          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
{cluster}"#,
        cert = cert.display(),
        key = key.display(),
        routes = routes_to("b", ""),
        cluster = cluster("b", &[up], ""),
    )
}

/// The STRICT listener of `tls_bootstrap`: a client certificate from `ca` with the client's
/// SPIFFE identity is required.
pub fn strict_bootstrap(dir: &Path, ca: &TestCa, server: &Leaf, up: SocketAddr) -> String {
    tls_bootstrap(dir, ca, server, up, STRICT, "")
}

const STRICT: &str = "            validation_context:
              trusted_ca: {filename: CA_FILE}
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: {exact: \"spiffe://cluster.local/ns/default/sa/client\"}
          require_client_certificate: true";

#[tokio::test]
async fn tls_is_terminated_and_alpn_picks_http2() {
    let up = echo_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    let server = ca.leaf(SERVER_ID, &["server.test"]);
    let p = Proxy::start(&tls_bootstrap(dir.path(), &ca, &server, up, "", ""));
    let l = p.listener("in").await;
    let cfg = test_ca::client_config(&ca.pem, None, &["http/1.1"]);
    assert_eq!(test_ca::get(l, cfg).await, Ok(200));
    // HTTP/2 by ALPN, end to end through hyper's client.
    let tls = test_ca::connect(l, test_ca::client_config(&ca.pem, None, &["h2"]))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://server.test/")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    p.wait_stat("http.in.downstream_rq_http2_total", 1).await;
    assert_eq!(p.stat("listener.tls.ssl.handshake").await, 2);
    assert_eq!(p.stat("listener.tls.ssl.no_certificate").await, 2);
    assert_eq!(p.stat("listener.tls.ssl.versions.TLSv1.3").await, 2);
    // Plaintext on a TLS-only chain is a connection error, and the listener keeps serving.
    let (s, body) = raw_get(l).await;
    assert!(s.is_none(), "plaintext got an answer: {body}");
    p.wait_stat("listener.tls.ssl.connection_error", 1).await;
    let cfg = test_ca::client_config(&ca.pem, None, &[]);
    assert_eq!(test_ca::get(l, cfg).await, Ok(200));
}

/// A plaintext HTTP/1.1 GET: the status, if any answer came.
async fn raw_get(addr: SocketAddr) -> (Option<u16>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    (text.get(9..12).and_then(|c| c.parse().ok()), text)
}

#[tokio::test]
async fn strict_mtls_checks_the_client_certificate() {
    let up = echo_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    let server = ca.leaf(SERVER_ID, &["server.test"]);
    let p = Proxy::start(&tls_bootstrap(dir.path(), &ca, &server, up, STRICT, ""));
    let l = p.listener("in").await;
    let with = |leaf: Option<&Leaf>| test_ca::client_config(&ca.pem, leaf, &[]);

    // The right workload is let in.
    let client = ca.leaf(CLIENT_ID, &[]);
    assert_eq!(test_ca::get(l, with(Some(&client))).await, Ok(200));
    assert_eq!(p.stat("listener.tls.ssl.handshake").await, 1);

    // No certificate.
    assert!(test_ca::get(l, with(None)).await.is_err());
    p.wait_stat("listener.tls.ssl.fail_verify_no_cert", 1).await;

    // A certificate from another CA.
    let other = TestCa::new("other").leaf(CLIENT_ID, &[]);
    assert!(test_ca::get(l, with(Some(&other))).await.is_err());
    p.wait_stat("listener.tls.ssl.fail_verify_error", 1).await;

    // An expired certificate.
    let expired = ca.expired_leaf(CLIENT_ID, &[]);
    assert!(test_ca::get(l, with(Some(&expired))).await.is_err());
    p.wait_stat("listener.tls.ssl.fail_verify_error", 2).await;

    // The wrong identity.
    let stranger = ca.leaf("spiffe://cluster.local/ns/other/sa/stranger", &[]);
    assert!(test_ca::get(l, with(Some(&stranger))).await.is_err());
    p.wait_stat("listener.tls.ssl.fail_verify_san", 1).await;

    // Garbage instead of a ClientHello.
    let (s, _) = raw_get(l).await;
    assert!(s.is_none());
    p.wait_stat("listener.tls.ssl.connection_error", 1).await;

    // Only the good handshake counted, and the listener still serves.
    assert_eq!(test_ca::get(l, with(Some(&client))).await, Ok(200));
    assert_eq!(p.stat("listener.tls.ssl.handshake").await, 2);
    assert_eq!(p.stat("http.in.downstream_rq_2xx").await, 2);
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_at_the_connect_timeout() {
    let up = echo_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    let server = ca.leaf(SERVER_ID, &["server.test"]);
    let yaml = tls_bootstrap(dir.path(), &ca, &server, up, "", "").replace(
        "    - transport_socket:",
        "    - transport_socket_connect_timeout: 0.3s\n      transport_socket:",
    );
    let p = Proxy::start(&yaml);
    let l = p.listener("in").await;
    let mut s = tokio::net::TcpStream::connect(l).await.unwrap();
    assert_closed_promptly(&mut s, "the proxy closes a silent connection").await;
    p.wait_stat("listener.tls.ssl.connection_error", 1).await;
}

#[test]
fn tls_config_errors_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    let server = ca.leaf(SERVER_ID, &["server.test"]);
    let up: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let base = tls_bootstrap(dir.path(), &ca, &server, up, "", "");
    // A key that is not the certificate's.
    let other = ca.leaf(SERVER_ID, &[]);
    let wrong_key = test_ca::write(dir.path(), "other.key", &other.key);
    let yaml = base.replace(
        &format!("{}", dir.path().join("server.key").display()),
        &wrong_key.display().to_string(),
    );
    let (code, err) = validate(&yaml);
    assert_ne!(code, 0);
    assert!(
        err.contains("common_tls_context.tls_certificates[0]") && err.contains("does not match"),
        "{err}"
    );
    // Cipher suites and versions rustls cannot honour.
    let yaml = tls_bootstrap(
        dir.path(),
        &ca,
        &server,
        up,
        "            tls_params: {tls_minimum_protocol_version: TLSv1_0}\n",
        "",
    );
    let (code, err) = validate(&yaml);
    assert_ne!(code, 0);
    assert!(
        err.contains("tls_params.tls_minimum_protocol_version"),
        "{err}"
    );
    let ciphers = |list: &str| {
        yaml.replace(
            "tls_minimum_protocol_version: TLSv1_0",
            &format!("cipher_suites: [{list}]"),
        )
    };
    let (_, err) = validate(&ciphers("ECDHE-RSA-AES128-GCM-SHA256, NOT-A-CIPHER"));
    assert!(
        err.contains("tls_params.cipher_suites[1]") && err.contains("\"NOT-A-CIPHER\""),
        "{err}"
    );
    // A list of only suites rustls lacks is refused; Istio's list, whose RSA key exchange
    // suites follow its ECDHE ones, is taken.
    let (_, err) = validate(&ciphers("AES128-SHA, AES256-GCM-SHA384"));
    assert!(
        err.contains("tls_params.cipher_suites[0]") && err.contains("\"AES128-SHA\""),
        "{err}"
    );
    let istio = "ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, AES256-GCM-SHA384, AES128-GCM-SHA256";
    let (code, err) = validate(&ciphers(istio));
    assert_eq!(code, 0, "{err}");
    // A CA bundle that does not parse, and SAN checks without a CA.
    let garbage = test_ca::write(dir.path(), "garbage.pem", "not a certificate");
    let yaml = tls_bootstrap(
        dir.path(),
        &ca,
        &server,
        up,
        &format!(
            "            validation_context: {{trusted_ca: {{filename: {}}}}}\n",
            garbage.display()
        ),
        "",
    );
    let (_, err) = validate(&yaml);
    assert!(err.contains("validation_context.trusted_ca"), "{err}");
    let yaml = tls_bootstrap(
        dir.path(),
        &ca,
        &server,
        up,
        "            validation_context: {match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: x}}]}\n",
        "",
    );
    let (_, err) = validate(&yaml);
    assert!(err.contains("validation_context.trusted_ca"), "{err}");
    // An inline certificate and an SDS one in one context.
    let yaml = base.replace(
        "            alpn_protocols:",
        "            tls_certificate_sds_secret_configs: [{name: default}]\n            alpn_protocols:",
    );
    let (_, err) = validate(&yaml);
    assert!(
        err.contains("common_tls_context.tls_certificate_sds_secret_configs")
            && err.contains("cannot be used together with tls_certificates"),
        "{err}"
    );
}

/// A listener with tls_inspector and three chains on one port, as Istio's PERMISSIVE
/// virtualInbound: TLS with SNI `a.test` to cluster `a`, any other TLS to cluster `t`, and
/// plaintext to cluster `p`. `listener_extra` adds listener fields.
fn permissive(dir: &Path, ca: &TestCa, ups: [SocketAddr; 3], listener_extra: &str) -> String {
    let server = ca.leaf(SERVER_ID, &["server.test", "a.test"]);
    let cert = test_ca::write(dir, "server.pem", &server.cert);
    let key = test_ca::write(dir, "server.key", &server.key);
    let tls = format!(
        r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates: [{{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}]
"#,
        cert.display(),
        key.display()
    );
    let hcm = |cluster: &str| {
        format!(
            r#"      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {cluster}
          route_config:
            virtual_hosts:
{}          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#,
            routes_to(cluster, "")
        )
    };
    format!(
        r#"static_resources:
  listeners:
  - name: in
    stat_prefix: inbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
{listener_extra}    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector, initial_read_buffer_size: 512}}
    filter_chains:
    - filter_chain_match: {{transport_protocol: tls, server_names: [a.test]}}
{tls}{a}    - filter_chain_match: {{transport_protocol: tls}}
{tls}{t}    - filter_chain_match: {{transport_protocol: raw_buffer}}
{p}  clusters:
{ca}{ct}{cp}"#,
        a = hcm("a"),
        t = hcm("t"),
        p = hcm("p"),
        ca = cluster("a", &[ups[0]], ""),
        ct = cluster("t", &[ups[1]], ""),
        cp = cluster("p", &[ups[2]], ""),
    )
}

/// Echo upstreams `a`, `t` and `p` for `permissive`.
async fn three_upstreams() -> [SocketAddr; 3] {
    [
        echo_upstream("a").await,
        echo_upstream("t").await,
        echo_upstream("p").await,
    ]
}

fn upstream_name(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["upstream"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn tls_inspector_serves_tls_and_plaintext_on_one_port_and_matches_sni() {
    let ups = three_upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    let p = Proxy::start(&permissive(dir.path(), &ca, ups, ""));
    let l = p.listener("in").await;
    let cfg = test_ca::client_config(&ca.pem, None, &["istio-http/1.1", "http/1.1"]);
    let (s, body) = test_ca::get_as(l, cfg.clone(), "a.test").await.unwrap();
    assert_eq!((s, upstream_name(&body).as_str()), (200, "a"));
    let (s, body) = test_ca::get_as(l, cfg, "server.test").await.unwrap();
    assert_eq!((s, upstream_name(&body).as_str()), (200, "t"));
    let (s, _, body) = get(l, "/").await;
    assert_eq!((s, upstream_name(&body).as_str()), (200, "p"));
    p.wait_stat("tls_inspector.tls_found", 2).await;
    assert_eq!(p.stat("tls_inspector.tls_not_found").await, 1);
    assert_eq!(p.stat("tls_inspector.sni_found").await, 2);
    assert_eq!(p.stat("tls_inspector.alpn_found").await, 2);
    assert_eq!(p.stat("listener.inbound.ssl.handshake").await, 2);
}

#[tokio::test]
async fn listener_filter_timeout_closes_or_continues_as_configured() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ups = three_upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    // Closing: a client that sends nothing is dropped at the timeout.
    let p = Proxy::start(&permissive(
        dir.path(),
        &ca,
        ups,
        "    listener_filters_timeout: 0.3s\n",
    ));
    let l = p.listener("in").await;
    let mut s = tokio::net::TcpStream::connect(l).await.unwrap();
    assert_closed_promptly(&mut s, "closed at the listener filter timeout").await;
    p.wait_stat("listener.inbound.downstream_pre_cx_timeout", 1)
        .await;
    drop(p);
    // Continuing: after the timeout the connection is matched as plaintext and served.
    let p = Proxy::start(&permissive(
        dir.path(),
        &ca,
        ups,
        "    listener_filters_timeout: 0.3s\n    continue_on_listener_filters_timeout: true\n",
    ));
    let l = p.listener("in").await;
    let mut s = tokio::net::TcpStream::connect(l).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"upstream\":\"p\""), "{text}");
    assert_eq!(
        p.stat("listener.inbound.downstream_pre_cx_timeout").await,
        1
    );
}

/// An HTTP/1.1 upstream over TLS that requires a client certificate from `ca` and answers
/// with the SNI it got and the client's first URI SAN.
pub async fn tls_upstream(ca: &TestCa, leaf: &Leaf) -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            rustls_pki_types::CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
                .map(|c| c.unwrap())
                .collect(),
            rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let conn = tls.get_ref().1;
                let sni = conn.server_name().unwrap_or("").to_string();
                let peer = conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| pilotfish::tls::san::sans(c))
                    .unwrap_or_default()
                    .into_iter()
                    .find(|s| s.kind == pilotfish::tls::san::SanKind::Uri)
                    .map(|s| s.value)
                    .unwrap_or_default();
                let body = serde_json::json!({"sni": sni, "peer": peer}).to_string();
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// A cluster originating mTLS to `up` with the proxy's certificate, checking the upstream's
/// SAN against `expect`.
pub fn tls_cluster(
    name: &str,
    up: SocketAddr,
    dir: &Path,
    ca_file: &Path,
    proxy: &Leaf,
    expect: &str,
) -> String {
    let cert = test_ca::write(dir, &format!("{name}-proxy.pem"), &proxy.cert);
    let key = test_ca::write(dir, &format!("{name}-proxy.key"), &proxy.key);
    let extra = format!(
        r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.80_._.{name}.default.svc.cluster.local
        common_tls_context:
          tls_certificates: [{{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}]
          validation_context:
            trusted_ca: {{filename: {}}}
            match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: "{expect}"}}}}]
"#,
        cert.display(),
        key.display(),
        ca_file.display()
    );
    cluster(name, &[up], &extra)
}

#[tokio::test]
async fn upstream_mtls_presents_the_proxy_identity_and_checks_the_upstream_san() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    let ca_file = test_ca::write(dir.path(), "ca.pem", &ca.pem);
    let upstream_id = "spiffe://cluster.local/ns/default/sa/upstream";
    let up = tls_upstream(&ca, &ca.leaf(upstream_id, &[])).await;
    let proxy = ca.leaf(CLIENT_ID, &[]);
    let yaml = format!(
        "static_resources:\n  listeners:\n{}{}  clusters:\n{}{}",
        http_listener("good", &routes_to("b", ""), ""),
        http_listener("bad", &routes_to("w", ""), ""),
        tls_cluster("b", up, dir.path(), &ca_file, &proxy, upstream_id),
        tls_cluster(
            "w",
            up,
            dir.path(),
            &ca_file,
            &proxy,
            "spiffe://cluster.local/ns/default/sa/other"
        ),
    );
    let p = Proxy::start(&yaml);
    let good = p.listener("good").await;
    for _ in 0..3 {
        let (s, _, body) = get(good, "/").await;
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["sni"], "outbound_.80_._.b.default.svc.cluster.local");
        assert_eq!(v["peer"], CLIENT_ID);
    }
    assert_eq!(
        p.stat("cluster.b.ssl.handshake").await,
        1,
        "one pooled connection"
    );
    assert_eq!(p.stat("cluster.b.ssl.versions.TLSv1.3").await, 1);
    let (s, _, body) = get(p.listener("bad").await, "/").await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(p.stat("cluster.w.ssl.fail_verify_san").await, 1);
    assert_eq!(p.stat("cluster.w.upstream_cx_connect_fail").await, 1);
}

#[tokio::test]
async fn transport_socket_matches_pick_mtls_by_endpoint_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    let ca_file = test_ca::write(dir.path(), "ca.pem", &ca.pem);
    let upstream_id = "spiffe://cluster.local/ns/default/sa/upstream";
    let mesh = tls_upstream(&ca, &ca.leaf(upstream_id, &[])).await;
    let plain = echo_upstream("plain").await;
    let proxy = ca.leaf(CLIENT_ID, &[]);
    let cert = test_ca::write(dir.path(), "proxy.pem", &proxy.cert);
    let key = test_ca::write(dir.path(), "proxy.key", &proxy.key);
    // As Istio's auto-mTLS: endpoints labelled tlsMode=istio get mTLS, the others plaintext.
    let cluster = format!(
        r#"  - name: b
    connect_timeout: 1s
    transport_socket_matches:
    - name: tlsMode-istio
      match: {{tlsMode: istio}}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: outbound_.80_._.b.default.svc.cluster.local
          common_tls_context:
            tls_certificates: [{{certificate_chain: {{filename: {cert}}}, private_key: {{filename: {key}}}}}]
            validation_context:
              trusted_ca: {{filename: {ca}}}
              match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: "{upstream_id}"}}}}]
    - name: tlsMode-disabled
      match: {{}}
      transport_socket: {{name: envoy.transport_sockets.raw_buffer}}
    load_assignment:
      cluster_name: b
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {mesh_port}}}}}}}
          metadata: {{filter_metadata: {{envoy.transport_socket_match: {{tlsMode: istio}}}}}}
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {plain_port}}}}}}}
"#,
        cert = cert.display(),
        key = key.display(),
        ca = ca_file.display(),
        mesh_port = mesh.port(),
        plain_port = plain.port(),
    );
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{cluster}",
        http_listener("in", &routes_to("b", ""), ""),
    );
    let p = Proxy::start(&yaml);
    let l = p.listener("in").await;
    let (mut mtls, mut plaintext) = (0, 0);
    for _ in 0..6 {
        let (s, _, body) = get(l, "/").await;
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["peer"] == CLIENT_ID {
            mtls += 1;
        } else {
            assert_eq!(v["upstream"], "plain", "{body}");
            plaintext += 1;
        }
    }
    assert_eq!((mtls, plaintext), (3, 3), "round robin over both endpoints");
    assert_eq!(p.stat("cluster.b.ssl.handshake").await, 1);
}

#[tokio::test]
async fn access_logs_carry_the_downstream_tls_identity() {
    let up = echo_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let ca = TestCa::new("root");
    let server = ca.leaf(SERVER_ID, &["server.test"]);
    let yaml = strict_bootstrap(dir.path(), &ca, &server, up).replace(
        "          stat_prefix: in\n",
        &format!(
            "          stat_prefix: in\n          access_log:\n          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n              log_format: {{text_format_source: {{inline_string: \"%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_LOCAL_URI_SAN% %DOWNSTREAM_TLS_VERSION% %REQUESTED_SERVER_NAME% [%DOWNSTREAM_PEER_SUBJECT%]\\n\"}}}}\n",
            log.display()
        ),
    );
    let p = Proxy::start_with(&yaml, &["--file-flush-interval-msec", "50"]);
    let l = p.listener("in").await;
    let client = ca.leaf(CLIENT_ID, &[]);
    let cfg = test_ca::client_config(&ca.pem, Some(&client), &[]);
    assert_eq!(test_ca::get(l, cfg).await, Ok(200));
    let mut line = String::new();
    for _ in 0..100 {
        line = std::fs::read_to_string(&log).unwrap_or_default();
        if !line.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        line.trim_end(),
        format!("{CLIENT_ID} {SERVER_ID} TLSv1.3 server.test [CN=rcgen self signed cert]")
    );
}

#[tokio::test]
async fn access_logs_carry_the_upstream_identity() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    let ca_file = test_ca::write(dir.path(), "ca.pem", &ca.pem);
    let upstream_id = "spiffe://cluster.local/ns/default/sa/upstream";
    let up = tls_upstream(&ca, &ca.leaf(upstream_id, &[])).await;
    let proxy = ca.leaf(CLIENT_ID, &[]);
    let log = dir.path().join("access.log");
    let access_log = |indent: &str| {
        format!(
            "{indent}access_log:\n{indent}- name: envoy.access_loggers.file\n{indent}  typed_config:\n{indent}    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n{indent}    path: {}\n{indent}    log_format: {{text_format_source: {{inline_string: \"%UPSTREAM_CLUSTER% %UPSTREAM_PEER_URI_SAN%\\n\"}}}}\n",
            log.display()
        )
    };
    let tcp = format!(
        "  - name: tcp\n    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: tcp\n          cluster: t\n{}",
        access_log("          ")
    );
    let yaml = format!(
        "static_resources:\n  listeners:\n{}{tcp}  clusters:\n{}{}",
        http_listener("in", &routes_to("b", ""), &access_log("          ")),
        tls_cluster("b", up, dir.path(), &ca_file, &proxy, upstream_id),
        tls_cluster("t", up, dir.path(), &ca_file, &proxy, upstream_id),
    );
    let p = Proxy::start_with(&yaml, &["--file-flush-interval-msec", "50"]);
    let (s, _, body) = get(p.listener("in").await, "/").await;
    assert_eq!(s, 200, "{body}");
    let mut c = tokio::net::TcpStream::connect(p.listener("tcp").await)
        .await
        .unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    drop(c);
    let mut lines = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        lines = text.lines().map(str::to_string).collect::<Vec<_>>();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    lines.sort();
    assert_eq!(
        lines,
        [format!("b {upstream_id}"), format!("t {upstream_id}")]
    );
}

#[tokio::test]
async fn x_forwarded_client_cert_carries_the_client_identity() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = echo_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    let server = ca.leaf(SERVER_ID, &["server.test"]);
    let yaml = strict_bootstrap(dir.path(), &ca, &server, up).replace(
        "          stat_prefix: in\n",
        "          stat_prefix: in\n          forward_client_cert_details: APPEND_FORWARD\n          set_current_client_cert_details: {subject: true, uri: true}\n",
    );
    let p = Proxy::start(&yaml);
    let l = p.listener("in").await;
    let client = ca.leaf(CLIENT_ID, &[]);
    let cfg = test_ca::client_config(&ca.pem, Some(&client), &[]);
    let mut s = test_ca::connect(l, cfg).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: server.test\r\nx-forwarded-client-cert: By=upstream-hop;Hash=00\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(client.cert.as_bytes()).unwrap();
    let hash: String = ring::digest::digest(&ring::digest::SHA256, der.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        v["headers"]["x-forwarded-client-cert"],
        format!(
            "By=upstream-hop;Hash=00,By={SERVER_ID};Hash={hash};Subject=\"CN=rcgen self signed cert\";URI={CLIENT_ID}"
        )
    );
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
}

/// auto_sni: each new upstream connection sends the request's host as SNI (pools are per SNI);
/// auto_san_validation: the upstream certificate must carry that name as a DNS SAN, instead of
/// the configured SAN matchers (which still apply when the host is an IP address).
#[tokio::test]
async fn auto_sni_sends_the_request_host_and_auto_san_validation_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    let ca_file = test_ca::write(dir.path(), "ca.pem", &ca.pem);
    let up = tls_upstream(
        &ca,
        &ca.leaf("spiffe://cluster.local/ns/default/sa/up", &["*.svc.test"]),
    )
    .await;
    let proxy = ca.leaf(CLIENT_ID, &[]);
    let cert = test_ca::write(dir.path(), "proxy.pem", &proxy.cert);
    let key = test_ca::write(dir.path(), "proxy.key", &proxy.key);
    let extra = format!(
        r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        upstream_http_protocol_options: {{auto_sni: true, auto_san_validation: true}}
        explicit_http_config: {{http_protocol_options: {{}}}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          tls_certificates: [{{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}]
          validation_context:
            trusted_ca: {{filename: {}}}
            match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: "spiffe://cluster.local/ns/default/sa/nobody"}}}}]
"#,
        cert.display(),
        key.display(),
        ca_file.display()
    );
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        http_listener("in", &routes_to("b", ""), ""),
        cluster("b", &[up], &extra)
    );
    let p = Proxy::start(&yaml);
    let l = p.listener("in").await;
    let sni_of = |body: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["sni"].as_str().unwrap().to_string()
    };
    for (host, want) in [
        ("a.svc.test", "a.svc.test"),
        ("B.svc.test:8080", "b.svc.test"),
        ("a.svc.test", "a.svc.test"),
    ] {
        let (s, _, body) = http1_request(l, "GET", "/", host, &[], bytes::Bytes::new()).await;
        assert_eq!(s, 200, "{host}: {body}");
        assert_eq!(sni_of(&body), want);
    }
    assert_eq!(
        p.stat("cluster.b.ssl.handshake").await,
        2,
        "one connection per SNI, reused"
    );
    // A name the certificate does not carry.
    let (s, _, body) = http1_request(l, "GET", "/", "evil.example", &[], bytes::Bytes::new()).await;
    assert_eq!(s, 503, "{body}");
    p.wait_stat("cluster.b.ssl.fail_verify_san", 1).await;
    // An IP address is no SNI: the configured SAN matchers apply, and refuse this upstream.
    let (s, _, body) = http1_request(l, "GET", "/", "127.0.0.1", &[], bytes::Bytes::new()).await;
    assert_eq!(s, 503, "{body}");
    p.wait_stat("cluster.b.ssl.fail_verify_san", 2).await;
}

#[test]
fn auto_san_validation_without_auto_sni_is_refused_by_path() {
    let yaml = "static_resources:\n  clusters:\n  - name: b\n    connect_timeout: 1s\n    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        upstream_http_protocol_options: {auto_san_validation: true}\n        explicit_http_config: {http_protocol_options: {}}\n";
    let (code, err) = validate(yaml);
    assert_ne!(code, 0);
    assert!(
        err.contains("upstream_http_protocol_options.auto_san_validation"),
        "{err}"
    );
}

/// Several certificates on one context: the one whose DNS SAN matches the SNI (exactly, then
/// by wildcard) is presented; without a match, the first.
#[tokio::test]
async fn several_certificates_are_chosen_by_sni() {
    let up = echo_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    let a_id = "spiffe://cluster.local/ns/default/sa/a";
    let b_id = "spiffe://cluster.local/ns/default/sa/b";
    let a = ca.leaf(a_id, &["a.test"]);
    let b = ca.leaf(b_id, &["*.b.test"]);
    let b_cert = test_ca::write(dir.path(), "b.pem", &b.cert);
    let b_key = test_ca::write(dir.path(), "b.key", &b.key);
    let yaml = tls_bootstrap(dir.path(), &ca, &a, up, "", "");
    let marker = "            alpn_protocols: [h2, http/1.1]\n";
    assert!(yaml.contains(marker));
    let yaml = yaml.replace(
        marker,
        &format!(
            "            - certificate_chain: {{filename: {}}}\n              private_key: {{filename: {}}}\n{marker}",
            b_cert.display(),
            b_key.display()
        ),
    );
    let p = Proxy::start(&yaml);
    let l = p.listener("in").await;
    let cfg = test_ca::client_config(&ca.pem, None, &["http/1.1"]);
    let presented = |sni: &'static str| {
        let cfg = cfg.clone();
        async move {
            let tls = test_ca::connect_as(l, cfg, sni).await.unwrap();
            let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            pilotfish::tls::san::sans(&cert)
                .into_iter()
                .find(|s| s.kind == pilotfish::tls::san::SanKind::Uri)
                .map(|s| s.value)
                .unwrap()
        }
    };
    assert_eq!(presented("a.test").await, a_id);
    assert_eq!(presented("x.b.test").await, b_id);
    // No match: the first certificate, which the client then refuses for this name.
    let err = test_ca::connect_as(l, cfg.clone(), "other.test")
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("DnsName(\"a.test\")"), "{err}");
}
