//! Whether a cluster has initialized (its first hosts arrived, or waiting for them ended), as
//! Envoy's cluster initialization: set once, awaited by the start-up sequence. A flag and one
//! notifier held inline, where a watch channel would be an allocation of its own per cluster.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// A flag set once, which tasks can wait for.
#[derive(Debug, Default)]
pub struct Initialized {
    done: AtomicBool,
    notify: Notify,
}

impl Initialized {
    /// Marks it initialized and wakes every waiter.
    pub fn set(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    /// Whether it is initialized.
    pub fn get(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Completes once it is initialized.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a `set` between the two still wakes it.
            notified.as_mut().enable();
            if self.get() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn waiters_wake_when_it_is_set_and_later_waits_return_at_once() {
        let flag = Arc::new(Initialized::default());
        assert!(!flag.get());
        let waiter = tokio::spawn({
            let flag = flag.clone();
            async move { flag.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        flag.set();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .unwrap();
        assert!(flag.get());
        flag.wait().await;
    }
}
