//! A queue's consumers as the queue's owner sees them (RabbitMQ's `rabbit_fifo` consumers): who
//! they are, in which order they are offered messages, their priority, whether they settle by
//! acking, and their **credit**: how many more deliveries each may take.
//!
//! The owner never reads a channel's prefetch or its unacked deliveries. The channel grants
//! credit — its prefetch when the consumer attaches, then one for each of its deliveries that is
//! acked, rejected or returned — and the owner spends one per delivery. That is the seam issue
//! 19 puts between a channel (on the node that holds the client's socket) and a queue's owner
//! (the leader of its Raft group, or a transient queue's home): credit crosses it, tags and
//! unacked maps do not. What the owner still asks the channel at each delivery (`open` in
//! [`QueueConsumers::next`]) is whether its channel can take a delivery at all now: flow,
//! global prefetch and the connection's back-pressure.

use std::collections::{HashMap, VecDeque};

use crate::queue::ConsumerRef;

/// The credit of a consumer that is not limited by a prefetch count: a no-ack consumer, one
/// whose channel set no per-consumer prefetch, and a stream's (which reads by offset).
pub(crate) const UNLIMITED: u32 = u32::MAX;

/// One consumer of a queue.
#[derive(Clone, Debug)]
struct Checkout {
    id: ConsumerRef,
    /// Deliveries it may still take ([`UNLIMITED`]: as many as its channel can).
    credit: u32,
    /// Its `x-priority` (0 unless given).
    priority: i32,
    /// A no-ack consumer: its deliveries are settled when made.
    no_ack: bool,
    /// Its channel is on another node's broker: its deliveries leave as queue events.
    remote: bool,
}

/// A queue's consumers in round-robin order: the front is offered the next message.
#[derive(Clone, Debug, Default)]
pub(crate) struct QueueConsumers {
    order: VecDeque<Checkout>,
    /// How many consumers gave a priority other than 0: while none did, a delivery takes the
    /// first consumer that can (plain round-robin) without looking at the others.
    prioritised: usize,
    /// The consumer that holds the queue exclusively (`basic.consume` exclusive=true).
    exclusive: Option<ConsumerRef>,
    /// Checked-out messages held by channels on other nodes, and by which consumer: taken
    /// back if that node is lost. (A channel of this broker gives its messages back itself.)
    held: HashMap<u64, ConsumerRef>,
}

/// How a consumer attaches, besides its credit.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Attach {
    /// Its `x-priority`.
    pub(crate) priority: i32,
    pub(crate) no_ack: bool,
    /// `basic.consume` exclusive=true.
    pub(crate) exclusive: bool,
    /// Its channel is on another node's broker.
    pub(crate) remote: bool,
}

/// A delivery the owner decided: the consumer and whether it settles on delivery (no-ack).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chosen {
    pub(crate) consumer: ConsumerRef,
    pub(crate) no_ack: bool,
    /// Its channel is on another node's broker.
    pub(crate) remote: bool,
}

impl QueueConsumers {
    /// Attaches a consumer at the back of the round-robin order with `credit`.
    pub(crate) fn add(&mut self, id: ConsumerRef, credit: u32, attach: Attach) {
        let Attach {
            priority,
            no_ack,
            exclusive,
            remote,
        } = attach;
        if exclusive {
            self.exclusive = Some(id.clone());
        }
        if priority != 0 {
            self.prioritised += 1;
        }
        self.order.push_back(Checkout {
            id,
            credit,
            priority,
            no_ack,
            remote,
        });
    }

    /// Detaches the consumers for which `keep` is false.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&ConsumerRef) -> bool) {
        self.order.retain(|c| keep(&c.id));
        self.prioritised = self.order.iter().filter(|c| c.priority != 0).count();
        if self.exclusive.as_ref().is_some_and(|c| !keep(c)) {
            self.exclusive = None;
        }
    }

    /// Moves consumer `id` to the front of the order (a single-active-consumer queue's active
    /// one); nothing if it is not attached.
    pub(crate) fn promote(&mut self, id: &ConsumerRef) {
        if let Some(i) = self.order.iter().position(|c| &c.id == id) {
            if let Some(c) = self.order.remove(i) {
                self.order.push_front(c);
            }
        }
    }

    /// Detaches one consumer.
    pub(crate) fn remove(&mut self, id: &ConsumerRef) {
        self.retain(|c| c != id);
    }

    /// Detaches every consumer (the messages held by other nodes' channels stay recorded).
    pub(crate) fn clear(&mut self) {
        self.order.clear();
        self.prioritised = 0;
        self.exclusive = None;
    }

    /// Message `seq`, checked out to `consumer` on another node, is held by its channel.
    pub(crate) fn hold(&mut self, seq: u64, consumer: ConsumerRef) {
        self.held.insert(seq, consumer);
    }

    /// Message `seq` is no longer held by a channel of node `node` (settled or returned); false
    /// if no channel of that node holds it (a late command: the message went back to the queue
    /// when that node was lost, and may be another consumer's now).
    pub(crate) fn release(&mut self, seq: u64, node: u64) -> bool {
        match self.held.get(&seq) {
            Some(c) if crate::node_of(c.conn) == node => {
                self.held.remove(&seq);
                true
            }
            _ => false,
        }
    }

    /// Message `seq` left the queue or went back to it (applied from the log): no channel
    /// holds it any more.
    pub(crate) fn forget_held(&mut self, seq: u64) {
        self.held.remove(&seq);
    }

    /// No channel holds any message any more (this broker stopped deciding the queue).
    pub(crate) fn clear_held(&mut self) {
        self.held.clear();
    }

    /// The messages held by channels of node `node`, in order.
    pub(crate) fn held_by_node(&self, node: u64) -> Vec<u64> {
        let mut seqs: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, c)| crate::node_of(c.conn) == node)
            .map(|(&seq, _)| seq)
            .collect();
        seqs.sort_unstable();
        seqs
    }

    /// The messages held by channels of node `node`, in order, forgotten here.
    pub(crate) fn take_held_by(&mut self, node: u64) -> Vec<u64> {
        let seqs = self.held_by_node(node);
        for seq in &seqs {
            self.held.remove(seq);
        }
        seqs
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The consumers in round-robin order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &ConsumerRef> {
        self.order.iter().map(|c| &c.id)
    }

    /// The first in round-robin order (a single-active-consumer queue's active one).
    pub(crate) fn front(&self) -> Option<&ConsumerRef> {
        self.order.front().map(|c| &c.id)
    }

    pub(crate) fn exclusive(&self) -> Option<&ConsumerRef> {
        self.exclusive.as_ref()
    }

    /// A consumer's credit, `None` if it is not attached.
    pub(crate) fn credit(&self, id: &ConsumerRef) -> Option<u32> {
        self.order.iter().find(|c| &c.id == id).map(|c| c.credit)
    }

    /// The channel gives consumer `id` `n` more deliveries (its deliveries were settled or
    /// returned). Nothing for an unlimited or detached consumer.
    pub(crate) fn grant(&mut self, id: &ConsumerRef, n: u32) {
        if let Some(c) = self.order.iter_mut().find(|c| &c.id == id) {
            if c.credit != UNLIMITED {
                c.credit = c.credit.saturating_add(n).min(UNLIMITED - 1);
            }
        }
    }

    /// Chooses the consumer the next message goes to and spends one of its credits: the first
    /// in round-robin order whose channel is `open` and that has credit; with consumer
    /// priorities, the first of the highest priority among those. A single-active-consumer
    /// queue (`single`) offers its messages to its first consumer only. The chosen consumer
    /// goes to the back of the order (the next message is offered to the others of its
    /// priority first), except on a single-active-consumer queue.
    ///
    /// `open` is asked once per consumer of this broker's channels considered, in order, before
    /// its credit is looked at (it may record that a connection waits for its socket to
    /// drain); a remote consumer's credit is all there is to know.
    pub(crate) fn next(
        &mut self,
        single: bool,
        mut open: impl FnMut(&ConsumerRef) -> bool,
    ) -> Option<Chosen> {
        let prioritised = self.prioritised > 0;
        let candidates = if single {
            self.order.len().min(1)
        } else {
            self.order.len()
        };
        let mut chosen: Option<(usize, i32)> = None;
        for (i, c) in self.order.iter().take(candidates).enumerate() {
            // A channel on another node is not asked: its credit says what it can take.
            if !(c.remote || open(&c.id)) || c.credit == 0 {
                continue;
            }
            if chosen.is_none_or(|(_, best)| c.priority > best) {
                chosen = Some((i, c.priority));
            }
            if !prioritised {
                break;
            }
        }
        let (i, _) = chosen?;
        let c = if single {
            self.order.get_mut(i)?
        } else {
            let c = self.order.remove(i)?;
            self.order.push_back(c);
            self.order.back_mut()?
        };
        if c.credit != UNLIMITED {
            c.credit -= 1;
        }
        Some(Chosen {
            consumer: c.id.clone(),
            no_ack: c.no_ack,
            remote: c.remote,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(tag: &str) -> ConsumerRef {
        ConsumerRef {
            conn: 1,
            channel: 1,
            tag: tag.into(),
        }
    }

    fn no_ack() -> Attach {
        Attach {
            no_ack: true,
            ..Attach::default()
        }
    }

    fn priority(priority: i32) -> Attach {
        Attach {
            priority,
            ..Attach::default()
        }
    }

    fn tags(q: &mut QueueConsumers, n: usize, single: bool) -> Vec<String> {
        (0..n)
            .map_while(|_| q.next(single, |_| true))
            .map(|c| c.consumer.tag.to_string())
            .collect()
    }

    #[test]
    fn round_robin_spends_credit_and_skips_the_consumers_without() {
        let mut q = QueueConsumers::default();
        q.add(id("a"), 2, Attach::default());
        q.add(id("b"), 1, Attach::default());
        q.add(id("c"), UNLIMITED, no_ack());
        assert_eq!(tags(&mut q, 7, false), ["a", "b", "c", "a", "c", "c", "c"]);
        assert_eq!(q.credit(&id("a")), Some(0));
        assert_eq!(q.credit(&id("c")), Some(UNLIMITED));
        q.grant(&id("b"), 1);
        q.grant(&id("c"), 5);
        assert_eq!(q.credit(&id("c")), Some(UNLIMITED));
        // b is behind c in the order now, and has credit again.
        assert_eq!(tags(&mut q, 2, false), ["b", "c"]);
        assert_eq!(q.next(false, |c| c.tag.as_str() == "a"), None);
    }

    #[test]
    fn the_highest_priority_with_credit_and_an_open_channel_is_chosen() {
        let mut q = QueueConsumers::default();
        q.add(id("low"), UNLIMITED, Attach::default());
        q.add(id("high"), 1, priority(10));
        q.add(id("mid"), UNLIMITED, priority(5));
        assert_eq!(tags(&mut q, 3, false), ["high", "mid", "mid"]);
        let closed = |c: &ConsumerRef| c.tag.as_str() != "mid";
        assert_eq!(q.next(false, closed).map(|c| c.consumer), Some(id("low")));
        q.remove(&id("mid"));
        q.remove(&id("high"));
        assert_eq!(q.prioritised, 0);
    }

    #[test]
    fn a_single_active_consumer_queue_offers_to_its_first_consumer_only() {
        let mut q = QueueConsumers::default();
        q.add(id("first"), 2, Attach::default());
        q.add(id("second"), UNLIMITED, Attach::default());
        assert_eq!(tags(&mut q, 5, true), ["first", "first"]);
        q.remove(&id("first"));
        assert_eq!(tags(&mut q, 2, true), ["second", "second"]);
        assert_eq!(q.front(), Some(&id("second")));
    }

    #[test]
    fn open_is_asked_in_order_before_credit_and_an_exclusive_consumer_leaves_with_its_place() {
        let mut q = QueueConsumers::default();
        q.add(
            id("a"),
            0,
            Attach {
                exclusive: true,
                ..Attach::default()
            },
        );
        q.add(id("b"), 0, Attach::default());
        let mut asked = Vec::new();
        let chosen = q.next(false, |c| {
            asked.push(c.tag.to_string());
            true
        });
        assert_eq!((chosen, asked), (None, vec!["a".into(), "b".into()]));
        assert_eq!(q.exclusive(), Some(&id("a")));
        q.retain(|c| c.tag.as_str() == "b");
        assert_eq!((q.exclusive(), q.len()), (None, 1));
    }
}
