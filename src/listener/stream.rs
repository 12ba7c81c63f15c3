//! A downstream connection as the network filters see it: plain TCP, or TLS terminated by
//! the filter chain's transport socket.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::tls::san::San;
use std::sync::Arc;

/// What the TLS handshake learned about the peer.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// The client certificate's SANs (empty without one).
    pub peer_sans: Vec<San>,
    /// The client certificate (DER), if one was presented.
    pub peer_cert: Option<Arc<[u8]>>,
    /// The SNI the client sent.
    pub sni: Option<String>,
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: Option<&'static str>,
    /// The URI SANs of the proxy's own certificate.
    pub local_uri_sans: Arc<[String]>,
}

/// A downstream connection.
#[derive(Debug)]
pub enum DownstreamStream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS, with what the handshake learned.
    Tls(
        Box<tokio_rustls::server::TlsStream<TcpStream>>,
        Box<TlsInfo>,
    ),
}

impl DownstreamStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            DownstreamStream::Plain(s) => s,
            DownstreamStream::Tls(s, _) => s.get_ref().0,
        }
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// The peer address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// The TLS facts a connection's access logs need (None on plaintext).
    pub fn tls_log_facts(&self) -> Option<Arc<TlsInfo>> {
        self.tls().map(|t| Arc::new(t.clone()))
    }

    /// TLS facts, for a TLS connection.
    pub fn tls(&self) -> Option<&TlsInfo> {
        match self {
            DownstreamStream::Plain(_) => None,
            DownstreamStream::Tls(_, info) => Some(info),
        }
    }
}

impl AsyncRead for DownstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DownstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            DownstreamStream::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for DownstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DownstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            DownstreamStream::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DownstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            DownstreamStream::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DownstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            DownstreamStream::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DownstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            DownstreamStream::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            DownstreamStream::Plain(s) => s.is_write_vectored(),
            DownstreamStream::Tls(s, _) => s.is_write_vectored(),
        }
    }
}
