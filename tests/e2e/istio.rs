//! Istio's real bootstraps (read from ../shared, skipped where absent): the static 15090
//! Prometheus and 15021 health listeners serve, with compression on 15090.

use std::net::SocketAddr;
use std::path::PathBuf;

use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::support::*;

fn testdata(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/testdata/istio-bootstrap")
        .join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} is absent", p.display());
        None
    }
}

/// Loads an Istio bootstrap and points it at test ports: listeners on port 0, the admin and
/// the `prometheus_stats` cluster on `admin`, the `agent` cluster on `agent`, the `xds-grpc`
/// cluster on the Unix socket `xds`.
fn rewrite(path: &PathBuf, admin: SocketAddr, agent: SocketAddr, xds: &std::path::Path) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["admin"]["address"]["socket_address"]["port_value"] = admin.port().into();
    for l in v["static_resources"]["listeners"].as_array_mut().unwrap() {
        l["address"]["socket_address"]["address"] = "127.0.0.1".into();
        l["address"]["socket_address"]["port_value"] = 0.into();
    }
    for c in v["static_resources"]["clusters"].as_array_mut().unwrap() {
        let port = match c["name"].as_str().unwrap() {
            "prometheus_stats" => admin.port(),
            "agent" => agent.port(),
            "xds-grpc" => {
                c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]
                    ["path"] = xds.to_str().unwrap().into();
                continue;
            }
            _ => continue,
        };
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            ["port_value"] = port.into();
    }
    v.to_string()
}

async fn decode(encoding: &str, body: Bytes) -> String {
    let mut out = String::new();
    match encoding {
        "gzip" => GzipDecoder::new(&body[..])
            .read_to_string(&mut out)
            .await
            .unwrap(),
        "br" => BrotliDecoder::new(&body[..])
            .read_to_string(&mut out)
            .await
            .unwrap(),
        "zstd" => ZstdDecoder::new(&body[..])
            .read_to_string(&mut out)
            .await
            .unwrap(),
        other => panic!("unexpected encoding {other}"),
    };
    out
}

async fn raw_get(addr: SocketAddr, path: &str, accept: &str) -> (u16, http::HeaderMap, Bytes) {
    use http_body_util::{BodyExt, Full};
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = http::Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header("accept-encoding", accept)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    (
        status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn istio_static_listeners_serve_prometheus_with_compression_and_health() {
    let Some(path) = testdata("default_golden.json") else {
        return;
    };
    let admin = closed_port();
    let agent = echo_upstream("agent").await;
    let dir = tempfile::tempdir().unwrap();
    // istiod's part, through pilot-agent's Unix socket: no listeners or clusters of its own.
    let xds = dir.path().join("XDS");
    let cp = pilotfish::xds::harness::ControlPlane::new();
    cp.set::<envoy_types::pb::envoy::config::cluster::v3::Cluster>("1", &[]);
    cp.set::<envoy_types::pb::envoy::config::listener::v3::Listener>("1", &[]);
    cp.serve_unix(tokio::net::UnixListener::bind(&xds).unwrap());
    let cfg = dir.path().join("envoy-rev.json");
    std::fs::write(&cfg, rewrite(&path, admin, agent, &xds)).unwrap();
    let p = Proxy::start_at(
        &cfg,
        &[
            "--allow-unknown-static-fields",
            "--disable-hot-restart",
            "--drain-strategy",
            "immediate",
        ],
    );
    assert_eq!(p.admin, admin);
    p.wait_live().await;
    cp.wait_ack(pilotfish::xds::type_url::CLUSTER, "1").await;
    assert!(
        cp.answers().iter().all(|a| a.delta),
        "Istio asks for DELTA_GRPC"
    );
    let prom = p.listener("0.0.0.0_15090").await;
    let health = p.listener("0.0.0.0_15021").await;

    let (s, h, body) = raw_get(prom, "/stats/prometheus", "gzip").await;
    assert_eq!(s, 200);
    assert_eq!(h["content-encoding"], "gzip");
    let text = decode("gzip", body).await;
    assert!(text.contains("# TYPE envoy_server_state gauge"), "{text}");
    // Istio's tag regexes apply: cluster names end in ';'. The xDS stream's connection counts
    // in its cluster's stats, created on first use (deferred_stat_options).
    let xds_cx = text
        .lines()
        .find_map(|l| l.strip_prefix("envoy_cluster_upstream_cx_total{cluster_name=\"xds-grpc\"} "))
        .unwrap_or_else(|| panic!("no xds-grpc upstream_cx_total in {text}"));
    assert!(xds_cx.parse::<u64>().unwrap() >= 1, "{xds_cx}");

    for (accept, want) in [
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, br", "br"),
        ("gzip;q=1, br;q=0.2", "gzip"),
    ] {
        let (_, h, body) = raw_get(prom, "/stats/prometheus", accept).await;
        assert_eq!(h["content-encoding"], want, "Accept-Encoding: {accept}");
        assert!(decode(want, body).await.contains("envoy_server_state"));
    }
    let (_, h, body) = raw_get(prom, "/stats/prometheus", "identity").await;
    assert!(!h.contains_key("content-encoding"));
    assert_eq!(h["vary"], "Accept-Encoding");
    assert!(String::from_utf8_lossy(&body).contains("envoy_server_state"));

    let (s, _, body) = get(health, "/healthz/ready").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["upstream"], "agent");
    assert_eq!(v["uri"], "/healthz/ready");

    // Stats matcher: Istio's inclusion list keeps cluster.xds-grpc and server stats only.
    let (_, stats) = p.admin("/stats").await;
    assert!(
        stats.contains("cluster.xds-grpc;.upstream_cx_total"),
        "{stats}"
    );
    assert!(
        !stats.contains("cluster.agent;.upstream_cx_total"),
        "{stats}"
    );
    let (_, ready) = p
        .admin("/stats?usedonly&filter=^(server\\.state|listener_manager\\.workers_started)")
        .await;
    assert!(ready.contains("server.state: 0"), "{ready}");
}
