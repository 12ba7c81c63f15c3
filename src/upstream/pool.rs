//! Connection pools, one per host: HTTP/1.1 keep-alive connections (one request at a time each,
//! driven inline by `super::http1`) and one multiplexed HTTP/2 connection. The cluster's max_connections and
//! max_pending_requests circuit breakers bound what opens and what waits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Notify;

use super::connect::{ConnectError, Target, connect};
use super::http1::Conn;
use super::stats::ClusterStats;
use crate::config::cluster::Cluster;

/// The body type sent upstream.
pub type UpstreamBody = BoxBody<Bytes, crate::http::BoxError>;

/// Connection limits shared by every host of a cluster.
#[derive(Debug, Default)]
pub struct ConnLimits {
    /// Connections open.
    pub open: AtomicU64,
    /// Requests waiting for a connection.
    pub pending: AtomicU64,
    /// Signalled when a connection is released or closed.
    pub released: Notify,
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Connect failed or timed out.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The HTTP handshake failed.
    #[error("upstream handshake failed: {0}")]
    Handshake(hyper::Error),
    /// max_pending_requests was reached.
    #[error("pending request overflow")]
    PendingOverflow,
}

/// A host's pool.
#[derive(Debug)]
pub struct Pool {
    cluster: Arc<Cluster>,
    stats: Arc<ClusterStats>,
    limits: Arc<ConnLimits>,
    target: Target,
    tls: Option<Arc<crate::config::tls::UpstreamTls>>,
    /// The SNI its connections send instead of the context's (auto_sni).
    sni: Option<rustls_pki_types::ServerName<'static>>,
    idle_h1: Mutex<Vec<Conn>>,
    h2: tokio::sync::Mutex<Option<H2Slot>>,
}

/// The pooled HTTP/2 connection: its sender, streams opened on it, and what logs print of it.
type H2Slot = (
    http2::SendRequest<UpstreamBody>,
    u32,
    super::connect::ConnFacts,
);

/// An HTTP/1.1 connection handed to hyper for a request that may upgrade; never pooled again.
#[derive(Debug)]
pub struct H1Conn {
    /// The sender.
    pub sender: http1::SendRequest<UpstreamBody>,
    /// Its local address and the upstream's identity.
    pub facts: super::connect::ConnFacts,
}

impl Pool {
    /// A pool for `target`.
    pub fn new(
        cluster: Arc<Cluster>,
        stats: Arc<ClusterStats>,
        limits: Arc<ConnLimits>,
        target: Target,
        tls: Option<Arc<crate::config::tls::UpstreamTls>>,
    ) -> Self {
        Self {
            cluster,
            stats,
            limits,
            target,
            tls,
            sni: None,
            idle_h1: Mutex::new(Vec::new()),
            h2: tokio::sync::Mutex::new(None),
        }
    }

    /// The same pool for connections that send `sni` (auto_sni).
    pub fn with_sni(mut self, sni: rustls_pki_types::ServerName<'static>) -> Self {
        self.sni = Some(sni);
        self
    }

    /// Checks out an idle HTTP/1.1 connection or opens one, waiting (as a pending request)
    /// while the cluster is at max_connections.
    pub async fn acquire_h1(&self) -> Result<Conn, PoolError> {
        if let Some(c) = self.pop_idle() {
            return Ok(c);
        }
        // No ready connection: the request is pending (while a connection opens, or while it
        // waits for one at max_connections), as Envoy counts it.
        let _pending = self.enter_pending()?;
        let mut overflowed = false;
        loop {
            let open = self.limits.open.load(Ordering::Acquire);
            if open < self.cluster.thresholds.max_connections {
                return self.open_h1().await;
            }
            if !overflowed {
                overflowed = true;
                self.stats.upstream_cx_overflow().inc();
                self.stats.gauges.cb_cx_open().set(1);
            }
            let notified = self.limits.released.notified();
            if let Some(c) = self.pop_idle() {
                return Ok(c);
            }
            notified.await;
            if let Some(c) = self.pop_idle() {
                return Ok(c);
            }
        }
    }

    /// An HTTP/1.1 connection for a request that may upgrade: a pooled or new one, handed to
    /// hyper, which relays the bytes after a 101.
    pub async fn acquire_upgradable(&self) -> Result<H1Conn, PoolError> {
        let conn = self.acquire_h1().await?;
        Box::pin(conn.into_upgradable())
            .await
            .map_err(PoolError::Handshake)
    }

    /// Counts a request as pending under max_pending_requests, or refuses it.
    fn enter_pending(&self) -> Result<PendingGuard<'_>, PoolError> {
        let waiting = self.limits.pending.fetch_add(1, Ordering::AcqRel);
        if waiting >= self.cluster.thresholds.max_pending_requests {
            self.limits.pending.fetch_sub(1, Ordering::AcqRel);
            self.stats.upstream_rq_pending_overflow().inc();
            self.stats.gauges.cb_rq_pending_open().set(1);
            return Err(PoolError::PendingOverflow);
        }
        self.stats.upstream_rq_pending_total().inc();
        self.stats.upstream_rq_pending_active().inc();
        Ok(PendingGuard(self))
    }

    /// Returns a connection after its exchange completed.
    pub fn release_h1(&self, mut conn: Conn) {
        conn.requests += 1;
        let exhausted = self
            .cluster
            .max_requests_per_connection
            .is_some_and(|m| conn.requests >= m);
        if exhausted {
            return;
        }
        conn.idle_since = crate::clock::CoarseInstant::now();
        if let Ok(mut idle) = self.idle_h1.lock() {
            idle.push(conn);
        }
        self.limits.released.notify_one();
    }

    /// The host's HTTP/2 connection, opened on first use and reopened when it closes.
    pub async fn acquire_h2(
        &self,
    ) -> Result<(http2::SendRequest<UpstreamBody>, super::connect::ConnFacts), PoolError> {
        let mut slot = self.h2.lock().await;
        let max = self.cluster.max_requests_per_connection;
        if let Some((s, streams, facts)) = slot.as_mut()
            && !s.is_closed()
        {
            let sender = (s.clone(), facts.clone());
            *streams += 1;
            // A connection that reached max_requests_per_connection takes no new streams; it
            // closes once its open streams finish.
            if max.is_some_and(|m| *streams >= m) {
                slot.take();
            }
            return Ok(sender);
        }
        let _pending = self.enter_pending()?;
        if self.limits.open.load(Ordering::Acquire) >= self.cluster.thresholds.max_connections {
            self.stats.upstream_cx_overflow().inc();
        }
        let stream = self.open_stream().await?;
        let facts = stream.facts();
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.timer(hyper_util::rt::TokioTimer::new());
        if let Some(w) = self.cluster.http2_initial_stream_window_size {
            builder.initial_stream_window_size(w);
        }
        if let Some(w) = self.cluster.http2_initial_connection_window_size {
            builder.initial_connection_window_size(w);
        }
        let (sender, conn) = match Box::pin(builder.handshake(TokioIo::new(stream))).await {
            Ok(v) => v,
            Err(e) => {
                self.connection_closed();
                return Err(PoolError::Handshake(e));
            }
        };
        self.stats.upstream_cx_http2_total().inc();
        let guard = CloseGuard {
            pool_stats: self.stats.clone(),
            limits: self.limits.clone(),
        };
        tokio::spawn(async move {
            let _ = conn.await;
            drop(guard);
        });
        if max.is_none_or(|m| m > 1) {
            *slot = Some((sender.clone(), 1, facts.clone()));
        }
        Ok((sender, facts))
    }

    fn pop_idle(&self) -> Option<Conn> {
        let mut idle = self.idle_h1.lock().ok()?;
        while let Some(mut c) = idle.pop() {
            let expired = self
                .cluster
                .idle_timeout
                .is_some_and(|t| c.idle_since.elapsed() >= t);
            if !expired && c.still_open() {
                return Some(c);
            }
        }
        None
    }

    /// Closes pooled HTTP/1.1 connections idle longer than the cluster's idle_timeout; returns
    /// how many it closed.
    pub fn close_idle(&self) -> usize {
        let Some(timeout) = self.cluster.idle_timeout else {
            return 0;
        };
        let Ok(mut idle) = self.idle_h1.lock() else {
            return 0;
        };
        let before = idle.len();
        idle.retain_mut(|c| c.idle_since.elapsed() < timeout && c.still_open());
        before - idle.len()
    }

    async fn open_h1(&self) -> Result<Conn, PoolError> {
        let stream = self.open_stream().await?;
        self.stats.upstream_cx_http1_total().inc();
        let close = CloseGuard {
            pool_stats: self.stats.clone(),
            limits: self.limits.clone(),
        };
        Ok(Conn::new(stream, self.stats.clone(), close))
    }

    async fn open_stream(&self) -> Result<super::connect::UpstreamStream, PoolError> {
        self.limits.open.fetch_add(1, Ordering::AcqRel);
        // Boxed: connecting (and the TLS handshake) is rare next to reusing a connection, and
        // kept inline its state would size every request's future.
        let result = Box::pin(connect(
            &self.target,
            &self.cluster,
            self.tls.as_deref(),
            self.sni.as_ref(),
        ))
        .await;
        self.stats.count_tls(&result);
        match result {
            Ok(s) => {
                self.stats.upstream_cx_total().inc();
                self.stats.upstream_cx_active().inc();
                Ok(s)
            }
            Err(e) => {
                self.limits.open.fetch_sub(1, Ordering::AcqRel);
                self.limits.released.notify_one();
                self.stats.upstream_cx_connect_fail().inc();
                if matches!(e, ConnectError::Timeout) {
                    self.stats.upstream_cx_connect_timeout().inc();
                }
                Err(e.into())
            }
        }
    }

    fn connection_closed(&self) {
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
        self.stats.upstream_cx_active().dec();
        self.stats.upstream_cx_destroy().inc();
        self.limits.released.notify_one();
    }
}

/// A request waiting for a connection; leaving the queue when dropped.
struct PendingGuard<'a>(&'a Pool);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let waiting = self.0.limits.pending.fetch_sub(1, Ordering::AcqRel);
        self.0.stats.upstream_rq_pending_active().dec();
        if waiting <= self.0.cluster.thresholds.max_pending_requests {
            self.0.stats.gauges.cb_rq_pending_open().set(0);
        }
    }
}

/// Accounts a connection's close when dropped (with the connection, or when its driver task
/// ends).
#[derive(Debug)]
pub struct CloseGuard {
    pool_stats: Arc<ClusterStats>,
    limits: Arc<ConnLimits>,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
        self.pool_stats.upstream_cx_active().dec();
        self.pool_stats.upstream_cx_destroy().inc();
        self.pool_stats.gauges.cb_cx_open().set(0);
        self.limits.released.notify_one();
    }
}
