//! The downstream codec: picks HTTP/1.1 or HTTP/2 (prior knowledge) for a connection as the
//! HCM's `codec_type` says, and serves it: HTTP/1.1 with the inline codec (`super::h1`),
//! HTTP/2 with hyper's server (no extra I/O layer for detection: the HTTP/2 preface is peeked
//! from the socket).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;

use crate::listener::stream::DownstreamStream;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::h1::{Settings, Shutdown};
use super::{Body, DownstreamBody};
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

/// Adapts a connection manager handler to hyper's service trait (HTTP/2, and HTTP/1.1
/// connections handed to hyper for an upgrade).
#[derive(Debug, Clone)]
pub struct HyperService<F>(pub F);

impl<F, Fut> hyper::service::Service<Request<Incoming>> for HyperService<F>
where
    F: Fn(Request<DownstreamBody>) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Infallibly<Fut>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        Infallibly {
            inner: (self.0)(req.map(DownstreamBody::Hyper)),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response future that cannot fail, as hyper's service wants it.
    pub struct Infallibly<Fut> {
        #[pin]
        inner: Fut,
    }
}

impl<Fut: Future<Output = Response<Body>>> Future for Infallibly<Fut> {
    type Output = Result<Response<Body>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map(Ok)
    }
}

/// The error a served connection ends with.
pub type ConnError = super::h1::ConnError;

/// A served downstream connection of either protocol.
pub struct ServerConn {
    conn: Pin<Box<dyn Future<Output = Result<(), ConnError>> + Send>>,
    shutdown: Arc<Shutdown>,
}

impl ServerConn {
    /// Starts serving `stream` as `protocol` with the HCM's limits; `handler` answers each
    /// request.
    pub fn new<F, Fut>(
        stream: DownstreamStream,
        protocol: Protocol,
        cfg: &HcmConfig,
        handler: F,
    ) -> Self
    where
        F: Fn(Request<DownstreamBody>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let shutdown = Arc::new(Shutdown::default());
        let conn: Pin<Box<dyn Future<Output = Result<(), ConnError>> + Send>> = match protocol {
            Protocol::Http1 => {
                let settings = Settings {
                    max_head: cfg.max_request_headers_kb as usize * 1024,
                    headers_timeout: cfg.request_headers_timeout,
                };
                Box::pin(super::h1::serve(
                    stream,
                    settings,
                    shutdown.clone(),
                    handler,
                ))
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
                let conn = b.serve_connection(TokioIo::new(stream), HyperService(handler));
                let shutdown = shutdown.clone();
                Box::pin(async move {
                    super::h1::drive_hyper(conn, &shutdown, |c| c.graceful_shutdown()).await
                })
            }
        };
        Self { conn, shutdown }
    }

    /// Starts a graceful close: HTTP/1.1 closes once the current response is sent (or now,
    /// between requests), HTTP/2 sends GOAWAY and lets open streams finish.
    pub fn graceful_shutdown(&mut self) {
        self.shutdown.ask();
    }
}

impl Future for ServerConn {
    type Output = Result<(), ConnError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.conn.as_mut().poll(cx)
    }
}
