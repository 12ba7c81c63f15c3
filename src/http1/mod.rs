//! HTTP/1.1 message pieces both directions share: heads' headers (zero-copy spans over the
//! read buffer), body framing and decoding (Content-Length, chunked with trailers), request
//! heads and chunk encoding, and the `Connection` rules. Pure: bytes in, bytes or frames out.
//! The connections that use them are `http::h1` (downstream, the server side) and
//! `upstream::http1` (the client side).

pub mod decode;
pub mod encode;

use bytes::{Buf, BytesMut};

/// Drops the first `n` written bytes of `buf`. A buffer written whole is cleared, which keeps
/// its whole allocation for the next message (advancing would give up the written part of it
/// and, message after message, make `reserve` reallocate).
pub fn consume(buf: &mut BytesMut, n: usize) {
    if n >= buf.len() {
        buf.clear();
    } else {
        buf.advance(n);
    }
}
