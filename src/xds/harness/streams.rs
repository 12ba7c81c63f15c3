//! The per-stream loops: what one state-of-the-world or delta stream has sent, and what it
//! sends next when the proxy asks or the snapshot changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::{ControlPlane, Entry, TypeSnapshot};
use crate::xds::ResourceType;

/// One type's state on a state-of-the-world stream.
#[derive(Debug, Default)]
struct SotwType {
    names: BTreeSet<String>,
    sent_version: Option<String>,
    sent_names: BTreeSet<String>,
    last_nonce: String,
    versions_by_nonce: HashMap<String, String>,
}

pub(super) async fn sotw(
    cp: ControlPlane,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut snap = cp.snapshot.subscribe();
    let mut kill = cp.shared.kill.subscribe();
    let mut types: BTreeMap<String, SotwType> = BTreeMap::new();
    let mut nonce: u64 = 0;
    loop {
        tokio::select! {
            m = inbound.message() => {
                let Ok(Some(req)) = m else { return };
                cp.record_request(false, &req.type_url, req.resource_names.clone());
                let t = types.entry(req.type_url.clone()).or_default();
                if !req.response_nonce.is_empty() {
                    cp.record_answer(
                        &t.versions_by_nonce,
                        &req.type_url,
                        &req.response_nonce,
                        req.error_detail.as_ref().map(|e| e.message.as_str()),
                        false,
                    );
                    if req.response_nonce != t.last_nonce {
                        continue; // stale
                    }
                }
                t.names = req.resource_names.iter().cloned().collect();
            }
            r = snap.changed() => if r.is_err() { return },
            _ = kill.changed() => {
                let _ = tx.send(Err(Status::unavailable("control plane stopped"))).await;
                return;
            }
        }
        let s = snap.borrow_and_update().clone();
        for (type_url, t) in types.iter_mut() {
            let Some(ts) = s.types.get(type_url) else {
                continue;
            };
            let ty = ResourceType::from_type_url(type_url);
            let wildcard = ty.is_none_or(|t| t.is_wildcard());
            if t.sent_version.as_deref() == Some(ts.version.as_str()) && t.sent_names == t.names {
                continue;
            }
            if !wildcard && t.names.is_empty() {
                continue;
            }
            let resources = ts
                .resources
                .iter()
                .filter(|(n, _)| wildcard || t.names.contains(*n))
                .map(|(_, e)| e.resource.clone())
                .collect();
            nonce += 1;
            let n = nonce.to_string();
            t.sent_version = Some(ts.version.clone());
            t.sent_names = t.names.clone();
            t.last_nonce = n.clone();
            t.versions_by_nonce.insert(n.clone(), ts.version.clone());
            let resp = DiscoveryResponse {
                version_info: ts.version.clone(),
                resources,
                type_url: type_url.clone(),
                nonce: n,
                ..Default::default()
            };
            if tx.send(Ok(resp)).await.is_err() {
                return;
            }
        }
    }
}

/// One type's state on a delta stream.
#[derive(Debug, Default)]
struct DeltaType {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the proxy holds: name -> resource version.
    held: BTreeMap<String, String>,
    responded: bool,
    versions_by_nonce: HashMap<String, String>,
}

pub(super) async fn delta(
    cp: ControlPlane,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) {
    let mut snap = cp.snapshot.subscribe();
    let mut kill = cp.shared.kill.subscribe();
    let mut types: BTreeMap<String, DeltaType> = BTreeMap::new();
    let mut nonce: u64 = 0;
    loop {
        tokio::select! {
            m = inbound.message() => {
                let Ok(Some(req)) = m else { return };
                cp.record_request(true, &req.type_url, req.resource_names_subscribe.clone());
                let first = !types.contains_key(&req.type_url);
                let t = types.entry(req.type_url.clone()).or_default();
                if !req.response_nonce.is_empty() {
                    cp.record_answer(
                        &t.versions_by_nonce,
                        &req.type_url,
                        &req.response_nonce,
                        req.error_detail.as_ref().map(|e| e.message.as_str()),
                        true,
                    );
                    if req.error_detail.is_some() {
                        // The proxy keeps its previous versions of what it rejected; forget
                        // what was sent so a later fix is sent again.
                        t.held.clear();
                    }
                }
                if first {
                    let wildcard_type =
                        ResourceType::from_type_url(&req.type_url).is_some_and(|t| t.is_wildcard());
                    t.wildcard = (wildcard_type && req.resource_names_subscribe.is_empty())
                        || req.resource_names_subscribe.iter().any(|n| n == "*");
                    t.held = req.initial_resource_versions.clone().into_iter().collect();
                }
                for n in &req.resource_names_subscribe {
                    if n != "*" {
                        t.names.insert(n.clone());
                        // A re-subscribed resource is sent again.
                        t.held.remove(n);
                    }
                }
                for n in &req.resource_names_unsubscribe {
                    t.names.remove(n);
                    t.held.remove(n);
                }
            }
            r = snap.changed() => if r.is_err() { return },
            _ = kill.changed() => {
                let _ = tx.send(Err(Status::unavailable("control plane stopped"))).await;
                return;
            }
        }
        let s = snap.borrow_and_update().clone();
        for (type_url, t) in types.iter_mut() {
            let empty = Arc::new(TypeSnapshot::default());
            let ts = s.types.get(type_url).unwrap_or(&empty);
            let wants = |n: &str| t.wildcard || t.names.contains(n);
            let mut resources = Vec::new();
            let candidates: Box<dyn Iterator<Item = (&String, &Arc<Entry>)>> = if t.wildcard {
                Box::new(ts.resources.iter())
            } else {
                Box::new(t.names.iter().filter_map(|n| ts.resources.get_key_value(n)))
            };
            for (n, e) in candidates {
                if !wants(n) {
                    continue;
                }
                if t.held.get(n) != Some(&e.version) {
                    resources.push(Resource {
                        name: n.clone(),
                        version: e.version.clone(),
                        resource: Some(e.resource.clone()),
                        ..Default::default()
                    });
                    t.held.insert(n.clone(), e.version.clone());
                }
            }
            let removed: Vec<String> = t
                .held
                .keys()
                .filter(|n| !ts.resources.contains_key(*n))
                .cloned()
                .collect();
            for n in &removed {
                t.held.remove(n);
            }
            let first_wildcard = t.wildcard && !t.responded && s.types.contains_key(type_url);
            if resources.is_empty() && removed.is_empty() && !first_wildcard {
                continue;
            }
            t.responded = true;
            nonce += 1;
            let n = nonce.to_string();
            t.versions_by_nonce.insert(n.clone(), ts.version.clone());
            let resp = DeltaDiscoveryResponse {
                system_version_info: ts.version.clone(),
                resources,
                type_url: type_url.clone(),
                removed_resources: removed,
                nonce: n,
                ..Default::default()
            };
            if tx.send(Ok(resp)).await.is_err() {
                return;
            }
        }
    }
}
