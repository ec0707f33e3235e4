//! Message rates: a sampler reads the deciding broker's counters once a second (while someone
//! uses the API) and keeps the last few readings; a rate is the change over the last five seconds (RabbitMQ's default
//! `basic` rates mode, which also averages over 5 s). Counters are the broker's own since it was
//! built, so a leader change can make them go down: such a drop reads as rate 0.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;
use warren_core::view::BrokerView;

use crate::Ctx;

/// Readings kept: five seconds' worth plus the newest.
const KEEP: usize = 6;

/// One counter of the view, named by a key such as `queue/<vhost>/<name>/published`.
pub(crate) type Key = String;

#[derive(Default)]
pub(crate) struct Rates {
    samples: Mutex<VecDeque<(Instant, HashMap<Key, u64>)>>,
}

pub(crate) fn queue_key(vhost: &str, name: &str, counter: &str) -> Key {
    format!("queue\u{0}{vhost}\u{0}{name}\u{0}{counter}")
}

pub(crate) fn exchange_key(vhost: &str, name: &str, counter: &str) -> Key {
    format!("exchange\u{0}{vhost}\u{0}{name}\u{0}{counter}")
}

/// Messages published to `exchange` that reached `queue` (the flow along a binding).
pub(crate) fn edge_key(vhost: &str, exchange: &str, queue: &str) -> Key {
    format!("edge\u{0}{vhost}\u{0}{exchange}\u{0}{queue}")
}

pub(crate) fn total_key(counter: &str) -> Key {
    format!("total\u{0}{counter}")
}

/// Every counter of a view, by key.
pub(crate) fn counters(view: &BrokerView) -> HashMap<Key, u64> {
    let mut out = HashMap::new();
    let mut totals: HashMap<&str, u64> = HashMap::new();
    for q in &view.queues {
        let c = q.counters;
        for (name, v) in [
            ("published", c.published),
            ("delivered", c.delivered),
            ("redelivered", c.redelivered),
            ("acked", c.acked),
            ("messages", q.messages_ready + q.messages_unacknowledged),
            ("messages_ready", q.messages_ready),
            ("messages_unacknowledged", q.messages_unacknowledged),
        ] {
            out.insert(queue_key(&q.vhost, &q.name, name), v);
            *totals.entry(name).or_default() += v;
        }
        for (x, n) in &q.published_from {
            out.insert(edge_key(&q.vhost, x, &q.name), *n);
        }
    }
    for x in &view.exchanges {
        out.insert(exchange_key(&x.vhost, &x.name, "publish_in"), x.publish_in);
        out.insert(
            exchange_key(&x.vhost, &x.name, "publish_out"),
            x.publish_out,
        );
        *totals.entry("publish").or_default() += x.publish_in;
    }
    for (name, v) in totals {
        out.insert(total_key(name), v);
    }
    out
}

impl Rates {
    pub(crate) fn record(&self, at: Instant, values: HashMap<Key, u64>) {
        let Ok(mut s) = self.samples.lock() else {
            return;
        };
        s.push_back((at, values));
        while s.len() > KEEP {
            s.pop_front();
        }
    }

    /// Per-second rate of every counter over the kept readings (0 when fewer than two): from
    /// the oldest reading that has the counter (a queue declared a second ago has a rate at
    /// once) to the newest.
    pub(crate) fn snapshot(&self) -> RateTable {
        let Ok(s) = self.samples.lock() else {
            return RateTable::default();
        };
        let Some((t1, new)) = s.back() else {
            return RateTable::default();
        };
        let rates = new
            .iter()
            .map(|(k, v)| {
                let rate = s
                    .iter()
                    .find_map(|(t, values)| values.get(k).map(|old| (*t, *old)))
                    .map_or(0.0, |(t0, before)| {
                        let dt = t1.duration_since(t0).as_secs_f64();
                        if dt > 0.0 && *v >= before {
                            (*v - before) as f64 / dt
                        } else {
                            0.0
                        }
                    });
                (k.clone(), (rate * 10.0).round() / 10.0)
            })
            .collect();
        RateTable(rates)
    }
}

/// Rates by key.
#[derive(Default)]
pub(crate) struct RateTable(HashMap<Key, f64>);

impl RateTable {
    pub(crate) fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }
}

/// How long after the last request the sampler keeps going.
const WATCHED: Duration = Duration::from_secs(300);

/// Samples the view every second while the API or /metrics was asked in the last five minutes
/// (a console open, a Prometheus scraping): an unwatched node asks its leader nothing.
pub(crate) fn spawn_sampler(ctx: Arc<Ctx>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if !ctx.watched(WATCHED) {
                continue;
            }
            match ctx.node.management.view().await {
                Ok((view, _)) => ctx.rates.record(Instant::now(), counters(&view)),
                Err(e) => debug!(error = %e, "rates: no view this second"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_the_change_per_second_and_a_drop_reads_as_zero() {
        let r = Rates::default();
        let t0 = Instant::now();
        let k = |v: u64| HashMap::from([("a".to_owned(), v), ("b".to_owned(), 100 - v)]);
        r.record(t0, k(10));
        r.record(
            t0 + Duration::from_secs(1),
            HashMap::from([("a".to_owned(), 20)]),
        );
        let mut last = k(30);
        last.insert("new".to_owned(), 7);
        r.record(t0 + Duration::from_secs(2), last.clone());
        r.record(t0 + Duration::from_secs(3), {
            last.insert("new".to_owned(), 9);
            last
        });
        let t = r.snapshot();
        assert_eq!(t.get("a"), 6.7, "20 in 3 s, to one decimal");
        assert_eq!(t.get("new"), 2.0, "from the first reading that has it");
        assert_eq!(t.get("b"), 0.0);
        assert_eq!(t.get("missing"), 0.0);
    }
}
