//! The large-mesh push: 10,000 EDS clusters with 10 endpoints each and 1,000 listeners and
//! route configurations pushed over delta ADS to the release binary by the in-process control
//! plane. Prints the time to the ACK of each type and to traffic on a new cluster, RSS before
//! and after, the time an EDS update of one cluster takes to apply, and request latency while
//! such updates stream in, and while the control plane does the same work but sends nothing.
//! See benches/README.md.
//!
//! `cargo bench --bench xds_push` (CLUSTERS, LISTENERS and ENDPOINTS override the sizes; STATS and NAMES: see benches/README.md).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use pilotfish::xds::harness::{
    ControlPlane, from_yaml, load_assignment, rds_listener, weighted_route,
};
use pilotfish::xds::type_url;

mod common;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The CPU time (user and system) the process has used so far, in milliseconds.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are the
    // 12th and 13th, in clock ticks of 10 ms.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks * 10
}

/// The name of cluster `i`: `outbound|80||svc<i>`, or with `NAMES=istio` Istio's form with a
/// namespace and domain (`outbound|80||svc<i>.ns<i % 20>.svc.cluster.local`), whose dots
/// Envoy's default cluster-name tag leaves in the tag-extracted stat names.
fn cluster_name(i: usize) -> String {
    if std::env::var("NAMES").as_deref() == Ok("istio") {
        format!("outbound|80||svc{i}.ns{}.svc.cluster.local", i % 20)
    } else {
        format!("outbound|80||svc{i}")
    }
}

fn cluster(i: usize) -> Cluster {
    let name = cluster_name(i);
    from_yaml(&format!(
        "name: {name}\ntype: EDS\nconnect_timeout: 1s\neds_cluster_config: {{service_name: {name}, eds_config: {{ads: {{}}, resource_api_version: V3}}}}"
    ))
    .unwrap()
}

/// The assignment of cluster `i`: `endpoints` loopback addresses nothing listens on (never
/// contacted), or, for the cluster that takes traffic, only the real upstream.
fn assignment(
    i: usize,
    endpoints: usize,
    real: Option<SocketAddr>,
    generation: usize,
) -> ClusterLoadAssignment {
    let addrs: Vec<SocketAddr> = match real {
        Some(a) => vec![a],
        None => (0..endpoints)
            .map(|e| {
                SocketAddr::from((
                    [
                        127,
                        1 + (i / 250 % 250) as u8,
                        (i % 250) as u8,
                        (e + 1 + generation % 200) as u8,
                    ],
                    9,
                ))
            })
            .collect(),
    };
    let mut cla = load_assignment(&cluster_name(i), &addrs);
    cla.endpoints[0].locality = Some(Locality {
        region: "r".into(),
        zone: "z".into(),
        ..Default::default()
    });
    cla
}

fn listener(i: usize, bind: bool) -> Listener {
    let mut l = rds_listener(&format!("l{i}"), &format!("l{i}"), &format!("r{i}"));
    if !bind {
        // Not bound (as Istio's per-service outbound listeners): the address is only a name.
        l.address = Some(
            from_yaml(&format!(
                "socket_address: {{address: 127.2.{}.{}, port_value: 80}}",
                i / 250,
                i % 250
            ))
            .unwrap(),
        );
        l.bind_to_port = Some(envoy_types::pb::google::protobuf::BoolValue { value: false });
    }
    l
}

fn route(i: usize) -> RouteConfiguration {
    weighted_route(&format!("r{i}"), &[(&cluster_name(i), 1)])
}

/// Istio's default `stats_matcher` (its sidecar bootstrap keeps only these stats).
const ISTIO_STATS_MATCHER: &str = r#"stats_config:
  stats_matcher:
    inclusion_list:
      patterns:
      - prefix: "reporter="
      - prefix: cluster_manager
      - prefix: listener_manager
      - prefix: server
      - prefix: cluster.xds-grpc
      - prefix: wasm
      - suffix: rbac.allowed
      - suffix: rbac.denied
      - suffix: shadow_allowed
      - suffix: shadow_denied
      - safe_regex: {regex: 'vhost\..*\.route\..*'}
      - prefix: component
      - prefix: istio
"#;

/// Envoy's deferred creation of cluster traffic stats, as Istio's bootstrap sets it.
const DEFERRED: &str = "deferred_stat_options: {enable_deferred_creation_stats: true}\n";

/// Which stats the proxy keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stats {
    /// Every stat, created eagerly (Envoy's defaults).
    All,
    /// Every stat, cluster traffic stats created on first use.
    Deferred,
    /// Istio's sidecar bootstrap: deferred creation and its stats_matcher.
    Istio,
}

// The child is handed to the caller, which kills and reaps it.
#[allow(clippy::zombie_processes)]
fn start_proxy(cp: SocketAddr, dir: &std::path::Path, stats: Stats) -> (Child, SocketAddr) {
    let cfg = dir.join("bootstrap.yaml");
    let addr_file = dir.join("admin.addr");
    let stats = match stats {
        Stats::All => String::new(),
        Stats::Deferred => DEFERRED.to_string(),
        Stats::Istio => format!("{DEFERRED}{ISTIO_STATS_MATCHER}"),
    };
    std::fs::write(
        &cfg,
        format!(
            r#"{stats}admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
node: {{id: sidecar~10.0.0.1~bench.ns~ns.svc.cluster.local, cluster: bench.ns}}
dynamic_resources:
  ads_config:
    api_type: DELTA_GRPC
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 0s}}
  lds_config: {{ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 0s}}
static_resources:
  clusters:
  - name: xds-grpc
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}
"#,
            cp.ip(),
            cp.port()
        ),
    )
    .unwrap();
    // PROXY_WRAPPER runs the proxy under a profiler (`perf record -g -o /tmp/push.data`).
    let wrapper = std::env::var("PROXY_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(env!("CARGO_BIN_EXE_pilotfish"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_pilotfish")),
    };
    let mut child = command
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "--concurrency",
            "1",
            "-l",
            "error",
        ])
        .args(["--admin-address-path", addr_file.to_str().unwrap()])
        .stdin(Stdio::null())
        .spawn()
        .expect("pilotfish starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(a) = std::fs::read_to_string(&addr_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return (child, a);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pilotfish did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn admin_get(admin: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

async fn listener_addr(admin: SocketAddr, name: &str) -> Option<SocketAddr> {
    let body = admin_get(admin, "/listeners").await;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}::")))
        .and_then(|a| a.trim().parse().ok())
}

/// The (sum in ms, count) of cluster `name`'s `update_duration` histogram (time pilotfish spent
/// applying its EDS updates), from the Prometheus endpoint.
async fn eds_apply_time(admin: SocketAddr, name: &str) -> (f64, f64) {
    let body = admin_get(admin, "/stats/prometheus").await;
    // Envoy's cluster-name tag is the name up to its first dot; the rest stays in the
    // metric's name (`envoy_cluster_ns0_svc_cluster_local_update_duration_sum`).
    let tag = name.split('.').next().unwrap_or(name);
    let label = format!("{{envoy_cluster_name=\"{tag}\"}} ");
    let value = |suffix: &str| {
        body.lines()
            .filter(|l| l.starts_with("envoy_cluster_"))
            .find_map(|l| l.split_once(&format!("{suffix}{label}")).map(|(_, v)| v))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("update_duration_sum"), value("update_duration_count"))
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or_default()
}

/// Sequential requests for `d`; returns their latencies.
async fn latencies(addr: SocketAddr, d: Duration) -> Vec<Duration> {
    let mut c = common::Client::connect(addr).await.unwrap();
    let mut out = Vec::new();
    let end = Instant::now() + d;
    while Instant::now() < end {
        let t = Instant::now();
        let s = c.get().await.unwrap();
        assert_eq!(s, 200);
        out.push(t.elapsed());
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it,
    // in a debug build, where the figures would mean nothing.
    if !std::env::args().any(|a| a == "--bench") {
        println!("xds_push: run with `cargo bench --bench xds_push`");
        return;
    }
    let n_clusters = env_or("CLUSTERS", 10_000);
    let n_listeners = env_or("LISTENERS", 1_000);
    let n_endpoints = env_or("ENDPOINTS", 10);
    let up = common::upstream(2).await;
    let cp = ControlPlane::new();
    let cp_addr = cp.serve_tcp(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    cp.set::<Cluster>("0", &[]);
    cp.set::<Listener>("0", &[]);
    let dir = tempfile::tempdir().unwrap();
    // STATS=deferred: deferred creation of cluster traffic stats; STATS=istio: that and
    // Istio's sidecar stats_matcher, which keeps no per-cluster stats.
    let stats = match std::env::var("STATS").as_deref() {
        Ok("istio") => Stats::Istio,
        Ok("deferred") => Stats::Deferred,
        _ => Stats::All,
    };
    let (mut child, admin) = start_proxy(cp_addr, dir.path(), stats);
    let pid = child.id();
    cp.wait_ack(type_url::CLUSTER, "0").await;
    cp.wait_ack(type_url::LISTENER, "0").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kib(pid);

    // Build the push (outside the timed part).
    let clusters: Vec<_> = (0..n_clusters).map(cluster).collect();
    let cla: Vec<_> = (0..n_clusters)
        .map(|i| assignment(i, n_endpoints, (i == 0).then_some(up), 0))
        .collect();
    let listeners: Vec<_> = (0..n_listeners).map(|i| listener(i, i == 0)).collect();
    let routes: Vec<_> = (0..n_listeners).map(route).collect();

    let cpu_before = cpu_ms(pid);
    let t0 = Instant::now();
    cp.set("1", &cla);
    cp.set("1", &routes);
    cp.set("1", &clusters);
    cp.set("1", &listeners);
    let mut acked = Vec::new();
    for (name, t) in [
        ("CDS", type_url::CLUSTER),
        ("EDS", type_url::ENDPOINT),
        ("LDS", type_url::LISTENER),
        ("RDS", type_url::ROUTE),
    ] {
        cp.wait_answer(t, "1", Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        acked.push((name, t0.elapsed()));
    }
    let l0 = loop {
        if let Some(a) = listener_addr(admin, "l0").await {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    loop {
        if let Ok(mut c) = common::Client::connect(l0).await
            && let Ok(200) = c.get().await
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let served = t0.elapsed();
    let push_cpu = cpu_ms(pid) - cpu_before;
    let rss_settling = rss_kib(pid);
    // Config work keeps Envoy's descriptors decoded for 10 s after the last update; steady
    // state is after that.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let rss_after = rss_kib(pid);

    // EDS updates of one cluster among all, with request latency alongside.
    let baseline = {
        let mut v = latencies(l0, Duration::from_secs(3)).await;
        (percentile(&mut v, 0.5), percentile(&mut v, 0.99), v.len())
    };
    let load = tokio::spawn(latencies(l0, Duration::from_secs(3)));
    let mut eds_times = Vec::new();
    let target = n_clusters / 2;
    let target_name = cluster_name(target);
    let applied_before = eds_apply_time(admin, &target_name).await;
    for g in 1..=20 {
        let one = assignment(target, n_endpoints, None, g);
        let v = format!("eds-{g}");
        let t = Instant::now();
        cp.set_one(&v, &one);
        cp.wait_answer(type_url::ENDPOINT, &v, Duration::from_secs(30))
            .await
            .unwrap();
        eds_times.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = {
        let mut v = load.await.unwrap();
        (percentile(&mut v, 0.5), percentile(&mut v, 0.99), v.len())
    };
    // The control plane's own work alone, for comparison: the last assignment set again under
    // new versions, paced as the updates were. It hashes the same, so the control plane
    // copies and diffs its 10,000 assignments each time and sends nothing.
    let control_load = tokio::spawn(latencies(l0, Duration::from_secs(3)));
    let last = assignment(target, n_endpoints, None, 20);
    for g in 1..=20 {
        cp.set_one(&format!("same-{g}"), &last);
        tokio::time::sleep(Duration::from_millis(118)).await;
    }
    let control = {
        let mut v = control_load.await.unwrap();
        (percentile(&mut v, 0.5), percentile(&mut v, 0.99), v.len())
    };
    let applied_after = eds_apply_time(admin, &target_name).await;
    let apply_ms = if applied_after.1 > applied_before.1 {
        format!(
            "{:.3} ms",
            (applied_after.0 - applied_before.0) / (applied_after.1 - applied_before.1)
        )
    } else {
        "n/a".to_string()
    };
    let _ = child.kill();
    let _ = child.wait();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "push: {n_clusters} EDS clusters x {n_endpoints} endpoints, {n_listeners} listeners and route configurations (delta ADS); stats: {}",
        match stats {
            Stats::Istio =>
                "Istio's deferred creation and stats_matcher (per-cluster stats not kept; the EDS apply time is not reported)",
            Stats::Deferred => "all, cluster traffic stats created on first use",
            Stats::All => "all, created eagerly",
        }
    );
    for (name, d) in &acked {
        println!("  {name} ACKed after {:.0} ms", ms(*d));
    }
    println!(
        "  traffic served on a new cluster after {:.0} ms; pilotfish's CPU time until then: {push_cpu} ms",
        ms(served)
    );
    println!(
        "  RSS before {rss_before} KiB; right after the push {rss_settling} KiB; 15 s later {rss_after} KiB: {:.2} KiB per cluster",
        (rss_after.saturating_sub(rss_before)) as f64 / n_clusters as f64
    );
    eds_times.sort();
    println!(
        "  EDS update of one cluster (only it sent): applied in {apply_ms} on average (pilotfish's update_duration); control plane set to ACK: median {:.2} ms, max {:.2} ms",
        ms(eds_times[eds_times.len() / 2]),
        ms(eds_times[eds_times.len() - 1])
    );
    println!(
        "  request latency without updates: p50 {:.3} ms, p99 {:.3} ms ({} requests)",
        ms(baseline.0),
        ms(baseline.1),
        baseline.2
    );
    println!(
        "  request latency during updates:  p50 {:.3} ms, p99 {:.3} ms ({} requests)",
        ms(during.0),
        ms(during.1),
        during.2
    );
    println!(
        "  request latency during the control plane's work alone (nothing sent): p50 {:.3} ms, p99 {:.3} ms ({} requests)",
        ms(control.0),
        ms(control.1),
        control.2
    );
}
