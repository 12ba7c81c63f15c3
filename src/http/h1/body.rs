//! The body of a downstream HTTP/1.1 request, read from the connection's socket by whoever
//! polls it (the request's own task for an HTTP/1.1 upstream, hyper's connection task for an
//! HTTP/2 one). While a request with a body is in flight, the connection's socket and read
//! buffer live behind a mutex the body and the response writer share; each holds it only for
//! one poll.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};

use crate::http::BoxError;
use crate::http1::decode::{BodyDecoder, Decoded};
use crate::listener::stream::DownstreamStream;

/// The socket and what was read from it but not parsed yet.
#[derive(Debug)]
pub struct Io {
    /// The connection.
    pub stream: DownstreamStream,
    /// Bytes read ahead: the rest of a head, body bytes, or a pipelined request.
    pub read_buf: BytesMut,
    /// How much room each read gets.
    pub read_size: crate::http1::ReadSize,
}

impl Io {
    /// Reads more into the buffer; 0 means the peer closed.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.read_size
            .poll_read(Pin::new(&mut self.stream), cx, &mut self.read_buf)
    }
}

/// The connection while a request body is being read.
#[derive(Debug)]
pub struct Shared {
    /// None once the connection took the socket back (or closed it).
    pub io: Option<Io>,
    /// Where the body's framing is.
    pub decoder: BodyDecoder,
    /// The body broke its framing (malformed chunked encoding): a protocol error.
    pub malformed: bool,
}

/// Locks `shared`, riding over a poisoned lock (a panic mid-poll leaves nothing half-done
/// that matters: the decoder and buffer are consistent after every call).
pub fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A downstream request's body.
#[derive(Debug)]
pub struct RequestBody {
    shared: Arc<Mutex<Shared>>,
}

/// The downstream connection closed (or failed) before its request body ended.
#[derive(Debug, thiserror::Error)]
#[error("downstream connection closed before the request body ended")]
pub struct BodyClosed;

impl RequestBody {
    /// The body read through `shared`.
    pub fn new(shared: Arc<Mutex<Shared>>) -> Self {
        Self { shared }
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut guard = lock(&self.shared);
        let Shared {
            io,
            decoder,
            malformed,
        } = &mut *guard;
        loop {
            if decoder.is_done() {
                return Poll::Ready(None);
            }
            let Some(io) = io.as_mut() else {
                return Poll::Ready(Some(Err(BodyClosed.into())));
            };
            match decoder.decode(&mut io.read_buf) {
                Ok(Decoded::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                Ok(Decoded::Trailers(t)) => return Poll::Ready(Some(Ok(Frame::trailers(t)))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
                Err(e) => {
                    *malformed = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            match ready!(io.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Some(Err(BodyClosed.into()))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.shared).decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match lock(&self.shared).decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
