//! Reading an HTTP/1.1 response: the head (status line and headers, zero-copy over the read
//! buffer), how its body is framed (RFC 9112 section 6.3), and the body itself, including
//! chunked encoding with trailers. Pure: bytes in, frames out.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use super::headers::{self, Hop, MAX_HEADERS, RESPONSE_HEADROOM, Spans, record_spans};

/// Longest chunk-size line accepted (hex digits plus extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// Splits up to `left` body bytes off the front of `buf`; returns them and how many of
/// `left` are still to come.
fn take(buf: &mut BytesMut, left: u64) -> (Bytes, u64) {
    let n = left.min(buf.len() as u64);
    (buf.split_to(n as usize).freeze(), left - n)
}

/// Why a response could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The head is not HTTP/1.x.
    #[error("malformed response head: {0}")]
    Head(&'static str),
    /// The head is larger than the limit.
    #[error("response head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// Content-Length and Transfer-Encoding disagree or do not parse.
    #[error("invalid response framing: {0}")]
    Framing(&'static str),
    /// The chunked encoding is malformed.
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304, or Content-Length: 0).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the upstream closes.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// Status.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Headers, as received.
    pub headers: HeaderMap,
    /// Body framing.
    pub framing: Framing,
    /// Whether the connection may carry another request once this exchange ends.
    pub keep_alive: bool,
}

/// Parses a response head from the front of `buf`, removing it. `None`: more bytes needed.
/// Informational (1xx) responses are skipped: an upstream may send 100 Continue before the
/// final response. `head_request`: the request was HEAD, so the response has no body.
/// `spare`: an emptied map whose storage the head's map may reuse (see `headers::read`).
pub fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
    max_len: usize,
    spare: &mut Option<HeaderMap>,
) -> Result<Option<Head>, DecodeError> {
    loop {
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if buf.len() > max_len {
                    return Err(DecodeError::HeadTooLarge(max_len));
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(DecodeError::Head("too many headers"));
            }
            Err(_) => return Err(DecodeError::Head("not an HTTP/1.x response")),
        };
        if len > max_len {
            return Err(DecodeError::HeadTooLarge(max_len));
        }
        let code = parsed.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| DecodeError::Head("bad status"))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(DecodeError::Head("101 to a request that did not upgrade"));
            }
            buf.advance(len);
            continue;
        }
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let mut spans = Spans::new();
        record_spans(buf, parsed.headers, &mut spans);
        let head_bytes = buf.split_to(len).freeze();
        let (headers, hop) = headers::read(&head_bytes, &spans, RESPONSE_HEADROOM, spare)
            .map_err(DecodeError::Head)?;
        let framing = framing(status, &hop, head_request)?;
        let keep_alive = framing != Framing::UntilClose && hop.keeps_alive(version);
        return Ok(Some(Head {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// RFC 9112 section 6.3, as Envoy applies it: a response with both Transfer-Encoding and
/// Content-Length is refused, as is a Content-Length that does not parse or repeats with
/// different values.
fn framing(status: StatusCode, hop: &Hop, head_request: bool) -> Result<Framing, DecodeError> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Empty);
    }
    if let Some(chunked) = hop.chunked {
        if hop.length != Ok(None) {
            return Err(DecodeError::Framing(
                "both transfer-encoding and content-length",
            ));
        }
        return Ok(if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    Ok(match hop.length.map_err(DecodeError::Framing)? {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// One step of body decoding.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The chunked body's trailers; the body ends after them.
    Trailers(HeaderMap),
    /// The body ended.
    End,
    /// More bytes are needed.
    NeedMore,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailers or the final CRLF.
    Trailers,
}

/// The body decoder of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyDecoder {
    /// Bytes left of a Content-Length body.
    Length(u64),
    /// Chunked.
    Chunked(Chunk),
    /// Until the upstream closes.
    UntilClose,
    /// Finished.
    Done,
}

impl BodyDecoder {
    /// The decoder for `framing`.
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty => BodyDecoder::Done,
            Framing::Length(n) => BodyDecoder::Length(n),
            Framing::Chunked => BodyDecoder::Chunked(Chunk::Size),
            Framing::UntilClose => BodyDecoder::UntilClose,
        }
    }

    /// Whether the body ended.
    pub fn is_done(&self) -> bool {
        *self == BodyDecoder::Done
    }

    /// Bytes left, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            BodyDecoder::Length(n) => Some(*n),
            BodyDecoder::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next frame from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, DecodeError> {
        loop {
            match *self {
                BodyDecoder::Done => return Ok(Decoded::End),
                BodyDecoder::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let (data, left) = take(buf, left);
                    *self = if left == 0 {
                        BodyDecoder::Done
                    } else {
                        BodyDecoder::Length(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                BodyDecoder::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                BodyDecoder::Chunked(Chunk::Size) => {
                    let Some(eol) = find_crlf(buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(DecodeError::Chunked("chunk-size line too long"));
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&buf[..eol])?;
                    buf.advance(eol + 2);
                    *self = BodyDecoder::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                BodyDecoder::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let (data, left) = take(buf, left);
                    *self = BodyDecoder::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Decoded::Data(data));
                }
                BodyDecoder::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(DecodeError::Chunked("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = BodyDecoder::Chunked(Chunk::Size);
                }
                BodyDecoder::Chunked(Chunk::Trailers) => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] == b"\r\n" {
                        buf.advance(2);
                        *self = BodyDecoder::Done;
                        return Ok(Decoded::End);
                    }
                    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let len = match httparse::parse_headers(buf, &mut slots) {
                        Ok(httparse::Status::Complete((len, _))) => len,
                        Ok(httparse::Status::Partial) => {
                            if buf.len() > MAX_CHUNK_LINE * 16 {
                                return Err(DecodeError::Chunked("trailers too large"));
                            }
                            return Ok(Decoded::NeedMore);
                        }
                        Err(_) => return Err(DecodeError::Chunked("malformed trailers")),
                    };
                    let mut trailers = HeaderMap::new();
                    for h in slots.iter().take_while(|h| !h.name.is_empty()) {
                        let name = HeaderName::from_bytes(h.name.as_bytes())
                            .map_err(|_| DecodeError::Chunked("invalid trailer name"))?;
                        let value = HeaderValue::from_bytes(h.value)
                            .map_err(|_| DecodeError::Chunked("invalid trailer value"))?;
                        trailers.append(name, value);
                    }
                    buf.advance(len);
                    *self = BodyDecoder::Done;
                    return Ok(Decoded::Trailers(trailers));
                }
            }
        }
    }

    /// The upstream closed: the end of an until-close body, an error for any other body that
    /// has not ended.
    pub fn eof(&mut self) -> Result<Decoded, DecodeError> {
        match self {
            BodyDecoder::UntilClose | BodyDecoder::Done => {
                *self = BodyDecoder::Done;
                Ok(Decoded::End)
            }
            _ => Err(DecodeError::Framing(
                "upstream closed before the body ended",
            )),
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// The hex size of a chunk-size line, ignoring chunk extensions.
fn chunk_size(line: &[u8]) -> Result<u64, DecodeError> {
    let digits = line
        .iter()
        .position(|b| *b == b';' || *b == b' ' || *b == b'\t')
        .map_or(line, |i| &line[..i]);
    if digits.is_empty() || digits.len() > 15 {
        return Err(DecodeError::Chunked("bad chunk size"));
    }
    let mut n: u64 = 0;
    for d in digits {
        let v = (*d as char)
            .to_digit(16)
            .ok_or(DecodeError::Chunked("bad chunk size"))?;
        n = n * 16 + v as u64;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str, head_request: bool) -> Result<Option<Head>, DecodeError> {
        let mut b = BytesMut::from(s);
        parse_head(&mut b, head_request, 1024, &mut None)
    }

    fn body(framing: Framing, input: &[&str]) -> Result<(Vec<u8>, Option<HeaderMap>), DecodeError> {
        let mut d = BodyDecoder::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut trailers = None;
        for piece in input {
            buf.extend_from_slice(piece.as_bytes());
            loop {
                match d.decode(&mut buf)? {
                    Decoded::Data(b) => out.extend_from_slice(&b),
                    Decoded::Trailers(t) => trailers = Some(t),
                    Decoded::End => return Ok((out, trailers)),
                    Decoded::NeedMore => break,
                }
            }
        }
        d.eof()?;
        Ok((out, trailers))
    }

    #[test]
    fn head_with_length_keeps_alive() {
        let h = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\nhello",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers["x-a"], "b");
    }

    #[test]
    fn partial_head_waits_and_oversized_head_fails() {
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-le", false)
                .unwrap()
                .is_none()
        );
        let big = format!("HTTP/1.1 200 OK\r\nx: {}\r\n", "a".repeat(2000));
        assert_eq!(
            head(&big, false).unwrap_err(),
            DecodeError::HeadTooLarge(1024)
        );
    }

    #[test]
    fn informational_responses_are_skipped() {
        let h = head(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, 204);
        assert_eq!(h.framing, Framing::Empty);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |s: &str, head_rq| head(s, head_rq).map(|h| h.unwrap().framing);
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true),
            Ok(Framing::Empty)
        );
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                false
            ),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false),
            Ok(Framing::UntilClose)
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n", false), Ok(Framing::UntilClose));
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n",
                false
            ),
            Ok(Framing::Length(3))
        );
        assert!(
            f(
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(f("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", false).is_err());
        assert!(
            f(
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
                false
            )
            .is_err()
        );
    }

    #[test]
    fn connection_reuse_follows_the_version_and_connection_header() {
        let ka = |s: &str| head(s, false).unwrap().unwrap().keep_alive;
        assert!(!ka(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!ka("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(ka(
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(
            !ka("HTTP/1.1 200 OK\r\n\r\n"),
            "an until-close body ends the connection"
        );
    }

    #[test]
    fn garbage_and_unexpected_upgrade_are_errors() {
        assert!(head("SSH-2.0-OpenSSH\r\n\r\n", false).is_err());
        assert!(head("HTTP/1.1 101 Switching Protocols\r\n\r\n", false).is_err());
    }

    #[test]
    fn length_body_across_reads() {
        let (b, _) = body(Framing::Length(10), &["hello", "world", "extra"]).unwrap();
        assert_eq!(b, b"helloworld");
        assert!(
            body(Framing::Length(10), &["hello"]).is_err(),
            "closed early"
        );
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let (b, t) = body(
            Framing::Chunked,
            &[
                "5;ext=1\r\nhel",
                "lo\r\n6\r\n worl",
                "d\r\n0\r\ngrpc-status: 0\r\n\r\n",
            ],
        )
        .unwrap();
        assert_eq!(b, b"hello world");
        assert_eq!(t.unwrap()["grpc-status"], "0");
        let (b, t) = body(Framing::Chunked, &["3\r\nabc\r\n0\r\n\r\n"]).unwrap();
        assert_eq!(b, b"abc");
        assert!(t.is_none());
    }

    #[test]
    fn malformed_chunks_are_errors() {
        assert!(body(Framing::Chunked, &["zz\r\n"]).is_err());
        assert!(body(Framing::Chunked, &["3\r\nabcX"]).is_err());
        assert!(
            body(Framing::Chunked, &["3\r\nab"]).is_err(),
            "closed mid-chunk"
        );
    }

    #[test]
    fn until_close_body_ends_at_eof() {
        let (b, _) = body(Framing::UntilClose, &["a", "b"]).unwrap();
        assert_eq!(b, b"ab");
    }
}
