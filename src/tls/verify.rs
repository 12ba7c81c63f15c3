//! Verifying an upstream's certificate as Envoy does: the chain must lead to the trusted CA,
//! and the SANs must pass the context's matchers. There is no hostname check (Envoy does
//! none; Istio's SNI values are not host names). Without a validation context any
//! certificate is accepted, as Envoy accepts it (the handshake signature is still checked).
//! The validation context is read at each handshake, so a rotated CA applies at once.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::context::ValidationSource;
use super::san;
use crate::config::secret::PROVIDER;

/// The verifier of an UpstreamTlsContext's validation context.
#[derive(Debug)]
pub struct SanVerifier {
    /// The validation context; None: any certificate.
    pub validation: Option<ValidationSource>,
    /// With auto_san_validation: the context's own `sni` (if any). A DNS server name other
    /// than it came from the request (auto_sni), and the certificate must carry it as a DNS
    /// SAN; the SAN matchers apply otherwise.
    pub auto_san: Option<Option<ServerName<'static>>>,
}

/// Whether DNS SAN `san` covers `name` (exact, or a `*.` wildcard for one label), ignoring
/// case.
fn dns_san_matches(san: &str, name: &str) -> bool {
    if san.eq_ignore_ascii_case(name) {
        return true;
    }
    match (san.strip_prefix("*."), name.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && rest.eq_ignore_ascii_case(suffix)
        }
        _ => false,
    }
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(validation) = &self.validation else {
            return Ok(ServerCertVerified::assertion());
        };
        let current = validation.current().ok_or_else(|| {
            Error::General("the validation context secret has not arrived".into())
        })?;
        let trust = current
            .trust()
            .ok_or_else(|| Error::General("the validation context has no trusted CA".into()))?;
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &trust.roots,
            intermediates,
            now,
            PROVIDER.signature_verification_algorithms.all,
        )?;
        let sans = san::sans(end_entity);
        let from_request = match (&self.auto_san, server_name) {
            (Some(configured), ServerName::DnsName(name))
                if configured.as_ref() != Some(&server_name.to_owned()) =>
            {
                Some(name.as_ref())
            }
            _ => None,
        };
        let ok = match from_request {
            Some(name) => sans
                .iter()
                .any(|s| s.kind == san::SanKind::Dns && dns_san_matches(&s.value, name)),
            None => current.sans_ok(&sans),
        };
        if !ok {
            return Err(Error::InvalidCertificate(CertificateError::NotValidForName));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &PROVIDER.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &PROVIDER.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        PROVIDER
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::dns_san_matches;

    #[test]
    fn dns_sans_match_exactly_or_by_one_label_wildcard() {
        assert!(dns_san_matches("api.example.com", "API.example.com"));
        assert!(dns_san_matches("*.example.com", "api.example.com"));
        assert!(!dns_san_matches("*.example.com", "a.b.example.com"));
        assert!(!dns_san_matches("*.example.com", "example.com"));
        assert!(!dns_san_matches("api.example.com", "web.example.com"));
    }
}
