//! Small conversions shared by every converter: durations, addresses, string matchers, headers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf;

use super::error::{ConfigError, join};

/// A protobuf duration as a std one (negative values are refused).
pub fn duration(d: &protobuf::Duration, path: &str) -> Result<Duration, ConfigError> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(ConfigError::new(path, "duration must not be negative"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// An optional timeout where an explicit 0 means "disabled" (None) and absence means `default`.
pub fn timeout_or(
    d: Option<&protobuf::Duration>,
    default: Option<Duration>,
    path: &str,
) -> Result<Option<Duration>, ConfigError> {
    match d {
        None => Ok(default),
        Some(d) => {
            let v = duration(d, path)?;
            Ok((!v.is_zero()).then_some(v))
        }
    }
}

/// Where a socket connects or binds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostAddress {
    /// An IP and port.
    Socket(SocketAddr),
    /// A name to resolve with DNS, and a port.
    Dns(String, u16),
    /// A Unix domain socket path (relative paths resolve against the working directory).
    Pipe(String),
}

impl std::fmt::Display for HostAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostAddress::Socket(s) => write!(f, "{s}"),
            HostAddress::Dns(h, p) => write!(f, "{h}:{p}"),
            HostAddress::Pipe(p) => write!(f, "unix://{p}"),
        }
    }
}

/// Converts a core Address; DNS names are allowed only when `allow_dns`.
pub fn address(a: &core::Address, path: &str, allow_dns: bool) -> Result<HostAddress, ConfigError> {
    use core::address::Address as A;
    match &a.address {
        Some(A::SocketAddress(sa)) => sock_address(sa, &join(path, "socket_address"), allow_dns),
        Some(A::Pipe(p)) => {
            if p.path.is_empty() {
                return Err(ConfigError::new(
                    join(path, "pipe.path"),
                    "must not be empty",
                ));
            }
            Ok(HostAddress::Pipe(p.path.clone()))
        }
        Some(A::EnvoyInternalAddress(_)) => Err(ConfigError::unsupported(join(
            path,
            "envoy_internal_address",
        ))),
        None => Err(ConfigError::new(path, "address is required")),
    }
}

/// Converts a SocketAddress at `path` (TCP; an IP, or a DNS name where `allow_dns`).
pub fn sock_address(
    sa: &core::SocketAddress,
    path: &str,
    allow_dns: bool,
) -> Result<HostAddress, ConfigError> {
    if sa.protocol != core::socket_address::Protocol::Tcp as i32 {
        return Err(ConfigError::new(
            join(path, "protocol"),
            "only TCP is supported",
        ));
    }
    let port = match &sa.port_specifier {
        Some(core::socket_address::PortSpecifier::PortValue(p)) if *p <= 65535 => *p as u16,
        Some(core::socket_address::PortSpecifier::PortValue(p)) => {
            return Err(ConfigError::new(
                join(path, "port_value"),
                format!("{p} is not a port"),
            ));
        }
        Some(core::socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(ConfigError::unsupported(join(path, "named_port")));
        }
        None => 0,
    };
    if !sa.resolver_name.is_empty() {
        return Err(ConfigError::unsupported(join(path, "resolver_name")));
    }
    match sa.address.parse::<IpAddr>() {
        Ok(ip) => Ok(HostAddress::Socket(SocketAddr::new(ip, port))),
        Err(_) if allow_dns && !sa.address.is_empty() => {
            Ok(HostAddress::Dns(sa.address.clone(), port))
        }
        Err(_) => Err(ConfigError::new(
            join(path, "address"),
            format!("{:?} is not an IP address", sa.address),
        )),
    }
}

/// Converts an address that must be an IP socket address.
pub fn socket_address(a: &core::Address, path: &str) -> Result<SocketAddr, ConfigError> {
    match address(a, path, false)? {
        HostAddress::Socket(s) => Ok(s),
        _ => Err(ConfigError::new(
            path,
            "a socket_address with an IP is required",
        )),
    }
}

/// A string matcher (`envoy.type.matcher.v3.StringMatcher`).
#[derive(Debug, Clone)]
pub struct StringMatch {
    kind: StringMatchKind,
    ignore_case: bool,
}

#[derive(Debug, Clone)]
enum StringMatchKind {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(regex::Regex),
}

impl StringMatch {
    /// Converts a StringMatcher.
    pub fn from_proto(m: &matcher::StringMatcher, path: &str) -> Result<Self, ConfigError> {
        use matcher::string_matcher::MatchPattern as P;
        let ic = m.ignore_case;
        let fold = |s: &String| if ic { s.to_lowercase() } else { s.clone() };
        let kind = match &m.match_pattern {
            Some(P::Exact(s)) => StringMatchKind::Exact(fold(s)),
            Some(P::Prefix(s)) => StringMatchKind::Prefix(fold(s)),
            Some(P::Suffix(s)) => StringMatchKind::Suffix(fold(s)),
            Some(P::Contains(s)) => StringMatchKind::Contains(fold(s)),
            Some(P::SafeRegex(r)) => {
                StringMatchKind::Regex(full_regex(&r.regex, &join(path, "safe_regex.regex"))?)
            }
            Some(P::Custom(_)) => return Err(ConfigError::unsupported(join(path, "custom"))),
            None => return Err(ConfigError::new(path, "a match pattern is required")),
        };
        Ok(Self {
            kind,
            ignore_case: ic,
        })
    }

    /// An exact matcher.
    pub fn exact(s: &str) -> Self {
        Self {
            kind: StringMatchKind::Exact(s.to_string()),
            ignore_case: false,
        }
    }
    /// A prefix matcher.
    pub fn prefix(s: &str) -> Self {
        Self {
            kind: StringMatchKind::Prefix(s.to_string()),
            ignore_case: false,
        }
    }
    /// A suffix matcher.
    pub fn suffix(s: &str) -> Self {
        Self {
            kind: StringMatchKind::Suffix(s.to_string()),
            ignore_case: false,
        }
    }
    /// A substring matcher.
    pub fn contains(s: &str) -> Self {
        Self {
            kind: StringMatchKind::Contains(s.to_string()),
            ignore_case: false,
        }
    }
    /// A full-match regex matcher.
    pub fn regex(r: regex::Regex) -> Self {
        Self {
            kind: StringMatchKind::Regex(r),
            ignore_case: false,
        }
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        let owned;
        let v = if self.ignore_case && !matches!(self.kind, StringMatchKind::Regex(_)) {
            owned = value.to_lowercase();
            owned.as_str()
        } else {
            value
        };
        match &self.kind {
            StringMatchKind::Exact(s) => v == s,
            StringMatchKind::Prefix(s) => v.starts_with(s.as_str()),
            StringMatchKind::Suffix(s) => v.ends_with(s.as_str()),
            StringMatchKind::Contains(s) => v.contains(s.as_str()),
            StringMatchKind::Regex(r) => r.is_match(v),
        }
    }
}

/// Compiles a regex anchored for a full match (RE2 `FullMatch` semantics).
pub fn full_regex(re: &str, path: &str) -> Result<regex::Regex, ConfigError> {
    regex::Regex::new(&format!("^(?:{re})$"))
        .map_err(|e| ConfigError::new(path, format!("invalid regex: {e}")))
}

/// One header to add, with Envoy's append semantics.
#[derive(Debug, Clone)]
pub struct HeaderToAdd {
    /// Header name (lowercase).
    pub name: http::HeaderName,
    /// Value.
    pub value: http::HeaderValue,
    /// What to do when the header exists.
    pub action: AppendAction,
    /// Add even when the value is empty.
    pub keep_empty_value: bool,
}

/// `HeaderValueOption.append_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    /// Append a value, or add the header.
    AppendIfExistsOrAdd,
    /// Add only when absent.
    AddIfAbsent,
    /// Replace existing values, or add.
    OverwriteIfExistsOrAdd,
    /// Replace only when present.
    OverwriteIfExists,
}

/// Header mutations of one config level.
#[derive(Debug, Clone, Default)]
pub struct HeaderMutations {
    /// Headers to add.
    pub add: Vec<HeaderToAdd>,
    /// Header names to remove.
    pub remove: Vec<http::HeaderName>,
}

impl HeaderMutations {
    /// Converts `*_headers_to_add` and `*_headers_to_remove`.
    pub fn from_proto(
        add: &[core::HeaderValueOption],
        remove: &[String],
        path: &str,
        add_field: &str,
        remove_field: &str,
    ) -> Result<Self, ConfigError> {
        let mut out = HeaderMutations::default();
        for (i, h) in add.iter().enumerate() {
            let p = super::error::index(path, add_field, i);
            let hv = h
                .header
                .as_ref()
                .ok_or_else(|| ConfigError::new(&p, "header is required"))?;
            let name = http::HeaderName::from_bytes(hv.key.to_ascii_lowercase().as_bytes())
                .map_err(|_| {
                    ConfigError::new(
                        join(&p, "header.key"),
                        format!("{:?} is not a header name", hv.key),
                    )
                })?;
            if name.as_str().starts_with(':') || name == http::header::HOST {
                return Err(ConfigError::new(
                    join(&p, "header.key"),
                    "pseudo-headers and host cannot be added",
                ));
            }
            if hv.value.contains('%') {
                return Err(ConfigError::new(
                    join(&p, "header.value"),
                    "%-substitution formatters are not supported",
                ));
            }
            let raw = if hv.raw_value.is_empty() {
                hv.value.as_bytes().to_vec()
            } else {
                hv.raw_value.clone()
            };
            let value = http::HeaderValue::from_bytes(&raw).map_err(|_| {
                ConfigError::new(join(&p, "header.value"), "not a valid header value")
            })?;
            let action = if let Some(append) = &h.append {
                if h.append_action != 0 {
                    return Err(ConfigError::new(
                        &p,
                        "append and append_action are mutually exclusive",
                    ));
                }
                if append.value {
                    AppendAction::AppendIfExistsOrAdd
                } else {
                    AppendAction::OverwriteIfExistsOrAdd
                }
            } else {
                match h.append_action {
                    0 => AppendAction::AppendIfExistsOrAdd,
                    1 => AppendAction::AddIfAbsent,
                    2 => AppendAction::OverwriteIfExistsOrAdd,
                    3 => AppendAction::OverwriteIfExists,
                    n => {
                        return Err(ConfigError::new(
                            join(&p, "append_action"),
                            format!("unknown value {n}"),
                        ));
                    }
                }
            };
            out.add.push(HeaderToAdd {
                name,
                value,
                action,
                keep_empty_value: h.keep_empty_value,
            });
        }
        for (i, r) in remove.iter().enumerate() {
            let name =
                http::HeaderName::from_bytes(r.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    ConfigError::new(
                        super::error::index(path, remove_field, i),
                        format!("{r:?} is not a header name"),
                    )
                })?;
            out.remove.push(name);
        }
        Ok(out)
    }

    /// Applies removals then additions to `headers`.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for r in &self.remove {
            headers.remove(r);
        }
        for a in &self.add {
            if a.value.is_empty() && !a.keep_empty_value {
                continue;
            }
            match a.action {
                AppendAction::AppendIfExistsOrAdd => {
                    headers.append(a.name.clone(), a.value.clone());
                }
                AppendAction::AddIfAbsent => {
                    if !headers.contains_key(&a.name) {
                        headers.insert(a.name.clone(), a.value.clone());
                    }
                }
                AppendAction::OverwriteIfExistsOrAdd => {
                    headers.insert(a.name.clone(), a.value.clone());
                }
                AppendAction::OverwriteIfExists => {
                    if headers.contains_key(&a.name) {
                        headers.insert(a.name.clone(), a.value.clone());
                    }
                }
            }
        }
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// A CIDR range (`envoy.config.core.v3.CidrRange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Cidr {
    /// Converts a CidrRange.
    pub fn from_proto(c: &core::CidrRange, path: &str) -> Result<Self, ConfigError> {
        let addr: IpAddr = c.address_prefix.parse().map_err(|_| {
            ConfigError::new(
                join(path, "address_prefix"),
                format!("{:?} is not an IP address", c.address_prefix),
            )
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = c.prefix_len.as_ref().map(|v| v.value).unwrap_or(max);
        if len > max {
            return Err(ConfigError::new(
                join(path, "prefix_len"),
                format!("{len} is longer than {max}"),
            ));
        }
        Ok(Self {
            addr,
            len: len as u8,
        })
    }

    /// Whether `ip` is inside the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len)
                };
                (u32::from(a) & mask) == (u32::from(b) & mask)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len)
                };
                (u128::from(a) & mask) == (u128::from(b) & mask)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let c = Cidr {
            addr: "10.1.0.0".parse().unwrap(),
            len: 16,
        };
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let any = Cidr {
            addr: "0.0.0.0".parse().unwrap(),
            len: 0,
        };
        assert!(any.contains("1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn string_matchers() {
        assert!(StringMatch::prefix("/a").matches("/abc"));
        assert!(StringMatch::regex(full_regex("a.c", "").unwrap()).matches("abc"));
        assert!(!StringMatch::regex(full_regex("a.c", "").unwrap()).matches("abcd"));
    }
}

/// A resource kept as its encoded bytes: the shape `/config_dump` and change detection need,
/// at a fraction of the memory of a decoded prost message (which holds every optional
/// submessage inline).
#[derive(Clone, PartialEq, Eq)]
pub struct Encoded<M> {
    bytes: Box<[u8]>,
    _message: std::marker::PhantomData<fn() -> M>,
}

impl<M: prost::Message + Default> Encoded<M> {
    /// Encodes `m`.
    pub fn new(m: &M) -> Self {
        Self::from_bytes(m.encode_to_vec())
    }

    /// Keeps bytes as received (a control plane's encoding of the resource).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self {
            bytes: bytes.into_boxed_slice(),
            _message: std::marker::PhantomData,
        }
    }

    /// The message (default if the bytes, which came from a decoded message, do not decode).
    pub fn decode(&self) -> M {
        M::decode(&*self.bytes).unwrap_or_default()
    }
}

impl<M> std::fmt::Debug for Encoded<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded({} bytes)", self.bytes.len())
    }
}
