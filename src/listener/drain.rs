//! Draining, as Envoy's drain manager does it: once draining starts, connections are
//! discouraged (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY) at once (`immediate`) or with a
//! probability that grows over the drain time (`gradual`).

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::bootstrap::cli::DrainStrategy;

/// One listener's drain state.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<Option<Instant>>,
    strategy: DrainStrategy,
    time: Duration,
}

/// A connection's view of its listener's drain state.
#[derive(Debug, Clone)]
pub struct DrainWatch {
    rx: watch::Receiver<Option<Instant>>,
    strategy: DrainStrategy,
    time: Duration,
}

impl Drain {
    /// A drain state that is not draining.
    pub fn new(strategy: DrainStrategy, time: Duration) -> Self {
        Self {
            tx: watch::channel(None).0,
            strategy,
            time,
        }
    }

    /// Starts draining (idempotent: the first start time stays).
    pub fn start(&self) {
        self.tx.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(Instant::now());
                true
            } else {
                false
            }
        });
    }

    /// Whether draining started.
    pub fn draining(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// A watch for one connection.
    pub fn subscribe(&self) -> DrainWatch {
        DrainWatch {
            rx: self.tx.subscribe(),
            strategy: self.strategy,
            time: self.time,
        }
    }
}

impl DrainWatch {
    /// Whether this response should close its connection, per the drain strategy.
    pub fn should_close(&self) -> bool {
        let Some(start) = *self.rx.borrow() else {
            return false;
        };
        close_now(self.strategy, self.time, start.elapsed(), fastrand::f64())
    }

    /// Completes when this connection should be told to go away.
    pub async fn wait_close(&mut self) {
        let Ok(start) = self
            .rx
            .wait_for(Option::is_some)
            .await
            .map(|s| s.unwrap_or_else(Instant::now))
        else {
            return std::future::pending().await;
        };
        if self.strategy == DrainStrategy::Gradual {
            let at = start + self.time.mul_f64(fastrand::f64());
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

/// The drain decision: immediate closes at once; gradual closes with probability
/// elapsed / drain time.
pub fn close_now(strategy: DrainStrategy, time: Duration, elapsed: Duration, r: f64) -> bool {
    match strategy {
        DrainStrategy::Immediate => true,
        DrainStrategy::Gradual => time.is_zero() || elapsed.as_secs_f64() / time.as_secs_f64() > r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradual_probability_grows() {
        let t = Duration::from_secs(10);
        assert!(!close_now(
            DrainStrategy::Gradual,
            t,
            Duration::from_secs(1),
            0.5
        ));
        assert!(close_now(
            DrainStrategy::Gradual,
            t,
            Duration::from_secs(6),
            0.5
        ));
        assert!(close_now(DrainStrategy::Immediate, t, Duration::ZERO, 0.99));
    }
}
