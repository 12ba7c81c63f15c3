//! The http_inspector listener filter: peeks at the first bytes of a plaintext connection
//! (nothing is consumed) to tell HTTP/2 with prior knowledge (`h2c`) and HTTP/1.x
//! (`http/1.1`, `http/1.0`) from anything else, for filter-chain matching on
//! application_protocols. It reads at most one request line (8 KiB, as Envoy) and gives up at
//! the first byte that cannot be HTTP, so binary protocols are told apart at once. Envoy's
//! `http_inspector.*` stats.

use std::sync::Arc;
use tokio::net::TcpStream;

use crate::stats::{Counter, Store};

/// The most bytes inspected (Envoy's limit on the request line).
const MAX_INSPECT: usize = 8192;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// The HTTP/2 connection preface.
    H2c,
    /// An HTTP/1.1 request line.
    Http11,
    /// An HTTP/1.0 request line.
    Http10,
    /// Not HTTP.
    NotHttp,
    /// Consistent with HTTP so far; more bytes are needed.
    NeedMore,
}

impl Detection {
    /// The application protocol Envoy reports for it.
    pub fn protocol(self) -> Option<&'static str> {
        match self {
            Detection::H2c => Some("h2c"),
            Detection::Http11 => Some("http/1.1"),
            Detection::Http10 => Some("http/1.0"),
            _ => None,
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Detects HTTP in the first bytes of a connection (pure).
pub fn detect(buf: &[u8]) -> Detection {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Detection::H2c
        } else {
            Detection::NeedMore
        };
    }
    // method SP request-target SP HTTP/1.x CRLF
    let mut i = 0;
    while i < buf.len() && is_tchar(buf[i]) {
        i += 1;
    }
    if i == buf.len() {
        return more_or_not(buf);
    }
    if i == 0 || buf[i] != b' ' {
        return Detection::NotHttp;
    }
    i += 1;
    let target = i;
    while i < buf.len() && buf[i].is_ascii_graphic() {
        i += 1;
    }
    if i == buf.len() {
        return more_or_not(buf);
    }
    if i == target || buf[i] != b' ' {
        return Detection::NotHttp;
    }
    i += 1;
    let version = &buf[i..];
    for (want, d) in [
        (&b"HTTP/1.1\r\n"[..], Detection::Http11),
        (&b"HTTP/1.0\r\n"[..], Detection::Http10),
    ] {
        let k = version.len().min(want.len());
        if version[..k] == want[..k] {
            return if k == want.len() { d } else { more_or_not(buf) };
        }
    }
    Detection::NotHttp
}

fn more_or_not(buf: &[u8]) -> Detection {
    if buf.len() >= MAX_INSPECT {
        Detection::NotHttp
    } else {
        Detection::NeedMore
    }
}

/// Envoy's http_inspector stats.
#[derive(Debug)]
pub struct HttpInspectorStats {
    read_error: Arc<Counter>,
    http10_found: Arc<Counter>,
    http11_found: Arc<Counter>,
    http2_found: Arc<Counter>,
    http_not_found: Arc<Counter>,
}

impl HttpInspectorStats {
    /// The stats, under `http_inspector.` as Envoy names them.
    pub fn new(store: &Store) -> Self {
        let c = |n: &str| store.counter(&format!("http_inspector.{n}"));
        Self {
            read_error: c("read_error"),
            http10_found: c("http10_found"),
            http11_found: c("http11_found"),
            http2_found: c("http2_found"),
            http_not_found: c("http_not_found"),
        }
    }
}

/// Peeks until the first bytes tell: the application protocol, or None for anything else.
/// Err when the connection closed or failed first (it is then closed).
pub async fn run(
    stream: &TcpStream,
    stats: &HttpInspectorStats,
) -> Result<Option<&'static str>, ()> {
    let mut buf = vec![0u8; 512];
    let mut seen = 0;
    loop {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => {
                stats.read_error.inc();
                return Err(());
            }
            Ok(n) => n,
        };
        let d = detect(&buf[..n]);
        let counter = match d {
            Detection::H2c => &stats.http2_found,
            Detection::Http11 => &stats.http11_found,
            Detection::Http10 => &stats.http10_found,
            Detection::NotHttp => &stats.http_not_found,
            Detection::NeedMore => {
                if n == buf.len() {
                    buf.resize((buf.len() * 2).min(MAX_INSPECT), 0);
                } else if super::peek::wait_for_more(stream, n, &mut seen)
                    .await
                    .is_err()
                {
                    stats.read_error.inc();
                    return Err(());
                }
                continue;
            }
        };
        counter.inc();
        return Ok(d.protocol());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_http_versions_and_h2c() {
        assert_eq!(
            detect(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Detection::Http11
        );
        assert_eq!(detect(b"POST /x?y=1 HTTP/1.0\r\n"), Detection::Http10);
        assert_eq!(detect(H2_PREFACE), Detection::H2c);
        assert_eq!(detect(b"PRI * HTTP/2.0\r\n"), Detection::NeedMore);
    }

    #[test]
    fn waits_only_while_it_could_still_be_http() {
        assert_eq!(detect(b"GE"), Detection::NeedMore);
        assert_eq!(detect(b"GET /long/pa"), Detection::NeedMore);
        assert_eq!(detect(b"GET / HTTP/1."), Detection::NeedMore);
        assert_eq!(detect(b"GET / HTTP/1.1\r"), Detection::NeedMore);
    }

    #[test]
    fn gives_up_at_the_first_byte_that_is_not_http() {
        assert_eq!(detect(b"\x16\x03\x01"), Detection::NotHttp, "TLS");
        assert_eq!(detect(b"\0\0\0\x08"), Detection::NotHttp, "binary");
        assert_eq!(detect(b"GET  / HTTP/1.1\r\n"), Detection::NotHttp);
        assert_eq!(detect(b"GET / HTTP/2.0\r\n"), Detection::NotHttp);
        assert_eq!(detect(b"GET / SIP/2.0\r\n"), Detection::NotHttp);
        assert_eq!(detect(b"GET /\r\n"), Detection::NotHttp, "HTTP/0.9");
        let long = [b'a'; MAX_INSPECT];
        assert_eq!(detect(&long), Detection::NotHttp);
    }
}
