//! When the router stops waiting for an upstream's response head: at the route timeout or the
//! stream idle timeout, whichever is shorter, and at the request timeout while the request is
//! still being received (once it was received whole, that one no longer applies). One timer
//! serves all three.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Which limit ended the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The route's `timeout`.
    Route,
    /// The stream idle timeout (the route's `idle_timeout` or the HCM's
    /// `stream_idle_timeout`).
    Idle,
    /// The HCM's `request_timeout`, before the request was received whole.
    Request,
}

/// The limits of one wait for a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    response: Option<(Instant, Expired)>,
    request: Option<Instant>,
}

impl Deadlines {
    /// The limits of a wait that starts at `start`: the route timeout, the stream idle
    /// timeout and the request's own deadline (None: no such limit).
    pub fn new(
        start: Instant,
        route: Option<Duration>,
        idle: Option<Duration>,
        request: Option<Instant>,
    ) -> Self {
        let response = match (route, idle) {
            (Some(t), Some(i)) if i < t => Some((start + i, Expired::Idle)),
            (Some(t), _) => Some((start + t, Expired::Route)),
            (None, Some(i)) => Some((start + i, Expired::Idle)),
            (None, None) => None,
        };
        Deadlines { response, request }
    }

    /// When the timer should next fire.
    pub fn next(&self) -> Option<Instant> {
        match (self.response, self.request) {
            (Some((r, _)), Some(q)) => Some(r.min(q)),
            (Some((r, _)), None) => Some(r),
            (None, q) => q,
        }
    }

    /// The timer fired at `now`: which limit expired, if any. The request deadline is dropped
    /// once `request_done`.
    pub fn fired(&mut self, now: Instant, request_done: bool) -> Option<Expired> {
        if let Some(q) = self.request
            && q <= now
        {
            if !request_done {
                return Some(Expired::Request);
            }
            self.request = None;
        }
        match self.response {
            Some((at, which)) if at <= now => Some(which),
            _ => None,
        }
    }
}

/// Polls `exchange` until it completes, or until one of `deadlines` expires. `request_done`
/// tells whether the request was received whole.
pub async fn bounded<F: Future>(
    mut exchange: Pin<&mut F>,
    mut deadlines: Deadlines,
    request_done: impl Fn() -> bool,
) -> Result<F::Output, Expired> {
    let mut timer = std::pin::pin!(
        deadlines
            .next()
            .map(|at| tokio::time::sleep_until(at.into()))
    );
    poll_fn(|cx| {
        if let Poll::Ready(out) = exchange.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        while let Some(mut sleep) = timer.as_mut().as_pin_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                break;
            }
            let at = sleep.deadline().into_std().max(Instant::now());
            if let Some(which) = deadlines.fired(at, request_done()) {
                return Poll::Ready(Err(which));
            }
            match deadlines.next() {
                Some(next) => sleep.reset(next.into()),
                None => timer.set(None),
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn shorter_of_route_and_idle_timeouts() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0, Some(15 * S), Some(2 * S), None);
        assert_eq!(d.next(), Some(t0 + 2 * S));
        assert_eq!(d.fired(t0 + 2 * S, true), Some(Expired::Idle));
        let mut d = Deadlines::new(t0, Some(S), Some(2 * S), None);
        assert_eq!(d.fired(t0, true), None);
        assert_eq!(d.fired(t0 + S, true), Some(Expired::Route));
        assert_eq!(Deadlines::new(t0, None, None, None).next(), None);
    }

    #[test]
    fn request_deadline_applies_until_the_request_is_received() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0, Some(10 * S), None, Some(t0 + S));
        assert_eq!(d.next(), Some(t0 + S));
        let mut copy = d;
        assert_eq!(copy.fired(t0 + S, false), Some(Expired::Request));
        assert_eq!(d.fired(t0 + S, true), None);
        assert_eq!(
            d.next(),
            Some(t0 + 10 * S),
            "only the route timeout is left"
        );
    }

    #[tokio::test]
    async fn bounded_wait_ends_at_the_first_deadline_that_counts() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut never = std::pin::pin!(std::future::pending::<()>());
        // The request deadline passes first, but the request is whole: the route timeout ends
        // the wait.
        let d = Deadlines::new(t0, Some(ms(60)), None, Some(t0 + ms(10)));
        let r = bounded(never.as_mut(), d, || true).await;
        assert_eq!(r, Err(Expired::Route));
        assert!(t0.elapsed() >= ms(60), "{:?}", t0.elapsed());
        let d = Deadlines::new(Instant::now(), Some(10 * S), None, Some(Instant::now()));
        assert_eq!(
            bounded(never.as_mut(), d, || false).await,
            Err(Expired::Request)
        );
        let mut ready = std::pin::pin!(async { 7 });
        assert_eq!(bounded(ready.as_mut(), d, || false).await, Ok(7));
    }
}
