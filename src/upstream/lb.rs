//! Load balancers: pure choices over a host list.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::cluster::LbPolicy;

/// What a balancer needs to know of a host.
pub trait LbHost {
    /// Its weight.
    fn weight(&self) -> u32;
    /// Its requests in flight.
    fn active_requests(&self) -> u64;
}

/// Balancer state shared by the workers.
#[derive(Debug, Default)]
pub struct LbState {
    next: AtomicUsize,
}

impl LbState {
    /// Picks an index into `hosts` (non-empty) by `policy`; `rand` yields uniform u64s.
    pub fn pick<H: LbHost>(
        &self,
        policy: LbPolicy,
        hosts: &[H],
        mut rand: impl FnMut() -> u64,
    ) -> usize {
        debug_assert!(!hosts.is_empty());
        let n = hosts.len();
        if n == 1 {
            return 0;
        }
        let total: u64 = hosts.iter().map(|h| h.weight() as u64).sum();
        let weighted = hosts.iter().any(|h| h.weight() != hosts[0].weight());
        match policy {
            // An ORIGINAL_DST cluster chooses its own host; its host set stays empty.
            LbPolicy::RoundRobin | LbPolicy::ClusterProvided if !weighted => {
                self.next.fetch_add(1, Ordering::Relaxed) % n
            }
            LbPolicy::RoundRobin | LbPolicy::ClusterProvided => {
                // Smooth enough weighted round robin: walk the cumulative weights with a ticket.
                let ticket = self.next.fetch_add(1, Ordering::Relaxed) as u64 % total.max(1);
                by_weight(hosts, ticket)
            }
            LbPolicy::Random => {
                if weighted {
                    by_weight(hosts, rand() % total.max(1))
                } else {
                    (rand() % n as u64) as usize
                }
            }
            LbPolicy::LeastRequest(choices) => {
                let mut best = (rand() % n as u64) as usize;
                for _ in 1..choices {
                    let c = (rand() % n as u64) as usize;
                    // With weights, Envoy divides weight by (active+1); compare cross-multiplied.
                    let score = |i: usize| {
                        (hosts[i].active_requests() + 1) as u128 * 1_000_000
                            / hosts[i].weight().max(1) as u128
                    };
                    if score(c) < score(best) {
                        best = c;
                    }
                }
                best
            }
        }
    }
}

fn by_weight<H: LbHost>(hosts: &[H], mut ticket: u64) -> usize {
    for (i, h) in hosts.iter().enumerate() {
        let w = h.weight() as u64;
        if ticket < w {
            return i;
        }
        ticket -= w;
    }
    hosts.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    struct H(u32, u64);
    impl LbHost for H {
        fn weight(&self) -> u32 {
            self.0
        }
        fn active_requests(&self) -> u64 {
            self.1
        }
    }

    #[test]
    fn round_robin_cycles() {
        let s = LbState::default();
        let hosts = [H(1, 0), H(1, 0), H(1, 0)];
        let picks: Vec<usize> = (0..6)
            .map(|_| s.pick(LbPolicy::RoundRobin, &hosts, || 0))
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weighted_round_robin_follows_weights() {
        let s = LbState::default();
        let hosts = [H(3, 0), H(1, 0)];
        let picks: Vec<usize> = (0..8)
            .map(|_| s.pick(LbPolicy::RoundRobin, &hosts, || 0))
            .collect();
        assert_eq!(picks.iter().filter(|p| **p == 0).count(), 6);
    }

    #[test]
    fn least_request_prefers_idle_host() {
        let s = LbState::default();
        let hosts = [H(1, 10), H(1, 0)];
        let mut r = [0u64, 1].into_iter().cycle();
        assert_eq!(
            s.pick(LbPolicy::LeastRequest(2), &hosts, || r.next().unwrap()),
            1
        );
    }
}
