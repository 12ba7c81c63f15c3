//! The upstream HTTP/1.1 codec against scripted upstreams: request and response framing,
//! connection reuse and close, 1xx, HEAD, malformed responses, and byte counters.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// What a scripted upstream answers to a request: the raw bytes, and whether to close the
/// connection afterwards (after `close_after`).
struct Answer {
    bytes: Vec<u8>,
    close_after: Option<Duration>,
}

fn answer(bytes: &str) -> Answer {
    Answer {
        bytes: bytes.as_bytes().to_vec(),
        close_after: None,
    }
}

/// The raw requests a scripted upstream received, and how many connections it accepted.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<String>>,
    connections: Mutex<usize>,
}

/// An upstream speaking raw bytes: reads each request (head plus a Content-Length or chunked
/// body), records it, and writes what `script` answers for the request's number.
async fn scripted<F>(script: F) -> (SocketAddr, Arc<Seen>)
where
    F: Fn(usize) -> Answer + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let script = Arc::new(script);
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            *s2.connections.lock().unwrap() += 1;
            let (seen, script) = (s2.clone(), script.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(req) = read_request(&mut sock, &mut buf).await else {
                        return;
                    };
                    let n = {
                        let mut r = seen.requests.lock().unwrap();
                        r.push(req);
                        r.len() - 1
                    };
                    let a = script(n);
                    if sock.write_all(&a.bytes).await.is_err() {
                        return;
                    }
                    if let Some(d) = a.close_after {
                        tokio::time::sleep(d).await;
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Reads one request from `sock` (bytes left over stay in `buf`).
async fn read_request(sock: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let complete = |b: &[u8]| -> Option<usize> {
        let end = b.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
        if head.contains("transfer-encoding: chunked") {
            let body_end = b[end..].windows(5).position(|w| w == b"0\r\n\r\n")?;
            return Some(end + body_end + 5);
        }
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        (b.len() >= end + len).then_some(end + len)
    };
    loop {
        if let Some(n) = complete(buf) {
            let req: Vec<u8> = buf.drain(..n).collect();
            return Some(String::from_utf8_lossy(&req).into_owned());
        }
        let mut chunk = [0u8; 4096];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends raw bytes to the proxy on a new connection and reads until it closes.
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy answers and closes")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

#[tokio::test]
async fn request_bodies_keep_their_framing_upstream() {
    let (up, seen) = scripted(|_| answer(OK)).await;
    let p = Proxy::start(&one_route(up, "", "", ""));
    let l = p.listener("in").await;
    let chunked = raw(
        l,
        "POST /c HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 200"), "{chunked}");
    let sized = raw(
        l,
        "PUT /s HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await;
    assert!(sized.starts_with("HTTP/1.1 200"), "{sized}");
    let empty = raw(
        l,
        "POST /e HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(empty.starts_with("HTTP/1.1 200"), "{empty}");
    let reqs = seen.requests.lock().unwrap().clone();
    assert!(
        reqs[0].starts_with("POST /c HTTP/1.1\r\n")
            && reqs[0].contains("transfer-encoding: chunked\r\n")
            && reqs[0].ends_with("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "{:?}",
        reqs[0]
    );
    assert!(
        reqs[1].contains("content-length: 5\r\n") && reqs[1].ends_with("\r\n\r\nhello"),
        "{:?}",
        reqs[1]
    );
    assert!(
        reqs[2].contains("content-length: 0\r\n"),
        "a bodiless POST says so: {:?}",
        reqs[2]
    );
    assert!(
        !reqs.iter().any(|r| r.contains("connection:")),
        "hop-by-hop headers are not forwarded: {reqs:?}"
    );
    // Byte counters are the bytes on the wire.
    p.wait_stat("cluster.b.upstream_rq_200", 3).await;
    let sent: usize = reqs.iter().map(String::len).sum();
    assert_eq!(
        p.stat("cluster.b.upstream_cx_tx_bytes_total").await,
        sent as i64
    );
    assert_eq!(
        p.stat("cluster.b.upstream_cx_rx_bytes_total").await,
        3 * OK.len() as i64
    );
    assert_eq!(
        *seen.connections.lock().unwrap(),
        1,
        "one reused connection"
    );
}

#[tokio::test]
async fn connection_close_and_upstream_closes_are_not_reused() {
    // Request 0 answers `connection: close`; request 1 keeps alive, then the upstream closes
    // the idle connection; request 2 must go on a new connection.
    let (up, seen) = scripted(|n| match n {
        0 => Answer {
            bytes: b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            close_after: Some(Duration::ZERO),
        },
        1 => Answer {
            bytes: OK.as_bytes().to_vec(),
            close_after: Some(Duration::from_millis(50)),
        },
        _ => answer(OK),
    })
    .await;
    let p = Proxy::start(&one_route(up, "", "", ""));
    let l = p.listener("in").await;
    assert_eq!(get(l, "/0").await.0, 200);
    assert_eq!(get(l, "/1").await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _, body) = get(l, "/2").await;
    assert_eq!((s, body.as_str()), (200, "ok"));
    assert_eq!(*seen.connections.lock().unwrap(), 3);
    assert_eq!(p.stat("cluster.b.upstream_cx_total").await, 3);
    assert_eq!(p.stat("cluster.b.upstream_rq_rx_reset").await, 0);
    p.wait_stat("cluster.b.upstream_cx_destroy", 2).await;
}

#[tokio::test]
async fn response_framing_variants_are_relayed() {
    let (up, _) = scripted(|n| match n {
        0 => answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal"),
        1 => answer(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n",
        ),
        _ => Answer {
            bytes: b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec(),
            close_after: Some(Duration::ZERO),
        },
    })
    .await;
    let p = Proxy::start(&one_route(up, "", "", ""));
    let l = p.listener("in").await;
    assert_eq!(get(l, "/continue").await.2, "final");
    assert_eq!(get(l, "/chunked").await.2, "abcdefg");
    assert_eq!(get(l, "/close").await.2, "until close");
    assert_eq!(
        p.stat("cluster.b.upstream_cx_total").await,
        1,
        "the first two shared a connection"
    );
}

#[tokio::test]
async fn head_responses_have_no_body_and_keep_the_connection() {
    let (up, seen) = scripted(|n| match n {
        0 => answer("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"),
        _ => answer(OK),
    })
    .await;
    let p = Proxy::start(&one_route(up, "", "", ""));
    let l = p.listener("in").await;
    let head = raw(l, "HEAD / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("content-length: 100"),
        "{head}"
    );
    assert!(head.ends_with("\r\n\r\n"), "no body: {head:?}");
    assert_eq!(get(l, "/").await.2, "ok");
    assert_eq!(*seen.connections.lock().unwrap(), 1);
}

#[tokio::test]
async fn malformed_upstream_responses_are_503_and_the_proxy_keeps_serving() {
    let (up, _) = scripted(|n| match n {
        0 => Answer {
            bytes: b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(),
            close_after: Some(Duration::ZERO),
        },
        1 => Answer {
            bytes: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec(),
            close_after: Some(Duration::ZERO),
        },
        2 => Answer {
            bytes: b"HTTP/1.1 200 OK\r\ncontent-le".to_vec(),
            close_after: Some(Duration::ZERO),
        },
        _ => answer(OK),
    })
    .await;
    let p = Proxy::start(&one_route(up, "", "", ""));
    let l = p.listener("in").await;
    for what in ["garbage", "conflicting framing", "cut head"] {
        let (s, _, body) = get(l, "/").await;
        assert_eq!(s, 503, "{what}: {body}");
        assert!(
            body.contains("reset reason: connection termination"),
            "{what}: {body}"
        );
    }
    assert_eq!(p.stat("cluster.b.upstream_rq_rx_reset").await, 3);
    assert_eq!(get(l, "/").await.2, "ok");
}
