//! Per-cluster stats with Envoy's names (`cluster.<name>.*`).

use std::sync::Arc;

use crate::stats::{Counter, Histogram, Store};

/// The `upstream_rq_<code>` and `upstream_rq_<class>xx` counters of one status code.
type CodeCounters = (u16, Arc<Counter>, Arc<Counter>);

crate::stat_block! {
    /// The traffic counters and gauges of one cluster (`upstream_cx_*`, `upstream_rq_*`).
    pub struct TrafficCounters {
        counters {
            /// upstream_cx_total
            upstream_cx_total: "upstream_cx_total",
            /// upstream_cx_http1_total
            upstream_cx_http1_total: "upstream_cx_http1_total",
            /// upstream_cx_http2_total
            upstream_cx_http2_total: "upstream_cx_http2_total",
            /// upstream_cx_connect_fail
            upstream_cx_connect_fail: "upstream_cx_connect_fail",
            /// upstream_cx_connect_timeout
            upstream_cx_connect_timeout: "upstream_cx_connect_timeout",
            /// upstream_cx_overflow
            upstream_cx_overflow: "upstream_cx_overflow",
            /// upstream_cx_destroy
            upstream_cx_destroy: "upstream_cx_destroy",
            /// upstream_cx_rx_bytes_total
            upstream_cx_rx_bytes_total: "upstream_cx_rx_bytes_total",
            /// upstream_cx_tx_bytes_total
            upstream_cx_tx_bytes_total: "upstream_cx_tx_bytes_total",
            /// upstream_cx_idle_timeout
            upstream_cx_idle_timeout: "upstream_cx_idle_timeout",
            /// upstream_cx_none_healthy
            upstream_cx_none_healthy: "upstream_cx_none_healthy",
            /// upstream_rq_total
            upstream_rq_total: "upstream_rq_total",
            /// upstream_rq_pending_total
            upstream_rq_pending_total: "upstream_rq_pending_total",
            /// upstream_rq_pending_overflow
            upstream_rq_pending_overflow: "upstream_rq_pending_overflow",
            /// upstream_rq_pending_failure_eject
            upstream_rq_pending_failure_eject: "upstream_rq_pending_failure_eject",
            /// upstream_rq_timeout
            upstream_rq_timeout: "upstream_rq_timeout",
            /// upstream_rq_completed
            upstream_rq_completed: "upstream_rq_completed",
            /// upstream_rq_rx_reset
            upstream_rq_rx_reset: "upstream_rq_rx_reset",
            /// upstream_rq_tx_reset
            upstream_rq_tx_reset: "upstream_rq_tx_reset",
        }
        gauges {
            /// upstream_cx_active
            upstream_cx_active: "upstream_cx_active",
            /// upstream_rq_active
            upstream_rq_active: "upstream_rq_active",
            /// upstream_rq_pending_active
            upstream_rq_pending_active: "upstream_rq_pending_active",
        }
    }
}

/// The traffic stats of one cluster: its counters and gauges (reached through `Deref`) and
/// the `upstream_rq_time` histogram. With `deferred_stat_options.enable_deferred_creation_stats`
/// they are created when the cluster first sees traffic, as Envoy defers its cluster traffic
/// stats, so the clusters a sidecar never calls cost no stats.
#[derive(Debug)]
pub struct TrafficStats {
    counters: TrafficCounters,
    /// upstream_rq_time
    pub upstream_rq_time: Arc<Histogram>,
}

impl std::ops::Deref for TrafficStats {
    type Target = TrafficCounters;
    fn deref(&self) -> &TrafficCounters {
        &self.counters
    }
}

impl TrafficStats {
    fn new(store: &Store, p: &str) -> Self {
        Self {
            counters: TrafficCounters::new(store, p),
            upstream_rq_time: store.histogram(&format!("{p}upstream_rq_time")),
        }
    }
}

crate::stat_block! {
    /// The gauges every cluster has from its creation: membership and circuit breakers.
    pub struct ClusterGauges {
        counters {}
        gauges {
            /// membership_total
            membership_total: "membership_total",
            /// membership_healthy
            membership_healthy: "membership_healthy",
            /// circuit_breakers.default.cx_open
            cb_cx_open: "circuit_breakers.default.cx_open",
            /// circuit_breakers.default.rq_pending_open
            cb_rq_pending_open: "circuit_breakers.default.rq_pending_open",
            /// circuit_breakers.default.rq_open
            cb_rq_open: "circuit_breakers.default.rq_open",
        }
    }
}

/// The stats of one cluster: its traffic stats (reached through `Deref`, created at once or
/// on first use), and the membership and circuit-breaker gauges, always created.
#[derive(Debug)]
pub struct ClusterStats {
    /// Boxed: a cluster that never sees traffic holds only the pointer's room.
    traffic: std::sync::OnceLock<Box<TrafficStats>>,
    /// Membership and circuit-breaker gauges.
    pub gauges: ClusterGauges,
    prefix: Box<str>,
    store: Arc<Store>,
    /// upstream_rq_<code> and upstream_rq_<class>xx counters seen so far (few distinct codes).
    codes: std::sync::RwLock<Vec<CodeCounters>>,
    /// `ssl.*`, for clusters that originate TLS.
    pub ssl: Option<Box<crate::tls::server::TlsStats>>,
}

impl std::ops::Deref for ClusterStats {
    type Target = TrafficStats;

    fn deref(&self) -> &TrafficStats {
        self.traffic
            .get_or_init(|| Box::new(TrafficStats::new(&self.store, &self.prefix)))
    }
}

impl ClusterStats {
    /// Counts an upstream connect's TLS outcome under `ssl.*` (clusters that originate TLS).
    pub fn count_tls(
        &self,
        result: &Result<super::connect::UpstreamStream, super::connect::ConnectError>,
    ) {
        let Some(ssl) = &self.ssl else {
            return;
        };
        match result {
            Ok(super::connect::UpstreamStream::Tls(s)) => {
                let conn = s.get_ref().1;
                crate::tls::server::count_handshake(ssl);
                crate::tls::server::count_session(
                    ssl,
                    conn.protocol_version(),
                    conn.negotiated_cipher_suite(),
                );
            }
            Err(super::connect::ConnectError::Tls(e)) => crate::tls::server::count_failure(ssl, e),
            Err(super::connect::ConnectError::SecretsNotReady) => ssl.secrets_not_ready(false),
            _ => {}
        }
    }

    /// Declares the stats of cluster `stat_name`; `deferred`: its traffic stats wait for
    /// their first use.
    pub fn new(store: &Arc<Store>, stat_name: &str, tls: bool, deferred: bool) -> Self {
        let p = format!("cluster.{stat_name}.");
        let traffic = std::sync::OnceLock::new();
        if !deferred {
            let _ = traffic.set(Box::new(TrafficStats::new(store, &p)));
        }
        Self {
            traffic,
            ssl: tls.then(|| Box::new(crate::tls::server::TlsStats::new(store, &p))),
            gauges: ClusterGauges::new(store, &p),
            prefix: p.into(),
            store: store.clone(),
            codes: Default::default(),
        }
    }

    /// Counts a response code: upstream_rq_<code> and upstream_rq_<class>xx.
    pub fn response_code(&self, code: u16) {
        if let Ok(codes) = self.codes.read()
            && let Some((_, exact, class)) = codes.iter().find(|(c, _, _)| *c == code)
        {
            exact.inc();
            class.inc();
            return;
        }
        let exact = self
            .store
            .counter(&format!("{}upstream_rq_{code}", self.prefix));
        let class = self
            .store
            .counter(&format!("{}upstream_rq_{}xx", self.prefix, code / 100));
        exact.inc();
        class.inc();
        if let Ok(mut codes) = self.codes.write()
            && !codes.iter().any(|(c, _, _)| *c == code)
        {
            codes.push((code, exact, class));
        }
    }
}
