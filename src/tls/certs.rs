//! Certificates and keys from Envoy's `DataSource`s (a file, or inline PEM), parsed into
//! rustls' types. Errors name the field that held the bad input.

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::error::{ConfigError, join};

/// The bytes of a DataSource: a file's contents or the inline value.
pub fn read(source: &DataSource, path: &str) -> Result<Vec<u8>, ConfigError> {
    match &source.specifier {
        Some(Specifier::Filename(f)) => std::fs::read(f)
            .map_err(|e| ConfigError::new(join(path, "filename"), format!("cannot read {f}: {e}"))),
        Some(Specifier::InlineString(s)) => Ok(s.as_bytes().to_vec()),
        Some(Specifier::InlineBytes(b)) => Ok(b.clone()),
        Some(Specifier::EnvironmentVariable(_)) => {
            Err(ConfigError::unsupported(join(path, "environment_variable")))
        }
        None => Err(ConfigError::new(
            path,
            "a file or an inline value is required",
        )),
    }
}

/// A PEM certificate chain (leaf first).
pub fn chain(pem: &[u8], path: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::new(path, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::new(path, "no certificate in the PEM data"));
    }
    Ok(certs)
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(pem: &[u8], path: &str) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| ConfigError::new(path, format!("not a PEM private key: {e}")))
}

/// A PEM bundle of trusted CA certificates as a root store.
pub fn roots(pem: &[u8], path: &str) -> Result<rustls::RootCertStore, ConfigError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in chain(pem, path)? {
        store
            .add(cert)
            .map_err(|e| ConfigError::new(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}
