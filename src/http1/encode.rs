//! Writing an HTTP/1.1 request: the head in origin form, how its body is framed, and the
//! body's chunks. Pure: the request in, bytes out.

use bytes::{BufMut, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, request};

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body and no framing header (GET, HEAD, DELETE, ... without a body).
    None,
    /// Content-Length.
    Length(u64),
    /// Chunked transfer coding, for a body of unknown length.
    Chunked,
}

/// Chooses the framing as hyper's client does: a body whose length is known (an exact size
/// hint, which a downstream Content-Length gives) is sent with Content-Length; an empty body
/// with none, except for methods that expect one (POST, PUT, PATCH: `content-length: 0`);
/// anything else chunked.
pub fn body_framing(method: &Method, ended: bool, exact: Option<u64>) -> BodyFraming {
    if ended || exact == Some(0) {
        if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            BodyFraming::Length(0)
        } else {
            BodyFraming::None
        }
    } else if let Some(n) = exact {
        BodyFraming::Length(n)
    } else {
        BodyFraming::Chunked
    }
}

/// Writes the request line and headers, with the framing header for `framing` (replacing any
/// Content-Length or Transfer-Encoding the request carries).
pub fn head(parts: &request::Parts, framing: BodyFraming, dst: &mut BytesMut) {
    let target = if parts.method == Method::CONNECT {
        parts.uri.authority().map_or("", |a| a.as_str())
    } else {
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    };
    dst.reserve(64 + target.len() + parts.headers.len() * 32);
    dst.put_slice(parts.method.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(target.as_bytes());
    dst.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        dst.put_slice(name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
    match framing {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            dst.put_slice(b"content-length: ");
            dst.put_slice(itoa::Buffer::new().format(n).as_bytes());
            dst.put_slice(b"\r\n");
        }
        BodyFraming::Chunked => dst.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    dst.put_slice(b"\r\n");
}

/// Writes the size line of a chunk of `len` bytes (its data and CRLF follow).
pub fn chunk_start(len: usize, dst: &mut BytesMut) {
    use std::fmt::Write;
    let _ = write!(dst, "{len:x}\r\n");
}

/// Writes the CRLF that ends a chunk's data.
pub fn chunk_end(dst: &mut BytesMut) {
    dst.put_slice(b"\r\n");
}

/// Writes the last chunk and the trailers.
pub fn last_chunk(trailers: Option<&HeaderMap>, dst: &mut BytesMut) {
    dst.put_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        dst.put_slice(name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
    dst.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(req: http::Request<()>, framing: BodyFraming) -> String {
        let (parts, _) = req.into_parts();
        let mut b = BytesMut::new();
        head(&parts, framing, &mut b);
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn origin_form_head_with_framing() {
        let req = http::Request::get("/a?b=c")
            .header("host", "svc")
            .header("content-length", "99")
            .body(())
            .unwrap();
        assert_eq!(
            encode(req, BodyFraming::None),
            "GET /a?b=c HTTP/1.1\r\nhost: svc\r\n\r\n"
        );
        let req = http::Request::post("/u")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        assert_eq!(
            encode(req, BodyFraming::Length(3)),
            "POST /u HTTP/1.1\r\ncontent-length: 3\r\n\r\n"
        );
    }

    #[test]
    fn framing_choice() {
        assert_eq!(body_framing(&Method::GET, true, Some(0)), BodyFraming::None);
        assert_eq!(
            body_framing(&Method::POST, true, Some(0)),
            BodyFraming::Length(0)
        );
        assert_eq!(
            body_framing(&Method::PUT, false, Some(7)),
            BodyFraming::Length(7)
        );
        assert_eq!(
            body_framing(&Method::POST, false, None),
            BodyFraming::Chunked
        );
    }

    #[test]
    fn chunks_and_trailers() {
        let mut b = BytesMut::new();
        chunk_start(26, &mut b);
        b.put_slice(b"abcdefghijklmnopqrstuvwxyz");
        chunk_end(&mut b);
        let mut t = HeaderMap::new();
        t.insert("x-t", "1".parse().unwrap());
        last_chunk(Some(&t), &mut b);
        assert_eq!(
            &b[..],
            b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\n"
        );
    }
}
