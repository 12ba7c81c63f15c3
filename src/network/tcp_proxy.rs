//! tcp_proxy: connects upstream as soon as a connection is accepted (so server-first protocols
//! work) and copies bytes both ways until either side closes or the idle timeout passes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crate::listener::stream::DownstreamStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::access_log::StreamInfo;
use crate::config::tcp_proxy::TcpProxyConfig;
use crate::http::local_reply::ResponseFlag;
use crate::network::connection_info::ConnectionInfo;
use crate::server::Server;
use crate::stats::Counter;
use crate::upstream::connect::connect;

/// A tcp_proxy config with its stats.
#[derive(Debug)]
pub struct TcpProxy {
    config: Arc<TcpProxyConfig>,
    downstream_cx_total: Arc<Counter>,
    downstream_cx_no_route: Arc<Counter>,
    downstream_cx_tx_bytes_total: Arc<Counter>,
    downstream_cx_rx_bytes_total: Arc<Counter>,
    idle_timeout: Arc<Counter>,
}

impl TcpProxy {
    /// Declares `tcp.<stat_prefix>.*` stats.
    pub fn new(config: Arc<TcpProxyConfig>, server: &Server) -> Self {
        let p = format!("tcp.{}.", config.stat_prefix);
        let s = &server.stats;
        Self {
            downstream_cx_total: s.counter(&format!("{p}downstream_cx_total")),
            downstream_cx_no_route: s.counter(&format!("{p}downstream_cx_no_route")),
            downstream_cx_tx_bytes_total: s.counter(&format!("{p}downstream_cx_tx_bytes_total")),
            downstream_cx_rx_bytes_total: s.counter(&format!("{p}downstream_cx_rx_bytes_total")),
            idle_timeout: s.counter(&format!("{p}idle_timeout")),
            config,
        }
    }

    /// Proxies one connection.
    pub async fn serve(
        self: Arc<Self>,
        server: Arc<Server>,
        mut down: DownstreamStream,
        conn: ConnectionInfo,
    ) {
        self.downstream_cx_total.inc();
        let mut info = StreamInfo {
            start: Some(SystemTime::now()),
            downstream_local_address: Some(conn.local),
            downstream_remote_address: Some(conn.remote),
            downstream_tls: down.tls_log_facts(),
            ..Default::default()
        };
        let started = Instant::now();
        self.proxy(&server, &mut down, &conn, &mut info).await;
        info.duration = started.elapsed();
        for l in &self.config.access_logs {
            l.log(&info);
        }
    }

    async fn proxy(
        &self,
        server: &Server,
        down: &mut DownstreamStream,
        conn: &ConnectionInfo,
        info: &mut StreamInfo,
    ) {
        let name = self.config.pick(fastrand::u64(..self.config.total_weight));
        info.upstream_cluster = Some(name.to_string());
        let Some(cluster) = server.clusters.get(name) else {
            self.downstream_cx_no_route.inc();
            info.response_flags.push(ResponseFlag::NoClusterFound);
            return;
        };
        let stats = &cluster.stats;
        let mut upstream = None;
        for _ in 0..self.config.max_connect_attempts {
            let ctx = crate::upstream::LbContext {
                downstream: Some(conn),
                headers: None,
            };
            let Some(host) = cluster.choose_host(&ctx) else {
                stats.upstream_cx_none_healthy().inc();
                info.response_flags.push(ResponseFlag::NoHealthyUpstream);
                break;
            };
            info.upstream_host = Some(host.to_string());
            if cluster.limits.open.load(Ordering::Relaxed)
                >= cluster.config.thresholds.max_connections
            {
                stats.upstream_cx_overflow().inc();
                info.response_flags.push(ResponseFlag::UpstreamOverflow);
                break;
            }
            let result = connect(&host.target, &cluster.config, host.tls.as_deref(), None).await;
            stats.count_tls(&result);
            match result {
                Ok(s) => {
                    stats.upstream_cx_total().inc();
                    stats.upstream_cx_active().inc();
                    cluster.limits.open.fetch_add(1, Ordering::Relaxed);
                    let facts = s.facts();
                    info.upstream_local_address = facts.local;
                    info.upstream_peer_uri_san = facts.peer_uri_san;
                    upstream = Some(s);
                    break;
                }
                Err(e) => {
                    stats.upstream_cx_connect_fail().inc();
                    if matches!(e, crate::upstream::connect::ConnectError::Timeout) {
                        stats.upstream_cx_connect_timeout().inc();
                    }
                }
            }
        }
        let Some(mut up) = upstream else {
            if info.response_flags.is_empty() {
                info.response_flags
                    .push(ResponseFlag::UpstreamConnectionFailure);
            }
            // Close at once so a captured client sees the failure.
            let _ = down.shutdown().await;
            return;
        };
        let (rx, tx) = copy_with_idle(
            down,
            &mut up,
            self.config.idle_timeout,
            self.config.max_downstream_connection_duration,
            &self.idle_timeout,
        )
        .await;
        info.bytes_received = rx;
        info.bytes_sent = tx;
        self.downstream_cx_rx_bytes_total.add(rx);
        self.downstream_cx_tx_bytes_total.add(tx);
        stats.upstream_cx_tx_bytes_total().add(rx);
        stats.upstream_cx_rx_bytes_total().add(tx);
        stats.upstream_cx_active().dec();
        stats.upstream_cx_destroy().inc();
        cluster.limits.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Copies both ways; returns (bytes from downstream, bytes to downstream).
async fn copy_with_idle<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Option<Duration>,
    max: Option<Duration>,
    idle_stat: &Counter,
) -> (u64, u64)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let mut buf_a = vec![0u8; 16 * 1024];
    let mut buf_b = vec![0u8; 16 * 1024];
    let (mut a_open, mut b_open) = (true, true);
    let (mut up, mut downb) = (0u64, 0u64);
    let deadline = max.map(|m| tokio::time::Instant::now() + m);
    while a_open || b_open {
        let idle_sleep = async {
            match idle {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let max_sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = ar.read(&mut buf_a), if a_open => match r {
                Ok(0) | Err(_) => { a_open = false; let _ = bw.shutdown().await; }
                Ok(n) => { if bw.write_all(&buf_a[..n]).await.is_err() { break; } up += n as u64; }
            },
            r = br.read(&mut buf_b), if b_open => match r {
                Ok(0) | Err(_) => { b_open = false; let _ = aw.shutdown().await; }
                Ok(n) => { if aw.write_all(&buf_b[..n]).await.is_err() { break; } downb += n as u64; }
            },
            _ = idle_sleep => { idle_stat.inc(); break; }
            _ = max_sleep => break,
        }
    }
    (up, downb)
}
