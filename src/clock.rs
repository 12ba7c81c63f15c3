//! A coarse monotonic clock, for bookkeeping that tolerates a few milliseconds of error: when a
//! connection went idle, downstream or in an upstream pool. Timeouts measured with it are
//! seconds to hours long, and reading it costs less than a precise clock read, which matters
//! when it is read on every request.

use std::time::Duration;

/// A point on the coarse clock, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CoarseInstant(u64);

impl CoarseInstant {
    /// Now, to the kernel's tick (`CLOCK_MONOTONIC_COARSE`: a few milliseconds).
    pub fn now() -> CoarseInstant {
        CoarseInstant(now_ms())
    }

    /// The instant `ms` milliseconds after the clock's origin (as stored in an atomic).
    pub fn from_millis(ms: u64) -> CoarseInstant {
        CoarseInstant(ms)
    }

    /// Milliseconds since the clock's origin (to store in an atomic).
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// Time since this instant; zero if the clock reads earlier.
    pub fn elapsed(self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.0))
    }
}

/// Whole seconds since the Unix epoch on the coarse wall clock (`CLOCK_REALTIME_COARSE`), for
/// values shown to the second (the Date header).
pub fn unix_secs() -> u64 {
    #[cfg(target_os = "linux")]
    if let Ok(t) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME_COARSE) {
        return t.tv_sec() as u64;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(target_os = "linux")]
fn now_ms() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    match clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE) {
        Ok(t) => (t.tv_sec() as u64) * 1000 + (t.tv_nsec() as u64) / 1_000_000,
        // The coarse clock exists on every Linux since 2.6.32; this keeps the type total.
        Err(_) => fallback_ms(),
    }
}

#[cfg(not(target_os = "linux"))]
fn now_ms() -> u64 {
    fallback_ms()
}

/// Milliseconds on the precise monotonic clock since its first read in this process.
fn fallback_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_precise_clock_within_its_tick() {
        let start = CoarseInstant::now();
        let precise = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(60));
        let coarse = start.elapsed();
        let real = precise.elapsed();
        // The coarse clock moves in kernel ticks (at most 10 ms at HZ=100).
        assert!(
            coarse + Duration::from_millis(20) >= real,
            "{coarse:?} vs {real:?}"
        );
        assert!(
            coarse <= real + Duration::from_millis(20),
            "{coarse:?} vs {real:?}"
        );
        assert!(CoarseInstant::now() >= start);
        let stored = CoarseInstant::from_millis(start.as_millis());
        assert_eq!(stored, start);
    }

    #[test]
    fn unix_secs_is_the_wall_clock_to_its_tick() {
        let precise = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let coarse = unix_secs();
        assert!(coarse.abs_diff(precise) <= 1, "{coarse} vs {precise}");
    }
}
