//! Request header handling as Envoy's HCM does it: x-forwarded-for, x-forwarded-proto,
//! x-request-id, internal-request detection and x-envoy-* sanitizing.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::hcm::HcmConfig;

static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
static XRID: HeaderName = HeaderName::from_static("x-request-id");
static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
static XEI: HeaderName = HeaderName::from_static("x-envoy-internal");
static XEEA: HeaderName = HeaderName::from_static("x-envoy-external-address");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What header processing decided about the request.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The request came from an internal address.
    pub internal: bool,
    /// The x-request-id the request carries now, when `always_set_request_id_in_response`
    /// needs it for the response.
    pub request_id: Option<HeaderValue>,
}

/// Envoy's default internal ranges: RFC 1918, loopback and IPv6 unique-local.
fn default_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v| v.is_private() || v.is_loopback())
        }
    }
}

fn is_internal(cfg: &HcmConfig, ip: IpAddr) -> bool {
    match &cfg.internal_cidrs {
        Some(ranges) => ranges.iter().any(|r| r.contains(ip)),
        None => default_internal(ip),
    }
}

/// Mutates request headers before routing. `remote` is the peer address, `tls` whether the
/// downstream connection is encrypted, `client_cert` the x-forwarded-client-cert element of
/// its client certificate (None without one).
pub fn mutate_request(
    cfg: &HcmConfig,
    headers: &mut HeaderMap,
    remote: IpAddr,
    tls: bool,
    client_cert: Option<&str>,
) -> Decision {
    let scheme = if tls { "https" } else { "http" };
    // One pass over the names first: most requests carry none of the headers below, and a
    // lookup per header would hash each name.
    let present = Present::scan(headers);
    let internal;
    if cfg.use_remote_address {
        if !cfg.skip_xff_append {
            append_xff(headers, remote, present.xff);
        }
        internal = is_internal(cfg, remote);
        if !internal {
            headers.insert(
                XEEA.clone(),
                HeaderValue::from_str(&remote.to_string()).unwrap_or(HeaderValue::from_static("")),
            );
        }
        // The proxy is the edge: it sets x-forwarded-proto from the connection.
        headers.insert(XFP.clone(), HeaderValue::from_static(scheme));
    } else {
        // Trust x-forwarded-for: the client address is num_trusted_hops from the right.
        let client = present
            .xff
            .then(|| xff_client(headers, cfg.xff_num_trusted_hops))
            .flatten();
        internal = match client {
            Some(ip) => is_internal(cfg, ip),
            None => false,
        };
        if !present.xfp {
            headers.insert(XFP.clone(), HeaderValue::from_static(scheme));
        }
    }
    // The x-envoy-external-address set above is not in `present.envoy`: sanitizing keeps
    // it anyway.
    if internal {
        headers.insert(XEI.clone(), HeaderValue::from_static("true"));
    } else {
        if present.xei {
            headers.remove(&XEI);
        }
        if cfg.use_remote_address && present.envoy {
            sanitize_envoy_headers(headers);
        }
    }
    if present.xfcc || client_cert.is_some() {
        super::xfcc::mutate(cfg.forward_client_cert, headers, client_cert);
    }
    let keep_id =
        present.xrid && (internal || cfg.preserve_external_request_id || !cfg.use_remote_address);
    if cfg.generate_request_id && !keep_id {
        // A version-4 UUID from the thread's fast generator: request ids need uniqueness, not
        // unpredictability, and a getrandom call per request is measurable.
        if let Some(v) = request_id_value(fastrand::u128(..)) {
            headers.insert(XRID.clone(), v);
        }
    }
    Decision {
        internal,
        request_id: if cfg.always_set_request_id_in_response {
            headers.get(&XRID).cloned()
        } else {
            None
        },
    }
}

/// Request ids are cut from a per-thread block of this many: one allocation per block, not one
/// per request. A block is freed with the last of its ids.
const REQUEST_IDS_PER_BLOCK: usize = 32;

/// `random` as a version-4 UUID header value, its bytes shared with other ids of the thread's
/// current block.
fn request_id_value(random: u128) -> Option<HeaderValue> {
    const LEN: usize = 36;
    thread_local! {
        static BLOCK: std::cell::RefCell<bytes::BytesMut> =
            std::cell::RefCell::new(bytes::BytesMut::new());
    }
    BLOCK.with_borrow_mut(|block| {
        if block.capacity() < LEN {
            *block = bytes::BytesMut::with_capacity(LEN * REQUEST_IDS_PER_BLOCK);
        }
        block.extend_from_slice(&uuid_v4(random));
        HeaderValue::from_maybe_shared(block.split().freeze()).ok()
    })
}

/// `random` as a version-4 UUID in its hyphenated lower-case form (RFC 9562): the version
/// and variant bits are set, the other 122 bits are `random`'s.
fn uuid_v4(random: u128) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = random.to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0x0f)];
        at += 2;
    }
    out
}

/// `n` as a header value. Values under 1000 (most upstream service times, in milliseconds)
/// come from a table made on first use, whose bytes are static: the common case allocates
/// nothing.
pub fn number_value(n: u64) -> HeaderValue {
    const CACHED: u64 = 1000;
    static TABLE: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    if n >= CACHED {
        return HeaderValue::from(n);
    }
    let table = TABLE.get_or_init(|| {
        // One string of every number, kept for the life of the process.
        let digits: &'static str = Box::leak(
            (0..CACHED)
                .map(|i| i.to_string())
                .collect::<String>()
                .into_boxed_str(),
        );
        let mut at = 0;
        (0..CACHED)
            .map(|i| {
                let len = i.checked_ilog10().unwrap_or(0) as usize + 1;
                let v = HeaderValue::from_static(&digits[at..at + len]);
                at += len;
                v
            })
            .collect()
    });
    table[n as usize].clone()
}

/// Which of the headers `mutate_request` may remove are present, from one pass over the names
/// (cheaper than a lookup per name for the few headers a request carries).
#[derive(Debug, Default)]
struct Present {
    xei: bool,
    xfcc: bool,
    xrid: bool,
    xff: bool,
    xfp: bool,
    /// Any x-envoy-* header.
    envoy: bool,
}

impl Present {
    fn scan(headers: &HeaderMap) -> Self {
        let mut p = Present::default();
        for k in headers.keys() {
            let k = k.as_str();
            if k.starts_with("x-envoy-") {
                p.envoy = true;
                p.xei |= k == XEI.as_str();
            } else if k == XFCC.as_str() {
                p.xfcc = true;
            } else if k == XRID.as_str() {
                p.xrid = true;
            } else if k == XFF.as_str() {
                p.xff = true;
            } else if k == XFP.as_str() {
                p.xfp = true;
            }
        }
        p
    }
}

fn append_xff(headers: &mut HeaderMap, ip: IpAddr, present: bool) {
    let ip = ip.to_string();
    let existing = present.then(|| headers.get(&XFF)).flatten();
    let v = match existing.and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing},{ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&v) {
        headers.insert(XFF.clone(), v);
    }
}

fn xff_client(headers: &HeaderMap, trusted_hops: u32) -> Option<IpAddr> {
    let v = headers.get(&XFF)?.to_str().ok()?;
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    let idx = parts.len().checked_sub(1 + trusted_hops as usize)?;
    parts.get(idx)?.parse().ok()
}

/// Removes x-envoy-* request headers an external client could use to steer the proxy.
fn sanitize_envoy_headers(headers: &mut HeaderMap) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            k.starts_with("x-envoy-")
                && k != "x-envoy-external-address"
                && !matches!(
                    k,
                    "x-envoy-decorator-operation"
                        | "x-envoy-downstream-service-cluster"
                        | "x-envoy-downstream-service-node"
                )
        })
        .cloned()
        .collect();
    for k in doomed {
        headers.remove(k);
    }
}

/// Hop-by-hop headers never forwarded: those `connection` names, keep-alive,
/// proxy-connection, transfer-encoding, connection and upgrade (both kept for an upgrade),
/// and te unless it is `trailers`. One pass over the names finds which are present, as most
/// messages carry none or only `connection: keep-alive`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
    let (mut connection, mut others, mut te) = (false, false, false);
    for name in headers.keys() {
        if name == CONNECTION {
            connection = true;
        } else if name == TE {
            te = true;
        } else if name == TRANSFER_ENCODING
            || name == UPGRADE
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
        {
            others = true;
        }
    }
    if connection {
        // Names listed in `connection` (other than its own options) are hop-by-hop too; most
        // messages list none, and then nothing is collected.
        if connection_names(headers, keep_upgrade).next().is_some() {
            let names: Vec<HeaderName> = connection_names(headers, keep_upgrade)
                .filter_map(|t| HeaderName::from_bytes(t).ok())
                .collect();
            for name in names {
                headers.remove(&name);
            }
        }
        if !keep_upgrade {
            headers.remove(CONNECTION);
        }
    }
    if others {
        headers.remove(&KEEP_ALIVE);
        headers.remove(&PROXY_CONNECTION);
        headers.remove(TRANSFER_ENCODING);
        if !keep_upgrade {
            headers.remove(UPGRADE);
        }
    }
    if te
        && headers
            .get(TE)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(TE);
    }
}

/// The tokens of the `connection` headers that name other headers: all but its own options
/// (close, keep-alive, and upgrade when the upgrade is kept).
fn connection_names(headers: &HeaderMap, keep_upgrade: bool) -> impl Iterator<Item = &[u8]> {
    use http::header::CONNECTION;
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| t.trim_ascii())
        .filter(move |t| {
            !(t.is_empty()
                || t.eq_ignore_ascii_case(b"close")
                || t.eq_ignore_ascii_case(b"keep-alive")
                || (keep_upgrade && t.eq_ignore_ascii_case(b"upgrade")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids() {
        for random in [0, u128::MAX, 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef] {
            let id = uuid_v4(random);
            let text = std::str::from_utf8(&id).unwrap();
            let parsed = uuid::Uuid::parse_str(text).unwrap();
            assert_eq!(parsed.get_version_num(), 4, "{text}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{text}");
            assert_eq!(
                text,
                parsed.hyphenated().to_string(),
                "lower case, hyphenated"
            );
        }
        assert_eq!(
            &uuid_v4(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            b"01234567-89ab-4def-8123-456789abcdef"
        );
    }

    #[test]
    fn request_id_values_cut_from_blocks_stay_whole() {
        // Three blocks' worth, all alive at once: each value keeps its own id.
        let n = REQUEST_IDS_PER_BLOCK * 3 + 1;
        let values: Vec<HeaderValue> = (0..n as u128)
            .map(|i| request_id_value(i).unwrap())
            .collect();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(v.as_bytes(), &uuid_v4(i as u128), "id {i}");
        }
    }

    #[test]
    fn xff_trusted_hops() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 10.0.0.1".parse().unwrap());
        assert_eq!(xff_client(&h, 0), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(xff_client(&h, 1), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(xff_client(&h, 2), None);
    }

    #[test]
    fn number_values_cached_and_not() {
        for n in [0, 7, 10, 99, 100, 999, 1000, 123_456] {
            assert_eq!(number_value(n), n.to_string().as_str(), "{n}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "x-custom, close".parse().unwrap());
        h.insert("x-custom", "1".parse().unwrap());
        h.insert("keep-alive", "5".parse().unwrap());
        h.insert("te", "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
    }
}
