//! HTTP: the connection manager (an inline HTTP/1.1 codec, hyper's HTTP/2 server), route
//! matching, the router, and local replies.

pub mod codec;
pub mod compressor;
pub mod conn_manager;
pub mod deadline;
pub mod h1;
pub mod headers;
pub mod local_reply;
pub mod path;
pub mod rds;
pub mod rewrite;
pub mod route_match;
pub mod router;
pub mod stats;
pub mod stream_log;
pub mod xfcc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// The error type of bodies passed around.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type served downstream.
pub type Body = BoxBody<Bytes, BoxError>;

/// A downstream request's body: none, from hyper (HTTP/2, upgraded connections) or from the
/// inline HTTP/1.1 codec.
#[derive(Debug)]
pub enum DownstreamBody {
    /// No body.
    Empty,
    /// Read by hyper.
    Hyper(hyper::body::Incoming),
    /// Read by the HTTP/1.1 codec.
    Http1(h1::body::RequestBody),
}

impl hyper::body::Body for DownstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            DownstreamBody::Empty => std::task::Poll::Ready(None),
            DownstreamBody::Hyper(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
            DownstreamBody::Http1(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownstreamBody::Empty => true,
            DownstreamBody::Hyper(b) => b.is_end_stream(),
            DownstreamBody::Http1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            DownstreamBody::Empty => hyper::body::SizeHint::with_exact(0),
            DownstreamBody::Hyper(b) => b.size_hint(),
            DownstreamBody::Http1(b) => b.size_hint(),
        }
    }
}

/// The request's authority: the Host header (HTTP/1.1) or the URI's authority (HTTP/2), as a
/// header value (a reference-counted clone of the request's bytes for HTTP/1.1), or empty.
pub fn authority(headers: &http::HeaderMap, uri: &http::Uri) -> http::HeaderValue {
    if let Some(h) = headers.get(http::header::HOST)
        && h.to_str().is_ok()
    {
        return h.clone();
    }
    uri.authority()
        .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
        .unwrap_or_else(|| http::HeaderValue::from_static(""))
}

/// An empty body.
pub fn empty_body() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A body of `b`.
pub fn full_body(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

pin_project_lite::pin_project! {
    /// A body that keeps `guard` alive until the body is dropped, optionally counting the
    /// data bytes that pass.
    struct Guarded<G> {
        #[pin]
        inner: Body,
        counter: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
        guard: G,
    }
}

impl<G> hyper::body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let Some(c) = this.counter.as_ref() {
            count_data(c, &r);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps `body` so `guard` is dropped with it.
pub fn with_guard<G: Send + Sync + 'static>(body: Body, guard: G) -> Body {
    Guarded {
        inner: body,
        counter: None,
        guard,
    }
    .boxed()
}

/// Wraps `body` so `guard` is dropped with it, adding the data bytes sent to `counter`.
pub fn with_guard_counting<G: Send + Sync + 'static>(
    body: Body,
    guard: G,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Body {
    Guarded {
        inner: body,
        counter: Some(counter),
        guard,
    }
    .boxed()
}

/// Adds the size of a polled data frame to `counter`.
pub fn count_data<E>(
    counter: &std::sync::atomic::AtomicU64,
    polled: &std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, E>>>,
) {
    if let std::task::Poll::Ready(Some(Ok(f))) = polled
        && let Some(d) = f.data_ref()
    {
        counter.fetch_add(d.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}
