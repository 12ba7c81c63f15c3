//! Helpers shared by the benchmarks: a minimal keep-alive HTTP/1.1 upstream and a
//! keep-alive HTTP/1.1 client over any byte stream (plain TCP or TLS).

#![allow(dead_code)]

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// An HTTP/1.1 upstream answering 200 with `body_len` bytes on keep-alive connections.
pub async fn upstream(body_len: usize) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let response: std::sync::Arc<[u8]> = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\n\r\n{}",
        "x".repeat(body_len)
    )
    .into_bytes()
    .into();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut pending = Vec::new();
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        if s.write_all(&response).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// One keep-alive HTTP/1.1 client connection over `S`.
pub struct Client<S> {
    s: S,
    buf: Vec<u8>,
}

impl Client<tokio::net::TcpStream> {
    /// A plain TCP connection.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Self::over(s))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client over an established stream.
    pub fn over(s: S) -> Self {
        Self {
            s,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends GET / and returns the status once the whole response arrived.
    pub async fn get(&mut self) -> std::io::Result<u16> {
        self.s
            .write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")
            .await?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    let n = self.s.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                return Ok(head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0));
            }
        }
    }
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
