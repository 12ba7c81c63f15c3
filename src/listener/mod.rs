//! Listeners: bind (one SO_REUSEPORT socket per worker), accept, pick the filter chain, run its
//! network filters.

pub mod client_hello;
pub mod drain;
pub mod filter_chain_match;
pub mod http_inspector;
pub mod manager;
pub mod peek;
pub mod stream;
pub mod tls_inspector;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};

use crate::config::filters::NetworkFilter;
use crate::config::listener::{FilterChain, Listener};
use crate::http::conn_manager::HttpConnectionManager;
use crate::network::connection_info::ConnectionInfo;
use crate::network::tcp_proxy::TcpProxy;
use crate::server::Server;
use crate::stats::{Counter, Gauge};
use filter_chain_match::{ConnectionFacts, select};
use stream::DownstreamStream;

/// A chain ready to serve: its transport socket and its terminal filter, with per-config
/// state built once.
#[derive(Debug)]
struct ActiveChain {
    terminal: Terminal,
    tls: Option<Arc<crate::config::tls::DownstreamTls>>,
    handshake_timeout: Option<std::time::Duration>,
}

#[derive(Debug)]
enum Terminal {
    Http(Arc<HttpConnectionManager>),
    Tcp(Arc<TcpProxy>),
}

/// A listener at run time.
#[derive(Debug)]
pub struct ActiveListener {
    /// Its config.
    pub config: Arc<Listener>,
    chains: Vec<ActiveChain>,
    default_chain: Option<ActiveChain>,
    stats: ListenerStats,
    tls_stats: Option<crate::tls::server::TlsStats>,
    inspector_stats: Option<tls_inspector::InspectorStats>,
    http_inspector_stats: Option<http_inspector::HttpInspectorStats>,
    /// Drain state of its connections.
    pub drain: drain::Drain,
    /// Set to stop accepting.
    stop: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug)]
struct ListenerStats {
    downstream_cx_total: Arc<Counter>,
    downstream_cx_active: Arc<Gauge>,
    downstream_cx_destroy: Arc<Counter>,
    no_filter_chain_match: Arc<Counter>,
    downstream_cx_overflow: Arc<Counter>,
    downstream_pre_cx_timeout: Arc<Counter>,
}

/// Global downstream connection count (overload manager limit).
pub static ACTIVE_DOWNSTREAM: AtomicU64 = AtomicU64::new(0);

impl ActiveListener {
    /// Builds the per-config state of every chain.
    pub fn new(config: Arc<Listener>, server: &Arc<Server>) -> Arc<Self> {
        let mk = |c: &Arc<FilterChain>| ActiveChain {
            terminal: match c.filters.last() {
                Some(NetworkFilter::HttpConnectionManager(h)) => {
                    Terminal::Http(Arc::new(HttpConnectionManager::new(h.clone(), server)))
                }
                Some(NetworkFilter::TcpProxy(t)) => {
                    Terminal::Tcp(Arc::new(TcpProxy::new(t.clone(), server)))
                }
                None => unreachable_chain(),
            },
            tls: c.tls.clone(),
            handshake_timeout: c.transport_socket_connect_timeout,
        };
        let p = format!("listener.{}.", config.stat_prefix);
        let s = &server.stats;
        let any_tls = config
            .filter_chains
            .iter()
            .chain(config.default_filter_chain.iter())
            .any(|c| c.tls.is_some());
        Arc::new(Self {
            tls_stats: any_tls.then(|| crate::tls::server::TlsStats::new(s, &p)),
            inspector_stats: config
                .listener_filters
                .tls_inspector
                .as_ref()
                .map(|_| tls_inspector::InspectorStats::new(s)),
            http_inspector_stats: config
                .listener_filters
                .http_inspector
                .as_ref()
                .map(|_| http_inspector::HttpInspectorStats::new(s)),
            chains: config.filter_chains.iter().map(mk).collect(),
            default_chain: config.default_filter_chain.as_ref().map(mk),
            stats: ListenerStats {
                downstream_cx_total: s.counter(&format!("{p}downstream_cx_total")),
                downstream_cx_active: s.gauge(&format!("{p}downstream_cx_active")),
                downstream_cx_destroy: s.counter(&format!("{p}downstream_cx_destroy")),
                no_filter_chain_match: s.counter(&format!("{p}no_filter_chain_match")),
                downstream_cx_overflow: s.counter(&format!("{p}downstream_cx_overflow")),
                downstream_pre_cx_timeout: s.counter(&format!("{p}downstream_pre_cx_timeout")),
            },
            drain: drain::Drain::new(server.drain_strategy, server.drain_time),
            stop: tokio::sync::watch::channel(false).0,
            config,
        })
    }

    /// Stops accepting new connections (existing ones continue).
    pub fn stop_accepting(&self) {
        let _ = self.stop.send(true);
    }

    /// The RDS providers its connection managers read.
    pub fn rds_providers(&self) -> Vec<Arc<crate::http::rds::RdsProvider>> {
        self.chains
            .iter()
            .chain(self.default_chain.iter())
            .filter_map(|c| match &c.terminal {
                Terminal::Http(h) => h.rds().cloned(),
                Terminal::Tcp(_) => None,
            })
            .collect()
    }

    /// The secrets its filter chains' TLS contexts read.
    pub fn secrets(&self) -> Vec<Arc<crate::tls::secret::SecretSlot>> {
        let mut v: Vec<_> = self
            .chains
            .iter()
            .chain(self.default_chain.iter())
            .filter_map(|c| c.tls.as_ref())
            .flat_map(|t| t.secrets())
            .collect();
        v.sort_by_key(|s| Arc::as_ptr(s) as usize);
        v.dedup_by(|a, b| Arc::ptr_eq(a, b));
        v
    }

    /// Accepts until the server drains.
    pub async fn accept_loop(self: Arc<Self>, server: Arc<Server>, listener: TcpListener) {
        let mut stop = self.stop.subscribe();
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = async { stop.wait_for(|d| *d).await.map(|_| ()) } => return,
            };
            let (stream, remote) = match accepted {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(listener = %self.config.name, "accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            if !self.config.ignore_global_conn_limit
                && let Some(max) = server.config.max_downstream_connections
                && ACTIVE_DOWNSTREAM.load(Ordering::Relaxed) >= max
            {
                self.stats.downstream_cx_overflow.inc();
                continue;
            }
            let this = self.clone();
            let server = server.clone();
            tokio::spawn(async move { this.serve(server, stream, remote).await });
        }
    }

    async fn serve(self: Arc<Self>, server: Arc<Server>, stream: TcpStream, remote: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(self.config.address);
        let mut conn = ConnectionInfo::accepted(local, remote);
        if let Some(od) = &self.config.listener_filters.original_dst
            && !od
                .disabled
                .as_ref()
                .is_some_and(|p| p.matches(local.port()))
            && let Some(dst) = crate::sys::original_dst(&stream)
        {
            conn.restore_local(dst);
        }
        // use_original_dst: the listener of the original destination takes the connection
        // over, with its own listener filters and chains.
        if self.config.use_original_dst
            && conn.local_restored
            && let Some(target) = server.listeners.find_by_address(conn.local)
            && !Arc::ptr_eq(&target, &self)
        {
            return target.serve_connection(server, stream, conn).await;
        }
        self.serve_connection(server, stream, conn).await
    }

    /// Runs the listener filters, picks the filter chain and serves the connection on it.
    async fn serve_connection(
        self: Arc<Self>,
        server: Arc<Server>,
        stream: TcpStream,
        conn: ConnectionInfo,
    ) {
        let (local, remote) = (conn.local, conn.remote);
        let Some(found) = self.run_listener_filters(&stream, local).await else {
            return;
        };
        let hello = found.hello.as_ref();
        let http: [String; 1];
        let application_protocols: &[String] = match (hello, found.http) {
            (Some(h), _) => &h.alpn,
            (None, Some(p)) => {
                http = [p.to_string()];
                &http
            }
            (None, None) => &[],
        };
        let facts = ConnectionFacts {
            local,
            remote,
            direct_remote: remote,
            server_name: hello.and_then(|h| h.sni.as_deref()),
            transport_protocol: if hello.is_some() { "tls" } else { "raw_buffer" },
            application_protocols,
        };
        let matches: Vec<_> = self
            .config
            .filter_chains
            .iter()
            .map(|c| &c.matcher)
            .collect();
        let chain = match select(&matches, &facts) {
            Some(i) => &self.chains[i],
            None => match &self.default_chain {
                Some(c) => c,
                None => {
                    self.stats.no_filter_chain_match.inc();
                    return;
                }
            },
        };
        self.stats.downstream_cx_total.inc();
        self.stats.downstream_cx_active.inc();
        ACTIVE_DOWNSTREAM.fetch_add(1, Ordering::Relaxed);
        let stream = match (&chain.tls, &self.tls_stats) {
            (Some(tls), Some(stats)) => {
                crate::tls::server::accept(tls, stats, stream, chain.handshake_timeout).await
            }
            _ => Some(DownstreamStream::Plain(stream)),
        };
        if let Some(stream) = stream {
            match &chain.terminal {
                Terminal::Http(h) => {
                    h.clone()
                        .serve(server, stream, conn, self.drain.subscribe())
                        .await
                }
                Terminal::Tcp(t) => t.clone().serve(server, stream, conn).await,
            }
        }
        ACTIVE_DOWNSTREAM.fetch_sub(1, Ordering::Relaxed);
        self.stats.downstream_cx_active.dec();
        self.stats.downstream_cx_destroy.inc();
    }
}

/// What the listener filters learned of a connection.
#[derive(Debug, Default)]
struct Inspected {
    /// The ClientHello, when the connection is TLS.
    hello: Option<client_hello::ClientHello>,
    /// The HTTP protocol http_inspector found on a plaintext connection.
    http: Option<&'static str>,
}

impl ActiveListener {
    /// Runs the listener filters (tls_inspector, then http_inspector on what is not TLS)
    /// within listener_filters_timeout. None: the connection is to be closed.
    async fn run_listener_filters(
        &self,
        stream: &TcpStream,
        local: SocketAddr,
    ) -> Option<Inspected> {
        let filters = &self.config.listener_filters;
        let port = local.port();
        let tls = filters
            .tls_inspector
            .as_ref()
            .filter(|ti| !ti.disabled.as_ref().is_some_and(|p| p.matches(port)));
        let http = filters
            .http_inspector
            .as_ref()
            .filter(|d| !d.as_ref().is_some_and(|p| p.matches(port)));
        if tls.is_none() && http.is_none() {
            return Some(Inspected::default());
        }
        let mut found = Inspected::default();
        let inspect = async {
            if let (Some(ti), Some(stats)) = (tls, &self.inspector_stats) {
                match tls_inspector::run(stream, ti, stats).await {
                    Ok(hello) => found.hello = hello,
                    Err(e) => {
                        tracing::debug!(listener = %self.config.name, "{e}");
                        return false;
                    }
                }
            }
            if found.hello.is_none()
                && http.is_some()
                && let Some(stats) = &self.http_inspector_stats
            {
                match http_inspector::run(stream, stats).await {
                    Ok(p) => found.http = p,
                    Err(()) => return false,
                }
            }
            true
        };
        let ok = match filters.timeout {
            Some(t) => match tokio::time::timeout(t, inspect).await {
                Ok(ok) => ok,
                Err(_) => {
                    self.stats.downstream_pre_cx_timeout.inc();
                    if !filters.continue_on_timeout {
                        return None;
                    }
                    // Go on with what the filters learned before the timeout.
                    true
                }
            },
            None => inspect.await,
        };
        ok.then_some(found)
    }
}

/// Binds one socket for a worker at `addr` (the configured address, or the port the first
/// worker's socket got when the configured port is 0).
pub fn bind(config: &Listener, addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if config.reuse_port {
        sock.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        sock.set_only_v6(false).ok();
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(config.backlog as i32)?;
    Ok(sock.into())
}

fn unreachable_chain() -> Terminal {
    // Conversion guarantees every chain ends in a terminal filter.
    panic!("filter chain without a terminal filter passed config conversion")
}
