//! Opening upstream connections: TCP (with keepalive) or Unix sockets, bounded by the
//! cluster's connect timeout.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A connected upstream byte stream.
#[derive(Debug)]
pub enum UpstreamStream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix domain socket.
    Unix(UnixStream),
}

/// Why a connect failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connect timeout passed.
    #[error("connect timeout")]
    Timeout,
    /// The socket layer refused.
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
}

/// Where to connect.
#[derive(Debug, Clone)]
pub enum Target {
    /// An IP and port.
    Socket(SocketAddr),
    /// A Unix socket path.
    Pipe(String),
}

/// Connects to `target` within `timeout`, applying TCP keepalive settings when given.
pub async fn connect(
    target: &Target,
    timeout: Duration,
    keepalive: Option<(Option<u32>, Option<u32>, Option<u32>)>,
) -> Result<UpstreamStream, ConnectError> {
    let fut = async {
        match target {
            Target::Socket(addr) => {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                if let Some((probes, time, interval)) = keepalive {
                    let mut ka = socket2::TcpKeepalive::new();
                    if let Some(t) = time {
                        ka = ka.with_time(Duration::from_secs(t as u64));
                    }
                    if let Some(i) = interval {
                        ka = ka.with_interval(Duration::from_secs(i as u64));
                    }
                    if let Some(p) = probes {
                        ka = ka.with_retries(p);
                    }
                    socket2::SockRef::from(&s).set_tcp_keepalive(&ka)?;
                }
                Ok(UpstreamStream::Tcp(s))
            }
            Target::Pipe(path) => Ok(UpstreamStream::Unix(UnixStream::connect(path).await?)),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout),
    }
}

impl UpstreamStream {
    /// The local address of a TCP connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            UpstreamStream::Tcp(s) => s.local_addr().ok(),
            UpstreamStream::Unix(_) => None,
        }
    }

    /// Whether the socket reported read readiness (data, EOF or an error) since it was last
    /// drained.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            UpstreamStream::Tcp(s) => s.poll_read_ready(cx),
            UpstreamStream::Unix(s) => s.poll_read_ready(cx),
        }
    }

    /// A non-blocking read.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            UpstreamStream::Tcp(s) => s.try_read(buf),
            UpstreamStream::Unix(s) => s.try_read(buf),
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
}
