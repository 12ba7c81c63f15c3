//! The subscription state of one resource type on one xDS stream, as a pure state machine:
//! it is told what the stream received and what the proxy wants, and says what to send.
//!
//! State of the world: every request carries the last accepted `version_info`, the last
//! received nonce and the full list of names (none for a wildcard type). Delta: the first
//! request of a stream carries the names and `initial_resource_versions`; later ones carry only
//! the names added and removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status;

use super::ResourceType;

/// gRPC's INVALID_ARGUMENT, the code Envoy puts in a NACK's error_detail.
const INVALID_ARGUMENT: i32 = 3;

/// What one type's subscription knows.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The type.
    pub ty: ResourceType,
    /// The names wanted (unused for wildcard types).
    pub names: BTreeSet<String>,
    /// SotW: the last accepted version_info.
    pub version: String,
    /// The last nonce received on this stream.
    pub nonce: String,
    /// Delta: the version of each resource held.
    pub versions: BTreeMap<String, String>,
    /// Delta: the names the server was told about on this stream.
    sent: BTreeSet<String>,
    /// Whether this stream sent the type's first request.
    pub started: bool,
}

impl Subscription {
    /// A subscription with no names and nothing received.
    pub fn new(ty: ResourceType) -> Self {
        Self {
            ty,
            names: BTreeSet::new(),
            version: String::new(),
            nonce: String::new(),
            versions: BTreeMap::new(),
            sent: BTreeSet::new(),
            started: false,
        }
    }

    /// A new stream began: nonces are per stream, and everything must be asked for again.
    pub fn reset_stream(&mut self) {
        self.nonce.clear();
        self.sent.clear();
        self.started = false;
    }

    /// Sets the wanted names; returns whether they changed.
    pub fn set_names(&mut self, names: BTreeSet<String>) -> bool {
        if self.ty.is_wildcard() || names == self.names {
            return false;
        }
        self.names = names;
        true
    }

    /// SotW: the request for the current state (first request, name change or ACK).
    pub fn sotw_request(&mut self, node: Option<Node>) -> DiscoveryRequest {
        self.started = true;
        DiscoveryRequest {
            version_info: self.version.clone(),
            node,
            resource_names: if self.ty.is_wildcard() {
                Vec::new()
            } else {
                self.names.iter().cloned().collect()
            },
            type_url: self.ty.type_url().to_string(),
            response_nonce: self.nonce.clone(),
            ..Default::default()
        }
    }

    /// SotW: records a response's nonce and, when it was accepted, its version; returns the
    /// ACK or NACK. A NACK carries the previous version.
    pub fn sotw_reply(
        &mut self,
        version: &str,
        nonce: &str,
        error: Option<String>,
    ) -> DiscoveryRequest {
        self.nonce = nonce.to_string();
        let error_detail = match error {
            None => {
                self.version = version.to_string();
                None
            }
            Some(message) => Some(Status {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            }),
        };
        let mut r = self.sotw_request(None);
        r.error_detail = error_detail;
        r
    }

    /// Delta: the first request of a stream.
    pub fn delta_initial(&mut self, node: Option<Node>) -> DeltaDiscoveryRequest {
        self.started = true;
        let subscribe: Vec<String> = if self.ty.is_wildcard() {
            Vec::new()
        } else {
            self.names.iter().cloned().collect()
        };
        self.sent = self.names.clone();
        let initial_resource_versions: HashMap<String, String> = self
            .versions
            .iter()
            .filter(|(n, _)| self.ty.is_wildcard() || self.names.contains(*n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        DeltaDiscoveryRequest {
            node,
            type_url: self.ty.type_url().to_string(),
            resource_names_subscribe: subscribe,
            initial_resource_versions,
            ..Default::default()
        }
    }

    /// Delta: the request telling the server which names were added and removed since it was
    /// last told, if any were.
    pub fn delta_names_update(&mut self) -> Option<DeltaDiscoveryRequest> {
        if self.ty.is_wildcard() || self.sent == self.names {
            return None;
        }
        let subscribe: Vec<String> = self.names.difference(&self.sent).cloned().collect();
        let unsubscribe: Vec<String> = self.sent.difference(&self.names).cloned().collect();
        for n in &unsubscribe {
            self.versions.remove(n);
        }
        self.sent = self.names.clone();
        Some(DeltaDiscoveryRequest {
            type_url: self.ty.type_url().to_string(),
            resource_names_subscribe: subscribe,
            resource_names_unsubscribe: unsubscribe,
            ..Default::default()
        })
    }

    /// Delta: records the resources accepted and removed by a response; returns the ACK (no
    /// error) or NACK.
    pub fn delta_reply(
        &mut self,
        nonce: &str,
        accepted: &[(String, String)],
        removed: &[String],
        error: Option<String>,
    ) -> DeltaDiscoveryRequest {
        self.nonce = nonce.to_string();
        for (n, v) in accepted {
            self.versions.insert(n.clone(), v.clone());
        }
        for n in removed {
            self.versions.remove(n);
        }
        DeltaDiscoveryRequest {
            type_url: self.ty.type_url().to_string(),
            response_nonce: nonce.to_string(),
            error_detail: error.map(|message| Status {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sotw_ack_carries_the_new_version_and_nack_the_previous_one() {
        let mut s = Subscription::new(ResourceType::Cluster);
        let first = s.sotw_request(Some(Node::default()));
        assert_eq!(first.version_info, "");
        assert!(first.resource_names.is_empty(), "CDS is a wildcard");
        let ack = s.sotw_reply("v1", "n1", None);
        assert_eq!(
            (ack.version_info.as_str(), ack.response_nonce.as_str()),
            ("v1", "n1")
        );
        assert!(ack.error_detail.is_none() && ack.node.is_none());
        let nack = s.sotw_reply("v2", "n2", Some("bad".into()));
        assert_eq!(nack.version_info, "v1");
        assert_eq!(nack.response_nonce, "n2");
        assert_eq!(nack.error_detail.unwrap().message, "bad");
    }

    #[test]
    fn sotw_named_requests_carry_every_name_and_the_latest_nonce() {
        let mut s = Subscription::new(ResourceType::Endpoint);
        assert!(s.set_names(names(&["b", "a"])));
        assert!(!s.set_names(names(&["a", "b"])));
        s.sotw_reply("1", "n7", None);
        let r = s.sotw_request(None);
        assert_eq!(r.resource_names, vec!["a", "b"]);
        assert_eq!(r.response_nonce, "n7");
        s.reset_stream();
        assert_eq!(s.sotw_request(None).response_nonce, "");
    }

    #[test]
    fn delta_sends_initial_versions_and_name_diffs() {
        let mut s = Subscription::new(ResourceType::Route);
        s.set_names(names(&["r1", "r2"]));
        let first = s.delta_initial(None);
        assert_eq!(first.resource_names_subscribe, vec!["r1", "r2"]);
        assert!(first.initial_resource_versions.is_empty());
        let ack = s.delta_reply("n1", &[("r1".into(), "a".into())], &[], None);
        assert!(ack.error_detail.is_none());
        assert!(s.delta_names_update().is_none());
        s.set_names(names(&["r1", "r3"]));
        let upd = s.delta_names_update().unwrap();
        assert_eq!(upd.resource_names_subscribe, vec!["r3"]);
        assert_eq!(upd.resource_names_unsubscribe, vec!["r2"]);
        s.reset_stream();
        let again = s.delta_initial(None);
        assert_eq!(again.resource_names_subscribe, vec!["r1", "r3"]);
        assert_eq!(again.initial_resource_versions.get("r1").unwrap(), "a");
    }

    #[test]
    fn delta_wildcard_subscribes_with_no_names_and_forgets_removed() {
        let mut s = Subscription::new(ResourceType::Listener);
        s.delta_reply(
            "n1",
            &[("l1".into(), "1".into()), ("l2".into(), "1".into())],
            &[],
            None,
        );
        let nack = s.delta_reply("n2", &[], &["l2".into()], Some("l9: bad".into()));
        assert_eq!(nack.error_detail.unwrap().code, INVALID_ARGUMENT);
        s.reset_stream();
        let r = s.delta_initial(None);
        assert!(r.resource_names_subscribe.is_empty());
        assert_eq!(r.initial_resource_versions.len(), 1);
        assert!(r.initial_resource_versions.contains_key("l1"));
    }
}
