//! x-forwarded-client-cert as Envoy's `forward_client_cert_details` and
//! `set_current_client_cert_details` say: on connections without a client certificate every
//! mode but ALWAYS_FORWARD_ONLY removes the header; on mTLS connections APPEND_FORWARD and
//! SANITIZE_SET add `By=<proxy URI SAN>;Hash=<SHA-256 of the client certificate>` and the
//! chosen Subject, URI and DNS elements.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::hcm::{ClientCertDetails, ForwardClientCert};
use crate::listener::stream::TlsInfo;
use crate::tls::san::SanKind;

static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// The element this connection's client certificate contributes; None without one.
pub fn details(tls: &TlsInfo, set: ClientCertDetails) -> Option<String> {
    let der = tls.peer_cert.as_ref()?;
    let mut parts: Vec<String> = tls
        .local_uri_sans
        .iter()
        .map(|u| format!("By={u}"))
        .collect();
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    parts.push(format!("Hash={hash}"));
    if set.subject {
        parts.push(format!("Subject=\"{}\"", subject(der)));
    }
    for (on, kind, key) in [
        (set.uri, SanKind::Uri, "URI"),
        (set.dns, SanKind::Dns, "DNS"),
    ] {
        if on {
            for s in tls.peer_sans.iter().filter(|s| s.kind == kind) {
                parts.push(format!("{key}={}", s.value));
            }
        }
    }
    Some(parts.join(";"))
}

/// The certificate's subject in RFC 2253 order (most specific first), as Envoy prints it.
pub fn subject(der: &[u8]) -> String {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return String::new();
    };
    let mut rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|a| {
                    let oid = a.attr_type();
                    let key =
                        x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry())
                            .map(str::to_string)
                            .unwrap_or_else(|_| oid.to_id_string());
                    let value = a.as_str().unwrap_or("");
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.reverse();
    rdns.join(",")
}

/// Applies the mode to the request's headers; `details` is the connection's element (None
/// on connections without a client certificate).
pub fn mutate(mode: ForwardClientCert, headers: &mut HeaderMap, details: Option<&str>) {
    let Some(details) = details else {
        if mode != ForwardClientCert::AlwaysForwardOnly {
            headers.remove(&XFCC);
        }
        return;
    };
    let value = match mode {
        ForwardClientCert::AlwaysForwardOnly | ForwardClientCert::ForwardOnly => return,
        ForwardClientCert::Sanitize => {
            headers.remove(&XFCC);
            return;
        }
        ForwardClientCert::SanitizeSet => details.to_string(),
        ForwardClientCert::AppendForward => {
            match headers.get(&XFCC).and_then(|v| v.to_str().ok()) {
                Some(prev) if !prev.is_empty() => format!("{prev},{details}"),
                _ => details.to_string(),
            }
        }
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(XFCC.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_on_connections_without_a_client_certificate() {
        for (mode, kept) in [
            (ForwardClientCert::Sanitize, false),
            (ForwardClientCert::ForwardOnly, false),
            (ForwardClientCert::AppendForward, false),
            (ForwardClientCert::SanitizeSet, false),
            (ForwardClientCert::AlwaysForwardOnly, true),
        ] {
            let mut h = HeaderMap::new();
            h.insert(XFCC.clone(), HeaderValue::from_static("By=spoofed"));
            mutate(mode, &mut h, None);
            assert_eq!(h.contains_key(&XFCC), kept, "{mode:?}");
        }
    }

    #[test]
    fn modes_on_mtls_connections() {
        let run = |mode| {
            let mut h = HeaderMap::new();
            h.insert(XFCC.clone(), HeaderValue::from_static("By=a"));
            mutate(mode, &mut h, Some("By=b;Hash=00"));
            h.get(&XFCC).map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(run(ForwardClientCert::Sanitize), None);
        assert_eq!(run(ForwardClientCert::ForwardOnly).as_deref(), Some("By=a"));
        assert_eq!(
            run(ForwardClientCert::AppendForward).as_deref(),
            Some("By=a,By=b;Hash=00")
        );
        assert_eq!(
            run(ForwardClientCert::SanitizeSet).as_deref(),
            Some("By=b;Hash=00")
        );
    }
}
