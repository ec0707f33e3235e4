//! What a restart keeps: after a node replays its log it applies [`Op::Recover`], which drops
//! what RabbitMQ does not keep across a restart (non-durable exchanges, non-durable and
//! exclusive queues, non-persistent messages of queues other than quorum queues) and marks every
//! message left as redelivered.

use super::Broker;
use crate::Effect;

impl Broker {
    pub(super) fn apply_recover(&mut self, version: u32, out: &mut Vec<Effect>) {
        let transient_queues: Vec<_> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.durable || q.exclusive_owner.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in transient_queues {
            self.remove_queue(id, out);
        }
        let transient_exchanges: Vec<_> = self
            .vhosts
            .iter()
            .flat_map(|(vhost, v)| {
                v.exchanges
                    .values()
                    .filter(|x| !x.durable)
                    .map(move |x| (vhost.clone(), x.name.clone()))
            })
            .collect();
        for (vhost, name) in transient_exchanges {
            self.remove_exchange(&vhost, &name);
        }
        for q in self.queues.values_mut() {
            // State machine version 8: a quorum queue keeps every message.
            let keep_all = version >= 8 && (q.is_quorum() || q.is_stream());
            q.keep_after_restart(keep_all);
        }
    }
}

impl Broker {
    /// [`crate::Op::TakeOver`]: what a leader change ends (see its docs). Local queues are
    /// their homes' business: a leader change does not touch them.
    pub(super) fn apply_take_over(&mut self, version: u32, out: &mut Vec<Effect>) {
        if version >= 2 {
            for q in self.queues.values_mut().filter(|q| !q.is_local()) {
                q.mark_all_redelivered();
            }
            return;
        }
        let orphaned: Vec<_> = self
            .queues
            .iter()
            .filter(|(_, q)| {
                q.exclusive_owner.is_some()
                    || (q.auto_delete && q.had_consumer && q.consumers.is_empty())
            })
            .map(|(id, _)| *id)
            .collect();
        for id in orphaned {
            self.remove_queue(id, out);
        }
        for q in self.queues.values_mut() {
            q.mark_all_redelivered();
        }
    }
}
