//! `path_config_source`: a file holding a DiscoveryResponse (YAML or JSON, proto3 JSON
//! mapping), applied as a state-of-the-world update at start and whenever its contents change.
//! A file that does not parse or convert is rejected and the last good config keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use tokio::sync::watch;

use super::ResourceType;
use super::apply::{self, Incoming, Mode};
use super::client::{InitState, mark_done, type_stats};
use crate::server::Server;

/// How often the file is looked at.
const POLL: Duration = Duration::from_millis(500);

/// Watches `path` for `ty` resources while the server runs.
pub async fn watch(
    server: Arc<Server>,
    ty: ResourceType,
    path: PathBuf,
    init: Arc<watch::Sender<InitState>>,
) {
    let stats = type_stats(&server, ty);
    let mut last: Option<Vec<u8>> = None;
    loop {
        match tokio::fs::read(&path).await {
            Ok(bytes) if last.as_ref() != Some(&bytes) => {
                stats.update_attempt().inc();
                match parse(&bytes, &path) {
                    Ok(resp) => {
                        let version = resp.version_info.clone();
                        if resp.resources.is_empty() {
                            stats.update_empty().inc();
                        }
                        let resources = resp
                            .resources
                            .into_iter()
                            .map(|a| Incoming {
                                name: String::new(),
                                version: version.clone(),
                                resource: a,
                            })
                            .collect();
                        let outcome =
                            apply::apply(&server, ty, Mode::StateOfTheWorld, resources, &[]);
                        match outcome.error_detail() {
                            None => {
                                stats.accepted(&version);
                                server.set_xds_version(ty.short(), &version);
                            }
                            Some(e) => {
                                stats.update_rejected().inc();
                                tracing::warn!("{}: {}: {e}", ty.short(), path.display());
                            }
                        }
                        server.bump_xds_interest();
                    }
                    Err(e) => {
                        stats.update_rejected().inc();
                        tracing::warn!("{}: {}: {e}", ty.short(), path.display());
                    }
                }
                last = Some(bytes);
                mark_done(&init, ty);
                crate::bootstrap::descriptors::release_later();
            }
            Ok(_) => {}
            Err(e) => {
                if last.is_some() {
                    tracing::warn!("{}: cannot read {}: {e}", ty.short(), path.display());
                }
                stats.update_failure().inc();
                last = None;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

pub(crate) fn parse(bytes: &[u8], path: &std::path::Path) -> Result<DiscoveryResponse, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let value = crate::bootstrap::json::parse_yaml(text, &path.display().to_string())
        .map_err(|e| e.to_string())?;
    crate::bootstrap::json::decode::<DiscoveryResponse>(value, "", false)
        .map(|(m, _, _)| m)
        .map_err(|e| e.to_string())
}
