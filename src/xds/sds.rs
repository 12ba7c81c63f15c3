//! SDS: secrets over ADS (named subscriptions that follow what TLS contexts reference), over a
//! gRPC stream of their own per secret (Istio's `sds-grpc`, as Envoy opens one per secret),
//! or from a watched `path_config_source` file; and the reload of secrets whose certificate
//! files change. Applied secrets land in the secret store, which TLS reads at each handshake.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use prost::Message;

use super::ResourceType;
use super::apply::{Incoming, Outcome};
use super::stats::SubscriptionStats;
use crate::config::error::ConfigErrors;
use crate::config::fields;
use crate::server::Server;
use crate::tls::secret::{SecretSource, store};

/// How often secret files and `path_config_source` files are looked at.
const POLL: Duration = Duration::from_millis(500);

/// Starts the SDS subscriptions of the secrets in use, now and whenever config changes which
/// secrets are referenced, and the watch of secret files.
pub fn start(server: &Arc<Server>) {
    tokio::spawn(supervise(server.clone()));
    tokio::spawn(watch_files(Arc::downgrade(server)));
}

async fn supervise(server: Arc<Server>) {
    let mut interest = server.xds_interest.subscribe();
    loop {
        for slot in store().live() {
            if slot.subscribed.swap(true, Ordering::AcqRel) {
                continue;
            }
            match &slot.source {
                SecretSource::Api(api) => {
                    super::client::spawn_secret_stream(&server, api.clone(), &slot);
                }
                SecretSource::Path(p) => {
                    tokio::spawn(watch_path(server.clone(), p.clone()));
                }
                SecretSource::Static | SecretSource::Ads => {}
            }
        }
        if interest.changed().await.is_err() {
            return;
        }
    }
}

/// The stats of one secret (`sds.<name>.`).
pub fn secret_stats(server: &Server, name: &str) -> SubscriptionStats {
    SubscriptionStats::new(&server.stats, &format!("sds.{name}."))
}

/// Applies secrets from `source`: each valid one replaces the value TLS reads; a rejected
/// one keeps its previous value and is named in the outcome. Removals keep the last value
/// (a context still using it keeps handshaking).
pub fn apply(
    server: &Server,
    source: &SecretSource,
    resources: Vec<Incoming>,
    removed: &[String],
) -> Outcome {
    let mut out = Outcome::default();
    for r in resources {
        match decode(&r) {
            Ok((secret, parsed)) => {
                let name = secret.name.clone();
                let stats = secret_stats(server, &name);
                stats.update_attempt().inc();
                if let Some(slot) = store().find(source, &name) {
                    slot.install(secret, parsed, &r.version);
                    tracing::info!("secret {name:?} updated (version {:?})", r.version);
                }
                stats.accepted(&r.version);
                out.accepted.push((name, r.version));
            }
            Err((name, e)) => {
                if !name.is_empty() {
                    let stats = secret_stats(server, &name);
                    stats.update_attempt().inc();
                    stats.update_rejected().inc();
                    out.rejected.push(name.clone());
                }
                out.errors.push(format!("sds {name:?}: {e}"));
            }
        }
    }
    for name in removed {
        tracing::info!("secret {name:?} removed by the control plane; its last value stays");
    }
    if !out.accepted.is_empty() {
        // Clusters warming for these secrets may serve now.
        server.clusters.promote_warmed();
    }
    out
}

fn decode(r: &Incoming) -> Result<(Secret, crate::config::secret::ParsedSecret), (String, String)> {
    let ty = ResourceType::Secret.type_url();
    if r.resource.type_url != ty {
        return Err((
            r.name.clone(),
            format!("resource type {:?} in a {ty} response", r.resource.type_url),
        ));
    }
    let s = Secret::decode(r.resource.value.as_slice())
        .map_err(|e| (r.name.clone(), format!("cannot decode: {e}")))?;
    if !r.name.is_empty() && r.name != s.name {
        return Err((
            r.name.clone(),
            format!(
                "the resource is named {:?}, not as its envelope says",
                s.name
            ),
        ));
    }
    if s.name.is_empty() {
        return Err((String::new(), "name: must not be empty".into()));
    }
    let mut errs = ConfigErrors::default();
    fields::check_message(&s, "", &mut errs);
    if let Some(parsed) = errs.keep(crate::config::secret::secret(&s, ""))
        && errs.0.is_empty()
    {
        return Ok((s, parsed));
    }
    let text = errs
        .0
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Err((s.name, text))
}

/// Reloads SDS secrets whose certificate, key or CA files (or `watched_directory`) change,
/// while the server runs. Static secrets are read once, as Envoy reads them.
async fn watch_files(server: std::sync::Weak<Server>) {
    loop {
        tokio::time::sleep(POLL).await;
        let Some(server) = server.upgrade() else {
            return;
        };
        for slot in store().live() {
            if slot.source == SecretSource::Static {
                continue;
            }
            match slot.reload_if_changed() {
                None => {}
                Some(Ok(())) => {
                    tracing::info!("secret {:?} reloaded from its files", slot.name);
                    secret_stats(&server, &slot.name).update_success().inc();
                }
                Some(Err(e)) => {
                    tracing::warn!("{e}; the previous value stays");
                    secret_stats(&server, &slot.name).update_rejected().inc();
                }
            }
        }
    }
}

/// Serves the secrets of a `path_config_source` file (a DiscoveryResponse) while any secret
/// in use names it.
async fn watch_path(server: Arc<Server>, path: PathBuf) {
    let source = SecretSource::Path(path.clone());
    let mut last: Option<Vec<u8>> = None;
    loop {
        if store().names(&source).is_empty() {
            return;
        }
        match tokio::fs::read(&path).await {
            Ok(bytes) if last.as_ref() != Some(&bytes) => {
                match super::path_source::parse(&bytes, &path) {
                    Ok(resp) => {
                        let resources = resp
                            .resources
                            .into_iter()
                            .map(|a| Incoming {
                                name: String::new(),
                                version: resp.version_info.clone(),
                                resource: a,
                            })
                            .collect();
                        let outcome = apply(&server, &source, resources, &[]);
                        if let Some(e) = outcome.error_detail() {
                            tracing::warn!("sds: {}: {e}", path.display());
                        }
                    }
                    Err(e) => tracing::warn!("sds: {}: {e}", path.display()),
                }
                last = Some(bytes);
            }
            Ok(_) => {}
            Err(e) => {
                if last.is_some() {
                    tracing::warn!("sds: cannot read {}: {e}", path.display());
                }
                last = None;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}
