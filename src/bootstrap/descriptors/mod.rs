//! The descriptor pool of Envoy's API (shipped by the `envoy-types` crate) used for the proto3
//! JSON mapping of bootstraps, `typed_config` Anys and `/config_dump`.
//!
//! The data path never needs descriptors, and a decoded pool is large, so the pool is built
//! lazily: a lookup decodes only the file defining the type and the files it imports, and
//! [`release`] frees the pool once config work is done. A descriptor taken from the pool sees
//! the files loaded at that moment, so the types of the Anys a message holds must be loaded
//! ([`prepare`], or [`load_all`]) before the message's own descriptor is taken.

mod index;

use std::sync::Mutex;

use prost_reflect::{DescriptorPool, MessageDescriptor};

use index::Index;

static ENVOY_TYPES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types.bin"));
static STATE: Mutex<Option<State>> = Mutex::new(None);

/// The pool and which of the set's files it holds.
struct State {
    index: Index,
    pool: DescriptorPool,
    loaded: Vec<bool>,
}

impl State {
    fn new() -> State {
        // The bytes are produced at build time from the dependency's own descriptor set, so a
        // malformed set is a broken build, not bad input.
        let index = Index::parse(ENVOY_TYPES).expect("envoy-types descriptor set indexes");
        let loaded = vec![false; index.len()];
        State {
            index,
            pool: DescriptorPool::new(),
            loaded,
        }
    }

    /// Adds the given files, and the files they import, to the pool.
    fn load(&mut self, roots: &[usize]) {
        let order = self.index.load_order(roots, &self.loaded);
        if order.is_empty() {
            return;
        }
        // One `FileDescriptorSet` of just these files, built from their bytes, so the pool
        // links them in one pass.
        let mut set = Vec::new();
        for &f in &order {
            let bytes = self.index.file(f).bytes;
            prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut set);
            prost::encoding::encode_varint(bytes.len() as u64, &mut set);
            set.extend_from_slice(bytes);
        }
        // See above on the bytes: they come from the build, so a failure is a broken build.
        self.pool
            .decode_file_descriptor_set(set.as_slice())
            .expect("envoy-types descriptor files decode");
        for f in order {
            self.loaded[f] = true;
        }
    }

    /// Loads the files defining the named types; names the set does not define are skipped.
    fn load_types<'a>(&mut self, full_names: impl IntoIterator<Item = &'a str>) {
        let roots: Vec<usize> = full_names
            .into_iter()
            .filter_map(|n| self.index.file_of(n))
            .filter(|&f| !self.loaded[f])
            .collect();
        if !roots.is_empty() {
            self.load(&roots);
        }
    }
}

fn with_state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut slot = STATE.lock().unwrap_or_else(|e| e.into_inner());
    f(slot.get_or_insert_with(State::new))
}

/// The descriptor of a message by its full name (`envoy.config.listener.v3.Listener`), its file
/// and imports decoded if they were not yet.
pub fn message(full_name: &str) -> Option<MessageDescriptor> {
    with_state(|s| {
        s.load_types([full_name]);
        s.pool.get_message_by_name(full_name)
    })
}

/// Loads the named types (message full names) ahead of taking a descriptor whose messages
/// hold them in Anys.
pub fn prepare<'a>(full_names: impl IntoIterator<Item = &'a str>) {
    with_state(|s| s.load_types(full_names));
}

/// Loads every file of the set: for work that may meet an Any of any type (`/config_dump`,
/// xDS resources).
pub fn load_all() {
    with_state(|s| {
        let all: Vec<usize> = (0..s.index.len()).collect();
        s.load(&all);
    });
}

/// Drops the pool; it is freed once the last descriptor taken from it is dropped.
pub fn release() {
    STATE.lock().unwrap_or_else(|e| e.into_inner()).take();
    crate::sys::release_free_memory();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_set_loads_in_import_order() {
        let mut state = State::new();
        let all: Vec<usize> = (0..state.index.len()).collect();
        state.load(&all);
        assert!(state.loaded.iter().all(|l| *l));
        assert_eq!(state.pool.files().len(), state.index.len());
    }

    #[test]
    fn a_lookup_loads_only_what_the_type_needs() {
        let mut state = State::new();
        state.load_types(["envoy.extensions.filters.http.router.v3.Router"]);
        let loaded = state.loaded.iter().filter(|l| **l).count();
        assert!(loaded > 1 && loaded < state.index.len() / 2, "{loaded}");
        assert!(
            state
                .pool
                .get_message_by_name("envoy.extensions.filters.http.router.v3.Router")
                .is_some()
        );
        assert!(
            state
                .pool
                .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
                .is_none()
        );
        state.load_types(["no.such.Type", "envoy.config.bootstrap.v3.Bootstrap.Admin"]);
        assert!(
            state
                .pool
                .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
                .is_some()
        );
    }
}
