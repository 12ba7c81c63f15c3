//! HTTP/1.1 message pieces both directions share: heads' headers (zero-copy spans over the
//! read buffer, with the connection-level headers read by the codec and kept out of the map),
//! body framing and decoding (Content-Length, chunked with trailers), request heads and chunk
//! encoding. Pure: bytes in, bytes or frames out.
//! The connections that use them are `http::h1` (downstream, the server side) and
//! `upstream::http1` (the client side).

pub mod decode;
pub mod encode;
pub mod headers;

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncRead;

/// The room a connection's first read gets: a request head, or a small response, fits.
pub const INITIAL_READ: usize = 4 * 1024;
/// The most room one read gets.
const MAX_READ: usize = 64 * 1024;
/// Below this much spare room, a read first reserves a new step.
const MIN_SPARE: usize = 1024;

/// How much room a connection's reads get: it starts at [`INITIAL_READ`], so an idle or
/// small-message connection holds little; it doubles (up to 64 KiB) after a read that filled
/// all its room, so large transfers read in large steps; it halves after two reads in a row
/// that used less than half of it.
#[derive(Debug, Clone, Copy)]
pub struct ReadSize {
    next: usize,
    small_reads: u8,
}

impl Default for ReadSize {
    fn default() -> Self {
        ReadSize {
            next: INITIAL_READ,
            small_reads: 0,
        }
    }
}

impl ReadSize {
    /// Makes room in `buf` for the next read when little is left; returns the room.
    pub fn prepare(&self, buf: &mut BytesMut) -> usize {
        if buf.capacity() - buf.len() < MIN_SPARE {
            buf.reserve(self.next);
        }
        buf.capacity() - buf.len()
    }

    /// Reads from `io` into `buf`, with room made and the step adjusted; 0 means the peer
    /// closed.
    pub fn poll_read<R: AsyncRead>(
        &mut self,
        io: Pin<&mut R>,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<std::io::Result<usize>> {
        let room = self.prepare(buf);
        let n = ready!(tokio_util::io::poll_read_buf(io, cx, buf))?;
        self.record(room, n);
        Poll::Ready(Ok(n))
    }

    /// Adjusts the step after a read of `n` bytes into `room` bytes of spare room.
    pub fn record(&mut self, room: usize, n: usize) {
        if n >= room && n >= self.next / 2 {
            self.next = (self.next * 2).min(MAX_READ);
            self.small_reads = 0;
        } else if n < self.next / 2 {
            self.small_reads += 1;
            if self.small_reads >= 2 {
                self.next = (self.next / 2).max(INITIAL_READ);
                self.small_reads = 0;
            }
        } else {
            self.small_reads = 0;
        }
    }

    /// The room the next reservation gets.
    pub fn step(&self) -> usize {
        self.next
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_size_grows_on_full_reads_and_shrinks_on_small_ones() {
        let mut r = ReadSize::default();
        assert_eq!(r.step(), INITIAL_READ);
        let mut buf = BytesMut::new();
        let room = r.prepare(&mut buf);
        assert!(room >= INITIAL_READ);
        r.record(room, room);
        assert_eq!(r.step(), 2 * INITIAL_READ);
        for _ in 0..10 {
            let step = r.step();
            r.record(step, step);
        }
        assert_eq!(r.step(), MAX_READ);
        r.record(MAX_READ, 100);
        assert_eq!(r.step(), MAX_READ, "one small read does not shrink");
        r.record(MAX_READ, 100);
        assert_eq!(r.step(), MAX_READ / 2);
        for _ in 0..20 {
            r.record(r.step(), 10);
        }
        assert_eq!(r.step(), INITIAL_READ);
    }

    #[test]
    fn prepare_reserves_only_when_little_room_is_left() {
        let r = ReadSize::default();
        let mut buf = BytesMut::with_capacity(INITIAL_READ);
        buf.extend_from_slice(&[0; 100]);
        let cap = buf.capacity();
        r.prepare(&mut buf);
        assert_eq!(buf.capacity(), cap);
        buf.extend_from_slice(&vec![0; cap - 100 - 10]);
        assert!(r.prepare(&mut buf) >= INITIAL_READ);
    }
}
