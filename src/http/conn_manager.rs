//! The HTTP connection manager: serves one downstream connection (HTTP/1.1 by the inline codec,
//! h2c with prior knowledge and HTTP/2 by hyper, upgrades), routes each request and hands it
//! to the router.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::listener::stream::DownstreamStream;
use http::{HeaderValue, Request, Response, Version};

use super::local_reply::{ResponseFlag, local_reply};
use super::rewrite::{apply_request_mutations, redirect, rewrite};
use super::route_match::{RequestFacts, find_route, find_virtual_host, is_grpc};
use super::router::{Forward, choose_cluster, forward};
use super::stats::HcmStats;
use super::stream_log::{Details, PendingLog, RouteName};
use super::{Body, DownstreamBody};
use crate::clock::CoarseInstant;
use crate::config::filters::HttpFilter;
use crate::config::hcm::{HcmConfig, Routes, ServerHeader, UnderscoreAction};
use crate::config::route::{Action, RequireTls, RouteConfig};
use crate::listener::drain::DrainWatch;
use crate::network::connection_info::ConnectionInfo;
use crate::server::Server;

static X_ENVOY_ATTEMPT_COUNT: http::HeaderName =
    http::HeaderName::from_static("x-envoy-attempt-count");
static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
static X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");

/// Active streams and the time the connection last went idle, for the idle timeout.
#[derive(Debug)]
struct Activity {
    active: AtomicUsize,
    /// Coarse-clock milliseconds (`CoarseInstant`) when the last stream ended.
    idle_since: AtomicU64,
    protocol_counted: AtomicBool,
    h2: AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(CoarseInstant::now().as_millis()),
            protocol_counted: AtomicBool::new(false),
            h2: AtomicBool::new(false),
        }
    }
}

impl Activity {
    fn start(&self, stats: &HcmStats, version: Version, ctx: &Arc<ConnContext>) -> ActiveStream {
        if !self.protocol_counted.swap(true, Ordering::Relaxed) {
            if version == Version::HTTP_2 {
                stats.downstream_cx_http2_total.inc();
                self.h2.store(true, Ordering::Relaxed);
            } else {
                stats.downstream_cx_http1_total.inc();
            }
        }
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveStream(ctx.clone())
    }

    /// Whether a draining connection can be told to go away now: an HTTP/2 connection once it
    /// has served a stream (GOAWAY lets in-flight streams finish), an HTTP/1.1 connection once
    /// it is idle between requests (a busy one closes after its response, which carries
    /// `Connection: close`). A connection that has sent nothing yet is served first.
    fn may_go_away(&self) -> bool {
        self.protocol_counted.load(Ordering::Relaxed)
            && (self.h2.load(Ordering::Relaxed) || self.active.load(Ordering::Acquire) == 0)
    }

    /// Time left before the connection counts as idle for `timeout` (zero when it is).
    fn idle_remaining(&self, timeout: Duration) -> Duration {
        if self.active.load(Ordering::Acquire) > 0 {
            return timeout;
        }
        let since = CoarseInstant::from_millis(self.idle_since.load(Ordering::Acquire));
        timeout.saturating_sub(since.elapsed())
    }
}

/// One active stream; dropping it (when its response body is done) may make the connection idle.
pub(crate) struct ActiveStream(Arc<ConnContext>);

impl Drop for ActiveStream {
    fn drop(&mut self) {
        let activity = &self.0.activity;
        if activity.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity
                .idle_since
                .store(CoarseInstant::now().as_millis(), Ordering::Release);
        }
    }
}

/// What every request of one connection shares.
struct ConnContext {
    hcm: Arc<HttpConnectionManager>,
    server: Arc<Server>,
    drain: DrainWatch,
    activity: Activity,
    conn: ConnectionInfo,
    conn_tls: Option<Arc<ConnTls>>,
    tls_facts: Option<Arc<crate::listener::stream::TlsInfo>>,
}

/// An HCM config with its stats, shared by every connection of a filter chain.
#[derive(Debug)]
pub struct HttpConnectionManager {
    /// The config.
    pub config: Arc<HcmConfig>,
    /// Its stats.
    pub stats: HcmStats,
    /// Compressor filters, in chain order.
    compressors: Vec<super::compressor::Compressor>,
    /// The route table, or its RDS provider.
    routes: RouteTable,
}

/// Where a connection manager reads its route table from on each request.
#[derive(Debug)]
pub enum RouteTable {
    /// Inline `route_config`.
    Static(Arc<RouteConfig>),
    /// An RDS provider.
    Rds(Arc<super::rds::RdsProvider>),
}

impl RouteTable {
    /// The table for the next request (None until RDS delivers one).
    pub fn current(&self) -> Option<Arc<RouteConfig>> {
        match self {
            Self::Static(rc) => Some(rc.clone()),
            Self::Rds(p) => p.config(),
        }
    }
}

impl HttpConnectionManager {
    /// Declares the stats of `config`.
    pub fn new(config: Arc<HcmConfig>, server: &Server) -> Self {
        let stats = HcmStats::new(&server.stats, &config.stat_prefix);
        let compressors = config
            .http_filters
            .iter()
            .map(|f| match f {
                HttpFilter::Compressor(c) => super::compressor::Compressor::new(
                    c.clone(),
                    &server.stats,
                    &config.stat_prefix,
                ),
            })
            .collect();
        let routes = match &config.routes {
            Routes::Static(rc) => RouteTable::Static(rc.clone()),
            Routes::Rds { name, .. } => {
                RouteTable::Rds(server.rds.provider(name, &config.stat_prefix))
            }
        };
        Self {
            config,
            stats,
            compressors,
            routes,
        }
    }

    /// The RDS provider this connection manager reads, if it uses RDS.
    pub fn rds(&self) -> Option<&Arc<super::rds::RdsProvider>> {
        match &self.routes {
            RouteTable::Rds(p) => Some(p),
            RouteTable::Static(_) => None,
        }
    }

    /// Serves one connection until it closes or the server drains.
    pub async fn serve(
        self: Arc<Self>,
        server: Arc<Server>,
        io: DownstreamStream,
        conn: ConnectionInfo,
        drain: DrainWatch,
    ) {
        self.stats.downstream_cx_total.inc();
        self.stats.downstream_cx_active.inc();
        let conn_tls = io.tls().map(|t| {
            use crate::config::hcm::ForwardClientCert as F;
            let needs_details = matches!(
                self.config.forward_client_cert,
                F::AppendForward | F::SanitizeSet
            );
            Arc::new(ConnTls {
                client_cert: t.peer_cert.as_ref().map(|_| {
                    if needs_details {
                        super::xfcc::details(t, self.config.client_cert_details).unwrap_or_default()
                    } else {
                        String::new()
                    }
                }),
            })
        });
        let tls_facts = if self.config.access_logs.is_empty() {
            None
        } else {
            io.tls_log_facts()
        };
        // One shared context per connection: a request clones one pointer, not each part.
        let ctx = Arc::new(ConnContext {
            hcm: self.clone(),
            server,
            drain: drain.clone(),
            activity: Activity::default(),
            conn,
            conn_tls,
            tls_facts,
        });
        let handler = {
            let ctx = ctx.clone();
            move |req: Request<DownstreamBody>| Self::handle(ctx.clone(), req)
        };
        let cfg = &self.config;
        let protocol = match super::codec::detect(&io, cfg.codec).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("downstream connection error before the first request: {e}");
                self.stats.downstream_cx_active.dec();
                return;
            }
        };
        let mut conn = super::codec::ServerConn::new(io, protocol, cfg, handler);
        let mut drain = drain;
        let idle = cfg.idle_timeout;
        let mut shutting_down = false;
        let mut drain_pending = false;
        let mut recheck = tokio::time::interval(Duration::from_millis(100));
        loop {
            let idle_check = async {
                match idle {
                    Some(d) => tokio::time::sleep(ctx.activity.idle_remaining(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut conn => {
                    if let Err(e) = r {
                        if e.is_protocol_error() {
                            self.stats.downstream_cx_protocol_error.inc();
                        }
                        tracing::debug!("downstream connection error: {e}");
                    }
                    break;
                }
                _ = drain.wait_close(), if !shutting_down && !drain_pending => {
                    drain_pending = true;
                }
                _ = recheck.tick(), if drain_pending && !shutting_down => {}
                _ = idle_check, if !shutting_down => {
                    if let Some(d) = idle
                        && ctx.activity.idle_remaining(d).is_zero()
                    {
                        self.stats.downstream_cx_idle_timeout.inc();
                        conn.graceful_shutdown();
                        shutting_down = true;
                    }
                }
            }
            if drain_pending && !shutting_down && ctx.activity.may_go_away() {
                self.stats.downstream_cx_drain_close.inc();
                conn.graceful_shutdown();
                shutting_down = true;
            }
        }
        self.stats.downstream_cx_active.dec();
    }

    /// Serves one request of the connection `ctx`: routes it, forwards it or answers it, and
    /// counts it. The stream stays active (for the idle timeout and draining) until its
    /// response body is fully sent.
    async fn handle(ctx: Arc<ConnContext>, mut req: Request<DownstreamBody>) -> Response<Body> {
        let hcm: &HttpConnectionManager = &ctx.hcm;
        let (server, conn, drain) = (&*ctx.server, &ctx.conn, &ctx.drain);
        // Held by the response body: the router's for a proxied response, else a wrapper.
        let mut guard = Some(ctx.activity.start(&hcm.stats, req.version(), &ctx));
        if let Some(t) = &ctx.conn_tls {
            req.extensions_mut().insert(t.clone());
        }
        // Boxed: the request's future holds only a pointer while no access log is configured.
        let log = (!hcm.config.access_logs.is_empty()).then(|| {
            Box::new(PendingLog::start(
                &hcm.config.access_logs,
                &mut req,
                ctx.conn.local,
                ctx.conn.remote,
                ctx.tls_facts.clone(),
            ))
        });
        let start = Instant::now();
        let stats = &hcm.stats;
        let cfg = &hcm.config;
        stats.downstream_rq_total.inc();
        stats.downstream_rq_active.inc();
        // Also when the stream is cut short: a client that leaves drops this future.
        let _active = ActiveRequest(&stats.downstream_rq_active);
        let version = req.version();
        if version == Version::HTTP_2 {
            stats.downstream_rq_http2_total.inc();
        } else {
            stats.downstream_rq_http1_total.inc();
        }
        let grpc = is_grpc(req.headers());
        let head = req.method() == http::Method::HEAD;
        let chosen = if hcm.compressors.is_empty() {
            None
        } else {
            let ae = req
                .headers()
                .get(http::header::ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok());
            let chosen = super::compressor::choose(&hcm.compressors, ae);
            if chosen.is_some_and(|i| hcm.compressors[i].config.remove_accept_encoding_header) {
                req.headers_mut().remove(http::header::ACCEPT_ENCODING);
            }
            chosen
        };
        let resp = if version == Version::HTTP_10 && !cfg.accept_http_10 {
            let mut r = local_reply(426, "", false, None);
            r.extensions_mut().insert(Details("low_version"));
            r
        } else {
            // Routing and forwarding, inline rather than in an async fn of their own: one
            // nested future less to build and copy per request.
            'route: {
                let conn_tls = req.extensions().get::<Arc<ConnTls>>().cloned();
                let decision = super::headers::mutate_request(
                    cfg,
                    req.headers_mut(),
                    conn.remote.ip(),
                    conn_tls.is_some(),
                    conn_tls.as_ref().and_then(|t| t.client_cert.as_deref()),
                );
                let Some(rc) = hcm.routes.current() else {
                    // No table arrived (initial_fetch_timeout passed): as Envoy's empty table.
                    stats.no_route.inc();
                    break 'route local_reply(404, "", grpc, Some(ResponseFlag::NoRouteFound));
                };
                if !decision.internal {
                    for h in &rc.internal_only_headers {
                        req.headers_mut().remove(h);
                    }
                }
                let authority_value = super::authority(req.headers(), req.uri());
                let authority = authority_value.to_str().unwrap_or_default();
                let path_and_query = req.uri().path_and_query().cloned();
                let mut path = Cow::Borrowed(path_and_query.as_ref().map_or("/", |p| p.as_str()));
                if let Some(reply) = hcm.sanitize(&mut req, &mut path, grpc) {
                    break 'route reply;
                }
                let method = req.method().clone();
                let upgrade_type = upgrade_type(&req);
                let version = req.version();
                let facts = RequestFacts {
                    path: &path,
                    headers: req.headers(),
                    method: method.as_str(),
                    authority,
                    scheme: if conn_tls.is_some() { "https" } else { "http" },
                };
                let Some(vh) = find_virtual_host(&rc, authority) else {
                    stats.no_route.inc();
                    break 'route local_reply(404, "", grpc, Some(ResponseFlag::NoRouteFound));
                };
                if requires_tls_redirect(vh.require_tls, decision.internal, req.headers()) {
                    // As Envoy: a plaintext request to a TLS-only virtual host is redirected to https.
                    let mut r = local_reply(301, "", grpc, None);
                    if let Ok(v) = HeaderValue::from_str(&format!("https://{authority}{path}")) {
                        r.headers_mut().insert(http::header::LOCATION, v);
                    }
                    r.extensions_mut().insert(Details("direct_response"));
                    break 'route r;
                }
                let Some(route) = find_route(vh, &facts) else {
                    stats.no_route.inc();
                    break 'route local_reply(404, "", grpc, Some(ResponseFlag::NoRouteFound));
                };
                let mut resp = match &route.action {
                    Action::DirectResponse { status, body } => {
                        stats.rq_direct_response.inc();
                        let mut r = Response::new(match body {
                            Some(b) => super::full_body(b.clone()),
                            None => super::empty_body(),
                        });
                        *r.status_mut() =
                            http::StatusCode::from_u16(*status).unwrap_or(http::StatusCode::OK);
                        if body.as_ref().is_some_and(|b| !b.is_empty()) {
                            r.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                HeaderValue::from_static("text/plain"),
                            );
                        }
                        r.extensions_mut().insert(Details("direct_response"));
                        r
                    }
                    Action::Redirect(rd) => {
                        stats.rq_redirect.inc();
                        let mut r = redirect(rd, authority, &path, &route.matcher.path);
                        r.extensions_mut().insert(Details("direct_response"));
                        r
                    }
                    Action::Route(action) => {
                        let upgrade = match &upgrade_type {
                            None => false,
                            Some(t) => {
                                let allowed = action
                                    .upgrades
                                    .iter()
                                    .find(|(u, _)| u == t)
                                    .map(|(_, e)| *e)
                                    .unwrap_or_else(|| cfg.upgrades.iter().any(|u| u == t));
                                if !allowed {
                                    let mut r = local_reply(403, "", grpc, None);
                                    r.extensions_mut().insert(Details("upgrade_failed"));
                                    break 'route r;
                                }
                                stats.downstream_cx_upgrades_total.inc();
                                true
                            }
                        };
                        let (cluster_name, weighted) =
                            choose_cluster(action, req.headers(), fastrand::u64(..));
                        let Some(cluster) =
                            cluster_name.as_deref().and_then(|n| server.clusters.get(n))
                        else {
                            stats.no_cluster.inc();
                            break 'route local_reply(
                                action.cluster_not_found_status,
                                "",
                                grpc,
                                Some(ResponseFlag::NoClusterFound),
                            );
                        };
                        let headers = req.headers_mut();
                        apply_request_mutations(&rc, vh, route, weighted, headers);
                        rewrite(action, weighted, &mut req, &route.matcher.path);
                        super::headers::strip_hop_by_hop(req.headers_mut(), upgrade);
                        let f = Forward {
                            clusters: &server.clusters,
                            action,
                            grpc,
                            upgrade,
                            envoy_headers: !cfg.router.suppress_envoy_headers,
                            attempt_count: vh.include_request_attempt_count,
                            idle_timeout: action.idle_timeout.unwrap_or(cfg.stream_idle_timeout),
                            request_deadline: cfg.request_timeout.map(|t| start + t),
                            upstream_info: !cfg.access_logs.is_empty(),
                            downstream: conn,
                        };
                        let mut resp = forward(&f, &cluster, req, version, &mut guard).await;
                        if let Some(w) = weighted {
                            w.response_headers.apply(resp.headers_mut());
                        }
                        if vh.include_attempt_count_in_response {
                            resp.headers_mut().insert(
                                X_ENVOY_ATTEMPT_COUNT.clone(),
                                HeaderValue::from_static("1"),
                            );
                        }
                        resp
                    }
                };
                if !cfg.access_logs.is_empty() {
                    resp.extensions_mut().insert(RouteName(route.name.clone()));
                }
                route.response_headers.apply(resp.headers_mut());
                vh.response_headers.apply(resp.headers_mut());
                rc.response_headers.apply(resp.headers_mut());
                if cfg.always_set_request_id_in_response
                    && let Some(id) = decision.request_id
                {
                    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
                }
                resp
            }
        };
        let mut resp = if hcm.compressors.is_empty() {
            resp
        } else {
            super::compressor::apply(&hcm.compressors, chosen, head, resp)
        };
        let status = resp.status().as_u16();
        match resp.extensions().get::<ResponseFlag>() {
            Some(ResponseFlag::StreamIdleTimeout) => stats.downstream_rq_idle_timeout.inc(),
            Some(ResponseFlag::RequestTimeout) => stats.downstream_rq_timeout.inc(),
            _ => {}
        }
        let headers = resp.headers_mut();
        match cfg.server_header {
            ServerHeader::Overwrite => {
                headers.insert(http::header::SERVER, cfg.server_name.clone());
            }
            ServerHeader::AppendIfAbsent => {
                if !headers.contains_key(http::header::SERVER) {
                    headers.insert(http::header::SERVER, cfg.server_name.clone());
                }
            }
            ServerHeader::PassThrough => {}
        }
        if version != Version::HTTP_2 && drain.should_close() {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(via) = &cfg.via {
            append_header(resp.headers_mut(), http::header::VIA, via);
        }
        stats.response(status);
        stats.downstream_rq_completed.inc();
        stats
            .downstream_rq_time
            .record(start.elapsed().as_secs_f64() * 1000.0);
        let resp = match log {
            Some(log) => log.finish(resp),
            None => resp,
        };
        match guard {
            Some(guard) => {
                let (parts, body) = resp.into_parts();
                Response::from_parts(parts, super::with_guard(body, guard))
            }
            None => resp,
        }
    }

    /// Header-name and path checks before routing: underscores, normalization, `via`.
    fn sanitize(
        &self,
        req: &mut Request<DownstreamBody>,
        path: &mut Cow<'_, str>,
        grpc: bool,
    ) -> Option<Response<Body>> {
        let cfg = &self.config;
        if cfg.reject_underscore_headers != UnderscoreAction::Allow {
            let with_underscore: Vec<http::HeaderName> = req
                .headers()
                .keys()
                .filter(|k| k.as_str().contains('_'))
                .cloned()
                .collect();
            if !with_underscore.is_empty() {
                if cfg.reject_underscore_headers == UnderscoreAction::RejectRequest {
                    self.stats
                        .requests_rejected_with_underscores_in_headers
                        .inc();
                    return Some(local_reply(
                        400,
                        "",
                        grpc,
                        Some(ResponseFlag::DownstreamProtocolError),
                    ));
                }
                for k in with_underscore {
                    req.headers_mut().remove(&k);
                    self.stats.dropped_headers_with_underscores.inc();
                }
            }
        }
        if cfg.normalize_path || cfg.merge_slashes {
            let Some(normalized) =
                super::path::normalize(path, cfg.normalize_path, cfg.merge_slashes)
            else {
                return Some(local_reply(
                    400,
                    "",
                    grpc,
                    Some(ResponseFlag::DownstreamProtocolError),
                ));
            };
            if normalized != *path {
                let mut parts = req.uri().clone().into_parts();
                parts.path_and_query = normalized.parse().ok();
                match http::Uri::from_parts(parts) {
                    Ok(u) => *req.uri_mut() = u,
                    Err(_) => {
                        return Some(local_reply(
                            400,
                            "",
                            grpc,
                            Some(ResponseFlag::DownstreamProtocolError),
                        ));
                    }
                }
                *path = Cow::Owned(normalized);
            }
        }
        if let Some(via) = &cfg.via {
            append_header(req.headers_mut(), http::header::VIA, via);
        }
        None
    }
}

/// Counts a request in `downstream_rq_active` until dropped.
struct ActiveRequest<'a>(&'a crate::stats::Gauge);

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the connection manager keeps of a connection's TLS session for its requests.
#[derive(Debug)]
struct ConnTls {
    /// The client certificate's x-forwarded-client-cert element (empty when the mode does not
    /// add one); None without a client certificate.
    client_cert: Option<String>,
}

/// Whether `require_tls` sends this request to https: the request counts as TLS when
/// x-forwarded-proto (set or trusted by the connection manager) says https.
fn requires_tls_redirect(require: RequireTls, internal: bool, headers: &http::HeaderMap) -> bool {
    if require == RequireTls::None {
        return false;
    }
    let tls = headers
        .get(&X_FORWARDED_PROTO)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    match require {
        RequireTls::None => false,
        RequireTls::All => !tls,
        RequireTls::ExternalOnly => !tls && !internal,
    }
}

/// Appends `value` to a comma-separated header.
fn append_header(headers: &mut http::HeaderMap, name: http::HeaderName, value: &HeaderValue) {
    let joined = match headers.get(&name) {
        Some(existing) if !existing.is_empty() => {
            let mut v = existing.as_bytes().to_vec();
            v.extend_from_slice(b", ");
            v.extend_from_slice(value.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        _ => Some(value.clone()),
    };
    if let Some(v) = joined {
        headers.insert(name, v);
    }
}

fn upgrade_type(req: &Request<DownstreamBody>) -> Option<String> {
    let conn = req.headers().get(http::header::CONNECTION)?.to_str().ok()?;
    if !conn
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    {
        return None;
    }
    Some(
        req.headers()
            .get(http::header::UPGRADE)?
            .to_str()
            .ok()?
            .to_ascii_lowercase(),
    )
}
