//! Leading, and the home copies of transient queues (see [`crate::mirror`]).
//!
//! The deciding broker records every change to the messages of a local queue whose home is
//! another node (`Queue::set_journal`) and sends it there ([`Broker::flush_mirror`]). The home,
//! a broker that does not decide, keeps the copy apart from its queues ([`Broker::apply_mirror`]).
//! A new leader takes its own copies when it starts leading and each other home's when that
//! node's relay stream attaches ([`Broker::home_attached`]); a leader that stops leading keeps
//! the contents of the queues it is the home of as its copies (`restore`).

use std::collections::BTreeMap;

use super::Broker;
use crate::mirror::node_of;
use crate::queue::{Queue, QueueId};
use crate::{Effect, MirrorChange, MirrorEntry, MirrorQueue, Origin};

impl Broker {
    /// Whether this broker decides: set by the runtime when its node starts or stops leading
    /// (always true unless replicated), with the Raft term of the leadership. A broker that
    /// stops leading must also be reset to the log's view ([`Broker::reset_to_log_state`]),
    /// which keeps the contents of the transient queues this node is the home of as its copies
    /// and drops the others.
    ///
    /// A new leadership numbers the messages of local queues from `term << 32` on, so a home's
    /// copy, taken later, goes before the messages enqueued since, in their original order.
    pub fn set_leading(&mut self, leading: bool, term: u64) {
        self.leading = leading || !self.config.replicated;
        self.homes_taken.clear();
        if !self.config.replicated {
            return;
        }
        if leading {
            let base = term << 32;
            let copies = std::mem::take(&mut self.home_copies);
            for q in self.queues.values_mut().filter(|q| q.is_local()) {
                q.raise_next_seq(base);
            }
            for (id, entries) in copies {
                if let Some(q) = self.queues.get_mut(&id).filter(|q| q.is_local()) {
                    q.merge_home_copy(entries.into_values());
                }
            }
            self.homes_taken.insert(self.config.node);
        }
        let ids: Vec<QueueId> = self.queues.keys().copied().collect();
        for id in ids {
            self.refresh_journal(id);
        }
    }

    /// The node whose copy of queue `q` this broker must keep current, if any.
    fn mirror_home(&self, q: &Queue) -> Option<u64> {
        (self.config.replicated
            && self.leading
            && q.is_local()
            && q.home != 0
            && q.home != self.config.node)
            .then_some(q.home)
    }

    /// Turns the recording of queue `id`'s changes on or off, as its home needs them.
    pub(super) fn refresh_journal(&mut self, id: QueueId) {
        let on = self
            .queues
            .get(&id)
            .is_some_and(|q| self.mirror_home(q).is_some());
        if let Some(q) = self.queues.get_mut(&id) {
            q.set_journal(on);
        }
    }

    /// The home of a local queue declared through `origin`: the node of its connection.
    pub(super) fn home_of(origin: Option<Origin>) -> u64 {
        origin.map_or(0, |o| node_of(o.conn))
    }

    /// Sends the home of queue `id` the changes recorded since the last flush.
    pub(crate) fn flush_mirror(&mut self, id: QueueId, out: &mut Vec<Effect>) {
        let Some(q) = self.queues.get_mut(&id) else {
            return;
        };
        let changes = q.take_journal();
        if !changes.is_empty() {
            out.push(Effect::Mirror {
                home: q.home,
                changes,
            });
        }
    }

    /// This node's copies of the transient queues it is the home of (offered to a new leader
    /// when the relay stream to it attaches), by queue id.
    pub fn home_copies(&self) -> Vec<MirrorQueue> {
        let mut copies: Vec<MirrorQueue> = self
            .home_copies
            .iter()
            .map(|(&queue, entries)| MirrorQueue {
                queue,
                entries: entries.values().cloned().collect(),
            })
            .collect();
        copies.sort_by_key(|c| c.queue);
        copies
    }

    /// Whether a copy may be kept for queue `id`: it exists, or is declared by a command this
    /// replica has not applied yet (queue ids only grow).
    fn copy_wanted(&self, id: QueueId) -> bool {
        id >= self.next_queue_id || self.queues.get(&id).is_some_and(Queue::is_local)
    }

    /// Applies the deciding broker's changes to this node's copies ([`crate::Input::Mirror`]).
    pub(super) fn apply_mirror(&mut self, changes: Vec<MirrorChange>) {
        if self.leading {
            return;
        }
        for change in changes {
            match change {
                MirrorChange::Store { queue, entry } => {
                    if self.copy_wanted(queue) {
                        self.home_copies
                            .entry(queue)
                            .or_default()
                            .insert(entry.seq, entry);
                    }
                }
                MirrorChange::Drop { queue, seqs } => {
                    if let Some(copy) = self.home_copies.get_mut(&queue) {
                        for seq in seqs {
                            copy.remove(&seq);
                        }
                        if copy.is_empty() {
                            self.home_copies.remove(&queue);
                        }
                    }
                }
                MirrorChange::Reset { queues } => {
                    self.home_copies.clear();
                    for mq in queues {
                        if mq.entries.is_empty() || !self.copy_wanted(mq.queue) {
                            continue;
                        }
                        let copy: BTreeMap<u64, MirrorEntry> =
                            mq.entries.into_iter().map(|e| (e.seq, e)).collect();
                        self.home_copies.insert(mq.queue, copy);
                    }
                }
            }
        }
    }

    /// A node's relay stream attached to this deciding broker ([`crate::Input::HomeAttached`]).
    pub(super) fn home_attached(
        &mut self,
        node: u64,
        copies: Vec<MirrorQueue>,
        out: &mut Vec<Effect>,
    ) {
        if !self.leading || !self.config.replicated || node == 0 || node == self.config.node {
            return;
        }
        let mut merged = Vec::new();
        if self.homes_taken.insert(node) {
            for mq in copies {
                if let Some(q) = self
                    .queues
                    .get_mut(&mq.queue)
                    .filter(|q| q.is_local() && q.home == node)
                {
                    if q.merge_home_copy(mq.entries) > 0 {
                        merged.push(mq.queue);
                    }
                }
            }
        }
        let mut ids: Vec<QueueId> = self
            .queues
            .values()
            .filter(|q| q.is_local() && q.home == node)
            .map(|q| q.id)
            .collect();
        ids.sort_unstable();
        let mut queues = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(q) = self.queues.get_mut(&id) {
                // The reset carries everything recorded so far.
                q.take_journal();
                queues.push(MirrorQueue {
                    queue: id,
                    entries: q.mirror_entries(),
                });
            }
        }
        out.push(Effect::Mirror {
            home: node,
            changes: vec![MirrorChange::Reset { queues }],
        });
        for id in merged {
            self.deliver(id, out);
        }
    }

    /// Before the queues are replaced (a reset to the log's view, a snapshot installed): the
    /// contents of local queues this node is the home of become its copies (all of them may
    /// have been delivered: a new leader marks them redelivered).
    pub(super) fn keep_own_copies(&mut self) {
        if !self.config.replicated || self.config.node == 0 {
            return;
        }
        let node = self.config.node;
        for q in self.queues.values() {
            if !q.is_local() || q.home != node {
                continue;
            }
            let entries = q.mirror_entries();
            if entries.is_empty() {
                continue;
            }
            let copy = self.home_copies.entry(q.id).or_default();
            for e in entries {
                copy.insert(e.seq, e);
            }
        }
    }

    /// After the queues were replaced: copies of queues that are gone are dropped, and every
    /// queue records changes as its home needs them.
    pub(super) fn after_queues_replaced(&mut self) {
        let wanted: Vec<QueueId> = self
            .home_copies
            .keys()
            .copied()
            .filter(|&id| self.copy_wanted(id))
            .collect();
        self.home_copies.retain(|id, _| wanted.contains(id));
        let ids: Vec<QueueId> = self.queues.keys().copied().collect();
        for id in ids {
            self.refresh_journal(id);
        }
    }

    /// A queue is gone: so is this node's copy of it.
    pub(super) fn forget_copy(&mut self, id: QueueId) {
        self.home_copies.remove(&id);
    }
}
