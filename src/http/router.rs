//! The router filter: picks the cluster and host, applies rewrites, forwards the request over a
//! pooled connection, and maps every failure to a local reply.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::conn_manager::ActiveStream;
use super::deadline::{self, Deadlines, Expired};
use super::local_reply::{ResponseFlag, local_reply};
use super::stream_log::{BytesReceived, UpstreamInfo};
use super::{Body, BoxError, DownstreamBody};
use crate::config::cluster::UpstreamProtocol;
use crate::config::route::{ClusterSpecifier, HostRewrite, RouteAction, WeightedCluster};
use crate::upstream::http1;
use crate::upstream::pool::{Pool, PoolError, UpstreamBody};
use crate::upstream::{ClusterManager, ClusterRuntime, Host, RequestGuard};

static X_ENVOY_ATTEMPT_COUNT: http::HeaderName =
    http::HeaderName::from_static("x-envoy-attempt-count");
static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: http::HeaderName =
    http::HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
static X_ENVOY_UPSTREAM_SERVICE_TIME: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-service-time");

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
    /// Stream idle timeout (route override or the HCM's).
    pub idle_timeout: Option<Duration>,
    /// When the whole request must have been received (request_timeout).
    pub request_deadline: Option<Instant>,
    /// Report the upstream on the response (for access logs).
    pub upstream_info: bool,
    /// The downstream connection.
    pub downstream: &'a crate::network::connection_info::ConnectionInfo,
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

/// Forwards `req` to `cluster` and returns the upstream's response or a local reply. The host
/// is chosen before the future is made, so a request with no healthy host gets its reply
/// without one.
///
/// A proxied response's body takes `active`, the downstream stream's activity guard, so it is
/// held until that body is dropped with no wrapper of its own; a local reply leaves it.
pub(crate) fn forward<'a>(
    f: &'a Forward<'a>,
    cluster: &'a Arc<ClusterRuntime>,
    req: Request<DownstreamBody>,
    downstream_version: Version,
    active: &'a mut Option<ActiveStream>,
) -> impl Future<Output = Response<Body>> + Send + 'a {
    use futures_util::future::Either;
    let ctx = crate::upstream::LbContext {
        downstream: Some(f.downstream),
        headers: Some(req.headers()),
    };
    match cluster.choose_host(&ctx) {
        Some(host) => match prepare(f, cluster, host, req, downstream_version) {
            Ok(p) => Either::Left(forward_to(f, cluster, p, active)),
            Err(host) => Either::Right(std::future::ready(overflow_reply(f, cluster, &host))),
        },
        None => {
            cluster.stats.upstream_cx_none_healthy().inc();
            Either::Right(std::future::ready(local_reply(
                503,
                "no healthy upstream",
                f.grpc,
                Some(ResponseFlag::NoHealthyUpstream),
            )))
        }
    }
}

/// The local reply when the cluster's request limit (`max_requests`) is reached.
fn overflow_reply(f: &Forward<'_>, cluster: &ClusterRuntime, host: &Host) -> Response<Body> {
    cluster.stats.upstream_rq_pending_overflow().inc();
    let mut reply = reset_reply("overflow", f.grpc, ResponseFlag::UpstreamOverflow);
    if f.upstream_info {
        note_upstream(&mut reply, cluster, host);
    }
    reply
}

/// What access logs print of the upstream a response came from.
fn note_upstream(resp: &mut Response<Body>, cluster: &ClusterRuntime, host: &Host) {
    let facts = resp
        .extensions_mut()
        .remove::<UpstreamLocal>()
        .map(|l| l.0)
        .unwrap_or_default();
    resp.extensions_mut().insert(UpstreamInfo {
        host: host.to_string(),
        cluster: cluster.config.name.clone(),
        local_address: facts.local,
        peer_uri_san: facts.peer_uri_san,
    });
}

/// The SNI auto_sni takes from a request: the host (without port) of its `override_auto_sni_header`
/// or of its authority, lowercased; none for an IP address, as Envoy.
fn auto_sni(
    a: &crate::config::cluster::AutoSni,
    headers: &http::HeaderMap,
    uri: &http::Uri,
) -> Option<String> {
    let value = match &a.header {
        Some(h) => headers.get(h)?.to_str().ok()?.to_string(),
        None => match headers.get(http::header::HOST) {
            Some(v) => v.to_str().ok()?.to_string(),
            None => uri.authority()?.as_str().to_string(),
        },
    };
    let authority: http::uri::Authority = value.trim().parse().ok()?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// What logs print of the upstream connection a response came over.
#[derive(Debug, Clone)]
struct UpstreamLocal(crate::upstream::connect::ConnFacts);

/// A request made ready for its upstream: everything up to the first await, done before the
/// exchange's future is made, so that future holds only what it still needs.
struct Prepared {
    upstream_req: Request<crate::upstream::pool::UpstreamBody>,
    use_h2: bool,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    request: Option<Arc<RequestState>>,
    sni: Option<String>,
    guard: StreamGuard,
    host: Arc<Host>,
}

/// Takes the request's circuit-breaker slot and makes the upstream request (host rewrite, Envoy's
/// request headers, the upstream protocol's form). Err: the cluster has no request slot left;
/// the host is handed back for the reply ([`overflow_reply`]).
fn prepare(
    f: &Forward<'_>,
    cluster: &Arc<ClusterRuntime>,
    host: Arc<Host>,
    mut req: Request<DownstreamBody>,
    downstream_version: Version,
) -> Result<Prepared, Arc<Host>> {
    let stats = &cluster.stats;
    let Some(rq_guard) = cluster.try_start_request() else {
        return Err(host);
    };
    if let HostRewrite::Auto = f.action.host_rewrite
        && !host.hostname.is_empty()
        && let Ok(v) = HeaderValue::from_str(&host.hostname)
    {
        req.headers_mut().insert(http::header::HOST, v);
    }
    if f.attempt_count {
        req.headers_mut()
            .insert(X_ENVOY_ATTEMPT_COUNT.clone(), HeaderValue::from_static("1"));
    }
    // Tells the upstream how long the router waits for it, as Envoy's router does.
    if f.envoy_headers
        && let Some(t) = &f.action.timeout_ms_header
    {
        req.headers_mut()
            .insert(X_ENVOY_EXPECTED_RQ_TIMEOUT_MS.clone(), t.clone());
    }
    let use_h2 = match cluster.config.protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::UseDownstream => downstream_version == Version::HTTP_2,
    } && !f.upgrade;
    let on_upgrade = f.upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    if use_h2 {
        let authority = super::authority(&parts.headers, &parts.uri);
        parts.version = Version::HTTP_2;
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(authority.as_bytes())
            .path_and_query(path)
            .build()
            .unwrap_or_default();
        parts.headers.remove(http::header::HOST);
    } else {
        parts.version = Version::HTTP_11;
        if !parts.headers.contains_key(http::header::HOST) {
            let authority = super::authority(&parts.headers, &parts.uri);
            parts.headers.insert(http::header::HOST, authority);
        }
        // Origin form upstream: the path and query only.
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            parts.uri = Uri::from(path);
        }
    }
    // A request that already ended (most GETs) is sent with an empty body: no tracking, and no
    // allocation for the boxed body.
    let (body, request) = if hyper::body::Body::is_end_stream(&body) {
        (super::empty_body(), None)
    } else {
        let state = Arc::new(RequestState::default());
        let body = RequestBody {
            received: parts.extensions.get::<BytesReceived>().map(|b| b.0.clone()),
            inner: body,
            state: state.clone(),
        };
        (body.boxed(), Some(state))
    };
    let sni = cluster
        .config
        .auto_sni
        .as_ref()
        .and_then(|a| auto_sni(a, &parts.headers, &parts.uri));
    let upstream_req = Request::from_parts(parts, body);
    stats.upstream_rq_total().inc();
    host.active_requests.fetch_add(1, Ordering::Relaxed);
    let guard = StreamGuard {
        _request: rq_guard,
        host: host.clone(),
    };
    Ok(Prepared {
        upstream_req,
        use_h2,
        on_upgrade,
        request,
        sni,
        guard,
        host,
    })
}

/// Sends a prepared request and turns the outcome into the downstream response: the upstream's
/// (its body taking `active`) or a local reply for a timeout, reset or failed connection.
async fn forward_to(
    f: &Forward<'_>,
    cluster: &Arc<ClusterRuntime>,
    p: Prepared,
    active: &mut Option<ActiveStream>,
) -> Response<Body> {
    let Prepared {
        upstream_req,
        use_h2,
        on_upgrade,
        request,
        sni,
        guard,
        host,
    } = p;
    let stats = &cluster.stats;
    let mut resp = 'exchange: {
        let started = Instant::now();
        let pool = host.pool_for(cluster, sni.as_deref());
        let exchange = std::pin::pin!(send(
            &pool,
            upstream_req,
            use_h2,
            f.upgrade,
            f.upstream_info
        ));
        let deadlines = Deadlines::new(
            started,
            f.action.timeout,
            f.idle_timeout,
            f.request_deadline,
        );
        // request_timeout: the whole request must reach the upstream in time, unless the response
        // starts first.
        let request_done = || request.as_ref().is_none_or(|r| r.done());
        let result = match deadline::bounded(exchange, deadlines, request_done).await {
            Ok(r) => r,
            Err(Expired::Route) => Err(SendError::Timeout),
            Err(Expired::Idle) => Err(SendError::Idle),
            Err(Expired::Request) => Err(SendError::RequestTimeout),
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(mut resp) => {
                stats.upstream_rq_time.record(elapsed_ms);
                stats.response_code(resp.status().as_u16());
                stats.upstream_rq_completed().inc();
                if f.envoy_headers {
                    resp.headers_mut().insert(
                        X_ENVOY_UPSTREAM_SERVICE_TIME.clone(),
                        super::headers::number_value(elapsed_ms as u64),
                    );
                }
                if let Some(down) = on_upgrade
                    && resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
                {
                    let up = hyper::upgrade::on(&mut resp);
                    tokio::spawn(async move {
                        let _guard = guard;
                        if let (Ok(d), Ok(u)) = (down.await, up.await) {
                            let mut d = hyper_util::rt::TokioIo::new(d);
                            let mut u = hyper_util::rt::TokioIo::new(u);
                            let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
                        }
                    });
                    let (parts, _) = resp.into_parts();
                    break 'exchange Response::from_parts(parts, super::empty_body());
                }
                let (mut parts, body) = resp.into_parts();
                super::headers::strip_hop_by_hop(&mut parts.headers, false);
                let mut body = StreamBody {
                    inner: body,
                    guard: Some(guard),
                    idle: f.idle_timeout,
                    idle_timer: None,
                    _active: active.take(),
                };
                body.finish_if_ended();
                Response::from_parts(parts, body.boxed())
            }
            Err(SendError::Timeout) => {
                stats.upstream_rq_timeout().inc();
                stats.response_code(504);
                local_reply(
                    504,
                    "upstream request timeout",
                    f.grpc,
                    Some(ResponseFlag::UpstreamRequestTimeout),
                )
            }
            // The request failed because the client's body broke HTTP/1.1 framing: Envoy's codec
            // answers that with 400, not as an upstream failure.
            Err(SendError::Reset(_)) if request.as_ref().is_some_and(|r| r.malformed()) => {
                local_reply(400, "", f.grpc, Some(ResponseFlag::DownstreamProtocolError))
            }
            Err(SendError::Idle) => local_reply(
                408,
                "stream timeout",
                f.grpc,
                Some(ResponseFlag::StreamIdleTimeout),
            ),
            Err(SendError::RequestTimeout) => local_reply(
                408,
                "request timeout",
                f.grpc,
                Some(ResponseFlag::RequestTimeout),
            ),
            Err(SendError::Pool(PoolError::PendingOverflow)) => {
                upstream_reset(stats, f.grpc, "overflow", ResponseFlag::UpstreamOverflow)
            }
            Err(SendError::Pool(e)) => {
                stats.upstream_rq_pending_failure_eject().inc();
                tracing::debug!(cluster = %cluster.config.name, host = %host, "upstream connect failed: {e}");
                let flag = ResponseFlag::UpstreamConnectionFailure;
                upstream_reset(stats, f.grpc, "connection failure", flag)
            }
            Err(SendError::Reset(e)) => {
                stats.upstream_rq_rx_reset().inc();
                tracing::debug!(cluster = %cluster.config.name, host = %host, "upstream reset: {e}");
                let flag = ResponseFlag::UpstreamConnectionTermination;
                upstream_reset(stats, f.grpc, "connection termination", flag)
            }
        }
    };
    if f.upstream_info {
        note_upstream(&mut resp, cluster, &host);
    }
    resp
}

/// The 503 for an exchange that failed before response headers, counted as the response code.
fn upstream_reset(
    stats: &crate::upstream::stats::ClusterStats,
    grpc: bool,
    reason: &str,
    flag: ResponseFlag,
) -> Response<Body> {
    stats.response_code(503);
    reset_reply(reason, grpc, flag)
}

/// Envoy's local reply when no upstream response headers arrived: 503 naming the reason.
fn reset_reply(reason: &str, grpc: bool, flag: ResponseFlag) -> Response<Body> {
    let body = format!(
        "upstream connect error or disconnect/reset before headers. reset reason: {reason}"
    );
    local_reply(503, &body, grpc, Some(flag))
}

enum SendError {
    Timeout,
    Idle,
    RequestTimeout,
    Pool(PoolError),
    Reset(BoxError),
}

/// Holds the request's circuit-breaker slot and the host's active-request count until the
/// response stream ends.
struct StreamGuard {
    _request: RequestGuard,
    host: Arc<Host>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.host.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends one request over a pooled connection and waits for the response head: over HTTP/2,
/// over an HTTP/1.1 connection hyper serves (a request that may upgrade), or over the inline
/// HTTP/1.1 exchange. Each way is its own future, so the common one is not sized by the others.
fn send<'a>(
    pool: &'a Arc<Pool>,
    req: Request<UpstreamBody>,
    h2: bool,
    upgrade: bool,
    report_local: bool,
) -> impl Future<Output = Result<Response<UpstreamResponse>, SendError>> + Send + 'a {
    use futures_util::future::Either;
    if h2 {
        Either::Left(send_h2(pool, req, report_local))
    } else if upgrade {
        Either::Right(Either::Left(send_upgradable(pool, req, report_local)))
    } else {
        Either::Right(Either::Right(send_h1(pool, req, report_local)))
    }
}

async fn send_h2(
    pool: &Arc<Pool>,
    req: Request<UpstreamBody>,
    report_local: bool,
) -> Result<Response<UpstreamResponse>, SendError> {
    let (mut sender, facts) = pool.acquire_h2().await.map_err(SendError::Pool)?;
    from_hyper(sender.send_request(req).await, report_local, facts)
}

async fn send_upgradable(
    pool: &Arc<Pool>,
    req: Request<UpstreamBody>,
    report_local: bool,
) -> Result<Response<UpstreamResponse>, SendError> {
    let mut conn = pool.acquire_upgradable().await.map_err(SendError::Pool)?;
    from_hyper(
        conn.sender.send_request(req).await,
        report_local,
        conn.facts,
    )
}

/// The response head hyper's client got, or why it got none.
fn from_hyper(
    result: hyper::Result<Response<Incoming>>,
    report_local: bool,
    facts: crate::upstream::connect::ConnFacts,
) -> Result<Response<UpstreamResponse>, SendError> {
    let resp = result.map_err(|e| SendError::Reset(e.into()))?;
    Ok(with_facts(
        resp.map(UpstreamResponse::Hyper),
        report_local,
        facts,
    ))
}

async fn send_h1(
    pool: &Arc<Pool>,
    req: Request<UpstreamBody>,
    report_local: bool,
) -> Result<Response<UpstreamResponse>, SendError> {
    let conn = pool.acquire_h1().await.map_err(SendError::Pool)?;
    let facts = if report_local {
        conn.facts.clone()
    } else {
        Default::default()
    };
    let resp = http1::send(conn, pool.clone(), req)
        .await
        .map_err(|e| SendError::Reset(e.into()))?;
    Ok(with_facts(
        resp.map(UpstreamResponse::Http1),
        report_local,
        facts,
    ))
}

/// Notes the upstream connection's facts on the response, when access logs need them.
fn with_facts<B>(
    mut resp: Response<B>,
    report_local: bool,
    facts: crate::upstream::connect::ConnFacts,
) -> Response<B> {
    if report_local {
        resp.extensions_mut().insert(UpstreamLocal(facts));
    }
    resp
}

/// An upstream response body: from hyper (HTTP/2, upgrades) or from an inline HTTP/1.1
/// exchange. The larger variant is not boxed: the whole body is boxed once on its way
/// downstream, and a second box would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum UpstreamResponse {
    Hyper(Incoming),
    Http1(http1::ResponseBody),
}

impl hyper::body::Body for UpstreamResponse {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.get_mut() {
            UpstreamResponse::Hyper(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
            UpstreamResponse::Http1(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamResponse::Hyper(b) => b.is_end_stream(),
            UpstreamResponse::Http1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            UpstreamResponse::Hyper(b) => b.size_hint(),
            UpstreamResponse::Http1(b) => b.size_hint(),
        }
    }
}

/// What the router learns of a request body as it is sent: whether it ended, and whether it
/// failed because the client broke HTTP/1.1 framing.
#[derive(Debug, Default)]
struct RequestState {
    done: AtomicBool,
    malformed: AtomicBool,
}

impl RequestState {
    fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    fn malformed(&self) -> bool {
        self.malformed.load(Ordering::Acquire)
    }
}

pin_project_lite::pin_project! {
    /// The downstream request body on its way upstream; records when it ended or failed.
    struct RequestBody {
        #[pin]
        inner: DownstreamBody,
        state: Arc<RequestState>,
        received: Option<Arc<std::sync::atomic::AtomicU64>>,
    }
}

impl hyper::body::Body for RequestBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let r = this.inner.as_mut().poll_frame(cx);
        if let Some(c) = this.received.as_ref() {
            super::count_data(c, &r);
        }
        let ended = match &r {
            std::task::Poll::Ready(None) => true,
            std::task::Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            this.state.done.store(true, Ordering::Release);
        }
        if let std::task::Poll::Ready(Some(Err(e))) = &r
            && e.downcast_ref::<crate::http1::decode::DecodeError>()
                .is_some()
        {
            this.state.malformed.store(true, Ordering::Release);
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

pin_project_lite::pin_project! {
    /// The upstream response body on its way downstream: releases the request's slots once
    /// read to the end, and resets the stream when no data moves for the idle timeout.
    struct StreamBody {
        #[pin]
        inner: UpstreamResponse,
        guard: Option<StreamGuard>,
        idle: Option<Duration>,
        // Made when the body first waits for data: a response that arrives whole (most
        // small ones) never registers a timer.
        idle_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
        // The downstream stream's activity, until this body is dropped (sent or abandoned).
        _active: Option<ActiveStream>,
    }
}

impl StreamBody {
    fn finish_if_ended(&mut self) {
        if hyper::body::Body::is_end_stream(&self.inner) {
            self.guard.take();
        }
    }
}

/// The error a stream gets when its idle timeout passes.
#[derive(Debug, thiserror::Error)]
#[error("stream idle timeout")]
pub struct StreamIdleTimeout;

impl hyper::body::Body for StreamBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let mut this = self.project();
        let r = this.inner.as_mut().poll_frame(cx);
        match &r {
            Poll::Pending => {
                if let Some(d) = *this.idle {
                    let sleep = this
                        .idle_timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(d)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        this.guard.take();
                        return Poll::Ready(Some(Err(Box::new(StreamIdleTimeout))));
                    }
                }
                return Poll::Pending;
            }
            Poll::Ready(Some(Ok(_))) => {
                if let (Some(d), Some(sleep)) = (*this.idle, this.idle_timer.as_mut()) {
                    sleep.as_mut().reset(tokio::time::Instant::now() + d);
                }
            }
            _ => {}
        }
        let done = match &r {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            _ => false,
        };
        if done {
            this.guard.take();
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
