//! Credit flow of a node's publishing connections, as the broker task applies it.
//!
//! A connection is paused ([`Effect::Flow`]: its socket is not read) while either pipeline its
//! publishes enter is full, and read again once both have drained to half:
//!
//! * the log: the core counts the connection's publishes proposed and not applied yet and
//!   pauses it at its credit (`BrokerConfig::publish_credit`);
//! * forwards: messages for a transient queue homed on another node travel on the link to that
//!   node ([`warren_core::Effect::Forward`]); the ones its home has not acknowledged yet are
//!   counted here, per connection, against the same credit.
//!
//! The core's flow effects pass through [`FlowGate::core_flow`], so the connection hears one
//! state made of both. Deterministic and without I/O: the broker task feeds it.

use std::collections::{HashMap, VecDeque};

use warren_core::{ConnId, Effect};

#[derive(Debug, Default)]
struct ConnFlow {
    /// Forwards of the connection's publishes not acknowledged by their home yet.
    forwards: u32,
    /// The core paused the connection (its publishes fill the log's pipeline).
    log_paused: bool,
    /// What the connection was last told.
    paused: bool,
}

impl ConnFlow {
    /// Nothing to remember: no forward out, not paused.
    fn is_idle(&self) -> bool {
        self.forwards == 0 && !self.log_paused && !self.paused
    }

    /// The effect that tells the connection its combined state, if that changed.
    fn update(&mut self, conn: ConnId, credit: u32) -> Option<Effect> {
        let forwards_full = if self.paused && !self.log_paused {
            self.forwards > credit / 2
        } else {
            self.forwards >= credit
        };
        let paused = self.log_paused || forwards_full;
        if paused == self.paused {
            return None;
        }
        self.paused = paused;
        Some(Effect::Flow { conn, paused })
    }
}

#[derive(Debug)]
pub(crate) struct FlowGate {
    /// A connection's credit, the core's (`warren_core::Broker::publish_credit`).
    credit: u32,
    conns: HashMap<ConnId, ConnFlow>,
    /// Per home node, its unacknowledged forwards that a publish of a connection made, by
    /// forward number (ascending).
    forwards: HashMap<u64, VecDeque<(u64, ConnId)>>,
}

impl FlowGate {
    pub(crate) fn new(credit: u32) -> FlowGate {
        FlowGate {
            credit,
            conns: HashMap::new(),
            forwards: HashMap::new(),
        }
    }

    /// A publish of `conn` was forwarded to `home` as forward number `seq`.
    pub(crate) fn forwarded(&mut self, conn: ConnId, home: u64, seq: u64) -> Option<Effect> {
        self.forwards
            .entry(home)
            .or_default()
            .push_back((seq, conn));
        let c = self.conns.entry(conn).or_default();
        c.forwards += 1;
        c.update(conn, self.credit)
    }

    /// `home` acknowledged (or its link lost) every forward up to `upto`: the effects that
    /// resume connections.
    pub(crate) fn settled(&mut self, home: u64, upto: u64, out: &mut Vec<Effect>) {
        let Some(queue) = self.forwards.get_mut(&home) else {
            return;
        };
        while let Some(&(seq, conn)) = queue.front() {
            if seq > upto {
                break;
            }
            queue.pop_front();
            if let Some(c) = self.conns.get_mut(&conn) {
                c.forwards = c.forwards.saturating_sub(1);
                // Forwards only fall here: at most one resume per connection.
                out.extend(c.update(conn, self.credit));
                if c.is_idle() {
                    self.conns.remove(&conn);
                }
            }
        }
        if queue.is_empty() {
            self.forwards.remove(&home);
        }
    }

    /// The core paused or resumed `conn` for the log: the effect for the connection, if its
    /// combined state changed.
    pub(crate) fn core_flow(&mut self, conn: ConnId, paused: bool) -> Option<Effect> {
        let c = self.conns.entry(conn).or_default();
        c.log_paused = paused;
        let effect = c.update(conn, self.credit);
        if c.is_idle() {
            self.conns.remove(&conn);
        }
        effect
    }

    /// The connections told they are paused.
    pub(crate) fn paused(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns
            .iter()
            .filter(|(_, c)| c.paused)
            .map(|(&conn, _)| conn)
    }

    /// The connection is gone.
    pub(crate) fn forget(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISH_CREDIT: u32 = warren_core::DEFAULT_PUBLISH_CREDIT;

    fn paused(e: Option<Effect>) -> Option<bool> {
        e.map(|e| match e {
            Effect::Flow { conn: 7, paused } => paused,
            other => panic!("not a flow effect of 7: {other:?}"),
        })
    }

    #[test]
    fn forwards_pause_a_connection_at_its_credit_and_resume_it_at_half() {
        let mut g = FlowGate::new(PUBLISH_CREDIT);
        for seq in 1..PUBLISH_CREDIT as u64 {
            assert_eq!(paused(g.forwarded(7, 2, seq)), None);
        }
        assert_eq!(paused(g.forwarded(7, 2, PUBLISH_CREDIT as u64)), Some(true));
        assert_eq!(g.paused().collect::<Vec<_>>(), [7]);
        // Another node's forwards settle nothing of node 2's.
        let mut out = Vec::new();
        g.settled(3, u64::MAX, &mut out);
        assert!(out.is_empty());
        g.settled(2, u64::from(PUBLISH_CREDIT / 2) - 1, &mut out);
        assert!(out.is_empty(), "resumed above half: {out:?}");
        g.settled(2, u64::from(PUBLISH_CREDIT / 2), &mut out);
        assert_eq!(
            out,
            [Effect::Flow {
                conn: 7,
                paused: false
            }]
        );
        assert_eq!(g.paused().count(), 0);
    }

    #[test]
    fn the_connection_hears_one_state_made_of_the_log_and_the_forwards() {
        let mut g = FlowGate::new(PUBLISH_CREDIT);
        assert_eq!(paused(g.core_flow(7, true)), Some(true));
        for seq in 1..=u64::from(PUBLISH_CREDIT) {
            assert_eq!(paused(g.forwarded(7, 2, seq)), None);
        }
        // The log drained, the forwards did not: still paused.
        assert_eq!(paused(g.core_flow(7, false)), None);
        let mut out = Vec::new();
        g.settled(2, u64::from(PUBLISH_CREDIT), &mut out);
        assert_eq!(
            out,
            [Effect::Flow {
                conn: 7,
                paused: false
            }]
        );
        // Paused by the log with forwards above half: read again once those are at half too.
        let base = u64::from(PUBLISH_CREDIT);
        for seq in 1..=u64::from(PUBLISH_CREDIT / 2 + 1) {
            assert_eq!(paused(g.forwarded(7, 2, base + seq)), None);
        }
        assert_eq!(paused(g.core_flow(7, true)), Some(true));
        assert_eq!(paused(g.core_flow(7, false)), None);
        let mut out = Vec::new();
        g.settled(2, base + 1, &mut out);
        assert_eq!(
            out,
            [Effect::Flow {
                conn: 7,
                paused: false
            }]
        );
        g.forget(7);
        let mut out = Vec::new();
        g.settled(2, u64::MAX, &mut out);
        assert!(out.is_empty());
    }
}
