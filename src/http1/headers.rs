//! A head's header lines, turned into the message's header map plus what its connection-level
//! headers say (RFC 9110 section 7.6.1, RFC 9112 sections 6 and 9): body framing, persistence,
//! upgrade and expectation, all read in one pass over the raw lines.
//!
//! Those headers belong to the hop, not to the message: the map gets only the end-to-end
//! headers, as Envoy's connection manager removes `connection`, `keep-alive`,
//! `proxy-connection`, `transfer-encoding` and `upgrade` before filters and routing see a
//! request, and the same from a response before it is sent on. (An upgrade is served by hyper,
//! which keeps them.) `connection` stays in the map when it names other headers, so the
//! proxy drops those too before forwarding.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Version};

/// Most headers a head may carry (Envoy's default `max_headers_count`).
pub const MAX_HEADERS: usize = 100;

/// Room left in a parsed request's header map for the headers the proxy adds on the way
/// upstream (x-forwarded-proto, x-request-id, x-envoy-expected-rq-timeout-ms, ...).
///
/// A header map holds up to 6 headers in an allocation under 1 KiB (glibc's per-thread cache
/// serves those quickly); the next size up costs several times more to allocate, and growing a
/// full map costs a rehash. The room is sized for the common case: a request of a few headers
/// gets its additions without growing, a response (`RESPONSE_HEADROOM`) its
/// x-envoy-upstream-service-time.
pub const REQUEST_HEADROOM: usize = 4;

/// Room left in a parsed response's header map (see `REQUEST_HEADROOM`).
pub const RESPONSE_HEADROOM: usize = 1;

/// Where one header's name and value lie in a head's bytes: name start and end, value start
/// and end.
pub type Span = (u32, u32, u32, u32);

/// The spans of a head's header lines, held inline (a head has at most [`MAX_HEADERS`]): on
/// the caller's stack, neither allocated nor zeroed per message.
pub type Spans = smallvec::SmallVec<[Span; MAX_HEADERS]>;

/// Notes where each of `headers` (parsed from `buf`) lies, into `spans`, so the map can be
/// built once the head is split off the buffer.
pub fn record_spans(buf: &[u8], headers: &[httparse::Header<'_>], spans: &mut Spans) {
    let base = buf.as_ptr() as usize;
    for h in headers.iter().take(MAX_HEADERS) {
        let n = (h.name.as_ptr() as usize - base) as u32;
        let v = (h.value.as_ptr() as usize - base) as u32;
        spans.push((n, n + h.name.len() as u32, v, v + h.value.len() as u32));
    }
}

/// A Content-Length value: 1 to 19 decimal digits (so it fits in a u64), nothing else.
pub fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The headers the codec reads itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connection,
    ContentLength,
    TransferEncoding,
    Upgrade,
    KeepAlive,
    ProxyConnection,
    Expect,
    EndToEnd,
}

impl Kind {
    fn of(name: &HeaderName) -> Kind {
        match name.as_str() {
            "expect" => Kind::Expect,
            "upgrade" => Kind::Upgrade,
            "connection" => Kind::Connection,
            "keep-alive" => Kind::KeepAlive,
            "content-length" => Kind::ContentLength,
            "proxy-connection" => Kind::ProxyConnection,
            "transfer-encoding" => Kind::TransferEncoding,
            _ => Kind::EndToEnd,
        }
    }
}

/// What a head's connection-level headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// `connection` lists `close`.
    pub close: bool,
    /// `connection` lists `keep-alive`.
    pub keep_alive: bool,
    /// `connection` lists `upgrade` and an `upgrade` header is present.
    pub upgrade: bool,
    /// `expect: 100-continue` (the first `expect` header).
    pub expect_continue: bool,
    /// Whether the last transfer coding is chunked; None without `transfer-encoding`.
    pub chunked: Option<bool>,
    /// The Content-Length (all its values agree), or why it is refused.
    pub length: Result<Option<u64>, &'static str>,
    /// `connection` names other headers, which the proxy must drop before forwarding.
    names_others: bool,
}

impl Default for Hop {
    fn default() -> Self {
        Hop {
            close: false,
            keep_alive: false,
            upgrade: false,
            expect_continue: false,
            chunked: None,
            length: Ok(None),
            names_others: false,
        }
    }
}

impl Hop {
    /// HTTP/1.1 keeps the connection unless `connection: close`; HTTP/1.0 only with
    /// `connection: keep-alive`. The same for requests and responses.
    pub fn keeps_alive(&self, version: Version) -> bool {
        if version == Version::HTTP_10 {
            self.keep_alive
        } else {
            !self.close
        }
    }

    fn connection(&mut self, value: &[u8], upgrade_token: &mut bool) {
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                *upgrade_token = true;
            } else if !token.is_empty() {
                self.names_others = true;
            }
        }
    }

    fn content_length(&mut self, value: &[u8]) {
        for part in value.split(|b| *b == b',') {
            self.length = match (self.length, decimal(part.trim_ascii())) {
                (Err(e), _) => Err(e),
                (_, None) => Err("invalid content-length"),
                (Ok(Some(l)), Some(n)) if l != n => Err("conflicting content-length values"),
                (_, Some(n)) => Ok(Some(n)),
            };
        }
    }

    fn transfer_encoding(&mut self, value: &[u8]) {
        let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
        self.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    }
}

/// The header map of a head whose header lines lie at `spans` in `head`, and what its
/// connection-level headers say. Values share the head's bytes; names are interned when
/// standard. `headroom`: room for that many more headers. The map is `spare` when there is
/// one (a finished message's map, emptied: its storage is reused, which saves the map's two
/// allocations), else a new one.
pub fn read(
    head: &Bytes,
    spans: &[Span],
    headroom: usize,
    spare: &mut Option<HeaderMap>,
) -> Result<(HeaderMap, Hop), &'static str> {
    let mut headers = match spare.take() {
        Some(mut map) => {
            if !map.is_empty() {
                map.clear();
            }
            map.reserve(spans.len() + headroom);
            map
        }
        None => HeaderMap::with_capacity(spans.len() + headroom),
    };
    let mut hop = Hop::default();
    let (mut upgrade_token, mut upgrade_header, mut expect_seen) = (false, false, false);
    for &(n0, n1, v0, v1) in spans {
        let name = HeaderName::from_bytes(&head[n0 as usize..n1 as usize])
            .map_err(|_| "invalid header name")?;
        let raw = &head[v0 as usize..v1 as usize];
        match Kind::of(&name) {
            Kind::EndToEnd => {}
            Kind::ContentLength => hop.content_length(raw),
            Kind::Expect => {
                if !expect_seen {
                    expect_seen = true;
                    hop.expect_continue = raw.eq_ignore_ascii_case(b"100-continue");
                }
            }
            Kind::Connection => {
                hop.connection(raw, &mut upgrade_token);
                continue;
            }
            Kind::TransferEncoding => {
                hop.transfer_encoding(raw);
                continue;
            }
            Kind::Upgrade => {
                upgrade_header = true;
                continue;
            }
            Kind::KeepAlive | Kind::ProxyConnection => continue,
        }
        headers.append(name, value(head, v0, v1)?);
    }
    hop.upgrade = upgrade_token && upgrade_header;
    if hop.names_others {
        // Rare: `connection` names headers to drop; it stays for the proxy to read.
        for &(n0, n1, v0, v1) in spans {
            if head[n0 as usize..n1 as usize].eq_ignore_ascii_case(b"connection") {
                headers.append(http::header::CONNECTION, value(head, v0, v1)?);
            }
        }
    }
    Ok((headers, hop))
}

/// Keeps a finished message's map as `spare` for the next head, emptied now so its values
/// (which share a read buffer) release that buffer at once.
pub fn keep_spare(spare: &mut Option<HeaderMap>, mut map: HeaderMap) {
    map.clear();
    *spare = Some(map);
}

fn value(head: &Bytes, start: u32, end: u32) -> Result<HeaderValue, &'static str> {
    HeaderValue::from_maybe_shared(head.slice(start as usize..end as usize))
        .map_err(|_| "invalid header value")
}

/// Whether a `connection` header of `headers` lists `token` (case-insensitive).
pub fn connection_has(headers: &HeaderMap, token: &[u8]) -> bool {
    headers.get_all(http::header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the header lines of `lines` (each "name: value").
    fn parse(lines: &[&str]) -> (HeaderMap, Hop) {
        parse_into(lines, &mut None)
    }

    /// Reads the header lines of `lines` into `spare`'s storage, when there is one.
    fn parse_into(lines: &[&str], spare: &mut Option<HeaderMap>) -> (HeaderMap, Hop) {
        let text: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
        let head = Bytes::from(format!("{text}\r\n"));
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let httparse::Status::Complete((_, parsed)) =
            httparse::parse_headers(&head, &mut slots).unwrap()
        else {
            panic!("partial");
        };
        let mut spans = Spans::new();
        record_spans(&head, parsed, &mut spans);
        read(&head, &spans, 0, spare).unwrap()
    }

    #[test]
    fn connection_level_headers_leave_the_map() {
        let (map, hop) = parse(&[
            "Host: a",
            "Connection: keep-alive",
            "Keep-Alive: timeout=5",
            "Proxy-Connection: keep-alive",
            "Transfer-Encoding: gzip, chunked",
            "Upgrade: websocket",
            "Content-Length: 3",
            "Expect: 100-continue",
            "X-A: 1",
        ]);
        let names: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["host", "content-length", "expect", "x-a"]);
        assert!(hop.keep_alive && !hop.close && !hop.upgrade && hop.expect_continue);
        assert_eq!(hop.chunked, Some(true));
        assert_eq!(hop.length, Ok(Some(3)));
    }

    #[test]
    fn a_spare_map_is_emptied_and_reused() {
        let mut old = HeaderMap::with_capacity(16);
        old.insert("x-old", HeaderValue::from_static("gone"));
        let capacity = old.capacity();
        let mut spare = Some(old);
        let (map, _) = parse_into(&["x-new: 1"], &mut spare);
        assert!(spare.is_none());
        assert_eq!(map.len(), 1);
        assert_eq!(map["x-new"], "1");
        assert_eq!(map.capacity(), capacity, "the spare's storage was kept");
    }

    #[test]
    fn connection_naming_other_headers_stays() {
        let (map, hop) = parse(&["connection: x-hop, Close", "x-hop: 1"]);
        assert!(hop.close);
        assert_eq!(map["connection"], "x-hop, Close");
        assert_eq!(map["x-hop"], "1");
    }

    #[test]
    fn upgrade_needs_both_headers() {
        assert!(
            parse(&["connection: Upgrade", "upgrade: websocket"])
                .1
                .upgrade
        );
        assert!(!parse(&["upgrade: websocket"]).1.upgrade);
        assert!(!parse(&["connection: upgrade"]).1.upgrade);
    }

    #[test]
    fn persistence_by_version() {
        let (_, none) = parse(&[]);
        assert!(none.keeps_alive(Version::HTTP_11) && !none.keeps_alive(Version::HTTP_10));
        let (_, ka) = parse(&["connection: keep-alive"]);
        assert!(ka.keeps_alive(Version::HTTP_10));
        let (_, close) = parse(&["connection: foo, close"]);
        assert!(!close.keeps_alive(Version::HTTP_11));
    }

    #[test]
    fn content_length_values_must_agree_and_be_numbers() {
        let length = |lines: &[&str]| parse(lines).1.length;
        assert_eq!(length(&["content-length: 5, 5"]), Ok(Some(5)));
        assert_eq!(
            length(&["content-length: 5", "content-length: 5"]),
            Ok(Some(5))
        );
        assert_eq!(
            length(&["content-length: 5", "content-length: 6"]),
            Err("conflicting content-length values")
        );
        for bad in ["-1", "", "1 2", "99999999999999999999"] {
            assert_eq!(
                length(&[&format!("content-length: {bad}")]),
                Err("invalid content-length"),
                "{bad}"
            );
        }
        assert_eq!(length(&[]), Ok(None));
    }

    #[test]
    fn last_transfer_coding_decides_chunked() {
        assert_eq!(
            parse(&["transfer-encoding: chunked, gzip"]).1.chunked,
            Some(false)
        );
        assert_eq!(
            parse(&["transfer-encoding: gzip", "transfer-encoding: Chunked"])
                .1
                .chunked,
            Some(true)
        );
    }
}
