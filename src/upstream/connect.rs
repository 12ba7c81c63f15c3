//! Opening upstream connections: TCP (with keepalive, from the cluster's bind address) or Unix
//! sockets, bounded by the cluster's connect timeout.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream};

use crate::config::cluster::Cluster;
use crate::config::tls::UpstreamTls;

/// A connected upstream byte stream.
#[derive(Debug)]
pub enum UpstreamStream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix domain socket.
    Unix(UnixStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
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
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// The TLS context's secrets have not arrived: no connection is attempted.
    #[error("the TLS context's secrets have not arrived")]
    SecretsNotReady,
}

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// An IP and port.
    Socket(SocketAddr),
    /// A Unix socket path.
    Pipe(String),
}

/// Connects to `target` for `cluster` within its connect_timeout (TLS handshake included when
/// `tls` is set, sending `sni` when given, else the context's), binding its
/// `upstream_bind_config` source address and applying its TCP keepalive settings.
pub async fn connect(
    target: &Target,
    cluster: &Cluster,
    tls: Option<&UpstreamTls>,
    sni: Option<&rustls_pki_types::ServerName<'static>>,
) -> Result<UpstreamStream, ConnectError> {
    let timeout = cluster.connect_timeout;
    let keepalive = cluster.tcp_keepalive;
    if tls.is_some_and(|t| !t.is_ready()) {
        return Err(ConnectError::SecretsNotReady);
    }
    let fut = async {
        match target {
            Target::Socket(addr) => {
                let source = cluster.bind.as_ref().and_then(|b| b.source_for(addr));
                let s = match source {
                    None => TcpStream::connect(addr).await?,
                    Some(src) => bound_socket(src)?.connect(*addr).await?,
                };
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
                match tls {
                    None => Ok(UpstreamStream::Tcp(s)),
                    Some(t) => {
                        // Without `sni`, the name only selects the session cache entry: no
                        // SNI is sent for an IP address.
                        let name = sni.or(t.sni.as_ref()).cloned().unwrap_or_else(|| {
                            rustls_pki_types::ServerName::IpAddress(addr.ip().into())
                        });
                        tokio_rustls::TlsConnector::from(t.client.clone())
                            .connect(name, s)
                            .await
                            .map(|s| UpstreamStream::Tls(Box::new(s)))
                            .map_err(ConnectError::Tls)
                    }
                }
            }
            Target::Pipe(path) => Ok(UpstreamStream::Unix(UnixStream::connect(path).await?)),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// A socket bound to `source` before it connects; with port 0 the kernel picks the port at
/// connect time (IP_BIND_ADDRESS_NO_PORT), so one source address serves any number of
/// destinations.
fn bound_socket(source: SocketAddr) -> io::Result<TcpSocket> {
    let sock = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if source.port() == 0 {
        let _ = nix::sys::socket::setsockopt(
            &sock,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        );
    }
    sock.bind(source)?;
    Ok(sock)
}

/// What access logs may print of an upstream connection.
#[derive(Debug, Clone, Default)]
pub struct ConnFacts {
    /// Its local address.
    pub local: Option<SocketAddr>,
    /// The URI SANs of the upstream's certificate, comma-separated (TLS only).
    pub peer_uri_san: Option<std::sync::Arc<str>>,
}

impl UpstreamStream {
    /// Its local address and the upstream's identity.
    pub fn facts(&self) -> ConnFacts {
        let peer_uri_san = match self {
            UpstreamStream::Tls(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| {
                    crate::tls::san::sans(c)
                        .into_iter()
                        .filter(|s| s.kind == crate::tls::san::SanKind::Uri)
                        .map(|s| s.value)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .map(std::sync::Arc::from),
            _ => None,
        };
        ConnFacts {
            local: self.local_addr(),
            peer_uri_san,
        }
    }

    /// The local address of a TCP connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            UpstreamStream::Tcp(s) => s.local_addr().ok(),
            UpstreamStream::Unix(_) => None,
            UpstreamStream::Tls(s) => s.get_ref().0.local_addr().ok(),
        }
    }

    /// Whether an idle connection can take a request: the peer has neither closed it nor
    /// sent anything unasked. Costs a system call only when the socket reported readiness
    /// since it was last drained; on TLS, records that carry no data (session tickets) are
    /// consumed.
    pub fn still_open(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let ready = match self {
            UpstreamStream::Tcp(s) => s.poll_read_ready(&mut cx),
            UpstreamStream::Unix(s) => s.poll_read_ready(&mut cx),
            UpstreamStream::Tls(s) => s.get_ref().0.poll_read_ready(&mut cx),
        };
        match ready {
            Poll::Pending => return true,
            Poll::Ready(Err(_)) => return false,
            Poll::Ready(Ok(())) => {}
        }
        let mut probe = [0u8; 1];
        let would_block =
            |r: io::Result<usize>| matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        match self {
            UpstreamStream::Tcp(s) => would_block(s.try_read(&mut probe)),
            UpstreamStream::Unix(s) => would_block(s.try_read(&mut probe)),
            UpstreamStream::Tls(s) => {
                let mut buf = ReadBuf::new(&mut probe);
                Pin::new(s.as_mut())
                    .poll_read(&mut cx, &mut buf)
                    .is_pending()
            }
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
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Unix(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
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
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
}
