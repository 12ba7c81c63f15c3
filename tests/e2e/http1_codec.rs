//! The downstream HTTP/1.1 codec on the wire: pipelining, 100-continue, chunked uploads,
//! HTTP/1.0 keep-alive, HEAD, a client that leaves mid-request, and request_headers_timeout.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// One response read off a raw connection.
struct Reply {
    head: String,
    body: String,
}

impl Reply {
    fn status(&self) -> u16 {
        self.head[9..12].parse().unwrap()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Reads one response framed by Content-Length (no body for HEAD when `head_request`), keeping
/// any bytes past it in `buf`.
async fn read_reply(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = if head_request {
                0
            } else {
                head.lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0)
            };
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                buf.drain(..end + 4 + len);
                return Reply { head, body };
            }
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn proxy(hcm_extra: &str) -> (Proxy, std::net::SocketAddr) {
    let up = echo_upstream("a").await;
    let p = Proxy::start(&one_route(up, hcm_extra, "", ""));
    let addr = p.listener("in").await;
    (p, addr)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (p, addr) = proxy("").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The first request is the slowest: its answer must still come first.
    s.write_all(
        b"GET /sleep/200/a HTTP/1.1\r\nhost: h\r\n\r\nGET /b HTTP/1.1\r\nhost: h\r\n\r\nPOST /c HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\nxyz",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    for (uri, body) in [("/sleep/200/a", ""), ("/b", ""), ("/c", "xyz")] {
        let r = read_reply(&mut s, &mut buf, false).await;
        assert_eq!(r.status(), 200, "{}", r.head);
        assert_eq!(r.json()["uri"], uri);
        assert_eq!(r.json()["body"], body);
    }
    assert_eq!(p.stat("http.in.downstream_rq_total").await, 3);
    assert_eq!(p.stat("http.in.downstream_cx_total").await, 1);
}

#[tokio::test]
async fn expect_continue_is_answered_by_the_proxy() {
    let (_p, addr) = proxy("").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"PUT /up HTTP/1.1\r\nhost: h\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let interim = read_reply(&mut s, &mut buf, false).await;
    assert_eq!(interim.head, "HTTP/1.1 100 Continue");
    s.write_all(b"hello").await.unwrap();
    let r = read_reply(&mut s, &mut buf, false).await;
    assert_eq!(r.status(), 200, "{}", r.head);
    let v = r.json();
    assert_eq!(v["body"], "hello");
    // As Envoy without proxy_100_continue: the upstream never sees the expectation.
    assert!(v["headers"].get("expect").is_none(), "{v}");
}

#[tokio::test]
async fn chunked_uploads_reach_the_upstream_whole() {
    let (p, addr) = proxy("").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /c HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let r = read_reply(&mut s, &mut buf, false).await;
    assert_eq!(r.status(), 200, "{}", r.head);
    assert_eq!(r.json()["body"], "hello world");
    // The connection carries the next request.
    s.write_all(b"GET /next HTTP/1.1\r\nhost: h\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_reply(&mut s, &mut buf, false).await.json()["uri"],
        "/next"
    );
    assert_eq!(p.stat("http.in.downstream_cx_total").await, 1);
}

/// Sends a chunked upload with a malformed chunk size through a proxy whose cluster has
/// `cluster_extra`, and checks Envoy's answer: 400, the connection closed, a protocol error.
async fn malformed_chunked_upload(cluster_extra: &str) {
    let up = echo_upstream("a").await;
    let p = Proxy::start(&one_route(up, "", "", cluster_extra));
    let addr = p.listener("in").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /c HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n",
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("the connection ends");
    let text = String::from_utf8_lossy(&all);
    // As Envoy's codec: 400 and the connection closed; the upstream request is cut off.
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    p.wait_stat("http.in.downstream_cx_protocol_error", 1).await;
    assert_eq!(p.stat("http.in.downstream_rq_4xx").await, 1);
    assert_eq!(p.stat("cluster.b.upstream_rq_200").await, 0);
}

#[tokio::test]
async fn malformed_chunked_upload_is_a_protocol_error() {
    malformed_chunked_upload("").await;
}

#[tokio::test]
async fn malformed_chunked_upload_to_an_h2_upstream_is_a_protocol_error() {
    malformed_chunked_upload(H2_UPSTREAM).await;
}

#[tokio::test]
async fn http10_keep_alive_is_honoured() {
    let (_p, addr) = proxy("          http_protocol_options: {accept_http_10: true}\n").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    for path in ["/one", "/two"] {
        s.write_all(format!("GET {path} HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let r = read_reply(&mut s, &mut buf, false).await;
        assert!(r.head.starts_with("HTTP/1.0 200"), "{}", r.head);
        assert_eq!(r.header("connection").as_deref(), Some("keep-alive"));
        assert_eq!(r.json()["uri"], path);
    }
    // Without keep-alive, HTTP/1.0 closes after the response.
    s.write_all(b"GET /last HTTP/1.0\r\n\r\n").await.unwrap();
    let r = read_reply(&mut s, &mut buf, false).await;
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn head_responses_carry_no_body() {
    let (_p, addr) = proxy("").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"HEAD /h HTTP/1.1\r\nhost: h\r\n\r\nGET /g HTTP/1.1\r\nhost: h\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let head = read_reply(&mut s, &mut buf, true).await;
    assert_eq!(head.status(), 200, "{}", head.head);
    // The next response starts right after the HEAD response's head.
    let r = read_reply(&mut s, &mut buf, false).await;
    assert_eq!(r.status(), 200, "{}", r.head);
    assert_eq!(r.json()["uri"], "/g");
}

#[tokio::test]
async fn a_client_that_leaves_cancels_its_upstream_request() {
    let (p, addr) = proxy("").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /sleep/4000 HTTP/1.1\r\nhost: h\r\n\r\n")
        .await
        .unwrap();
    p.wait_stat("cluster.b.upstream_rq_active", 1).await;
    drop(s);
    let started = Instant::now();
    p.wait_stat("cluster.b.upstream_rq_active", 0).await;
    p.wait_stat("http.in.downstream_rq_active", 0).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(p.stat("cluster.b.upstream_rq_200").await, 0);
}

#[tokio::test]
async fn request_headers_timeout_closes_a_slow_head() {
    let (p, addr) = proxy("          request_headers_timeout: 0.3s\n").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: h\r\n").await.unwrap();
    let started = Instant::now();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("closed by the proxy")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(p.stat("http.in.downstream_rq_total").await, 0);
    // A connection that is only idle between requests is not cut by it.
    let mut s = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(b"GET /late HTTP/1.1\r\nhost: h\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_reply(&mut s, &mut buf, false).await.status(), 200);
}
