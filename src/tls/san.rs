//! Subject alternative names: read from a peer certificate, matched as Envoy's
//! `match_typed_subject_alt_names` (and the older `match_subject_alt_names`) says, and the
//! SPIFFE identity (`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`) a URI SAN
//! carries.

use crate::config::common::StringMatch;

/// A SAN type Envoy can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanKind {
    /// dNSName.
    Dns,
    /// uniformResourceIdentifier.
    Uri,
    /// rfc822Name.
    Email,
    /// iPAddress.
    Ip,
}

/// One SAN of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct San {
    /// Its type.
    pub kind: SanKind,
    /// Its value as text (IP addresses in their usual notation).
    pub value: String,
}

/// The SANs of a DER certificate; empty when it does not parse.
pub fn sans(der: &[u8]) -> Vec<San> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(v) => Some(San {
                kind: SanKind::Dns,
                value: v.to_string(),
            }),
            GeneralName::URI(v) => Some(San {
                kind: SanKind::Uri,
                value: v.to_string(),
            }),
            GeneralName::RFC822Name(v) => Some(San {
                kind: SanKind::Email,
                value: v.to_string(),
            }),
            GeneralName::IPAddress(b) => ip_text(b).map(|value| San {
                kind: SanKind::Ip,
                value,
            }),
            _ => None,
        })
        .collect()
}

fn ip_text(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?).to_string()),
        _ => None,
    }
}

/// A SAN matcher: a SAN type (or any type, for the untyped `match_subject_alt_names`) and a
/// string matcher.
#[derive(Debug, Clone)]
pub struct SanMatcher {
    /// The type it applies to; None: every type.
    pub kind: Option<SanKind>,
    /// The value matcher.
    pub matcher: StringMatch,
}

/// Whether a certificate with `sans` passes `matchers`: any matcher accepting any SAN of its
/// type, as Envoy checks them. No matchers accept every certificate.
pub fn verify(matchers: &[SanMatcher], sans: &[San]) -> bool {
    matchers.is_empty()
        || matchers.iter().any(|m| {
            sans.iter()
                .any(|s| m.kind.is_none_or(|k| k == s.kind) && m.matcher.matches(&s.value))
        })
}

/// A SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    /// The trust domain.
    pub trust_domain: String,
    /// The path after it, with its leading slash.
    pub path: String,
}

impl SpiffeId {
    /// Parses `spiffe://<trust-domain><path>`.
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?;
        let (domain, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let domain_ok = !domain.is_empty()
            && domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        domain_ok.then(|| SpiffeId {
            trust_domain: domain.to_string(),
            path: path.to_string(),
        })
    }

    /// Istio's namespace and service account (`/ns/<ns>/sa/<sa>`).
    pub fn namespace_and_service_account(&self) -> Option<(&str, &str)> {
        let mut parts = self.path.strip_prefix('/')?.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }

    /// The first SPIFFE URI SAN of a certificate.
    pub fn of(sans: &[San]) -> Option<Self> {
        sans.iter()
            .filter(|s| s.kind == SanKind::Uri)
            .find_map(|s| Self::parse(&s.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};

    fn exact(kind: Option<SanKind>, v: &str) -> SanMatcher {
        let m = StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(v.into())),
            ..Default::default()
        };
        SanMatcher {
            kind,
            matcher: StringMatch::from_proto(&m, "m").unwrap(),
        }
    }

    fn san(kind: SanKind, v: &str) -> San {
        San {
            kind,
            value: v.into(),
        }
    }

    #[test]
    fn typed_matchers_only_see_their_type() {
        let sans = [
            san(SanKind::Uri, "spiffe://cluster.local/ns/a/sa/b"),
            san(SanKind::Dns, "b.a.svc"),
        ];
        let uri = exact(Some(SanKind::Uri), "spiffe://cluster.local/ns/a/sa/b");
        assert!(verify(&[uri], &sans));
        let dns_as_uri = exact(Some(SanKind::Uri), "b.a.svc");
        assert!(!verify(std::slice::from_ref(&dns_as_uri), &sans));
        assert!(verify(&[dns_as_uri, exact(None, "b.a.svc")], &sans));
        assert!(verify(&[], &sans));
        assert!(!verify(&[exact(None, "x")], &[]));
    }

    #[test]
    fn spiffe_identity() {
        let id =
            SpiffeId::parse("spiffe://cluster.local/ns/default/sa/bookinfo-productpage").unwrap();
        assert_eq!(id.trust_domain, "cluster.local");
        assert_eq!(
            id.namespace_and_service_account(),
            Some(("default", "bookinfo-productpage"))
        );
        assert!(SpiffeId::parse("https://cluster.local/ns/a/sa/b").is_none());
        assert!(SpiffeId::parse("spiffe:///ns/a").is_none());
        assert_eq!(
            SpiffeId::parse("spiffe://td/workload")
                .unwrap()
                .namespace_and_service_account(),
            None
        );
    }
}
