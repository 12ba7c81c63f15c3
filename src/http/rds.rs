//! RDS route configuration providers: one per route configuration name, shared by every
//! connection manager (of every listener version) that names it, so a listener update never
//! loses its routes. An update swaps the table atomically; it applies to the next request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use crate::config::route::RouteConfig;

/// The accepted version of one route configuration.
#[derive(Debug)]
pub struct RdsVersion {
    /// The converted table.
    pub config: Arc<RouteConfig>,
    /// The resource as received, for /config_dump.
    pub proto: crate::config::common::Encoded<RouteConfiguration>,
    /// The version it came with.
    pub version: String,
    /// When it was accepted.
    pub last_updated: SystemTime,
}

/// One route configuration name and its current table.
#[derive(Debug)]
pub struct RdsProvider {
    /// The route configuration name.
    pub name: String,
    /// `http.<stat_prefix>.rds.<name>.` of the connection manager that first named it.
    pub stat_prefix: String,
    current: ArcSwapOption<RdsVersion>,
    ready: tokio::sync::watch::Sender<bool>,
}

impl RdsProvider {
    /// The current table, if one arrived.
    pub fn config(&self) -> Option<Arc<RouteConfig>> {
        self.current.load().as_ref().map(|v| v.config.clone())
    }

    /// The current version with its proto.
    pub fn current(&self) -> Option<Arc<RdsVersion>> {
        self.current.load_full()
    }

    /// Whether a table arrived (or waiting was given up).
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Completes once a table arrived (or waiting was given up).
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Installs a new table.
    pub fn update(&self, v: Arc<RdsVersion>) {
        self.current.store(Some(v));
        self.ready.send_replace(true);
    }

    /// Stops waiting for a first table (initial_fetch_timeout); requests get 404 until one
    /// arrives.
    pub fn give_up_waiting(&self) {
        self.ready.send_replace(true);
    }
}

/// Every route configuration name in use.
#[derive(Debug, Default)]
pub struct RdsManager {
    providers: Mutex<HashMap<String, Weak<RdsProvider>>>,
    /// Tables that arrived for names no provider holds yet are kept, so a provider created
    /// later (a listener update naming a route configuration again) starts with them.
    cache: Mutex<HashMap<String, Arc<RdsVersion>>>,
    /// Told whenever the set of names changes.
    pub names_changed: tokio::sync::Notify,
}

impl RdsManager {
    /// The provider for `name`, created (empty, or from the last table seen) if none is alive;
    /// `hcm_stat_prefix` names its stats when it is created.
    pub fn provider(&self, name: &str, hcm_stat_prefix: &str) -> Arc<RdsProvider> {
        let mut map = self.providers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(name).and_then(Weak::upgrade) {
            return p;
        }
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        let ready = cached.is_some();
        let p = Arc::new(RdsProvider {
            name: name.to_string(),
            stat_prefix: format!("http.{hcm_stat_prefix}.rds.{name}."),
            current: ArcSwapOption::new(cached),
            ready: tokio::sync::watch::channel(ready).0,
        });
        map.insert(name.to_string(), Arc::downgrade(&p));
        drop(map);
        self.names_changed.notify_one();
        p
    }

    /// The names some live listener uses, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut map = self.providers.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, p| p.strong_count() > 0);
        let mut v: Vec<String> = map.keys().cloned().collect();
        v.sort();
        v
    }

    /// Every live provider, sorted by name.
    pub fn providers(&self) -> Vec<Arc<RdsProvider>> {
        let map = self.providers.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.values().filter_map(Weak::upgrade).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The live provider of `name`, if any.
    pub fn get(&self, name: &str) -> Option<Arc<RdsProvider>> {
        self.providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .and_then(Weak::upgrade)
    }

    /// Applies a table for `name`.
    pub fn update(&self, name: &str, v: RdsVersion) {
        let v = Arc::new(v);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), v.clone());
        let p = self
            .providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .and_then(Weak::upgrade);
        if let Some(p) = p {
            p.update(v);
        }
    }

    /// Forgets a table the control plane removed (delta `removed_resources`); listeners that
    /// use it keep their last table, as Envoy does.
    pub fn remove(&self, name: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Stops every provider still waiting from waiting (initial_fetch_timeout).
    pub fn give_up_waiting(&self) {
        for p in self.providers() {
            p.give_up_waiting();
        }
    }

    /// Drops cached tables no live provider uses.
    pub fn prune(&self) {
        let names = self.names();
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|n, _| names.binary_search(n).is_ok());
    }
}
