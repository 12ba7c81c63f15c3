//! Opens the gRPC channel of an xDS stream through a bootstrap cluster: a host chosen by the
//! cluster's load balancer, over TCP or a Unix socket (`:scheme http` either way, with the
//! cluster name or `envoy_grpc.authority` as `:authority`).

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::source::ApiSource;
use crate::server::Server;
use crate::upstream::connect::connect;

/// Connects a channel for `source`.
pub async fn channel(server: &Server, source: &ApiSource) -> Result<Channel, String> {
    let cluster = server
        .clusters
        .get(&source.cluster)
        .ok_or_else(|| format!("xDS cluster {:?} does not exist", source.cluster))?;
    let host = cluster
        .choose_host()
        .ok_or_else(|| format!("xDS cluster {:?} has no healthy host", source.cluster))?;
    let target = host.target.clone();
    let timeout = cluster.config.connect_timeout;
    let keepalive = cluster.config.tcp_keepalive;
    let tls = host.tls.clone();
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
        async move {
            connect(&target, timeout, keepalive, tls.as_deref())
                .await
                .map(TokioIo::new)
                .map_err(std::io::Error::other)
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("cannot connect to xDS cluster {:?}: {e}", source.cluster))
}
