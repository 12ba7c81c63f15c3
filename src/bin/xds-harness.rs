//! A control plane for trying pilotfish (or Envoy) by hand: serves ADS, state of the world and
//! delta, from DiscoveryResponse files (YAML or JSON), re-reading them when they change, and
//! prints every ACK and NACK.
//!
//! ```text
//! xds-harness [--listen 127.0.0.1:18000] [--uds PATH] FILE...
//! ```
//!
//! Each file holds one DiscoveryResponse: `version_info` and `resources` (Anys with `@type`).

use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use pilotfish::xds::harness::{ControlPlane, from_yaml};
use prost::Name;

fn usage() -> ! {
    eprintln!("usage: xds-harness [--listen ADDR] [--uds PATH] FILE...");
    std::process::exit(2)
}

fn main() {
    let mut listen = "127.0.0.1:18000".to_string();
    let mut uds: Option<PathBuf> = None;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().unwrap_or_else(|| usage()),
            "--uds" => uds = Some(args.next().unwrap_or_else(|| usage()).into()),
            "-h" | "--help" => usage(),
            _ => files.push(PathBuf::from(a)),
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            std::process::exit(1)
        }
    };
    std::process::exit(rt.block_on(run(listen, uds, files)));
}

async fn run(listen: String, uds: Option<PathBuf>, files: Vec<PathBuf>) -> i32 {
    let cp = ControlPlane::new();
    match &uds {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            match tokio::net::UnixListener::bind(path) {
                Ok(l) => {
                    cp.serve_unix(l);
                    println!("serving ADS on {}", path.display());
                }
                Err(e) => {
                    eprintln!("cannot listen on {}: {e}", path.display());
                    return 1;
                }
            }
        }
        None => match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => println!("serving ADS on {}", cp.serve_tcp(l)),
            Err(e) => {
                eprintln!("cannot listen on {listen}: {e}");
                return 1;
            }
        },
    }
    let mut last: Vec<Option<String>> = vec![None; files.len()];
    let mut printed = 0;
    loop {
        for (f, seen) in files.iter().zip(last.iter_mut()) {
            let Ok(text) = std::fs::read_to_string(f) else {
                continue;
            };
            if seen.as_deref() == Some(text.as_str()) {
                continue;
            }
            *seen = Some(text.clone());
            match from_yaml::<DiscoveryResponse>(&text) {
                Ok(resp) => load(&cp, f, resp),
                Err(e) => eprintln!("{}: {e}", f.display()),
            }
        }
        let answers = cp.answers();
        for a in &answers[printed..] {
            match &a.error {
                None => println!("ACK {} {:?}", a.type_url, a.version),
                Some(e) => println!("NACK {} {:?}: {e}", a.type_url, a.version),
            }
        }
        printed = answers.len();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Sets the snapshot of the response's type from a file.
fn load(cp: &ControlPlane, f: &std::path::Path, resp: DiscoveryResponse) {
    let type_url = if resp.type_url.is_empty() {
        resp.resources
            .first()
            .map(|r| r.type_url.clone())
            .unwrap_or_default()
    } else {
        resp.type_url.clone()
    };
    if type_url.is_empty() {
        eprintln!("{}: no type_url and no resources", f.display());
        return;
    }
    let mut named = Vec::new();
    for r in resp.resources {
        match resource_name(&r) {
            Some(n) => named.push((n, r)),
            None => eprintln!("{}: a resource of {} has no name", f.display(), r.type_url),
        }
    }
    println!(
        "{}: {} {} resources at version {:?}",
        f.display(),
        named.len(),
        type_url,
        resp.version_info
    );
    cp.set_any(&type_url, &resp.version_info, named);
}

fn resource_name(a: &envoy_types::pb::google::protobuf::Any) -> Option<String> {
    use envoy_types::pb::envoy::config as c;
    use prost::Message;
    let t = a.type_url.as_str();
    let v = a.value.as_slice();
    let name = if t == c::cluster::v3::Cluster::type_url() {
        c::cluster::v3::Cluster::decode(v).ok()?.name
    } else if t == c::listener::v3::Listener::type_url() {
        c::listener::v3::Listener::decode(v).ok()?.name
    } else if t == c::route::v3::RouteConfiguration::type_url() {
        c::route::v3::RouteConfiguration::decode(v).ok()?.name
    } else if t == c::endpoint::v3::ClusterLoadAssignment::type_url() {
        c::endpoint::v3::ClusterLoadAssignment::decode(v)
            .ok()?
            .cluster_name
    } else if t
        == envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret::type_url()
    {
        envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret::decode(v)
            .ok()?
            .name
    } else {
        return None;
    };
    Some(name)
}
