//! Message rates: a sampler reads the deciding broker's counters once a second (while someone
//! uses the API) and keeps the last few readings; a rate is the change over the last five seconds (RabbitMQ's default
//! `basic` rates mode, which also averages over 5 s). Counters are the broker's own since it was
//! built, so a leader change can make them go down: such a drop reads as rate 0.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;
use warren_core::view::BrokerView;
use warren_proto::raft::{ClientTotals, StatusReply};

use crate::Ctx;

/// Readings kept: five seconds' worth plus the newest.
const KEEP: usize = 6;

/// One counter of the view, named by a key such as `queue/<vhost>/<name>/published`.
pub(crate) type Key = String;

#[derive(Default)]
pub(crate) struct Rates {
    samples: Mutex<VecDeque<(Instant, HashMap<Key, u64>)>>,
    /// The cluster's totals every [`HISTORY_EVERY`] over the last [`HISTORY_AGE`] (the
    /// console's charts; RabbitMQ's `samples`), newest last: (ms since the epoch, totals).
    history: Mutex<VecDeque<(u64, HashMap<Key, u64>)>>,
}

/// How far apart the readings of the history are.
pub(crate) const HISTORY_EVERY: Duration = Duration::from_secs(5);
/// How far back the history goes (RabbitMQ's console shows the last ten minutes by default).
pub(crate) const HISTORY_AGE: Duration = Duration::from_secs(600);

/// Queues whose counters the history keeps (the others' pages show no chart).
pub(crate) const HISTORY_QUEUES: usize = 500;
/// The counters of a queue the history keeps.
const HISTORY_COUNTERS: [&str; 5] = [
    "\u{0}published",
    "\u{0}delivered",
    "\u{0}acked",
    "\u{0}messages_ready",
    "\u{0}messages_unacknowledged",
];

/// One reading of the history: when (ms since the epoch) and the totals' values.
pub(crate) type HistoryPoint = (u64, HashMap<Key, u64>);

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

/// A counter of one node: what its clients did, and its memory.
pub(crate) fn node_key(id: u64, counter: &str) -> Key {
    format!("node\u{0}{id}\u{0}{counter}")
}

/// The messages queued on each node — ready and unacknowledged — in the queues it serves: a
/// transient queue's home, a replicated queue's leader (`leader`; none: counted nowhere).
pub(crate) fn queued_by_node(view: &BrokerView, leader: Option<u64>) -> HashMap<Key, u64> {
    let mut out = HashMap::new();
    for q in &view.queues {
        let Some(node) = crate::shapes::serving_node(q, leader) else {
            continue;
        };
        for (counter, v) in [
            ("messages_ready", q.messages_ready),
            ("messages_unacknowledged", q.messages_unacknowledged),
        ] {
            *out.entry(node_key(node, counter)).or_default() += v;
        }
    }
    out
}

/// Each member's counts from its status, by key, and `total/confirmed` (confirms are counted by
/// the node whose client was confirmed, not by queues). A member that did not answer this time
/// keeps its last counts (`last`, updated here), so that its silence does not read as a drop.
pub(crate) fn node_counters(
    statuses: &HashMap<u64, StatusReply>,
    members: &[u64],
    last: &mut HashMap<u64, (ClientTotals, u64)>,
) -> HashMap<Key, u64> {
    last.retain(|id, _| members.contains(id));
    for (id, s) in statuses {
        if let Some(c) = &s.clients {
            last.insert(*id, (*c, s.mem_used));
        }
    }
    let mut out = HashMap::new();
    let mut confirmed = 0;
    for (id, (c, mem)) in last.iter() {
        for (counter, v) in [
            ("published", c.published),
            ("confirmed", c.confirmed),
            ("delivered", c.delivered),
            ("acked", c.acked),
            ("mem_used", *mem),
        ] {
            out.insert(node_key(*id, counter), v);
        }
        confirmed += c.confirmed;
    }
    out.insert(total_key("confirmed"), confirmed);
    out
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
    /// Keeps a reading of the totals taken at `at_ms` (ms since the epoch) in the history, if
    /// the last one is [`HISTORY_EVERY`] old; drops what is older than [`HISTORY_AGE`].
    pub(crate) fn record_history(&self, at_ms: u64, values: &HashMap<Key, u64>) {
        let Ok(mut h) = self.history.lock() else {
            return;
        };
        let every = u64::try_from(HISTORY_EVERY.as_millis()).unwrap_or(u64::MAX);
        // A reading taken a little early (the sampler's ticks drift) still counts.
        if h.back()
            .is_some_and(|(last, _)| at_ms < last.saturating_add(every.saturating_sub(500)))
        {
            return;
        }
        // The totals, and the counters of the first HISTORY_QUEUES queues by name (a queue
        // page's chart; the same queues in every reading): a reading stays small however many
        // queues there are.
        let mut queue_keys: Vec<&Key> = values
            .keys()
            .filter(|k| {
                k.starts_with("queue\u{0}") && HISTORY_COUNTERS.iter().any(|c| k.ends_with(c))
            })
            .collect();
        queue_keys.sort_unstable();
        queue_keys.truncate(HISTORY_QUEUES * HISTORY_COUNTERS.len());
        let totals = values
            .iter()
            .filter(|(k, _)| k.starts_with("total\u{0}") || k.starts_with("node\u{0}"))
            .map(|(k, v)| (k.clone(), *v))
            .chain(
                queue_keys
                    .into_iter()
                    .filter_map(|k| values.get(k).map(|v| (k.clone(), *v))),
            )
            .collect();
        h.push_back((at_ms, totals));
        let age = u64::try_from(HISTORY_AGE.as_millis()).unwrap_or(u64::MAX);
        while h
            .front()
            .is_some_and(|(t, _)| at_ms.saturating_sub(*t) > age)
        {
            h.pop_front();
        }
    }

    /// The history's readings of the last `age` seconds, at least `incr` seconds apart, newest
    /// first (as RabbitMQ lists `samples`).
    pub(crate) fn history(&self, age: u64, incr: u64) -> Vec<HistoryPoint> {
        let Ok(h) = self.history.lock() else {
            return Vec::new();
        };
        let Some((newest, _)) = h.back() else {
            return Vec::new();
        };
        let since = newest.saturating_sub(age.saturating_mul(1000));
        let mut out: Vec<HistoryPoint> = Vec::new();
        for (t, values) in h.iter().rev() {
            if *t < since {
                break;
            }
            let spaced = out.last().is_none_or(|(later, _)| {
                later.saturating_sub(*t) + 500 >= incr.saturating_mul(1000)
            });
            if spaced {
                out.push((*t, values.clone()));
            }
        }
        out
    }

    /// The newest reading of `key`, if it has one.
    pub(crate) fn latest(&self, key: &str) -> Option<u64> {
        let s = self.samples.lock().ok()?;
        s.back().and_then(|(_, values)| values.get(key).copied())
    }

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
/// (a console open, a Prometheus scraping), and every [`HISTORY_EVERY`] otherwise, so that the
/// console's charts show the last ten minutes when it is opened.
pub(crate) fn spawn_sampler(ctx: Arc<Ctx>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Instant> = None;
        let mut nodes = HashMap::new();
        loop {
            ticker.tick().await;
            let due =
                last.is_none_or(|t| t.elapsed() + Duration::from_millis(500) >= HISTORY_EVERY);
            if !ctx.watched(WATCHED) && !due {
                continue;
            }
            match ctx.node.management.view().await {
                Ok((view, _)) => {
                    let now = Instant::now();
                    last = Some(now);
                    let mut values = counters(&view);
                    let (me, statuses) = crate::members::statuses(&ctx).await;
                    let members: Vec<u64> = me.members.iter().map(|m| m.id).collect();
                    values.extend(node_counters(&statuses, &members, &mut nodes));
                    for id in &members {
                        for counter in ["messages_ready", "messages_unacknowledged"] {
                            values.insert(node_key(*id, counter), 0);
                        }
                    }
                    values.extend(queued_by_node(&view, me.leader));
                    ctx.rates.record_history(epoch_ms(), &values);
                    ctx.rates.record(now, values);
                }
                Err(e) => debug!(error = %e, "rates: no view this second"),
            }
        }
    });
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_keeps_the_totals_every_five_seconds_for_ten_minutes_newest_first() {
        let r = Rates::default();
        let reading = |v: u64| {
            HashMap::from([
                (total_key("published"), v),
                (queue_key("/", "q", "published"), v),
            ])
        };
        // A reading every second for 12 minutes.
        for s in 0..720u64 {
            r.record_history(1_000_000 + s * 1000, &reading(s));
        }
        let all = r.history(600, 5);
        assert_eq!(all.len(), 121, "10 minutes every 5 s, both ends");
        assert_eq!(all[0].0, 1_000_000 + 715_000, "newest first");
        assert_eq!(all[0].1.get(&total_key("published")), Some(&715));
        assert_eq!(all[1].0, 1_000_000 + 710_000);
        assert_eq!(
            all[0].1.get(&queue_key("/", "q", "published")),
            Some(&715),
            "a queue's counters too"
        );
        let sparse = r.history(60, 30);
        assert_eq!(
            sparse
                .iter()
                .map(|(t, _)| (t - 1_000_000) / 1000)
                .collect::<Vec<_>>(),
            vec![715, 685, 655]
        );
        assert!(Rates::default().history(600, 5).is_empty());
    }

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

    #[test]
    fn each_node_keeps_its_counts_and_a_silent_member_its_last_ones() {
        let status = |id: u64, confirmed: u64, mem: u64| StatusReply {
            node_id: id,
            mem_used: mem,
            clients: Some(ClientTotals {
                published: confirmed + 1,
                confirmed,
                delivered: 3,
                acked: 2,
            }),
            ..StatusReply::default()
        };
        let mut last = HashMap::new();
        let all = HashMap::from([(1, status(1, 10, 100)), (2, status(2, 5, 200))]);
        let v = node_counters(&all, &[1, 2], &mut last);
        assert_eq!(v[&total_key("confirmed")], 15);
        assert_eq!(v[&node_key(1, "published")], 11);
        assert_eq!(v[&node_key(2, "mem_used")], 200);
        // Node 2 does not answer: its last counts stay (no drop in the total).
        let v = node_counters(
            &HashMap::from([(1, status(1, 12, 100))]),
            &[1, 2],
            &mut last,
        );
        assert_eq!(v[&total_key("confirmed")], 17);
        assert_eq!(v[&node_key(2, "confirmed")], 5);
        // Node 2 was removed: it goes.
        let v = node_counters(&HashMap::from([(1, status(1, 12, 100))]), &[1], &mut last);
        assert_eq!(v[&total_key("confirmed")], 12);
        assert!(!v.contains_key(&node_key(2, "confirmed")));
    }
}
