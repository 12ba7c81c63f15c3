//! The hosts of an ORIGINAL_DST cluster: one per destination, made when a connection or
//! request first goes there (its original destination, or the override header), and purged
//! after a cleanup_interval in which nothing chose them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::connect::Target;
use super::{ClusterRuntime, Host, LbContext};
use crate::config::original_dst::OriginalDstConfig;

#[derive(Debug)]
struct Entry {
    host: Arc<Host>,
    /// Chosen since the last cleanup.
    used: AtomicBool,
}

/// The hosts an ORIGINAL_DST cluster made, by address.
#[derive(Debug)]
pub struct OriginalDstHosts {
    config: OriginalDstConfig,
    hosts: RwLock<HashMap<SocketAddr, Entry>>,
    /// When the next cleanup is due, in ms since `epoch`.
    next_cleanup_ms: AtomicU64,
    epoch: Instant,
}

impl OriginalDstHosts {
    /// An empty host map.
    pub fn new(config: OriginalDstConfig) -> Self {
        OriginalDstHosts {
            next_cleanup_ms: AtomicU64::new(config.cleanup_interval.as_millis() as u64),
            config,
            hosts: RwLock::default(),
            epoch: Instant::now(),
        }
    }

    /// Where a connection or request goes: the override header's `ip:port` when enabled and
    /// valid, else the connection's restored original destination; the port replaced by
    /// upstream_port_override. None without either.
    pub fn destination(&self, ctx: &LbContext<'_>) -> Option<SocketAddr> {
        let from_header = self.config.http_header.as_ref().and_then(|name| {
            ctx.headers?
                .get(name)?
                .to_str()
                .ok()?
                .trim()
                .parse::<SocketAddr>()
                .ok()
        });
        let dst =
            from_header.or_else(|| ctx.downstream.filter(|c| c.local_restored).map(|c| c.local))?;
        Some(match self.config.port_override {
            Some(p) => SocketAddr::new(dst.ip(), p),
            None => dst,
        })
    }

    /// The host for the destination of `ctx`, made on first use.
    pub fn choose(&self, cluster: &ClusterRuntime, ctx: &LbContext<'_>) -> Option<Arc<Host>> {
        let dst = self.destination(ctx)?;
        self.cleanup_if_due(cluster);
        if let Some(e) = read(&self.hosts).get(&dst) {
            e.used.store(true, Ordering::Relaxed);
            return Some(e.host.clone());
        }
        let mut hosts = write(&self.hosts);
        let e = hosts.entry(dst).or_insert_with(|| Entry {
            host: Arc::new(Host {
                target: Target::Socket(dst),
                hostname: Box::default(),
                weight: 1,
                healthy: true,
                active_requests: AtomicU64::new(0),
                tls: cluster.config.tls_for(None),
                pool: std::sync::OnceLock::new(),
            }),
            used: AtomicBool::new(true),
        });
        e.used.store(true, Ordering::Relaxed);
        let host = e.host.clone();
        set_membership(cluster, hosts.len());
        Some(host)
    }

    /// Every host it holds now.
    pub fn hosts(&self) -> Vec<Arc<Host>> {
        read(&self.hosts).values().map(|e| e.host.clone()).collect()
    }

    /// Purges the hosts nothing chose during the last interval and nothing holds.
    fn cleanup_if_due(&self, cluster: &ClusterRuntime) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let due = self.next_cleanup_ms.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        let next = now + self.config.cleanup_interval.as_millis() as u64;
        if self
            .next_cleanup_ms
            .compare_exchange(due, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let mut hosts = write(&self.hosts);
        hosts
            .retain(|_, e| e.used.swap(false, Ordering::Relaxed) || Arc::strong_count(&e.host) > 1);
        set_membership(cluster, hosts.len());
    }
}

fn set_membership(cluster: &ClusterRuntime, n: usize) {
    cluster.stats.gauges.membership_total().set(n as i64);
    cluster.stats.gauges.membership_healthy().set(n as i64);
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::connection_info::ConnectionInfo;
    use std::time::Duration;

    fn hosts(header: bool, port: Option<u16>) -> OriginalDstHosts {
        OriginalDstHosts::new(OriginalDstConfig {
            http_header: header.then(|| HeaderName::from_static("x-envoy-original-dst-host")),
            port_override: port,
            cleanup_interval: Duration::from_secs(5),
        })
    }

    use http::HeaderName;

    fn ctx<'a>(c: &'a ConnectionInfo, h: &'a http::HeaderMap) -> LbContext<'a> {
        LbContext {
            downstream: Some(c),
            headers: Some(h),
        }
    }

    #[test]
    fn destination_comes_from_header_then_restored_address() {
        let mut conn = ConnectionInfo::accepted(
            "127.0.0.1:15001".parse().unwrap(),
            "10.0.0.1:5000".parse().unwrap(),
        );
        let mut headers = http::HeaderMap::new();
        headers.insert("x-envoy-original-dst-host", "10.1.1.1:80".parse().unwrap());
        assert_eq!(hosts(false, None).destination(&ctx(&conn, &headers)), None);
        assert_eq!(
            hosts(true, None).destination(&ctx(&conn, &headers)),
            Some("10.1.1.1:80".parse().unwrap())
        );
        conn.restore_local("10.2.2.2:8080".parse().unwrap());
        assert_eq!(
            hosts(false, None).destination(&ctx(&conn, &headers)),
            Some("10.2.2.2:8080".parse().unwrap())
        );
        assert_eq!(
            hosts(false, Some(9)).destination(&ctx(&conn, &headers)),
            Some("10.2.2.2:9".parse().unwrap())
        );
        headers.insert(
            "x-envoy-original-dst-host",
            "not an address".parse().unwrap(),
        );
        assert_eq!(
            hosts(true, None).destination(&ctx(&conn, &headers)),
            Some("10.2.2.2:8080".parse().unwrap()),
            "an invalid header falls back to the original destination"
        );
    }

    #[test]
    fn hosts_nothing_chose_for_an_interval_are_purged() {
        let proto = envoy_types::pb::envoy::config::cluster::v3::Cluster {
            name: "pt".into(),
            cluster_discovery_type: Some(
                envoy_types::pb::envoy::config::cluster::v3::cluster::ClusterDiscoveryType::Type(
                    4, // ORIGINAL_DST
                ),
            ),
            lb_policy: 6, // CLUSTER_PROVIDED
            cleanup_interval: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 0,
                nanos: 50_000_000,
            }),
            ..Default::default()
        };
        let config = Arc::new(crate::config::cluster::Cluster::from_proto(&proto, "c").unwrap());
        let store = Arc::new(crate::stats::Store::new(
            crate::stats::TagProducer::default_envoy(),
            Default::default(),
        ));
        let cluster = ClusterRuntime::new(config, &store, false, "");
        let mut headers = http::HeaderMap::new();
        let conn = ConnectionInfo::accepted(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let pick = |h: &http::HeaderMap| {
            cluster.choose_host(&LbContext {
                downstream: Some(&conn),
                headers: Some(h),
            })
        };
        let od = cluster.original_dst.as_ref().unwrap();
        // Without use_http_header the header is not read, and the address is not restored.
        headers.insert("x-envoy-original-dst-host", "10.0.0.1:80".parse().unwrap());
        assert!(pick(&headers).is_none());
        let mut conn_a = conn;
        conn_a.restore_local("10.0.0.1:80".parse().unwrap());
        let mut conn_b = conn;
        conn_b.restore_local("10.0.0.2:80".parse().unwrap());
        let via = |c: &ConnectionInfo| {
            cluster.choose_host(&LbContext {
                downstream: Some(c),
                headers: None,
            })
        };
        drop(via(&conn_a).unwrap());
        drop(via(&conn_b).unwrap());
        assert_eq!(od.hosts().len(), 2);
        assert_eq!(cluster.stats.gauges.membership_total().value(), 2);
        // Within the next interval only A is chosen; at the cleanup after it, B is purged.
        std::thread::sleep(Duration::from_millis(60));
        drop(via(&conn_a).unwrap()); // runs the first cleanup: both were used before it
        assert_eq!(od.hosts().len(), 2);
        std::thread::sleep(Duration::from_millis(60));
        drop(via(&conn_a).unwrap());
        assert_eq!(od.hosts().len(), 1);
        assert_eq!(cluster.stats.gauges.membership_total().value(), 1);
        // A host something still holds is kept.
        let held = via(&conn_b).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        drop(via(&conn_a).unwrap());
        std::thread::sleep(Duration::from_millis(60));
        drop(via(&conn_a).unwrap());
        assert_eq!(od.hosts().len(), 2, "{held}");
    }
}
