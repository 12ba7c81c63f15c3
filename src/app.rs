//! The composition root: bootstrap -> config -> server state -> listeners and admin; signals,
//! draining and exit.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing_subscriber::{EnvFilter, reload};

use crate::bootstrap::cli::{Mode, Options};
use crate::config::ServerConfig;
use crate::server::Server;

type ReloadHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;
static LOG_HANDLE: OnceLock<ReloadHandle> = OnceLock::new();
/// The levels /logging last set: the base level and per-component overrides.
struct LogState {
    base: String,
    components: Vec<(String, String)>,
}

static LOG_STATE: std::sync::Mutex<LogState> = std::sync::Mutex::new(LogState {
    base: String::new(),
    components: Vec::new(),
});

/// Maps Envoy's level names to tracing's.
fn level(l: &str) -> Option<&'static str> {
    Some(match l {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        _ => return None,
    })
}

/// Envoy's logger components and the modules whose logs they cover. Components with no
/// module produce no logs here; their level is accepted.
const COMPONENTS: &[(&str, &[&str])] = &[
    ("admin", &["pilotfish::admin"]),
    ("config", &["pilotfish::config", "pilotfish::bootstrap"]),
    ("main", &["pilotfish::app"]),
    ("init", &["pilotfish::app"]),
    ("runtime", &[]),
    ("connection", &["pilotfish::listener"]),
    ("conn_handler", &["pilotfish::listener"]),
    ("filter", &["pilotfish::listener", "pilotfish::network"]),
    ("http", &["pilotfish::http"]),
    ("http2", &["pilotfish::http"]),
    ("router", &["pilotfish::http::router"]),
    ("compression", &["pilotfish::http::compressor"]),
    ("upstream", &["pilotfish::upstream"]),
    ("pool", &["pilotfish::upstream::pool"]),
    ("client", &["pilotfish::upstream"]),
    ("dns", &["pilotfish::upstream"]),
    ("hc", &[]),
    ("health_checker", &[]),
    ("tcp", &["pilotfish::network"]),
    ("stats", &["pilotfish::stats"]),
    ("misc", &[]),
    ("grpc", &[]),
    ("rbac", &[]),
    ("rds", &[]),
    ("secret", &[]),
    ("tracing", &[]),
    ("wasm", &[]),
    ("lua", &[]),
    ("ext_authz", &[]),
    ("jwt", &[]),
    ("file", &[]),
    ("io", &[]),
    ("matcher", &[]),
    ("websocket", &["pilotfish::http"]),
];

/// Builds the filter directives for `-l` and `--component-log-level`.
fn directives(base: &str, components: &str) -> Result<String, String> {
    let mut out = base.to_string();
    for part in components.split(',').filter(|s| !s.is_empty()) {
        let (name, l) = part.split_once(':').ok_or_else(|| {
            format!("error: component log level not correctly specified: {part:?}")
        })?;
        let lvl = level(l)
            .ok_or_else(|| format!("error: invalid log level {l:?} in --component-log-level"))?;
        let (_, modules) = COMPONENTS
            .iter()
            .find(|(c, _)| *c == name)
            .ok_or_else(|| format!("error: invalid component specified {name:?}"))?;
        for m in *modules {
            out.push_str(&format!(",{m}={lvl}"));
        }
    }
    Ok(out)
}

/// Installs the process logger at `-l` level, with `--component-log-level` overrides.
pub fn init_logging(opts: &Options) -> Result<(), String> {
    let lvl = level(&opts.log_level)
        .ok_or_else(|| format!("error: invalid log level {:?}", opts.log_level))?;
    let spec = directives(lvl, &opts.component_log_level)?;
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&spec));
    use tracing_subscriber::prelude::*;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
    let _ = LOG_HANDLE.set(handle);
    if let Ok(mut st) = LOG_STATE.lock() {
        st.base = lvl.to_string();
        st.components = opts
            .component_log_level
            .split(',')
            .filter_map(|p| p.split_once(':'))
            .filter_map(|(c, l)| Some((c.to_string(), level(l)?.to_string())))
            .collect();
    }
    Ok(())
}

/// The `/logging` admin endpoint: `?level=<l>` sets every logger, `?<component>=<l>` one
/// component, `?paths=<c>:<l>,...` several.
pub fn logging_admin(params: &[(String, String)]) -> http::Response<crate::http::Body> {
    let reply = |status: http::StatusCode, body: String| {
        let mut r = http::Response::new(crate::http::full_body(bytes::Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    let mut state = match LOG_STATE.lock() {
        Ok(s) => s,
        Err(e) => e.into_inner(),
    };
    for (k, v) in params {
        let updates: Vec<(String, String)> = if k == "paths" {
            v.split(',')
                .filter_map(|p| p.split_once(':'))
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        } else {
            vec![(k.clone(), v.clone())]
        };
        for (name, l) in updates {
            let Some(lvl) = level(&l) else {
                return reply(
                    http::StatusCode::BAD_REQUEST,
                    format!("error: unknown logger level {l:?}\n"),
                );
            };
            if name == "level" {
                state.base = lvl.to_string();
                state.components.clear();
            } else if COMPONENTS.iter().any(|(c, _)| *c == name) {
                state.components.retain(|(c, _)| *c != name);
                state.components.push((name, lvl.to_string()));
            } else {
                return reply(
                    http::StatusCode::NOT_FOUND,
                    format!("error: unknown logger {name:?}\n"),
                );
            }
        }
    }
    let comps: String = state
        .components
        .iter()
        .map(|(c, l)| format!("{c}:{l}"))
        .collect::<Vec<_>>()
        .join(",");
    if !params.is_empty()
        && let (Some(h), Ok(spec)) = (LOG_HANDLE.get(), directives(&state.base, &comps))
    {
        let _ = h.modify(|f| *f = EnvFilter::new(spec));
    }
    let mut body = String::from("active loggers:\n");
    for (c, _) in COMPONENTS {
        let l = state
            .components
            .iter()
            .find(|(n, _)| n == c)
            .map(|(_, l)| l.as_str())
            .unwrap_or(state.base.as_str());
        body.push_str(&format!("  {c}: {l}\n"));
    }
    reply(http::StatusCode::OK, body)
}

/// Runs the whole process; returns the exit code.
pub fn run(opts: Options) -> i32 {
    if opts.version {
        println!("{}", crate::bootstrap::cli::version_line());
        return 0;
    }
    if let Err(e) = init_logging(&opts) {
        eprintln!("{e}");
        return 1;
    }
    if opts.restart_epoch != 0 {
        eprintln!("error: hot restart is not supported (--restart-epoch must be 0)");
        return 1;
    }
    let loaded = match crate::bootstrap::load(&opts) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error initializing configuration '{}': {e}",
                opts.config_path
            );
            return 1;
        }
    };
    for u in &loaded.unknown_fields {
        tracing::warn!("ignoring unknown field (--allow-unknown-static-fields): {u}");
    }
    let field_errors = crate::config::check_fields(&loaded.dynamic);
    let bootstrap = loaded.bootstrap;
    drop(loaded.dynamic);
    // Nothing below needs the descriptors (but an error naming an unknown type, which decodes
    // the few it needs again): free them before building allocates its own peak.
    crate::bootstrap::descriptors::release();
    let config = match crate::config::build(&bootstrap, field_errors) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "error initializing configuration '{}':\n{e}",
                opts.config_path
            );
            return 1;
        }
    };
    drop(bootstrap);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    // Returns what building freed (regex compilers' scratch space) to the system.
    crate::sys::release_free_memory();
    if opts.mode == Mode::Validate {
        println!("configuration '{}' OK", opts.config_path);
        return 0;
    }
    let concurrency = opts.concurrency.filter(|c| *c > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // Control work (admin, DNS, signals, stats sinks) runs on its own thread; each worker runs
    // a current-thread runtime with its own accept sockets, as Envoy's workers do.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return 1;
        }
    };
    rt.block_on(serve(Arc::new(config), concurrency, opts))
}

async fn serve(config: Arc<ServerConfig>, concurrency: usize, opts: Options) -> i32 {
    let server = Server::new(
        config.clone(),
        concurrency,
        opts.drain_strategy,
        Duration::from_secs(opts.drain_time_s),
    );
    for l in &config.listeners {
        if let Err(e) = server
            .listeners
            .add_or_update(&server, l.clone(), "", false)
        {
            eprintln!("error: {e}");
            return 1;
        }
    }
    let admin = match config.admin_address {
        Some(a) => match tokio::net::TcpListener::bind(a).await {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("error: cannot bind admin address {a}: {e}");
                return 1;
            }
        },
        None => None,
    };
    if opts.mode == Mode::InitOnly {
        return 0;
    }
    // Workers start once clusters are initialized, as Envoy's init manager orders it; the
    // admin listener answers meanwhile (`/ready` says INITIALIZING).
    let admin_task = admin.map(|a| {
        if let Ok(addr) = a.local_addr() {
            tracing::info!("admin address: {addr}");
            if !opts.admin_address_path.is_empty()
                && let Err(e) = std::fs::write(&opts.admin_address_path, addr.to_string())
            {
                tracing::error!(
                    "cannot write admin address to {}: {e}",
                    opts.admin_address_path
                );
            }
        }
        tokio::spawn(crate::admin::serve(server.clone(), a))
    });
    server.clusters.wait_initialized().await;
    crate::xds::sds::start(&server);
    if server.config.dynamic != Default::default() {
        // As Envoy's init manager: CDS and its clusters' endpoints first, then LDS and the
        // listeners' route configurations (each bounded by its initial_fetch_timeout).
        let mut init = crate::xds::client::start(&server);
        let _ = init.wait_for(|s| s.cds).await;
        while !server.clusters.warming().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = init.wait_for(|s| s.lds).await;
    }
    // Listeners warm until their route configurations and secrets arrive.
    while !server.listeners.warming().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let receivers =
        std::mem::take(&mut *server.worker_rx.lock().unwrap_or_else(|e| e.into_inner()));
    for (i, rx) in receivers.into_iter().enumerate() {
        let server = server.clone();
        let started = std::thread::Builder::new()
            .name(format!("pilotfish-wrk{i}"))
            .spawn(move || worker(i, server, rx));
        if let Err(e) = started {
            eprintln!("error: cannot start worker {i}: {e}");
            return 1;
        }
    }
    server
        .stats
        .gauge("listener_manager.workers_started")
        .set(1);
    let _ = admin_task;
    crate::admin::set_live(&server);
    if !server.sinks.is_empty() {
        tokio::spawn(flush_sinks(server.clone()));
    }
    let flush_every = Duration::from_millis(opts.file_flush_interval_msec.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(flush_every);
        loop {
            tick.tick().await;
            crate::access_log::flush_all();
        }
    });
    wait_for_shutdown(&server).await;
    tracing::info!("draining for {}s", opts.drain_time_s);
    server.start_drain();
    drain_wait(Duration::from_secs(opts.drain_time_s)).await;
    crate::access_log::flush_all();
    tracing::info!("exiting");
    0
}

/// A worker: a current-thread runtime accepting on the sockets the listener manager hands it.
fn worker(
    i: usize,
    server: Arc<Server>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<crate::listener::manager::WorkerCommand>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("worker {i}: cannot start runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        tokio::spawn(timer_floor());
        while let Some(cmd) = rx.recv().await {
            match cmd {
                crate::listener::manager::WorkerCommand::Serve(active, sock) => {
                    match tokio::net::TcpListener::from_std(sock) {
                        Ok(l) => {
                            tokio::spawn(active.accept_loop(server.clone(), l));
                        }
                        Err(e) => {
                            tracing::error!("worker {i}: listener {}: {e}", active.config.name)
                        }
                    }
                }
            }
        }
        // The manager is gone only at exit; keep serving what is running.
        std::future::pending::<()>().await;
    });
}

/// Keeps a timer due within a second in the worker's timer wheel. Tokio wakes its own driver
/// (an eventfd write and an extra poll) whenever a new timer is due before the driver's next
/// planned wake-up; without a nearer timer, every request's route timeout (15 s by default)
/// would be such a timer. One wake-up a second is far cheaper than one per request.
async fn timer_floor() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
    }
}

async fn wait_for_shutdown(server: &Server) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut quit = server.shutdown.subscribe();
    tokio::select! {
        _ = term.recv() => tracing::info!("caught SIGTERM"),
        _ = int.recv() => tracing::info!("caught SIGINT"),
        _ = async { quit.wait_for(|q| *q).await.map(|_| ()) } => tracing::info!("shutdown requested by /quitquitquit"),
    }
}

async fn flush_sinks(server: Arc<Server>) {
    let mut tick = tokio::time::interval(server.config.stats_flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        crate::admin::refresh_server_gauges(&server);
        for s in &server.sinks {
            s.flush(&server.stats);
        }
    }
}

/// Waits until every downstream connection closed or the drain time passed.
async fn drain_wait(max: Duration) {
    let deadline = tokio::time::Instant::now() + max;
    while tokio::time::Instant::now() < deadline {
        if crate::listener::ACTIVE_DOWNSTREAM.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
