//! The router filter: picks the cluster and host, applies rewrites, forwards the request over a
//! pooled connection, and maps every failure to a local reply.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::local_reply::{ResponseFlag, local_reply};
use super::{Body, BoxError};
use crate::config::cluster::UpstreamProtocol;
use crate::config::route::{ClusterSpecifier, HostRewrite, RouteAction, WeightedCluster};
use crate::upstream::pool::{PoolError, UpstreamBody};
use crate::upstream::{ClusterManager, ClusterRuntime};

/// What the router needs besides the request.
pub struct Forward<'a> {
    /// The clusters.
    pub clusters: &'a ClusterManager,
    /// The matched route's action.
    pub action: &'a RouteAction,
    /// The request is gRPC.
    pub grpc: bool,
    /// The request is an upgrade (WebSocket, ...) the route allows.
    pub upgrade: bool,
    /// Add x-envoy-upstream-service-time.
    pub envoy_headers: bool,
    /// Add x-envoy-attempt-count upstream.
    pub attempt_count: bool,
}

/// Chooses the target cluster name; for weighted clusters, also the chosen entry.
pub fn choose_cluster<'a>(
    action: &'a RouteAction,
    headers: &http::HeaderMap,
    r: u64,
) -> (Option<Arc<str>>, Option<&'a WeightedCluster>) {
    match &action.cluster {
        ClusterSpecifier::Cluster(c) => (Some(c.clone()), None),
        ClusterSpecifier::Header(h) => (
            headers.get(h).and_then(|v| v.to_str().ok()).map(Arc::from),
            None,
        ),
        ClusterSpecifier::Weighted(list, total) => {
            let mut ticket = r % total;
            for w in list {
                if ticket < w.weight {
                    return (Some(w.name.clone()), Some(w));
                }
                ticket -= w.weight;
            }
            (list.last().map(|w| w.name.clone()), list.last())
        }
    }
}

/// Forwards `req` to `cluster` and returns the upstream's response or a local reply.
pub async fn forward(
    f: &Forward<'_>,
    cluster: &Arc<ClusterRuntime>,
    mut req: Request<Incoming>,
    downstream_version: Version,
) -> Response<Body> {
    let stats = &cluster.stats;
    let Some(host) = cluster.choose_host() else {
        stats.upstream_cx_none_healthy.inc();
        return local_reply(
            503,
            "no healthy upstream",
            f.grpc,
            Some(ResponseFlag::NoHealthyUpstream),
        );
    };
    let Some(_rq_guard) = cluster.try_start_request() else {
        stats.upstream_rq_pending_overflow.inc();
        return local_reply(
            503,
            "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            f.grpc,
            Some(ResponseFlag::UpstreamOverflow),
        );
    };
    if let HostRewrite::Auto = f.action.host_rewrite
        && !host.hostname.is_empty()
        && let Ok(v) = HeaderValue::from_str(&host.hostname)
    {
        req.headers_mut().insert(http::header::HOST, v);
    }
    if f.attempt_count {
        req.headers_mut()
            .insert("x-envoy-attempt-count", HeaderValue::from_static("1"));
    }
    let use_h2 = match cluster.config.protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::UseDownstream => downstream_version == Version::HTTP_2,
    } && !f.upgrade;
    let on_upgrade = f.upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if use_h2 {
        parts.version = Version::HTTP_2;
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(path.as_str())
            .build()
            .unwrap_or_default();
        parts.headers.remove(http::header::HOST);
    } else {
        parts.version = Version::HTTP_11;
        parts.uri = path.parse().unwrap_or_default();
        if !parts.headers.contains_key(http::header::HOST)
            && let Ok(v) = HeaderValue::from_str(&authority)
        {
            parts.headers.insert(http::header::HOST, v);
        }
    }
    let upstream_req = Request::from_parts(parts, body.boxed());
    stats.upstream_rq_total.inc();
    host.active_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let result = send(
        cluster,
        &host,
        upstream_req,
        use_h2,
        f.upgrade,
        f.action.timeout,
    )
    .await;
    host.active_requests
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok((mut resp, release)) => {
            stats.upstream_rq_time.record(elapsed_ms);
            stats.response_code(resp.status().as_u16());
            stats.upstream_rq_completed.inc();
            if f.envoy_headers
                && let Ok(v) = HeaderValue::from_str(&format!("{}", elapsed_ms as u64))
            {
                resp.headers_mut()
                    .insert("x-envoy-upstream-service-time", v);
            }
            if let Some(down) = on_upgrade
                && resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
            {
                let up = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    if let (Ok(d), Ok(u)) = (down.await, up.await) {
                        let mut d = hyper_util::rt::TokioIo::new(d);
                        let mut u = hyper_util::rt::TokioIo::new(u);
                        let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
                    }
                });
                let (parts, _) = resp.into_parts();
                return Response::from_parts(parts, super::empty_body());
            }
            let (mut parts, body) = resp.into_parts();
            super::headers::strip_hop_by_hop(&mut parts.headers, false);
            let mut release = release;
            if hyper::body::Body::is_end_stream(&body)
                && let Some(f) = release.take()
            {
                f();
            }
            let body = ReleaseBody {
                inner: body,
                release,
            };
            Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
        }
        Err(SendError::Timeout) => {
            stats.upstream_rq_timeout.inc();
            stats.response_code(504);
            local_reply(
                504,
                "upstream request timeout",
                f.grpc,
                Some(ResponseFlag::UpstreamRequestTimeout),
            )
        }
        Err(SendError::Pool(PoolError::PendingOverflow)) => {
            stats.response_code(503);
            local_reply(
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                f.grpc,
                Some(ResponseFlag::UpstreamOverflow),
            )
        }
        Err(SendError::Pool(e)) => {
            stats.upstream_rq_pending_failure_eject.inc();
            stats.response_code(503);
            tracing::debug!(cluster = %cluster.config.name, host = %host, "upstream connect failed: {e}");
            local_reply(
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                f.grpc,
                Some(ResponseFlag::UpstreamConnectionFailure),
            )
        }
        Err(SendError::Reset(e)) => {
            stats.upstream_rq_rx_reset.inc();
            stats.response_code(503);
            tracing::debug!(cluster = %cluster.config.name, host = %host, "upstream reset: {e}");
            local_reply(
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                f.grpc,
                Some(ResponseFlag::UpstreamConnectionTermination),
            )
        }
    }
}

enum SendError {
    Timeout,
    Pool(PoolError),
    Reset(hyper::Error),
}

type Release = Option<Box<dyn FnOnce() + Send + Sync>>;

async fn send(
    cluster: &Arc<ClusterRuntime>,
    host: &Arc<crate::upstream::Host>,
    req: Request<UpstreamBody>,
    h2: bool,
    upgrade: bool,
    timeout: Option<std::time::Duration>,
) -> Result<(Response<Incoming>, Release), SendError> {
    let fut = async {
        if h2 {
            let mut sender = host.pool.acquire_h2().await.map_err(SendError::Pool)?;
            let resp = sender.send_request(req).await.map_err(SendError::Reset)?;
            Ok((resp, None))
        } else {
            let mut conn = host
                .pool
                .acquire_h1(upgrade)
                .await
                .map_err(SendError::Pool)?;
            let resp = conn
                .sender
                .send_request(req)
                .await
                .map_err(SendError::Reset)?;
            let host = host.clone();
            let _ = cluster;
            let release: Release = if upgrade {
                None
            } else {
                Some(Box::new(move || host.pool.release_h1(conn)))
            };
            Ok((resp, release))
        }
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, fut)
            .await
            .unwrap_or(Err(SendError::Timeout)),
        None => fut.await,
    }
}

pin_project_lite::pin_project! {
    /// Returns the HTTP/1.1 connection to its pool once the response body has been read to
    /// the end; a body dropped early closes the connection instead.
    struct ReleaseBody {
        #[pin]
        inner: Incoming,
        release: Release,
    }
}

impl hyper::body::Body for ReleaseBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let r = this.inner.as_mut().poll_frame(cx);
        let done = match &r {
            std::task::Poll::Ready(None) => true,
            std::task::Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            _ => false,
        };
        if done && let Some(f) = this.release.take() {
            f();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
