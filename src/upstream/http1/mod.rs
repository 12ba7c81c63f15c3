//! Upstream HTTP/1.1, driven inline by the task of the request that uses the connection: the
//! request is written and the response read by that task (as the response body is polled),
//! with no connection task or channel in between. A pooled connection is owned by the pool
//! while idle and by the exchange (then its response body) while in use; it goes back to the
//! pool when both the request and the response ended cleanly on a keep-alive connection.
//!
//! Upgrades (WebSocket and the like) hand the connection's socket to hyper instead
//! (`Conn::into_upgradable`), which relays the bytes after a 101.

use crate::clock::CoarseInstant;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::io::AsyncWrite;

use super::connect::UpstreamStream;
use super::pool::{CloseGuard, Pool, UpstreamBody};
use super::stats::ClusterStats;
use crate::http::BoxError;
use crate::http1::consume;
use crate::http1::decode::{self, BodyDecoder, DecodeError, Decoded};
use crate::http1::encode::{self, BodyFraming};

/// Largest response head accepted: Envoy's default max_response_headers_kb (60 KiB).
pub const MAX_RESPONSE_HEAD: usize = 60 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The socket failed.
    #[error("upstream connection error: {0}")]
    Io(#[from] io::Error),
    /// The upstream closed before a complete response head.
    #[error("upstream closed the connection before the response")]
    Closed,
    /// The upstream's bytes are not a valid response.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The downstream request body failed (the client reset or went away).
    #[error("downstream request body: {0}")]
    RequestBody(BoxError),
    /// The request body did not match its Content-Length.
    #[error("request body length does not match content-length")]
    BodyLength,
}

/// A connection the pool holds or an exchange uses. Its state is boxed once, when it opens:
/// the handle moves with every request (out of the pool, into the exchange and the response
/// body, back to the pool), and a pointer is cheaper to move than the state.
#[derive(Debug)]
pub struct Conn(Box<ConnState>);

impl std::ops::Deref for Conn {
    type Target = ConnState;
    fn deref(&self) -> &ConnState {
        &self.0
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut ConnState {
        &mut self.0
    }
}

/// What a connection holds.
#[derive(Debug)]
pub struct ConnState {
    io: UpstreamStream,
    read_buf: BytesMut,
    /// How much room each read gets.
    read_size: crate::http1::ReadSize,
    write_buf: BytesMut,
    /// The last request's header map, emptied: the response's map reuses its storage.
    spare_headers: Option<http::HeaderMap>,
    stats: Arc<ClusterStats>,
    /// Its local address and the upstream's identity.
    pub facts: super::connect::ConnFacts,
    /// Requests completed on it.
    pub requests: u32,
    /// When it was last returned to the pool.
    pub idle_since: CoarseInstant,
    _close: CloseGuard,
}

impl Conn {
    /// Wraps a connected stream; `close` accounts for its close when dropped.
    pub(super) fn new(io: UpstreamStream, stats: Arc<ClusterStats>, close: CloseGuard) -> Self {
        Conn(Box::new(ConnState {
            facts: io.facts(),
            io,
            read_buf: BytesMut::new(),
            read_size: Default::default(),
            write_buf: BytesMut::new(),
            spare_headers: None,
            stats,
            requests: 0,
            idle_since: CoarseInstant::now(),
            _close: close,
        }))
    }

    /// Hands the socket to hyper for a request that may upgrade; the connection's close is
    /// accounted when hyper's connection ends.
    pub async fn into_upgradable(self) -> Result<super::pool::H1Conn, hyper::Error> {
        let ConnState {
            io, facts, _close, ..
        } = *self.0;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(hyper_util::rt::TokioIo::new(io))
            .await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
            drop(_close);
        });
        Ok(super::pool::H1Conn { sender, facts })
    }
}

impl ConnState {
    /// Whether an idle connection can take a request (see `UpstreamStream::still_open`).
    pub fn still_open(&mut self) -> bool {
        self.io.still_open()
    }

    /// Reads more of the response into the buffer; 0 means the upstream closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let n = ready!(
            self.read_size
                .poll_read(Pin::new(&mut self.io), cx, &mut self.read_buf)
        )?;
        self.stats.upstream_cx_rx_bytes_total().add(n as u64);
        Poll::Ready(Ok(n))
    }

    /// Writes the buffered bytes.
    fn poll_flush_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.write_buf.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.write_buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.stats.upstream_cx_tx_bytes_total().add(n as u64);
            consume(&mut self.write_buf, n);
        }
        Poll::Ready(Ok(()))
    }
}

/// One request on a connection: the connection, and what is left of the request body.
struct Exchange {
    conn: Conn,
    body: Option<UpstreamBody>,
    framing: BodyFraming,
    /// Body bytes sent, checked against Content-Length.
    sent: u64,
}

impl Exchange {
    /// Writes the request: buffered bytes, then body frames as they arrive. Ready(Ok) once
    /// the whole request is written.
    fn poll_write_request(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ExchangeError>> {
        loop {
            ready!(self.conn.poll_flush_buf(cx))?;
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.encode_data(data)?,
                    Err(frame) => {
                        let trailers = frame.into_trailers().ok();
                        self.encode_end(trailers.as_ref())?;
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(ExchangeError::RequestBody(e))),
                None => self.encode_end(None)?,
            }
        }
    }

    fn encode_data(&mut self, data: Bytes) -> Result<(), ExchangeError> {
        if data.is_empty() {
            return Ok(());
        }
        self.sent += data.len() as u64;
        let buf = &mut self.conn.write_buf;
        match self.framing {
            BodyFraming::Chunked => {
                encode::chunk_start(data.len(), buf);
                buf.extend_from_slice(&data);
                encode::chunk_end(buf);
            }
            BodyFraming::Length(n) if self.sent <= n => buf.extend_from_slice(&data),
            _ => return Err(ExchangeError::BodyLength),
        }
        Ok(())
    }

    /// The request body ended (with trailers, which only chunked framing can carry; HTTP/1.1
    /// has nowhere else to put them, so they are dropped, as hyper does).
    fn encode_end(&mut self, trailers: Option<&http::HeaderMap>) -> Result<(), ExchangeError> {
        self.body = None;
        match self.framing {
            BodyFraming::Chunked => encode::last_chunk(trailers, &mut self.conn.write_buf),
            BodyFraming::Length(n) if self.sent != n => return Err(ExchangeError::BodyLength),
            _ => {}
        }
        Ok(())
    }

    fn request_done(&self) -> bool {
        self.body.is_none() && self.conn.write_buf.is_empty()
    }

    /// Writes the request and reads until the response head is whole. A write that fails is
    /// noted in `write_error`: the upstream may have answered before it stopped reading, so
    /// the response is still read (and the connection not reused).
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
        write_error: &mut Option<io::Error>,
    ) -> Poll<Result<decode::Head, ExchangeError>> {
        if write_error.is_none() {
            match self.poll_write_request(cx) {
                Poll::Ready(Err(ExchangeError::Io(e))) => {
                    self.body = None;
                    self.conn.write_buf.clear();
                    *write_error = Some(e);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                _ => {}
            }
        }
        loop {
            let conn = &mut *self.conn;
            if let Some(head) = decode::parse_head(
                &mut conn.read_buf,
                head_request,
                MAX_RESPONSE_HEAD,
                &mut conn.spare_headers,
            )? {
                return Poll::Ready(Ok(head));
            }
            if ready!(self.conn.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(match write_error.take() {
                    Some(e) => ExchangeError::Io(e),
                    None => ExchangeError::Closed,
                }));
            }
        }
    }
}

/// Sends `req` on `conn` and waits for the response head. The response body reads the rest
/// and returns the connection to `pool` when the exchange ended cleanly.
///
/// The head is encoded before the future is made, so the future holds only the exchange, not
/// the request and the connection besides.
pub fn send(
    mut conn: Conn,
    pool: Arc<Pool>,
    req: Request<UpstreamBody>,
) -> impl Future<Output = Result<Response<ResponseBody>, ExchangeError>> + Send {
    let (parts, body) = req.into_parts();
    let head_request = parts.method == Method::HEAD;
    let ended = body.is_end_stream();
    let framing = encode::body_framing(&parts.method, ended, body.size_hint().exact());
    conn.write_buf.clear();
    encode::head(&parts, framing, &mut conn.write_buf);
    crate::http1::headers::keep_spare(&mut conn.spare_headers, parts.headers);
    let mut ex = Exchange {
        conn,
        body: (framing != BodyFraming::None && framing != BodyFraming::Length(0)).then_some(body),
        framing,
        sent: 0,
    };
    async move {
        let mut write_error = None;
        let head =
            std::future::poll_fn(|cx| ex.poll_head(cx, head_request, &mut write_error)).await?;
        let mut resp = Response::new(());
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        let mut body = ResponseBody {
            decoder: BodyDecoder::new(head.framing),
            keep_alive: head.keep_alive && write_error.is_none(),
            exchange: Some(ex),
            pool,
        };
        if body.decoder.is_done() {
            body.finish();
        }
        Ok(resp.map(|()| body))
    }
}

/// The response body, read from the connection as it is polled. While it is read, the rest
/// of the request body (if any) is still sent.
pub struct ResponseBody {
    exchange: Option<Exchange>,
    decoder: BodyDecoder,
    keep_alive: bool,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("decoder", &self.decoder)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// The response ended: the connection goes back to the pool when the request was sent
    /// whole, the connection keeps alive and nothing unasked followed; else it closes. A
    /// request still being sent when the response ended is cut off, as Envoy resets the
    /// upstream request then.
    fn finish(&mut self) {
        if let Some(ex) = self.exchange.take()
            && self.keep_alive
            && ex.request_done()
            && ex.conn.read_buf.is_empty()
        {
            self.pool.release_h1(ex.conn);
        }
    }

    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.exchange = None;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(ex) = this.exchange.as_mut() else {
            return Poll::Ready(None);
        };
        if !ex.request_done()
            && let Poll::Ready(Err(e)) = ex.poll_write_request(cx)
        {
            return this.fail(e);
        }
        loop {
            let Some(ex) = this.exchange.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut ex.conn.read_buf) {
                Ok(Decoded::Data(b)) => {
                    if this.decoder.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Ok(Decoded::Trailers(t)) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(e) => return this.fail(e),
            }
            match ready!(ex.conn.poll_fill(cx)) {
                Ok(0) => match this.decoder.eof() {
                    Ok(_) => {
                        this.exchange = None;
                        return Poll::Ready(None);
                    }
                    Err(e) => return this.fail(e),
                },
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.exchange.is_none() || self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
