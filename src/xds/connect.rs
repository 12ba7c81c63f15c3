//! Opens the gRPC channel of an xDS stream through a bootstrap cluster: a host chosen by the
//! cluster's load balancer, over TCP or a Unix socket (`:scheme http` either way, with the
//! cluster name or `envoy_grpc.authority` as `:authority`). As Envoy's gRPC client, the
//! connection and its streams count in the cluster's `upstream_cx_*` and `upstream_rq_*` stats.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::source::ApiSource;
use crate::server::Server;
use crate::upstream::connect::{UpstreamStream, connect};
use crate::upstream::stats::ClusterStats;

/// Connects a channel for `source`.
pub async fn channel(server: &Server, source: &ApiSource) -> Result<Channel, String> {
    let cluster = server
        .clusters
        .get(&source.cluster)
        .ok_or_else(|| format!("xDS cluster {:?} does not exist", source.cluster))?;
    let host = cluster
        .choose_host(&Default::default())
        .ok_or_else(|| format!("xDS cluster {:?} has no healthy host", source.cluster))?;
    let target = host.target.clone();
    let timeout = cluster.config.connect_timeout;
    let config = cluster.config.clone();
    let tls = host.tls.clone();
    let stats = cluster.stats.clone();
    let uri = format!("http://{}", source.authority);
    let endpoint = Endpoint::from_shared(uri)
        .or_else(|_| Endpoint::from_shared("http://localhost".to_string()))
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let connector = tower::service_fn(move |_: Uri| {
        let target = target.clone();
        let tls = tls.clone();
        let stats = stats.clone();
        let config = config.clone();
        async move {
            match connect(&target, &config, tls.as_deref(), None).await {
                Ok(io) => Ok(TokioIo::new(Accounted::new(io, stats))),
                Err(e) => {
                    stats.upstream_cx_connect_fail().inc();
                    Err(std::io::Error::other(e))
                }
            }
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("cannot connect to xDS cluster {:?}: {e}", source.cluster))
}

/// An xDS connection counted in its cluster's stats while it lives.
struct Accounted {
    io: UpstreamStream,
    stats: Arc<ClusterStats>,
}

impl Accounted {
    fn new(io: UpstreamStream, stats: Arc<ClusterStats>) -> Self {
        stats.upstream_cx_total().inc();
        stats.upstream_cx_http2_total().inc();
        stats.upstream_cx_active().inc();
        Accounted { io, stats }
    }
}

impl Drop for Accounted {
    fn drop(&mut self) {
        self.stats.upstream_cx_active().dec();
        self.stats.upstream_cx_destroy().inc();
    }
}

impl AsyncRead for Accounted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.stats.upstream_cx_rx_bytes_total().add(n as u64);
        r
    }
}

impl AsyncWrite for Accounted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.stats.upstream_cx_tx_bytes_total().add(n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
