//! Loading the bootstrap: the file given by `-c`, merged with `--config-yaml`, decoded with the
//! proto3 JSON mapping, and node overrides from the command line.

pub mod cli;
pub mod descriptors;
pub mod json;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use prost::Message;
use prost_reflect::DynamicMessage;

use crate::config::{ConfigError, ConfigErrors};
use cli::Options;

/// A loaded bootstrap and its reflection form (for the field-support check).
#[derive(Debug)]
pub struct Loaded {
    /// The merged bootstrap.
    pub bootstrap: Bootstrap,
    /// The same, as a dynamic message.
    pub dynamic: DynamicMessage,
    /// Unknown fields skipped under `--allow-unknown-static-fields`.
    pub unknown_fields: Vec<String>,
}

/// Reads, decodes and merges the bootstrap the options name.
pub fn load(opts: &Options) -> Result<Loaded, ConfigErrors> {
    if opts.config_path.is_empty() && opts.config_yaml.is_empty() {
        return Err(
            ConfigError::new("", "one of --config-path or --config-yaml is required").into(),
        );
    }
    let mut unknown = Vec::new();
    let mut bootstrap = Bootstrap::default();
    if !opts.config_path.is_empty() {
        let text = std::fs::read_to_string(&opts.config_path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", opts.config_path)))?;
        let value = json::parse_yaml(&text, &opts.config_path)?;
        let (b, _, u) = json::decode::<Bootstrap>(value, "", opts.allow_unknown_static_fields)?;
        bootstrap = b;
        unknown.extend(u);
    }
    if !opts.config_yaml.is_empty() {
        let value = json::parse_yaml(&opts.config_yaml, "--config-yaml")?;
        let (o, _, u) = json::decode::<Bootstrap>(value, "", opts.allow_unknown_static_fields)?;
        unknown.extend(u);
        // Envoy merges with protobuf MergeFrom: scalars replace, repeated fields append,
        // messages merge field by field. Decoding the override's bytes over the base is that.
        bootstrap
            .merge(o.encode_to_vec().as_slice())
            .map_err(|e| ConfigError::new("--config-yaml", format!("merge failed: {e}")))?;
    }
    let node = bootstrap.node.get_or_insert_with(Default::default);
    if !opts.service_node.is_empty() {
        node.id = opts.service_node.clone();
    }
    if !opts.service_cluster.is_empty() {
        node.cluster = opts.service_cluster.clone();
    }
    if !opts.service_zone.is_empty() {
        node.locality.get_or_insert_with(Default::default).zone = opts.service_zone.clone();
    }
    let desc = descriptors::message("envoy.config.bootstrap.v3.Bootstrap")
        .ok_or_else(|| ConfigError::new("", "no Bootstrap descriptor"))?;
    let dynamic = DynamicMessage::decode(desc, bootstrap.encode_to_vec().as_slice())
        .map_err(|e| ConfigError::new("", e.to_string()))?;
    Ok(Loaded {
        bootstrap,
        dynamic,
        unknown_fields: unknown,
    })
}
