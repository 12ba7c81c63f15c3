//! Envoy's substitution format strings: `%COMMAND(ARG):MAX%` operators in text or JSON formats,
//! parsed once at config time and rendered against a finished stream's [`StreamInfo`].

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::http::local_reply::ResponseFlag;

/// Envoy's default text format.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// What is known of a finished stream (an HTTP request or a TCP connection).
#[derive(Debug, Clone, Default)]
pub struct StreamInfo {
    /// When it started.
    pub start: Option<SystemTime>,
    /// How long it lasted.
    pub duration: Duration,
    /// Request method, path, authority and headers (HTTP only).
    pub request: Option<RequestInfo>,
    /// Response status and headers (HTTP only).
    pub response_code: Option<u16>,
    /// Response headers.
    pub response_headers: Option<http::HeaderMap>,
    /// Why it ended the way it did.
    pub response_flags: Vec<ResponseFlag>,
    /// Envoy's response code details.
    pub response_code_details: Option<&'static str>,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: Option<&'static str>,
    /// Body (or TCP payload) bytes received from downstream.
    pub bytes_received: u64,
    /// Body (or TCP payload) bytes sent downstream.
    pub bytes_sent: u64,
    /// The upstream host.
    pub upstream_host: Option<String>,
    /// The upstream cluster's name.
    pub upstream_cluster: Option<String>,
    /// The upstream connection's local address.
    pub upstream_local_address: Option<SocketAddr>,
    /// The upstream certificate's URI SANs, comma-separated.
    pub upstream_peer_uri_san: Option<std::sync::Arc<str>>,
    /// The downstream connection's local address.
    pub downstream_local_address: Option<SocketAddr>,
    /// The downstream peer.
    pub downstream_remote_address: Option<SocketAddr>,
    /// The downstream TLS session, on TLS connections.
    pub downstream_tls: Option<std::sync::Arc<crate::listener::stream::TlsInfo>>,
    /// The route's name.
    pub route_name: Option<String>,
}

/// The request side of an HTTP stream.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// :method.
    pub method: String,
    /// :path.
    pub path: String,
    /// :authority.
    pub authority: String,
    /// :scheme.
    pub scheme: &'static str,
    /// Headers.
    pub headers: http::HeaderMap,
}

#[derive(Debug, Clone, PartialEq)]
enum Operator {
    StartTime,
    Req(Vec<String>),
    Resp(Vec<String>),
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamLocalAddress {
        port: bool,
    },
    DownstreamRemoteAddress {
        port: bool,
    },
    RouteName,
    Hostname,
    /// The downstream client certificate's URI SANs, comma-separated.
    DownstreamPeerUriSan,
    /// UPSTREAM_PEER_URI_SAN.
    UpstreamPeerUriSan,
    /// DOWNSTREAM_PEER_SUBJECT.
    DownstreamPeerSubject,
    /// The proxy's own certificate's URI SANs on the downstream connection.
    DownstreamLocalUriSan,
    /// `TLSv1.2` / `TLSv1.3`.
    DownstreamTlsVersion,
    /// The SNI of the downstream connection.
    RequestedServerName,
    /// Operators whose value pilotfish never has on plaintext HTTP/TCP (TLS peer details,
    /// transport failure reasons): rendered as absent, as Envoy renders them there.
    Absent,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    Op(Operator, Option<usize>),
}

/// A parsed format: text, or JSON with a format per key.
#[derive(Debug, Clone)]
pub struct Format(Kind);

#[derive(Debug, Clone)]
enum Kind {
    Text(Vec<Segment>),
    Json(Vec<(String, Vec<Segment>)>, bool),
}

impl Format {
    /// Parses a text format.
    pub fn text(s: &str) -> Result<Self, String> {
        Ok(Format(Kind::Text(parse(s)?)))
    }

    /// Parses a JSON format (flat string values); `omit_empty` drops absent values.
    pub fn json(fields: Vec<(String, String)>, omit_empty: bool) -> Result<Self, String> {
        let mut out = Vec::new();
        for (k, v) in fields {
            out.push((k.clone(), parse(&v).map_err(|e| format!("{k}: {e}"))?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Format(Kind::Json(out, omit_empty)))
    }

    /// Renders one log line.
    pub fn render(&self, info: &StreamInfo) -> String {
        match &self.0 {
            Kind::Text(segs) => {
                let mut out = String::new();
                for s in segs {
                    match s {
                        Segment::Text(t) => out.push_str(t),
                        Segment::Op(op, max) => {
                            out.push_str(&value(op, *max, info).unwrap_or_else(|| "-".into()))
                        }
                    }
                }
                out
            }
            Kind::Json(fields, omit_empty) => {
                let mut map = serde_json::Map::new();
                for (k, segs) in fields {
                    let v = match segs.as_slice() {
                        [Segment::Op(op, max)] => match value(op, *max, info) {
                            None if *omit_empty => continue,
                            None => serde_json::Value::Null,
                            Some(v) if numeric(op) => v
                                .parse::<u64>()
                                .map(serde_json::Value::from)
                                .unwrap_or(serde_json::Value::String(v)),
                            Some(v) => serde_json::Value::String(v),
                        },
                        _ => {
                            serde_json::Value::String(Format(Kind::Text(segs.clone())).render(info))
                        }
                    };
                    map.insert(k.clone(), v);
                }
                let mut line = serde_json::Value::Object(map).to_string();
                line.push('\n');
                line
            }
        }
    }
}

fn numeric(op: &Operator) -> bool {
    matches!(
        op,
        Operator::ResponseCode | Operator::BytesReceived | Operator::BytesSent | Operator::Duration
    )
}

fn parse(s: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        text.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('%') {
            text.push('%');
            rest = r;
            continue;
        }
        let end = rest
            .find('%')
            .ok_or_else(|| format!("unterminated operator in {s:?}"))?;
        let token = &rest[..end];
        rest = &rest[end + 1..];
        if !text.is_empty() {
            out.push(Segment::Text(std::mem::take(&mut text)));
        }
        out.push(operator(token)?);
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Segment::Text(text));
    }
    Ok(out)
}

fn operator(token: &str) -> Result<Segment, String> {
    let (head, max) = match token.rsplit_once("):") {
        Some((h, m)) => (
            format!("{h})"),
            Some(
                m.parse::<usize>()
                    .map_err(|_| format!("bad length in %{token}%"))?,
            ),
        ),
        None => (token.to_string(), None),
    };
    let (name, arg) = match head.split_once('(') {
        Some((n, a)) => (
            n,
            Some(
                a.strip_suffix(')')
                    .ok_or_else(|| format!("unclosed argument in %{token}%"))?,
            ),
        ),
        None => (head.as_str(), None),
    };
    let headers = |a: Option<&str>| -> Result<Vec<String>, String> {
        let a = a.ok_or_else(|| format!("%{name}% needs a header argument"))?;
        Ok(a.split('?').map(|h| h.to_ascii_lowercase()).collect())
    };
    let op = match (name, arg) {
        ("START_TIME", None) => Operator::StartTime,
        ("START_TIME", Some(_)) => {
            return Err("START_TIME with a custom time format is not supported".into());
        }
        ("REQ", a) => Operator::Req(headers(a)?),
        ("RESP", a) => Operator::Resp(headers(a)?),
        ("PROTOCOL", None) => Operator::Protocol,
        ("RESPONSE_CODE", None) => Operator::ResponseCode,
        ("RESPONSE_FLAGS", None) => Operator::ResponseFlags,
        ("RESPONSE_CODE_DETAILS", None) => Operator::ResponseCodeDetails,
        ("BYTES_RECEIVED", None) => Operator::BytesReceived,
        ("BYTES_SENT", None) => Operator::BytesSent,
        ("DURATION", None) => Operator::Duration,
        ("UPSTREAM_HOST", None) => Operator::UpstreamHost,
        ("UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW", None) => Operator::UpstreamCluster,
        ("UPSTREAM_LOCAL_ADDRESS", None) => Operator::UpstreamLocalAddress,
        ("DOWNSTREAM_LOCAL_ADDRESS", None) => Operator::DownstreamLocalAddress { port: true },
        ("DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", None) => {
            Operator::DownstreamLocalAddress { port: false }
        }
        ("DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS", None) => {
            Operator::DownstreamRemoteAddress { port: true }
        }
        (
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"
            | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
            None,
        ) => Operator::DownstreamRemoteAddress { port: false },
        ("ROUTE_NAME", None) => Operator::RouteName,
        ("DOWNSTREAM_PEER_URI_SAN", None) => Operator::DownstreamPeerUriSan,
        ("DOWNSTREAM_LOCAL_URI_SAN", None) => Operator::DownstreamLocalUriSan,
        ("DOWNSTREAM_TLS_VERSION", None) => Operator::DownstreamTlsVersion,
        ("REQUESTED_SERVER_NAME", None) => Operator::RequestedServerName,
        ("HOSTNAME", None) => Operator::Hostname,
        ("UPSTREAM_PEER_URI_SAN", None) => Operator::UpstreamPeerUriSan,
        ("DOWNSTREAM_PEER_SUBJECT", None) => Operator::DownstreamPeerSubject,
        ("UPSTREAM_TRANSPORT_FAILURE_REASON" | "CONNECTION_TERMINATION_DETAILS", None) => {
            Operator::Absent
        }
        _ => return Err(format!("command operator %{token}% is not supported")),
    };
    Ok(Segment::Op(op, max))
}

fn value(op: &Operator, max: Option<usize>, info: &StreamInfo) -> Option<String> {
    let v = match op {
        Operator::StartTime => info.start.map(rfc3339_millis),
        Operator::Req(names) => info
            .request
            .as_ref()
            .and_then(|r| names.iter().find_map(|n| request_header(r, n))),
        Operator::Resp(names) => info.response_headers.as_ref().and_then(|h| {
            names.iter().find_map(|n| {
                h.get(n.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
        }),
        Operator::DownstreamPeerUriSan => info.downstream_tls.as_ref().and_then(|t| {
            let uris: Vec<&str> = t
                .peer_sans
                .iter()
                .filter(|s| s.kind == crate::tls::san::SanKind::Uri)
                .map(|s| s.value.as_str())
                .collect();
            (!uris.is_empty()).then(|| uris.join(","))
        }),
        Operator::DownstreamLocalUriSan => info
            .downstream_tls
            .as_ref()
            .filter(|t| !t.local_uri_sans.is_empty())
            .map(|t| t.local_uri_sans.join(",")),
        Operator::DownstreamTlsVersion => info
            .downstream_tls
            .as_ref()
            .and_then(|t| t.version.map(str::to_string)),
        Operator::RequestedServerName => info.downstream_tls.as_ref().and_then(|t| t.sni.clone()),
        Operator::Protocol => info.protocol.map(str::to_string),
        Operator::ResponseCode => Some(info.response_code.unwrap_or(0).to_string()),
        Operator::ResponseFlags => Some(if info.response_flags.is_empty() {
            "-".to_string()
        } else {
            info.response_flags
                .iter()
                .map(|f| f.code())
                .collect::<Vec<_>>()
                .join(",")
        }),
        Operator::ResponseCodeDetails => info.response_code_details.map(str::to_string),
        Operator::BytesReceived => Some(info.bytes_received.to_string()),
        Operator::BytesSent => Some(info.bytes_sent.to_string()),
        Operator::Duration => Some(info.duration.as_millis().to_string()),
        Operator::UpstreamHost => info.upstream_host.clone(),
        Operator::UpstreamCluster => info.upstream_cluster.clone(),
        Operator::UpstreamLocalAddress => info.upstream_local_address.map(|a| a.to_string()),
        Operator::DownstreamLocalAddress { port } => {
            info.downstream_local_address.map(|a| addr(a, *port))
        }
        Operator::DownstreamRemoteAddress { port } => {
            info.downstream_remote_address.map(|a| addr(a, *port))
        }
        Operator::RouteName => info.route_name.clone().filter(|n| !n.is_empty()),
        Operator::Hostname => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok()),
        Operator::UpstreamPeerUriSan => info.upstream_peer_uri_san.as_deref().map(str::to_string),
        Operator::DownstreamPeerSubject => info
            .downstream_tls
            .as_ref()
            .and_then(|t| t.peer_cert.as_deref())
            .map(crate::http::xfcc::subject),
        Operator::Absent => None,
    }?;
    Some(match max {
        Some(m) if v.len() > m => v.chars().take(m).collect(),
        _ => v,
    })
}

fn request_header(r: &RequestInfo, name: &str) -> Option<String> {
    match name {
        ":method" => Some(r.method.clone()),
        ":path" => Some(r.path.clone()),
        ":authority" | "host" => Some(r.authority.clone()),
        ":scheme" => Some(r.scheme.to_string()),
        n => r
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

fn addr(a: SocketAddr, port: bool) -> String {
    if port {
        a.to_string()
    } else {
        a.ip().to_string()
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC, Envoy's default START_TIME format.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> StreamInfo {
        let mut headers = http::HeaderMap::new();
        headers.insert("user-agent", "curl/8".parse().unwrap());
        StreamInfo {
            start: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            duration: Duration::from_millis(12),
            request: Some(RequestInfo {
                method: "GET".into(),
                path: "/a".into(),
                authority: "h".into(),
                scheme: "http",
                headers,
            }),
            response_code: Some(200),
            protocol: Some("HTTP/1.1"),
            bytes_sent: 5,
            upstream_host: Some("127.0.0.1:8080".into()),
            ..Default::default()
        }
    }

    #[test]
    fn default_format_renders_like_envoy() {
        let f = Format::text(DEFAULT_FORMAT).unwrap();
        assert_eq!(
            f.render(&info()),
            "[2023-11-14T22:13:20.123Z] \"GET /a HTTP/1.1\" 200 - 0 5 12 - \"-\" \"curl/8\" \"-\" \"h\" \"127.0.0.1:8080\"\n"
        );
    }

    #[test]
    fn truncation_escapes_and_unknown_operators() {
        let f = Format::text("%REQ(USER-AGENT):3% 100%% %RESPONSE_CODE%").unwrap();
        assert_eq!(f.render(&info()), "cur 100% 200");
        assert!(
            Format::text("%NO_SUCH_OPERATOR%")
                .unwrap_err()
                .contains("NO_SUCH_OPERATOR")
        );
        assert!(Format::text("%START_TIME(%s)%").is_err());
    }

    #[test]
    fn istio_default_format_parses() {
        let istio = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";
        let line = Format::text(istio).unwrap().render(&info());
        assert!(
            line.starts_with(
                "[2023-11-14T22:13:20.123Z] \"GET /a HTTP/1.1\" 200 - - - \"-\" 0 5 12"
            ),
            "{line}"
        );
    }

    #[test]
    fn json_keeps_numbers() {
        let f = Format::json(
            vec![
                ("code".into(), "%RESPONSE_CODE%".into()),
                ("ua".into(), "%REQ(USER-AGENT)%".into()),
                ("sni".into(), "%REQUESTED_SERVER_NAME%".into()),
            ],
            false,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&f.render(&info())).unwrap();
        assert_eq!(v["code"], 200);
        assert_eq!(v["ua"], "curl/8");
        assert!(v["sni"].is_null());
    }
}
