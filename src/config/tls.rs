//! `envoy.transport_sockets.tls` on a filter chain: a DownstreamTlsContext converted into a
//! rustls server configuration, checked when config is read so every error names its field.
//! Envoy's values rustls cannot honour (TLS 1.0 and 1.1, non-ECDHE or CBC cipher suites,
//! curves outside X25519, P-256 and P-384) are refused by name.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use rustls::crypto::{CryptoProvider, ring};

use super::common::StringMatch;
use super::error::{ConfigError, index, join};
use crate::tls::certs;
use crate::tls::san::{SanKind, SanMatcher};

/// A listener's TLS termination.
#[derive(Debug)]
pub struct DownstreamTls {
    /// The rustls server configuration (certificate, client verification, ALPN, versions).
    pub server: Arc<rustls::ServerConfig>,
    /// Whether a client must present a certificate.
    pub require_client_certificate: bool,
    /// The client certificate's SANs must pass one of these (none: any).
    pub san_matchers: Vec<SanMatcher>,
    /// The URI SANs of its own certificate (`%DOWNSTREAM_LOCAL_URI_SAN%`).
    pub local_uri_sans: Arc<[String]>,
}

impl DownstreamTls {
    /// Converts a DownstreamTlsContext; `path` points at it.
    pub fn from_proto(d: &tls::DownstreamTlsContext, path: &str) -> Result<Self, ConfigError> {
        let cp = join(path, "common_tls_context");
        let common = d.common_tls_context.clone().unwrap_or_default();
        let require = d
            .require_client_certificate
            .as_ref()
            .is_some_and(|v| v.value);
        let provider = Arc::new(provider(
            common.tls_params.as_ref(),
            &join(&cp, "tls_params"),
        )?);
        let versions = versions(common.tls_params.as_ref(), &join(&cp, "tls_params"))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| ConfigError::new(join(&cp, "tls_params"), e.to_string()))?;
        let (verifier, san_matchers) = match &common.validation_context_type {
            None => {
                if require {
                    return Err(ConfigError::new(
                        join(path, "require_client_certificate"),
                        "needs common_tls_context.validation_context with trusted_ca",
                    ));
                }
                (None, Vec::new())
            }
            Some(tls::common_tls_context::ValidationContextType::ValidationContext(v)) => {
                let vp = join(&cp, "validation_context");
                let matchers = san_matchers(v, &vp)?;
                let Some(ca) = &v.trusted_ca else {
                    return Err(ConfigError::new(
                        join(&vp, "trusted_ca"),
                        "is required: verifying a client certificate without a trusted CA is refused, as Envoy refuses it",
                    ));
                };
                let tp = join(&vp, "trusted_ca");
                let roots = certs::roots(&certs::read(ca, &tp)?, &tp)?;
                let mut b = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                );
                if !require {
                    b = b.allow_unauthenticated();
                }
                let verifier = b.build().map_err(|e| ConfigError::new(tp, e.to_string()))?;
                (Some(verifier), matchers)
            }
            Some(
                tls::common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(_),
            ) => {
                return Err(ConfigError::new(
                    join(&cp, "validation_context_sds_secret_config"),
                    "SDS is not implemented yet",
                ));
            }
            Some(tls::common_tls_context::ValidationContextType::CombinedValidationContext(_)) => {
                return Err(ConfigError::new(
                    join(&cp, "combined_validation_context"),
                    "SDS is not implemented yet",
                ));
            }
            Some(_) => {
                return Err(ConfigError::unsupported(join(
                    &cp,
                    "validation_context_certificate_provider",
                )));
            }
        };
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let (chain, key) = certificate(&common, &cp)?;
        let local_uri_sans: Arc<[String]> = crate::tls::san::sans(&chain[0])
            .into_iter()
            .filter(|s| s.kind == SanKind::Uri)
            .map(|s| s.value)
            .collect();
        let cert_path = index(&cp, "tls_certificates", 0);
        let mismatch = |e: rustls::Error| match e {
            rustls::Error::InconsistentKeys(_) => ConfigError::new(
                &cert_path,
                format!("the private key does not match the certificate ({e})"),
            ),
            e => ConfigError::new(&cert_path, e.to_string()),
        };
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
            .and_then(|c| c.keys_match())
            .map_err(mismatch)?;
        let mut server = builder
            .with_single_cert(chain, key)
            .map_err(|e| ConfigError::new(&cert_path, e.to_string()))?;
        server.alpn_protocols = common
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        Ok(Self {
            server: Arc::new(server),
            require_client_certificate: require,
            san_matchers,
            local_uri_sans,
        })
    }
}

/// The context's one certificate and key.
fn certificate(
    common: &tls::CommonTlsContext,
    cp: &str,
) -> Result<
    (
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    ),
    ConfigError,
> {
    if !common.tls_certificate_sds_secret_configs.is_empty() {
        return Err(ConfigError::new(
            join(cp, "tls_certificate_sds_secret_configs"),
            "SDS is not implemented yet",
        ));
    }
    match common.tls_certificates.as_slice() {
        [] => Err(ConfigError::new(
            join(cp, "tls_certificates"),
            "a server certificate is required",
        )),
        [c] => {
            let p = index(cp, "tls_certificates", 0);
            let chain_path = join(&p, "certificate_chain");
            let key_path = join(&p, "private_key");
            let chain_src = c
                .certificate_chain
                .as_ref()
                .ok_or_else(|| ConfigError::new(&chain_path, "is required"))?;
            let key_src = c
                .private_key
                .as_ref()
                .ok_or_else(|| ConfigError::new(&key_path, "is required"))?;
            Ok((
                certs::chain(&certs::read(chain_src, &chain_path)?, &chain_path)?,
                certs::private_key(&certs::read(key_src, &key_path)?, &key_path)?,
            ))
        }
        _ => Err(ConfigError::new(
            index(cp, "tls_certificates", 1),
            "more than one certificate per context is not implemented yet",
        )),
    }
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

/// TLS versions from tls_params: Envoy's server default is TLS 1.2 to 1.3.
fn versions(
    params: Option<&tls::TlsParameters>,
    pp: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, ConfigError> {
    use tls::tls_parameters::TlsProtocol;
    let level = |v: i32, field: &str, auto: u8| -> Result<u8, ConfigError> {
        match TlsProtocol::try_from(v) {
            Ok(TlsProtocol::TlsAuto) => Ok(auto),
            Ok(TlsProtocol::TlSv12) => Ok(2),
            Ok(TlsProtocol::TlSv13) => Ok(3),
            Ok(TlsProtocol::TlSv10 | TlsProtocol::TlSv11) => Err(ConfigError::new(
                join(pp, field),
                "TLSv1_0 and TLSv1_1 are not supported (rustls speaks TLS 1.2 and 1.3)",
            )),
            Err(_) => Err(ConfigError::new(
                join(pp, field),
                format!("unknown value {v}"),
            )),
        }
    };
    let (min, max) = match params {
        None => (2, 3),
        Some(p) => (
            level(
                p.tls_minimum_protocol_version,
                "tls_minimum_protocol_version",
                2,
            )?,
            level(
                p.tls_maximum_protocol_version,
                "tls_maximum_protocol_version",
                3,
            )?,
        ),
    };
    if min > max {
        return Err(ConfigError::new(
            pp,
            "tls_minimum_protocol_version is above tls_maximum_protocol_version",
        ));
    }
    let mut v = Vec::new();
    if min <= 2 {
        v.push(&rustls::version::TLS12);
    }
    if max >= 3 {
        v.push(&rustls::version::TLS13);
    }
    Ok(v)
}

/// OpenSSL/BoringSSL names of the TLS 1.2 suites rustls implements.
const CIPHERS: &[(&str, rustls::CipherSuite)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// The crypto provider with tls_params' cipher suites (TLS 1.2; TLS 1.3 suites are always
/// on, as in Envoy) and ECDH curves. BoringSSL's equal-preference groups
/// (`[A|B]`) are read as their members.
fn provider(params: Option<&tls::TlsParameters>, pp: &str) -> Result<CryptoProvider, ConfigError> {
    let mut p = ring::default_provider();
    let Some(params) = params else {
        return Ok(p);
    };
    if !params.cipher_suites.is_empty() {
        let mut wanted = Vec::new();
        for (i, entry) in params.cipher_suites.iter().enumerate() {
            for name in entry
                .trim_matches(|c| c == '[' || c == ']')
                .split('|')
                .map(str::trim)
            {
                let Some((_, suite)) = CIPHERS.iter().find(|(n, _)| *n == name) else {
                    return Err(ConfigError::new(
                        index(pp, "cipher_suites", i),
                        format!(
                            "{name:?} is not supported (TLS 1.2 suites available: {})",
                            CIPHERS
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                };
                wanted.push(*suite);
            }
        }
        p.cipher_suites.retain(|s| match s {
            rustls::SupportedCipherSuite::Tls13(_) => true,
            rustls::SupportedCipherSuite::Tls12(_) => wanted.contains(&s.suite()),
        });
    }
    if !params.ecdh_curves.is_empty() {
        let mut groups = Vec::new();
        for (i, name) in params.ecdh_curves.iter().enumerate() {
            let group: &'static dyn rustls::crypto::SupportedKxGroup = match name.as_str() {
                "X25519" => ring::kx_group::X25519,
                "P-256" => ring::kx_group::SECP256R1,
                "P-384" => ring::kx_group::SECP384R1,
                other => {
                    return Err(ConfigError::new(
                        index(pp, "ecdh_curves", i),
                        format!("{other:?} is not supported (X25519, P-256 and P-384 are)"),
                    ));
                }
            };
            groups.push(group);
        }
        p.kx_groups = groups;
    }
    Ok(p)
}

/// A cluster's TLS origination (UpstreamTlsContext).
#[derive(Debug)]
pub struct UpstreamTls {
    /// The rustls client configuration (client certificate, verifier, ALPN, versions).
    pub client: Arc<rustls::ClientConfig>,
    /// The SNI sent (`sni`), if any.
    pub sni: Option<rustls_pki_types::ServerName<'static>>,
}

impl UpstreamTls {
    /// Converts an UpstreamTlsContext; `path` points at it. `h2`: the cluster speaks HTTP/2,
    /// so `h2` is offered by ALPN when the context names no protocols (as Envoy does).
    pub fn from_proto(
        u: &tls::UpstreamTlsContext,
        path: &str,
        h2: bool,
    ) -> Result<Self, ConfigError> {
        let cp = join(path, "common_tls_context");
        let common = u.common_tls_context.clone().unwrap_or_default();
        let pp = join(&cp, "tls_params");
        let provider = Arc::new(provider(common.tls_params.as_ref(), &pp)?);
        let versions = versions(common.tls_params.as_ref(), &pp)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| ConfigError::new(&pp, e.to_string()))?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match &common
            .validation_context_type
        {
            Some(tls::common_tls_context::ValidationContextType::ValidationContext(v)) => {
                let vp = join(&cp, "validation_context");
                let matchers = san_matchers(v, &vp)?;
                let Some(ca) = &v.trusted_ca else {
                    return Err(ConfigError::new(
                        join(&vp, "trusted_ca"),
                        "is required: verifying the upstream without a trusted CA is refused, as Envoy refuses it",
                    ));
                };
                let tp = join(&vp, "trusted_ca");
                Arc::new(crate::tls::verify::SanVerifier {
                    roots: Some(Arc::new(certs::roots(&certs::read(ca, &tp)?, &tp)?)),
                    provider: provider.clone(),
                    matchers,
                })
            }
            // Without a validation context Envoy accepts any upstream certificate.
            None => Arc::new(crate::tls::verify::SanVerifier {
                roots: None,
                provider: provider.clone(),
                matchers: Vec::new(),
            }),
            Some(_) => {
                return Err(ConfigError::new(
                    join(&cp, "validation_context"),
                    "only an inline validation_context is implemented (SDS is not yet)",
                ));
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut client = if common.tls_certificates.is_empty()
            && common.tls_certificate_sds_secret_configs.is_empty()
        {
            builder.with_no_client_auth()
        } else {
            let (chain, key) = certificate(&common, &cp)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConfigError::new(index(&cp, "tls_certificates", 0), e.to_string()))?
        };
        client.alpn_protocols = if common.alpn_protocols.is_empty() {
            if h2 { vec![b"h2".to_vec()] } else { Vec::new() }
        } else {
            common
                .alpn_protocols
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect()
        };
        let sni = if u.sni.is_empty() {
            None
        } else {
            Some(
                rustls_pki_types::ServerName::try_from(u.sni.clone())
                    .map_err(|e| ConfigError::new(join(path, "sni"), e.to_string()))?,
            )
        };
        Ok(Self {
            client: Arc::new(client),
            sni,
        })
    }
}
