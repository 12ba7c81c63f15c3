//! Builders for the resources tests and benchmarks push most: EDS clusters, their load
//! assignments, listeners that read routes by RDS, weighted routes, and SDS secrets.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    Address, DataSource, SocketAddress, address, data_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};

use super::from_yaml;

/// An EDS cluster whose endpoints come over ADS.
pub fn eds_cluster(name: &str) -> Cluster {
    from_yaml(&format!(
        "name: {name}\ntype: EDS\nconnect_timeout: 1s\neds_cluster_config: {{eds_config: {{ads: {{}}, resource_api_version: V3}}}}"
    ))
    .expect("a valid cluster")
}

/// A load assignment of cluster `name`: one locality holding `hosts`.
pub fn load_assignment(name: &str, hosts: &[SocketAddr]) -> ClusterLoadAssignment {
    let lb_endpoints = hosts
        .iter()
        .map(|a| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: a.ip().to_string(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(
                            a.port().into(),
                        )),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An HTTP listener `name` on 127.0.0.1:0 whose connection manager (stat prefix
/// `stat_prefix`) reads route configuration `route` over ADS.
pub fn rds_listener(name: &str, stat_prefix: &str, route: &str) -> Listener {
    from_yaml(&format!(
        r#"name: {name}
address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: {stat_prefix}
      rds: {{route_config_name: {route}, config_source: {{ads: {{}}, resource_api_version: V3}}}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    ))
    .expect("a valid listener")
}

/// A route configuration `name` sending every request to `clusters` by weight (one cluster:
/// a plain cluster action).
pub fn weighted_route(name: &str, clusters: &[(&str, u32)]) -> RouteConfiguration {
    let action = match clusters {
        [(c, _)] => format!("{{cluster: \"{c}\"}}"),
        _ => {
            let w: Vec<String> = clusters
                .iter()
                .map(|(c, w)| format!("{{name: \"{c}\", weight: {w}}}"))
                .collect();
            format!("{{weighted_clusters: {{clusters: [{}]}}}}", w.join(", "))
        }
    };
    from_yaml(&format!(
        "name: {name}\nvirtual_hosts:\n- name: all\n  domains: [\"*\"]\n  routes:\n  - match: {{prefix: /}}\n    route: {action}\n"
    ))
    .expect("a valid route configuration")
}

fn inline(pem: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(pem.as_bytes().to_vec())),
        ..Default::default()
    })
}

/// A secret `name` holding a certificate chain and its private key (PEM), as istio-agent
/// sends its `default` secret.
pub fn tls_certificate_secret(name: &str, chain_pem: &str, key_pem: &str) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(chain_pem),
            private_key: inline(key_pem),
            ..Default::default()
        })),
    }
}

/// A secret `name` holding trusted CAs (PEM), as istio-agent sends its `ROOTCA` secret.
pub fn validation_secret(name: &str, ca_pem: &str) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(ca_pem),
                ..Default::default()
            },
        )),
    }
}
