//! TLS interoperation with other stacks: curl (OpenSSL) as a client of an mTLS listener, and
//! `openssl s_server` as an mTLS upstream. Skipped, loudly, where curl or openssl is missing
//! (CI installs both).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::*;
use crate::test_ca::{self, TestCa};

fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
        || Command::new(tool)
            .arg("version")
            .stdout(Stdio::null())
            .status()
            .is_ok();
    if !ok {
        eprintln!("SKIPPED: {tool} is not installed; the TLS interoperation test did not run");
    }
    ok
}

/// curl against `https://server.test:<port>/` resolved to `addr`: (exit code, stdout).
fn curl(
    addr: SocketAddr,
    dir: &Path,
    cert: Option<(&Path, &Path)>,
    extra: &[&str],
) -> (i32, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "10", "--cacert"])
        .arg(dir.join("ca.pem"))
        .arg("--resolve")
        .arg(format!("server.test:{}:127.0.0.1", addr.port()))
        .args(extra);
    if let Some((cert, key)) = cert {
        c.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = c
        .arg(format!("https://server.test:{}/", addr.port()))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn curl_passes_strict_mtls_with_its_certificate_and_negotiates_http2() {
    if !have("curl") {
        return;
    }
    let up = echo_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    test_ca::write(dir.path(), "ca.pem", &ca.pem);
    let server = ca.leaf(
        "spiffe://cluster.local/ns/default/sa/server",
        &["server.test"],
    );
    let client = ca.leaf("spiffe://cluster.local/ns/default/sa/client", &[]);
    let cert = test_ca::write(dir.path(), "client.pem", &client.cert);
    let key = test_ca::write(dir.path(), "client.key", &client.key);
    let yaml = crate::tls::strict_bootstrap(dir.path(), &ca, &server, up);
    let p = Proxy::start(&yaml);
    let l = p.listener("in").await;
    let (code, body) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        let (cert, key) = (cert.clone(), key.clone());
        move || curl(l, &dir, Some((&cert, &key)), &["--http1.1"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("\"upstream\":\"a\""), "{body}");
    let (code, version) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            curl(
                l,
                &dir,
                Some((&cert, &key)),
                &["--http2", "-o", "/dev/null", "-w", "%{http_version}"],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!((code, version.as_str()), (0, "2"));
    let (code, _) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || curl(l, &dir, None, &[])
    })
    .await
    .unwrap();
    assert_ne!(code, 0, "no client certificate, no entry");
    p.wait_stat("listener.tls.ssl.fail_verify_no_cert", 1).await;
    assert_eq!(p.stat("listener.tls.ssl.handshake").await, 2);
}

#[tokio::test]
async fn openssl_s_server_is_an_mtls_upstream() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("root");
    let ca_file = test_ca::write(dir.path(), "ca.pem", &ca.pem);
    let upstream_id = "spiffe://cluster.local/ns/default/sa/upstream";
    let server = ca.leaf(upstream_id, &[]);
    let scert = test_ca::write(dir.path(), "s.pem", &server.cert);
    let skey = test_ca::write(dir.path(), "s.key", &server.key);
    let port = free_port();
    // -Verify 1: a client certificate is required; -www: answers a status page.
    let mut s_server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-Verify", "1", "-accept"])
        .arg(port.to_string())
        .arg("-cert")
        .arg(&scert)
        .arg("-key")
        .arg(&skey)
        .arg("-CAfile")
        .arg(&ca_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(up).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "s_server did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let proxy = ca.leaf("spiffe://cluster.local/ns/default/sa/client", &[]);
    let yaml = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        http_listener("in", &routes_to("b", ""), ""),
        crate::tls::tls_cluster("b", up, dir.path(), &ca_file, &proxy, upstream_id),
    );
    let p = Proxy::start(&yaml);
    let (s, _, body) = get(p.listener("in").await, "/").await;
    let _ = s_server.kill();
    let _ = s_server.wait();
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("s_server"), "{body}");
    assert_eq!(p.stat("cluster.b.ssl.handshake").await, 1);
}
