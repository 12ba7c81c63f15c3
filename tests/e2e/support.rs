//! Test utilities: the proxy binary started on a bootstrap, and fake upstreams (HTTP/1.1 and
//! h2c echo, TCP echo, WebSocket echo), all on port 0.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A running proxy process, killed on drop.
pub struct Proxy {
    child: Child,
    /// The admin address.
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Waits for the process to exit (after /quitquitquit or a signal) and returns its code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pilotfish")
}

/// Runs the binary to completion with `args`, returning (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `yaml` to a temp file and validates it; returns (exit code, stderr).
pub fn validate(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (code, _, err) = run(&["--mode", "validate", "-c", path.to_str().unwrap()]);
    (code, err)
}

impl Proxy {
    /// Starts the proxy on `yaml` (its admin on 127.0.0.1:0) and waits until the admin is up.
    pub fn start(yaml: &str) -> Proxy {
        Self::start_with(yaml, &[])
    }

    /// Starts the proxy on a bootstrap file as is; its admin address must be a fixed port.
    pub fn start_at(cfg: &std::path::Path, extra: &[&str]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let addr_file = dir.path().join("admin.addr");
        Self::spawn(cfg, dir, addr_file, extra)
    }

    /// As [`Proxy::start`], with extra command-line flags.
    pub fn start_with(yaml: &str, extra: &[&str]) -> Proxy {
        Self::start_as(yaml, extra, None)
    }

    /// As [`Proxy::start_with`], the process running with group id `gid` when given (the
    /// proxy's group, whose traffic capture rules let through).
    pub fn start_as(yaml: &str, extra: &[&str], gid: Option<u32>) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("bootstrap.yaml");
        let addr_file = dir.path().join("admin.addr");
        let full = format!(
            "admin:\n  address:\n    socket_address: {{address: 127.0.0.1, port_value: 0}}\n{yaml}"
        );
        std::fs::write(&cfg, full).unwrap();
        Self::spawn_as(&cfg, dir, addr_file, extra, gid)
    }

    fn spawn(
        cfg: &std::path::Path,
        dir: tempfile::TempDir,
        addr_file: std::path::PathBuf,
        extra: &[&str],
    ) -> Proxy {
        Self::spawn_as(cfg, dir, addr_file, extra, None)
    }

    fn spawn_as(
        cfg: &std::path::Path,
        dir: tempfile::TempDir,
        addr_file: std::path::PathBuf,
        extra: &[&str],
        gid: Option<u32>,
    ) -> Proxy {
        let mut cmd = Command::new(bin());
        if let Some(g) = gid {
            std::os::unix::process::CommandExt::gid(&mut cmd, g);
        }
        let child = cmd
            .args([
                "-c",
                cfg.to_str().unwrap(),
                "--admin-address-path",
                addr_file.to_str().unwrap(),
            ])
            .args(["--concurrency", "2", "-l", "warning", "--drain-time-s", "2"])
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("proxy starts");
        Self::wait_started(child, dir, addr_file)
    }

    fn wait_started(
        mut child: Child,
        dir: tempfile::TempDir,
        addr_file: std::path::PathBuf,
    ) -> Proxy {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = std::fs::read_to_string(&addr_file)
                && let Ok(admin) = s.trim().parse()
            {
                return Proxy {
                    child,
                    admin,
                    _dir: dir,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("proxy exited before it started: {status}");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("proxy did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET on the admin API: (status, body).
    pub async fn admin(&self, path_and_query: &str) -> (u16, String) {
        self.admin_request("GET", path_and_query).await
    }

    /// POST on the admin API.
    pub async fn admin_post(&self, path_and_query: &str) -> (u16, String) {
        self.admin_request("POST", path_and_query).await
    }

    async fn admin_request(&self, method: &str, path_and_query: &str) -> (u16, String) {
        let (s, _, b) = http1_request(
            self.admin,
            method,
            path_and_query,
            "admin",
            &[],
            Bytes::new(),
        )
        .await;
        (s, b)
    }

    /// Waits until /ready answers LIVE.
    pub async fn wait_live(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.admin("/ready").await;
            if r == (200, "LIVE\n".to_string()) {
                return;
            }
            assert!(Instant::now() < deadline, "not live: {r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address listener `name` is bound to.
    pub async fn listener(&self, name: &str) -> SocketAddr {
        let (_, body) = self.admin("/listeners?format=json").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        for l in v["listener_statuses"].as_array().unwrap() {
            if l["name"] == name {
                let sa = &l["local_address"]["socket_address"];
                return format!("{}:{}", sa["address"].as_str().unwrap(), sa["port_value"])
                    .parse()
                    .unwrap();
            }
        }
        panic!("no listener {name} in {body}");
    }

    /// The value of one stat (counter or gauge), 0 when absent.
    pub async fn stat(&self, name: &str) -> i64 {
        let (_, body) = self
            .admin(&format!("/stats?filter=^{}$", regex_escape(name)))
            .await;
        body.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name}: "))
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0)
    }

    /// Waits until a stat reaches `want` (stats are updated after responses are sent).
    pub async fn wait_stat(&self, name: &str, want: i64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.stat(name).await;
            if v == want {
                return;
            }
            assert!(Instant::now() < deadline, "stat {name} is {v}, want {want}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect::<Vec<_>>()
        .join("")
}

/// One HTTP/1.1 request on a new connection: (status, headers, body).
pub async fn http1_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (u16, http::HeaderMap, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client
        .request(b.body(Full::new(body)).unwrap())
        .await
        .expect("request succeeds");
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (
        status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// GET with HTTP/1.1.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, http::HeaderMap, String) {
    http1_request(addr, "GET", path, "example.com", &[], Bytes::new()).await
}

/// One h2c (prior knowledge) request: (status, headers, body).
pub async fn h2c_get(addr: SocketAddr, path: &str) -> (u16, http::HeaderMap, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::builder()
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.expect("h2c request succeeds");
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// An upstream that answers every request with a JSON description of it, HTTP/1.1 or h2c.
/// A path starting with `/sleep/<ms>` waits that long first; `/status/<code>` answers that code.
pub async fn echo_upstream(name: &'static str) -> SocketAddr {
    serve_each(move |s| async move {
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| echo(name, req));
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(s), svc)
            .await;
    })
    .await
}

/// Listens on a loopback port and runs `handle` on every accepted connection.
async fn serve_each<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    serve_each_at("127.0.0.1:0".parse().unwrap(), handle).await
}

/// Listens on `bind` and runs `handle` on every accepted connection.
async fn serve_each_at<F, Fut>(bind: SocketAddr, handle: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(handle(s));
        }
    });
    addr
}

/// An HTTP server (HTTP/1.1 or h2c) on `bind` that answers every request with JSON naming
/// itself, the peer address it saw, the request's protocol version and path.
pub async fn peer_http(bind: SocketAddr, name: &'static str) -> SocketAddr {
    serve_each_at(bind, move |s| async move {
        let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let v = serde_json::json!({
                "upstream": name,
                "peer": peer.clone(),
                "version": format!("{:?}", req.version()),
                "path": req.uri().path(),
            });
            async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(v.to_string())))) }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(s), svc)
            .await;
    })
    .await
}

/// A TCP server on `bind` that first writes `peer=<address it saw>\n`, then echoes.
pub async fn peer_tcp(bind: SocketAddr) -> SocketAddr {
    serve_each_at(bind, |mut s| async move {
        let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        if s.write_all(format!("peer={peer}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
        echo_bytes(s).await;
    })
    .await
}

async fn echo(
    name: &'static str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if let Some(ms) = path.strip_prefix("/sleep/") {
        let ms: u64 = ms.split('/').next().unwrap_or("0").parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200u16);
    let version = format!("{:?}", req.version());
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::String(v.to_str().unwrap_or("").into()),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let v = serde_json::json!({"upstream": name, "method": method, "uri": uri, "version": version, "headers": headers, "body": String::from_utf8_lossy(&body)});
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(r)
}

/// A TCP server that echoes bytes back.
pub async fn tcp_echo() -> SocketAddr {
    serve_each(echo_bytes).await
}

/// Echoes what `s` sends until it closes.
async fn echo_bytes(mut s: tokio::net::TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A WebSocket server that echoes messages back.
pub async fn ws_echo() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    serve_each(|s| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
            return;
        };
        while let Some(Ok(m)) = ws.next().await {
            if m.is_text() || m.is_binary() {
                let _ = ws.send(m).await;
            }
        }
    })
    .await
}

/// Asserts that the proxy closes `s` within 5 s without sending a byte (a read that fails,
/// as on a reset, counts as closed); `why` names what should have closed it.
pub async fn assert_closed_promptly(s: &mut tokio::net::TcpStream, why: &str) {
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("not closed in time: {why}"));
    assert_eq!(n.unwrap_or(0), 0, "{why}");
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Below the kernel's ephemeral range (32768 and up by default): a port found free here
    // cannot be taken by a concurrent test's outgoing connection before the proxy binds it.
    // Each test process walks its own stretch of the range.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 8) * 1_500;
    loop {
        let port = (base + NEXT.fetch_add(1, Ordering::Relaxed) % 1_500) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A port that nothing listens on.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A static cluster with the given endpoints, as YAML list items under `clusters:`.
pub fn cluster(name: &str, endpoints: &[SocketAddr], extra: &str) -> String {
    let eps: String = endpoints
        .iter()
        .map(|a| format!("        - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}\n", a.ip(), a.port()))
        .collect();
    if eps.is_empty() {
        return format!(
            "  - name: {name}\n    connect_timeout: 1s\n{extra}    load_assignment: {{cluster_name: {name}}}\n"
        );
    }
    format!(
        "  - name: {name}\n    connect_timeout: 1s\n{extra}    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n{eps}"
    )
}

/// An HTTP listener named `name` on 127.0.0.1:0 with HCM stat prefix `name` and the given
/// virtual hosts (YAML, indented for `virtual_hosts:`), plus extra HCM fields.
pub fn http_listener(name: &str, vhosts: &str, hcm_extra: &str) -> String {
    format!(
        r#"  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
{hcm_extra}          route_config:
            virtual_hosts:
{vhosts}          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    )
}

/// A bootstrap with one HTTP listener `in` (extra HCM fields `hcm_extra`) routing every request
/// to cluster `b` (extra route fields `route_extra`, e.g. `, timeout: 1s`; extra cluster fields
/// `cluster_extra`) whose only endpoint is `up`.
pub fn one_route(
    up: SocketAddr,
    hcm_extra: &str,
    route_extra: &str,
    cluster_extra: &str,
) -> String {
    format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        http_listener("in", &routes_to("b", route_extra), hcm_extra),
        cluster("b", &[up], cluster_extra)
    )
}

/// One virtual host matching every authority, whose only route sends every path to `cluster`
/// (with extra route fields `route_extra`), as YAML list items under `virtual_hosts:`.
pub fn routes_to(cluster: &str, route_extra: &str) -> String {
    format!(
        "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {{prefix: /}}\n                route: {{cluster: {cluster}{route_extra}}}\n"
    )
}

/// Cluster fields that make it speak HTTP/2 (prior knowledge) upstream.
pub const H2_UPSTREAM: &str = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: {http2_protocol_options: {}}\n";
