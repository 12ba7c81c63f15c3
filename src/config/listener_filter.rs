//! A listener's listener filters: which run before filter-chain matching, when each is
//! disabled (`filter_disabled` predicates on the destination port), and how long they may
//! wait for bytes (`listener_filters_timeout`, `continue_on_listener_filters_timeout`).

use std::time::Duration;

use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use prost::Message;

use super::error::{ConfigError, index, join};

/// Envoy's default listener_filters_timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// A predicate on the connection (`ListenerFilterChainMatchPredicate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predicate {
    /// Any member matches.
    Or(Vec<Predicate>),
    /// Every member matches.
    And(Vec<Predicate>),
    /// The member does not match.
    Not(Box<Predicate>),
    /// Always.
    Any,
    /// The destination port is in [start, end).
    DestinationPortRange(i32, i32),
}

impl Predicate {
    fn from_proto(
        p: &listener::ListenerFilterChainMatchPredicate,
        path: &str,
    ) -> Result<Self, ConfigError> {
        use listener::listener_filter_chain_match_predicate::Rule;
        let set = |rules: &[listener::ListenerFilterChainMatchPredicate], f: &str| {
            rules
                .iter()
                .enumerate()
                .map(|(i, r)| Predicate::from_proto(r, &index(path, &format!("{f}.rules"), i)))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match &p.rule {
            Some(Rule::OrMatch(s)) => Predicate::Or(set(&s.rules, "or_match")?),
            Some(Rule::AndMatch(s)) => Predicate::And(set(&s.rules, "and_match")?),
            Some(Rule::NotMatch(n)) => Predicate::Not(Box::new(Predicate::from_proto(
                n,
                &join(path, "not_match"),
            )?)),
            Some(Rule::AnyMatch(_)) => Predicate::Any,
            Some(Rule::DestinationPortRange(r)) => Predicate::DestinationPortRange(r.start, r.end),
            None => return Err(ConfigError::new(path, "a rule is required")),
        })
    }

    /// Evaluates the predicate for a connection to `port`.
    pub fn matches(&self, port: u16) -> bool {
        match self {
            Predicate::Or(v) => v.iter().any(|p| p.matches(port)),
            Predicate::And(v) => v.iter().all(|p| p.matches(port)),
            Predicate::Not(p) => !p.matches(port),
            Predicate::Any => true,
            Predicate::DestinationPortRange(s, e) => (*s..*e).contains(&i32::from(port)),
        }
    }
}

/// The tls_inspector listener filter.
#[derive(Debug, Clone)]
pub struct TlsInspectorConfig {
    /// Bytes peeked first (initial_read_buffer_size, default 64 KiB as Envoy's maximum
    /// ClientHello).
    pub initial_read: usize,
    /// Not run for connections this matches.
    pub disabled: Option<Predicate>,
}

/// The original_dst listener filter: restores a redirected connection's original
/// destination as its local address.
#[derive(Debug, Clone, Default)]
pub struct OriginalDstFilterConfig {
    /// Not run for connections this matches.
    pub disabled: Option<Predicate>,
}

/// The listener filters of a listener.
#[derive(Debug, Clone, Default)]
pub struct ListenerFilters {
    /// original_dst, if configured (or implied by the listener's use_original_dst).
    pub original_dst: Option<OriginalDstFilterConfig>,
    /// tls_inspector, if configured.
    pub tls_inspector: Option<TlsInspectorConfig>,
    /// http_inspector, if configured: not run for connections this predicate matches.
    pub http_inspector: Option<Option<Predicate>>,
    /// How long listener filters may wait for bytes; None: no limit (`0s`).
    pub timeout: Option<Duration>,
    /// On timeout, go on to filter-chain matching with what is known instead of closing.
    pub continue_on_timeout: bool,
}

impl ListenerFilters {
    /// Converts a listener's filters and their timeout settings.
    pub fn from_proto(l: &listener::Listener, path: &str) -> Result<Self, ConfigError> {
        let mut out = ListenerFilters {
            timeout: match &l.listener_filters_timeout {
                None => Some(DEFAULT_TIMEOUT),
                Some(d) => Some(super::common::duration(
                    d,
                    &join(path, "listener_filters_timeout"),
                )?)
                .filter(|d| !d.is_zero()),
            },
            continue_on_timeout: l.continue_on_listener_filters_timeout,
            ..Default::default()
        };
        // As Envoy, use_original_dst brings the original_dst filter with it.
        if l.use_original_dst.as_ref().is_some_and(|v| v.value) {
            out.original_dst = Some(OriginalDstFilterConfig::default());
        }
        for (i, f) in l.listener_filters.iter().enumerate() {
            let p = index(path, "listener_filters", i);
            let any = match &f.config_type {
                Some(listener::listener_filter::ConfigType::TypedConfig(a)) => a,
                Some(_) => return Err(ConfigError::unsupported(join(&p, "config_discovery"))),
                None => {
                    return Err(ConfigError::new(
                        join(&p, "typed_config"),
                        format!("listener filter {:?} has no typed_config", f.name),
                    ));
                }
            };
            let tp = join(&p, "typed_config");
            let disabled = f
                .filter_disabled
                .as_ref()
                .map(|d| Predicate::from_proto(d, &join(&p, "filter_disabled")))
                .transpose()?;
            let t = super::filters::lookup(any, &tp, "listener filter")?;
            if t.ends_with("OriginalDst") {
                OriginalDst::decode(any.value.as_slice())
                    .map_err(|e| ConfigError::new(&tp, format!("cannot decode: {e}")))?;
                // Configured besides use_original_dst, its own predicate applies.
                out.original_dst = Some(OriginalDstFilterConfig { disabled });
                continue;
            }
            if t.ends_with("HttpInspector") {
                HttpInspector::decode(any.value.as_slice())
                    .map_err(|e| ConfigError::new(&tp, format!("cannot decode: {e}")))?;
                if out.http_inspector.is_some() {
                    return Err(ConfigError::new(&p, "http_inspector is configured twice"));
                }
                out.http_inspector = Some(disabled);
                continue;
            }
            let t = TlsInspector::decode(any.value.as_slice())
                .map_err(|e| ConfigError::new(&tp, format!("cannot decode: {e}")))?;
            if t.enable_ja3_fingerprinting
                .as_ref()
                .is_some_and(|v| v.value)
                || t.enable_ja4_fingerprinting
                    .as_ref()
                    .is_some_and(|v| v.value)
            {
                return Err(ConfigError::new(
                    &tp,
                    "JA3/JA4 fingerprinting is not implemented yet",
                ));
            }
            if out.tls_inspector.is_some() {
                return Err(ConfigError::new(&p, "tls_inspector is configured twice"));
            }
            out.tls_inspector = Some(TlsInspectorConfig {
                initial_read: t
                    .initial_read_buffer_size
                    .as_ref()
                    .map_or(64 * 1024, |v| v.value as usize)
                    .clamp(64, 64 * 1024),
                disabled,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_follow_their_rules() {
        let p = Predicate::Or(vec![
            Predicate::DestinationPortRange(80, 81),
            Predicate::Not(Box::new(Predicate::DestinationPortRange(1000, 2000))),
        ]);
        assert!(p.matches(80));
        assert!(p.matches(81), "outside 1000..2000");
        assert!(!p.matches(1500));
        assert!(p.matches(3000));
        assert!(
            Predicate::And(vec![Predicate::Any, Predicate::DestinationPortRange(1, 10)]).matches(5)
        );
        assert!(
            !Predicate::And(vec![Predicate::Any, Predicate::DestinationPortRange(1, 10)])
                .matches(10)
        );
    }
}
