//! Server-wide state shared by listeners, the admin API and shutdown: stats, clusters, the
//! drain signal and the server's own stats.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use tokio::sync::watch;

use crate::bootstrap::cli::DrainStrategy;
use crate::config::ServerConfig;
use crate::config::listener::{DrainType, TrafficDirection};
use crate::listener::ActiveListener;
use crate::listener::manager::{ListenerManager, WorkerCommand};
use crate::stats::statsd::StatsdSink;
use crate::stats::{Gauge, Store};
use crate::upstream::ClusterManager;
use std::time::Duration;

/// Envoy's server.state values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Serving.
    Live = 0,
    /// Draining.
    Draining = 1,
    /// Initialising.
    PreInitializing = 2,
    /// Initialising.
    Initializing = 3,
}

/// Shared server state.
#[derive(Debug)]
pub struct Server {
    /// The config it runs.
    pub config: Arc<ServerConfig>,
    /// Every stat.
    pub stats: Arc<Store>,
    /// The clusters.
    pub clusters: ClusterManager,
    /// RDS route configurations by name.
    pub rds: crate::http::rds::RdsManager,
    /// Bumped whenever applied config may change which named resources are wanted.
    pub xds_interest: watch::Sender<u64>,
    /// How connections are discouraged while draining.
    pub drain_strategy: DrainStrategy,
    /// `--drain-time-s`.
    pub drain_time: Duration,
    /// Every listener.
    pub listeners: ListenerManager,
    /// The workers' command receivers, taken when the workers start.
    pub worker_rx: std::sync::Mutex<Vec<tokio::sync::mpsc::UnboundedReceiver<WorkerCommand>>>,
    /// Set by /healthcheck/fail.
    pub health_failed: AtomicBool,
    /// Start time.
    pub started: Instant,
    /// Start time, as wall-clock time.
    pub started_at: std::time::SystemTime,
    /// The last accepted version of each wildcard type ("cds", "lds").
    xds_versions: std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>,
    /// server.state
    pub state: Arc<Gauge>,
    /// Requested shutdown.
    pub shutdown: watch::Sender<bool>,
    /// Worker count.
    pub concurrency: usize,
    /// Stats sinks flushed every stats_flush_interval.
    pub sinks: Vec<Arc<StatsdSink>>,
}

impl Server {
    /// Builds the server state and its clusters (must run inside a tokio runtime: DNS clusters
    /// start resolving).
    pub fn new(
        config: Arc<ServerConfig>,
        concurrency: usize,
        drain_strategy: DrainStrategy,
        drain_time: Duration,
    ) -> Arc<Self> {
        let mut store = Store::new(config.tags.clone(), config.stats_matcher.clone())
            .with_buckets(config.histogram_buckets.clone())
            .with_deferred_creation(config.deferred_stats);
        let mut sinks = Vec::new();
        for (target, prefix) in &config.statsd_sinks {
            match StatsdSink::new(*target, prefix) {
                Ok(s) => sinks.push(Arc::new(s)),
                Err(e) => tracing::error!("statsd sink to {target}: {e}"),
            }
        }
        if !sinks.is_empty() {
            store = store.with_histogram_sink(Arc::new(sinks.clone()));
        }
        let stats = Arc::new(store);
        let clusters = ClusterManager::new(&config.clusters, &stats);
        let (listeners, worker_rx) = ListenerManager::new(concurrency, &stats);
        let state = stats.gauge("server.state");
        state.set(ServerState::Initializing as i64);
        stats.gauge("server.concurrency").set(concurrency as i64);
        let server = Arc::new(Self {
            config,
            stats,
            clusters,
            rds: Default::default(),
            xds_interest: watch::channel(0).0,
            drain_strategy,
            drain_time,
            listeners,
            worker_rx: std::sync::Mutex::new(worker_rx),
            health_failed: AtomicBool::new(false),
            started: Instant::now(),
            started_at: std::time::SystemTime::now(),
            xds_versions: Default::default(),
            state,
            shutdown: watch::channel(false).0,
            concurrency,
            sinks,
        });
        let weak = Arc::downgrade(&server);
        tokio::spawn(async move {
            // Closes pooled upstream connections past their cluster's idle_timeout.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(s) => s.clusters.close_idle(),
                    None => return,
                }
            }
        });
        server
    }

    /// Server shutdown: every listener stops accepting and discourages its connections.
    pub fn start_drain(&self) {
        self.state.set(ServerState::Draining as i64);
        for l in self.active_listeners() {
            self.listeners.stop_listening(&l);
            l.drain.start();
        }
    }

    /// `/drain_listeners`: drains the listeners it selects (INBOUND ones with `inboundonly`;
    /// never MODIFY_ONLY ones). `graceful` discourages connections for the drain time and then
    /// stops accepting (unless `skip_exit`); otherwise accepting stops at once.
    pub fn drain_listeners(self: &Arc<Self>, inbound_only: bool, graceful: bool, skip_exit: bool) {
        let selected: Vec<_> = self
            .active_listeners()
            .into_iter()
            .filter(|l| l.config.drain_type == DrainType::Default)
            .filter(|l| !inbound_only || l.config.traffic_direction == TrafficDirection::Inbound)
            .collect();
        if !graceful {
            for l in &selected {
                self.listeners.stop_listening(l);
            }
            return;
        }
        for l in &selected {
            l.drain.start();
        }
        if !skip_exit {
            let time = self.drain_time;
            let server = Arc::downgrade(self);
            tokio::spawn(async move {
                tokio::time::sleep(time).await;
                if let Some(server) = server.upgrade() {
                    for l in &selected {
                        server.listeners.stop_listening(l);
                    }
                }
            });
        }
    }

    fn active_listeners(&self) -> Vec<Arc<ActiveListener>> {
        self.listeners
            .active()
            .into_iter()
            .map(|e| e.listener.clone())
            .collect()
    }

    /// Records the accepted version of a wildcard type ("cds", "lds").
    pub fn set_xds_version(&self, ty: &'static str, version: &str) {
        if let Ok(mut v) = self.xds_versions.lock() {
            v.insert(ty, version.to_string());
        }
    }

    /// The accepted version of each wildcard type.
    pub fn xds_versions(&self) -> std::collections::BTreeMap<&'static str, String> {
        self.xds_versions
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Tells xDS streams to recompute the names they subscribe to.
    pub fn bump_xds_interest(&self) {
        self.xds_interest.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Asks the process to drain and exit.
    pub fn request_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Seconds since start.
    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
