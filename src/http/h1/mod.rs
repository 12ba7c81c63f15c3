//! The downstream HTTP/1.1 codec, driven inline by the connection's task: it reads each request
//! head, calls the connection manager, and writes the response, with no tasks or channels in
//! between. Requests are served one at a time in order (pipelined ones wait in the read buffer).
//! A request that may switch protocols (an upgrade or CONNECT) hands the connection, with the
//! bytes read so far, to hyper's HTTP/1.1 server, which serves the rest of it.

pub mod body;
mod date;
pub mod request;
pub mod response;
pub mod rewind;

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, Version};
use hyper::body::Body as _;
use tokio::io::AsyncWrite;

use self::body::{Io, RequestBody, Shared, lock};
use self::request::{HeadError, RequestHead};
use self::response::{BodyFraming, Persistence};
use super::{Body, DownstreamBody};
use crate::http1::decode::{BodyDecoder, Framing};
use crate::http1::encode;
use crate::listener::stream::DownstreamStream;

/// A graceful close asked of a connection: it closes when idle, or after the response in
/// progress (which says `connection: close`). The connection's task is its only waiter, so a
/// single waker slot serves (registering costs an atomic swap, where a `Notify` would lock and
/// link a waiter on every request).
#[derive(Debug, Default)]
pub struct Shutdown {
    asked: AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl Shutdown {
    /// Asks the connection to close.
    pub fn ask(&self) {
        self.asked.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn asked(&self) -> bool {
        self.asked.load(Ordering::Acquire)
    }

    /// Ready once a close was asked; else the task is woken when it is.
    fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.asked() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.asked() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Resolves once a close was asked.
    pub async fn wait(&self) {
        poll_fn(|cx| self.poll_wait(cx)).await
    }
}

/// The connection manager's limits the codec enforces.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Largest request head (`max_request_headers_kb`).
    pub max_head: usize,
    /// Time from a request's first byte to its whole head (`request_headers_timeout`).
    pub headers_timeout: Option<Duration>,
}

/// Why a connection ended in error.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket failed.
    #[error("downstream connection error: {0}")]
    Io(#[from] std::io::Error),
    /// A request head was refused (answered with its status before closing).
    #[error("invalid request: {0}")]
    Head(HeadError),
    /// The request body broke its framing (answered 400 by the connection manager).
    #[error("malformed request body")]
    MalformedBody,
    /// The head did not arrive within `request_headers_timeout`.
    #[error("request headers timeout")]
    HeadersTimeout,
    /// The response body failed or did not match its Content-Length: the connection is cut.
    #[error("response body: {0}")]
    Response(super::BoxError),
    /// The connection was handed to hyper, which failed.
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

impl ConnError {
    /// Whether the peer broke the protocol (`downstream_cx_protocol_error`).
    pub fn is_protocol_error(&self) -> bool {
        match self {
            ConnError::Head(_) | ConnError::MalformedBody => true,
            ConnError::Hyper(e) => e.is_parse() || e.is_parse_too_large() || e.is_parse_status(),
            _ => false,
        }
    }
}

/// Where the socket is: owned by the connection, or shared with a request body being read.
enum Conn {
    Owned(Io),
    Shared(Arc<Mutex<Shared>>),
}

impl Conn {
    /// Writes all of `buf`, advancing it.
    fn poll_write_all(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<std::io::Result<()>> {
        match self {
            Conn::Owned(io) => write_all(&mut io.stream, cx, buf),
            Conn::Shared(s) => match lock(s).io.as_mut() {
                Some(io) => write_all(&mut io.stream, cx, buf),
                None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
            },
        }
    }

    /// Watches for the peer leaving while a response is awaited: Ready when it closed or
    /// failed. Bytes that arrive meanwhile (a pipelined request) stay buffered, up to `max`;
    /// nothing is read while a request body is still being read by the body.
    fn poll_peer_gone(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<()> {
        let mut shared;
        let io = match self {
            Conn::Owned(io) => io,
            Conn::Shared(s) => {
                shared = lock(s);
                if !shared.decoder.is_done() {
                    return Poll::Pending;
                }
                match shared.io.as_mut() {
                    Some(io) => io,
                    None => return Poll::Ready(()),
                }
            }
        };
        loop {
            if io.read_buf.len() > max {
                return Poll::Pending;
            }
            match ready!(io.poll_fill(cx)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(_) => {}
            }
        }
    }

    /// Takes the socket back once the request body was read whole; the connection back if it
    /// was not (it cannot be reused).
    fn reclaim(self) -> Result<Io, Conn> {
        match self {
            Conn::Owned(io) => Ok(io),
            Conn::Shared(s) => {
                let taken = {
                    let mut g = lock(&s);
                    if g.decoder.is_done() {
                        g.io.take()
                    } else {
                        None
                    }
                };
                taken.ok_or(Conn::Shared(s))
            }
        }
    }

    fn request_body_malformed(&self) -> bool {
        match self {
            Conn::Owned(_) => false,
            Conn::Shared(s) => lock(s).malformed,
        }
    }

    fn request_body_done(&self) -> bool {
        match self {
            Conn::Owned(_) => true,
            Conn::Shared(s) => lock(s).decoder.is_done(),
        }
    }
}

/// Writes all of `buf` to `stream`, advancing it.
fn write_all(
    stream: &mut DownstreamStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<()>> {
    while !buf.is_empty() {
        let n = ready!(Pin::new(&mut *stream).poll_write(cx, buf))?;
        if n == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        crate::http1::consume(buf, n);
    }
    Poll::Ready(Ok(()))
}

/// Serves `stream` until it closes, `shutdown` is asked while idle, or an error. `handler`
/// answers each request.
pub async fn serve<F, Fut>(
    stream: DownstreamStream,
    settings: Settings,
    shutdown: Arc<Shutdown>,
    handler: F,
) -> Result<(), ConnError>
where
    F: Fn(Request<DownstreamBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut io = Io {
        stream,
        read_buf: BytesMut::with_capacity(crate::http1::INITIAL_READ),
        read_size: Default::default(),
    };
    // A small response's head and body go out in one write from here; larger bodies grow it.
    let mut write_buf = BytesMut::with_capacity(4 * 1024);
    // The last response's header map, emptied: the next request's map reuses its storage.
    let mut spare = None;
    loop {
        let head = match read_head(&mut io, &settings, &shutdown, &mut spare).await {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()),
            Err(ConnError::Head(e)) => {
                let _ = refuse(io, &e, &mut write_buf).await;
                return Err(ConnError::Head(e));
            }
            Err(e) => return Err(e),
        };
        if head.upgrade {
            return handoff(io, head, settings, shutdown, handler).await;
        }
        let RequestHead {
            request,
            framing,
            keep_alive,
            expect_continue,
            ..
        } = head;
        let (mut parts, ()) = request.into_parts();
        let method = parts.method.clone();
        let version = parts.version;
        let (body, mut conn) = if framing == Framing::Empty {
            (DownstreamBody::Empty, Conn::Owned(io))
        } else {
            if expect_continue {
                // As Envoy without proxy_100_continue: the proxy says continue itself and the
                // upstream never sees the expectation.
                parts.headers.remove(http::header::EXPECT);
                write_buf.clear();
                write_buf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                poll_fn(|cx| write_all(&mut io.stream, cx, &mut write_buf)).await?;
            }
            let shared = Arc::new(Mutex::new(Shared {
                io: Some(io),
                decoder: BodyDecoder::new(framing),
                malformed: false,
            }));
            (
                DownstreamBody::Http1(RequestBody::new(shared.clone())),
                Conn::Shared(shared),
            )
        };
        let mut call = std::pin::pin!(handler(Request::from_parts(parts, body)));
        let max = settings.max_head;
        let response = poll_fn(|cx| {
            if let Poll::Ready(r) = call.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            // Envoy resets the stream when the client leaves: the handler is dropped, which
            // cancels the upstream request.
            conn.poll_peer_gone(cx, max).map(|()| None)
        })
        .await;
        let Some(response) = response else {
            return Ok(());
        };
        let (rparts, mut rbody) = response.into_parts();
        let framing = response::body_framing(
            &method,
            version,
            rparts.status,
            &rparts.headers,
            rbody.size_hint().exact(),
        );
        let keep = keep_alive
            && !shutdown.asked()
            && framing != BodyFraming::UntilClose
            && !response::asks_close(&rparts.headers)
            && conn.request_body_done();
        let persistence = match (keep, version) {
            (false, _) => Persistence::Close,
            (true, Version::HTTP_10) => Persistence::KeepAlive10,
            (true, _) => Persistence::KeepAlive,
        };
        write_buf.clear();
        response::head(
            &rparts,
            version,
            framing,
            persistence,
            date::write,
            &mut write_buf,
        );
        crate::http1::headers::keep_spare(&mut spare, rparts.headers);
        if framing == BodyFraming::None {
            drop(rbody);
        } else {
            write_body(&mut conn, &mut rbody, framing, &mut write_buf).await?;
            drop(rbody);
        }
        poll_fn(|cx| conn.poll_write_all(cx, &mut write_buf)).await?;
        if conn.request_body_malformed() {
            close(conn).await;
            return Err(ConnError::MalformedBody);
        }
        if persistence == Persistence::Close {
            close(conn).await;
            return Ok(());
        }
        match conn.reclaim() {
            Ok(back) => io = back,
            Err(conn) => {
                close(conn).await;
                return Ok(());
            }
        }
    }
}

/// Reads the next request head. None: the peer closed between requests, or a graceful close
/// was asked while idle.
async fn read_head(
    io: &mut Io,
    settings: &Settings,
    shutdown: &Shutdown,
    spare: &mut Option<http::HeaderMap>,
) -> Result<Option<RequestHead>, ConnError> {
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    poll_fn(|cx| {
        loop {
            if !io.read_buf.is_empty() {
                if let Some(head) = request::parse_head(&mut io.read_buf, settings.max_head, spare)
                    .map_err(ConnError::Head)?
                {
                    return Poll::Ready(Ok(Some(head)));
                }
                if let Some(t) = settings.headers_timeout {
                    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(t)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(ConnError::HeadersTimeout));
                    }
                }
            } else if shutdown.poll_wait(cx).is_ready() {
                return Poll::Ready(Ok(None));
            }
            match ready!(io.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Ok(None)),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    })
    .await
}

/// Writes the response body after its head (already in `buf`): frames are added to the
/// buffer, which is written whenever the body has nothing ready or the buffer grew large.
async fn write_body(
    conn: &mut Conn,
    body: &mut Body,
    framing: BodyFraming,
    buf: &mut BytesMut,
) -> Result<(), ConnError> {
    const HIGH_WATER: usize = 64 * 1024;
    let mut sent = 0u64;
    loop {
        let frame = poll_fn(|cx| {
            if buf.len() >= HIGH_WATER {
                ready!(conn.poll_write_all(cx, buf))?;
            }
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => {
                    // Nothing more for now: send what is buffered while waiting.
                    if let Poll::Ready(Err(e)) = conn.poll_write_all(cx, buf) {
                        return Poll::Ready(Err(ConnError::Io(e)));
                    }
                    Poll::Pending
                }
                Poll::Ready(f) => Poll::Ready(Ok(f)),
            }
        })
        .await?;
        let data = match frame {
            // HTTP/1.1 trailers are not sent, as Envoy's default (`enable_trailers` off).
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
            Some(Err(e)) => return Err(ConnError::Response(e)),
            None => break,
        };
        sent += data.len() as u64;
        match framing {
            BodyFraming::Chunked => {
                encode::chunk_start(data.len(), buf);
                buf.extend_from_slice(&data);
                encode::chunk_end(buf);
            }
            BodyFraming::Length(n) if sent > n => {
                return Err(ConnError::Response(
                    "response body longer than its content-length".into(),
                ));
            }
            _ => buf.extend_from_slice(&data),
        }
    }
    match framing {
        BodyFraming::Chunked => encode::last_chunk(None, buf),
        BodyFraming::Length(n) if sent != n => {
            return Err(ConnError::Response(
                "response body shorter than its content-length".into(),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Answers a refused head with its status (the reason phrase as a text body) and closes.
async fn refuse(io: Io, e: &HeadError, buf: &mut BytesMut) -> std::io::Result<()> {
    let status = http::StatusCode::from_u16(e.status).unwrap_or(http::StatusCode::BAD_REQUEST);
    let text = status.canonical_reason().unwrap_or("");
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    let (parts, ()) = resp.into_parts();
    buf.clear();
    let framing = BodyFraming::Length(text.len() as u64);
    response::head(
        &parts,
        Version::HTTP_11,
        framing,
        Persistence::Close,
        date::write,
        buf,
    );
    buf.extend_from_slice(text.as_bytes());
    let mut conn = Conn::Owned(io);
    let r = poll_fn(|cx| conn.poll_write_all(cx, buf)).await;
    close(conn).await;
    r
}

/// Shuts the socket down (FIN, or TLS close_notify then FIN) after the last response.
async fn close(conn: Conn) {
    let Some(mut io) = (match conn {
        Conn::Owned(io) => Some(io),
        Conn::Shared(s) => lock(&s).io.take(),
    }) else {
        return;
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::AsyncWriteExt::shutdown(&mut io.stream),
    )
    .await;
}

/// Hands the connection to hyper's HTTP/1.1 server, which parses `head` again from the bytes
/// read so far and serves this request and the rest.
async fn handoff<F, Fut>(
    io: Io,
    head: RequestHead,
    settings: Settings,
    shutdown: Arc<Shutdown>,
    handler: F,
) -> Result<(), ConnError>
where
    F: Fn(Request<DownstreamBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut prefix = BytesMut::from(head.raw.unwrap_or_default());
    prefix.extend_from_slice(&io.read_buf);
    let stream = rewind::Rewind::new(Bytes::from(prefix), io.stream);
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .max_buf_size(settings.max_head.max(8192))
        .header_read_timeout(settings.headers_timeout);
    let conn = b
        .serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            super::codec::HyperService(handler),
        )
        .with_upgrades();
    drive_hyper(conn, &shutdown, |c| c.graceful_shutdown()).await
}

/// Drives one of hyper's server connections to its end, starting its graceful close
/// (`graceful`) once `shutdown` is asked.
pub async fn drive_hyper<C>(
    conn: C,
    shutdown: &Shutdown,
    graceful: fn(Pin<&mut C>),
) -> Result<(), ConnError>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut asked = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => return r.map_err(ConnError::Hyper),
            _ = shutdown.wait(), if !asked => {
                asked = true;
                graceful(conn.as_mut());
            }
        }
    }
}
