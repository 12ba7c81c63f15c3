//! The secret store: named secrets (a certificate with its key, or a validation context) that
//! TLS contexts read at every handshake, so an SDS update or a rotated file reaches new
//! handshakes at once while established connections continue.
//!
//! A secret is known by its source and name, as Envoy keys its SDS subscriptions: the same
//! name from two config sources is two secrets. The store holds weak references; the TLS
//! contexts that name a secret keep it alive, so a secret nothing uses any more is forgotten
//! and its subscription ends. There is one store per process, as one server runs per process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use tokio::sync::watch;

use crate::config::secret::{Certificate, ParsedSecret, SecretValue, Validation};
use crate::config::source::ApiSource;

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The bootstrap's `static_resources.secrets`.
    Static,
    /// The ADS stream.
    Ads,
    /// A gRPC stream of its own (one per secret, as Envoy opens them).
    Api(ApiSource),
    /// A file holding a DiscoveryResponse.
    Path(PathBuf),
}

impl SecretSource {
    fn key(&self) -> String {
        match self {
            Self::Static => "static".into(),
            Self::Ads => "ads".into(),
            Self::Api(a) => format!("api:{a:?}"),
            Self::Path(p) => format!("path:{}", p.display()),
        }
    }
}

/// A file's identity and state, to notice a change (including a symlink swapped to a new
/// target, as Kubernetes updates mounted secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &PathBuf) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

#[derive(Debug, Default)]
struct SlotState {
    version: String,
    last_updated: Option<SystemTime>,
    proto: Option<Secret>,
    files: Vec<(PathBuf, Option<FileStamp>)>,
}

/// One named secret.
#[derive(Debug)]
pub struct SecretSlot {
    /// Its name.
    pub name: String,
    /// Where it comes from.
    pub source: SecretSource,
    /// How long a listener warms waiting for it (zero: no limit).
    pub initial_fetch_timeout: Duration,
    value: ArcSwapOption<SecretValue>,
    ready: watch::Sender<bool>,
    state: Mutex<SlotState>,
    /// Set once its subscription runs.
    pub subscribed: AtomicBool,
}

/// A secret's state for `/config_dump`.
#[derive(Debug, Clone)]
pub struct SecretDump {
    /// Its name.
    pub name: String,
    /// The version it came with.
    pub version: String,
    /// When it was last updated.
    pub last_updated: Option<SystemTime>,
    /// The secret as received; None while it has not arrived.
    pub secret: Option<Secret>,
    /// From `static_resources.secrets`.
    pub is_static: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SecretSlot {
    /// The current value, if it arrived.
    pub fn current(&self) -> Option<Arc<SecretValue>> {
        self.value.load_full()
    }

    /// The current certificate (None: not arrived, or the secret is not a certificate).
    pub fn certificate(&self) -> Option<Arc<Certificate>> {
        match self.value.load().as_deref()? {
            SecretValue::Certificate(c) => Some(c.clone()),
            SecretValue::Validation(_) => None,
        }
    }

    /// The current validation context (None: not arrived, or not a validation context).
    pub fn validation(&self) -> Option<Arc<Validation>> {
        match self.value.load().as_deref()? {
            SecretValue::Validation(v) => Some(v.clone()),
            SecretValue::Certificate(_) => None,
        }
    }

    /// Whether its first value arrived (or waiting for it was given up).
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until [`Self::is_ready`].
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Stops listeners waiting for it (initial_fetch_timeout passed); handshakes that need it
    /// still fail until it arrives.
    pub fn give_up_waiting(&self) {
        self.ready.send_replace(true);
    }

    /// Installs a new value of the secret, received at `version`.
    pub fn install(&self, proto: Secret, parsed: ParsedSecret, version: &str) {
        let files = parsed.files.iter().map(|f| (f.clone(), stamp(f))).collect();
        self.value.store(Some(Arc::new(parsed.value)));
        *lock(&self.state) = SlotState {
            version: version.to_string(),
            last_updated: Some(SystemTime::now()),
            proto: Some(proto),
            files,
        };
        self.ready.send_replace(true);
    }

    /// Re-reads the secret when one of its files changed. None: nothing changed; Some(Err):
    /// the new contents are refused and the previous value stays (tried again next time).
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let (proto, stamps) = {
            let st = lock(&self.state);
            let changed: Vec<_> = st
                .files
                .iter()
                .map(|(f, _)| (f.clone(), stamp(f)))
                .collect();
            if st.files.iter().zip(&changed).all(|(a, b)| a.1 == b.1) {
                return None;
            }
            (st.proto.clone()?, changed)
        };
        let parsed = match crate::config::secret::secret(&proto, "") {
            Ok(p) => p,
            Err(e) => return Some(Err(format!("secret {:?}: {e}", self.name))),
        };
        self.value.store(Some(Arc::new(parsed.value)));
        let mut st = lock(&self.state);
        st.files = stamps;
        st.last_updated = Some(SystemTime::now());
        Some(Ok(()))
    }

    /// Its state for `/config_dump`.
    pub fn dump(&self) -> SecretDump {
        let st = lock(&self.state);
        SecretDump {
            name: self.name.clone(),
            version: st.version.clone(),
            last_updated: st.last_updated,
            secret: st.proto.clone(),
            is_static: self.source == SecretSource::Static,
        }
    }
}

/// Every secret in use, by source and name.
#[derive(Debug, Default)]
pub struct SecretStore {
    slots: Mutex<HashMap<(String, String), Weak<SecretSlot>>>,
}

static STORE: LazyLock<SecretStore> = LazyLock::new(SecretStore::default);

/// The process's secret store.
pub fn store() -> &'static SecretStore {
    &STORE
}

impl SecretStore {
    /// The secret `name` from `source`, created (empty, not ready) if nothing uses it yet.
    pub fn slot(
        &self,
        source: SecretSource,
        name: &str,
        initial_fetch_timeout: Duration,
    ) -> Arc<SecretSlot> {
        let mut slots = lock(&self.slots);
        let key = (source.key(), name.to_string());
        if let Some(s) = slots.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        let slot = Arc::new(SecretSlot {
            name: name.to_string(),
            source,
            initial_fetch_timeout,
            value: ArcSwapOption::empty(),
            ready: watch::channel(false).0,
            state: Mutex::default(),
            subscribed: AtomicBool::new(false),
        });
        slots.insert(key, Arc::downgrade(&slot));
        slot
    }

    /// The secret `name` from `source`, if something uses it.
    pub fn find(&self, source: &SecretSource, name: &str) -> Option<Arc<SecretSlot>> {
        lock(&self.slots)
            .get(&(source.key(), name.to_string()))
            .and_then(Weak::upgrade)
    }

    /// Every secret in use, sorted by name (forgetting those nothing uses any more).
    pub fn live(&self) -> Vec<Arc<SecretSlot>> {
        let mut slots = lock(&self.slots);
        slots.retain(|_, w| w.strong_count() > 0);
        let mut v: Vec<_> = slots.values().filter_map(Weak::upgrade).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Names of the secrets in use from `source`.
    pub fn names(&self, source: &SecretSource) -> Vec<String> {
        self.live()
            .into_iter()
            .filter(|s| &s.source == source)
            .map(|s| s.name.clone())
            .collect()
    }
}
