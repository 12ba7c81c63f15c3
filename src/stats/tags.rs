//! Tag extraction as Envoy does it: each extractor's regex is searched in the full stat name;
//! its first capture group is removed from the name and its second is the tag's value.
//! The remaining name and the tags give the Prometheus series.
//!
//! As in Envoy, an extractor whose regex starts with `^token\.` (or `^token(?=\.)`) is run
//! only on names whose first dot-separated token is `token`, and one with a required
//! substring only on names containing it: most stats meet one or two regexes, not fifteen.

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
    Fixed(String),
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
        let re = match &self.kind {
            ExtractorKind::Fixed(v) => return Some(v.clone()),
            ExtractorKind::Regex(re) => re,
        };
        if self.token.as_deref().is_some_and(|t| t != token) {
            return None;
        }
        if let Some(s) = self.substr
            && !full.contains(s)
        {
            return None;
        }
        let caps = re.captures(full).ok()??;
        let value = caps.get(2).or_else(|| caps.get(1))?.as_str().to_string();
        if let Some(m) = caps.get(1) {
            remove.push((m.start(), m.end()));
        }
        Some(value)
    }
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
            for (name, regex, substr) in DEFAULTS {
                if custom_names.iter().any(|n| n == name) {
                    continue;
                }
                let mut e = TagExtractor::regex(name, regex).expect("default tag regexes compile");
                e.substr = (!substr.is_empty()).then_some(*substr);
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

/// Envoy's default tag extractors: (tag name, regex, required substring).
const DEFAULTS: &[(&str, &str, &str)] = &[
    ("envoy.response_code", r"_rq(_(\d{3}))$", "_rq_"),
    ("envoy.response_code_class", r"_rq_(\d)xx$", "_rq_"),
    (
        "envoy.http_user_agent",
        r"^http(?=\.).*?\.user_agent\.((.*?)\.)\w+?$",
        ".user_agent.",
    ),
    (
        "envoy.fault_downstream_cluster",
        r"^http(?=\.).*?\.fault\.((.*?)\.)\w+?$",
        ".fault.",
    ),
    (
        "envoy.ssl_cipher",
        r"^listener(?=\.).*?\.ssl\.cipher(\.(.*?))$",
        "",
    ),
    (
        "envoy.ssl_cipher_suite",
        r"^cluster(?=\.).*?\.ssl\.ciphers(\.(.*?))$",
        ".ssl.ciphers.",
    ),
    ("envoy.tcp_prefix", r"^tcp\.((.*?)\.)\w+?$", ""),
    ("envoy.udp_prefix", r"^udp\.((.*?)\.)\w+?$", ""),
    ("envoy.cluster_name", r"^cluster\.(([^\.]+)\.).*", ""),
    (
        "envoy.http_conn_manager_prefix",
        r"^listener(?=\.).*?\.http\.((.*?)\.)",
        ".http.",
    ),
    ("envoy.http_conn_manager_prefix", r"^http\.((.*?)\.)", ""),
    (
        "envoy.listener_address",
        r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
        "",
    ),
    ("envoy.virtual_host", r"^vhost\.((.*?)\.)", ""),
    (
        "envoy.rds_route_config",
        r"^http(?=\.).*?\.rds\.((.*?)\.)\w+?$",
        ".rds.",
    ),
    (
        "envoy.worker_id",
        r"^listener_manager\.((worker_\d+)\.)",
        "listener_manager.worker_",
    ),
];

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
