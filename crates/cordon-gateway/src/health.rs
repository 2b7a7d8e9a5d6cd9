//! Passive endpoint health: an endpoint that fails `eject_after` times in a row is ejected for
//! `cooldown`, then tried again (one success clears it). Lock-free atomics, one slot per endpoint
//! index of the running policy.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Health {
    epoch: Instant,
    eject_after: u32,
    cooldown: Duration,
    slots: Vec<Slot>,
}

#[derive(Default)]
struct Slot {
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the endpoint is ejected (0 = not ejected).
    ejected_until_ms: AtomicU64,
}

impl Health {
    pub fn new(endpoints: usize, eject_after: u32, cooldown: Duration) -> Health {
        Health {
            epoch: Instant::now(),
            eject_after: eject_after.max(1),
            cooldown,
            slots: (0..endpoints).map(|_| Slot::default()).collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Healthy, or ejected but past its cooldown (half-open: the next request probes it).
    pub fn is_healthy(&self, endpoint: usize) -> bool {
        self.slots
            .get(endpoint)
            .is_none_or(|s| s.ejected_until_ms.load(Ordering::Relaxed) <= self.now_ms())
    }

    pub fn success(&self, endpoint: usize) {
        if let Some(s) = self.slots.get(endpoint) {
            s.consecutive_failures.store(0, Ordering::Relaxed);
            s.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Returns true if this failure ejected the endpoint.
    pub fn failure(&self, endpoint: usize) -> bool {
        let Some(s) = self.slots.get(endpoint) else {
            return false;
        };
        let n = s.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.eject_after {
            let until = self.now_ms() + self.cooldown.as_millis() as u64;
            s.ejected_until_ms.store(until.max(1), Ordering::Relaxed);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_consecutive_failures_and_recovers_on_success() {
        let h = Health::new(2, 3, Duration::from_secs(60));
        assert!(!h.failure(0));
        assert!(!h.failure(0));
        h.success(0);
        assert!(!h.failure(0));
        assert!(!h.failure(0));
        assert!(h.failure(0));
        assert!(!h.is_healthy(0));
        assert!(h.is_healthy(1));
        h.success(0);
        assert!(h.is_healthy(0));
    }

    #[test]
    fn cooldown_zero_makes_it_half_open_at_once() {
        let h = Health::new(1, 1, Duration::ZERO);
        assert!(h.failure(0));
        // until = now + 0 (at least 1 ms after epoch); wait on the condition with a deadline.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !h.is_healthy(0) {
            assert!(Instant::now() < deadline, "endpoint never became half-open");
            std::thread::yield_now();
        }
    }
}
