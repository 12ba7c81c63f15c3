//! HTTP: the connection manager (hyper server, h1/h2), route matching, the router, and local
//! replies.

pub mod compressor;
pub mod conn_manager;
pub mod headers;
pub mod local_reply;
pub mod route_match;
pub mod router;
pub mod stats;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// The error type of bodies passed around.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type served downstream.
pub type Body = BoxBody<Bytes, BoxError>;

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
