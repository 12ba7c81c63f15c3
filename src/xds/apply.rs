//! Applies one xDS response: every resource is decoded and converted first; the valid ones are
//! applied, the rejected ones keep their previous version and are named in the error detail.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as ClusterProto;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener as ListenerProto;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use super::ResourceType;
use super::stats::SubscriptionStats;
use crate::config::cluster::{Cluster, Discovery, load_assignment};
use crate::config::common::Encoded;
use crate::config::error::ConfigErrors;
use crate::config::listener::Listener;
use crate::config::route::RouteConfig;
use crate::config::source::Source;
use crate::config::{ConfigError, fields};
use crate::http::rds::RdsVersion;
use crate::server::Server;
use crate::upstream::Assignment;

/// One resource of a response.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Its name as the delta envelope gives it (empty in state of the world).
    pub name: String,
    /// Its version (the response's version_info in state of the world).
    pub version: String,
    /// The resource.
    pub resource: Any,
}

/// What applying a response did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Resources accepted, with their versions.
    pub accepted: Vec<(String, String)>,
    /// Names removed.
    pub removed: Vec<String>,
    /// One line per rejected resource.
    pub errors: Vec<String>,
    /// Names of rejected resources (where known).
    pub rejected: Vec<String>,
}

impl Outcome {
    /// The NACK message, if anything was rejected.
    pub fn error_detail(&self) -> Option<String> {
        if self.errors.is_empty() {
            None
        } else {
            Some(self.errors.join("\n"))
        }
    }
}

/// Where the resources came from: the state-of-the-world semantics of LDS and CDS need to
/// know whether a response is the whole set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// State of the world: for LDS and CDS, names absent from the response are removed.
    StateOfTheWorld,
    /// Delta: removals are listed.
    Delta,
}

/// Applies a response of type `ty`.
pub fn apply(
    server: &Arc<Server>,
    ty: ResourceType,
    mode: Mode,
    resources: Vec<Incoming>,
    removed: &[String],
) -> Outcome {
    let any_typed = matches!(
        ty,
        ResourceType::Cluster | ResourceType::Listener | ResourceType::Route
    );
    if any_typed && !resources.is_empty() {
        // Their filters, transport sockets and extensions are Anys of many types, checked
        // field by field: load the whole API once rather than file by file under a held
        // descriptor (each of which would copy the pool).
        crate::bootstrap::descriptors::load_all();
    }
    let mut out = Outcome::default();
    let mut seen = BTreeSet::new();
    let mut valid = Vec::new();
    for r in resources {
        match decode(ty, &r) {
            Ok(d) => {
                if !seen.insert(d.name().to_string()) {
                    out.errors.push(format!(
                        "{} {:?}: duplicate resource name in one response",
                        ty.short(),
                        d.name()
                    ));
                    continue;
                }
                valid.push((d, r.version));
            }
            Err((name, e)) => {
                if !name.is_empty() {
                    seen.insert(name.clone());
                    out.rejected.push(name.clone());
                }
                out.errors.push(format!("{} {name:?}: {e}", ty.short()));
            }
        }
    }
    install_all(server, valid, &mut out);
    let mut gone: Vec<String> = removed.to_vec();
    if mode == Mode::StateOfTheWorld {
        let current = match ty {
            ResourceType::Cluster => server
                .clusters
                .dynamic_names()
                .iter()
                .map(|n| n.to_string())
                .collect(),
            ResourceType::Listener => server.listeners.dynamic_names(),
            _ => Vec::new(),
        };
        gone.extend(current.into_iter().filter(|n| !seen.contains(n)));
    }
    for name in gone {
        let done = match ty {
            ResourceType::Cluster => server.clusters.remove(&name),
            ResourceType::Listener => server.listeners.remove(server, &name),
            ResourceType::Route => {
                server.rds.remove(&name);
                true
            }
            ResourceType::Endpoint => {
                server.clusters.remove_assignment(&name);
                true
            }
            ResourceType::Secret => false,
        };
        if done {
            out.removed.push(name);
        }
    }
    out
}

/// A decoded, converted resource ready to install.
enum Decoded {
    Cluster(Arc<Cluster>),
    Listener(Arc<Listener>),
    Route(String, Encoded<RouteConfiguration>, Arc<RouteConfig>),
    Endpoint(Box<Assignment>),
}

impl Decoded {
    fn name(&self) -> &str {
        match self {
            Self::Cluster(c) => &c.name,
            Self::Listener(l) => &l.name,
            Self::Route(n, _, _) => n,
            Self::Endpoint(a) => &a.name,
        }
    }
}

fn errors_text(errs: ConfigErrors) -> String {
    errs.0
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Decodes and converts one resource; on failure returns its name (if known) and why.
fn decode(ty: ResourceType, r: &Incoming) -> Result<Decoded, (String, String)> {
    let any = &r.resource;
    if any.type_url != ty.type_url() {
        return Err((
            r.name.clone(),
            format!(
                "resource type {:?} in a {} response",
                any.type_url,
                ty.type_url()
            ),
        ));
    }
    let fail = |name: &str, e: String| (name.to_string(), e);
    let check_name = |name: &str| -> Result<(), (String, String)> {
        if !r.name.is_empty() && r.name != name {
            return Err(fail(
                &r.name,
                format!("the resource is named {name:?}, not as its envelope says"),
            ));
        }
        Ok(())
    };
    match ty {
        ResourceType::Cluster => {
            let c = ClusterProto::decode(any.value.as_slice())
                .map_err(|e| fail(&r.name, format!("cannot decode: {e}")))?;
            check_name(&c.name)?;
            let mut errs = ConfigErrors::default();
            fields::check_message(&c, "", &mut errs);
            if let Some(e) = errs.keep(Cluster::from_proto(&c, "")) {
                check_cluster(&e, &mut errs);
                if errs.0.is_empty() {
                    let mut e = e;
                    e.proto = Encoded::from_bytes(any.value.clone());
                    return Ok(Decoded::Cluster(Arc::new(e)));
                }
            }
            Err(fail(&c.name, errors_text(errs)))
        }
        ResourceType::Listener => {
            let l = ListenerProto::decode(any.value.as_slice())
                .map_err(|e| fail(&r.name, format!("cannot decode: {e}")))?;
            check_name(&l.name)?;
            let mut errs = ConfigErrors::default();
            fields::check_message(&l, "", &mut errs);
            if let Some(mut c) = errs.keep(Listener::from_proto(&l, "")) {
                for (path, src) in c.rds_sources() {
                    if src.source != Source::Ads {
                        errs.push(ConfigError::new(
                            path,
                            "RDS is served over ADS only (ads: {})",
                        ));
                    }
                }
                if errs.0.is_empty() {
                    c.proto = Encoded::from_bytes(any.value.clone());
                    return Ok(Decoded::Listener(Arc::new(c)));
                }
            }
            Err(fail(&l.name, errors_text(errs)))
        }
        ResourceType::Route => {
            let rc = RouteConfiguration::decode(any.value.as_slice())
                .map_err(|e| fail(&r.name, format!("cannot decode: {e}")))?;
            check_name(&rc.name)?;
            let mut errs = ConfigErrors::default();
            fields::check_message(&rc, "", &mut errs);
            if let Some(c) = errs.keep(RouteConfig::from_proto(&rc, ""))
                && errs.0.is_empty()
            {
                return Ok(Decoded::Route(
                    rc.name,
                    Encoded::from_bytes(any.value.clone()),
                    Arc::new(c),
                ));
            }
            Err(fail(&rc.name, errors_text(errs)))
        }
        ResourceType::Endpoint => {
            let cla = ClusterLoadAssignment::decode(any.value.as_slice())
                .map_err(|e| fail(&r.name, format!("cannot decode: {e}")))?;
            check_name(&cla.cluster_name)?;
            if cla.cluster_name.is_empty() {
                return Err(fail("", "cluster_name: must not be empty".into()));
            }
            // load_assignment checks every field of the assignment itself.
            let (endpoints, overprovisioning_factor) = load_assignment(&cla, "", Discovery::Eds)
                .map_err(|e| fail(&cla.cluster_name, e.to_string()))?;
            Ok(Decoded::Endpoint(Box::new(Assignment {
                endpoints,
                overprovisioning_factor,
                name: cla.cluster_name,
                proto: Encoded::from_bytes(any.value.clone()),
                version: String::new(),
                last_updated: SystemTime::now(),
            })))
        }
        ResourceType::Secret => Err(fail(
            &r.name,
            "secrets are not accepted on this stream".into(),
        )),
    }
}

/// Checks what a CDS cluster needs of the rest of the config.
fn check_cluster(c: &Cluster, errs: &mut ConfigErrors) {
    if let Some(e) = &c.eds
        && !matches!(e.source.source, Source::Ads)
    {
        errs.push(ConfigError::new(
            "eds_cluster_config.eds_config",
            "EDS is served over ADS only (ads: {})",
        ));
    }
}

/// Installs converted resources, batching clusters and endpoints so a large response
/// republishes the active cluster set once.
fn install_all(server: &Arc<Server>, valid: Vec<(Decoded, String)>, out: &mut Outcome) {
    let mut clusters = Vec::new();
    let mut endpoints = Vec::new();
    for (d, version) in valid {
        let name = d.name().to_string();
        match d {
            Decoded::Cluster(c) => clusters.push((c, version)),
            Decoded::Endpoint(mut a) => {
                a.version = version.clone();
                let stats = SubscriptionStats::new(&server.stats, &format!("cluster.{name}."));
                stats.update_attempt().inc();
                if a.endpoints.is_empty() {
                    stats.update_empty().inc();
                }
                stats.accepted(&version);
                endpoints.push((name.clone(), *a));
                out.accepted.push((name, version));
            }
            Decoded::Listener(l) => {
                match server.listeners.add_or_update(server, l, &version, true) {
                    Ok(_) => out.accepted.push((name, version)),
                    Err(e) => {
                        out.errors.push(format!("lds {name:?}: {e}"));
                        out.rejected.push(name);
                    }
                }
            }
            Decoded::Route(_, proto, config) => {
                let stats = server
                    .rds
                    .get(&name)
                    .map(|p| SubscriptionStats::new(&server.stats, &p.stat_prefix));
                server.rds.update(
                    &name,
                    RdsVersion {
                        config,
                        proto,
                        version: version.clone(),
                        last_updated: SystemTime::now(),
                    },
                );
                if let Some(s) = stats {
                    s.update_attempt().inc();
                    s.accepted(&version);
                }
                out.accepted.push((name, version));
            }
        }
    }
    if !endpoints.is_empty() {
        server.clusters.update_assignments(endpoints);
    }
    if !clusters.is_empty() {
        let names: Vec<_> = clusters
            .iter()
            .map(|(c, v)| (c.name.to_string(), v.clone()))
            .collect();
        let results = server.clusters.add_or_update_many(clusters);
        for ((name, version), r) in names.into_iter().zip(results) {
            match r {
                Ok(_) => out.accepted.push((name, version)),
                Err(e) => {
                    out.errors.push(format!("cds {name:?}: {e}"));
                    out.rejected.push(name);
                }
            }
        }
    }
}
