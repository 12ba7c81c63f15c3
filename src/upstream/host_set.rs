//! Host sets by priority, with Envoy's priority load (overprovisioning factor) and panic
//! threshold. Pure: built once per membership change, read per request.

use std::sync::Arc;

/// What the host set needs of a host.
pub trait HostHealth {
    /// Whether it takes traffic outside panic mode.
    fn healthy(&self) -> bool;
}

/// Hosts of one priority level.
#[derive(Debug)]
pub struct Priority<H> {
    /// Every host of the level.
    pub all: Vec<Arc<H>>,
    /// Its healthy hosts.
    pub healthy: Vec<Arc<H>>,
    /// Load percentage assigned to this level (0..=100).
    pub load: u32,
    /// Whether the level is in panic mode (balances across all its hosts).
    pub panic: bool,
}

/// A cluster's hosts, grouped by priority (index = priority).
#[derive(Debug)]
pub struct HostSet<H> {
    /// The levels, lowest priority number first.
    pub priorities: Vec<Priority<H>>,
}

impl<H> Default for HostSet<H> {
    fn default() -> Self {
        Self {
            priorities: Vec::new(),
        }
    }
}

impl<H: HostHealth> HostSet<H> {
    /// Groups `hosts` (with their priority) and computes loads; `panic_threshold` and
    /// `overprovisioning` are percentages (0 disables panic mode; Envoy's default
    /// overprovisioning factor is 140).
    pub fn new(hosts: Vec<(u32, Arc<H>)>, panic_threshold: f64, overprovisioning: u32) -> Self {
        let levels = hosts
            .iter()
            .map(|(p, _)| *p as usize + 1)
            .max()
            .unwrap_or(0);
        let mut priorities: Vec<Priority<H>> = (0..levels)
            .map(|_| Priority {
                all: Vec::new(),
                healthy: Vec::new(),
                load: 0,
                panic: false,
            })
            .collect();
        for (p, h) in hosts {
            let level = &mut priorities[p as usize];
            if h.healthy() {
                level.healthy.push(h.clone());
            }
            level.all.push(h);
        }
        for level in &mut priorities {
            // Kept until the next membership change, for every cluster: no spare room.
            level.all.shrink_to_fit();
            level.healthy.shrink_to_fit();
        }
        let health: Vec<u64> = priorities
            .iter()
            .map(|l| {
                if l.all.is_empty() {
                    0
                } else {
                    (overprovisioning as u64 * l.healthy.len() as u64 * 100
                        / (100 * l.all.len() as u64))
                        .min(100)
                }
            })
            .collect();
        let total: u64 = health.iter().sum::<u64>().min(100);
        if total == 0 {
            // Nothing is healthy anywhere: everything goes to the first non-empty level.
            if let Some(l) = priorities.iter_mut().find(|l| !l.all.is_empty()) {
                l.load = 100;
            }
        } else {
            let mut left = 100u64;
            for (l, h) in priorities.iter_mut().zip(&health) {
                // Normalized when the total health is below 100%.
                let want = (h * 100).div_ceil(total).min(left);
                l.load = want as u32;
                left -= want;
            }
        }
        for l in &mut priorities {
            if !l.all.is_empty() {
                let healthy_pct = l.healthy.len() as f64 * 100.0 / l.all.len() as f64;
                l.panic = panic_threshold > 0.0 && healthy_pct < panic_threshold;
            }
        }
        Self { priorities }
    }

    /// The hosts to balance over for a request, given a uniform random number; None when the
    /// cluster has no host.
    pub fn candidates(&self, r: u64) -> Option<&[Arc<H>]> {
        let level = if self.priorities.len() == 1 {
            &self.priorities[0]
        } else {
            let mut ticket = (r % 100) as u32;
            self.priorities.iter().find(|l| {
                if ticket < l.load {
                    true
                } else {
                    ticket -= l.load;
                    false
                }
            })?
        };
        let hosts = if level.panic || level.healthy.is_empty() {
            &level.all
        } else {
            &level.healthy
        };
        (!hosts.is_empty()).then_some(hosts.as_slice())
    }

    /// Number of hosts and of healthy hosts.
    pub fn counts(&self) -> (usize, usize) {
        self.priorities
            .iter()
            .fold((0, 0), |(a, h), l| (a + l.all.len(), h + l.healthy.len()))
    }

    /// Every host, by priority.
    pub fn all(&self) -> impl Iterator<Item = &Arc<H>> {
        self.priorities.iter().flat_map(|l| l.all.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct H(bool);
    impl HostHealth for H {
        fn healthy(&self) -> bool {
            self.0
        }
    }

    fn set(spec: &[(u32, bool)], panic: f64) -> HostSet<H> {
        set_with(spec, panic, 140)
    }

    fn set_with(spec: &[(u32, bool)], panic: f64, overprovisioning: u32) -> HostSet<H> {
        HostSet::new(
            spec.iter().map(|(p, h)| (*p, Arc::new(H(*h)))).collect(),
            panic,
            overprovisioning,
        )
    }

    #[test]
    fn healthy_first_priority_takes_everything() {
        let s = set(&[(0, true), (0, true), (1, true)], 50.0);
        assert_eq!(s.priorities[0].load, 100);
        assert_eq!(s.priorities[1].load, 0);
    }

    #[test]
    fn degraded_priority_spills_over() {
        // P0 half healthy: 0.5 * 1.4 = 70% stays, 30% spills to P1.
        let s = set(&[(0, true), (0, false), (1, true)], 0.0);
        assert_eq!(s.priorities[0].load, 70);
        assert_eq!(s.priorities[1].load, 30);
    }

    #[test]
    fn overprovisioning_factor_scales_spill_over() {
        // P0 half healthy with factor 1.0: only 50% stays.
        let s = set_with(&[(0, true), (0, false), (1, true)], 0.0, 100);
        assert_eq!(s.priorities[0].load, 50);
        assert_eq!(s.priorities[1].load, 50);
    }

    #[test]
    fn panic_mode_uses_all_hosts() {
        let s = set(&[(0, true), (0, false), (0, false)], 50.0);
        assert!(s.priorities[0].panic);
        assert_eq!(s.candidates(0).unwrap().len(), 3);
        let s = set(&[(0, true), (0, false), (0, false)], 0.0);
        assert_eq!(s.candidates(0).unwrap().len(), 1);
    }

    #[test]
    fn empty_set_has_no_candidates() {
        assert!(set(&[], 50.0).candidates(0).is_none());
    }
}
