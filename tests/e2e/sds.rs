//! SDS: certificates and trusted CAs delivered as secrets (over a stream of their own as
//! Istio's `sds-grpc`, over ADS, from watched files, and from `static_resources.secrets`),
//! rotated without a restart: new handshakes get the new secret at once, established
//! connections continue, and a bad secret is NACKed while the last good one keeps serving.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use pilotfish::xds::harness::{
    ControlPlane, from_yaml, rds_listener, tls_certificate_secret, validation_secret,
    weighted_route,
};
use pilotfish::xds::type_url;

use crate::support::*;
use crate::test_ca::{self, Leaf, TestCa};

const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
const SERVER2_ID: &str = "spiffe://cluster.local/ns/default/sa/server-v2";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";

/// Istio's SDS config source: the `sds-grpc` cluster, state of the world, no fetch timeout.
const SDS: &str = "{api_config_source: {api_type: GRPC, set_node_on_first_message_only: true, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}, resource_api_version: V3, initial_fetch_timeout: 0s}";

/// Istio's inbound mTLS context: certificate `default`, trusted CA `ROOTCA`, the client's
/// SPIFFE identity checked by the inline half of the combined validation context.
fn istio_tls_context(sds: &str) -> String {
    format!(
        r#"    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_params: {{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}}
            alpn_protocols: [h2, http/1.1]
            tls_certificate_sds_secret_configs: [{{name: default, sds_config: {sds}}}]
            combined_validation_context:
              default_validation_context:
                match_subject_alt_names: [{{exact: "{CLIENT_ID}"}}]
              validation_context_sds_secret_config: {{name: ROOTCA, sds_config: {sds}}}
"#
    )
}

/// A static TLS listener `in` (listener stat prefix `tls`) with `chain` (a filter chain's
/// transport socket, as YAML list item) routing to `up`, plus `clusters`.
fn tls_listener_bootstrap(chain: &str, up: SocketAddr, clusters: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: in
    stat_prefix: tls
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
{chain}      filters:
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
{up_cluster}{clusters}"#,
        routes = routes_to("b", ""),
        up_cluster = cluster("b", &[up], ""),
    )
}

/// The `sds-grpc` cluster: HTTP/2 to a Unix socket, as in Istio's bootstrap.
fn sds_cluster(sock: &Path) -> String {
    format!(
        r#"  - name: sds-grpc
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: sds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{pipe: {{path: {}}}}}}}
{H2_UPSTREAM}"#,
        sock.display()
    )
}

/// The URI SAN of the certificate the listener at `l` presents in a new handshake.
async fn served_identity(l: SocketAddr, ca: &TestCa, client: &Leaf) -> Result<String, String> {
    let cfg = test_ca::client_config(&ca.pem, Some(client), &["http/1.1"]);
    let tls = test_ca::connect(l, cfg).await.map_err(|e| e.to_string())?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no server certificate")?;
    pilotfish::tls::san::sans(cert)
        .into_iter()
        .find(|s| s.kind == pilotfish::tls::san::SanKind::Uri)
        .map(|s| s.value)
        .ok_or_else(|| "no URI SAN".to_string())
}

/// Waits until new handshakes on `l` present `want`.
async fn wait_identity(l: SocketAddr, ca: &TestCa, client: &Leaf, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = served_identity(l, ca, client).await;
        if got.as_deref() == Ok(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still serving {got:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP/1.1 connection over mTLS kept open across secret updates.
async fn open_connection(
    l: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let tls = test_ca::connect(l, cfg).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn send(
    s: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
) -> u16 {
    let req = http::Request::get("/")
        .header("host", "server.test")
        .body(http_body_util::Empty::new())
        .unwrap();
    s.send_request(req).await.unwrap().status().as_u16()
}

/// The SecretsConfigDump of `/config_dump?mask=...secrets`.
async fn secrets_dump(p: &Proxy) -> serde_json::Value {
    let (s, body) = p
        .admin("/config_dump?mask=dynamic_active_secrets,dynamic_warming_secrets")
        .await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let configs = v["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 1, "{body}");
    assert_eq!(
        configs[0]["@type"],
        "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"
    );
    configs[0].clone()
}

fn names(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// A control plane serving on a Unix socket in `dir`, as pilot-agent's SDS server.
fn sds_server(dir: &Path) -> (ControlPlane, std::path::PathBuf) {
    let sock = dir.join("sds.sock");
    let cp = ControlPlane::new();
    cp.serve_unix(tokio::net::UnixListener::bind(&sock).unwrap());
    (cp, sock)
}

#[tokio::test]
async fn sds_stream_delivers_warms_and_rotates_like_istio_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (cp, sock) = sds_server(dir.path());
    let ca = TestCa::new("root");
    let client = ca.leaf(CLIENT_ID, &[]);
    let up = echo_upstream("a").await;
    let yaml = tls_listener_bootstrap(&istio_tls_context(SDS), up, &sds_cluster(&sock));
    let p = Proxy::start(&yaml);

    // The listener warms until both secrets arrive; the server is not LIVE meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_ne!(p.admin("/ready").await.1, "LIVE\n");
    assert_eq!(p.stat("listener_manager.total_listeners_warming").await, 1);
    let dump = secrets_dump(&p).await;
    assert_eq!(
        names(&dump["dynamic_warming_secrets"]),
        ["ROOTCA", "default"]
    );
    let server1 = ca.leaf(SERVER_ID, &["server.test"]);
    cp.set(
        "v1",
        &[
            tls_certificate_secret("default", &server1.cert, &server1.key),
            validation_secret("ROOTCA", &ca.pem),
        ],
    );
    p.wait_live().await;
    let l = p.listener("in").await;
    assert_eq!(served_identity(l, &ca, &client).await.unwrap(), SERVER_ID);
    // One stream per secret, each naming only its secret, as Envoy subscribes.
    let sds: Vec<Vec<String>> = cp
        .requests()
        .into_iter()
        .filter(|(delta, t, _)| !delta && t == type_url::SECRET)
        .map(|(_, _, names)| names)
        .collect();
    assert!(sds.contains(&vec!["default".to_string()]), "{sds:?}");
    assert!(sds.contains(&vec!["ROOTCA".to_string()]), "{sds:?}");
    assert!(sds.iter().all(|n| n.len() == 1), "{sds:?}");
    assert_eq!(p.stat("sds.default.update_success").await, 1);
    assert_eq!(p.stat("sds.ROOTCA.update_success").await, 1);
    // /config_dump shows the secrets with their versions, the private key redacted.
    let dump = secrets_dump(&p).await;
    assert_eq!(
        names(&dump["dynamic_active_secrets"]),
        ["ROOTCA", "default"]
    );
    let default = &dump["dynamic_active_secrets"][1];
    assert_eq!(default["version_info"], "v1");
    let tc = &default["secret"]["tls_certificate"];
    assert_eq!(tc["private_key"]["inline_bytes"], "W3JlZGFjdGVkXQ==");
    assert!(tc["certificate_chain"]["inline_bytes"].is_string());

    // mTLS works; an identity the default validation context does not name is refused.
    let cfg = test_ca::client_config(&ca.pem, Some(&client), &["http/1.1"]);
    assert_eq!(test_ca::get(l, cfg.clone()).await, Ok(200));
    let other = ca.leaf("spiffe://cluster.local/ns/default/sa/other", &[]);
    let other_cfg = test_ca::client_config(&ca.pem, Some(&other), &["http/1.1"]);
    assert!(test_ca::get(l, other_cfg).await.is_err());
    p.wait_stat("listener.tls.ssl.fail_verify_san", 1).await;

    // Rotation: new handshakes get the new certificate, an open connection continues.
    let mut held = open_connection(l, cfg.clone()).await;
    assert_eq!(send(&mut held).await, 200);
    let server2 = ca.leaf(SERVER2_ID, &["server.test"]);
    cp.set(
        "v2",
        &[
            tls_certificate_secret("default", &server2.cert, &server2.key),
            validation_secret("ROOTCA", &ca.pem),
        ],
    );
    wait_identity(l, &ca, &client, SERVER2_ID).await;
    assert_eq!(send(&mut held).await, 200);
    p.wait_stat("sds.default.update_success", 2).await;

    // A new root: the old CA's clients are refused, the new one's accepted.
    let ca2 = TestCa::new("root2");
    let server3 = ca2.leaf(SERVER_ID, &["server.test"]);
    let client2 = ca2.leaf(CLIENT_ID, &[]);
    cp.set(
        "v3",
        &[
            tls_certificate_secret("default", &server3.cert, &server3.key),
            validation_secret("ROOTCA", &ca2.pem),
        ],
    );
    wait_identity(l, &ca2, &client2, SERVER_ID).await;
    let cfg2 = test_ca::client_config(&ca2.pem, Some(&client2), &["http/1.1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while test_ca::get(l, cfg2.clone()).await != Ok(200) {
        assert!(Instant::now() < deadline, "the new root is not trusted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Handshakes above may have been refused too, while ROOTCA (its own stream) lagged the
    // certificate: count from here.
    let refused = p.stat("listener.tls.ssl.fail_verify_error").await;
    let old_client = test_ca::client_config(&ca2.pem, Some(&client), &["http/1.1"]);
    assert!(test_ca::get(l, old_client).await.is_err());
    p.wait_stat("listener.tls.ssl.fail_verify_error", refused + 1)
        .await;

    // A certificate whose key does not match is NACKed naming the secret; the last good
    // one keeps serving.
    let wrong = ca2.leaf(SERVER2_ID, &["server.test"]);
    cp.set(
        "v4",
        &[
            tls_certificate_secret("default", &wrong.cert, &server3.key),
            validation_secret("ROOTCA", &ca2.pem),
        ],
    );
    let nack = cp
        .wait_answer(type_url::SECRET, "v4", Duration::from_secs(10))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut nack = nack;
    while nack.is_ok() {
        // The ROOTCA stream ACKs v4; wait for the default stream's answer.
        assert!(Instant::now() < deadline, "v4 was not NACKed");
        tokio::time::sleep(Duration::from_millis(20)).await;
        nack = match cp
            .answers()
            .into_iter()
            .find(|a| a.version == "v4" && a.error.is_some())
        {
            Some(a) => Err(a.error.unwrap()),
            None => Ok(()),
        };
    }
    let err = nack.unwrap_err();
    assert!(
        err.contains("\"default\"") && err.contains("does not match"),
        "{err}"
    );
    assert_eq!(p.stat("sds.default.update_rejected").await, 1);
    assert_eq!(served_identity(l, &ca2, &client2).await.unwrap(), SERVER_ID);
    assert_eq!(test_ca::get(l, cfg2).await, Ok(200));
}

#[tokio::test]
async fn certificate_rotation_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let (cp, sock) = sds_server(dir.path());
    let ca = TestCa::new("root");
    let client = ca.leaf(CLIENT_ID, &[]);
    let up = echo_upstream("a").await;
    let first = ca.leaf(SERVER_ID, &["server.test"]);
    cp.set(
        "0",
        &[
            tls_certificate_secret("default", &first.cert, &first.key),
            validation_secret("ROOTCA", &ca.pem),
        ],
    );
    let p = Proxy::start(&tls_listener_bootstrap(
        &istio_tls_context(SDS),
        up,
        &sds_cluster(&sock),
    ));
    p.wait_live().await;
    let l = p.listener("in").await;
    let cfg = test_ca::client_config(&ca.pem, Some(&client), &["http/1.1"]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (cfg, stop, ok, failed) = (cfg.clone(), stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // A new connection (a full handshake) for every request.
                match test_ca::get(l, cfg.clone()).await {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for v in 1..=5 {
        let id = format!("{SERVER_ID}-{v}");
        let leaf = ca.leaf(&id, &["server.test"]);
        cp.set(
            &v.to_string(),
            &[
                tls_certificate_secret("default", &leaf.cert, &leaf.key),
                validation_secret("ROOTCA", &ca.pem),
            ],
        );
        wait_identity(l, &ca, &client, &id).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 20, "{ok:?} requests");
    assert_eq!(p.stat("sds.default.update_success").await, 6);
    assert_eq!(p.stat("listener.tls.ssl.connection_error").await, 0);
}

/// The bootstrap of xds.rs's tests: everything over ADS (`api_type`) from `cp`.
fn ads_bootstrap(cp: SocketAddr, api_type: &str) -> String {
    crate::xds::ads_bootstrap(cp, api_type, "")
}

#[tokio::test]
async fn secrets_over_ads_secure_an_upstream_cluster() {
    let ca = TestCa::new("root");
    let upstream_id = "spiffe://cluster.local/ns/default/sa/upstream";
    let up = crate::tls::tls_upstream(&ca, &ca.leaf(upstream_id, &[])).await;
    let (cp, cp_addr) = crate::xds::control_plane().await;
    let cluster: Cluster = from_yaml(&format!(
        r#"name: u
type: STATIC
connect_timeout: 1s
load_assignment:
  cluster_name: u
  endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]
transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    sni: outbound_.80_._.u.default.svc.cluster.local
    common_tls_context:
      tls_certificate_sds_secret_configs: [{{name: proxy, sds_config: {{ads: {{}}, resource_api_version: V3}}}}]
      combined_validation_context:
        default_validation_context:
          match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: "{upstream_id}"}}}}]
        validation_context_sds_secret_config: {{name: roots, sds_config: {{ads: {{}}, resource_api_version: V3}}}}
"#,
        port = up.port()
    ))
    .unwrap();
    cp.set("1", &[cluster]);
    cp.set("1", &[rds_listener("in", "in", "r")]);
    cp.set("1", &[weighted_route("r", &[("u", 1)])]);
    let p = Proxy::start(&ads_bootstrap(cp_addr, "DELTA_GRPC"));
    // The cluster warms until its secrets arrive, and the server waits for it.
    cp.wait_ack(type_url::CLUSTER, "1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(p.stat("cluster_manager.warming_clusters").await, 1);
    assert_ne!(p.admin("/ready").await.1, "LIVE\n");
    let proxy_id = ca.leaf(CLIENT_ID, &[]);
    cp.set(
        "s1",
        &[
            tls_certificate_secret("proxy", &proxy_id.cert, &proxy_id.key),
            validation_secret("roots", &ca.pem),
        ],
    );
    p.wait_live().await;
    cp.wait_ack(type_url::SECRET, "s1").await;
    assert_eq!(p.stat("cluster_manager.warming_clusters").await, 0);
    let subscribed: Vec<String> = cp
        .requests()
        .into_iter()
        .filter(|(delta, t, _)| *delta && t == type_url::SECRET)
        .flat_map(|(_, _, names)| names)
        .collect();
    assert!(
        subscribed.contains(&"proxy".to_string()) && subscribed.contains(&"roots".to_string()),
        "{subscribed:?}"
    );
    let l = p.listener("in").await;
    let (s, _, body) = get(l, "/").await;
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["peer"], CLIENT_ID);
    assert_eq!(v["sni"], "outbound_.80_._.u.default.svc.cluster.local");
    assert_eq!(p.stat("sds.proxy.update_success").await, 1);
    assert!(p.stat("cluster.u.ssl.handshake").await >= 1);
}

/// Writes `contents` to `path` atomically (a rename), as certificate tooling replaces files.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn secrets_from_a_watched_file_reload_when_their_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    let client = ca.leaf(CLIENT_ID, &[]);
    let server1 = ca.leaf(SERVER_ID, &["server.test"]);
    let cert = test_ca::write(dir.path(), "cert.pem", &server1.cert);
    let key = test_ca::write(dir.path(), "key.pem", &server1.key);
    let ca_file = test_ca::write(dir.path(), "ca.pem", &ca.pem);
    // The SDS file names the certificate files; the files are watched.
    let sds_file = test_ca::write(
        dir.path(),
        "sds.yaml",
        &format!(
            r#"version_info: "1"
resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: server
  tls_certificate:
    certificate_chain: {{filename: {}}}
    private_key: {{filename: {}}}
    watched_directory: {{path: {}}}
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: roots
  validation_context: {{trusted_ca: {{filename: {}}}}}
"#,
            cert.display(),
            key.display(),
            dir.path().display(),
            ca_file.display()
        ),
    );
    let src = format!(
        "{{path_config_source: {{path: {}}}, resource_api_version: V3}}",
        sds_file.display()
    );
    let chain = format!(
        r#"    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs: [{{name: server, sds_config: {src}}}]
            validation_context_sds_secret_config: {{name: roots, sds_config: {src}}}
"#
    );
    let up = echo_upstream("a").await;
    let p = Proxy::start(&tls_listener_bootstrap(&chain, up, ""));
    p.wait_live().await;
    let l = p.listener("in").await;
    assert_eq!(served_identity(l, &ca, &client).await.unwrap(), SERVER_ID);
    let cfg = test_ca::client_config(&ca.pem, Some(&client), &["http/1.1"]);
    assert_eq!(test_ca::get(l, cfg.clone()).await, Ok(200));

    // New files: the secret reloads without any SDS update.
    let server2 = ca.leaf(SERVER2_ID, &["server.test"]);
    replace(&key, &server2.key);
    replace(&cert, &server2.cert);
    wait_identity(l, &ca, &client, SERVER2_ID).await;
    assert_eq!(test_ca::get(l, cfg.clone()).await, Ok(200));

    // A certificate file that does not parse is refused; the last good one serves.
    replace(&cert, "not a certificate");
    p.wait_stat("sds.server.update_rejected", 1).await;
    assert_eq!(served_identity(l, &ca, &client).await.unwrap(), SERVER2_ID);
}

#[tokio::test]
async fn static_secrets_serve_and_unknown_secret_names_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    let server = ca.leaf(SERVER_ID, &["server.test"]);
    let client = ca.leaf(CLIENT_ID, &[]);
    let cert = test_ca::write(dir.path(), "cert.pem", &server.cert);
    let key = test_ca::write(dir.path(), "key.pem", &server.key);
    let ca_file = test_ca::write(dir.path(), "ca.pem", &ca.pem);
    let chain = r#"    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs: [{name: server}]
            validation_context_sds_secret_config: {name: roots}
"#;
    let secrets = format!(
        r#"  secrets:
  - name: server
    tls_certificate: {{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}
  - name: roots
    validation_context: {{trusted_ca: {{filename: {}}}}}
"#,
        cert.display(),
        key.display(),
        ca_file.display()
    );
    let up = echo_upstream("a").await;
    let yaml = format!("{}{secrets}", tls_listener_bootstrap(chain, up, ""));
    let p = Proxy::start(&yaml);
    p.wait_live().await;
    let l = p.listener("in").await;
    let cfg = test_ca::client_config(&ca.pem, Some(&client), &["http/1.1"]);
    assert_eq!(test_ca::get(l, cfg).await, Ok(200));

    // A name with no static secret and no sds_config is an error naming its path.
    let (code, err) = validate(&tls_listener_bootstrap(chain, up, ""));
    assert_ne!(code, 0);
    assert!(
        err.contains("common_tls_context.validation_context_sds_secret_config.name")
            && err.contains("no static secret \"roots\""),
        "{err}"
    );
    // A static secret whose key does not match names the secret.
    let other = ca.leaf(SERVER_ID, &["server.test"]);
    let other_key = test_ca::write(dir.path(), "other.key", &other.key);
    let bad = yaml.replace(
        &format!("private_key: {{filename: {}}}", key.display()),
        &format!("private_key: {{filename: {}}}", other_key.display()),
    );
    let (code, err) = validate(&bad);
    assert_ne!(code, 0);
    assert!(
        err.contains("static_resources.secrets[0].tls_certificate")
            && err.contains("does not match"),
        "{err}"
    );
    // Secret kinds pilotfish does not implement are refused by path.
    let generic = yaml.replace(
        "  - name: roots\n",
        "  - name: g\n    generic_secret: {secret: {inline_string: x}}\n  - name: roots\n",
    );
    let (code, err) = validate(&generic);
    assert_ne!(code, 0);
    assert!(
        err.contains("static_resources.secrets[1].generic_secret"),
        "{err}"
    );
}
