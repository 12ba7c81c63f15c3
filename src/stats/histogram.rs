//! Fixed-bucket histograms: Envoy's default bucket bounds, or the bounds a
//! `histogram_bucket_settings` entry gives (milliseconds for times).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Envoy's default histogram bucket upper bounds.
pub const DEFAULT_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Receives every recorded value (a statsd sink sends them as timers).
pub trait HistogramSink: Send + Sync + std::fmt::Debug {
    /// Called once per recorded value.
    fn record(&self, name: &str, value: f64);
}

/// Counts of recorded values per bucket, plus the sum and total count.
#[derive(Debug)]
pub struct Histogram {
    bounds: Arc<[f64]>,
    /// Made on the first record: most of a large config's histograms never see a value.
    buckets: OnceLock<Box<[AtomicU64]>>,
    count: AtomicU64,
    sum_micros: AtomicU64,
    sink: Option<(String, Arc<dyn HistogramSink>)>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::with_bounds(Arc::from(&DEFAULT_BUCKETS[..]), None)
    }
}

impl Histogram {
    /// A histogram with the given bucket upper bounds (sorted ascending) and optional sink.
    pub fn with_bounds(bounds: Arc<[f64]>, sink: Option<(String, Arc<dyn HistogramSink>)>) -> Self {
        Self {
            buckets: OnceLock::new(),
            bounds,
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            sink,
        }
    }

    /// Records one value.
    pub fn record(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            let buckets = self
                .buckets
                .get_or_init(|| self.bounds.iter().map(|_| AtomicU64::new(0)).collect());
            buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1000.0).max(0.0) as u64, Ordering::Relaxed);
        if let Some((name, sink)) = &self.sink {
            sink.record(name, value);
        }
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The sum of recorded values.
    pub fn sum(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Cumulative counts per bucket bound, as Prometheus `_bucket{le=...}` lines want them.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        self.bounds
            .iter()
            .enumerate()
            .map(|(i, b)| {
                acc += self.bucket(i);
                (*b, acc)
            })
            .collect()
    }

    fn bucket(&self, i: usize) -> u64 {
        self.buckets
            .get()
            .map_or(0, |b| b[i].load(Ordering::Relaxed))
    }

    /// An estimate of quantile `q` (0..=1) by linear interpolation inside the bucket, or `None`
    /// when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let target = q * total as f64;
        let mut lower = 0.0;
        let mut seen = 0u64;
        for (i, bound) in self.bounds.iter().enumerate() {
            let c = self.bucket(i);
            if c > 0 && (seen + c) as f64 >= target {
                let frac = ((target - seen as f64) / c as f64).clamp(0.0, 1.0);
                return Some(lower + (bound - lower) * frac);
            }
            seen += c;
            lower = *bound;
        }
        Some(lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        let h = Histogram::default();
        for v in [0.2, 0.7, 3.0, 3.0] {
            h.record(v);
        }
        assert_eq!(h.count(), 4);
        let c = h.cumulative();
        assert_eq!(c[0], (0.5, 1));
        assert_eq!(c[1], (1.0, 2));
        assert_eq!(c[2], (5.0, 4));
        let p100 = h.quantile(1.0).unwrap();
        assert!(p100 > 1.0 && p100 <= 5.0);
        assert!(Histogram::default().quantile(0.5).is_none());
        assert!(
            Histogram::default()
                .cumulative()
                .iter()
                .all(|(_, c)| *c == 0)
        );
    }

    #[test]
    fn custom_bounds() {
        let h = Histogram::with_bounds(Arc::from(&[1.0, 10.0][..]), None);
        h.record(5.0);
        assert_eq!(h.cumulative(), vec![(1.0, 0), (10.0, 1)]);
    }
}
