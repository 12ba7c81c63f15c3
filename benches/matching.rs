//! Micro benchmarks of the pure matching cores: route selection and filter-chain selection.
//!
//! Run: `cargo bench --bench matching`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use pilotfish::bootstrap::json::{decode, parse_yaml};
use pilotfish::config::common::Cidr;
use pilotfish::config::listener::FilterChainMatch;
use pilotfish::config::route::RouteConfig;
use pilotfish::http::route_match::{RequestFacts, find_route, find_virtual_host};
use pilotfish::listener::filter_chain_match::{ConnectionFacts, select};

/// A route table shaped like a mesh sidecar's: many virtual hosts with several domains each,
/// and a few routes per host with prefix, regex and header matches.
fn route_table(vhosts: usize) -> RouteConfig {
    let mut yaml = String::from("virtual_hosts:\n");
    for i in 0..vhosts {
        yaml.push_str(&format!(
            "- name: svc{i}\n  domains: [svc{i}.ns.svc.cluster.local, svc{i}, svc{i}.ns, \"10.0.{}.{}\"]\n  routes:\n  - match: {{prefix: /api/v2/, headers: [{{name: x-canary, string_match: {{exact: \"yes\"}}}}]}}\n    route: {{cluster: c{i}-canary}}\n  - match: {{safe_regex: {{regex: \"/items/[0-9]+\"}}}}\n    route: {{cluster: c{i}}}\n  - match: {{prefix: /}}\n    route: {{cluster: c{i}}}\n",
            i / 250,
            i % 250
        ));
    }
    yaml.push_str("- name: allow_any\n  domains: [\"*\"]\n  routes: [{match: {prefix: /}, route: {cluster: passthrough}}]\n");
    let (proto, _, _) =
        decode::<RouteConfiguration>(parse_yaml(&yaml, "bench").expect("yaml"), "", false)
            .expect("decodes");
    RouteConfig::from_proto(&proto, "").expect("converts")
}

fn bench_routes(c: &mut Criterion) {
    let headers = http::HeaderMap::new();
    for n in [10usize, 1000] {
        let rc = route_table(n);
        let host = format!("svc{}.ns.svc.cluster.local", n / 2);
        c.bench_function(&format!("route_match/{n}_vhosts/prefix"), |b| {
            b.iter(|| {
                let vh = find_virtual_host(&rc, black_box(&host)).expect("vhost");
                let facts = RequestFacts {
                    path: "/reviews/1",
                    headers: &headers,
                    method: "GET",
                    authority: &host,
                    scheme: "http",
                };
                black_box(find_route(vh, &facts).expect("route").name.len())
            })
        });
        c.bench_function(&format!("route_match/{n}_vhosts/regex"), |b| {
            b.iter(|| {
                let vh = find_virtual_host(&rc, black_box(&host)).expect("vhost");
                let facts = RequestFacts {
                    path: "/items/12345",
                    headers: &headers,
                    method: "GET",
                    authority: &host,
                    scheme: "http",
                };
                black_box(find_route(vh, &facts).expect("route").name.len())
            })
        });
        c.bench_function(&format!("route_match/{n}_vhosts/catch_all"), |b| {
            b.iter(|| {
                let vh = find_virtual_host(&rc, black_box("unknown.example.com")).expect("vhost");
                let facts = RequestFacts {
                    path: "/",
                    headers: &headers,
                    method: "GET",
                    authority: "unknown.example.com",
                    scheme: "http",
                };
                black_box(find_route(vh, &facts).expect("route").name.len())
            })
        });
    }
}

fn empty_match() -> FilterChainMatch {
    FilterChainMatch::default()
}

/// Chains shaped like Istio's virtualInbound: one per service port, each with tls and
/// raw_buffer variants, plus passthrough chains.
fn inbound_chains(ports: u16) -> Vec<FilterChainMatch> {
    let mut v = Vec::new();
    for p in 0..ports {
        for tp in ["tls", "raw_buffer"] {
            v.push(FilterChainMatch {
                destination_port: Some(8000 + p),
                transport_protocol: tp.into(),
                ..empty_match()
            });
        }
    }
    v.push(FilterChainMatch {
        transport_protocol: "tls".into(),
        ..empty_match()
    });
    v.push(FilterChainMatch {
        transport_protocol: "raw_buffer".into(),
        ..empty_match()
    });
    v.push(FilterChainMatch {
        prefix_ranges: vec![Cidr {
            addr: "10.0.0.0".parse().expect("ip"),
            len: 8,
        }],
        ..empty_match()
    });
    v
}

fn bench_chains(c: &mut Criterion) {
    for n in [4u16, 64] {
        let chains = inbound_chains(n);
        let refs: Vec<&FilterChainMatch> = chains.iter().collect();
        let facts = ConnectionFacts {
            local: format!("10.1.2.3:{}", 8000 + n / 2).parse().expect("addr"),
            remote: "10.4.5.6:43210".parse().expect("addr"),
            direct_remote: "10.4.5.6:43210".parse().expect("addr"),
            server_name: None,
            transport_protocol: "raw_buffer",
            application_protocols: &[],
        };
        c.bench_function(
            &format!("filter_chain_match/{}_chains", chains.len()),
            |b| b.iter(|| black_box(select(black_box(&refs), black_box(&facts)))),
        );
    }
}

criterion_group!(benches, bench_routes, bench_chains);
criterion_main!(benches);
