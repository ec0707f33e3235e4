//! Publisher confirms that wait for home copies (see `warren_core::MirrorChange`).
//!
//! The leader's broker sends every change to a transient queue's messages to the queue's home
//! node. A confirm of a publish whose messages went to such queues leaves only once every home
//! involved has acknowledged the changes made for that publish, so a confirmed transient
//! message is lost only with its home (or with the leader, for a queue whose home is the
//! leader). A home that does not answer within [`GATE_TIMEOUT`], or whose stream ends, no
//! longer holds confirms back: its copy is made whole by a `Reset` when it attaches again, and
//! the message is in the leader's broker meanwhile.
//!
//! Per connection, confirms leave in the order the broker made them: a confirm that needs
//! nothing waits behind one that waits. Deterministic and without I/O: the broker task feeds it
//! and sends what it releases.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use warren_core::{ConnId, Effect};
use warren_wire::Method;

/// How long a confirm waits for a home's acknowledgement before it leaves anyway.
pub(crate) const GATE_TIMEOUT: Duration = Duration::from_secs(1);

/// What one confirm waits for: the `count`-th change sent on the `generation`-th stream of
/// node `home`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Need {
    home: u64,
    generation: u64,
    count: u64,
}

#[derive(Debug, Default)]
struct Link {
    generation: u64,
    /// Changes queued for the node on this stream, and how many it acknowledged.
    queued: u64,
    acked: u64,
}

#[derive(Debug)]
struct Held {
    needs: Vec<Need>,
    since: Instant,
    effect: Effect,
}

#[derive(Debug, Default)]
pub(crate) struct ConfirmGate {
    links: HashMap<u64, Link>,
    next_generation: u64,
    held: HashMap<ConnId, VecDeque<Held>>,
}

/// Whether `effect` is a publisher confirm (a `basic.ack` or `basic.nack` from the broker).
pub(crate) fn is_confirm(effect: &Effect) -> bool {
    matches!(
        effect,
        Effect::Send {
            method: Method::BasicAck(_) | Method::BasicNack(_),
            ..
        }
    )
}

impl ConfirmGate {
    /// Node `home`'s stream attached: changes are counted afresh on it.
    pub(crate) fn attach(&mut self, home: u64) {
        self.next_generation += 1;
        self.links.insert(
            home,
            Link {
                generation: self.next_generation,
                ..Link::default()
            },
        );
    }

    /// Its stream ended: nothing waits for it any more.
    pub(crate) fn detach(&mut self, home: u64) {
        self.links.remove(&home);
    }

    /// Forgets everything (the node stopped leading).
    pub(crate) fn clear(&mut self) {
        self.links.clear();
        self.held.clear();
    }

    /// One change was queued for `home`; what a confirm that depends on it must wait for, or
    /// `None` if the node has no stream (the change is dropped).
    pub(crate) fn queued(&mut self, home: u64) -> Option<Need> {
        let link = self.links.get_mut(&home)?;
        link.queued += 1;
        Some(Need {
            home,
            generation: link.generation,
            count: link.queued,
        })
    }

    /// `home` acknowledged the first `count` changes of its current stream.
    pub(crate) fn acked(&mut self, home: u64, count: u64) {
        if let Some(link) = self.links.get_mut(&home) {
            link.acked = link.acked.max(count);
        }
    }

    /// Whether a confirm for `conn` must go through the gate (it has confirms waiting).
    pub(crate) fn has_waiting(&self, conn: ConnId) -> bool {
        self.held.get(&conn).is_some_and(|q| !q.is_empty())
    }

    /// Holds a confirm for `conn` until `needs` are met (or it times out).
    pub(crate) fn hold(&mut self, conn: ConnId, needs: Vec<Need>, effect: Effect, now: Instant) {
        self.held.entry(conn).or_default().push_back(Held {
            needs,
            since: now,
            effect,
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    fn met(&self, need: &Need) -> bool {
        match self.links.get(&need.home) {
            Some(link) if link.generation == need.generation => link.acked >= need.count,
            // That stream is gone: its node gets a whole copy when it attaches again.
            _ => true,
        }
    }

    /// The confirms that may leave now, by connection and in order; and how many left
    /// because their home did not answer in time.
    pub(crate) fn release(&mut self, now: Instant) -> (Vec<(ConnId, Vec<Effect>)>, usize) {
        let mut out = Vec::new();
        let mut timed_out = 0;
        let conns: Vec<ConnId> = self.held.keys().copied().collect();
        for conn in conns {
            let mut ready = Vec::new();
            while let Some(front) = self.held.get(&conn).and_then(|q| q.front()) {
                let met = front.needs.iter().all(|n| self.met(n));
                let late = now.duration_since(front.since) >= GATE_TIMEOUT;
                if !met && !late {
                    break;
                }
                if !met {
                    timed_out += 1;
                }
                if let Some(h) = self.held.get_mut(&conn).and_then(VecDeque::pop_front) {
                    ready.push(h.effect);
                }
            }
            if self.held.get(&conn).is_some_and(VecDeque::is_empty) {
                self.held.remove(&conn);
            }
            if !ready.is_empty() {
                out.push((conn, ready));
            }
        }
        (out, timed_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_wire::{BasicAck, BasicDeliver};

    fn ack(conn: ConnId, tag: u64) -> Effect {
        Effect::Send {
            conn,
            channel: 1,
            method: Method::BasicAck(BasicAck {
                delivery_tag: tag,
                multiple: false,
            }),
        }
    }

    fn tags(released: &[(ConnId, Vec<Effect>)]) -> Vec<(ConnId, u64)> {
        released
            .iter()
            .flat_map(|(c, list)| {
                list.iter().map(move |e| match e {
                    Effect::Send {
                        method: Method::BasicAck(a),
                        ..
                    } => (*c, a.delivery_tag),
                    other => panic!("not a confirm: {other:?}"),
                })
            })
            .collect()
    }

    #[test]
    fn a_confirm_waits_for_its_homes_acknowledgement_and_keeps_its_connections_order() {
        let t0 = Instant::now();
        let mut g = ConfirmGate::default();
        g.attach(2);
        g.attach(3);
        let a = g.queued(2).expect("stream");
        let b = g.queued(3).expect("stream");
        g.hold(7, vec![a, b], ack(7, 1), t0);
        // A later confirm of the same connection that needs nothing waits behind it.
        assert!(g.has_waiting(7));
        g.hold(7, vec![], ack(7, 2), t0);
        g.hold(8, vec![a], ack(8, 1), t0);
        assert_eq!(tags(&g.release(t0).0), []);
        g.acked(2, 1);
        let (released, late) = g.release(t0);
        assert_eq!((tags(&released), late), (vec![(8, 1)], 0));
        g.acked(3, 1);
        assert_eq!(tags(&g.release(t0).0), [(7, 1), (7, 2)]);
        assert!(g.is_empty());
    }

    #[test]
    fn a_home_that_goes_or_stays_silent_stops_holding_confirms() {
        let t0 = Instant::now();
        let mut g = ConfirmGate::default();
        g.attach(2);
        let n = g.queued(2).expect("stream");
        g.hold(7, vec![n], ack(7, 1), t0);
        // Its stream ends and a new one attaches: the old need no longer holds anything.
        g.attach(2);
        assert_eq!(tags(&g.release(t0).0), [(7, 1)]);
        let n = g.queued(2).expect("stream");
        g.hold(7, vec![n], ack(7, 2), t0);
        // An acknowledgement of fewer changes is not enough.
        g.acked(2, 0);
        assert_eq!(tags(&g.release(t0 + GATE_TIMEOUT / 2).0), []);
        let (released, late) = g.release(t0 + GATE_TIMEOUT);
        assert_eq!((tags(&released), late), (vec![(7, 2)], 1));
        // No stream: nothing to wait for.
        g.detach(2);
        assert_eq!(g.queued(2), None);
    }

    #[test]
    fn only_broker_acks_and_nacks_are_confirms() {
        assert!(is_confirm(&ack(1, 1)));
        let deliver = Effect::SendContent {
            conn: 1,
            channel: 1,
            method: Method::BasicDeliver(BasicDeliver::default()),
            properties: Default::default(),
            body: Default::default(),
        };
        assert!(!is_confirm(&deliver));
    }
}
