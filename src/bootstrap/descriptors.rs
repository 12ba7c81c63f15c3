//! The descriptor pool of Envoy's API (shipped by the `envoy-types` crate) used for the proto3
//! JSON mapping of bootstraps, `typed_config` Anys and `/config_dump`.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, MessageDescriptor};

static ENVOY_TYPES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types.bin"));

/// The process-wide descriptor pool, decoded on first use.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The bytes are produced at build time from the dependency's own descriptor set, so a
        // decode failure is a broken build, not bad input.
        DescriptorPool::decode(ENVOY_TYPES).expect("envoy-types descriptor set decodes")
    })
}

/// The descriptor of a message by its full name (`envoy.config.listener.v3.Listener`).
pub fn message(full_name: &str) -> Option<MessageDescriptor> {
    pool().get_message_by_name(full_name)
}

/// The message full name of a `type.googleapis.com/...` type URL.
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}
