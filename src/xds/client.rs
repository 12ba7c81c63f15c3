//! The xDS client: one task per stream (the ADS stream, and a stream per type that names its
//! own `api_config_source`), each reconnecting with jittered backoff and keeping the last good
//! config serving while the control plane is away. The subscription state of each type is the
//! pure [`Subscription`]; this module only moves messages and applies them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::apply::{self, Incoming, Mode, Outcome};
use super::stats::SubscriptionStats;
use super::subscription::Subscription;
use super::{ADS_DELTA, ADS_SOTW, ResourceType};
use crate::config::source::{ApiSource, ApiType, Source};
use crate::server::Server;
use crate::stats::Gauge;
use crate::tls::secret::{SecretSlot, SecretSource};

/// Initialization progress: whether the first CDS and LDS responses were handled (or their
/// initial_fetch_timeout passed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitState {
    /// CDS done (or not configured).
    pub cds: bool,
    /// LDS done (or not configured).
    pub lds: bool,
}

/// One stream to a management server.
#[derive(Debug, Clone)]
struct StreamSpec {
    source: ApiSource,
    path: &'static str,
    types: Vec<ResourceType>,
    /// The one secret of an SDS stream of its own; the stream ends once nothing uses it.
    secret: Option<Weak<SecretSlot>>,
}

/// Starts every xDS stream the bootstrap asks for; returns the initialization progress.
pub fn start(server: &Arc<Server>) -> watch::Receiver<InitState> {
    let d = &server.config.dynamic;
    let init = watch::channel(InitState {
        cds: d.cds.is_none(),
        lds: d.lds.is_none(),
    })
    .0;
    let rx = init.subscribe();
    let init = Arc::new(init);
    let mut streams = Vec::new();
    if let Some(ads) = &d.ads {
        let mut types = Vec::new();
        for (src, ty) in [
            (&d.cds, ResourceType::Cluster),
            (&d.lds, ResourceType::Listener),
        ] {
            if src.as_ref().is_some_and(|s| s.source == Source::Ads) {
                types.push(ty);
            }
        }
        types.push(ResourceType::Endpoint);
        types.push(ResourceType::Route);
        types.push(ResourceType::Secret);
        let path = match ads.api_type {
            ApiType::Grpc => ADS_SOTW,
            ApiType::DeltaGrpc => ADS_DELTA,
        };
        streams.push(StreamSpec {
            source: ads.clone(),
            path,
            types,
            secret: None,
        });
    }
    for (src, ty) in [
        (&d.cds, ResourceType::Cluster),
        (&d.lds, ResourceType::Listener),
    ] {
        let Some(cs) = src else { continue };
        match &cs.source {
            Source::Api(api) => streams.push(StreamSpec {
                source: api.clone(),
                path: ty.service_path(api.api_type == ApiType::DeltaGrpc),
                types: vec![ty],
                secret: None,
            }),
            Source::Path(p) => {
                tokio::spawn(super::path_source::watch(
                    server.clone(),
                    ty,
                    p.clone(),
                    init.clone(),
                ));
            }
            Source::Ads => {}
        }
        if !cs.initial_fetch_timeout.is_zero() {
            let init = init.clone();
            let timeout = cs.initial_fetch_timeout;
            let stats = type_stats(server, ty);
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                if !is_done(&init, ty) {
                    tracing::warn!("{}: initial fetch timed out", ty.short());
                    stats.init_fetch_timeout().inc();
                    mark_done(&init, ty);
                }
            });
        }
    }
    let connected = server.stats.gauge("control_plane.connected_state");
    connected.set(0);
    for spec in streams {
        let stream = XdsStream::new(server.clone(), spec, init.clone(), Some(connected.clone()));
        tokio::spawn(stream.run());
    }
    rx
}

/// Starts the SDS stream of one secret to its own management server (Istio's `sds-grpc`).
pub fn spawn_secret_stream(server: &Arc<Server>, source: ApiSource, slot: &Arc<SecretSlot>) {
    let path = ResourceType::Secret.service_path(source.api_type == ApiType::DeltaGrpc);
    let spec = StreamSpec {
        source,
        path,
        types: vec![ResourceType::Secret],
        secret: Some(Arc::downgrade(slot)),
    };
    let init = Arc::new(watch::channel(InitState::default()).0);
    tokio::spawn(XdsStream::new(server.clone(), spec, init, None).run());
}

fn is_done(init: &watch::Sender<InitState>, ty: ResourceType) -> bool {
    let s = *init.borrow();
    match ty {
        ResourceType::Cluster => s.cds,
        ResourceType::Listener => s.lds,
        _ => true,
    }
}

/// Marks the first response of `ty` handled.
pub fn mark_done(init: &watch::Sender<InitState>, ty: ResourceType) {
    init.send_if_modified(|s| {
        let slot = match ty {
            ResourceType::Cluster => &mut s.cds,
            ResourceType::Listener => &mut s.lds,
            _ => return false,
        };
        let was = *slot;
        *slot = true;
        !was
    });
}

/// The stats of a wildcard type's subscription (`cluster_manager.cds.`,
/// `listener_manager.lds.`).
pub fn type_stats(server: &Server, ty: ResourceType) -> SubscriptionStats {
    let prefix = match ty {
        ResourceType::Cluster => "cluster_manager.cds.",
        ResourceType::Listener => "listener_manager.lds.",
        ResourceType::Endpoint => "cluster_manager.eds.",
        ResourceType::Route => "http.rds.",
        ResourceType::Secret => "sds.",
    };
    SubscriptionStats::new(&server.stats, prefix)
}

/// The names `ty` should be subscribed to now on a stream (`secret`: the one secret of an
/// SDS stream of its own).
fn wanted(
    server: &Server,
    ty: ResourceType,
    secret: Option<&Weak<SecretSlot>>,
) -> BTreeSet<String> {
    match ty {
        ResourceType::Endpoint => server.clusters.eds_names().into_iter().collect(),
        ResourceType::Route => server.rds.names().into_iter().collect(),
        ResourceType::Secret => match secret {
            Some(w) => w.upgrade().map(|s| s.name.clone()).into_iter().collect(),
            None => crate::tls::secret::store()
                .names(&SecretSource::Ads)
                .into_iter()
                .collect(),
        },
        _ => BTreeSet::new(),
    }
}

/// The node as sent to control planes: the bootstrap's, with pilotfish's user agent.
fn node(server: &Server) -> Node {
    let mut n = server.config.bootstrap.node.clone().unwrap_or_default();
    if n.user_agent_name.is_empty() {
        n.user_agent_name = "pilotfish".into();
    }
    if n.user_agent_version_type.is_none() {
        use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
        n.user_agent_version_type = Some(UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").into(),
        ));
    }
    n
}

/// A message of either protocol variant.
enum Outbound {
    Sotw(DiscoveryRequest),
    Delta(DeltaDiscoveryRequest),
}

struct XdsStream {
    server: Arc<Server>,
    spec: StreamSpec,
    delta: bool,
    subs: BTreeMap<ResourceType, Subscription>,
    stats: BTreeMap<ResourceType, SubscriptionStats>,
    init: Arc<watch::Sender<InitState>>,
    /// `control_plane.connected_state` (the ADS and LDS/CDS streams set it).
    connected: Option<Arc<Gauge>>,
    node: Node,
    node_sent: bool,
}

impl XdsStream {
    fn new(
        server: Arc<Server>,
        spec: StreamSpec,
        init: Arc<watch::Sender<InitState>>,
        connected: Option<Arc<Gauge>>,
    ) -> Self {
        let subs = spec
            .types
            .iter()
            .map(|t| (*t, Subscription::new(*t)))
            .collect();
        let stats = spec
            .types
            .iter()
            .filter(|t| t.is_wildcard())
            .map(|t| (*t, type_stats(&server, *t)))
            .collect();
        Self {
            delta: spec.source.api_type == ApiType::DeltaGrpc,
            node: node(&server),
            server,
            spec,
            subs,
            stats,
            init,
            connected,
            node_sent: false,
        }
    }

    /// Connects, serves the stream until it fails, and reconnects with backoff, forever.
    async fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            for s in self.stats.values() {
                s.update_attempt().inc();
            }
            let result = self.session(&mut failures).await;
            self.set_connected(0);
            for s in self.stats.values() {
                s.update_failure().inc();
            }
            if self.orphaned() {
                return;
            }
            if let Err(e) = result {
                tracing::warn!("xDS stream to {:?}: {e}", self.spec.source.cluster);
            }
            failures = failures.saturating_add(1);
            tokio::time::sleep(backoff(failures)).await;
        }
    }

    /// One connection: returns when the stream ends.
    async fn session(&mut self, failures: &mut u32) -> Result<(), String> {
        let channel = super::connect::channel(&self.server, &self.spec.source).await?;
        let (tx, rx) = mpsc::unbounded_channel::<Outbound>();
        self.node_sent = false;
        for s in self.subs.values_mut() {
            s.reset_stream();
        }
        for ty in self.spec.types.clone() {
            self.refresh_names(ty);
            if let Some(r) = self.initial_request(ty) {
                let _ = tx.send(r);
            }
        }
        let mut interest = self.server.xds_interest.subscribe();
        // As Envoy's gRPC client, no limit below the transport's on a response's size: a
        // large mesh's EDS response runs to many megabytes.
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        grpc.ready()
            .await
            .map_err(|e| format!("channel not ready: {e}"))?;
        if self.delta {
            let out = UnboundedReceiverStream::new(rx).filter_map_delta();
            self.pump(&mut grpc, out, &tx, &mut interest, failures, Self::on_delta)
                .await
        } else {
            let out = UnboundedReceiverStream::new(rx).filter_map_sotw();
            self.pump(&mut grpc, out, &tx, &mut interest, failures, Self::on_sotw)
                .await
        }
    }

    /// Opens the stream and handles responses and interest changes until it ends.
    async fn pump<Req, Resp>(
        &mut self,
        grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
        out: impl futures_util::Stream<Item = Req> + Send + 'static,
        tx: &mpsc::UnboundedSender<Outbound>,
        interest: &mut watch::Receiver<u64>,
        failures: &mut u32,
        handle: fn(&mut Self, Resp, &mpsc::UnboundedSender<Outbound>),
    ) -> Result<(), String>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let path = http::uri::PathAndQuery::from_static(self.spec.path);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        if let Some(c) = self.server.clusters.get(&self.spec.source.cluster) {
            c.stats.upstream_rq_total().inc();
        }
        let mut inbound = grpc
            .streaming(tonic::Request::new(out), path, codec)
            .await
            .map_err(|s| format!("stream refused: {s}"))?
            .into_inner();
        self.set_connected(1);
        loop {
            tokio::select! {
                m = inbound.message() => match m {
                    Ok(Some(resp)) => {
                        *failures = 0;
                        handle(self, resp, tx);
                    }
                    Ok(None) => return Err("the server closed the stream".into()),
                    Err(s) => return Err(format!("stream failed: {s}")),
                },
                Ok(()) = interest.changed() => {
                    if self.orphaned() {
                        return Ok(());
                    }
                    self.on_interest(tx)
                }
            }
        }
    }

    fn set_connected(&self, v: i64) {
        if let Some(g) = &self.connected {
            g.set(v);
        }
    }

    /// Whether this is the stream of a secret nothing uses any more.
    fn orphaned(&self) -> bool {
        self.spec
            .secret
            .as_ref()
            .is_some_and(|w| w.strong_count() == 0)
    }

    /// Where the secrets of this stream come from.
    fn secret_source(&self) -> SecretSource {
        match self.spec.secret {
            Some(_) => SecretSource::Api(self.spec.source.clone()),
            None => SecretSource::Ads,
        }
    }

    fn take_node(&mut self) -> Option<Node> {
        if self.node_sent && self.spec.source.set_node_on_first_message_only {
            return None;
        }
        self.node_sent = true;
        Some(self.node.clone())
    }

    fn refresh_names(&mut self, ty: ResourceType) -> bool {
        let names = wanted(&self.server, ty, self.spec.secret.as_ref());
        self.subs.get_mut(&ty).is_some_and(|s| s.set_names(names))
    }

    /// The first request of `ty` on this stream, unless it is a named type with no names yet.
    fn initial_request(&mut self, ty: ResourceType) -> Option<Outbound> {
        let named_empty = self
            .subs
            .get(&ty)
            .is_some_and(|s| !ty.is_wildcard() && s.names.is_empty());
        if named_empty {
            return None;
        }
        let node = self.take_node();
        let sub = self.subs.get_mut(&ty)?;
        Some(if self.delta {
            Outbound::Delta(sub.delta_initial(node))
        } else {
            Outbound::Sotw(sub.sotw_request(node))
        })
    }

    /// Follows changed references: subscribes and unsubscribes named types.
    fn on_interest(&mut self, tx: &mpsc::UnboundedSender<Outbound>) {
        for ty in self.spec.types.clone() {
            if ty.is_wildcard() || !self.refresh_names(ty) {
                continue;
            }
            let started = self.subs.get(&ty).is_some_and(|s| s.started);
            let msg = if !started {
                self.initial_request(ty)
            } else if self.delta {
                self.subs
                    .get_mut(&ty)
                    .and_then(|s| s.delta_names_update())
                    .map(Outbound::Delta)
            } else {
                let node = self.take_node();
                self.subs
                    .get_mut(&ty)
                    .map(|s| Outbound::Sotw(s.sotw_request(node)))
            };
            if let Some(m) = msg {
                let _ = tx.send(m);
            }
        }
    }

    fn record(
        &self,
        ty: ResourceType,
        version: &str,
        empty: bool,
        outcome: &Outcome,
        took: Duration,
    ) {
        let ms = took.as_secs_f64() * 1000.0;
        if let Some(s) = self.stats.get(&ty) {
            s.update_duration.record(ms);
            s.update_attempt().inc();
            if empty {
                s.update_empty().inc();
            }
            if outcome.errors.is_empty() {
                s.accepted(version);
                self.server.set_xds_version(ty.short(), version);
            } else {
                s.update_rejected().inc();
            }
        }
        if ty == ResourceType::Endpoint {
            for (name, _) in &outcome.accepted {
                SubscriptionStats::new(&self.server.stats, &format!("cluster.{name}."))
                    .update_duration
                    .record(ms);
            }
        }
        if !ty.is_wildcard() {
            for name in &outcome.rejected {
                let prefix = match ty {
                    // Counted where secrets are applied (a path source has no stream).
                    ResourceType::Secret => continue,
                    ResourceType::Endpoint => format!("cluster.{name}."),
                    _ => match self.server.rds.get(name) {
                        Some(p) => p.stat_prefix.clone(),
                        None => continue,
                    },
                };
                let s = SubscriptionStats::new(&self.server.stats, &prefix);
                s.update_attempt().inc();
                s.update_rejected().inc();
            }
        }
        if let Some(e) = outcome.error_detail() {
            tracing::warn!("{} update rejected: {e}", ty.short());
        }
        mark_done(&self.init, ty);
        // Forget tables and assignments nothing references any more; only clusters and
        // listeners change which endpoints and route configurations are wanted.
        match ty {
            ResourceType::Cluster => {
                self.server.clusters.prune_assignments();
                self.server.bump_xds_interest();
            }
            ResourceType::Listener => {
                self.server.rds.prune();
                self.server.bump_xds_interest();
            }
            _ => {}
        }
    }

    fn on_sotw(&mut self, resp: DiscoveryResponse, tx: &mpsc::UnboundedSender<Outbound>) {
        let Some(ty) =
            ResourceType::from_type_url(&resp.type_url).filter(|t| self.subs.contains_key(t))
        else {
            let _ = tx.send(Outbound::Sotw(DiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                error_detail: Some(unknown_type(&resp.type_url)),
                ..Default::default()
            }));
            return;
        };
        let empty = resp.resources.is_empty();
        let resources = resp
            .resources
            .into_iter()
            .map(|a| Incoming {
                name: String::new(),
                version: resp.version_info.clone(),
                resource: a,
            })
            .collect();
        let started = std::time::Instant::now();
        let outcome = if ty == ResourceType::Secret {
            super::sds::apply(&self.server, &self.secret_source(), resources, &[])
        } else {
            apply::apply(&self.server, ty, Mode::StateOfTheWorld, resources, &[])
        };
        let reply = self
            .subs
            .get_mut(&ty)
            .map(|s| s.sotw_reply(&resp.version_info, &resp.nonce, outcome.error_detail()));
        if let Some(r) = reply {
            let _ = tx.send(Outbound::Sotw(r));
        }
        self.record(ty, &resp.version_info, empty, &outcome, started.elapsed());
        crate::bootstrap::descriptors::release_later();
        if ty.is_wildcard() {
            self.on_interest(tx);
        }
    }

    fn on_delta(&mut self, resp: DeltaDiscoveryResponse, tx: &mpsc::UnboundedSender<Outbound>) {
        let Some(ty) =
            ResourceType::from_type_url(&resp.type_url).filter(|t| self.subs.contains_key(t))
        else {
            let _ = tx.send(Outbound::Delta(DeltaDiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                error_detail: Some(unknown_type(&resp.type_url)),
                ..Default::default()
            }));
            return;
        };
        let empty = resp.resources.is_empty() && resp.removed_resources.is_empty();
        let mut bad = Vec::new();
        let resources = resp
            .resources
            .into_iter()
            .filter_map(|r| match r.resource {
                Some(a) => Some(Incoming {
                    name: r.name,
                    version: r.version,
                    resource: a,
                }),
                None => {
                    bad.push(format!(
                        "{} {:?}: the resource is missing",
                        ty.short(),
                        r.name
                    ));
                    None
                }
            })
            .collect();
        let started = std::time::Instant::now();
        let mut outcome = if ty == ResourceType::Secret {
            super::sds::apply(
                &self.server,
                &self.secret_source(),
                resources,
                &resp.removed_resources,
            )
        } else {
            apply::apply(
                &self.server,
                ty,
                Mode::Delta,
                resources,
                &resp.removed_resources,
            )
        };
        outcome.errors.extend(bad);
        let reply = self.subs.get_mut(&ty).map(|s| {
            s.delta_reply(
                &resp.nonce,
                &outcome.accepted,
                &resp.removed_resources,
                outcome.error_detail(),
            )
        });
        if let Some(r) = reply {
            let _ = tx.send(Outbound::Delta(r));
        }
        self.record(
            ty,
            &resp.system_version_info,
            empty,
            &outcome,
            started.elapsed(),
        );
        crate::bootstrap::descriptors::release_later();
        if ty.is_wildcard() {
            self.on_interest(tx);
        }
    }
}

fn unknown_type(type_url: &str) -> Status {
    Status {
        code: 3,
        message: format!("type {type_url:?} is not subscribed on this stream"),
        details: Vec::new(),
    }
}

/// Exponential backoff with full jitter: 500 ms doubling up to 30 s.
fn backoff(failures: u32) -> Duration {
    let cap = 500u64
        .saturating_mul(1 << failures.min(6).saturating_sub(1))
        .min(30_000);
    Duration::from_millis(fastrand::u64(cap / 2..=cap))
}

trait OutboundStream {
    fn filter_map_sotw(self) -> impl futures_util::Stream<Item = DiscoveryRequest> + Send;
    fn filter_map_delta(self) -> impl futures_util::Stream<Item = DeltaDiscoveryRequest> + Send;
}

impl OutboundStream for UnboundedReceiverStream<Outbound> {
    fn filter_map_sotw(self) -> impl futures_util::Stream<Item = DiscoveryRequest> + Send {
        use futures_util::StreamExt;
        self.filter_map(|m| async move {
            match m {
                Outbound::Sotw(r) => Some(r),
                Outbound::Delta(_) => None,
            }
        })
    }
    fn filter_map_delta(self) -> impl futures_util::Stream<Item = DeltaDiscoveryRequest> + Send {
        use futures_util::StreamExt;
        self.filter_map(|m| async move {
            match m {
                Outbound::Delta(r) => Some(r),
                Outbound::Sotw(_) => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        for f in 1..20 {
            let b = backoff(f).as_millis() as u64;
            let cap = (500u64 << (f.min(6) - 1)).min(30_000);
            assert!(b >= cap / 2 && b <= cap, "{f}: {b}");
        }
    }
}
