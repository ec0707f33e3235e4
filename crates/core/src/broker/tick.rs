//! Time-driven work, evaluated against the `now` of each input: message TTL expiry (with
//! dead-lettering) and `x-expires` queue expiry.

use super::Broker;
use crate::queue::QueueId;
use crate::Effect;

impl Broker {
    pub(super) fn tick(&mut self, out: &mut Vec<Effect>) {
        let mut ids: Vec<QueueId> = self.queues.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.expire_queue(id, out);
            let expired = self.queues.get(&id).is_some_and(|q| {
                q.consumers.is_empty()
                    && q.args
                        .expires
                        .is_some_and(|ttl| self.now >= q.last_used.saturating_add(ttl))
            });
            if expired {
                self.remove_queue(id, out);
            }
        }
    }

    /// Dead-letters (or drops) the messages at the head of a queue whose TTL has passed.
    pub(crate) fn expire_queue(&mut self, id: QueueId, out: &mut Vec<Effect>) {
        let now = self.now;
        let expired = match self.queues.get_mut(&id) {
            Some(q) => q.expire(now),
            None => return,
        };
        for entry in expired {
            self.dead_letter(id, entry, "expired", out);
        }
    }
}
