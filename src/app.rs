//! The composition root: bootstrap -> config -> server state -> listeners and admin; signals,
//! draining and exit.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing_subscriber::{EnvFilter, reload};

use crate::bootstrap::cli::{Mode, Options};
use crate::config::ServerConfig;
use crate::listener::ActiveListener;
use crate::server::Server;

type ReloadHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;
static LOG_HANDLE: OnceLock<ReloadHandle> = OnceLock::new();
static LOG_LEVEL: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

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

/// Installs the process logger at `-l` level.
pub fn init_logging(opts: &Options) -> Result<(), String> {
    let lvl = level(&opts.log_level)
        .ok_or_else(|| format!("error: invalid log level {:?}", opts.log_level))?;
    for part in opts
        .component_log_level
        .split(',')
        .filter(|s| !s.is_empty())
    {
        let (_, l) = part.split_once(':').ok_or_else(|| {
            format!("error: component log level not correctly specified: {part:?}")
        })?;
        level(l)
            .ok_or_else(|| format!("error: invalid log level {l:?} in --component-log-level"))?;
    }
    let (filter, handle) = reload::Layer::new(EnvFilter::new(lvl));
    use tracing_subscriber::prelude::*;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
    let _ = LOG_HANDLE.set(handle);
    if let Ok(mut l) = LOG_LEVEL.lock() {
        *l = lvl.to_string();
    }
    Ok(())
}

/// The `/logging` admin endpoint: `?level=<l>` changes every logger.
pub fn logging_admin(params: &[(String, String)]) -> http::Response<crate::http::Body> {
    for (k, v) in params {
        let target = v.as_str();
        let Some(l) = level(target) else {
            let mut r = http::Response::new(crate::http::full_body(bytes::Bytes::from(format!(
                "error: unknown logger level {target:?}\n"
            ))));
            *r.status_mut() = http::StatusCode::BAD_REQUEST;
            return r;
        };
        if k == "level" {
            if let Some(h) = LOG_HANDLE.get() {
                let _ = h.modify(|f| *f = EnvFilter::new(l));
            }
            if let Ok(mut cur) = LOG_LEVEL.lock() {
                *cur = l.to_string();
            }
        }
    }
    let cur = LOG_LEVEL.lock().map(|l| l.clone()).unwrap_or_default();
    http::Response::new(crate::http::full_body(bytes::Bytes::from(format!(
        "active loggers:\n  pilotfish: {cur}\n"
    ))))
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
    let config = match crate::config::build(&loaded.bootstrap, &loaded.dynamic) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "error initializing configuration '{}':\n{e}",
                opts.config_path
            );
            return 1;
        }
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if opts.mode == Mode::Validate {
        println!("configuration '{}' OK", opts.config_path);
        return 0;
    }
    let concurrency = opts.concurrency.filter(|c| *c > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(concurrency)
        .enable_all()
        .thread_name("pilotfish-worker")
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
    let server = Server::new(config.clone(), concurrency);
    let mut bound = Vec::new();
    for l in &config.listeners {
        let active = ActiveListener::new(l.clone(), &server);
        if !l.bind_to_port {
            continue;
        }
        let sockets = if l.reuse_port { concurrency } else { 1 };
        let mut addr = l.address;
        for _ in 0..sockets {
            match active.bind(addr) {
                Ok(s) => {
                    // Port 0 binds once; the other workers share the port it got.
                    if let Ok(a) = s.local_addr() {
                        addr = a;
                    }
                    server.record_bound(&l.name, addr);
                    bound.push((active.clone(), s));
                }
                Err(e) => {
                    eprintln!(
                        "error: cannot bind listener {} on {}: {e}",
                        l.name, l.address
                    );
                    return 1;
                }
            }
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
    for (active, sock) in bound {
        if let Ok(a) = sock.local_addr() {
            tracing::info!("listener {} serving on {a}", active.config.name);
        }
        tokio::spawn(active.accept_loop(server.clone(), sock));
    }
    server
        .stats
        .gauge("listener_manager.total_listeners_active")
        .set(config.listeners.len() as i64);
    server
        .stats
        .gauge("listener_manager.workers_started")
        .set(1);
    if let Some(admin) = admin {
        if let Ok(a) = admin.local_addr() {
            tracing::info!("admin address: {a}");
            if !opts.admin_address_path.is_empty()
                && let Err(e) = std::fs::write(&opts.admin_address_path, a.to_string())
            {
                eprintln!(
                    "error: cannot write admin address to {}: {e}",
                    opts.admin_address_path
                );
                return 1;
            }
        }
        tokio::spawn(crate::admin::serve(server.clone(), admin));
    }
    crate::admin::set_live(&server);
    if !server.sinks.is_empty() {
        tokio::spawn(flush_sinks(server.clone()));
    }
    wait_for_shutdown(&server).await;
    tracing::info!("draining for {}s", opts.drain_time_s);
    server.start_drain();
    drain_wait(Duration::from_secs(opts.drain_time_s)).await;
    tracing::info!("exiting");
    0
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
        server
            .stats
            .gauge("server.uptime")
            .set(server.uptime() as i64);
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
