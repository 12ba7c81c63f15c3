//! The descriptor pool of Envoy's API (shipped by the `envoy-types` crate) used for the proto3
//! JSON mapping of bootstraps, `typed_config` Anys and `/config_dump`.
//!
//! The decoded pool is large (tens of MB), and the data path never needs it: it is decoded
//! when config is read or dumped, and [`release`] frees it once that work is done.

use std::sync::Mutex;

use prost_reflect::{DescriptorPool, MessageDescriptor};

static ENVOY_TYPES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types.bin"));
static POOL: Mutex<Option<DescriptorPool>> = Mutex::new(None);

/// The descriptor pool, decoded on first use after a [`release`].
pub fn pool() -> DescriptorPool {
    let mut slot = POOL.lock().unwrap_or_else(|e| e.into_inner());
    slot.get_or_insert_with(|| {
        // The bytes are produced at build time from the dependency's own descriptor set, so a
        // decode failure is a broken build, not bad input.
        DescriptorPool::decode(ENVOY_TYPES).expect("envoy-types descriptor set decodes")
    })
    .clone()
}

/// Drops the cached pool; it is freed once the last descriptor taken from it is dropped.
pub fn release() {
    POOL.lock().unwrap_or_else(|e| e.into_inner()).take();
    crate::sys::release_free_memory();
}

/// The descriptor of a message by its full name (`envoy.config.listener.v3.Listener`).
pub fn message(full_name: &str) -> Option<MessageDescriptor> {
    pool().get_message_by_name(full_name)
}

/// The message full name of a `type.googleapis.com/...` type URL.
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Releases the pool once no config work asked for this for a while: xDS updates come in
/// bursts, and decoding the pool for each would cost more than keeping it between them. Must
/// be called inside a tokio runtime.
pub fn release_later() {
    use std::sync::atomic::Ordering;
    let generation = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        if GENERATION.load(Ordering::Acquire) == generation {
            release();
        }
    });
}
