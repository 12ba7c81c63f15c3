//! Access logging of HTTP streams: what the connection manager and router learn about a
//! request, gathered into a [`StreamInfo`] and logged when the response body is done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use http::{Request, Response, Version};

use super::Body;
use super::local_reply::ResponseFlag;
use crate::access_log::{AccessLogger, RequestInfo, StreamInfo};

/// Request body bytes received, counted by the router as the body goes upstream.
#[derive(Debug, Clone, Default)]
pub struct BytesReceived(pub Arc<AtomicU64>);

/// The upstream a response came from (or was attempted), set by the router.
#[derive(Debug, Clone)]
pub struct UpstreamInfo {
    /// The host's address.
    pub host: String,
    /// The cluster's name.
    pub cluster: Arc<str>,
    /// The upstream connection's local address.
    pub local_address: Option<SocketAddr>,
    /// The upstream certificate's URI SANs.
    pub peer_uri_san: Option<Arc<str>>,
}

/// The matched route's name, set by the connection manager.
#[derive(Debug, Clone)]
pub struct RouteName(pub String);

/// How the response was produced, for %RESPONSE_CODE_DETAILS%.
#[derive(Debug, Clone, Copy)]
pub struct Details(pub &'static str);

/// A request being logged.
#[derive(Debug)]
pub struct PendingLog {
    loggers: Vec<Arc<AccessLogger>>,
    info: StreamInfo,
    started: Instant,
    received: BytesReceived,
}

impl PendingLog {
    /// Captures the request side; adds the byte counter to the request's extensions.
    pub fn start<B>(
        loggers: &[Arc<AccessLogger>],
        req: &mut Request<B>,
        local: SocketAddr,
        remote: SocketAddr,
        tls: Option<Arc<crate::listener::stream::TlsInfo>>,
    ) -> Self {
        let received = BytesReceived::default();
        req.extensions_mut().insert(received.clone());
        let authority = super::authority(req.headers(), req.uri())
            .to_str()
            .unwrap_or_default()
            .to_string();
        let info = StreamInfo {
            start: Some(SystemTime::now()),
            request: Some(RequestInfo {
                method: req.method().to_string(),
                path: req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                authority,
                scheme: "http",
                headers: req.headers().clone(),
            }),
            protocol: Some(match req.version() {
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2",
                _ => "HTTP/1.1",
            }),
            downstream_local_address: Some(local),
            downstream_remote_address: Some(remote),
            downstream_tls: tls,
            ..Default::default()
        };
        Self {
            loggers: loggers.to_vec(),
            info,
            started: Instant::now(),
            received,
        }
    }

    /// Records the response side and returns its body, which logs the stream when done.
    pub fn finish(mut self, resp: Response<Body>) -> Response<Body> {
        let info = &mut self.info;
        info.response_code = Some(resp.status().as_u16());
        info.response_headers = Some(resp.headers().clone());
        let flag = resp.extensions().get::<ResponseFlag>().copied();
        info.response_flags = flag.into_iter().collect();
        if let Some(u) = resp.extensions().get::<UpstreamInfo>() {
            info.upstream_host = Some(u.host.clone());
            info.upstream_cluster = Some(u.cluster.to_string());
            info.upstream_local_address = u.local_address;
            info.upstream_peer_uri_san = u.peer_uri_san.clone();
        }
        info.route_name = resp.extensions().get::<RouteName>().map(|r| r.0.clone());
        info.response_code_details = Some(match (flag, resp.extensions().get::<Details>()) {
            (Some(f), _) => details(f),
            (None, Some(d)) => d.0,
            (None, None) => "via_upstream",
        });
        let sent = Arc::new(AtomicU64::new(0));
        let (parts, body) = resp.into_parts();
        let done = LogOnDrop {
            log: Some(self),
            sent: sent.clone(),
        };
        Response::from_parts(parts, super::with_guard_counting(body, done, sent))
    }
}

fn details(f: ResponseFlag) -> &'static str {
    match f {
        ResponseFlag::NoRouteFound => "route_not_found",
        ResponseFlag::NoClusterFound => "cluster_not_found",
        ResponseFlag::NoHealthyUpstream => "no_healthy_upstream",
        ResponseFlag::UpstreamConnectionFailure => {
            "upstream_reset_before_response_started{connection_failure}"
        }
        ResponseFlag::UpstreamRequestTimeout => "upstream_response_timeout",
        ResponseFlag::UpstreamOverflow => "upstream_reset_before_response_started{overflow}",
        ResponseFlag::UpstreamRemoteReset => "upstream_reset_before_response_started{remote_reset}",
        ResponseFlag::UpstreamConnectionTermination => {
            "upstream_reset_before_response_started{connection_termination}"
        }
        ResponseFlag::DownstreamProtocolError => "downstream_protocol_error",
        ResponseFlag::StreamIdleTimeout => "stream_idle_timeout",
        ResponseFlag::RequestTimeout => "request_overall_timeout",
    }
}

/// Writes the log line when the response body is dropped (sent, or abandoned).
struct LogOnDrop {
    log: Option<PendingLog>,
    sent: Arc<AtomicU64>,
}

impl Drop for LogOnDrop {
    fn drop(&mut self) {
        let Some(mut log) = self.log.take() else {
            return;
        };
        log.info.duration = log.started.elapsed();
        log.info.bytes_sent = self.sent.load(Ordering::Relaxed);
        log.info.bytes_received = log.received.0.load(Ordering::Relaxed);
        for l in &log.loggers {
            l.log(&log.info);
        }
    }
}
