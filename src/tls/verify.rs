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
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
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
        if !current.sans_ok(&san::sans(end_entity)) {
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
