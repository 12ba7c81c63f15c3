//! The listener manager: adds, updates and removes listeners by name, as Envoy's does. A new
//! or changed listener binds (or takes over its predecessor's sockets), warms until the route
//! configurations it names arrived, then starts on every worker; the version it replaces stops
//! accepting and drains its connections. Static listeners cannot be changed by LDS.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::ActiveListener;
use crate::config::filters::NetworkFilter;
use crate::config::hcm::Routes;
use crate::config::listener::Listener;
use crate::server::Server;
use crate::stats::{Counter, Gauge, Store};

/// What a worker is told to do.
#[derive(Debug)]
pub enum WorkerCommand {
    /// Accept on this socket for this listener until it stops.
    Serve(Arc<ActiveListener>, std::net::TcpListener),
}

/// A listener version the manager holds.
#[derive(Debug)]
pub struct ListenerEntry {
    /// The listener at run time.
    pub listener: Arc<ActiveListener>,
    /// One socket per worker (kept so an update can take them over without closing the port).
    sockets: Mutex<Vec<std::net::TcpListener>>,
    /// Where it is bound.
    pub bound: Option<SocketAddr>,
    /// Whether it came from LDS.
    pub added_via_api: bool,
    /// The LDS version it came with.
    pub version: String,
    /// When it was added.
    pub last_updated: SystemTime,
}

/// Why LDS could not apply a listener.
#[derive(Debug, thiserror::Error)]
pub enum ListenerUpdateError {
    /// A static listener has the name.
    #[error("listener {0:?} is a static listener and cannot be changed by LDS")]
    Static(String),
    /// Another listener uses the address.
    #[error("listener {name:?}: address {addr} is already used by listener {other:?}")]
    AddressInUse {
        /// The listener.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// Who has it.
        other: String,
    },
    /// Binding failed.
    #[error("listener {name:?}: cannot bind {addr}: {err}")]
    Bind {
        /// The listener.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        err: std::io::Error,
    },
}

#[derive(Debug)]
struct ManagerStats {
    listener_added: Arc<Counter>,
    listener_modified: Arc<Counter>,
    listener_removed: Arc<Counter>,
    listener_create_success: Arc<Counter>,
    listener_create_failure: Arc<Counter>,
    total_listeners_active: Arc<Gauge>,
    total_listeners_warming: Arc<Gauge>,
    total_listeners_draining: Arc<Gauge>,
}

/// Every listener by name.
#[derive(Debug)]
pub struct ListenerManager {
    active: Mutex<BTreeMap<String, Arc<ListenerEntry>>>,
    warming: Mutex<BTreeMap<String, Arc<ListenerEntry>>>,
    draining: Mutex<Vec<(std::time::Instant, Arc<ActiveListener>)>>,
    workers: Vec<mpsc::UnboundedSender<WorkerCommand>>,
    stats: ManagerStats,
    /// Told whenever a listener finishes warming.
    pub changed: Arc<tokio::sync::Notify>,
    /// Active listeners by address, for the hand-off of redirected connections; rebuilt
    /// on the first lookup after a change.
    by_address: arc_swap::ArcSwap<HashMap<SocketAddr, Arc<ActiveListener>>>,
    by_address_stale: AtomicBool,
}

/// How long a listener waits for its route configurations and secrets: the longest
/// initial_fetch_timeout of their sources (zero, no bound, if any of them has none).
fn warm_timeout(config: &Listener) -> Duration {
    let mut max = Duration::ZERO;
    for chain in config
        .filter_chains
        .iter()
        .chain(config.default_filter_chain.iter())
    {
        for f in &chain.filters {
            if let NetworkFilter::HttpConnectionManager(h) = f
                && let Routes::Rds { source, .. } = &h.routes
            {
                if source.initial_fetch_timeout.is_zero() {
                    return Duration::ZERO;
                }
                max = max.max(source.initial_fetch_timeout);
            }
        }
        for slot in chain.tls.iter().flat_map(|t| t.secrets()) {
            if slot.source == crate::tls::secret::SecretSource::Static {
                continue;
            }
            if slot.initial_fetch_timeout.is_zero() {
                return Duration::ZERO;
            }
            max = max.max(slot.initial_fetch_timeout);
        }
    }
    max
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ListenerManager {
    /// A manager for `concurrency` workers; returns the workers' command receivers.
    pub fn new(
        concurrency: usize,
        store: &Store,
    ) -> (Self, Vec<mpsc::UnboundedReceiver<WorkerCommand>>) {
        let (tx, rx): (Vec<_>, Vec<_>) = (0..concurrency.max(1))
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        let c = |n: &str| store.counter(&format!("listener_manager.{n}"));
        let g = |n: &str| store.gauge(&format!("listener_manager.{n}"));
        let stats = ManagerStats {
            listener_added: c("listener_added"),
            listener_modified: c("listener_modified"),
            listener_removed: c("listener_removed"),
            listener_create_success: c("listener_create_success"),
            listener_create_failure: c("listener_create_failure"),
            total_listeners_active: g("total_listeners_active"),
            total_listeners_warming: g("total_listeners_warming"),
            total_listeners_draining: g("total_listeners_draining"),
        };
        (
            Self {
                active: Mutex::default(),
                warming: Mutex::default(),
                draining: Mutex::default(),
                workers: tx,
                stats,
                changed: Arc::new(tokio::sync::Notify::new()),
                by_address: Default::default(),
                by_address_stale: AtomicBool::new(false),
            },
            rx,
        )
    }

    /// Every active listener, by name.
    pub fn active(&self) -> Vec<Arc<ListenerEntry>> {
        lock(&self.active).values().cloned().collect()
    }

    /// The active listener a redirected connection to `dst` is handed to, as Envoy looks it
    /// up: the listener at exactly `dst`, else the one at the unspecified address of its
    /// family and port (for IPv4, then the dual-stack `[::]` one).
    pub fn find_by_address(&self, dst: SocketAddr) -> Option<Arc<ActiveListener>> {
        if self.by_address_stale.swap(false, Ordering::AcqRel) {
            let index: HashMap<_, _> = lock(&self.active)
                .values()
                .map(|e| {
                    let addr = e.bound.unwrap_or(e.listener.config.address);
                    (
                        crate::network::connection_info::canonical(addr),
                        e.listener.clone(),
                    )
                })
                .collect();
            self.by_address.store(Arc::new(index));
        }
        let index = self.by_address.load();
        let port = dst.port();
        let any_v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        let any_v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        let found = index.get(&dst).or_else(|| {
            if dst.is_ipv4() {
                index.get(&any_v4).or_else(|| index.get(&any_v6))
            } else {
                index.get(&any_v6)
            }
        });
        found.cloned()
    }

    /// Every warming listener, by name.
    pub fn warming(&self) -> Vec<Arc<ListenerEntry>> {
        lock(&self.warming).values().cloned().collect()
    }

    /// Names of every LDS listener, active or warming.
    pub fn dynamic_names(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.active)
            .values()
            .filter(|e| e.added_via_api)
            .map(|e| e.listener.config.name.to_string())
            .collect();
        v.extend(lock(&self.warming).keys().cloned());
        v.sort();
        v.dedup();
        v
    }

    /// Adds or updates a listener. Returns false when it is unchanged. It warms until its
    /// route configurations arrived, for at most their sources' initial_fetch_timeout.
    pub fn add_or_update(
        &self,
        server: &Arc<Server>,
        config: Arc<Listener>,
        version: &str,
        added_via_api: bool,
    ) -> Result<bool, ListenerUpdateError> {
        let name = config.name.to_string();
        let warm_timeout = warm_timeout(&config);
        let current = lock(&self.active).get(&name).cloned();
        if let Some(c) = &current {
            if added_via_api && !c.added_via_api {
                self.stats.listener_create_failure.inc();
                return Err(ListenerUpdateError::Static(name));
            }
            if c.listener.config.proto == config.proto && !lock(&self.warming).contains_key(&name) {
                return Ok(false);
            }
        }
        if let Some(w) = lock(&self.warming).get(&name)
            && w.listener.config.proto == config.proto
        {
            return Ok(false);
        }
        let sockets = match self.sockets_for(&config, current.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                self.stats.listener_create_failure.inc();
                return Err(e);
            }
        };
        let bound = sockets.first().and_then(|s| s.local_addr().ok());
        let listener = ActiveListener::new(config, server);
        let entry = Arc::new(ListenerEntry {
            listener,
            sockets: Mutex::new(sockets),
            bound,
            added_via_api,
            version: version.to_string(),
            last_updated: SystemTime::now(),
        });
        if current.is_some() {
            self.stats.listener_modified.inc();
        } else {
            self.stats.listener_added.inc();
        }
        self.stats.listener_create_success.inc();
        let providers = entry.listener.rds_providers();
        let secrets = entry.listener.secrets();
        if providers.iter().all(|p| p.is_ready()) && secrets.iter().all(|s| s.is_ready()) {
            lock(&self.warming).remove(&name);
            self.activate(server, entry);
        } else {
            lock(&self.warming).insert(name.clone(), entry.clone());
            self.refresh_gauges();
            let server = server.clone();
            tokio::spawn(async move {
                let all = async {
                    for p in &providers {
                        p.wait_ready().await;
                    }
                    for s in &secrets {
                        s.wait_ready().await;
                    }
                };
                if warm_timeout.is_zero() {
                    all.await;
                } else if tokio::time::timeout(warm_timeout, all).await.is_err() {
                    tracing::warn!(
                        "listener {name}: route configuration or secret did not arrive within initial_fetch_timeout; serving without it"
                    );
                    for p in &providers {
                        p.give_up_waiting();
                    }
                    for s in &secrets {
                        if !s.is_ready() {
                            crate::xds::stats::SubscriptionStats::new(
                                &server.stats,
                                &format!("sds.{}.", s.name),
                            )
                            .init_fetch_timeout()
                            .inc();
                        }
                        s.give_up_waiting();
                    }
                }
                let lm = &server.listeners;
                let still = {
                    let mut w = lock(&lm.warming);
                    match w.get(&name) {
                        Some(e) if Arc::ptr_eq(e, &entry) => w.remove(&name),
                        _ => None,
                    }
                };
                if let Some(e) = still {
                    lm.activate(&server, e);
                }
            });
        }
        Ok(true)
    }

    /// Binds a listener's sockets, or takes over those of the version it replaces when the
    /// address is the same.
    fn sockets_for(
        &self,
        config: &Listener,
        current: Option<&ListenerEntry>,
    ) -> Result<Vec<std::net::TcpListener>, ListenerUpdateError> {
        if !config.bind_to_port {
            return Ok(Vec::new());
        }
        let name = config.name.to_string();
        let bind_err = |addr, err| ListenerUpdateError::Bind {
            name: name.clone(),
            addr,
            err,
        };
        if let Some(c) = current
            && c.listener.config.address == config.address
            && c.listener.config.reuse_port == config.reuse_port
            && !lock(&c.sockets).is_empty()
        {
            return lock(&c.sockets)
                .iter()
                .map(|s| s.try_clone().map_err(|e| bind_err(config.address, e)))
                .collect();
        }
        if config.address.port() != 0 {
            let others = lock(&self.active)
                .values()
                .chain(lock(&self.warming).values())
                .filter(|e| *e.listener.config.name != *config.name)
                .find(|e| e.bound == Some(config.address))
                .map(|e| e.listener.config.name.to_string());
            if let Some(other) = others {
                return Err(ListenerUpdateError::AddressInUse {
                    name,
                    addr: config.address,
                    other,
                });
            }
        }
        let mut addr = config.address;
        let mut out: Vec<std::net::TcpListener> = Vec::new();
        for _ in 0..self.workers.len() {
            let sock = match (out.first(), config.reuse_port) {
                (Some(s), false) => s.try_clone(),
                _ => super::bind(config, addr),
            };
            let s = sock.map_err(|e| bind_err(config.address, e))?;
            // Port 0 binds once; the other workers share the port it got.
            if let Ok(a) = s.local_addr() {
                addr = a;
            }
            out.push(s);
        }
        Ok(out)
    }

    /// Starts a warmed listener on every worker; the version it replaces stops accepting and
    /// drains.
    fn activate(&self, server: &Arc<Server>, entry: Arc<ListenerEntry>) {
        let name = entry.listener.config.name.to_string();
        for (w, s) in self.workers.iter().zip(lock(&entry.sockets).iter()) {
            match s.try_clone() {
                Ok(s) => {
                    let _ = w.send(WorkerCommand::Serve(entry.listener.clone(), s));
                }
                Err(e) => tracing::error!("listener {name}: cannot share its socket: {e}"),
            }
        }
        if let Some(a) = entry.bound {
            tracing::info!("listener {name} serving on {a}");
        }
        let old = lock(&self.active).insert(name, entry);
        self.by_address_stale.store(true, Ordering::Release);
        if let Some(old) = old {
            self.drain_old(server, old.listener.clone());
        }
        self.refresh_gauges();
        self.changed.notify_one();
    }

    fn drain_old(&self, server: &Arc<Server>, old: Arc<ActiveListener>) {
        old.stop_accepting();
        old.drain.start();
        lock(&self.draining).push((std::time::Instant::now(), old));
        self.refresh_gauges();
        // Forget it once the drain time passed; its connections keep what they hold.
        let time = server.drain_time;
        let weak = Arc::downgrade(server);
        tokio::spawn(async move {
            tokio::time::sleep(time).await;
            if let Some(s) = weak.upgrade() {
                let lm = &s.listeners;
                lock(&lm.draining).retain(|(at, _)| at.elapsed() < time);
                lm.refresh_gauges();
            }
        });
    }

    /// Stops a listener accepting and closes its sockets (connections it has continue).
    pub fn stop_listening(&self, l: &Arc<ActiveListener>) {
        l.stop_accepting();
        let entry = lock(&self.active)
            .values()
            .find(|e| Arc::ptr_eq(&e.listener, l))
            .cloned();
        if let Some(e) = entry {
            lock(&e.sockets).clear();
        }
    }

    /// Removes an LDS listener: it stops accepting and drains. Returns whether it existed.
    pub fn remove(&self, server: &Arc<Server>, name: &str) -> bool {
        let warm = lock(&self.warming).remove(name).is_some();
        let active = {
            let mut a = lock(&self.active);
            match a.get(name) {
                Some(e) if e.added_via_api => a.remove(name),
                _ => None,
            }
        };
        if let Some(e) = &active {
            self.by_address_stale.store(true, Ordering::Release);
            self.drain_old(server, e.listener.clone());
        }
        let removed = warm || active.is_some();
        if removed {
            self.stats.listener_removed.inc();
            self.refresh_gauges();
        }
        removed
    }

    fn refresh_gauges(&self) {
        self.stats
            .total_listeners_active
            .set(lock(&self.active).len() as i64);
        self.stats
            .total_listeners_warming
            .set(lock(&self.warming).len() as i64);
        self.stats
            .total_listeners_draining
            .set(lock(&self.draining).len() as i64);
    }
}
