//! xDS: the client that lets a control plane program pilotfish (ADS and per-type streams, state
//! of the world and delta, files), the conversion of resources into the managers' state, and a
//! control plane for tests and benchmarks.

pub mod apply;
pub mod client;
pub mod connect;
pub mod harness;
pub mod path_source;
pub mod sds;
pub mod stats;
pub mod subscription;

/// `type.googleapis.com/` + message name of each resource type.
pub mod type_url {
    /// Listener.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// Cluster.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// RouteConfiguration.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// ClusterLoadAssignment.
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// Secret.
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}

/// The resource types pilotfish subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// CDS.
    Cluster,
    /// EDS.
    Endpoint,
    /// LDS.
    Listener,
    /// RDS.
    Route,
    /// SDS.
    Secret,
}

impl ResourceType {
    /// Its type URL.
    pub fn type_url(self) -> &'static str {
        match self {
            Self::Cluster => type_url::CLUSTER,
            Self::Endpoint => type_url::ENDPOINT,
            Self::Listener => type_url::LISTENER,
            Self::Route => type_url::ROUTE,
            Self::Secret => type_url::SECRET,
        }
    }

    /// The type of a type URL.
    pub fn from_type_url(url: &str) -> Option<Self> {
        [
            Self::Cluster,
            Self::Endpoint,
            Self::Listener,
            Self::Route,
            Self::Secret,
        ]
        .into_iter()
        .find(|t| t.type_url() == url)
    }

    /// Whether a subscription to it is a wildcard (LDS, CDS) rather than by name.
    pub fn is_wildcard(self) -> bool {
        matches!(self, Self::Cluster | Self::Listener)
    }

    /// Envoy's short name (cds, eds, lds, rds, sds).
    pub fn short(self) -> &'static str {
        match self {
            Self::Cluster => "cds",
            Self::Endpoint => "eds",
            Self::Listener => "lds",
            Self::Route => "rds",
            Self::Secret => "sds",
        }
    }

    /// The gRPC method of its own (non-aggregated) discovery service.
    pub fn service_path(self, delta: bool) -> &'static str {
        match (self, delta) {
            (Self::Cluster, false) => {
                "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters"
            }
            (Self::Cluster, true) => {
                "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters"
            }
            (Self::Endpoint, false) => {
                "/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints"
            }
            (Self::Endpoint, true) => {
                "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints"
            }
            (Self::Listener, false) => {
                "/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners"
            }
            (Self::Listener, true) => {
                "/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners"
            }
            (Self::Route, false) => "/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes",
            (Self::Route, true) => "/envoy.service.route.v3.RouteDiscoveryService/DeltaRoutes",
            (Self::Secret, false) => {
                "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
            }
            (Self::Secret, true) => "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets",
        }
    }
}

/// The ADS methods.
pub const ADS_SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
/// The delta ADS method.
pub const ADS_DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
