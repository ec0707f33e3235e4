//! Remembering which publishes a state machine already holds, so that a publish re-sent after
//! a leader change is confirmed but not enqueued twice, and removing what vanished
//! connections left behind.

use super::Broker;
use crate::command::{Op, Origin};
use crate::{ConnId, Effect, Millis};

/// A publisher (connection, channel) not heard from for this long is forgotten: a re-send of
/// one of its messages after that would be enqueued again (a duplicate, never a loss).
pub(crate) const FORGET_PUBLISHERS_AFTER_MS: Millis = 15 * 60_000;

/// How many skipped confirm numbers a publisher remembers (a broker has at most 8192 proposals
/// in flight, so a refused run is never longer).
const MAX_MISSING: u64 = 8192;

/// How often the leader looks for publishers to forget.
const FORGET_CHECK_EVERY_MS: Millis = 60_000;

/// The last confirm sequence number a state machine applied for one publishing channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Publisher {
    /// The highest confirm number applied.
    pub(crate) seq: u64,
    /// Confirm numbers below `seq` not applied (yet): their proposals were refused while
    /// later ones went through. At most [`MAX_MISSING`] are remembered.
    pub(crate) missing: std::collections::BTreeSet<u64>,
    /// The issue time of its last publish (the leader's clock, from the log).
    pub(crate) at: Millis,
}

impl Broker {
    /// Whether an applied publish is a re-send of one this state machine already holds (same
    /// origin channel, a confirm number already applied); records it if not. `exact` (state
    /// machine version 3): numbers skipped on the way up are remembered and are not re-sends;
    /// before, any number not above the highest applied was one.
    pub(super) fn is_resent(
        &mut self,
        origin: Option<Origin>,
        confirm: Option<u64>,
        at: Millis,
        exact: bool,
    ) -> bool {
        let (Some(o), Some(seq)) = (origin, confirm) else {
            return false;
        };
        let p = self
            .publishers
            .entry((o.conn, o.channel))
            .or_insert(Publisher {
                seq: 0,
                missing: Default::default(),
                at,
            });
        p.at = at;
        if seq <= p.seq {
            return !(exact && p.missing.remove(&seq));
        }
        if exact {
            let from = (p.seq + 1).max(seq.saturating_sub(MAX_MISSING));
            p.missing.extend(from..seq);
            while p.missing.len() as u64 > MAX_MISSING {
                p.missing.pop_first();
            }
        }
        p.seq = seq;
        false
    }

    /// A re-sent publish is confirmed (its first copy was committed) and not routed again.
    pub(super) fn confirm_resent(
        &mut self,
        origin: Option<Origin>,
        confirm: Option<u64>,
        out: &mut Vec<Effect>,
    ) {
        if let (Some(origin), Some(logged)) = (origin, confirm) {
            self.confirm_logged(origin, logged, false, out);
        }
    }

    /// [`Op::ConfirmSelect`]: the channel numbers its publishes from 1 again.
    pub(super) fn apply_confirm_select(&mut self, origin: Option<Origin>) {
        if let Some(o) = origin {
            self.publishers.remove(&(o.conn, o.channel));
        }
    }

    /// [`Op::ForgetPublishers`].
    pub(super) fn apply_forget_publishers(&mut self, before: Millis) {
        self.publishers.retain(|_, p| p.at >= before);
    }

    /// The periodic clean-up (from `tick`): orphaned local queues this broker decides, and (on
    /// the leader) publishers silent for a long time.
    pub(super) fn tick_cleanup(&mut self, out: &mut Vec<Effect>) {
        let now = self.now;
        // Exclusive queues whose client is gone (declared by a connection that closed while the
        // declare was being committed), used auto-delete queues without consumers, and local
        // queues declared before this node's broker started (RabbitMQ drops transient queues
        // with their node).
        let clients: std::collections::HashSet<ConnId> = self.connections.keys().copied().collect();
        let first_conn = self.config.first_conn;
        let node = self.config.node;
        let mut orphans: Vec<_> = self
            .queues
            .values()
            .filter(|q| q.is_local() && self.decides(q))
            .filter(|q| {
                q.exclusive_owner
                    .is_some_and(|owner| !clients.contains(&owner))
                    || (q.auto_delete && q.had_consumer && q.consumers.is_empty())
                    || (q.declared_by != 0
                        && crate::node_of(q.declared_by) == node
                        && q.declared_by < first_conn)
            })
            .map(|q| q.id)
            .collect();
        orphans.sort_unstable();
        for id in orphans {
            self.propose_removal(id, out);
        }
        if self.leading && now >= self.next_publisher_check {
            self.next_publisher_check = now.saturating_add(FORGET_CHECK_EVERY_MS);
            let before = now.saturating_sub(FORGET_PUBLISHERS_AFTER_MS);
            if self.publishers.values().any(|p| p.at < before) {
                self.submit(None, Op::ForgetPublishers { before }, out);
            }
        }
    }
}
