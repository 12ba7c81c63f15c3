//! Upstream: the cluster manager, hosts, load balancing, circuit breakers and connection pools.

pub mod connect;
pub mod host_set;
pub mod lb;
pub mod pool;
pub mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::cluster::{Cluster, Discovery, DnsLookupFamily};
use crate::config::common::HostAddress;
use crate::stats::Store;
use connect::Target;
use lb::{LbHost, LbState};
use pool::{ConnLimits, Pool};
use stats::ClusterStats;

/// One upstream host of a cluster.
#[derive(Debug)]
pub struct Host {
    /// Where it is.
    pub target: Target,
    /// Its hostname (for auto_host_rewrite).
    pub hostname: String,
    /// LB weight.
    pub weight: u32,
    /// Health from config (UNHEALTHY, DRAINING and TIMEOUT hosts are not healthy).
    pub healthy: bool,
    /// Requests in flight.
    pub active_requests: AtomicU64,
    /// Its connection pool.
    pub pool: Pool,
}

impl host_set::HostHealth for Host {
    fn healthy(&self) -> bool {
        self.healthy
    }
}

/// One host as discovery reports it.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// Where.
    pub target: Target,
    /// Hostname.
    pub hostname: String,
    /// Weight.
    pub weight: u32,
    /// Healthy.
    pub healthy: bool,
    /// Priority level.
    pub priority: u32,
}

impl LbHost for Arc<Host> {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn active_requests(&self) -> u64 {
        self.active_requests.load(Ordering::Relaxed)
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Socket(a) => write!(f, "{a}"),
            Target::Pipe(p) => write!(f, "{p}"),
        }
    }
}

/// A cluster at run time: its config, current hosts, balancer and stats.
#[derive(Debug)]
pub struct ClusterRuntime {
    /// The config.
    pub config: Arc<Cluster>,
    /// Hosts by priority (swapped whole on membership changes).
    pub hosts: ArcSwap<host_set::HostSet<Host>>,
    /// Balancer state.
    pub lb: LbState,
    /// Stats.
    pub stats: Arc<ClusterStats>,
    /// Requests in flight (circuit breaker).
    pub open_requests: AtomicU64,
    /// Connection limits shared by the hosts' pools.
    pub limits: Arc<ConnLimits>,
    /// True once the cluster has its first host set (at once for STATIC, after the first DNS
    /// resolution otherwise), as Envoy's cluster initialization.
    pub initialized: tokio::sync::watch::Sender<bool>,
}

impl ClusterRuntime {
    fn new(config: Arc<Cluster>, store: &Arc<Store>) -> Arc<Self> {
        let stats = Arc::new(ClusterStats::new(store, &config.stat_name));
        let rt = Arc::new(Self {
            hosts: ArcSwap::from_pointee(host_set::HostSet::default()),
            lb: LbState::default(),
            stats,
            open_requests: AtomicU64::new(0),
            limits: Arc::default(),
            initialized: tokio::sync::watch::channel(false).0,
            config,
        });
        if rt.config.discovery == Discovery::Static {
            let hosts = rt
                .config
                .endpoints
                .iter()
                .filter_map(|e| {
                    let target = match &e.address {
                        HostAddress::Socket(s) => Target::Socket(*s),
                        HostAddress::Pipe(p) => Target::Pipe(p.clone()),
                        HostAddress::Dns(..) => return None,
                    };
                    Some(HostSpec {
                        target,
                        hostname: e.hostname.clone(),
                        weight: e.weight,
                        healthy: e.healthy,
                        priority: e.priority,
                    })
                })
                .collect();
            rt.set_hosts(hosts);
            rt.initialized.send_replace(true);
        }
        rt
    }

    /// Replaces the host set, keeping the pools of hosts that stay.
    pub fn set_hosts(self: &Arc<Self>, hosts: Vec<HostSpec>) {
        let old = self.hosts.load();
        let mut next = Vec::with_capacity(hosts.len());
        for spec in hosts {
            let same = old.all().find(|h| {
                same_target(&h.target, &spec.target)
                    && h.weight == spec.weight
                    && h.healthy == spec.healthy
            });
            let host = match same {
                Some(h) => h.clone(),
                None => Arc::new(Host {
                    pool: Pool::new(
                        self.config.clone(),
                        self.stats.clone(),
                        self.limits.clone(),
                        spec.target.clone(),
                    ),
                    target: spec.target,
                    hostname: spec.hostname,
                    weight: spec.weight,
                    healthy: spec.healthy,
                    active_requests: AtomicU64::new(0),
                }),
            };
            next.push((spec.priority, host));
        }
        let set = host_set::HostSet::new(next, self.config.healthy_panic_threshold);
        let (total, healthy) = set.counts();
        self.stats.membership_total.set(total as i64);
        self.stats.membership_healthy.set(healthy as i64);
        self.hosts.store(Arc::new(set));
    }

    /// Picks a host, or None when the cluster has no host to send to.
    pub fn choose_host(&self) -> Option<Arc<Host>> {
        let set = self.hosts.load();
        let hosts = set.candidates(fastrand::u64(..))?;
        let i = self
            .lb
            .pick(self.config.lb_policy, hosts, || fastrand::u64(..));
        Some(hosts[i].clone())
    }

    /// Takes a request slot under the max_requests circuit breaker; None when it is open.
    pub fn try_start_request(self: &Arc<Self>) -> Option<RequestGuard> {
        let max = self.config.thresholds.max_requests;
        let prev = self.open_requests.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.open_requests.fetch_sub(1, Ordering::AcqRel);
            self.stats.cb_rq_open.set(1);
            return None;
        }
        if prev + 1 >= max {
            self.stats.cb_rq_open.set(1);
        }
        self.stats.upstream_rq_active.inc();
        Some(RequestGuard {
            cluster: self.clone(),
        })
    }
}

fn same_target(a: &Target, b: &Target) -> bool {
    match (a, b) {
        (Target::Socket(x), Target::Socket(y)) => x == y,
        (Target::Pipe(x), Target::Pipe(y)) => x == y,
        _ => false,
    }
}

/// Holds a max_requests slot until dropped.
#[derive(Debug)]
pub struct RequestGuard {
    cluster: Arc<ClusterRuntime>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let c = &self.cluster;
        let prev = c.open_requests.fetch_sub(1, Ordering::AcqRel);
        if prev <= c.config.thresholds.max_requests {
            c.stats.cb_rq_open.set(0);
        }
        c.stats.upstream_rq_active.dec();
    }
}

/// Every cluster by name.
#[derive(Debug, Default)]
pub struct ClusterManager {
    clusters: HashMap<Arc<str>, Arc<ClusterRuntime>>,
}

impl ClusterManager {
    /// Builds the runtime of every cluster and starts DNS resolution for DNS clusters.
    pub fn new(clusters: &[Arc<Cluster>], store: &Arc<Store>) -> Self {
        let mut map = HashMap::new();
        for c in clusters {
            let rt = ClusterRuntime::new(c.clone(), store);
            if c.discovery != Discovery::Static {
                tokio::spawn(resolve_loop(Arc::downgrade(&rt)));
            }
            map.insert(c.name.clone(), rt);
        }
        tokio::spawn(close_idle_connections(
            map.values().map(Arc::downgrade).collect(),
        ));
        Self { clusters: map }
    }

    /// The cluster named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<ClusterRuntime>> {
        self.clusters.get(name)
    }

    /// Completes when every cluster has initialized (DNS clusters after their first resolution).
    pub async fn wait_initialized(&self) {
        for c in self.clusters.values() {
            let mut rx = c.initialized.subscribe();
            let _ = rx.wait_for(|done| *done).await;
        }
    }

    /// Every cluster, sorted by name.
    pub fn all(&self) -> Vec<&Arc<ClusterRuntime>> {
        let mut v: Vec<_> = self.clusters.values().collect();
        v.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        v
    }
}

/// Closes pooled upstream connections past their cluster's idle_timeout, once a second.
async fn close_idle_connections(clusters: Vec<std::sync::Weak<ClusterRuntime>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let mut alive = false;
        for c in clusters.iter().filter_map(std::sync::Weak::upgrade) {
            alive = true;
            for h in c.hosts.load().all() {
                let closed = h.pool.close_idle();
                if closed > 0 {
                    c.stats.upstream_cx_idle_timeout.add(closed as u64);
                }
            }
        }
        if !alive {
            return;
        }
    }
}

/// Re-resolves a DNS cluster's endpoints every dns_refresh_rate while the cluster lives.
/// With `respect_dns_ttl`, names are resolved with a DNS client that reports TTLs (reading the
/// system's resolver configuration and hosts file); otherwise with the system resolver.
async fn resolve_loop(weak: std::sync::Weak<ClusterRuntime>) {
    let mut ttl_resolver: Option<hickory_resolver::TokioResolver> = None;
    loop {
        let Some(rt) = weak.upgrade() else { return };
        let mut period = rt.config.dns_refresh_rate;
        let mut failed = false;
        let mut hosts = Vec::new();
        if rt.config.respect_dns_ttl && ttl_resolver.is_none() {
            match hickory_resolver::TokioResolver::builder_tokio().and_then(|b| b.build()) {
                Ok(r) => ttl_resolver = Some(r),
                Err(e) => {
                    tracing::warn!(cluster = %rt.config.name, "cannot read the resolver configuration: {e}")
                }
            }
        }
        let mut min_ttl: Option<Duration> = None;
        for e in &rt.config.endpoints {
            let HostAddress::Dns(name, port) = &e.address else {
                continue;
            };
            let resolved: Result<Vec<SocketAddr>, String> = match &ttl_resolver {
                Some(r) => match r.lookup_ip(name.as_str()).await {
                    Ok(l) => {
                        let ttl = l
                            .valid_until()
                            .saturating_duration_since(std::time::Instant::now());
                        min_ttl = Some(min_ttl.map_or(ttl, |m| m.min(ttl)));
                        Ok(l.iter().map(|ip| SocketAddr::new(ip, *port)).collect())
                    }
                    Err(e) => Err(e.to_string()),
                },
                None => tokio::net::lookup_host((name.as_str(), *port))
                    .await
                    .map(|a| a.collect())
                    .map_err(|e| e.to_string()),
            };
            match resolved {
                Ok(addrs) => {
                    let mut addrs: Vec<SocketAddr> =
                        filter_family(addrs, rt.config.dns_lookup_family);
                    if rt.config.discovery == Discovery::LogicalDns {
                        addrs.truncate(1);
                    }
                    for a in addrs {
                        hosts.push(HostSpec {
                            target: Target::Socket(a),
                            hostname: name.clone(),
                            weight: e.weight,
                            healthy: e.healthy,
                            priority: e.priority,
                        });
                    }
                }
                Err(err) => {
                    failed = true;
                    tracing::warn!(cluster = %rt.config.name, "DNS resolution of {name} failed: {err}");
                }
            }
        }
        if let Some(ttl) = min_ttl.filter(|t| !t.is_zero()) {
            // As Envoy: the answer's TTL replaces dns_refresh_rate.
            period = ttl;
        }
        if failed && hosts.is_empty() {
            // Keep the last good hosts; retry at the failure refresh rate.
            period = rt.config.dns_failure_refresh_rate.unwrap_or(period);
        } else {
            rt.set_hosts(hosts);
        }
        // The first resolution initializes the cluster, whether or not it found hosts.
        rt.initialized.send_replace(true);
        let jitter = rt.config.dns_jitter;
        drop(rt);
        let jitter = if jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(fastrand::u64(..jitter.as_nanos() as u64))
        };
        tokio::time::sleep(period + jitter).await;
    }
}

fn filter_family(addrs: Vec<SocketAddr>, family: DnsLookupFamily) -> Vec<SocketAddr> {
    let v4: Vec<_> = addrs.iter().copied().filter(SocketAddr::is_ipv4).collect();
    let v6: Vec<_> = addrs.iter().copied().filter(SocketAddr::is_ipv6).collect();
    match family {
        DnsLookupFamily::V4Only => v4,
        DnsLookupFamily::V6Only => v6,
        DnsLookupFamily::Auto => {
            if v6.is_empty() {
                v4
            } else {
                v6
            }
        }
        DnsLookupFamily::V4Preferred => {
            if v4.is_empty() {
                v6
            } else {
                v4
            }
        }
        DnsLookupFamily::All => addrs,
    }
}
