//! The parts of a TLS context that may change while it serves: its certificate and its
//! validation context, inline (fixed) or from the secret store (read at each handshake). The
//! rustls configurations are built once, with resolvers and verifiers that read these.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::san::{self, San};
use super::secret::SecretSlot;
use crate::config::secret::{Certificate, PROVIDER, Trust, Validation};

/// A context's certificate.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// `tls_certificates`.
    Static(Arc<Certificate>),
    /// `tls_certificate_sds_secret_configs`.
    Sds(Arc<SecretSlot>),
}

impl CertificateSource {
    /// The certificate to present now (None: its secret has not arrived).
    pub fn current(&self) -> Option<Arc<Certificate>> {
        match self {
            Self::Static(c) => Some(c.clone()),
            Self::Sds(s) => s.certificate(),
        }
    }

    /// Its secret, if it comes from one.
    pub fn slot(&self) -> Option<&Arc<SecretSlot>> {
        match self {
            Self::Static(_) => None,
            Self::Sds(s) => Some(s),
        }
    }
}

/// A context's validation context: an inline one, a secret, or both merged
/// (`combined_validation_context`: the inline half's checks, the secret's trusted CA).
#[derive(Debug, Clone)]
pub struct ValidationSource {
    /// The inline validation context (empty when there is none).
    pub default: Arc<Validation>,
    /// `validation_context_sds_secret_config`.
    pub sds: Option<Arc<SecretSlot>>,
}

/// The validation context in force for one handshake.
#[derive(Debug)]
pub struct CurrentValidation {
    default: Arc<Validation>,
    dynamic: Option<Arc<Validation>>,
}

impl ValidationSource {
    /// The validation context now (None: its secret has not arrived).
    pub fn current(&self) -> Option<CurrentValidation> {
        let dynamic = match &self.sds {
            None => None,
            Some(s) => Some(s.validation()?),
        };
        Some(CurrentValidation {
            default: self.default.clone(),
            dynamic,
        })
    }
}

impl CurrentValidation {
    /// The trusted CAs: the secret's, else the inline ones.
    pub fn trust(&self) -> Option<&Trust> {
        self.dynamic
            .as_ref()
            .and_then(|d| d.trust.as_ref())
            .or(self.default.trust.as_ref())
    }

    /// Whether a peer with `sans` passes the SAN matchers of both halves (as Envoy merges
    /// them, repeated fields add up); no matchers at all accept any peer.
    pub fn sans_ok(&self, sans: &[San]) -> bool {
        let dynamic = self.dynamic.as_ref().map_or(&[][..], |d| &d.matchers[..]);
        if self.default.matchers.is_empty() && dynamic.is_empty() {
            return true;
        }
        (!self.default.matchers.is_empty() && san::verify(&self.default.matchers, sans))
            || (!dynamic.is_empty() && san::verify(dynamic, sans))
    }
}

/// Presents one of a listener's current certificates, chosen as Envoy chooses: those whose
/// DNS SANs match the SNI exactly, else by a `*.` wildcard, else all; among them the first
/// ECDSA one the client can verify, else the first any key type it can verify, else the
/// first.
#[derive(Debug)]
pub struct ServerCertResolver(pub Vec<CertificateSource>);

impl ResolvesServerCert for ServerCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current: Vec<Arc<Certificate>> = self
            .0
            .iter()
            .filter_map(CertificateSource::current)
            .collect();
        let candidates = by_server_name(&current, hello.server_name());
        let schemes = hello.signature_schemes();
        let usable = |c: &&Arc<Certificate>| c.key.key.choose_scheme(schemes).is_some();
        let ecdsa = candidates
            .iter()
            .filter(usable)
            .find(|c| c.key.key.algorithm() == rustls::SignatureAlgorithm::ECDSA);
        ecdsa
            .or_else(|| candidates.iter().find(usable))
            .or(candidates.first())
            .map(|c| c.key.clone())
    }
}

/// The certificates whose DNS SANs match `sni` exactly, else by wildcard, else all of them.
fn by_server_name(certs: &[Arc<Certificate>], sni: Option<&str>) -> Vec<Arc<Certificate>> {
    if certs.len() > 1
        && let Some(sni) = sni
    {
        let sni = sni.to_ascii_lowercase();
        let exact: Vec<_> = certs
            .iter()
            .filter(|c| c.dns_names.contains(&sni))
            .cloned()
            .collect();
        if !exact.is_empty() {
            return exact;
        }
        if let Some((_, parent)) = sni.split_once('.') {
            let wildcard = format!("*.{parent}");
            let matched: Vec<_> = certs
                .iter()
                .filter(|c| c.dns_names.contains(&wildcard))
                .cloned()
                .collect();
            if !matched.is_empty() {
                return matched;
            }
        }
    }
    certs.to_vec()
}

/// The certificate a handshake with `sni` presented, for its URI SANs in access logs: the
/// first the SNI selects (of several of one name, the key type is not known afterwards).
pub fn presented(certs: &[CertificateSource], sni: Option<&str>) -> Option<Arc<Certificate>> {
    let current: Vec<Arc<Certificate>> = certs
        .iter()
        .filter_map(CertificateSource::current)
        .collect();
    by_server_name(&current, sni).into_iter().next()
}

/// Presents a cluster's current client certificate.
#[derive(Debug)]
pub struct ClientCertResolver(pub CertificateSource);

impl ResolvesClientCert for ClientCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|c| c.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies a client's certificate chain against the current trusted CAs. The SANs are
/// checked after the handshake, where the failure is counted as Envoy counts it.
#[derive(Debug)]
pub struct ClientVerifier {
    /// The validation context.
    pub validation: ValidationSource,
    /// `require_client_certificate`.
    pub require: bool,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.require
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let current = self.validation.current().ok_or_else(|| {
            Error::General("the validation context secret has not arrived".into())
        })?;
        let trust = current
            .trust()
            .ok_or_else(|| Error::General("the validation context has no trusted CA".into()))?;
        trust
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, Error> {
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
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, Error> {
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
