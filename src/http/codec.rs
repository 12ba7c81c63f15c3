//! The downstream codec: picks HTTP/1.1 or HTTP/2 (prior knowledge) for a connection as the
//! HCM's `codec_type` says, and serves it with hyper's protocol-specific connection (no extra
//! I/O layer for detection: the HTTP/2 preface is peeked from the socket).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::listener::stream::DownstreamStream;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::Body;
use crate::config::hcm::{Codec, HcmConfig};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2.
    Http2,
}

/// Decides the protocol: fixed by the codec, or (AUTO) by ALPN on TLS and, on plaintext,
/// HTTP/2 exactly when the connection starts with the HTTP/2 preface. Reads nothing: the
/// bytes stay for the codec.
pub async fn detect(stream: &DownstreamStream, codec: Codec) -> std::io::Result<Protocol> {
    match codec {
        Codec::Http1 => return Ok(Protocol::Http1),
        Codec::Http2 => return Ok(Protocol::Http2),
        Codec::Auto => {}
    }
    let stream = match stream {
        DownstreamStream::Plain(s) => s,
        DownstreamStream::Tls(_, info) => {
            return Ok(if info.alpn.as_deref() == Some(b"h2") {
                Protocol::Http2
            } else {
                Protocol::Http1
            });
        }
    };
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(Protocol::Http1);
        }
        if buf[..n] != PREFACE[..n] {
            return Ok(Protocol::Http1);
        }
        if n == PREFACE.len() {
            return Ok(Protocol::Http2);
        }
        // A prefix of the preface: wait for more bytes.
        stream.readable().await?;
    }
}

pin_project_lite::pin_project! {
    /// A served downstream connection of either protocol.
    #[project = ServerConnProj]
    pub enum ServerConn<S>
    where
        S: HttpService<Incoming, ResBody = Body>,
    {
        /// HTTP/1.1 with upgrades.
        H1 { #[pin] conn: http1::UpgradeableConnection<TokioIo<DownstreamStream>, S> },
        /// HTTP/2.
        H2 { #[pin] conn: http2::Connection<TokioIo<DownstreamStream>, S, TokioExecutor> },
    }
}

impl<S> ServerConn<S>
where
    S: HttpService<Incoming, ResBody = Body>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Starts serving `stream` as `protocol` with the HCM's limits.
    pub fn new(stream: DownstreamStream, protocol: Protocol, cfg: &HcmConfig, service: S) -> Self {
        let io = TokioIo::new(stream);
        match protocol {
            Protocol::Http1 => {
                let mut b = http1::Builder::new();
                b.timer(TokioTimer::new())
                    .max_buf_size((cfg.max_request_headers_kb as usize * 1024).max(8192))
                    .header_read_timeout(cfg.request_headers_timeout);
                ServerConn::H1 {
                    conn: b.serve_connection(io, service).with_upgrades(),
                }
            }
            Protocol::Http2 => {
                let mut b = http2::Builder::new(TokioExecutor::new());
                b.timer(TokioTimer::new())
                    .max_header_list_size(cfg.max_request_headers_kb * 1024);
                if let Some(n) = cfg.http2_max_concurrent_streams {
                    b.max_concurrent_streams(n);
                }
                if let Some(w) = cfg.http2_initial_stream_window_size {
                    b.initial_stream_window_size(w);
                }
                if let Some(w) = cfg.http2_initial_connection_window_size {
                    b.initial_connection_window_size(w);
                }
                ServerConn::H2 {
                    conn: b.serve_connection(io, service),
                }
            }
        }
    }

    /// Starts a graceful close: HTTP/1.1 closes once the current response is sent, HTTP/2
    /// sends GOAWAY and lets open streams finish.
    pub fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            ServerConnProj::H1 { conn } => conn.graceful_shutdown(),
            ServerConnProj::H2 { conn } => conn.graceful_shutdown(),
        }
    }
}

impl<S> Future for ServerConn<S>
where
    S: HttpService<Incoming, ResBody = Body>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = Result<(), hyper::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ServerConnProj::H1 { conn } => conn.poll(cx),
            ServerConnProj::H2 { conn } => conn.poll(cx),
        }
    }
}
