//! `envoy.transport_sockets.tls`: a DownstreamTlsContext (a filter chain's TLS termination) or
//! an UpstreamTlsContext (a cluster's TLS origination) converted into a rustls configuration,
//! checked when config is read so every error names its field. Certificates and validation
//! contexts are inline or SDS secrets (`tls_certificate_sds_secret_configs`,
//! `validation_context_sds_secret_config`, `combined_validation_context`); the rustls
//! configuration reads them at each handshake, so rotation needs no rebuild.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;

use super::error::{ConfigError, index, join};
use super::secret::{self as secret_config, Validation};
use super::source::{Source, config_source};
use super::tls_params::{provider, versions};
use crate::tls::context::{
    CertificateSource, ClientCertResolver, ClientVerifier, ServerCertResolver, ValidationSource,
};
use crate::tls::secret::{SecretSlot, SecretSource, store};

/// A listener's TLS termination.
#[derive(Debug)]
pub struct DownstreamTls {
    /// The rustls server configuration (certificate resolver, client verifier, ALPN,
    /// versions).
    pub server: Arc<rustls::ServerConfig>,
    /// Whether a client must present a certificate.
    pub require_client_certificate: bool,
    /// The certificates it may present (the first is the default).
    pub certificates: Vec<CertificateSource>,
    /// How client certificates are checked (None: they are not asked for).
    pub validation: Option<ValidationSource>,
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
        let pp = join(&cp, "tls_params");
        let provider = Arc::new(provider(common.tls_params.as_ref(), &pp)?);
        let versions = versions(common.tls_params.as_ref(), &pp)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| ConfigError::new(&pp, e.to_string()))?;
        let validation = validation_source(&common, &cp)?;
        if require && validation.is_none() {
            return Err(ConfigError::new(
                join(path, "require_client_certificate"),
                "needs a validation context with a trusted CA",
            ));
        }
        let builder = match &validation {
            Some(v) => builder.with_client_cert_verifier(Arc::new(ClientVerifier {
                validation: v.clone(),
                require,
            })),
            None => builder.with_no_client_auth(),
        };
        let certificates = certificate_sources(&common, &cp)?;
        if certificates.is_empty() {
            return Err(ConfigError::new(
                join(&cp, "tls_certificates"),
                "a server certificate is required",
            ));
        }
        let mut server =
            builder.with_cert_resolver(Arc::new(ServerCertResolver(certificates.clone())));
        server.alpn_protocols = alpn(&common);
        Ok(Self {
            server: Arc::new(server),
            require_client_certificate: require,
            certificates,
            validation,
        })
    }

    /// Whether every secret it needs has arrived, so a handshake can start.
    pub fn is_ready(&self) -> bool {
        self.certificates.iter().all(|c| c.current().is_some())
            && self
                .validation
                .as_ref()
                .is_none_or(|v| v.current().is_some())
    }

    /// The secrets it reads (a listener warms until they arrive).
    pub fn secrets(&self) -> Vec<Arc<SecretSlot>> {
        secrets(&self.certificates, self.validation.as_ref())
    }
}

fn secrets(c: &[CertificateSource], v: Option<&ValidationSource>) -> Vec<Arc<SecretSlot>> {
    c.iter()
        .filter_map(|c| c.slot())
        .chain(v.and_then(|v| v.sds.as_ref()))
        .cloned()
        .collect()
}

fn alpn(common: &tls::CommonTlsContext) -> Vec<Vec<u8>> {
    common
        .alpn_protocols
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect()
}

/// The context's certificates: inline ones or SDS secrets (empty: neither).
fn certificate_sources(
    common: &tls::CommonTlsContext,
    cp: &str,
) -> Result<Vec<CertificateSource>, ConfigError> {
    if common.tls_certificate_provider_instance.is_some() {
        return Err(ConfigError::unsupported(join(
            cp,
            "tls_certificate_provider_instance",
        )));
    }
    let (inline, sds) = (
        common.tls_certificates.as_slice(),
        common.tls_certificate_sds_secret_configs.as_slice(),
    );
    if !inline.is_empty() && !sds.is_empty() {
        return Err(ConfigError::new(
            join(cp, "tls_certificate_sds_secret_configs"),
            "cannot be used together with tls_certificates",
        ));
    }
    let mut out = Vec::new();
    for (i, c) in inline.iter().enumerate() {
        out.push(CertificateSource::Static(Arc::new(
            secret_config::certificate(c, &index(cp, "tls_certificates", i))?,
        )));
    }
    for (i, s) in sds.iter().enumerate() {
        out.push(CertificateSource::Sds(sds_slot(
            s,
            &index(cp, "tls_certificate_sds_secret_configs", i),
        )?));
    }
    Ok(out)
}

/// A client context's certificate: at most one, as Envoy's client contexts take.
fn certificate_source(
    common: &tls::CommonTlsContext,
    cp: &str,
) -> Result<Option<CertificateSource>, ConfigError> {
    let mut all = certificate_sources(common, cp)?;
    if all.len() > 1 {
        let field = if common.tls_certificates.is_empty() {
            "tls_certificate_sds_secret_configs"
        } else {
            "tls_certificates"
        };
        return Err(ConfigError::new(
            index(cp, field, 1),
            "a client context takes one certificate, as Envoy's",
        ));
    }
    Ok(all.pop())
}

/// The context's validation context, if any.
fn validation_source(
    common: &tls::CommonTlsContext,
    cp: &str,
) -> Result<Option<ValidationSource>, ConfigError> {
    use tls::common_tls_context::ValidationContextType as V;
    Ok(Some(match &common.validation_context_type {
        None => return Ok(None),
        Some(V::ValidationContext(v)) => {
            let vp = join(cp, "validation_context");
            let default = secret_config::validation(v, &vp)?;
            if default.trust.is_none() {
                // As Envoy: without trusted_ca no chain is checked, and SAN checks without
                // one are refused as insecure.
                if !default.matchers.is_empty() {
                    return Err(ConfigError::new(
                        join(&vp, "trusted_ca"),
                        "is required with SAN matchers: SAN-based verification without a trusted CA is refused, as Envoy refuses it",
                    ));
                }
                return Ok(None);
            }
            ValidationSource {
                default: Arc::new(default),
                sds: None,
            }
        }
        Some(V::ValidationContextSdsSecretConfig(s)) => ValidationSource {
            default: Arc::new(Validation::default()),
            sds: Some(sds_slot(
                s,
                &join(cp, "validation_context_sds_secret_config"),
            )?),
        },
        Some(V::CombinedValidationContext(c)) => {
            let p = join(cp, "combined_validation_context");
            let default = match &c.default_validation_context {
                Some(v) => secret_config::validation(v, &join(&p, "default_validation_context"))?,
                None => Validation::default(),
            };
            let s = c
                .validation_context_sds_secret_config
                .as_ref()
                .ok_or_else(|| {
                    ConfigError::new(
                        join(&p, "validation_context_sds_secret_config"),
                        "is required",
                    )
                })?;
            ValidationSource {
                default: Arc::new(default),
                sds: Some(sds_slot(
                    s,
                    &join(&p, "validation_context_sds_secret_config"),
                )?),
            }
        }
        Some(_) => {
            return Err(ConfigError::unsupported(join(
                cp,
                "validation_context_certificate_provider_instance",
            )));
        }
    }))
}

/// The secret an SdsSecretConfig names: from its `sds_config`, or (without one) a secret of
/// `static_resources.secrets`.
fn sds_slot(s: &tls::SdsSecretConfig, path: &str) -> Result<Arc<SecretSlot>, ConfigError> {
    if s.name.is_empty() {
        return Err(ConfigError::new(join(path, "name"), "must not be empty"));
    }
    let Some(cs) = &s.sds_config else {
        return store().find(&SecretSource::Static, &s.name).ok_or_else(|| {
            ConfigError::new(
                join(path, "name"),
                format!(
                    "no static secret {:?} (static_resources.secrets), and no sds_config",
                    s.name
                ),
            )
        });
    };
    let c = config_source(cs, &join(path, "sds_config"))?;
    let source = match c.source {
        Source::Ads => SecretSource::Ads,
        Source::Api(a) => SecretSource::Api(a),
        Source::Path(p) => SecretSource::Path(p),
    };
    Ok(store().slot(source, &s.name, c.initial_fetch_timeout))
}

/// A cluster's TLS origination (UpstreamTlsContext).
#[derive(Debug)]
pub struct UpstreamTls {
    /// The rustls client configuration (client certificate, verifier, ALPN, versions).
    pub client: Arc<rustls::ClientConfig>,
    /// The SNI sent (`sni`), if any.
    pub sni: Option<rustls_pki_types::ServerName<'static>>,
    /// The client certificate, if any.
    pub certificate: Option<CertificateSource>,
    /// How the upstream's certificate is checked (None: any certificate).
    pub validation: Option<ValidationSource>,
}

impl UpstreamTls {
    /// Converts an UpstreamTlsContext; `path` points at it. `h2`: the cluster speaks HTTP/2,
    /// so `h2` is offered by ALPN when the context names no protocols (as Envoy does).
    /// `auto_san`: a certificate is checked against an SNI taken from the request
    /// (auto_san_validation) instead of the SAN matchers.
    pub fn from_proto(
        u: &tls::UpstreamTlsContext,
        path: &str,
        h2: bool,
        auto_san: bool,
    ) -> Result<Self, ConfigError> {
        let cp = join(path, "common_tls_context");
        let common = u.common_tls_context.clone().unwrap_or_default();
        let pp = join(&cp, "tls_params");
        let provider = Arc::new(provider(common.tls_params.as_ref(), &pp)?);
        let versions = versions(common.tls_params.as_ref(), &pp)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| ConfigError::new(&pp, e.to_string()))?;
        // Without a validation context Envoy accepts any upstream certificate.
        let validation = validation_source(&common, &cp)?;
        let sni = if u.sni.is_empty() {
            None
        } else {
            Some(
                rustls_pki_types::ServerName::try_from(u.sni.clone())
                    .map_err(|e| ConfigError::new(join(path, "sni"), e.to_string()))?,
            )
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::verify::SanVerifier {
                validation: validation.clone(),
                auto_san: auto_san.then(|| sni.clone()),
            }));
        let certificate = certificate_source(&common, &cp)?;
        let mut client = match &certificate {
            None => builder.with_no_client_auth(),
            Some(c) => builder.with_client_cert_resolver(Arc::new(ClientCertResolver(c.clone()))),
        };
        client.alpn_protocols = if common.alpn_protocols.is_empty() && h2 {
            vec![b"h2".to_vec()]
        } else {
            alpn(&common)
        };
        Ok(Self {
            client: Arc::new(client),
            sni,
            certificate,
            validation,
        })
    }

    /// Whether every secret it needs has arrived, so a handshake can start.
    pub fn is_ready(&self) -> bool {
        self.certificate
            .as_ref()
            .is_none_or(|c| c.current().is_some())
            && self
                .validation
                .as_ref()
                .is_none_or(|v| v.current().is_some())
    }

    /// The secrets it reads.
    pub fn secrets(&self) -> Vec<Arc<SecretSlot>> {
        match &self.certificate {
            Some(c) => secrets(std::slice::from_ref(c), self.validation.as_ref()),
            None => self
                .validation
                .as_ref()
                .and_then(|v| v.sds.clone())
                .into_iter()
                .collect(),
        }
    }
}
