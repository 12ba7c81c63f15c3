//! The server side of a listener's TLS transport socket: the handshake, the client
//! certificate's SAN check, and Envoy's `listener.<prefix>.ssl.*` stats.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::san;
use crate::config::tls::DownstreamTls;
use crate::listener::stream::{DownstreamStream, TlsInfo};
use crate::stats::{Counter, Store};

/// Envoy's TLS stats of one listener or cluster.
#[derive(Debug)]
pub struct TlsStats {
    prefix: String,
    store: Arc<Store>,
    handshake: Arc<Counter>,
    connection_error: Arc<Counter>,
    no_certificate: Arc<Counter>,
    fail_verify_no_cert: Arc<Counter>,
    fail_verify_error: Arc<Counter>,
    fail_verify_san: Arc<Counter>,
}

impl TlsStats {
    /// The stats under `prefix` (`listener.<stat_prefix>.` or `cluster.<name>.`).
    pub fn new(store: &Arc<Store>, prefix: &str) -> Self {
        let c = |n: &str| store.counter(&format!("{prefix}ssl.{n}"));
        Self {
            prefix: prefix.to_string(),
            store: store.clone(),
            handshake: c("handshake"),
            connection_error: c("connection_error"),
            no_certificate: c("no_certificate"),
            fail_verify_no_cert: c("fail_verify_no_cert"),
            fail_verify_error: c("fail_verify_error"),
            fail_verify_san: c("fail_verify_san"),
        }
    }

    /// Counts a connection refused because the context's secrets have not arrived
    /// (`server_ssl_socket_factory.downstream_context_secrets_not_ready` on a listener,
    /// `client_ssl_socket_factory.upstream_context_secrets_not_ready` on a cluster).
    pub fn secrets_not_ready(&self, downstream: bool) {
        let name = if downstream {
            "server_ssl_socket_factory.downstream_context_secrets_not_ready"
        } else {
            "client_ssl_socket_factory.upstream_context_secrets_not_ready"
        };
        self.store.counter(&format!("{}{name}", self.prefix)).inc();
    }

    fn tagged(&self, kind: &str, name: &str) {
        self.store
            .counter(&format!("{}ssl.{kind}.{name}", self.prefix))
            .inc();
    }
}

/// Completes the TLS handshake within `timeout` (when set) and checks the client
/// certificate's SANs. None: the connection failed and is closed; the stats say why.
pub async fn accept(
    tls: &DownstreamTls,
    stats: &TlsStats,
    tcp: TcpStream,
    timeout: Option<Duration>,
) -> Option<DownstreamStream> {
    if !tls.is_ready() {
        // As Envoy: until its secrets arrive the context cannot handshake; the connection is
        // closed at once.
        stats.secrets_not_ready(true);
        return None;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
    let handshake = acceptor.accept(tcp);
    let result = match timeout {
        Some(t) => match tokio::time::timeout(t, handshake).await {
            Ok(r) => r,
            Err(_) => {
                stats.connection_error.inc();
                return None;
            }
        },
        None => handshake.await,
    };
    let stream = match result {
        Ok(s) => s,
        Err(e) => {
            count_failure(stats, &e);
            tracing::debug!("TLS handshake failed: {e}");
            return None;
        }
    };
    let conn = stream.get_ref().1;
    let peer_sans = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| san::sans(c))
        .unwrap_or_default();
    let has_cert = conn.peer_certificates().is_some_and(|c| !c.is_empty());
    let sans_ok = || {
        tls.validation
            .as_ref()
            .and_then(|v| v.current())
            .is_none_or(|v| v.sans_ok(&peer_sans))
    };
    if has_cert && !sans_ok() {
        stats.fail_verify_san.inc();
        return None;
    }
    if !has_cert {
        stats.no_certificate.inc();
    }
    stats.handshake.inc();
    count_session(
        stats,
        conn.protocol_version(),
        conn.negotiated_cipher_suite(),
    );
    let info = TlsInfo {
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        peer_sans,
        peer_cert: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| Arc::from(c.as_ref())),
        sni: conn.server_name().map(str::to_string),
        version: conn.protocol_version().map(version_name),
        local_uri_sans: crate::tls::context::presented(&tls.certificates, conn.server_name())
            .map(|c| c.uri_sans.clone())
            .unwrap_or_else(|| Arc::from([])),
    };
    Some(DownstreamStream::Tls(Box::new(stream), Box::new(info)))
}

/// Counts a failed handshake as Envoy does: a missing or unverifiable client certificate
/// under its own stat, anything else (garbage instead of a ClientHello, a closed or reset
/// connection, no shared cipher) as a connection error.
pub fn count_failure(stats: &TlsStats, e: &std::io::Error) {
    let tls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(rustls::Error::NoCertificatesPresented) => stats.fail_verify_no_cert.inc(),
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)) => {
            stats.fail_verify_san.inc()
        }
        Some(rustls::Error::InvalidCertificate(_)) => stats.fail_verify_error.inc(),
        _ => stats.connection_error.inc(),
    }
}

/// Counts a completed handshake's version and cipher suite.
pub fn count_session(
    stats: &TlsStats,
    version: Option<rustls::ProtocolVersion>,
    suite: Option<rustls::SupportedCipherSuite>,
) {
    if let Some(v) = version {
        stats.tagged("versions", version_name(v));
    }
    if let Some(s) = suite {
        stats.tagged("ciphers", &cipher_name(s.suite()));
    }
}

/// Counts a completed upstream handshake.
pub fn count_handshake(stats: &TlsStats) {
    stats.handshake.inc();
}

fn version_name(v: rustls::ProtocolVersion) -> &'static str {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "unknown",
    }
}

/// Envoy's (OpenSSL's) name of a cipher suite.
fn cipher_name(s: rustls::CipherSuite) -> String {
    use rustls::CipherSuite as C;
    match s {
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256".into(),
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384".into(),
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256".into(),
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256".into(),
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384".into(),
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305".into(),
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256".into(),
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384".into(),
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305".into(),
        other => format!("{other:?}"),
    }
}
