//! What the metrics show of the groups this node coordinates: per group its state,
//! members, epoch and committed offsets (published by each shard now and then, never
//! asked of it at scrape time), and how long rebalances take.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the rebalance duration histogram's buckets.
pub const REBALANCE_BUCKETS: [f64; 11] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// One group as the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStats {
    pub group: String,
    pub state: &'static str,
    pub members: usize,
    pub epoch: i32,
    /// (topic, partition, committed offset)
    pub committed: Vec<(String, u32, i64)>,
}

/// Rebalances (from the group leaving `stable` to reaching it again) and their durations.
#[derive(Debug, Default)]
pub struct RebalanceStats {
    buckets: [AtomicU64; REBALANCE_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// A copy of the histogram: cumulative counts per bucket, then count and sum (seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct RebalanceSnapshot {
    pub cumulative: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl RebalanceStats {
    pub(crate) fn observe(&self, seconds: f64) {
        for (bound, bucket) in REBALANCE_BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RebalanceSnapshot {
        RebalanceSnapshot {
            cumulative: REBALANCE_BUCKETS
                .iter()
                .zip(&self.buckets)
                .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let stats = RebalanceStats::default();
        stats.observe(0.02);
        stats.observe(0.3);
        stats.observe(100.0);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.count, 3);
        assert_eq!(snapshot.cumulative[0], (0.01, 0));
        assert_eq!(snapshot.cumulative[1], (0.025, 1));
        assert_eq!(snapshot.cumulative[5], (0.5, 2));
        assert_eq!(snapshot.cumulative.last().map(|c| c.1), Some(2));
        assert!((snapshot.sum_seconds - 100.32).abs() < 1e-3);
    }
}
