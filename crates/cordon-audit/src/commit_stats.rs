//! What the writer measures about its own group commits, for the gateway's `/metrics`: how many
//! batches and records it committed, and how long each batch's `fdatasync` took (a fixed-bucket
//! histogram of atomics: one relaxed add per bucket bound crossed, no lock, no allocation).
//!
//! The fsync histogram is what `strict` durability is judged against ("adds no more than the
//! disk's own fsync p99"), measured on the store's own file under the real load instead of by a
//! separate probe. Its bounds ([`latency_bounds_us`]) are also the gateway's
//! `cordon_audit_wait_seconds` bounds, so the two compare bucket for bucket: fine where a sync
//! and a strict wait fall (25 µs steps to 1 ms, 100 µs steps to 5 ms), doubling beyond.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// 25 µs steps to 1 ms, then 100 µs steps to 5 ms, then 10 ms doubling to ~82 s (the last
/// bucket, +Inf, is implicit).
const FINE_STEPS: usize = 40;
const MID_STEPS: usize = 40;
const COARSE: usize = 14;
const BUCKETS: usize = FINE_STEPS + MID_STEPS + COARSE;

fn bound_us(i: usize) -> u64 {
    if i < FINE_STEPS {
        (i as u64 + 1) * 25
    } else if i < FINE_STEPS + MID_STEPS {
        1_000 + (i - FINE_STEPS + 1) as u64 * 100
    } else {
        10_000 << (i - FINE_STEPS - MID_STEPS)
    }
}

/// The upper bounds (µs, increasing, +Inf implicit) of the store's fsync histogram and of the
/// gateway's audit-wait histogram.
pub fn latency_bounds_us() -> impl Iterator<Item = u64> {
    (0..BUCKETS).map(bound_us)
}

/// Counters shared by a store's writer (which updates them) and its handle (which reads them).
pub(crate) struct CommitStats {
    records: AtomicU64,
    sync_ns: AtomicU64,
    /// Per bucket (not cumulative); index `BUCKETS` is the overflow (+Inf) bucket.
    sync_buckets: [AtomicU64; BUCKETS + 1],
}

impl CommitStats {
    pub(crate) fn new() -> Self {
        CommitStats {
            records: AtomicU64::new(0),
            sync_ns: AtomicU64::new(0),
            sync_buckets: [const { AtomicU64::new(0) }; BUCKETS + 1],
        }
    }

    /// One batch of `records` made durable by an `fdatasync` that took `sync`.
    pub(crate) fn batch(&self, records: usize, sync: Duration) {
        let us = u64::try_from(sync.as_micros()).unwrap_or(u64::MAX);
        let i = (0..BUCKETS).find(|&i| us <= bound_us(i)).unwrap_or(BUCKETS);
        self.sync_buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(sync.as_nanos()).unwrap_or(u64::MAX);
        self.sync_ns.fetch_add(ns, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
    }

    /// Batches committed: the histogram's count, so the two never disagree.
    pub(crate) fn batches(&self) -> u64 {
        self.sync_buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    pub(crate) fn snapshot(&self) -> CommitSnapshot {
        let sync_buckets: Vec<(f64, u64)> = (0..=BUCKETS)
            .map(|i| {
                let bound = if i < BUCKETS {
                    bound_us(i) as f64 / 1e6
                } else {
                    f64::INFINITY
                };
                (bound, self.sync_buckets[i].load(Ordering::Relaxed))
            })
            .collect();
        let batches = sync_buckets.iter().map(|(_, n)| n).sum();
        CommitSnapshot {
            batches,
            records: self.records.load(Ordering::Relaxed),
            sync_seconds_sum: self.sync_ns.load(Ordering::Relaxed) as f64 / 1e9,
            sync_buckets,
        }
    }
}

/// A point-in-time copy of a store's [`CommitStats`] (counters since the store was opened).
#[derive(Debug, Clone, PartialEq)]
pub struct CommitSnapshot {
    /// Group commits (each one `fdatasync`): also the fsync histogram's count.
    pub batches: u64,
    /// Records made durable, acknowledged and deferred ones alike.
    pub records: u64,
    pub sync_seconds_sum: f64,
    /// `(upper bound in seconds, count in that bucket alone)`, in increasing order, the last
    /// bound `+Inf` (per-bucket counts, as the OpenMetrics encoder takes them; it accumulates).
    pub sync_buckets: Vec<(f64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_increasing_and_match_the_gateway_wait_histogram() {
        assert_eq!(bound_us(0), 25);
        assert_eq!(bound_us(39), 1_000);
        assert_eq!(bound_us(40), 1_100);
        assert_eq!(bound_us(79), 5_000);
        assert_eq!(bound_us(80), 10_000);
        assert_eq!(bound_us(BUCKETS - 1), 10_000 << 13);
        assert!((1..BUCKETS).all(|i| bound_us(i) > bound_us(i - 1)));
    }

    #[test]
    fn batches_land_in_their_buckets() {
        let s = CommitStats::new();
        s.batch(10, Duration::from_micros(25)); // on the first bound: bucket 0
        s.batch(5, Duration::from_micros(26)); // just above: bucket 1
        s.batch(1, Duration::from_micros(2_950)); // 2.9 ms < 2.95 ms <= 3 ms
        s.batch(1, Duration::from_secs(1_000)); // beyond the last bound: +Inf only
        let snap = s.snapshot();
        assert_eq!(snap.batches, 4);
        assert_eq!(snap.records, 17);
        let count_at = |secs: f64| {
            snap.sync_buckets
                .iter()
                .find(|(b, _)| (*b - secs).abs() < 1e-9)
                .map(|(_, c)| *c)
                .unwrap()
        };
        assert_eq!(count_at(0.000_025), 1);
        assert_eq!(count_at(0.000_050), 1);
        assert_eq!(count_at(0.002_9), 0);
        assert_eq!(count_at(0.003), 1);
        assert_eq!(snap.sync_buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(snap.sync_buckets.len(), BUCKETS + 1);
        assert_eq!(snap.sync_buckets.iter().map(|(_, n)| n).sum::<u64>(), 4);
        let sum = 0.000_025 + 0.000_026 + 0.002_95 + 1_000.0;
        assert!((snap.sync_seconds_sum - sum).abs() < 1e-6);
    }
}
