//! tcp_proxy configuration.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;

use super::common::timeout_or;
use super::error::{ConfigError, index, join};

/// A converted TcpProxy.
#[derive(Debug)]
pub struct TcpProxyConfig {
    /// `tcp.<stat_prefix>.` stats.
    pub stat_prefix: String,
    /// Clusters with weights (a single cluster has weight 1).
    pub clusters: Vec<(Arc<str>, u64)>,
    /// Sum of weights.
    pub total_weight: u64,
    /// Close after this long without bytes either way (default 1h; None disables).
    pub idle_timeout: Option<Duration>,
    /// Connect attempts before giving up (default 1).
    pub max_connect_attempts: u32,
    /// Access logs written as each connection ends.
    pub access_logs: Vec<Arc<crate::access_log::AccessLogger>>,
    /// Close the downstream connection after this long.
    pub max_downstream_connection_duration: Option<Duration>,
}

impl TcpProxyConfig {
    /// Converts a TcpProxy; `path` points at its typed_config.
    pub fn from_proto(t: &tcp::TcpProxy, path: &str) -> Result<Self, ConfigError> {
        if t.stat_prefix.is_empty() {
            return Err(ConfigError::new(
                join(path, "stat_prefix"),
                "must not be empty",
            ));
        }
        use tcp::tcp_proxy::ClusterSpecifier as C;
        let clusters: Vec<(Arc<str>, u64)> = match &t.cluster_specifier {
            Some(C::Cluster(c)) if !c.is_empty() => vec![(Arc::from(c.as_str()), 1)],
            Some(C::Cluster(_)) => {
                return Err(ConfigError::new(join(path, "cluster"), "must not be empty"));
            }
            Some(C::WeightedClusters(w)) => {
                let wp = join(path, "weighted_clusters");
                let mut v = Vec::new();
                for (i, c) in w.clusters.iter().enumerate() {
                    if c.name.is_empty() {
                        return Err(ConfigError::new(
                            join(&index(&wp, "clusters", i), "name"),
                            "must not be empty",
                        ));
                    }
                    if c.metadata_match.is_some() {
                        return Err(ConfigError::unsupported(join(
                            &index(&wp, "clusters", i),
                            "metadata_match",
                        )));
                    }
                    v.push((Arc::from(c.name.as_str()), c.weight as u64));
                }
                if v.is_empty() {
                    return Err(ConfigError::new(
                        join(&wp, "clusters"),
                        "at least one cluster is required",
                    ));
                }
                v
            }
            None => {
                return Err(ConfigError::new(
                    path,
                    "cluster or weighted_clusters is required",
                ));
            }
        };
        let total_weight = clusters.iter().map(|(_, w)| w).sum();
        if total_weight == 0 {
            return Err(ConfigError::new(
                join(path, "weighted_clusters"),
                "the weights must add up to more than 0",
            ));
        }
        let access_logs = crate::access_log::from_protos(&t.access_log, path, "access_log")?;
        let attempts = t
            .max_connect_attempts
            .as_ref()
            .map(|v| v.value)
            .unwrap_or(1);
        if attempts == 0 {
            return Err(ConfigError::new(
                join(path, "max_connect_attempts"),
                "must be at least 1",
            ));
        }
        Ok(Self {
            stat_prefix: t.stat_prefix.clone(),
            clusters,
            total_weight,
            idle_timeout: timeout_or(
                t.idle_timeout.as_ref(),
                Some(Duration::from_secs(3600)),
                &join(path, "idle_timeout"),
            )?,
            max_connect_attempts: attempts,
            access_logs,
            max_downstream_connection_duration: timeout_or(
                t.max_downstream_connection_duration.as_ref(),
                None,
                &join(path, "max_downstream_connection_duration"),
            )?,
        })
    }

    /// Picks a cluster by weight with a uniform random `r` in [0, total_weight).
    pub fn pick(&self, r: u64) -> &Arc<str> {
        let mut acc = 0;
        for (c, w) in &self.clusters {
            acc += w;
            if r < acc {
                return c;
            }
        }
        &self.clusters[self.clusters.len() - 1].0
    }
}
