//! The compressor filter's response path: negotiates the encoding from Accept-Encoding across
//! the chain's compressor filters (highest q wins, ties go to the earlier filter) and streams
//! the body through the encoder.

use std::sync::Arc;

use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use futures_util::TryStreamExt;
use http::{HeaderValue, Response};
use http_body_util::{BodyDataStream, BodyExt, StreamBody};
use tokio_util::io::{ReaderStream, StreamReader};

use super::{Body, BoxError};
use crate::config::compressor::{CompressorConfig, Library};
use crate::stats::{Counter, Store};

/// A compressor filter with its stats.
#[derive(Debug)]
pub struct Compressor {
    /// Its config.
    pub config: Arc<CompressorConfig>,
    compressed: Arc<Counter>,
    not_compressed: Arc<Counter>,
}

impl Compressor {
    /// Declares `<hcm prefix>compressor.<name>.<library>.*` stats.
    pub fn new(config: Arc<CompressorConfig>, store: &Store, hcm_prefix: &str) -> Self {
        let p = format!(
            "http.{hcm_prefix}.compressor.{}.{}.",
            config.name,
            config.library.stat_name()
        );
        Self {
            compressed: store.counter(&format!("{p}compressed")),
            not_compressed: store.counter(&format!("{p}not_compressed")),
            config,
        }
    }
}

/// Parses Accept-Encoding into (coding, q) pairs.
fn parse_accept_encoding(v: &str) -> Vec<(String, f32)> {
    v.split(',')
        .filter_map(|part| {
            let mut it = part.split(';');
            let coding = it.next()?.trim().to_ascii_lowercase();
            if coding.is_empty() {
                return None;
            }
            let mut q = 1.0;
            for p in it {
                if let Some(v) = p.trim().strip_prefix("q=") {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            Some((coding, q))
        })
        .collect()
}

/// Picks the compressor to use for a request's Accept-Encoding, as an index into `filters`.
pub fn choose(filters: &[Compressor], accept_encoding: Option<&str>) -> Option<usize> {
    let accepted = parse_accept_encoding(accept_encoding?);
    let q_of = |enc: &str| -> f32 {
        accepted
            .iter()
            .find(|(c, _)| c == enc)
            .or_else(|| accepted.iter().find(|(c, _)| c == "*"))
            .map(|(_, q)| *q)
            .unwrap_or(0.0)
    };
    let mut best: Option<(usize, f32)> = None;
    for (i, f) in filters.iter().enumerate() {
        if !f.config.enabled {
            continue;
        }
        let q = q_of(f.config.library.encoding());
        if q <= 0.0 {
            continue;
        }
        if f.config.choose_first {
            return Some(i);
        }
        if best.is_none_or(|(_, bq)| q > bq) {
            best = Some((i, q));
        }
    }
    best.map(|(i, _)| i)
}

fn media_type(resp: &Response<Body>) -> Option<String> {
    let ct = resp
        .headers()
        .get(http::header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    Some(
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Whether the response could be compressed by `cfg` (content type, size, status, caching).
fn eligible(cfg: &CompressorConfig, resp: &Response<Body>, head: bool) -> bool {
    let status = resp.status().as_u16();
    if head || status < 200 || status == 204 || status == 304 {
        return false;
    }
    let h = resp.headers();
    if h.get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return false;
    }
    if h.get_all(http::header::CACHE_CONTROL).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains("no-transform")
    }) {
        return false;
    }
    if let Some(len) = h
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len < cfg.min_content_length
    {
        return false;
    }
    if cfg.disable_on_etag_header && h.contains_key(http::header::ETAG) {
        return false;
    }
    match media_type(resp) {
        Some(t) => cfg.content_types.contains(&t),
        None => true,
    }
}

fn add_vary(resp: &mut Response<Body>) {
    let has = resp.headers().get_all(http::header::VARY).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding") || t.trim() == "*")
    });
    if !has {
        resp.headers_mut().append(
            http::header::VARY,
            HeaderValue::from_static("Accept-Encoding"),
        );
    }
}

/// Applies the chosen compressor (if any) to a response.
pub fn apply(
    filters: &[Compressor],
    chosen: Option<usize>,
    head: bool,
    mut resp: Response<Body>,
) -> Response<Body> {
    let any_eligible = filters.iter().any(|f| eligible(&f.config, &resp, head));
    let Some(i) = chosen.filter(|i| eligible(&filters[*i].config, &resp, head)) else {
        if any_eligible {
            add_vary(&mut resp);
        }
        for f in filters {
            f.not_compressed.inc();
        }
        return resp;
    };
    let f = &filters[i];
    f.compressed.inc();
    add_vary(&mut resp);
    let headers = resp.headers_mut();
    headers.remove(http::header::CONTENT_LENGTH);
    headers.insert(
        http::header::CONTENT_ENCODING,
        HeaderValue::from_static(f.config.library.encoding()),
    );
    if let Some(etag) = headers.get(http::header::ETAG).cloned()
        && !etag.as_bytes().starts_with(b"W/")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&weak) {
            headers.insert(http::header::ETAG, v);
        }
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, encode(f.config.library, body))
}

fn encode(library: Library, body: Body) -> Body {
    let reader = StreamReader::new(BodyDataStream::new(body).map_err(std::io::Error::other));
    match library {
        Library::Gzip(l) => frames(GzipEncoder::with_quality(reader, Level::Precise(l))),
        Library::Brotli(q) => frames(BrotliEncoder::with_quality(reader, Level::Precise(q))),
        Library::Zstd(l) => frames(ZstdEncoder::with_quality(reader, Level::Precise(l))),
    }
}

fn frames<R: tokio::io::AsyncRead + Send + Sync + 'static>(r: R) -> Body {
    StreamBody::new(
        ReaderStream::new(r)
            .map_ok(hyper::body::Frame::data)
            .map_err(|e| Box::new(e) as BoxError),
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(lib: Library) -> Compressor {
        let store = Store::default();
        let cfg = CompressorConfig {
            name: "n".into(),
            library: lib,
            enabled: true,
            min_content_length: 30,
            content_types: vec!["text/plain".into()],
            disable_on_etag_header: false,
            remove_accept_encoding_header: false,
            choose_first: false,
        };
        Compressor::new(Arc::new(cfg), &store, "p")
    }

    #[test]
    fn negotiation_prefers_q_then_filter_order() {
        let fs = [
            filter(Library::Brotli(3)),
            filter(Library::Zstd(3)),
            filter(Library::Gzip(6)),
        ];
        assert_eq!(choose(&fs, Some("gzip")), Some(2));
        assert_eq!(choose(&fs, Some("gzip, br")), Some(0));
        assert_eq!(choose(&fs, Some("gzip;q=1, br;q=0.5")), Some(2));
        assert_eq!(choose(&fs, Some("*")), Some(0));
        assert_eq!(choose(&fs, Some("br;q=0, *;q=0.1")), Some(1));
        assert_eq!(choose(&fs, Some("identity")), None);
        assert_eq!(choose(&fs, None), None);
    }
}
