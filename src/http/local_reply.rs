//! The one place an error becomes a response: status, body, response flags, and the gRPC
//! trailers-only form for gRPC requests.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::Body;

/// Envoy's response flags for what went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFlag {
    /// NR: no route.
    NoRouteFound,
    /// NC: no cluster.
    NoClusterFound,
    /// UH: no healthy upstream.
    NoHealthyUpstream,
    /// UF: upstream connection failure.
    UpstreamConnectionFailure,
    /// UT: upstream request timeout.
    UpstreamRequestTimeout,
    /// UO: upstream overflow (circuit breaker).
    UpstreamOverflow,
    /// UR: upstream remote reset.
    UpstreamRemoteReset,
    /// UC: upstream connection termination.
    UpstreamConnectionTermination,
    /// DPE: downstream protocol error.
    DownstreamProtocolError,
    /// SI: stream idle timeout.
    StreamIdleTimeout,
    /// DT: request_timeout passed before the request was received.
    RequestTimeout,
}

impl ResponseFlag {
    /// The short code used by `%RESPONSE_FLAGS%`.
    pub fn code(self) -> &'static str {
        match self {
            ResponseFlag::NoRouteFound => "NR",
            ResponseFlag::NoClusterFound => "NC",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectionFailure => "UF",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::UpstreamRemoteReset => "UR",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::DownstreamProtocolError => "DPE",
            ResponseFlag::StreamIdleTimeout => "SI",
            ResponseFlag::RequestTimeout => "DT",
        }
    }
}

/// Builds a local reply; for gRPC requests, a trailers-only response with grpc-status.
pub fn local_reply(
    status: u16,
    body: &str,
    grpc: bool,
    flag: Option<ResponseFlag>,
) -> Response<Body> {
    let mut resp = if grpc {
        let mut r = Response::new(super::empty_body());
        *r.status_mut() = StatusCode::OK;
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(grpc_status(status)));
        if let Ok(v) = HeaderValue::from_str(&percent_encode(body)) {
            h.insert("grpc-message", v);
        }
        r
    } else {
        let mut r = Response::new(super::full_body(Bytes::copy_from_slice(body.as_bytes())));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if !body.is_empty() {
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            );
        }
        r
    };
    if let Some(f) = flag {
        resp.extensions_mut().insert(f);
    }
    resp
}

/// Envoy's HTTP status to gRPC status mapping.
pub fn grpc_status(http: u16) -> u16 {
    match http {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_local_reply_is_trailers_only() {
        let r = local_reply(
            503,
            "no healthy upstream",
            true,
            Some(ResponseFlag::NoHealthyUpstream),
        );
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "no healthy upstream");
        assert_eq!(r.extensions().get::<ResponseFlag>().unwrap().code(), "UH");
    }
}
