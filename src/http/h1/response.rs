//! Writing an HTTP/1.x response head: the status line in the request's version, the headers,
//! and the framing of the body (RFC 9112 section 6), with `Date` added when absent. Pure: the
//! response in, bytes out.

use bytes::{BufMut, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Version, response};

/// How the response body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body bytes at all (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding (HTTP/1.1, length unknown).
    Chunked,
    /// Until the connection closes (HTTP/1.0, length unknown).
    UntilClose,
}

/// What the connection says about itself in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// HTTP/1.1 keep-alive: nothing to say.
    KeepAlive,
    /// HTTP/1.0 keep-alive: `connection: keep-alive`.
    KeepAlive10,
    /// The connection closes after this response: `connection: close`.
    Close,
}

/// Chooses the framing: no body for HEAD, 1xx, 204 and 304; a valid Content-Length the
/// response carries; else the body's exact length when known; else chunked for HTTP/1.1 and
/// until-close for HTTP/1.0.
pub fn body_framing(
    method: &Method,
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    exact: Option<u64>,
) -> BodyFraming {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return BodyFraming::None;
    }
    if let Some(n) = content_length(headers) {
        return BodyFraming::Length(n);
    }
    match exact {
        Some(n) => BodyFraming::Length(n),
        None if version == Version::HTTP_10 => BodyFraming::UntilClose,
        None => BodyFraming::Chunked,
    }
}

/// The single valid Content-Length of `headers`, if any.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let v = values.next()?;
    if values.next().is_some() {
        return None;
    }
    crate::http1::headers::decimal(v.as_bytes())
}

/// Writes the status line and headers. The framing header is written from `framing` (any
/// Transfer-Encoding or Content-Length the response carries is replaced; HEAD and 304 keep
/// theirs, which describe the body a GET would get); `Connection` as `persistence` says;
/// a Date header, whose value `date` writes, when the response has none (most upstreams send
/// one, so the clock is then not read).
pub fn head(
    parts: &response::Parts,
    version: Version,
    framing: BodyFraming,
    persistence: Persistence,
    date: impl FnOnce(&mut BytesMut),
    dst: &mut BytesMut,
) {
    dst.reserve(128 + parts.headers.len() * 40);
    dst.put_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    dst.put_slice(parts.status.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    dst.put_slice(b"\r\n");
    let keep_length = framing == BodyFraming::None && parts.status != StatusCode::NO_CONTENT;
    let mut has_date = false;
    for (name, value) in &parts.headers {
        if name == TRANSFER_ENCODING
            || (name == CONTENT_LENGTH && !keep_length)
            || (name == CONNECTION && persistence != Persistence::KeepAlive)
        {
            continue;
        }
        has_date |= name == DATE;
        dst.put_slice(name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
    if !has_date {
        dst.put_slice(b"date: ");
        date(dst);
        dst.put_slice(b"\r\n");
    }
    match framing {
        BodyFraming::Length(n) => {
            dst.put_slice(b"content-length: ");
            dst.put_slice(itoa::Buffer::new().format(n).as_bytes());
            dst.put_slice(b"\r\n");
        }
        BodyFraming::Chunked => dst.put_slice(b"transfer-encoding: chunked\r\n"),
        BodyFraming::None | BodyFraming::UntilClose => {}
    }
    match persistence {
        Persistence::KeepAlive => {}
        Persistence::KeepAlive10 => dst.put_slice(b"connection: keep-alive\r\n"),
        Persistence::Close => dst.put_slice(b"connection: close\r\n"),
    }
    dst.put_slice(b"\r\n");
}

/// Whether the response asks to close the connection (`connection: close`).
pub fn asks_close(headers: &HeaderMap) -> bool {
    crate::http1::headers::connection_has(headers, b"close")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(
        resp: http::Response<()>,
        version: Version,
        f: BodyFraming,
        p: Persistence,
    ) -> String {
        let (parts, _) = resp.into_parts();
        let mut b = BytesMut::new();
        head(
            &parts,
            version,
            f,
            p,
            |d| d.put_slice(b"Thu, 03 Dec 2026 10:00:00 GMT"),
            &mut b,
        );
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn status_line_headers_date_and_length() {
        let r = http::Response::builder()
            .status(404)
            .header("x-a", "1")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        assert_eq!(
            encode(
                r,
                Version::HTTP_11,
                BodyFraming::Length(3),
                Persistence::KeepAlive
            ),
            "HTTP/1.1 404 Not Found\r\nx-a: 1\r\ndate: Thu, 03 Dec 2026 10:00:00 GMT\r\ncontent-length: 3\r\n\r\n"
        );
    }

    #[test]
    fn own_date_kept_and_connection_from_persistence() {
        let r = http::Response::builder()
            .header("date", "x")
            .header("connection", "close")
            .body(())
            .unwrap();
        assert_eq!(
            encode(
                r,
                Version::HTTP_10,
                BodyFraming::UntilClose,
                Persistence::Close
            ),
            "HTTP/1.0 200 OK\r\ndate: x\r\nconnection: close\r\n\r\n"
        );
        let r = http::Response::new(());
        assert_eq!(
            encode(
                r,
                Version::HTTP_10,
                BodyFraming::Length(0),
                Persistence::KeepAlive10
            ),
            "HTTP/1.0 200 OK\r\ndate: Thu, 03 Dec 2026 10:00:00 GMT\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n"
        );
        let r = http::Response::builder().status(599).body(()).unwrap();
        assert!(
            encode(
                r,
                Version::HTTP_11,
                BodyFraming::Chunked,
                Persistence::KeepAlive
            )
            .starts_with("HTTP/1.1 599 \r\n")
        );
    }

    #[test]
    fn framing_choice() {
        let h = HeaderMap::new();
        let v11 = Version::HTTP_11;
        let ok = StatusCode::OK;
        assert_eq!(
            body_framing(&Method::HEAD, v11, ok, &h, Some(5)),
            BodyFraming::None
        );
        let nc = StatusCode::NO_CONTENT;
        assert_eq!(
            body_framing(&Method::GET, v11, nc, &h, None),
            BodyFraming::None
        );
        assert_eq!(
            body_framing(&Method::GET, v11, ok, &h, Some(5)),
            BodyFraming::Length(5)
        );
        assert_eq!(
            body_framing(&Method::GET, v11, ok, &h, None),
            BodyFraming::Chunked
        );
        let v10 = Version::HTTP_10;
        assert_eq!(
            body_framing(&Method::GET, v10, ok, &h, None),
            BodyFraming::UntilClose
        );
        let mut cl = HeaderMap::new();
        cl.insert(CONTENT_LENGTH, "7".parse().unwrap());
        assert_eq!(
            body_framing(&Method::GET, v11, ok, &cl, None),
            BodyFraming::Length(7)
        );
    }

    #[test]
    fn head_keeps_its_content_length() {
        let r = http::Response::builder()
            .header("content-length", "10")
            .body(())
            .unwrap();
        assert_eq!(
            encode(
                r,
                Version::HTTP_11,
                BodyFraming::None,
                Persistence::KeepAlive
            ),
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\ndate: Thu, 03 Dec 2026 10:00:00 GMT\r\n\r\n"
        );
    }
}
