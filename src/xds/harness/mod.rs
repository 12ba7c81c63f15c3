//! A control plane for tests and benchmarks: serves ADS (state of the world and delta) from a
//! snapshot the caller sets, records every ACK and NACK, and lets the caller wait for the
//! proxy's answer to a version. It follows the xDS protocol as a management server should:
//! stale nonces are ignored, LDS and CDS are wildcard subscriptions, RDS and EDS are by name,
//! delta sends only what changed and lists removals.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_server::{
    ClusterDiscoveryService, ClusterDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_server::{
    ListenerDiscoveryService, ListenerDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use futures_util::Stream;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

mod resources;
mod streams;

pub use resources::*;

/// One resource with its delta version (a hash of its bytes, so unchanged resources are not
/// sent again).
#[derive(Debug)]
pub struct Entry {
    /// Delta version.
    pub version: String,
    /// The resource.
    pub resource: Any,
}

/// One type's resources at one version.
#[derive(Debug, Clone, Default)]
pub struct TypeSnapshot {
    /// The version_info sent with them.
    pub version: String,
    /// Resources by name.
    pub resources: BTreeMap<String, Arc<Entry>>,
}

/// What the control plane serves, by type URL.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// By type URL.
    pub types: BTreeMap<String, Arc<TypeSnapshot>>,
}

fn entry(resource: Any) -> Arc<Entry> {
    Arc::new(Entry {
        version: format!("{:016x}", super::stats::version_hash_bytes(&resource.value)),
        resource,
    })
}

/// The proxy's answer to one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The type.
    pub type_url: String,
    /// The version of the response answered.
    pub version: String,
    /// The NACK's error_detail message, or None for an ACK.
    pub error: Option<String>,
    /// Whether the stream was delta.
    pub delta: bool,
}

/// The name of an xDS resource message.
pub trait Named: Message + prost::Name {
    /// Its resource name.
    fn resource_name(&self) -> &str;
}

macro_rules! named {
    ($t:ty, $f:ident) => {
        impl Named for $t {
            fn resource_name(&self) -> &str {
                &self.$f
            }
        }
    };
}
named!(envoy_types::pb::envoy::config::cluster::v3::Cluster, name);
named!(envoy_types::pb::envoy::config::listener::v3::Listener, name);
named!(
    envoy_types::pb::envoy::config::route::v3::RouteConfiguration,
    name
);
named!(
    envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment,
    cluster_name
);
named!(
    envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret,
    name
);

/// Reads a resource from YAML or JSON (proto3 JSON mapping, `@type` Anys), as a test writes it.
pub fn from_yaml<M: Message + prost::Name + Default>(yaml: &str) -> Result<M, String> {
    let v = crate::bootstrap::json::parse_yaml(yaml, &M::full_name()).map_err(|e| e.to_string())?;
    crate::bootstrap::json::decode::<M>(v, "", false)
        .map(|(m, _, _)| m)
        .map_err(|e| e.to_string())
}

/// Packs a message as an Any.
pub fn any<M: Message + prost::Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// Bumped by stop(): open streams end with UNAVAILABLE.
    kill: watch::Sender<u64>,
    answers: Mutex<Vec<Answer>>,
    answered: watch::Sender<u64>,
    streams: watch::Sender<u64>,
    requests: Mutex<Vec<(bool, String, Vec<String>)>>,
}

/// The control plane. Clones share state.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    snapshot: Arc<watch::Sender<Snapshot>>,
    shared: Arc<Shared>,
    server: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Default for ControlPlane {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlPlane {
    /// An empty control plane.
    pub fn new() -> Self {
        Self {
            snapshot: Arc::new(watch::channel(Snapshot::default()).0),
            shared: Arc::default(),
            server: Arc::default(),
        }
    }

    /// Sets one type's resources at `version` (pushed to every stream at once).
    pub fn set<M: Named>(&self, version: &str, resources: &[M]) {
        let any: Vec<(String, Any)> = resources
            .iter()
            .map(|m| (m.resource_name().to_string(), any(m)))
            .collect();
        self.set_any(&M::type_url(), version, any);
    }

    /// Sets one type's resources from Anys (the type URL names the type).
    pub fn set_any(&self, type_url: &str, version: &str, resources: Vec<(String, Any)>) {
        let ts = Arc::new(TypeSnapshot {
            version: version.to_string(),
            resources: resources.into_iter().map(|(n, a)| (n, entry(a))).collect(),
        });
        self.snapshot.send_modify(|s| {
            s.types.insert(type_url.to_string(), ts);
        });
    }

    /// Replaces (or adds) one resource of its type, moving the type to `version`.
    pub fn set_one<M: Named>(&self, version: &str, resource: &M) {
        let e = entry(any(resource));
        let name = resource.resource_name().to_string();
        self.snapshot.send_modify(|s| {
            let ts = s.types.entry(M::type_url()).or_default();
            let mut next = (**ts).clone();
            next.version = version.to_string();
            next.resources.insert(name, e);
            *ts = Arc::new(next);
        });
    }

    /// Every answer so far.
    pub fn answers(&self) -> Vec<Answer> {
        self.shared
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every request so far: (delta, type URL, names subscribed).
    pub fn requests(&self) -> Vec<(bool, String, Vec<String>)> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many streams were opened.
    pub fn streams_opened(&self) -> u64 {
        *self.shared.streams.borrow()
    }

    /// Waits (up to `timeout`) for the proxy's answer to `version` of `type_url`: Ok for an
    /// ACK, Err with the error detail for a NACK.
    pub async fn wait_answer(
        &self,
        type_url: &str,
        version: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let mut rx = self.shared.answered.subscribe();
        let found = |a: &Answer| a.type_url == type_url && a.version == version;
        let fut = async {
            loop {
                if let Some(a) = self.answers().into_iter().rev().find(|a| found(a)) {
                    return match a.error {
                        None => Ok(()),
                        Some(e) => Err(e),
                    };
                }
                if rx.changed().await.is_err() {
                    return Err("control plane gone".into());
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| Err(format!("no answer to {type_url} version {version:?}")))
    }

    /// Waits for an ACK of `version`; panics with the NACK's detail or on timeout.
    pub async fn wait_ack(&self, type_url: &str, version: &str) {
        if let Err(e) = self
            .wait_answer(type_url, version, Duration::from_secs(10))
            .await
        {
            panic!("{type_url} version {version:?} was not ACKed: {e}");
        }
    }

    /// Serves on a TCP listener until [`Self::stop`].
    pub fn serve_tcp(&self, listener: tokio::net::TcpListener) -> SocketAddr {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        self.serve_incoming(TcpListenerStream::new(listener));
        addr
    }

    /// Serves on a Unix socket until [`Self::stop`].
    pub fn serve_unix(&self, listener: tokio::net::UnixListener) {
        self.serve_incoming(UnixListenerStream::new(listener));
    }

    fn serve_incoming<S, IO>(&self, incoming: S)
    where
        S: Stream<Item = std::io::Result<IO>> + Send + 'static,
        IO: tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + tonic::transport::server::Connected
            + Unpin
            + Send
            + 'static,
    {
        let svc = AggregatedDiscoveryServiceServer::new(self.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let cds = ClusterDiscoveryServiceServer::new(self.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let lds = ListenerDiscoveryServiceServer::new(self.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let sds = SecretDiscoveryServiceServer::new(self.clone());
        let task = tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(svc)
                .add_service(cds)
                .add_service(lds)
                .add_service(sds)
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = r {
                tracing::warn!("control plane stopped: {e}");
            }
        });
        if let Some(old) = self
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(task)
        {
            old.abort();
        }
    }

    /// Stops serving: the listener closes and open streams end with UNAVAILABLE (the proxy
    /// is expected to keep serving and reconnect once [`Self::serve_tcp`] is called again).
    pub fn stop(&self) {
        if let Some(t) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
        self.shared.kill.send_modify(|n| *n += 1);
    }

    /// Records the proxy's answer to the response that carried `nonce`, if this stream sent
    /// it: an ACK, or a NACK with the error_detail's message.
    fn record_answer(
        &self,
        versions_by_nonce: &HashMap<String, String>,
        type_url: &str,
        nonce: &str,
        error: Option<&str>,
        delta: bool,
    ) {
        let Some(version) = versions_by_nonce.get(nonce) else {
            return;
        };
        self.shared
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Answer {
                type_url: type_url.to_string(),
                version: version.clone(),
                error: error.map(str::to_string),
                delta,
            });
        self.shared.answered.send_modify(|n| *n += 1);
    }

    fn record_request(&self, delta: bool, type_url: &str, names: Vec<String>) {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((delta, type_url.to_string(), names));
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for ControlPlane {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.open_sotw(request)
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.open_delta(request)
    }
}

impl ControlPlane {
    fn open_sotw(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<BoxStream<DiscoveryResponse>>, Status> {
        self.shared.streams.send_modify(|n| *n += 1);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(streams::sotw(self.clone(), request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    fn open_delta(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<BoxStream<DeltaDiscoveryResponse>>, Status> {
        self.shared.streams.send_modify(|n| *n += 1);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(streams::delta(self.clone(), request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The per-type services (a `cds_config`, `lds_config` or `sds_config` with its own
/// `api_config_source`) serve the same snapshot; a stream only ever asks for its own type.
macro_rules! per_type_service {
    ($trait:path, $stream:ident, $delta_stream:ident, $sotw:ident, $delta:ident, $fetch:ident) => {
        #[tonic::async_trait]
        impl $trait for ControlPlane {
            type $stream = BoxStream<DiscoveryResponse>;
            type $delta_stream = BoxStream<DeltaDiscoveryResponse>;

            async fn $sotw(
                &self,
                request: Request<Streaming<DiscoveryRequest>>,
            ) -> Result<Response<Self::$stream>, Status> {
                self.open_sotw(request)
            }

            async fn $delta(
                &self,
                request: Request<Streaming<DeltaDiscoveryRequest>>,
            ) -> Result<Response<Self::$delta_stream>, Status> {
                self.open_delta(request)
            }

            async fn $fetch(
                &self,
                _request: Request<DiscoveryRequest>,
            ) -> Result<Response<DiscoveryResponse>, Status> {
                Err(Status::unimplemented("REST-style fetch is not served"))
            }
        }
    };
}

per_type_service!(
    ClusterDiscoveryService,
    StreamClustersStream,
    DeltaClustersStream,
    stream_clusters,
    delta_clusters,
    fetch_clusters
);
per_type_service!(
    ListenerDiscoveryService,
    StreamListenersStream,
    DeltaListenersStream,
    stream_listeners,
    delta_listeners,
    fetch_listeners
);
per_type_service!(
    SecretDiscoveryService,
    StreamSecretsStream,
    DeltaSecretsStream,
    stream_secrets,
    delta_secrets,
    fetch_secrets
);
