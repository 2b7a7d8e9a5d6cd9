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

    /// Copies endpoint `from` of `old` (a policy reload's previous runtime) into endpoint `to`:
    /// an endpoint the new policy keeps unchanged stays ejected for the rest of its cooldown,
    /// instead of taking live traffic again because the policy changed elsewhere.
    pub fn inherit(&self, to: usize, old: &Health, from: usize) {
        let (Some(new), Some(prev)) = (self.slots.get(to), old.slots.get(from)) else {
            return;
        };
        let failures = prev.consecutive_failures.load(Ordering::Relaxed);
        new.consecutive_failures.store(failures, Ordering::Relaxed);
        let until = prev.ejected_until_ms.load(Ordering::Relaxed);
        if until > old.now_ms() {
            let left = until - old.now_ms();
            new.ejected_until_ms
                .store((self.now_ms() + left).max(1), Ordering::Relaxed);
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
    fn inherited_state_keeps_an_ejection_and_its_failure_count() {
        let old = Health::new(2, 2, Duration::from_secs(60));
        assert!(!old.failure(1));
        assert!(old.failure(1));
        assert!(!old.failure(0));
        let new = Health::new(3, 2, Duration::from_secs(60));
        new.inherit(2, &old, 1);
        new.inherit(0, &old, 0);
        assert!(!new.is_healthy(2), "still ejected after the reload");
        assert!(new.is_healthy(1), "a new endpoint starts healthy");
        // Endpoint 0 had one failure: one more ejects it.
        assert!(new.failure(0));
        // Out-of-range indices are ignored.
        new.inherit(9, &old, 0);
        new.inherit(0, &old, 9);
    }

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
