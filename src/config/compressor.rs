//! `envoy.filters.http.compressor` with the gzip, brotli and zstd libraries.

use envoy_types::pb::envoy::extensions::compression::brotli::compressor::v3::Brotli;
use envoy_types::pb::envoy::extensions::compression::gzip::compressor::v3::Gzip;
use envoy_types::pb::envoy::extensions::compression::zstd::compressor::v3::Zstd;
use envoy_types::pb::envoy::extensions::filters::http::compressor::v3 as compressor;
use prost::Message;

use super::error::{ConfigError, join};
use crate::bootstrap::descriptors::type_name;

/// A compression algorithm with its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    /// gzip at a zlib level (1..=9).
    Gzip(i32),
    /// brotli at a quality (0..=11).
    Brotli(i32),
    /// zstd at a level.
    Zstd(i32),
}

impl Library {
    /// The Content-Encoding token.
    pub fn encoding(self) -> &'static str {
        match self {
            Library::Gzip(_) => "gzip",
            Library::Brotli(_) => "br",
            Library::Zstd(_) => "zstd",
        }
    }

    /// The library's own stat prefix.
    pub fn stat_name(self) -> &'static str {
        match self {
            Library::Gzip(_) => "gzip",
            Library::Brotli(_) => "brotli",
            Library::Zstd(_) => "zstd",
        }
    }
}

/// A converted Compressor filter (response direction).
#[derive(Debug, Clone)]
pub struct CompressorConfig {
    /// `compressor_library.name`, used in stats.
    pub name: String,
    /// The algorithm.
    pub library: Library,
    /// Response compression enabled.
    pub enabled: bool,
    /// Smallest body compressed when its length is known.
    pub min_content_length: u64,
    /// Media types compressed (lowercase, without parameters).
    pub content_types: Vec<String>,
    /// Do not compress responses with an ETag.
    pub disable_on_etag_header: bool,
    /// Remove Accept-Encoding before forwarding.
    pub remove_accept_encoding_header: bool,
    /// Pick this compressor over later ones regardless of q-values.
    pub choose_first: bool,
}

const DEFAULT_TYPES: &[&str] = &[
    "application/javascript",
    "application/json",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/css",
    "text/html",
    "text/plain",
    "text/xml",
];

impl CompressorConfig {
    /// Converts a Compressor; `path` points at its typed_config.
    pub fn from_proto(c: &compressor::Compressor, path: &str) -> Result<Self, ConfigError> {
        let lib = c
            .compressor_library
            .as_ref()
            .ok_or_else(|| ConfigError::new(join(path, "compressor_library"), "is required"))?;
        let lp = join(path, "compressor_library.typed_config");
        let any = lib
            .typed_config
            .as_ref()
            .ok_or_else(|| ConfigError::new(&lp, "is required"))?;
        let bad = |e: prost::DecodeError| ConfigError::new(&lp, format!("cannot decode: {e}"));
        let library = match type_name(&any.type_url) {
            "envoy.extensions.compression.gzip.compressor.v3.Gzip" => {
                let g = Gzip::decode(any.value.as_slice()).map_err(bad)?;
                // DEFAULT_COMPRESSION is zlib's default level 6; BEST_SPEED is 1; the numbered
                // levels follow; BEST_COMPRESSION is 9.
                let level = match g.compression_level {
                    0 => 6,
                    1 => 1,
                    2..=10 => g.compression_level - 1,
                    n => {
                        return Err(ConfigError::new(
                            join(&lp, "compression_level"),
                            format!("unknown value {n}"),
                        ));
                    }
                };
                Library::Gzip(level.clamp(1, 9))
            }
            "envoy.extensions.compression.brotli.compressor.v3.Brotli" => {
                let b = Brotli::decode(any.value.as_slice()).map_err(bad)?;
                Library::Brotli(b.quality.map(|q| q.value as i32).unwrap_or(3).clamp(0, 11))
            }
            "envoy.extensions.compression.zstd.compressor.v3.Zstd" => {
                let z = Zstd::decode(any.value.as_slice()).map_err(bad)?;
                if z.dictionary.is_some() {
                    return Err(ConfigError::unsupported(join(&lp, "dictionary")));
                }
                Library::Zstd(z.compression_level.map(|l| l.value as i32).unwrap_or(3))
            }
            other => {
                return Err(ConfigError::new(
                    &lp,
                    format!("compressor library {other:?} is not supported"),
                ));
            }
        };
        if c.request_direction_config
            .as_ref()
            .and_then(|r| r.common_config.as_ref())
            .and_then(|c| c.enabled.as_ref())
            .is_some_and(|e| e.default_value.as_ref().is_some_and(|v| v.value))
        {
            return Err(ConfigError::unsupported(join(
                path,
                "request_direction_config",
            )));
        }
        let resp = c.response_direction_config.clone().unwrap_or_default();
        let common = resp.common_config.clone().unwrap_or_default();
        let enabled = common
            .enabled
            .as_ref()
            .and_then(|e| e.default_value.as_ref())
            .map(|v| v.value)
            .unwrap_or(true);
        let min_content_length = common
            .min_content_length
            .as_ref()
            .map(|v| v.value)
            .or(c.content_length.as_ref().map(|v| v.value))
            .unwrap_or(30) as u64;
        let mut types: Vec<String> = if !common.content_type.is_empty() {
            common.content_type.clone()
        } else {
            c.content_type.clone()
        };
        if types.is_empty() {
            types = DEFAULT_TYPES.iter().map(|s| s.to_string()).collect();
        }
        Ok(Self {
            name: lib.name.clone(),
            library,
            enabled,
            min_content_length,
            content_types: types.into_iter().map(|t| t.to_ascii_lowercase()).collect(),
            disable_on_etag_header: resp.disable_on_etag_header || c.disable_on_etag_header,
            remove_accept_encoding_header: resp.remove_accept_encoding_header
                || c.remove_accept_encoding_header,
            choose_first: c.choose_first,
        })
    }
}
