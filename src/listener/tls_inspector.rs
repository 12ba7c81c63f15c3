//! The tls_inspector listener filter: peeks at the first bytes of a connection (nothing is
//! consumed) to learn whether it is TLS, and the ClientHello's SNI and ALPN list, for
//! filter-chain matching. Envoy's `tls_inspector.*` stats.

use std::sync::Arc;
use tokio::net::TcpStream;

use super::client_hello::{ClientHello, Inspection, inspect};
use crate::config::listener_filter::TlsInspectorConfig;
use crate::stats::{Counter, Store};

/// The largest ClientHello read (as Envoy's maximum).
const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// Envoy's tls_inspector stats.
#[derive(Debug)]
pub struct InspectorStats {
    tls_found: Arc<Counter>,
    tls_not_found: Arc<Counter>,
    alpn_found: Arc<Counter>,
    alpn_not_found: Arc<Counter>,
    sni_found: Arc<Counter>,
    sni_not_found: Arc<Counter>,
    client_hello_too_large: Arc<Counter>,
}

impl InspectorStats {
    /// The stats, under `tls_inspector.` as Envoy names them.
    pub fn new(store: &Store) -> Self {
        let c = |n: &str| store.counter(&format!("tls_inspector.{n}"));
        Self {
            tls_found: c("tls_found"),
            tls_not_found: c("tls_not_found"),
            alpn_found: c("alpn_found"),
            alpn_not_found: c("alpn_not_found"),
            sni_found: c("sni_found"),
            sni_not_found: c("sni_not_found"),
            client_hello_too_large: c("client_hello_too_large"),
        }
    }
}

/// Why inspection ended without a verdict: the connection is to be closed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The peer closed or the socket failed.
    #[error("connection closed during TLS inspection")]
    Closed,
    /// The ClientHello is larger than 64 KiB.
    #[error("ClientHello too large")]
    TooLarge,
}

/// Peeks until the first bytes tell: Some(ClientHello) for TLS, None for anything else.
pub async fn run(
    stream: &TcpStream,
    cfg: &TlsInspectorConfig,
    stats: &InspectorStats,
) -> Result<Option<ClientHello>, InspectError> {
    let mut buf = vec![0u8; cfg.initial_read];
    let mut seen = 0;
    loop {
        let n = stream
            .peek(&mut buf)
            .await
            .map_err(|_| InspectError::Closed)?;
        if n == 0 {
            return Err(InspectError::Closed);
        }
        match inspect(&buf[..n]) {
            Inspection::Tls(hello) => {
                stats.tls_found.inc();
                let (found, not) = (&stats.sni_found, &stats.sni_not_found);
                if hello.sni.is_some() {
                    found.inc()
                } else {
                    not.inc()
                }
                let (found, not) = (&stats.alpn_found, &stats.alpn_not_found);
                if hello.alpn.is_empty() {
                    not.inc()
                } else {
                    found.inc()
                }
                return Ok(Some(hello));
            }
            Inspection::NotTls => {
                stats.tls_not_found.inc();
                return Ok(None);
            }
            Inspection::NeedMore if n == buf.len() => {
                if buf.len() >= MAX_CLIENT_HELLO {
                    stats.client_hello_too_large.inc();
                    return Err(InspectError::TooLarge);
                }
                buf.resize((buf.len() * 2).min(MAX_CLIENT_HELLO), 0);
            }
            Inspection::NeedMore => {
                super::peek::wait_for_more(stream, n, &mut seen)
                    .await
                    .map_err(|_| InspectError::Closed)?;
            }
        }
    }
}
