//! HTTP connection manager stats (`http.<stat_prefix>.*`).

use std::sync::Arc;

use crate::stats::{Counter, Gauge, Histogram, Store};

/// Stats of one HCM config.
#[derive(Debug)]
pub struct HcmStats {
    /// downstream_cx_total
    pub downstream_cx_total: Arc<Counter>,
    /// downstream_cx_active
    pub downstream_cx_active: Arc<Gauge>,
    /// downstream_cx_http1_total
    pub downstream_cx_http1_total: Arc<Counter>,
    /// downstream_cx_http2_total
    pub downstream_cx_http2_total: Arc<Counter>,
    /// downstream_cx_upgrades_total
    pub downstream_cx_upgrades_total: Arc<Counter>,
    /// downstream_cx_upgrades_active
    pub downstream_cx_upgrades_active: Arc<Gauge>,
    /// downstream_cx_protocol_error
    pub downstream_cx_protocol_error: Arc<Counter>,
    /// downstream_cx_idle_timeout
    pub downstream_cx_idle_timeout: Arc<Counter>,
    /// downstream_cx_drain_close
    pub downstream_cx_drain_close: Arc<Counter>,
    /// downstream_rq_total
    pub downstream_rq_total: Arc<Counter>,
    /// downstream_rq_http1_total
    pub downstream_rq_http1_total: Arc<Counter>,
    /// downstream_rq_http2_total
    pub downstream_rq_http2_total: Arc<Counter>,
    /// downstream_rq_active
    pub downstream_rq_active: Arc<Gauge>,
    /// downstream_rq_completed
    pub downstream_rq_completed: Arc<Counter>,
    /// downstream_rq_time
    pub downstream_rq_time: Arc<Histogram>,
    /// downstream_rq_timeout
    pub downstream_rq_timeout: Arc<Counter>,
    /// downstream_rq_idle_timeout
    pub downstream_rq_idle_timeout: Arc<Counter>,
    /// no_route
    pub no_route: Arc<Counter>,
    /// no_cluster
    pub no_cluster: Arc<Counter>,
    /// rq_direct_response
    pub rq_direct_response: Arc<Counter>,
    /// rq_redirect
    pub rq_redirect: Arc<Counter>,
    /// requests_rejected_with_underscores_in_headers
    pub requests_rejected_with_underscores_in_headers: Arc<Counter>,
    /// dropped_headers_with_underscores
    pub dropped_headers_with_underscores: Arc<Counter>,
    /// downstream_rq_1xx..5xx
    pub by_class: [Arc<Counter>; 5],
}

impl HcmStats {
    /// Declares the stats of HCM `stat_prefix`.
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let p = format!("http.{stat_prefix}.");
        let c = |n: &str| store.counter(&format!("{p}{n}"));
        let g = |n: &str| store.gauge(&format!("{p}{n}"));
        Self {
            downstream_cx_total: c("downstream_cx_total"),
            downstream_cx_active: g("downstream_cx_active"),
            downstream_cx_http1_total: c("downstream_cx_http1_total"),
            downstream_cx_http2_total: c("downstream_cx_http2_total"),
            downstream_cx_upgrades_total: c("downstream_cx_upgrades_total"),
            downstream_cx_upgrades_active: g("downstream_cx_upgrades_active"),
            downstream_cx_protocol_error: c("downstream_cx_protocol_error"),
            downstream_cx_drain_close: c("downstream_cx_drain_close"),
            downstream_cx_idle_timeout: c("downstream_cx_idle_timeout"),
            downstream_rq_total: c("downstream_rq_total"),
            downstream_rq_http1_total: c("downstream_rq_http1_total"),
            downstream_rq_http2_total: c("downstream_rq_http2_total"),
            downstream_rq_active: g("downstream_rq_active"),
            downstream_rq_completed: c("downstream_rq_completed"),
            downstream_rq_time: store.histogram(&format!("{p}downstream_rq_time")),
            downstream_rq_timeout: c("downstream_rq_timeout"),
            downstream_rq_idle_timeout: c("downstream_rq_idle_timeout"),
            no_route: c("no_route"),
            no_cluster: c("no_cluster"),
            rq_direct_response: c("rq_direct_response"),
            rq_redirect: c("rq_redirect"),
            requests_rejected_with_underscores_in_headers: c(
                "requests_rejected_with_underscores_in_headers",
            ),
            dropped_headers_with_underscores: c("dropped_headers_with_underscores"),
            by_class: [
                c("downstream_rq_1xx"),
                c("downstream_rq_2xx"),
                c("downstream_rq_3xx"),
                c("downstream_rq_4xx"),
                c("downstream_rq_5xx"),
            ],
        }
    }

    /// Counts a response's status class.
    pub fn response(&self, status: u16) {
        if let Some(c) = self.by_class.get((status / 100).saturating_sub(1) as usize) {
            c.inc();
        }
    }
}
