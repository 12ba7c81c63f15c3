//! Reading an HTTP/1.x request head: request line and headers (values share the read
//! buffer's bytes), how the body is framed (RFC 9112 section 6.3, as Envoy applies it to
//! requests), and whether the connection stays open afterwards. Pure: bytes in, a head out.

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Uri, Version};

use crate::http1::decode::Framing;
use crate::http1::headers::{self, Hop, MAX_HEADERS, REQUEST_HEADROOM, Spans, record_spans};

/// Why a request head was refused; the connection answers with `status` and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct HeadError {
    /// 400, or 431 for a head over the size or count limit.
    pub status: u16,
    /// What was wrong.
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> HeadError {
    HeadError {
        status: 400,
        reason,
    }
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// The request's method, target, version and headers (no body yet).
    pub request: http::Request<()>,
    /// How the body is delimited: never `UntilClose` for a request.
    pub framing: Framing,
    /// Whether the client lets the connection carry another request.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// An upgrade (`Connection: upgrade` with `Upgrade`) or CONNECT: the connection may
    /// switch protocols after the response.
    pub upgrade: bool,
    /// The head's bytes, kept for an upgrade (the connection is handed on with them).
    pub raw: Option<Bytes>,
}

/// Parses a request head from the front of `buf`, removing it. `None`: more bytes needed.
/// `spare`: an emptied map whose storage the head's map may reuse (see `headers::read`).
pub fn parse_head(
    buf: &mut BytesMut,
    max_len: usize,
    spare: &mut Option<http::HeaderMap>,
) -> Result<Option<RequestHead>, HeadError> {
    // Empty lines before a request line are ignored (RFC 9112 section 2.2).
    while buf.starts_with(b"\r\n") {
        buf.advance(2);
    }
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max_len {
                return Err(too_large());
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(too_large()),
        Err(_) => return Err(bad("malformed request head")),
    };
    if len > max_len {
        return Err(too_large());
    }
    let method = Method::from_bytes(parsed.method.ok_or(bad("no method"))?.as_bytes())
        .map_err(|_| bad("invalid method"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buf.as_ptr() as usize;
    let target = parsed.path.ok_or(bad("no request target"))?;
    let target_range = offset(base, target.as_bytes());
    let mut spans = Spans::new();
    record_spans(buf, parsed.headers, &mut spans);
    let head_bytes = buf.split_to(len).freeze();
    // Origin, absolute, authority (CONNECT) and asterisk (OPTIONS *) forms all parse as URIs.
    let uri = Uri::from_maybe_shared(head_bytes.slice(target_range))
        .map_err(|_| bad("invalid request target"))?;
    let (headers, hop) =
        headers::read(&head_bytes, &spans, REQUEST_HEADROOM, spare).map_err(bad)?;
    let framing = framing(&hop)?;
    let keep_alive = hop.keeps_alive(version);
    let expect_continue = version == Version::HTTP_11 && hop.expect_continue;
    let upgrade = method == Method::CONNECT || hop.upgrade;
    let mut request = http::Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(RequestHead {
        request,
        framing,
        keep_alive,
        expect_continue,
        raw: upgrade.then(|| head_bytes.clone()),
        upgrade,
    }))
}

fn too_large() -> HeadError {
    HeadError {
        status: 431,
        reason: "request headers too large",
    }
}

/// Where `part` (a slice of the buffer starting at `base`) lies in it.
fn offset(base: usize, part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - base;
    start..start + part.len()
}

/// Request body framing: chunked when the last transfer coding is chunked (any other coding
/// cannot be delimited and is refused), else Content-Length, else no body. Both headers
/// together, or a Content-Length that does not parse or repeats with different values, are
/// refused, as Envoy does.
fn framing(hop: &Hop) -> Result<Framing, HeadError> {
    if let Some(chunked) = hop.chunked {
        if hop.length != Ok(None) {
            return Err(bad("both transfer-encoding and content-length"));
        }
        return if chunked {
            Ok(Framing::Chunked)
        } else {
            Err(bad("transfer-encoding does not end in chunked"))
        };
    }
    match hop.length.map_err(bad)? {
        None | Some(0) => Ok(Framing::Empty),
        Some(n) => Ok(Framing::Length(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_head(&mut BytesMut::from(s), 1024, &mut None)
    }

    #[test]
    fn head_with_headers_and_the_rest_left_in_the_buffer() {
        let mut b = BytesMut::from("GET /a?b=c HTTP/1.1\r\nHost: svc\r\nX-A: 1\r\n\r\nGET /next");
        let h = parse_head(&mut b, 1024, &mut None).unwrap().unwrap();
        assert_eq!(h.request.method(), Method::GET);
        assert_eq!(h.request.uri().path_and_query().unwrap().as_str(), "/a?b=c");
        assert_eq!(h.request.headers()["host"], "svc");
        assert_eq!(h.request.headers()["x-a"], "1");
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive && !h.upgrade && !h.expect_continue);
        assert_eq!(&b[..], b"GET /next");
    }

    #[test]
    fn partial_heads_wait_and_oversized_ones_are_431() {
        assert!(parse("GET / HTTP/1.1\r\nhost: a\r\n").unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nx: {}\r\n", "y".repeat(2000));
        assert_eq!(parse(&big).unwrap_err().status, 431);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("h{i}: v\r\n"))
            .collect();
        let mut b = BytesMut::from(format!("GET / HTTP/1.1\r\n{many}\r\n").as_str());
        assert_eq!(
            parse_head(&mut b, 1 << 20, &mut None).unwrap_err().status,
            431
        );
    }

    #[test]
    fn garbage_is_400() {
        for s in [
            "NOT A REQUEST AT ALL\r\n\r\n",
            "GET / HTTP/1.1\r\nbad header line\r\n\r\n",
            "\x16\x03\x01\x02\x00garbage\r\n\r\n",
        ] {
            assert_eq!(parse(s).unwrap_err().status, 400, "{s:?}");
        }
    }

    #[test]
    fn body_framing() {
        let f = |h: &str| parse(&format!("POST / HTTP/1.1\r\n{h}\r\n")).map(|h| h.unwrap().framing);
        assert_eq!(f("content-length: 5\r\n"), Ok(Framing::Length(5)));
        assert_eq!(f("content-length: 5, 5\r\n"), Ok(Framing::Length(5)));
        assert_eq!(f("content-length: 0\r\n"), Ok(Framing::Empty));
        assert_eq!(
            f("transfer-encoding: gzip, chunked\r\n"),
            Ok(Framing::Chunked)
        );
        for bad_framing in [
            "content-length: 5, 6\r\n",
            "content-length: -1\r\n",
            "content-length: 5\r\ntransfer-encoding: chunked\r\n",
            "transfer-encoding: gzip\r\n",
        ] {
            assert_eq!(f(bad_framing).unwrap_err().status, 400, "{bad_framing}");
        }
    }

    #[test]
    fn keep_alive_upgrade_and_expect() {
        let h = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        assert_eq!(h.request.version(), Version::HTTP_10);
        let h = parse("GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let h = parse("GET / HTTP/1.1\r\nconnection: foo, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = parse("GET /ws HTTP/1.1\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.upgrade);
        let h = parse("GET / HTTP/1.1\r\nupgrade: websocket\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.upgrade);
        let h = parse("CONNECT svc:443 HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert!(h.upgrade);
        assert_eq!(h.request.uri().authority().unwrap().as_str(), "svc:443");
        let h = parse("PUT / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.expect_continue);
    }

    #[test]
    fn absolute_form_and_leading_empty_lines() {
        let h = parse("\r\n\r\nGET http://svc:8/p HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.request.uri().authority().unwrap().as_str(), "svc:8");
        assert_eq!(h.request.uri().path(), "/p");
    }
}
