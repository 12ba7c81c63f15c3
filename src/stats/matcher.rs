//! `stats_config.stats_matcher`: which stats are instantiated.

/// One string pattern of an inclusion or exclusion list.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Exact name.
    Exact(String),
    /// Name starts with.
    Prefix(String),
    /// Name ends with.
    Suffix(String),
    /// Name contains.
    Contains(String),
    /// Full RE2-style match.
    Regex(regex::Regex),
}

impl Pattern {
    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(s) => name == s,
            Pattern::Prefix(s) => name.starts_with(s.as_str()),
            Pattern::Suffix(s) => name.ends_with(s.as_str()),
            Pattern::Contains(s) => name.contains(s.as_str()),
            Pattern::Regex(r) => r.is_match(name),
        }
    }
}

/// Accepts every stat, or those an inclusion list names, or all but an exclusion list.
#[derive(Debug, Clone, Default)]
pub struct StatsMatcher {
    inclusion: Option<Vec<Pattern>>,
    exclusion: Vec<Pattern>,
    reject_all: bool,
}

impl StatsMatcher {
    /// Builds a matcher; an empty `inclusion` means "no inclusion list".
    pub fn new(inclusion: Vec<Pattern>, exclusion: Vec<Pattern>) -> Self {
        Self {
            inclusion: (!inclusion.is_empty()).then_some(inclusion),
            exclusion,
            reject_all: false,
        }
    }

    /// A matcher that rejects every stat (`reject_all: true`).
    pub fn reject_all() -> Self {
        Self {
            reject_all: true,
            ..Self::default()
        }
    }

    /// Whether the stat named `name` is instantiated.
    pub fn accepts(&self, name: &str) -> bool {
        if self.reject_all {
            return false;
        }
        if let Some(inc) = &self.inclusion {
            return inc.iter().any(|p| p.matches(name));
        }
        !self.exclusion.iter().any(|p| p.matches(name))
    }
}
