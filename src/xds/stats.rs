//! Envoy's subscription stats (`update_attempt`, `update_success`, `update_rejected`,
//! `update_failure`, `update_empty`, `init_fetch_timeout`, `version`, `update_time`) under a
//! prefix: `cluster_manager.cds.`, `listener_manager.lds.`, `cluster.<name>.` (EDS),
//! `http.<stat_prefix>.rds.<name>.` (RDS), and `control_plane.connected_state`.

use std::sync::Arc;

use crate::stats::{Counter, Gauge, Histogram, Store};

/// One subscription's stats.
#[derive(Debug, Clone)]
pub struct SubscriptionStats {
    /// Responses received (and stream attempts).
    pub update_attempt: Arc<Counter>,
    /// Responses accepted.
    pub update_success: Arc<Counter>,
    /// Responses rejected.
    pub update_rejected: Arc<Counter>,
    /// Stream failures.
    pub update_failure: Arc<Counter>,
    /// Responses with no resources.
    pub update_empty: Arc<Counter>,
    /// Initial fetches that timed out.
    pub init_fetch_timeout: Arc<Counter>,
    /// xxHash64 of the accepted version_info.
    pub version: Arc<Gauge>,
    /// When the last update was accepted (ms since the epoch).
    pub update_time: Arc<Gauge>,
    /// Time spent applying each update (ms).
    pub update_duration: Arc<Histogram>,
}

impl SubscriptionStats {
    /// Declares the stats under `prefix` (ending in a dot).
    pub fn new(store: &Store, prefix: &str) -> Self {
        let c = |n: &str| store.counter(&format!("{prefix}{n}"));
        let g = |n: &str| store.gauge(&format!("{prefix}{n}"));
        Self {
            update_attempt: c("update_attempt"),
            update_success: c("update_success"),
            update_rejected: c("update_rejected"),
            update_failure: c("update_failure"),
            update_empty: c("update_empty"),
            init_fetch_timeout: c("init_fetch_timeout"),
            version: g("version"),
            update_time: g("update_time"),
            update_duration: store.histogram(&format!("{prefix}update_duration")),
        }
    }

    /// Records an accepted update of `version`.
    pub fn accepted(&self, version: &str) {
        self.update_success.inc();
        self.version.set_u64(version_hash(version));
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.update_time.set(ms);
    }
}

/// Envoy's `version` gauge value: xxHash64 (seed 0) of the version string.
pub fn version_hash(version: &str) -> u64 {
    xxhash_rust::xxh64::xxh64(version.as_bytes(), 0)
}

/// xxHash64 (seed 0) of bytes.
pub fn version_hash_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(bytes, 0)
}
