//! A test certificate authority minting SPIFFE workload certificates, and a TLS client that
//! presents them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

/// A CA with its key.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate (PEM).
    pub pem: String,
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// A workload certificate with SPIFFE URI SAN `spiffe` and DNS SANs `dns`.
    pub fn leaf(&self, spiffe: &str, dns: &[&str]) -> Leaf {
        self.leaf_with(spiffe, dns, |_| {})
    }

    /// A workload certificate that expired in 2020.
    pub fn expired_leaf(&self, spiffe: &str, dns: &[&str]) -> Leaf {
        self.leaf_with(spiffe, dns, |p| {
            p.not_before = rcgen::date_time_ymd(2019, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 1, 1);
        })
    }

    fn leaf_with(
        &self,
        spiffe: &str,
        dns: &[&str],
        tweak: impl Fn(&mut CertificateParams),
    ) -> Leaf {
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI(spiffe.try_into().unwrap()));
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// A TLS client trusting `ca` (PEM), presenting `client` when given, offering `alpn`.
pub fn client_config(ca: &str, client: Option<&Leaf>, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match client {
        Some(l) => builder
            .with_client_auth_cert(
                rustls_pki_types::CertificateDer::pem_slice_iter(l.cert.as_bytes())
                    .map(|c| c.unwrap())
                    .collect(),
                rustls_pki_types::PrivateKeyDer::from_pem_slice(l.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

/// Connects with TLS to `addr` as `server.test`.
pub async fn connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    connect_as(addr, cfg, "server.test").await
}

/// Connects with TLS to `addr`, sending SNI `sni`.
pub async fn connect_as(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(sni.to_string().try_into().unwrap(), tcp)
        .await
}

/// One HTTP/1.1 GET over TLS; the status, or the error that stopped it.
pub async fn get(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Result<u16, String> {
    get_as(addr, cfg, "server.test").await.map(|(s, _)| s)
}

/// One HTTP/1.1 GET over TLS with SNI `sni`: the status and the body.
pub async fn get_as(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    sni: &str,
) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = connect_as(addr, cfg, sni)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: server.test\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no response: {text:?}"))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}
