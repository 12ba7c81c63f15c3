//! Tag extraction as Envoy does it: each extractor's regex is searched in the full stat name;
//! its first capture group is removed from the name and its second is the tag's value.
//! The remaining name and the tags give the Prometheus series.
//!
//! As in Envoy, an extractor whose regex starts with `^token\.` (or `^token(?=\.)`) is run
//! only on names whose first dot-separated token is `token`, and one with a required
//! substring only on names containing it: most stats meet one or two regexes, not fifteen.
//! The three defaults that nearly every cluster stat meets (the cluster name and the response
//! code and class) are matched by code equivalent to their regexes, which a test checks.

use fancy_regex::Regex;

/// One `stats_tags` entry (or one of Envoy's defaults).
#[derive(Debug, Clone)]
pub struct TagExtractor {
    name: String,
    kind: ExtractorKind,
    substr: Option<&'static str>,
    /// The first token every name it can match starts with (see [`first_token`]).
    token: Option<String>,
}

#[derive(Debug, Clone)]
enum ExtractorKind {
    Regex(Regex),
    /// A default's regex, matched by code.
    Builtin(Builtin),
    Fixed(String),
}

/// Code equivalent to a regex: on a match, the byte ranges of its first capture group (cut
/// from the name) and of the tag's value.
type Builtin = fn(&str) -> Option<Capture>;

/// Where a match's parts are in the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Capture {
    remove: Option<(usize, usize)>,
    value: (usize, usize),
}

/// A stat's name with its tags taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedName {
    /// The name with every extracted part removed.
    pub name: String,
    /// `(tag name, value)` pairs in extraction order.
    pub tags: Vec<(String, String)>,
}

impl TagExtractor {
    /// An extractor from a tag name and an ECMAScript-style regex (Envoy's std::regex).
    pub fn regex(name: &str, regex: &str) -> Result<Self, String> {
        let re = Regex::new(regex).map_err(|e| format!("invalid tag regex {regex:?}: {e}"))?;
        Ok(Self {
            name: name.into(),
            kind: ExtractorKind::Regex(re),
            substr: None,
            token: first_token(regex).map(str::to_string),
        })
    }

    /// A tag with a fixed value added to every stat.
    pub fn fixed(name: &str, value: &str) -> Self {
        Self {
            name: name.into(),
            kind: ExtractorKind::Fixed(value.into()),
            substr: None,
            token: None,
        }
    }

    /// The tag's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn extract(&self, full: &str, token: &str, remove: &mut Vec<(usize, usize)>) -> Option<String> {
        if let ExtractorKind::Fixed(v) = &self.kind {
            return Some(v.clone());
        }
        if self.token.as_deref().is_some_and(|t| t != token) {
            return None;
        }
        if let Some(s) = self.substr
            && !full.contains(s)
        {
            return None;
        }
        let capture = match &self.kind {
            ExtractorKind::Builtin(matches) => matches(full)?,
            ExtractorKind::Regex(re) => regex_capture(re, full)?,
            ExtractorKind::Fixed(_) => return None,
        };
        remove.extend(capture.remove);
        Some(full[capture.value.0..capture.value.1].to_string())
    }
}

/// A regex's match as a [`Capture`]: its first group is removed, and the value is its
/// second group, or its first when the second did not take part.
fn regex_capture(re: &Regex, full: &str) -> Option<Capture> {
    let caps = re.captures(full).ok()??;
    let first = caps.get(1);
    let value = caps.get(2).or(first)?;
    Some(Capture {
        remove: first.map(|m| (m.start(), m.end())),
        value: (value.start(), value.end()),
    })
}

/// The ordered set of extractors a store applies to every new stat.
#[derive(Debug, Clone, Default)]
pub struct TagProducer {
    extractors: Vec<TagExtractor>,
}

impl TagProducer {
    /// Envoy's default extractors (`use_all_default_tags: true` with no `stats_tags`).
    pub fn default_envoy() -> Self {
        Self::new(Vec::new(), true)
    }

    /// Custom extractors first, then (when `use_defaults`) Envoy's defaults whose names the
    /// custom ones do not already define, as Envoy's TagProducer does.
    pub fn new(custom: Vec<TagExtractor>, use_defaults: bool) -> Self {
        let custom_names: Vec<String> = custom.iter().map(|e| e.name.clone()).collect();
        let mut extractors = custom;
        if use_defaults {
            for d in DEFAULTS {
                if custom_names.iter().any(|n| n == d.name) {
                    continue;
                }
                let mut e =
                    TagExtractor::regex(d.name, d.regex).expect("default tag regexes compile");
                e.substr = (!d.substr.is_empty()).then_some(d.substr);
                if let Some(b) = d.builtin {
                    e.kind = ExtractorKind::Builtin(b);
                }
                extractors.push(e);
            }
        }
        Self { extractors }
    }

    /// Splits `full` into its tag-extracted name and tags.
    pub fn extract(&self, full: &str) -> ExtractedName {
        let token = full.split('.').next().unwrap_or_default();
        let mut remove = Vec::new();
        let mut tags = Vec::new();
        for e in &self.extractors {
            if let Some(v) = e.extract(full, token, &mut remove) {
                tags.push((e.name.clone(), v));
            }
        }
        ExtractedName {
            name: without(full, remove),
            tags,
        }
    }
}

/// `full` without the byte ranges in `remove` (which may overlap; each starts and ends on a
/// character boundary, being a regex group's).
fn without(full: &str, mut remove: Vec<(usize, usize)>) -> String {
    remove.sort_unstable();
    let mut name = String::with_capacity(full.len());
    let mut at = 0;
    for (start, end) in remove {
        if start > at {
            name.push_str(&full[at..start]);
        }
        at = at.max(end);
    }
    name.push_str(&full[at.min(full.len())..]);
    name
}

/// The token a regex's matches must start with, when it has one: `cluster` for
/// `^cluster\.(...)` or `^cluster(?=\.)...`, so a name whose first dot-separated token is
/// anything else cannot match. None when that does not follow from the regex alone: no `^`,
/// no literal after it, a literal not followed by a dot, a quantified dot, or an alternation
/// outside every group (which could bypass the anchor).
fn first_token(regex: &str) -> Option<&str> {
    let rest = regex.strip_prefix('^')?;
    if has_top_level_alternation(regex) {
        return None;
    }
    let len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let (token, after) = rest.split_at(len);
    if token.is_empty() {
        return None;
    }
    let after_dot = after
        .strip_prefix(r"\.")
        .or_else(|| after.strip_prefix(r"(?=\.)"))?;
    if after_dot.starts_with(['?', '*', '{']) {
        return None;
    }
    Some(token)
}

/// Whether `regex` has a `|` outside every group and character class.
fn has_top_level_alternation(regex: &str) -> bool {
    let mut depth = 0usize;
    let mut chars = regex.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '[' => {
                // A `]` right after `[` or `[^` is a literal, and `[:name:]` is a named class;
                // the class ends at the next `]`.
                let mut first = true;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '^' if first => continue,
                        '[' if chars.peek() == Some(&':') => {
                            let mut last = ' ';
                            for c in chars.by_ref() {
                                if last == ':' && c == ']' {
                                    break;
                                }
                                last = c;
                            }
                        }
                        ']' if !first => break,
                        _ => {}
                    }
                    first = false;
                }
            }
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '|' if depth == 0 => return true,
            _ => {}
        }
    }
    false
}

/// One of Envoy's default tag extractors.
struct Default {
    name: &'static str,
    regex: &'static str,
    /// A substring every name it can match contains ("": none).
    substr: &'static str,
    /// Code that matches as the regex does.
    builtin: Option<Builtin>,
}

/// Envoy's default tag extractors, in Envoy's order. (Envoy's regexes are ECMAScript, where
/// `\d` is an ASCII digit; written `[0-9]` here, as the regex crate's `\d` is any Unicode
/// digit.)
const DEFAULTS: &[Default] = &[
    Default {
        name: "envoy.response_code",
        regex: r"_rq(_([0-9]{3}))$",
        substr: "_rq_",
        builtin: Some(response_code),
    },
    Default {
        name: "envoy.response_code_class",
        regex: r"_rq_([0-9])xx$",
        substr: "_rq_",
        builtin: Some(response_code_class),
    },
    Default {
        name: "envoy.http_user_agent",
        regex: r"^http(?=\.).*?\.user_agent\.((.*?)\.)\w+?$",
        substr: ".user_agent.",
        builtin: None,
    },
    Default {
        name: "envoy.fault_downstream_cluster",
        regex: r"^http(?=\.).*?\.fault\.((.*?)\.)\w+?$",
        substr: ".fault.",
        builtin: None,
    },
    Default {
        name: "envoy.ssl_cipher",
        regex: r"^listener(?=\.).*?\.ssl\.cipher(\.(.*?))$",
        substr: "",
        builtin: None,
    },
    Default {
        name: "envoy.ssl_cipher_suite",
        regex: r"^cluster(?=\.).*?\.ssl\.ciphers(\.(.*?))$",
        substr: ".ssl.ciphers.",
        builtin: None,
    },
    Default {
        name: "envoy.tcp_prefix",
        regex: r"^tcp\.((.*?)\.)\w+?$",
        substr: "",
        builtin: None,
    },
    Default {
        name: "envoy.udp_prefix",
        regex: r"^udp\.((.*?)\.)\w+?$",
        substr: "",
        builtin: None,
    },
    Default {
        name: "envoy.cluster_name",
        regex: r"^cluster\.(([^\.]+)\.).*",
        substr: "",
        builtin: Some(cluster_name),
    },
    Default {
        name: "envoy.http_conn_manager_prefix",
        regex: r"^listener(?=\.).*?\.http\.((.*?)\.)",
        substr: ".http.",
        builtin: None,
    },
    Default {
        name: "envoy.http_conn_manager_prefix",
        regex: r"^http\.((.*?)\.)",
        substr: "",
        builtin: None,
    },
    Default {
        name: "envoy.listener_address",
        regex: r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
        substr: "",
        builtin: None,
    },
    Default {
        name: "envoy.virtual_host",
        regex: r"^vhost\.((.*?)\.)",
        substr: "",
        builtin: None,
    },
    Default {
        name: "envoy.rds_route_config",
        regex: r"^http(?=\.).*?\.rds\.((.*?)\.)\w+?$",
        substr: ".rds.",
        builtin: None,
    },
    Default {
        name: "envoy.worker_id",
        regex: r"^listener_manager\.((worker_[0-9]+)\.)",
        substr: "listener_manager.worker_",
        builtin: None,
    },
];

/// `envoy.response_code`: `_rq(_([0-9]{3}))$`.
fn response_code(full: &str) -> Option<Capture> {
    let b = full.as_bytes();
    let n = b.len();
    let code = b.get(n.checked_sub(3)?..)?;
    if n < 7 || &b[n - 7..n - 3] != b"_rq_" || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(Capture {
        remove: Some((n - 4, n)),
        value: (n - 3, n),
    })
}

/// `envoy.response_code_class`: `_rq_([0-9])xx$`.
fn response_code_class(full: &str) -> Option<Capture> {
    let b = full.as_bytes();
    let n = b.len();
    if n < 7 || &b[n - 7..n - 3] != b"_rq_" || !b[n - 3].is_ascii_digit() || &b[n - 2..] != b"xx" {
        return None;
    }
    Some(Capture {
        remove: Some((n - 3, n - 2)),
        value: (n - 3, n - 2),
    })
}

/// `envoy.cluster_name`: `^cluster\.(([^\.]+)\.).*`.
fn cluster_name(full: &str) -> Option<Capture> {
    const PREFIX: usize = "cluster.".len();
    let rest = full.strip_prefix("cluster.")?;
    let dot = rest.find('.').filter(|d| *d > 0)?;
    Some(Capture {
        remove: Some((PREFIX, PREFIX + dot + 1)),
        value: (PREFIX, PREFIX + dot),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cluster_and_response_code() {
        let p = TagProducer::default_envoy();
        let e = p.extract("cluster.backend.upstream_rq_200");
        assert_eq!(e.name, "cluster.upstream_rq");
        assert!(
            e.tags
                .contains(&("envoy.cluster_name".into(), "backend".into()))
        );
        assert!(
            e.tags
                .contains(&("envoy.response_code".into(), "200".into()))
        );
    }

    #[test]
    fn listener_address_and_hcm_prefix() {
        let p = TagProducer::default_envoy();
        let e = p.extract("listener.0.0.0.0_15090.downstream_cx_total");
        assert_eq!(e.name, "listener.downstream_cx_total");
        assert_eq!(
            e.tags,
            vec![("envoy.listener_address".into(), "0.0.0.0_15090".into())]
        );
        let e = p.extract("http.ingress_http.downstream_rq_total");
        assert_eq!(e.name, "http.downstream_rq_total");
    }

    #[test]
    fn first_tokens_follow_from_the_regex_alone() {
        assert_eq!(first_token(r"^cluster\.(([^\.]+)\.).*"), Some("cluster"));
        assert_eq!(
            first_token(r"^http(?=\.).*?\.rds\.((.*?)\.)\w+?$"),
            Some("http")
        );
        assert_eq!(
            first_token(r"^listener_manager\.((worker_\d+)\.)"),
            Some("listener_manager")
        );
        // No anchor, no dot after the literal, a quantified dot, an alternation.
        assert_eq!(first_token(r"_rq(_(\d{3}))$"), None);
        assert_eq!(first_token(r"^cluster(\.(.+);)"), None);
        assert_eq!(first_token(r"^clusters?\.(.*)"), None);
        assert_eq!(first_token(r"^cluster\.?(.*)"), None);
        assert_eq!(first_token(r"^a\.(x)|^b\.(y)"), None);
        assert_eq!(first_token(r"^(?i)cluster\.(x)"), None);
        // An alternation inside a group or a class keeps the anchor.
        assert_eq!(
            first_token(r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbB[:digit:]]*))\.)"),
            Some("listener")
        );
        assert_eq!(first_token(r"^a\.([|])"), Some("a"));
        assert_eq!(first_token(r"^a\.([]|)])|b"), None);
        assert_eq!(first_token(r"^a\.[[:alpha:](]|b"), None);
    }

    #[test]
    fn an_indexed_extractor_skips_other_tokens_and_keeps_its_own() {
        let custom = vec![TagExtractor::regex("svc", r"^vhost\.((\w+)\.)").unwrap()];
        let p = TagProducer::new(custom, false);
        assert_eq!(
            p.extract("vhost.api.vcluster.other.upstream_rq_total").tags,
            vec![("svc".into(), "api".into())]
        );
        let e = p.extract("vhostx.api.upstream_rq_total");
        assert!(e.tags.is_empty());
        assert_eq!(e.name, "vhostx.api.upstream_rq_total");
    }

    #[test]
    fn builtin_matchers_agree_with_their_regexes() {
        let names = [
            "cluster.backend.upstream_rq_200",
            "cluster.backend.upstream_rq_2xx",
            "cluster.backend.upstream_rq_total",
            "cluster.a.b.c",
            "cluster..upstream_rq_503",
            "cluster.noDot",
            "cluster.",
            "clusterx.a.b",
            "cluster.x.",
            "cluster.é.upstream_rq_5xx",
            "cluster.outbound|80||svc.default.svc.cluster.local.upstream_rq_404",
            "http.ingress.downstream_rq_200",
            "http.ingress.downstream_rq_2000",
            "x_rq_20",
            "_rq_200",
            "_rq_2xx",
            "rq_200",
            "a_rq_1xxx",
            "a_rq_axx",
            "a_rq_20a",
            "a_rq_é00",
            "",
        ];
        for d in DEFAULTS {
            let Some(builtin) = d.builtin else { continue };
            let re = Regex::new(d.regex).unwrap();
            for n in names {
                assert_eq!(builtin(n), regex_capture(&re, n), "{} on {n:?}", d.name);
            }
        }
    }

    #[test]
    fn removed_ranges_may_overlap() {
        assert_eq!(without("abcdefgh", vec![(4, 6), (1, 3), (2, 5)]), "agh");
        assert_eq!(without("abc", vec![]), "abc");
        assert_eq!(without("abc", vec![(0, 3)]), "");
    }

    #[test]
    fn istio_semicolon_cluster_regex() {
        let custom = vec![TagExtractor::regex("cluster_name", r"^cluster(\.(.+);)").unwrap()];
        let p = TagProducer::new(custom, false);
        let e = p.extract("cluster.prometheus_stats;.upstream_rq_total");
        assert_eq!(e.name, "cluster.upstream_rq_total");
        assert_eq!(
            e.tags,
            vec![("cluster_name".into(), "prometheus_stats".into())]
        );
    }
}
