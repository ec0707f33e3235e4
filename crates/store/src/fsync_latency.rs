//! How long the WAL fsyncs take: a fixed-bucket histogram kept with atomics (one per process,
//! like a metrics registry), read by the node's Prometheus endpoint. Recording costs a few
//! relaxed atomic adds per fsync, not per entry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (Prometheus `le`); a last bucket is `+Inf`.
pub const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

pub(crate) struct Histogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_micros: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn read(&self) -> LatencyHistogram {
        let mut total = 0;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                total += c.load(Ordering::Relaxed);
                total
            })
            .collect();
        LatencyHistogram {
            cumulative,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

static FSYNC: Histogram = Histogram::new();

/// Records one fsync's duration.
pub(crate) fn record(d: Duration) {
    FSYNC.record(d);
}

/// A reading of a latency histogram (the WAL fsyncs', the commits': `crate::commit_latency`):
/// cumulative counts per bucket of [`BUCKETS`] then `+Inf` (the total), and the sum of the
/// durations in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyHistogram {
    pub cumulative: Vec<u64>,
    pub sum_seconds: f64,
}

/// The WAL fsyncs of this process so far.
pub fn fsync_latency() -> LatencyHistogram {
    FSYNC.read()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_cumulative_buckets() {
        let h = Histogram::new();
        h.record(Duration::from_micros(300));
        h.record(Duration::from_secs(2));
        let read = h.read();
        // 300 µs is above 0.25 ms and at most 0.5 ms: from bucket index 2 on; 2 s only in +Inf.
        assert_eq!(read.cumulative, vec![0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]);
        assert!((read.sum_seconds - 2.0003).abs() < 1e-9);
    }
}
