//! What a run counts and times: message counters and the confirm and end-to-end latency
//! histograms (HdrHistogram, microseconds), for the whole run and for the current second.
//! Shared by every producer and consumer task; no I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded: one hour, in microseconds (longer values are clamped to it).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Counters and histograms of one run.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) sent: AtomicU64,
    pub(crate) confirmed: AtomicU64,
    pub(crate) nacked: AtomicU64,
    pub(crate) returned: AtomicU64,
    pub(crate) received: AtomicU64,
    /// Deliveries that carried a priority property.
    pub(crate) priority_deliveries: AtomicU64,
    /// Deliveries of a higher priority than the delivery before them on the same consumer: none
    /// when a consumer drains a priority queue's backlog highest level first.
    pub(crate) priority_rises: AtomicU64,
    /// Microseconds since the run started when a producer last published / a consumer last took
    /// a message (the end of the window their rates are computed over).
    pub(crate) last_sent_us: AtomicU64,
    pub(crate) last_received_us: AtomicU64,
    confirm: Latency,
    e2e: Latency,
}

/// One latency kind: the whole run and the interval since the last progress line.
struct Latency {
    total: Mutex<Histogram<u64>>,
    interval: Mutex<Histogram<u64>>,
}

impl Default for Latency {
    fn default() -> Self {
        let new = || {
            Mutex::new(
                Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                    .expect("the bounds are constants that hdrhistogram accepts"),
            )
        };
        Latency {
            total: new(),
            interval: new(),
        }
    }
}

impl Latency {
    fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros())
            .unwrap_or(MAX_LATENCY_US)
            .clamp(1, MAX_LATENCY_US);
        for h in [&self.total, &self.interval] {
            // A poisoned lock means another task panicked; the process is going down anyway.
            if let Ok(mut h) = h.lock() {
                h.saturating_record(us);
            }
        }
    }

    fn take_interval(&self) -> Percentiles {
        match self.interval.lock() {
            Ok(mut h) => {
                let p = Percentiles::of(&h);
                h.reset();
                p
            }
            Err(_) => Percentiles::default(),
        }
    }

    fn total(&self) -> Percentiles {
        self.total
            .lock()
            .map(|h| Percentiles::of(&h))
            .unwrap_or_default()
    }
}

/// Latency percentiles in microseconds; all zero when nothing was recorded.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub(crate) struct Percentiles {
    pub(crate) count: u64,
    pub(crate) p50: u64,
    pub(crate) p95: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

impl Stats {
    /// Records a confirm that took `d` from publish to basic.ack/nack.
    pub(crate) fn confirm_latency(&self, d: Duration) {
        self.confirm.record(d);
    }

    /// Records a delivery whose body starts with a send timestamp (see [`stamp`]).
    pub(crate) fn e2e_latency(&self, body: &[u8]) {
        if let Some(sent) = read_stamp(body) {
            let now = unix_nanos();
            // A stamp from the future (clock stepped back) is not a latency.
            if now >= sent {
                self.e2e.record(Duration::from_nanos(now - sent));
            }
        }
    }

    /// Confirm and end-to-end percentiles since the last call, and resets that interval.
    pub(crate) fn take_interval(&self) -> (Percentiles, Percentiles) {
        (self.confirm.take_interval(), self.e2e.take_interval())
    }

    /// Confirm and end-to-end percentiles over the whole run.
    pub(crate) fn totals(&self) -> (Percentiles, Percentiles) {
        (self.confirm.total(), self.e2e.total())
    }

    /// Notes that something happened `elapsed` into the run, keeping the latest time.
    pub(crate) fn mark(at: &AtomicU64, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        at.fetch_max(us, Ordering::Relaxed);
    }
}

/// Nanoseconds since the Unix epoch (wall clock: producers and consumers may be different
/// processes, as when a backlog is filled by one run and drained by another).
fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Writes the send time into the first 8 bytes of `body` (big-endian nanoseconds since the
/// epoch); a shorter body is left as it is.
pub(crate) fn stamp(body: &mut [u8]) {
    if let Some(head) = body.get_mut(..8) {
        head.copy_from_slice(&unix_nanos().to_be_bytes());
    }
}

fn read_stamp(body: &[u8]) -> Option<u64> {
    let head: [u8; 8] = body.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_body_yields_a_small_end_to_end_latency() {
        let stats = Stats::default();
        let mut body = vec![0u8; 16];
        stamp(&mut body);
        stats.e2e_latency(&body);
        let (_, e2e) = stats.totals();
        assert_eq!(e2e.count, 1);
        assert!(e2e.max < 10_000_000, "recorded {e2e:?}");
    }

    #[test]
    fn short_bodies_are_not_stamped_and_not_timed() {
        let stats = Stats::default();
        let mut body = vec![7u8; 4];
        stamp(&mut body);
        assert_eq!(body, [7u8; 4]);
        stats.e2e_latency(&body);
        assert_eq!(stats.totals().1.count, 0);
    }

    #[test]
    fn the_interval_resets_and_the_total_keeps_everything() {
        let stats = Stats::default();
        for ms in [1, 2, 3, 100] {
            stats.confirm_latency(Duration::from_millis(ms));
        }
        let (c, _) = stats.take_interval();
        assert_eq!(c.count, 4);
        assert_eq!(stats.take_interval().0.count, 0);
        let (total, _) = stats.totals();
        assert_eq!(total.count, 4);
        assert!(total.p50 >= 1_000 && total.p50 <= 2_010, "{total:?}");
        assert!(total.max >= 99_900, "{total:?}");
    }
}
