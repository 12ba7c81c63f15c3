//! `tls_params` of a CommonTlsContext: the protocol versions, TLS 1.2 cipher suites and ECDH
//! curves, as a rustls crypto provider. Envoy's values rustls cannot honour (TLS 1.0 and 1.1,
//! non-ECDHE or CBC cipher suites, curves outside X25519, P-256 and P-384) are refused by name.

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use rustls::crypto::{CryptoProvider, ring};

use super::error::{ConfigError, index, join};

/// TLS versions from tls_params: Envoy's server default is TLS 1.2 to 1.3.
pub fn versions(
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

/// BoringSSL's names of the TLS 1.2 suites Envoy knows that rustls does not implement (RSA key
/// exchange, CBC, PSK, 3DES). Istio lists two of them (`AES256-GCM-SHA384`,
/// `AES128-GCM-SHA256`) after its ECDHE suites on every inbound listener, so a list naming
/// them is taken when it also names a suite rustls implements: they are skipped with a
/// warning (only a peer offering nothing but those suites is affected). A list of only these
/// is refused by name.
const UNIMPLEMENTED: &[&str] = &[
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
    "DES-CBC3-SHA",
];

/// The crypto provider with tls_params' cipher suites (TLS 1.2; TLS 1.3 suites are always
/// on, as in Envoy) and ECDH curves. BoringSSL's equal-preference groups
/// (`[A|B]`) are read as their members.
pub fn provider(
    params: Option<&tls::TlsParameters>,
    pp: &str,
) -> Result<CryptoProvider, ConfigError> {
    let mut p = ring::default_provider();
    let Some(params) = params else {
        return Ok(p);
    };
    if !params.cipher_suites.is_empty() {
        let available = || {
            CIPHERS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut wanted = Vec::new();
        let mut skipped = Vec::new();
        for (i, entry) in params.cipher_suites.iter().enumerate() {
            for name in entry
                .trim_matches(|c| c == '[' || c == ']')
                .split('|')
                .map(str::trim)
            {
                if let Some((_, suite)) = CIPHERS.iter().find(|(n, _)| *n == name) {
                    wanted.push(*suite);
                } else if UNIMPLEMENTED.contains(&name) {
                    skipped.push((i, name));
                } else {
                    return Err(ConfigError::new(
                        index(pp, "cipher_suites", i),
                        format!(
                            "{name:?} is not a cipher suite (TLS 1.2 suites available: {})",
                            available()
                        ),
                    ));
                }
            }
        }
        if wanted.is_empty()
            && let Some((i, name)) = skipped.first()
        {
            return Err(ConfigError::new(
                index(pp, "cipher_suites", *i),
                format!(
                    "{name:?} is not supported, and no listed suite is (TLS 1.2 suites available: {})",
                    available()
                ),
            ));
        }
        if !skipped.is_empty() {
            tracing::warn!(
                "{pp}.cipher_suites: {} not implemented; skipped",
                skipped
                    .iter()
                    .map(|(_, n)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
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
