//! Time-driven work, evaluated against the `now` of each input: message TTL expiry (with
//! dead-lettering) and `x-expires` queue expiry, each by the broker that decides the queue. For a
//! replicated queue both are carried out as commands ([`Op::Expire`], [`Op::RemoveQueue`]), so
//! replicas and replays agree; a local queue's expiries are its home's alone.

use super::Broker;
use crate::command::Op;
use crate::queue::QueueId;
use crate::{Effect, Millis};

impl Broker {
    pub(super) fn tick(&mut self, out: &mut Vec<Effect>) {
        self.tick_cleanup(out);
        let mut ids: Vec<QueueId> = self.queues.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if !self.decides_queue(id) {
                continue;
            }
            self.expire_queue(id, out);
            let expired = self.queues.get(&id).is_some_and(|q| {
                q.consumers.is_empty()
                    && q.args
                        .expires
                        .is_some_and(|ttl| self.now >= q.last_used.saturating_add(ttl))
            });
            if expired {
                self.propose_removal(id, out);
            }
        }
    }

    /// Asks for the expired head of a queue to go (an [`Op::Expire`]); returns whether it had
    /// one. Until the command is applied the expired messages stay, undelivered.
    pub(crate) fn expire_queue(&mut self, id: QueueId, out: &mut Vec<Effect>) -> bool {
        let now = self.now;
        if !self.queues.get(&id).is_some_and(|q| q.head_expired(now)) {
            return false;
        }
        self.submit_for_queue(id, Op::Expire { queue: id }, out);
        self.queues.get(&id).is_some_and(|q| q.head_expired(now))
    }

    /// Applies an [`Op::Expire`] at the command's time: the expired head is dead-lettered.
    pub(super) fn apply_expire(&mut self, id: QueueId, at: Millis, out: &mut Vec<Effect>) {
        let expired = match self.queues.get_mut(&id) {
            Some(q) => q.expire(at),
            None => return,
        };
        for entry in expired {
            self.dead_letter(id, entry, "expired", out);
        }
        self.deliver(id, out);
    }
}
