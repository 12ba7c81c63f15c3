//! Config errors name the field path they are about, so an operator can find and fix them.

use std::fmt;

/// One rejected piece of configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Dotted field path with `[i]` indexes, e.g. `static_resources.listeners[0].address`.
    pub path: String,
    /// What is wrong there.
    pub msg: String,
}

impl ConfigError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, msg: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// The same error with `root` prefixed to its path.
    pub fn under(mut self, root: &str) -> Self {
        self.path = match (root.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => root.to_string(),
            (false, false) => format!("{root}.{}", self.path),
        };
        self
    }

    /// An error at `path` saying a field that would change behaviour is not implemented.
    pub fn unsupported(path: impl Into<String>) -> Self {
        Self::new(
            path,
            "unsupported field: it is not implemented and would change behaviour",
        )
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}: {}", self.path, self.msg)
        }
    }
}

/// Several errors gathered while checking a whole config (validate mode prints them all).
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Records an error.
    pub fn push(&mut self, e: ConfigError) {
        self.0.push(e);
    }

    /// Keeps the value of `r`, recording its error.
    pub fn keep<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    /// `Ok(v)` when nothing was recorded.
    pub fn into_result<T>(self, v: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() { Ok(v) } else { Err(self) }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

/// Joins a path and a field name.
pub fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Joins a path, a repeated field name and an index.
pub fn index(path: &str, field: &str, i: usize) -> String {
    format!("{}[{i}]", join(path, field))
}
