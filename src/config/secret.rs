//! TLS secrets: a `TlsCertificate` (chain and key) or a `CertificateValidationContext`
//! (trusted CA and SAN matchers), inline in a TLS context or delivered as an SDS `Secret`,
//! converted into what the handshake uses. Errors name the field (or the secret) at fault.

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;

use super::common::StringMatch;
use super::error::{ConfigError, index, join};
use crate::tls::certs;
use crate::tls::san::{SanKind, SanMatcher};

/// The provider whose key loader and signature algorithms every context shares (tls_params
/// only narrow cipher suites and groups, which neither depends on).
pub static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

/// A certificate chain with its private key.
#[derive(Debug)]
pub struct Certificate {
    /// The chain and the signing key, checked to match.
    pub key: Arc<CertifiedKey>,
    /// The leaf's URI SANs (`%DOWNSTREAM_LOCAL_URI_SAN%`).
    pub uri_sans: Arc<[String]>,
    /// The leaf's DNS SANs, lowercased: the server names it is chosen for by SNI.
    pub dns_names: Arc<[String]>,
}

/// Trusted CAs, with the client-certificate verifier built on them.
#[derive(Debug)]
pub struct Trust {
    /// The roots.
    pub roots: Arc<rustls::RootCertStore>,
    /// Verifies a client's chain against the roots (whether a certificate is required is
    /// decided by the context, not here).
    pub client_verifier: Arc<dyn ClientCertVerifier>,
}

/// A validation context.
#[derive(Debug, Default)]
pub struct Validation {
    /// `trusted_ca`, if set.
    pub trust: Option<Trust>,
    /// The peer's SANs must pass one of these (none: any).
    pub matchers: Vec<SanMatcher>,
}

/// A converted `Secret`.
#[derive(Debug, Clone)]
pub enum SecretValue {
    /// `tls_certificate`.
    Certificate(Arc<Certificate>),
    /// `validation_context`.
    Validation(Arc<Validation>),
}

/// A converted secret with the files it was read from (watched for changes).
#[derive(Debug)]
pub struct ParsedSecret {
    /// What it holds.
    pub value: SecretValue,
    /// Files whose change reloads it: its data sources' files, and `watched_directory`.
    pub files: Vec<PathBuf>,
}

/// Converts an SDS `Secret` (its name is the caller's business). `path` points at it.
pub fn secret(s: &tls::Secret, path: &str) -> Result<ParsedSecret, ConfigError> {
    use tls::secret::Type;
    let mut files = Vec::new();
    let value = match &s.r#type {
        Some(Type::TlsCertificate(c)) => {
            let p = join(path, "tls_certificate");
            if let Some(d) = &c.watched_directory {
                if d.path.is_empty() {
                    return Err(ConfigError::new(
                        join(&p, "watched_directory.path"),
                        "must not be empty",
                    ));
                }
                files.push(PathBuf::from(&d.path));
            }
            files.extend(file_of(c.certificate_chain.as_ref()));
            files.extend(file_of(c.private_key.as_ref()));
            SecretValue::Certificate(Arc::new(certificate(c, &p)?))
        }
        Some(Type::ValidationContext(v)) => {
            let p = join(path, "validation_context");
            files.extend(file_of(v.trusted_ca.as_ref()));
            SecretValue::Validation(Arc::new(validation(v, &p)?))
        }
        Some(Type::SessionTicketKeys(_)) => {
            return Err(ConfigError::unsupported(join(path, "session_ticket_keys")));
        }
        Some(Type::GenericSecret(_)) => {
            return Err(ConfigError::unsupported(join(path, "generic_secret")));
        }
        None => {
            return Err(ConfigError::new(
                path,
                "one of tls_certificate or validation_context is required",
            ));
        }
    };
    Ok(ParsedSecret { value, files })
}

fn file_of(d: Option<&DataSource>) -> Option<PathBuf> {
    match d?.specifier.as_ref()? {
        Specifier::Filename(f) => Some(PathBuf::from(f)),
        _ => None,
    }
}

/// Converts a `TlsCertificate`: the chain and key must parse and match.
pub fn certificate(c: &tls::TlsCertificate, p: &str) -> Result<Certificate, ConfigError> {
    let chain_path = join(p, "certificate_chain");
    let key_path = join(p, "private_key");
    let chain_src = c
        .certificate_chain
        .as_ref()
        .ok_or_else(|| ConfigError::new(&chain_path, "is required"))?;
    let key_src = c
        .private_key
        .as_ref()
        .ok_or_else(|| ConfigError::new(&key_path, "is required"))?;
    let chain = certs::chain(&certs::read(chain_src, &chain_path)?, &chain_path)?;
    let key = certs::private_key(&certs::read(key_src, &key_path)?, &key_path)?;
    let sans = crate::tls::san::sans(&chain[0]);
    let of = |kind: SanKind| -> Arc<[String]> {
        sans.iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.value.clone())
            .collect()
    };
    let uri_sans = of(SanKind::Uri);
    let dns_names: Arc<[String]> = of(SanKind::Dns)
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    let key = CertifiedKey::from_der(chain, key, &PROVIDER)
        .and_then(|c| c.keys_match().map(|()| c))
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => ConfigError::new(
                p,
                format!("the private key does not match the certificate ({e})"),
            ),
            e => ConfigError::new(&key_path, e.to_string()),
        })?;
    Ok(Certificate {
        key: Arc::new(key),
        uri_sans,
        dns_names,
    })
}

/// Converts a `CertificateValidationContext`.
pub fn validation(
    v: &tls::CertificateValidationContext,
    vp: &str,
) -> Result<Validation, ConfigError> {
    let matchers = san_matchers(v, vp)?;
    let trust = match &v.trusted_ca {
        None => None,
        Some(ca) => {
            let tp = join(vp, "trusted_ca");
            let roots = Arc::new(certs::roots(&certs::read(ca, &tp)?, &tp)?);
            let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.clone(),
                PROVIDER.clone(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| ConfigError::new(&tp, e.to_string()))?;
            Some(Trust {
                roots,
                client_verifier,
            })
        }
    };
    Ok(Validation { trust, matchers })
}

fn san_matchers(
    v: &tls::CertificateValidationContext,
    vp: &str,
) -> Result<Vec<SanMatcher>, ConfigError> {
    let mut out = Vec::new();
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        let p = index(vp, "match_typed_subject_alt_names", i);
        use tls::subject_alt_name_matcher::SanType;
        let kind = match SanType::try_from(m.san_type) {
            Ok(SanType::Dns) => SanKind::Dns,
            Ok(SanType::Uri) => SanKind::Uri,
            Ok(SanType::Email) => SanKind::Email,
            Ok(SanType::IpAddress) => SanKind::Ip,
            _ => {
                return Err(ConfigError::new(
                    join(&p, "san_type"),
                    "only DNS, URI, EMAIL and IP_ADDRESS are supported",
                ));
            }
        };
        let matcher = m
            .matcher
            .as_ref()
            .ok_or_else(|| ConfigError::new(join(&p, "matcher"), "is required"))?;
        out.push(SanMatcher {
            kind: Some(kind),
            matcher: StringMatch::from_proto(matcher, &join(&p, "matcher"))?,
        });
    }
    #[allow(deprecated)]
    for (i, m) in v.match_subject_alt_names.iter().enumerate() {
        let p = index(vp, "match_subject_alt_names", i);
        out.push(SanMatcher {
            kind: None,
            matcher: StringMatch::from_proto(m, &p)?,
        });
    }
    Ok(out)
}
