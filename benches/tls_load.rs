//! mTLS load, side by side in one run: HTTP/1.1 keep-alive through pilotfish in plaintext and
//! with mTLS (a client certificate required and checked), and through nginx with the same
//! certificates; then one new mTLS connection per request (handshake-bound) through
//! pilotfish and nginx. Each proxy has one worker; the client runs in this process. Prints
//! requests/s and the ratios the issue's targets use. See benches/README.md.
//!
//! `cargo bench --bench tls_load` (DURATION seconds per round, CONNS keep-alive connections;
//! nginx rows are skipped when nginx is not installed).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

mod common;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Pem {
    cert: String,
    key: String,
}

/// A CA and two workload certificates (server, client), PEM.
fn certificates() -> (String, Pem, Pem) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A subject of its own: OpenSSL (nginx) takes a leaf whose issuer equals its subject for
    // a self-signed certificate.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf = |uri: &str, dns: &[&str]| {
        let mut p =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        p.subject_alt_names
            .push(SanType::URI(uri.try_into().unwrap()));
        p.distinguished_name.push(rcgen::DnType::CommonName, uri);
        let key = KeyPair::generate().unwrap();
        Pem {
            cert: p.signed_by(&key, &issuer).unwrap().pem(),
            key: key.serialize_pem(),
        }
    };
    (
        ca_pem,
        leaf(
            "spiffe://cluster.local/ns/bench/sa/server",
            &["server.test"],
        ),
        leaf("spiffe://cluster.local/ns/bench/sa/client", &[]),
    )
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {port}");
}

fn pilotfish(dir: &std::path::Path, up: SocketAddr, plain: u16, mtls: u16) -> Killed {
    let hcm = |prefix: &str| {
        format!(
            r#"      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {prefix}
          route_config: {{virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: up}}}}]}}]}}
          http_filters: [{{name: router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
"#
        )
    };
    let d = dir.display();
    let yaml = format!(
        r#"static_resources:
  listeners:
  - name: plain
    address: {{socket_address: {{address: 127.0.0.1, port_value: {plain}}}}}
    filter_chains:
    - {plain_hcm}  - name: mtls
    address: {{socket_address: {{address: 127.0.0.1, port_value: {mtls}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates: [{{certificate_chain: {{filename: {d}/server.pem}}, private_key: {{filename: {d}/server.key}}}}]
            validation_context:
              trusted_ca: {{filename: {d}/ca.pem}}
              match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: "spiffe://cluster.local/ns/bench/sa/client"}}}}]
{mtls_hcm}  clusters:
  - name: up
    connect_timeout: 1s
    load_assignment: {{cluster_name: up, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {up_port}}}}}}}}}]}}]}}
"#,
        plain_hcm = hcm("plain").trim_start(),
        mtls_hcm = hcm("mtls"),
        up_port = up.port(),
    );
    let cfg = dir.join("pilotfish.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    Killed(
        Command::new(env!("CARGO_BIN_EXE_pilotfish"))
            .arg("-c")
            .arg(&cfg)
            .args(["--concurrency", "1", "-l", "error"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn nginx(dir: &std::path::Path, up: SocketAddr, port: u16) -> Option<Killed> {
    if Command::new("nginx")
        .arg("-v")
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("nginx is not installed: its rows are skipped");
        return None;
    }
    let d = dir.display();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let conf = format!(
        r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/logs/error.log error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream up {{ server {up}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {d}/server.pem;
    ssl_certificate_key {d}/server.key;
    ssl_client_certificate {d}/ca.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    Some(Killed(
        Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ))
}

/// The client's TLS configuration. Session resumption is off, so every new connection is a
/// full handshake on both proxies.
fn client_config(ca: &str, client: &Pem) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        CertificateDer::pem_slice_iter(client.cert.as_bytes())
            .map(|c| c.unwrap())
            .collect(),
        PrivateKeyDer::from_pem_slice(client.key.as_bytes()).unwrap(),
    )
    .unwrap();
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

async fn tls_connect(
    port: u16,
    cfg: &Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    tokio_rustls::TlsConnector::from(cfg.clone())
        .connect("server.test".try_into().unwrap(), tcp)
        .await
}

/// Requests per second over `conns` keep-alive connections for `secs` (TLS when `cfg`).
async fn keep_alive(
    port: u16,
    cfg: Option<&Arc<rustls::ClientConfig>>,
    conns: u64,
    secs: u64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let done = done.clone();
        let cfg = cfg.cloned();
        tasks.push(tokio::spawn(async move {
            match cfg {
                Some(cfg) => {
                    let mut c = common::Client::over(tls_connect(port, &cfg).await.unwrap());
                    while Instant::now() < until {
                        assert_eq!(c.get().await.unwrap(), 200);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => {
                    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                    let mut c = common::Client::connect(addr).await.unwrap();
                    while Instant::now() < until {
                        assert_eq!(c.get().await.unwrap(), 200);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / secs as f64
}

/// Requests per second with a new mTLS connection (full handshake) for each request.
async fn handshakes(port: u16, cfg: &Arc<rustls::ClientConfig>, conc: u64, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (done, cfg) = (done.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let mut c = common::Client::over(tls_connect(port, &cfg).await.unwrap());
                assert_eq!(c.get().await.unwrap(), 200);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / secs as f64
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("tls_load: run with `cargo bench --bench tls_load`");
        return;
    }
    let secs = env_or("DURATION", 5);
    let conns = env_or("CONNS", 32);
    let rounds = env_or("ROUNDS", 2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (ca, server, client) = certificates();
        std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
        std::fs::write(dir.path().join("server.pem"), &server.cert).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key).unwrap();
        let up = common::upstream(1024).await;
        let (plain, mtls, ng) = (common::free_port(), common::free_port(), common::free_port());
        let _pf = pilotfish(dir.path(), up, plain, mtls);
        let ng_proc = nginx(dir.path(), up, ng);
        wait_port(plain).await;
        wait_port(mtls).await;
        if ng_proc.is_some() {
            wait_port(ng).await;
        }
        let cfg = client_config(&ca, &client);
        let mut sums = [0f64; 5];
        for r in 1..=rounds {
            let row = [
                keep_alive(plain, None, conns, secs).await,
                keep_alive(mtls, Some(&cfg), conns, secs).await,
                if ng_proc.is_some() { keep_alive(ng, Some(&cfg), conns, secs).await } else { 0.0 },
                handshakes(mtls, &cfg, 8, secs).await,
                if ng_proc.is_some() { handshakes(ng, &cfg, 8, secs).await } else { 0.0 },
            ];
            println!(
                "round {r}: keep-alive req/s: pilotfish plaintext {:.0}, pilotfish mTLS {:.0}, nginx mTLS {:.0}; new connection per request (handshakes/s): pilotfish {:.0}, nginx {:.0}",
                row[0], row[1], row[2], row[3], row[4]
            );
            for (s, v) in sums.iter_mut().zip(row) {
                *s += v / rounds as f64;
            }
        }
        println!();
        println!("keep-alive, {conns} connections, 1 KiB responses (mean of {rounds} rounds of {secs} s):");
        println!("  pilotfish plaintext {:>9.0} req/s", sums[0]);
        println!("  pilotfish mTLS      {:>9.0} req/s  ({:.2} of its plaintext)", sums[1], sums[1] / sums[0]);
        if ng_proc.is_some() {
            println!("  nginx mTLS          {:>9.0} req/s", sums[2]);
        }
        println!("one new mTLS connection per request, 8 at a time:");
        println!("  pilotfish           {:>9.0} handshakes/s", sums[3]);
        if ng_proc.is_some() {
            println!("  nginx               {:>9.0} handshakes/s  (pilotfish / nginx {:.2})", sums[4], sums[3] / sums[4]);
        }
    });
}
