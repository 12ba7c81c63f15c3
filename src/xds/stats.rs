//! Envoy's subscription stats (`update_attempt`, `update_success`, `update_rejected`,
//! `update_failure`, `update_empty`, `init_fetch_timeout`, `version`, `update_time`) under a
//! prefix: `cluster_manager.cds.`, `listener_manager.lds.`, `cluster.<name>.` (EDS),
//! `http.<stat_prefix>.rds.<name>.` (RDS), and `control_plane.connected_state`.

use std::sync::Arc;

use crate::stats::{Histogram, Store};

crate::stat_block! {
    /// One subscription's counters and gauges, in one block.
    pub struct SubscriptionCounters {
        counters {
            /// Responses received (and stream attempts).
            update_attempt: "update_attempt",
            /// Responses accepted.
            update_success: "update_success",
            /// Responses rejected.
            update_rejected: "update_rejected",
            /// Stream failures.
            update_failure: "update_failure",
            /// Responses with no resources.
            update_empty: "update_empty",
            /// Initial fetches that timed out.
            init_fetch_timeout: "init_fetch_timeout",
        }
        gauges {
            /// xxHash64 of the accepted version_info.
            version: "version",
            /// When the last update was accepted (ms since the epoch).
            update_time: "update_time",
        }
    }
}

/// One subscription's stats: its counters and gauges (reached through `Deref`) and the
/// `update_duration` histogram.
#[derive(Debug, Clone)]
pub struct SubscriptionStats {
    counters: SubscriptionCounters,
    /// Time spent applying each update (ms).
    pub update_duration: Arc<Histogram>,
}

impl std::ops::Deref for SubscriptionStats {
    type Target = SubscriptionCounters;
    fn deref(&self) -> &SubscriptionCounters {
        &self.counters
    }
}

impl SubscriptionStats {
    /// Declares the stats under `prefix` (ending in a dot).
    pub fn new(store: &Store, prefix: &str) -> Self {
        Self {
            counters: SubscriptionCounters::new(store, prefix),
            update_duration: store.histogram(&format!("{prefix}update_duration")),
        }
    }

    /// Records an accepted update of `version`.
    pub fn accepted(&self, version: &str) {
        self.update_success().inc();
        self.version().set_u64(version_hash(version));
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.update_time().set(ms);
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
