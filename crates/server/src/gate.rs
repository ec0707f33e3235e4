//! Publisher confirms that wait for forwarded messages (see `warren_core::Effect::Forward`).
//!
//! A publish that reaches a local queue homed on another node is forwarded to that node's
//! broker. Its confirm leaves only once every home involved has taken the message: as a
//! `basic.ack` if all took it, as a `basic.nack` if one refused it (`x-overflow`
//! `reject-publish`), its link to that node broke before the node said it had it, or the node
//! did not answer within [`GATE_TIMEOUT`]. A nack tells the publisher to publish again: at
//! worst a duplicate, never a confirmed message that nobody holds.
//!
//! Per connection, confirms leave in the order the broker made them: a confirm that needs
//! nothing waits behind one that waits. Deterministic and without I/O: the broker task feeds it
//! and sends what it releases.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use warren_core::{ConnId, Effect};
use warren_wire::{BasicNack, Method};

/// How long a confirm waits for a home's answer before it leaves as a nack.
pub(crate) const GATE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one confirm waits for: the forward numbered `seq` to node `home`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Need {
    home: u64,
    seq: u64,
}

#[derive(Debug, Default)]
struct Home {
    /// The last forward number given out.
    queued: u64,
    /// Every forward up to this one was handled by the home.
    acked: u64,
    /// Forwards the home refused.
    refused: BTreeSet<u64>,
    /// Forwards up to this one that were not acknowledged are lost (their link broke).
    lost_upto: u64,
}

#[derive(Debug)]
struct Held {
    needs: Vec<Need>,
    since: Instant,
    effect: Effect,
}

#[derive(Debug, Default)]
pub(crate) struct ConfirmGate {
    homes: HashMap<u64, Home>,
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

/// How a need stands.
#[derive(PartialEq)]
enum Met {
    Yes,
    No,
    Waiting,
}

impl ConfirmGate {
    /// One more message is forwarded to `home`: its number, and what a confirm that depends on
    /// it waits for.
    pub(crate) fn queued(&mut self, home: u64) -> (u64, Need) {
        let h = self.homes.entry(home).or_default();
        h.queued += 1;
        let seq = h.queued;
        (seq, Need { home, seq })
    }

    /// `home` handled every forward up to `upto`.
    pub(crate) fn acked(&mut self, home: u64, upto: u64) {
        if let Some(h) = self.homes.get_mut(&home) {
            h.acked = h.acked.max(upto);
        }
    }

    /// `home` refused forward `seq`.
    pub(crate) fn refused(&mut self, home: u64, seq: u64) {
        if let Some(h) = self.homes.get_mut(&home) {
            h.refused.insert(seq);
        }
    }

    /// The link to `home` broke: the forwards up to `upto` it had not acknowledged are lost.
    pub(crate) fn lost(&mut self, home: u64, upto: u64) {
        if let Some(h) = self.homes.get_mut(&home) {
            h.lost_upto = h.lost_upto.max(upto);
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

    fn met(&self, need: &Need) -> Met {
        let Some(h) = self.homes.get(&need.home) else {
            return Met::No;
        };
        if h.refused.contains(&need.seq) {
            Met::No
        } else if h.acked >= need.seq {
            Met::Yes
        } else if h.lost_upto >= need.seq {
            Met::No
        } else {
            Met::Waiting
        }
    }

    /// The confirms that may leave now, by connection and in order (turned into nacks where a
    /// home refused, was lost or stayed silent); and how many were nacked for that.
    pub(crate) fn release(&mut self, now: Instant) -> (Vec<(ConnId, Vec<Effect>)>, usize) {
        let mut out = Vec::new();
        let mut failed = 0;
        let conns: Vec<ConnId> = self.held.keys().copied().collect();
        for conn in conns {
            let mut ready = Vec::new();
            while let Some(front) = self.held.get(&conn).and_then(|q| q.front()) {
                let states: Vec<Met> = front.needs.iter().map(|n| self.met(n)).collect();
                let late = now.duration_since(front.since) >= GATE_TIMEOUT;
                let waiting = states.contains(&Met::Waiting);
                if waiting && !late {
                    break;
                }
                let ok = states.iter().all(|m| *m == Met::Yes);
                if let Some(h) = self.held.get_mut(&conn).and_then(VecDeque::pop_front) {
                    if ok {
                        ready.push(h.effect);
                    } else {
                        failed += 1;
                        ready.push(as_nack(h.effect));
                    }
                }
            }
            if self.held.get(&conn).is_some_and(VecDeque::is_empty) {
                self.held.remove(&conn);
            }
            if !ready.is_empty() {
                out.push((conn, ready));
            }
        }
        self.forget_settled();
        (out, failed)
    }

    /// Refusals nothing can wait for any more are forgotten.
    fn forget_settled(&mut self) {
        let oldest: HashMap<u64, u64> = self
            .held
            .values()
            .flatten()
            .flat_map(|h| h.needs.iter())
            .fold(HashMap::new(), |mut m, n| {
                let e = m.entry(n.home).or_insert(n.seq);
                *e = (*e).min(n.seq);
                m
            });
        for (home, h) in &mut self.homes {
            match oldest.get(home) {
                Some(&seq) => h.refused = h.refused.split_off(&seq),
                None => h.refused.clear(),
            }
        }
    }
}

/// A confirm turned into a nack (a home did not take the message).
fn as_nack(effect: Effect) -> Effect {
    match effect {
        Effect::Send {
            conn,
            channel,
            method: Method::BasicAck(a),
        } => Effect::Send {
            conn,
            channel,
            method: Method::BasicNack(BasicNack {
                delivery_tag: a.delivery_tag,
                multiple: a.multiple,
                requeue: false,
            }),
        },
        other => other,
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

    /// (connection, tag, acked) of what was released.
    fn confirms(released: &[(ConnId, Vec<Effect>)]) -> Vec<(ConnId, u64, bool)> {
        released
            .iter()
            .flat_map(|(c, list)| {
                list.iter().map(move |e| match e {
                    Effect::Send {
                        method: Method::BasicAck(a),
                        ..
                    } => (*c, a.delivery_tag, true),
                    Effect::Send {
                        method: Method::BasicNack(n),
                        ..
                    } => (*c, n.delivery_tag, false),
                    other => panic!("not a confirm: {other:?}"),
                })
            })
            .collect()
    }

    #[test]
    fn a_confirm_waits_for_its_homes_and_keeps_its_connections_order() {
        let t0 = Instant::now();
        let mut g = ConfirmGate::default();
        let (_, a) = g.queued(2);
        let (_, b) = g.queued(3);
        g.hold(7, vec![a, b], ack(7, 1), t0);
        // A later confirm of the same connection that needs nothing waits behind it.
        assert!(g.has_waiting(7));
        g.hold(7, vec![], ack(7, 2), t0);
        g.hold(8, vec![a], ack(8, 1), t0);
        assert_eq!(confirms(&g.release(t0).0), []);
        g.acked(2, 1);
        let (released, failed) = g.release(t0);
        assert_eq!((confirms(&released), failed), (vec![(8, 1, true)], 0));
        g.acked(3, 1);
        assert_eq!(confirms(&g.release(t0).0), [(7, 1, true), (7, 2, true)]);
        assert!(g.is_empty());
    }

    #[test]
    fn a_refused_lost_or_silent_forward_turns_its_confirm_into_a_nack() {
        let t0 = Instant::now();
        let mut g = ConfirmGate::default();
        let (_, refused) = g.queued(2);
        let (_, lost) = g.queued(2);
        let (_, silent) = g.queued(3);
        g.hold(7, vec![refused], ack(7, 1), t0);
        g.hold(8, vec![lost], ack(8, 1), t0);
        g.hold(9, vec![silent], ack(9, 1), t0);
        g.refused(2, 1);
        g.acked(2, 1);
        g.lost(2, 2);
        let (released, failed) = g.release(t0);
        assert_eq!((confirms(&released).len(), failed), (2, 2), "{released:?}");
        assert!(confirms(&released).iter().all(|(_, _, ok)| !ok));
        assert_eq!(confirms(&g.release(t0 + GATE_TIMEOUT / 2).0), []);
        assert_eq!(confirms(&g.release(t0 + GATE_TIMEOUT).0), [(9, 1, false)]);
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
