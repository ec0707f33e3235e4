//! How long a log entry takes from its append on this node to its application here: on the
//! leader, the commit latency proper (its own append, a quorum's appends and fsyncs, the commit,
//! the apply); on a follower, from the entry's arrival until the leader's next message says it
//! is committed and it is applied. One per process, like [`crate::fsync_latency`]: the log
//! store notes each append's last index and when, the state machine notes what it applied.
//!
//! Served as `warren_raft_commit_seconds` (a histogram) and under RabbitMQ's names
//! (`rabbitmq_raft_commit_latency_seconds`: the latest sample; `…_max_…`: the largest of the
//! last 5 to 10 seconds).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::fsync_latency::{Histogram, LatencyHistogram};

/// Appends remembered at most (the state machine applies soon after; a node that applies
/// nothing, being cut off, must not grow this).
const REMEMBERED: usize = 4096;

/// The largest sample is kept per window of this length; the reading covers the current
/// window and the one before.
const WINDOW: Duration = Duration::from_secs(5);

pub(crate) struct CommitLatency {
    /// The last index of each recent append, with when it was appended, oldest first.
    appends: Mutex<VecDeque<(u64, Instant)>>,
    /// The latest sample, in microseconds (`u64::MAX`: none yet).
    last_micros: AtomicU64,
    /// (start of the current window, its largest sample, the previous window's), microseconds.
    max: Mutex<Option<(Instant, u64, u64)>>,
    histogram: Histogram,
}

impl CommitLatency {
    const fn new() -> CommitLatency {
        CommitLatency {
            appends: Mutex::new(VecDeque::new()),
            last_micros: AtomicU64::new(u64::MAX),
            max: Mutex::new(None),
            histogram: Histogram::new(),
        }
    }

    /// Entries `first..=last` were appended at `at`. An append below what is remembered
    /// replaced those entries (a truncated log): what it replaced is forgotten.
    fn appended(&self, first: u64, last: u64, at: Instant) {
        let Ok(mut appends) = self.appends.lock() else {
            return;
        };
        while appends.back().is_some_and(|&(i, _)| i >= first) {
            appends.pop_back();
        }
        if appends.len() == REMEMBERED {
            appends.pop_front();
        }
        appends.push_back((last, at));
    }

    /// Every entry up to `last` is applied at `at`: one sample, for entry `last`, if this
    /// process appended it (not one replayed at start-up or installed with a snapshot).
    fn applied(&self, last: u64, at: Instant) {
        let appended_at = {
            let Ok(mut appends) = self.appends.lock() else {
                return;
            };
            // The append that holds `last` is the first whose last index is at least `last`.
            let found = appends.iter().find(|&&(i, _)| i >= last).map(|&(_, t)| t);
            while appends.front().is_some_and(|&(i, _)| i <= last) {
                appends.pop_front();
            }
            found
        };
        let Some(appended_at) = appended_at else {
            return;
        };
        let took = at.saturating_duration_since(appended_at);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX - 1);
        self.histogram.record(took);
        self.last_micros.store(micros, Ordering::Relaxed);
        if let Ok(mut max) = self.max.lock() {
            *max = Some(match *max {
                Some((start, current, previous)) if at.duration_since(start) < WINDOW => {
                    (start, current.max(micros), previous)
                }
                Some((start, current, _)) if at.duration_since(start) < 2 * WINDOW => {
                    (start + WINDOW, micros, current)
                }
                _ => (at, micros, 0),
            });
        }
    }

    fn read(&self, now: Instant) -> CommitLatencyReading {
        let last = self.last_micros.load(Ordering::Relaxed);
        let max = self.max.lock().ok().and_then(|m| {
            m.map(
                |(start, current, previous)| match now.saturating_duration_since(start) {
                    d if d < WINDOW => current.max(previous),
                    d if d < 2 * WINDOW => current,
                    _ => 0,
                },
            )
        });
        CommitLatencyReading {
            last_seconds: (last != u64::MAX).then(|| last as f64 / 1e6),
            max_seconds: max.map(|m| m as f64 / 1e6),
            histogram: self.histogram.read(),
        }
    }
}

static COMMIT: CommitLatency = CommitLatency::new();

/// The log store appended entries `first..=last` now.
pub(crate) fn appended(first: u64, last: u64) {
    COMMIT.appended(first, last, Instant::now());
}

/// The state machine applied every entry up to `last` now.
pub fn applied(last: u64) {
    COMMIT.applied(last, Instant::now());
}

/// A reading of this process's commit latency.
#[derive(Clone, Debug, PartialEq)]
pub struct CommitLatencyReading {
    /// The latest sample; `None` before the first.
    pub last_seconds: Option<f64>,
    /// The largest sample of the last 5 to 10 seconds (0 when there was none); `None` before
    /// the first sample.
    pub max_seconds: Option<f64>,
    /// Every sample so far.
    pub histogram: LatencyHistogram,
}

/// This process's commit latency so far.
pub fn commit_latency() -> CommitLatencyReading {
    COMMIT.read(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_the_time_from_the_append_that_held_the_last_applied_entry() {
        let c = CommitLatency::new();
        let t0 = Instant::now();
        c.appended(1, 3, t0);
        c.appended(4, 4, t0 + Duration::from_micros(500));
        // Entries 1..=3 applied 800 µs after their append.
        c.applied(3, t0 + Duration::from_micros(800));
        let r = c.read(t0 + Duration::from_millis(1));
        assert_eq!(r.last_seconds, Some(0.0008));
        assert_eq!(r.max_seconds, Some(0.0008));
        assert_eq!(r.histogram.cumulative.last(), Some(&1));
        // Entry 4 (appended at 500 µs) applied at 1.7 ms: 1.2 ms; the max follows.
        c.applied(4, t0 + Duration::from_micros(1700));
        let r = c.read(t0 + Duration::from_millis(2));
        assert_eq!(r.last_seconds, Some(0.0012));
        assert_eq!(r.max_seconds, Some(0.0012));
        assert_eq!(r.histogram.cumulative.last(), Some(&2));
        // Nothing remembered for entry 5 (replayed, not appended here): no sample.
        c.applied(5, t0 + Duration::from_millis(3));
        assert_eq!(
            c.read(t0 + Duration::from_millis(3))
                .histogram
                .cumulative
                .last(),
            Some(&2)
        );
    }

    #[test]
    fn a_truncated_append_is_forgotten_and_old_maxima_expire() {
        let c = CommitLatency::new();
        let t0 = Instant::now();
        c.appended(10, 20, t0);
        // The log was truncated after 12 and 13..=15 appended again 5 ms later.
        c.appended(13, 15, t0 + Duration::from_millis(5));
        c.applied(15, t0 + Duration::from_millis(6));
        let r = c.read(t0 + Duration::from_millis(6));
        assert_eq!(
            r.last_seconds,
            Some(0.001),
            "measured from the second append"
        );
        // A smaller sample in the next window: the first window's max still counts.
        c.appended(16, 16, t0 + Duration::from_micros(5_999_900));
        c.applied(16, t0 + Duration::from_secs(6));
        let r = c.read(t0 + Duration::from_secs(6));
        assert_eq!(r.last_seconds, Some(0.0001));
        assert_eq!(r.max_seconds, Some(0.001));
        // Two windows later it has expired.
        let later = c.read(t0 + Duration::from_secs(30));
        assert_eq!(
            later.max_seconds,
            Some(0.0),
            "nothing in the last two windows"
        );
        assert_eq!(later.last_seconds, Some(0.0001));
    }
}
