//! What an ORIGINAL_DST cluster reads from its config: where the destination may come from
//! besides the connection's original destination (`original_dst_lb_config`), and how often
//! unused hosts are purged (`cleanup_interval`).

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use http::HeaderName;

use super::error::{ConfigError, join};

/// Envoy's header for the destination override.
pub const DEFAULT_HEADER: &str = "x-envoy-original-dst-host";

/// An ORIGINAL_DST cluster's own settings.
#[derive(Debug, Clone)]
pub struct OriginalDstConfig {
    /// The request header whose `ip:port` overrides the original destination
    /// (`use_http_header`; `http_header_name`, default `x-envoy-original-dst-host`).
    pub http_header: Option<HeaderName>,
    /// Replaces the destination's port (`upstream_port_override`).
    pub port_override: Option<u16>,
    /// Hosts not chosen during one interval are purged (`cleanup_interval`, default 5s).
    pub cleanup_interval: Duration,
}

impl OriginalDstConfig {
    /// Converts an ORIGINAL_DST cluster's settings.
    pub fn from_proto(c: &cluster::Cluster, path: &str) -> Result<Self, ConfigError> {
        let mut out = OriginalDstConfig {
            http_header: None,
            port_override: None,
            cleanup_interval: match &c.cleanup_interval {
                Some(d) => super::common::duration(d, &join(path, "cleanup_interval"))?,
                None => Duration::from_secs(5),
            },
        };
        if out.cleanup_interval.is_zero() {
            return Err(ConfigError::new(
                join(path, "cleanup_interval"),
                "must be greater than 0",
            ));
        }
        let Some(cluster::cluster::LbConfig::OriginalDstLbConfig(o)) = &c.lb_config else {
            return Ok(out);
        };
        let p = join(path, "original_dst_lb_config");
        if o.metadata_key.is_some() {
            return Err(ConfigError::new(
                join(&p, "metadata_key"),
                "a destination from dynamic metadata is not implemented yet",
            ));
        }
        if o.use_http_header {
            let name = if o.http_header_name.is_empty() {
                DEFAULT_HEADER
            } else {
                o.http_header_name.as_str()
            };
            out.http_header = Some(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ConfigError::new(
                    join(&p, "http_header_name"),
                    format!("{name:?} is not a header name"),
                )
            })?);
        }
        if let Some(v) = &o.upstream_port_override {
            out.port_override = Some(u16::try_from(v.value).ok().filter(|p| *p > 0).ok_or_else(
                || {
                    ConfigError::new(
                        join(&p, "upstream_port_override"),
                        format!("{} is not a port", v.value),
                    )
                },
            )?);
        }
        Ok(out)
    }
}
