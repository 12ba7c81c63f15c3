//! Config sources: where xDS resources come from (`ConfigSource`, `ApiConfigSource`) and the
//! bootstrap's `dynamic_resources`.

use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::DynamicResources;
use envoy_types::pb::envoy::config::core::v3 as core;

use super::common::duration;
use super::error::{ConfigError, ConfigErrors, index, join};

/// The transport of an API source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiType {
    /// State of the world over gRPC.
    Grpc,
    /// Incremental (delta) xDS over gRPC.
    DeltaGrpc,
}

/// A gRPC management server reached through a bootstrap cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSource {
    /// SotW or delta.
    pub api_type: ApiType,
    /// The `envoy_grpc.cluster_name` the stream goes to.
    pub cluster: String,
    /// `envoy_grpc.authority` (the cluster name when empty).
    pub authority: String,
    /// Send the node only on a stream's first request.
    pub set_node_on_first_message_only: bool,
}

/// Where one kind of resource comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The bootstrap's `ads_config` stream.
    Ads,
    /// A stream of its own.
    Api(ApiSource),
    /// A file holding a DiscoveryResponse, reloaded when it changes.
    Path(PathBuf),
}

/// A converted `ConfigSource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    /// Where.
    pub source: Source,
    /// How long initialization waits for the first response (zero: no limit).
    pub initial_fetch_timeout: Duration,
}

/// The bootstrap's `dynamic_resources`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// The ADS stream, if any.
    pub ads: Option<ApiSource>,
    /// Where listeners come from.
    pub lds: Option<ConfigSource>,
    /// Where clusters come from.
    pub cds: Option<ConfigSource>,
}

impl Dynamic {
    /// Every bootstrap cluster an xDS stream goes to.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        fn api(s: &Option<ConfigSource>) -> Option<&str> {
            match s.as_ref().map(|c| &c.source) {
                Some(Source::Api(a)) => Some(a.cluster.as_str()),
                _ => None,
            }
        }
        self.ads
            .as_ref()
            .map(|a| a.cluster.as_str())
            .into_iter()
            .chain(api(&self.lds))
            .chain(api(&self.cds))
    }
}

/// Converts `dynamic_resources`.
pub fn dynamic(d: &DynamicResources, errs: &mut ConfigErrors) -> Dynamic {
    let p = "dynamic_resources";
    if !d.lds_resources_locator.is_empty() {
        errs.push(ConfigError::unsupported(join(p, "lds_resources_locator")));
    }
    if !d.cds_resources_locator.is_empty() {
        errs.push(ConfigError::unsupported(join(p, "cds_resources_locator")));
    }
    let ads = d
        .ads_config
        .as_ref()
        .and_then(|a| errs.keep(api_source(a, &join(p, "ads_config"))));
    let mut source = |c: &Option<core::ConfigSource>, f: &str| {
        let c = c.as_ref()?;
        let cs = errs.keep(config_source(c, &join(p, f)))?;
        if cs.source == Source::Ads && ads.is_none() {
            errs.push(ConfigError::new(
                join(p, f),
                "ads: {} needs dynamic_resources.ads_config",
            ));
            return None;
        }
        Some(cs)
    };
    let lds = source(&d.lds_config, "lds_config");
    let cds = source(&d.cds_config, "cds_config");
    Dynamic { ads, lds, cds }
}

/// Converts a `ConfigSource` at `path`.
pub fn config_source(c: &core::ConfigSource, path: &str) -> Result<ConfigSource, ConfigError> {
    use core::config_source::ConfigSourceSpecifier as CSS;
    if !c.authorities.is_empty() {
        return Err(ConfigError::unsupported(join(path, "authorities")));
    }
    api_version(c.resource_api_version, &join(path, "resource_api_version"))?;
    let source = match &c.config_source_specifier {
        Some(CSS::Ads(_)) => Source::Ads,
        Some(CSS::ApiConfigSource(a)) => {
            Source::Api(api_source(a, &join(path, "api_config_source"))?)
        }
        Some(CSS::PathConfigSource(pc)) => {
            if pc.watched_directory.is_some() {
                return Err(ConfigError::unsupported(join(
                    path,
                    "path_config_source.watched_directory",
                )));
            }
            if pc.path.is_empty() {
                return Err(ConfigError::new(
                    join(path, "path_config_source.path"),
                    "must not be empty",
                ));
            }
            Source::Path(PathBuf::from(&pc.path))
        }
        #[allow(deprecated)]
        Some(CSS::Path(p)) => Source::Path(PathBuf::from(p)),
        Some(CSS::Self_(_)) => {
            return Err(ConfigError::unsupported(join(path, "self")));
        }
        None => {
            return Err(ConfigError::new(
                path,
                "one of ads, api_config_source or path_config_source is required",
            ));
        }
    };
    let initial_fetch_timeout = match &c.initial_fetch_timeout {
        Some(d) => duration(d, &join(path, "initial_fetch_timeout"))?,
        None => Duration::from_secs(15),
    };
    Ok(ConfigSource {
        source,
        initial_fetch_timeout,
    })
}

fn api_version(v: i32, path: &str) -> Result<(), ConfigError> {
    // AUTO (0) means V3 since Envoy dropped v2; V2 (1) is refused as Envoy refuses it.
    match v {
        0 | 2 => Ok(()),
        _ => Err(ConfigError::new(path, "only V3 is supported")),
    }
}

/// Converts an `ApiConfigSource` at `path`.
pub fn api_source(a: &core::ApiConfigSource, path: &str) -> Result<ApiSource, ConfigError> {
    use core::api_config_source::ApiType as AT;
    let api_type = match AT::try_from(a.api_type) {
        Ok(AT::Grpc) => ApiType::Grpc,
        Ok(AT::DeltaGrpc) => ApiType::DeltaGrpc,
        Ok(other) => {
            return Err(ConfigError::new(
                join(path, "api_type"),
                format!("{} is not supported", other.as_str_name()),
            ));
        }
        Err(_) => {
            return Err(ConfigError::new(
                join(path, "api_type"),
                format!("unknown value {}", a.api_type),
            ));
        }
    };
    api_version(
        a.transport_api_version,
        &join(path, "transport_api_version"),
    )?;
    if !a.cluster_names.is_empty() {
        return Err(ConfigError::new(
            join(path, "cluster_names"),
            "gRPC sources name their cluster in grpc_services",
        ));
    }
    if !a.config_validators.is_empty() {
        return Err(ConfigError::unsupported(join(path, "config_validators")));
    }
    if a.rate_limit_settings.is_some() {
        return Err(ConfigError::unsupported(join(path, "rate_limit_settings")));
    }
    if a.grpc_services.len() != 1 {
        return Err(ConfigError::new(
            join(path, "grpc_services"),
            "exactly one gRPC service is required",
        ));
    }
    let gp = index(path, "grpc_services", 0);
    let g = &a.grpc_services[0];
    if !g.initial_metadata.is_empty() {
        return Err(ConfigError::unsupported(join(&gp, "initial_metadata")));
    }
    if g.retry_policy.is_some() {
        return Err(ConfigError::unsupported(join(&gp, "retry_policy")));
    }
    use core::grpc_service::TargetSpecifier as TS;
    let eg = match &g.target_specifier {
        Some(TS::EnvoyGrpc(e)) => e,
        Some(TS::GoogleGrpc(_)) => {
            return Err(ConfigError::unsupported(join(&gp, "google_grpc")));
        }
        None => return Err(ConfigError::new(&gp, "envoy_grpc is required")),
    };
    if eg.cluster_name.is_empty() {
        return Err(ConfigError::new(
            join(&gp, "envoy_grpc.cluster_name"),
            "must not be empty",
        ));
    }
    if eg.retry_policy.is_some() || eg.max_receive_message_length.is_some() {
        return Err(ConfigError::unsupported(join(&gp, "envoy_grpc")));
    }
    Ok(ApiSource {
        api_type,
        cluster: eg.cluster_name.clone(),
        authority: if eg.authority.is_empty() {
            eg.cluster_name.clone()
        } else {
            eg.authority.clone()
        },
        set_node_on_first_message_only: a.set_node_on_first_message_only,
    })
}
