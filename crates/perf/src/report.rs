//! What warren-perf prints: one progress line per second and the final summary (text or JSON).
//! Formatting only: the numbers come from [`Stats`].

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use crate::stats::{Percentiles, Stats};

/// Counter values at the previous progress line, to turn totals into per-second rates.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Snapshot {
    sent: u64,
    confirmed: u64,
    received: u64,
}

impl Snapshot {
    pub(crate) fn of(stats: &Stats) -> Snapshot {
        Snapshot {
            sent: stats.sent.load(Ordering::Relaxed),
            confirmed: stats.confirmed.load(Ordering::Relaxed),
            received: stats.received.load(Ordering::Relaxed),
        }
    }
}

/// The progress line for the interval from `before` to now, `elapsed` into the run, lasting
/// `interval`; resets the interval histograms.
pub(crate) fn progress_line(
    stats: &Stats,
    before: Snapshot,
    elapsed: Duration,
    interval: Duration,
) -> (String, Snapshot) {
    let now = Snapshot::of(stats);
    let secs = interval.as_secs_f64().max(1e-6);
    let rate = |a: u64, b: u64| (a.saturating_sub(b) as f64 / secs).round() as u64;
    let (confirm, e2e) = stats.take_interval();
    let mut line = format!(
        "time {:6.1}s | sent {:>7} msg/s | confirmed {:>7} msg/s | received {:>7} msg/s",
        elapsed.as_secs_f64(),
        rate(now.sent, before.sent),
        rate(now.confirmed, before.confirmed),
        rate(now.received, before.received),
    );
    for (name, p) in [("confirm", confirm), ("e2e", e2e)] {
        if p.count > 0 {
            let _ = write!(
                line,
                " | {name} ms p50 {} p99 {} max {}",
                ms(p.p50),
                ms(p.p99),
                ms(p.max)
            );
        }
    }
    (line, now)
}

/// The final numbers of a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    /// Seconds from the start of publishing/consuming to the end of the run.
    pub(crate) duration_s: f64,
    pub(crate) sent: u64,
    pub(crate) confirmed: u64,
    pub(crate) nacked: u64,
    pub(crate) returned: u64,
    pub(crate) received: u64,
    /// Deliveries that carried a priority, and how many of them came after a delivery of lower
    /// priority on the same consumer (0 for a backlog drained highest priority first).
    pub(crate) priority_deliveries: u64,
    pub(crate) priority_rises: u64,
    /// Messages per second: sent over the time to the last publish, confirmed over the run, and
    /// received over the time to the last delivery.
    pub(crate) publish_rate: f64,
    pub(crate) confirm_rate: f64,
    pub(crate) consume_rate: f64,
    /// Microseconds from basic.publish to its basic.ack.
    pub(crate) confirm_latency_us: Percentiles,
    /// Microseconds from the stamp in the body to the delivery.
    pub(crate) e2e_latency_us: Percentiles,
    /// What went wrong, if anything (the exit status is 1 then).
    pub(crate) errors: Vec<String>,
}

impl Summary {
    /// The summary of a run that lasted `duration`.
    pub(crate) fn of(stats: &Stats, duration: Duration, errors: Vec<String>) -> Summary {
        let secs = |us: u64| Duration::from_micros(us).as_secs_f64().max(1e-6);
        let sent = stats.sent.load(Ordering::Relaxed);
        let confirmed = stats.confirmed.load(Ordering::Relaxed);
        let received = stats.received.load(Ordering::Relaxed);
        let (confirm, e2e) = stats.totals();
        let window = duration.as_secs_f64().max(1e-6);
        Summary {
            duration_s: round3(duration.as_secs_f64()),
            sent,
            confirmed,
            nacked: stats.nacked.load(Ordering::Relaxed),
            returned: stats.returned.load(Ordering::Relaxed),
            received,
            priority_deliveries: stats.priority_deliveries.load(Ordering::Relaxed),
            priority_rises: stats.priority_rises.load(Ordering::Relaxed),
            publish_rate: round1(sent as f64 / secs(stats.last_sent_us.load(Ordering::Relaxed))),
            confirm_rate: round1(confirmed as f64 / window),
            consume_rate: round1(
                received as f64 / secs(stats.last_received_us.load(Ordering::Relaxed)),
            ),
            confirm_latency_us: confirm,
            e2e_latency_us: e2e,
            errors,
        }
    }

    /// The human-readable summary.
    pub(crate) fn text(&self) -> String {
        let mut s = format!(
            "summary: {:.1}s, sent {} ({:.0} msg/s), confirmed {} ({:.0} msg/s), nacked {}, \
             received {} ({:.0} msg/s)\n",
            self.duration_s,
            self.sent,
            self.publish_rate,
            self.confirmed,
            self.confirm_rate,
            self.nacked,
            self.received,
            self.consume_rate,
        );
        if self.priority_deliveries > 0 {
            let _ = writeln!(
                s,
                "priorities: {} deliveries carried one; {} came after a delivery of lower priority",
                self.priority_deliveries, self.priority_rises
            );
        }
        for (name, p) in [
            ("confirm latency", self.confirm_latency_us),
            ("end-to-end latency", self.e2e_latency_us),
        ] {
            if p.count > 0 {
                let _ = writeln!(
                    s,
                    "{name} ms: p50 {} p95 {} p99 {} p99.9 {} max {}",
                    ms(p.p50),
                    ms(p.p95),
                    ms(p.p99),
                    ms(p.p999),
                    ms(p.max)
                );
            }
        }
        for e in &self.errors {
            let _ = writeln!(s, "error: {e}");
        }
        s
    }
}

/// Microseconds as milliseconds with three significant decimals.
fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_serialises_with_rates_and_percentiles() {
        let stats = Stats::default();
        stats.sent.store(100, Ordering::Relaxed);
        stats.confirmed.store(100, Ordering::Relaxed);
        stats.received.store(50, Ordering::Relaxed);
        stats.last_sent_us.store(1_000_000, Ordering::Relaxed);
        stats.last_received_us.store(500_000, Ordering::Relaxed);
        stats.confirm_latency(Duration::from_millis(2));
        let s = Summary::of(&stats, Duration::from_secs(2), vec![]);
        assert_eq!(s.publish_rate, 100.0);
        assert_eq!(s.confirm_rate, 50.0);
        assert_eq!(s.consume_rate, 100.0);
        let json: serde_json::Value =
            serde_json::to_value(&s).expect("a summary serialises to JSON");
        assert_eq!(json["confirm_latency_us"]["count"], 1);
        assert!(s.text().contains("confirm latency ms: p50 2.00"));
    }
}
