//! Upstream: the cluster manager, hosts, load balancing, circuit breakers and connection pools.

pub mod connect;
pub mod host_set;
pub mod http1;
pub mod initialized;
pub mod lb;
pub mod original_dst;
pub mod pool;
pub mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::sync::Mutex;
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

use crate::config::cluster::{Cluster, Discovery, DnsLookupFamily, EndpointConfig};
use crate::config::common::HostAddress;
use crate::stats::Store;
use crate::stats::{Counter, Gauge};
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
    pub hostname: Box<str>,
    /// LB weight.
    pub weight: u32,
    /// Health from config (UNHEALTHY, DRAINING and TIMEOUT hosts are not healthy).
    pub healthy: bool,
    /// Requests in flight.
    pub active_requests: AtomicU64,
    /// Its transport socket (the cluster's, or the one its metadata matched).
    pub tls: Option<Arc<crate::config::tls::UpstreamTls>>,
    /// Its connection pool, made on first use (most endpoints of a large mesh never see a
    /// request) and kept across endpoint updates that change only weight or health.
    pool: std::sync::OnceLock<Arc<Pool>>,
}

impl Host {
    /// The pool for a request: with auto_sni and an `sni` from the request, the pool of
    /// connections that send it (one per host and SNI, kept by the cluster); else the
    /// host's own.
    pub fn pool_for<'a>(
        self: &'a Arc<Self>,
        cluster: &'a ClusterRuntime,
        sni: Option<&str>,
    ) -> std::borrow::Cow<'a, Arc<Pool>> {
        let own = || std::borrow::Cow::Borrowed(self.pool(cluster));
        let (Some(sni), Some(pools), Some(_)) = (sni, cluster.sni_pools.as_deref(), &self.tls)
        else {
            return own();
        };
        let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
        let by_sni = pools.entry(self.target.clone()).or_default();
        if let Some(p) = by_sni.get(sni) {
            return std::borrow::Cow::Owned(p.clone());
        }
        let Ok(name) = rustls_pki_types::ServerName::try_from(sni.to_string()) else {
            return own();
        };
        let pool = Arc::new(
            Pool::new(
                cluster.config.clone(),
                cluster.stats.clone(),
                cluster.limits.clone(),
                self.target.clone(),
                self.tls.clone(),
            )
            .with_sni(name),
        );
        by_sni.insert(Arc::from(sni), pool.clone());
        std::borrow::Cow::Owned(pool)
    }

    /// Its connection pool, made on first use.
    pub fn pool(&self, cluster: &ClusterRuntime) -> &Arc<Pool> {
        self.pool.get_or_init(|| {
            Arc::new(Pool::new(
                cluster.config.clone(),
                cluster.stats.clone(),
                cluster.limits.clone(),
                self.target.clone(),
                self.tls.clone(),
            ))
        })
    }
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
    pub hostname: Box<str>,
    /// Weight.
    pub weight: u32,
    /// Healthy.
    pub healthy: bool,
    /// Priority level.
    pub priority: u32,
    /// Transport socket.
    pub tls: Option<Arc<crate::config::tls::UpstreamTls>>,
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

/// One accepted ClusterLoadAssignment.
#[derive(Debug)]
pub struct Assignment {
    /// Its endpoints.
    pub endpoints: Vec<EndpointConfig>,
    /// Overprovisioning factor (percent).
    pub overprovisioning_factor: u32,
    /// As received, for /config_dump.
    pub proto: crate::config::common::Encoded<ClusterLoadAssignment>,
    /// Its name.
    pub name: String,
    /// The version it came with.
    pub version: String,
    /// When it was accepted.
    pub last_updated: SystemTime,
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
    /// resolution or EDS assignment otherwise), as Envoy's cluster initialization.
    pub initialized: initialized::Initialized,
    /// Whether it came from CDS (static clusters cannot be changed by CDS).
    pub added_via_api: bool,
    /// The CDS version it came with.
    pub version: String,
    /// When it was added.
    pub last_updated: SystemTime,
    /// The EDS assignment its hosts come from.
    pub assignment: ArcSwapOption<Assignment>,
    /// An ORIGINAL_DST cluster's hosts, made per destination.
    pub original_dst: Option<Box<original_dst::OriginalDstHosts>>,
    /// With auto_sni: the pools by host and SNI.
    sni_pools: Option<Box<SniPools>>,
}

/// Pools by host address, then SNI.
type SniPools = Mutex<HashMap<Target, HashMap<Arc<str>, Arc<Pool>>>>;

/// What a load balancer may read of the connection or request it picks a host for.
#[derive(Debug, Clone, Copy, Default)]
pub struct LbContext<'a> {
    /// The downstream connection (ORIGINAL_DST clusters read its original destination).
    pub downstream: Option<&'a crate::network::connection_info::ConnectionInfo>,
    /// The request's headers (ORIGINAL_DST's override header).
    pub headers: Option<&'a http::HeaderMap>,
}

impl ClusterRuntime {
    fn new(
        config: Arc<Cluster>,
        store: &Arc<Store>,
        added_via_api: bool,
        version: &str,
    ) -> Arc<Self> {
        let stats = Arc::new(ClusterStats::new(
            store,
            &config.stat_name,
            config.tls.is_some()
                || config
                    .transport_socket_matches
                    .iter()
                    .any(|m| m.tls.is_some()),
            store.deferred_creation(),
        ));
        let rt = Arc::new(Self {
            hosts: ArcSwap::from_pointee(host_set::HostSet::default()),
            lb: LbState::default(),
            stats,
            open_requests: AtomicU64::new(0),
            limits: Arc::default(),
            initialized: Default::default(),
            added_via_api,
            version: version.to_string(),
            last_updated: SystemTime::now(),
            assignment: ArcSwapOption::empty(),
            original_dst: config
                .original_dst
                .clone()
                .map(|c| Box::new(original_dst::OriginalDstHosts::new(*c))),
            sni_pools: config.auto_sni.as_ref().map(|_| Box::default()),
            config,
        });
        if matches!(
            rt.config.discovery,
            Discovery::Static | Discovery::OriginalDst
        ) {
            rt.set_hosts(
                static_hosts(&rt.config, &rt.config.endpoints),
                rt.config.overprovisioning_factor,
            );
            rt.initialized.set();
        }
        rt
    }

    /// Replaces the host set, keeping the pools of hosts that stay.
    pub fn set_hosts(self: &Arc<Self>, hosts: Vec<HostSpec>, overprovisioning: u32) {
        let old = self.hosts.load();
        let mut next = Vec::with_capacity(hosts.len());
        for spec in hosts {
            let same = old.all().find(|h| h.target == spec.target);
            let host = match same {
                Some(h)
                    if h.weight == spec.weight
                        && h.healthy == spec.healthy
                        && h.hostname == spec.hostname
                        && same_tls(&h.tls, &spec.tls) =>
                {
                    h.clone()
                }
                _ => Arc::new(Host {
                    // A pool is kept only while the transport socket stays the same.
                    pool: match same
                        .filter(|h| same_tls(&h.tls, &spec.tls))
                        .and_then(|h| h.pool.get())
                    {
                        Some(p) => std::sync::OnceLock::from(p.clone()),
                        None => std::sync::OnceLock::new(),
                    },
                    tls: spec.tls,
                    target: spec.target,
                    hostname: spec.hostname,
                    weight: spec.weight,
                    healthy: spec.healthy,
                    active_requests: AtomicU64::new(0),
                }),
            };
            next.push((spec.priority, host));
        }
        if let Some(pools) = &self.sni_pools {
            // Forget the SNI pools of hosts that left.
            let kept: std::collections::HashSet<&Target> =
                next.iter().map(|(_, h)| &h.target).collect();
            pools
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|target, _| kept.contains(target));
        }
        let set =
            host_set::HostSet::new(next, self.config.healthy_panic_threshold, overprovisioning);
        let (total, healthy) = set.counts();
        self.stats.gauges.membership_total().set(total as i64);
        self.stats.gauges.membership_healthy().set(healthy as i64);
        self.hosts.store(Arc::new(set));
    }

    /// Applies an EDS assignment and marks the cluster initialized.
    fn assign(self: &Arc<Self>, a: Arc<Assignment>) {
        self.set_hosts(
            static_hosts(&self.config, &a.endpoints),
            a.overprovisioning_factor,
        );
        self.assignment.store(Some(a));
        self.initialized.set();
    }

    /// Picks a host for the connection or request of `ctx`, or None when the cluster has no
    /// host to send to.
    pub fn choose_host(&self, ctx: &LbContext<'_>) -> Option<Arc<Host>> {
        if let Some(od) = &self.original_dst {
            return od.choose(self, ctx);
        }
        let set = self.hosts.load();
        let hosts = set.candidates(fastrand::u64(..))?;
        let i = self
            .lb
            .pick(self.config.lb_policy, hosts, || fastrand::u64(..));
        Some(hosts[i].clone())
    }

    /// Every host it has now: its host set's, or the ones an ORIGINAL_DST cluster made.
    pub fn all_hosts(&self) -> Vec<Arc<Host>> {
        let mut v: Vec<Arc<Host>> = self.hosts.load().all().cloned().collect();
        if let Some(od) = &self.original_dst {
            v.extend(od.hosts());
        }
        v
    }

    /// Takes a request slot under the max_requests circuit breaker; None when it is open.
    pub fn try_start_request(self: &Arc<Self>) -> Option<RequestGuard> {
        let max = self.config.thresholds.max_requests;
        let prev = self.open_requests.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.open_requests.fetch_sub(1, Ordering::AcqRel);
            self.stats.gauges.cb_rq_open().set(1);
            return None;
        }
        if prev + 1 >= max {
            self.stats.gauges.cb_rq_open().set(1);
        }
        self.stats.upstream_rq_active().inc();
        Some(RequestGuard {
            cluster: self.clone(),
        })
    }

    /// Whether it may serve: its first hosts arrived (or waiting for them ended) and so did
    /// the secrets of its transport sockets.
    fn is_initialized(&self) -> bool {
        self.initialized.get() && self.config.secrets().iter().all(|s| s.is_ready())
    }
}

/// Hosts of endpoints with fixed addresses (DNS names are resolved elsewhere).
fn same_tls(
    a: &Option<Arc<crate::config::tls::UpstreamTls>>,
    b: &Option<Arc<crate::config::tls::UpstreamTls>>,
) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

fn static_hosts(cluster: &Cluster, endpoints: &[EndpointConfig]) -> Vec<HostSpec> {
    endpoints
        .iter()
        .filter_map(|e| {
            let target = match &e.address {
                HostAddress::Socket(s) => Target::Socket(*s),
                HostAddress::Pipe(p) => Target::Pipe(p.clone()),
                HostAddress::Dns(..) => return None,
            };
            Some(HostSpec {
                target,
                hostname: e.hostname.as_str().into(),
                weight: e.weight,
                healthy: e.healthy,
                priority: e.priority,
                tls: cluster.tls_for(e.socket_match.as_deref()),
            })
        })
        .collect()
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
            c.stats.gauges.cb_rq_open().set(0);
        }
        c.stats.upstream_rq_active().dec();
    }
}

/// Clusters by name, looked up on every request: hashed with foldhash (randomly seeded),
/// several times cheaper than SipHash for short names. The keys come from config; a request
/// only looks one up.
type ClusterMap = HashMap<Arc<str>, Arc<ClusterRuntime>, foldhash::fast::RandomState>;

/// Why CDS could not apply a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterUpdateError {
    /// A static cluster has the name.
    #[error("cluster {0:?} is a static cluster and cannot be changed by CDS")]
    Static(String),
}

#[derive(Debug)]
struct ManagerStats {
    cluster_added: Arc<Counter>,
    cluster_modified: Arc<Counter>,
    cluster_removed: Arc<Counter>,
    active_clusters: Arc<Gauge>,
    warming_clusters: Arc<Gauge>,
}

/// Every cluster by name: the active ones (read per request without locks) and the ones
/// warming (waiting for their first hosts before they replace or join the active set).
#[derive(Debug, Clone)]
pub struct ClusterManager(Arc<ClusterManagerInner>);

impl std::ops::Deref for ClusterManager {
    type Target = ClusterManagerInner;
    fn deref(&self) -> &ClusterManagerInner {
        &self.0
    }
}

/// The cluster manager's state, shared with its timers.
#[derive(Debug)]
pub struct ClusterManagerInner {
    active: ArcSwap<ClusterMap>,
    warming: Mutex<ClusterMap>,
    /// Serializes writers of `active`.
    write: Mutex<()>,
    /// The last assignment of each EDS service name.
    assignments: Mutex<HashMap<String, Arc<Assignment>>>,
    store: Arc<Store>,
    stats: ManagerStats,
    /// Told when a cluster finishes warming or the set of EDS names changes.
    pub changed: Arc<tokio::sync::Notify>,
}

impl ClusterManager {
    /// Builds the runtime of every static cluster and starts DNS resolution for DNS clusters.
    pub fn new(clusters: &[Arc<Cluster>], store: &Arc<Store>) -> Self {
        Self(Arc::new(ClusterManagerInner::new(clusters, store)))
    }

    /// Adds or updates a CDS cluster. Returns false when the cluster is unchanged.
    pub fn add_or_update(
        &self,
        config: Arc<Cluster>,
        version: &str,
    ) -> Result<bool, ClusterUpdateError> {
        self.add_or_update_many(vec![(config, version.to_string())])
            .pop()
            .unwrap_or(Ok(false))
    }

    /// Adds or updates CDS clusters (one result per cluster, in order). A new or changed
    /// cluster warms until its first hosts arrive (for at most its EDS initial_fetch_timeout);
    /// the previous version keeps serving meanwhile. The active set is republished once.
    pub fn add_or_update_many(
        &self,
        items: Vec<(Arc<Cluster>, String)>,
    ) -> Vec<Result<bool, ClusterUpdateError>> {
        let timers: Vec<_> = items
            .iter()
            .map(|(c, _)| {
                (
                    c.clone(),
                    c.eds
                        .as_ref()
                        .map(|e| e.source.initial_fetch_timeout)
                        .unwrap_or_default(),
                )
            })
            .collect();
        let results = self.0.add_or_update_many(items);
        for ((config, _), r) in timers.iter().zip(&results) {
            if matches!(r, Ok(true)) {
                self.time_out_secrets(config);
            }
        }
        for ((config, timeout), r) in timers.into_iter().zip(&results) {
            if !matches!(r, Ok(true)) || timeout.is_zero() {
                continue;
            }
            let inner = Arc::downgrade(&self.0);
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                let Some(inner) = inner.upgrade() else { return };
                let waiting = lock(&inner.warming).get(&config.name).cloned();
                if let Some(c) = waiting
                    && Arc::ptr_eq(&c.config, &config)
                {
                    tracing::warn!(
                        "cluster {}: endpoints did not arrive within initial_fetch_timeout",
                        config.name
                    );
                    c.initialized.set();
                    inner.promote_warmed();
                }
            });
        }
        results
    }

    /// Bounds a new cluster's wait for its secrets by their initial_fetch_timeout: once it
    /// passes, the cluster serves and handshakes fail until the secrets arrive.
    fn time_out_secrets(&self, config: &Arc<Cluster>) {
        let pending: Vec<_> = config
            .secrets()
            .into_iter()
            .filter(|s| !s.is_ready())
            .collect();
        if pending.is_empty() || pending.iter().any(|s| s.initial_fetch_timeout.is_zero()) {
            return;
        }
        let timeout = pending
            .iter()
            .map(|s| s.initial_fetch_timeout)
            .max()
            .unwrap_or_default();
        let inner = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let Some(inner) = inner.upgrade() else { return };
            for s in &pending {
                if !s.is_ready() {
                    tracing::warn!(
                        "secret {:?} did not arrive within initial_fetch_timeout",
                        s.name
                    );
                    s.give_up_waiting();
                }
            }
            inner.promote_warmed();
        });
    }
}

impl ClusterManagerInner {
    fn new(clusters: &[Arc<Cluster>], store: &Arc<Store>) -> Self {
        let stats = ManagerStats {
            cluster_added: store.counter("cluster_manager.cluster_added"),
            cluster_modified: store.counter("cluster_manager.cluster_modified"),
            cluster_removed: store.counter("cluster_manager.cluster_removed"),
            active_clusters: store.gauge("cluster_manager.active_clusters"),
            warming_clusters: store.gauge("cluster_manager.warming_clusters"),
        };
        let cm = Self {
            active: ArcSwap::from_pointee(ClusterMap::default()),
            warming: Mutex::new(ClusterMap::default()),
            write: Mutex::new(()),
            assignments: Mutex::new(HashMap::new()),
            store: store.clone(),
            stats,
            changed: Arc::new(tokio::sync::Notify::new()),
        };
        let mut map = ClusterMap::default();
        for c in clusters {
            let rt = ClusterRuntime::new(c.clone(), store, false, "");
            start_discovery(&rt);
            map.insert(c.name.clone(), rt);
        }
        cm.stats.cluster_added.add(map.len() as u64);
        cm.active.store(Arc::new(map));
        cm.refresh_gauges();
        cm
    }

    /// The active cluster named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<ClusterRuntime>> {
        self.active.load().get(name).cloned()
    }

    /// Completes when every static cluster has initialized (DNS clusters after their first
    /// resolution).
    pub async fn wait_initialized(&self) {
        // EDS clusters initialize when xDS delivers their endpoints, after this.
        let all: Vec<_> = self
            .active
            .load()
            .values()
            .filter(|c| c.config.discovery != Discovery::Eds)
            .cloned()
            .collect();
        for c in all {
            c.initialized.wait().await;
        }
    }

    /// Every active cluster, sorted by name.
    pub fn all(&self) -> Vec<Arc<ClusterRuntime>> {
        let mut v: Vec<_> = self.active.load().values().cloned().collect();
        v.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        v
    }

    /// Every warming cluster, sorted by name.
    pub fn warming(&self) -> Vec<Arc<ClusterRuntime>> {
        let mut v: Vec<_> = lock(&self.warming).values().cloned().collect();
        v.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        v
    }

    fn add_or_update_many(
        &self,
        items: Vec<(Arc<Cluster>, String)>,
    ) -> Vec<Result<bool, ClusterUpdateError>> {
        let _w = lock(&self.write);
        let active = self.active.load_full();
        let mut next: Option<ClusterMap> = None;
        let mut results = Vec::with_capacity(items.len());
        let assignments = lock(&self.assignments);
        let mut warming = lock(&self.warming);
        for (config, version) in items {
            let name = config.name.clone();
            let current = next.as_ref().unwrap_or(&active).get(&name).cloned();
            if let Some(c) = &current {
                if !c.added_via_api {
                    results.push(Err(ClusterUpdateError::Static(name.to_string())));
                    continue;
                }
                if c.config.proto == config.proto && !warming.contains_key(&name) {
                    results.push(Ok(false));
                    continue;
                }
            }
            if let Some(w) = warming.get(&name)
                && w.config.proto == config.proto
            {
                results.push(Ok(false));
                continue;
            }
            let rt = ClusterRuntime::new(config.clone(), &self.store, true, &version);
            if let Some(eds) = &config.eds
                && let Some(a) = assignments.get(&eds.service_name).cloned()
            {
                rt.assign(a);
            }
            start_discovery(&rt);
            if current.is_some() {
                self.stats.cluster_modified.inc();
            } else {
                self.stats.cluster_added.inc();
            }
            if rt.is_initialized() {
                warming.remove(&name);
                next.get_or_insert_with(|| (*active).clone())
                    .insert(name, rt);
            } else {
                warming.insert(name, rt);
            }
            results.push(Ok(true));
        }
        drop(warming);
        drop(assignments);
        if let Some(map) = next {
            self.active.store(Arc::new(map));
        }
        self.refresh_gauges();
        self.changed.notify_one();
        results
    }

    /// Moves warming clusters that have initialized into the active set; returns how many.
    pub fn promote_warmed(&self) -> usize {
        let _w = lock(&self.write);
        let ready: Vec<_> = {
            let mut warming = lock(&self.warming);
            let names: Vec<_> = warming
                .iter()
                .filter(|(_, c)| c.is_initialized())
                .map(|(n, _)| n.clone())
                .collect();
            names.iter().filter_map(|n| warming.remove(n)).collect()
        };
        let n = ready.len();
        if n > 0 {
            let mut map = (**self.active.load()).clone();
            for rt in ready {
                map.insert(rt.config.name.clone(), rt);
            }
            self.active.store(Arc::new(map));
            self.refresh_gauges();
            self.changed.notify_one();
        }
        n
    }

    /// Gives up waiting for warming clusters' first hosts (initial_fetch_timeout): they become
    /// active with what they have.
    pub fn finish_warming(&self) {
        for c in lock(&self.warming).values() {
            c.initialized.set();
        }
        self.promote_warmed();
    }

    /// Removes a CDS cluster (static ones stay). In-flight requests finish on the runtime they
    /// hold.
    pub fn remove(&self, name: &str) -> bool {
        let _w = lock(&self.write);
        let warm = lock(&self.warming).remove(name).is_some();
        let active = match self.active.load().get(name) {
            Some(c) if c.added_via_api => {
                let mut map = (**self.active.load()).clone();
                map.remove(name);
                self.active.store(Arc::new(map));
                true
            }
            _ => false,
        };
        if warm || active {
            self.stats.cluster_removed.inc();
            self.refresh_gauges();
            self.changed.notify_one();
        }
        warm || active
    }

    /// Names of every CDS cluster, active or warming.
    pub fn dynamic_names(&self) -> Vec<Arc<str>> {
        let mut v: Vec<_> = self
            .active
            .load()
            .values()
            .filter(|c| c.added_via_api)
            .map(|c| c.config.name.clone())
            .collect();
        v.extend(lock(&self.warming).keys().cloned());
        v.sort();
        v.dedup();
        v
    }

    /// EDS service names some cluster (active or warming) wants, sorted.
    pub fn eds_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .active
            .load()
            .values()
            .chain(lock(&self.warming).values())
            .filter_map(|c| c.config.eds.as_ref().map(|e| e.service_name.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Applies EDS assignments (by service name) to every cluster using them, then moves the
    /// clusters they finished warming into the active set.
    pub fn update_assignments(&self, items: Vec<(String, Assignment)>) {
        let active = self.active.load_full();
        let warming: Vec<_> = lock(&self.warming).values().cloned().collect();
        let uses = |c: &Arc<ClusterRuntime>, name: &str| {
            c.config
                .eds
                .as_ref()
                .is_some_and(|e| e.service_name == name)
        };
        // A few assignments (the usual incremental update): one scan each, with no index to
        // build; otherwise index every cluster once.
        let mut users: HashMap<String, Vec<Arc<ClusterRuntime>>> = HashMap::new();
        if items.len() <= 8 {
            for (name, _) in &items {
                let found = active
                    .values()
                    .chain(warming.iter())
                    .filter(|c| uses(c, name))
                    .cloned()
                    .collect();
                users.insert(name.clone(), found);
            }
        } else {
            for c in active.values().chain(warming.iter()) {
                if let Some(e) = &c.config.eds {
                    users
                        .entry(e.service_name.clone())
                        .or_default()
                        .push(c.clone());
                }
            }
        }
        let mut assignments = lock(&self.assignments);
        for (name, a) in items {
            let a = Arc::new(a);
            for c in users.get(&name).into_iter().flatten() {
                c.assign(a.clone());
            }
            assignments.insert(name, a);
        }
        drop(assignments);
        self.promote_warmed();
    }

    /// Forgets the assignment of `service_name` (removed by the control plane): clusters using
    /// it are left with no hosts.
    pub fn remove_assignment(&self, service_name: &str) {
        lock(&self.assignments).remove(service_name);
        for c in self.active.load().values() {
            if c.config
                .eds
                .as_ref()
                .is_some_and(|e| e.service_name == service_name)
            {
                c.assignment.store(None);
                c.set_hosts(Vec::new(), c.config.overprovisioning_factor);
            }
        }
    }

    /// Drops remembered assignments no cluster uses.
    pub fn prune_assignments(&self) {
        let names = self.eds_names();
        lock(&self.assignments).retain(|n, _| names.binary_search(n).is_ok());
    }

    fn refresh_gauges(&self) {
        self.stats
            .active_clusters
            .set(self.active.load().len() as i64);
        self.stats
            .warming_clusters
            .set(lock(&self.warming).len() as i64);
    }

    /// Closes pooled upstream connections past their cluster's idle_timeout.
    pub fn close_idle(&self) {
        for c in self.active.load().values() {
            for h in c.hosts.load().all() {
                let Some(pool) = h.pool.get() else { continue };
                let closed = pool.close_idle();
                if closed > 0 {
                    c.stats.upstream_cx_idle_timeout().add(closed as u64);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts DNS resolution for DNS clusters; STATIC and EDS clusters need none.
fn start_discovery(rt: &Arc<ClusterRuntime>) {
    if matches!(
        rt.config.discovery,
        Discovery::StrictDns | Discovery::LogicalDns
    ) {
        tokio::spawn(resolve_loop(Arc::downgrade(rt)));
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
                            hostname: name.as_str().into(),
                            weight: e.weight,
                            healthy: e.healthy,
                            priority: e.priority,
                            tls: rt.config.tls_for(e.socket_match.as_deref()),
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
            rt.set_hosts(hosts, rt.config.overprovisioning_factor);
        }
        // The first resolution initializes the cluster, whether or not it found hosts.
        rt.initialized.set();
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
