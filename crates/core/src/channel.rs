//! One AMQP channel's state: its consumers, the deliveries awaiting ack (by delivery tag), its
//! prefetch limits, flow state, and whether it is in confirm or transaction mode.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use warren_wire::{BasicProperties, BasicPublish, ShortStr};

use crate::queue::QueueId;
use crate::Millis;

/// A consumer on this channel (`basic.consume`).
#[derive(Clone, Debug)]
pub(crate) struct Consumer {
    pub(crate) tag: ShortStr,
    pub(crate) queue: QueueId,
    pub(crate) no_ack: bool,
    /// Per-consumer prefetch limit (0 = unlimited), fixed when the consumer was created.
    pub(crate) prefetch: u16,
    /// Deliveries to this consumer not yet acked.
    pub(crate) unacked: u32,
    /// Its `x-consumer-timeout` argument, if it gave one (ms).
    pub(crate) timeout: Option<Millis>,
    /// A stream consumer's next sequence number to read (its offset plus one).
    pub(crate) stream_next: Option<u64>,
    /// A consumer of a queue owned by another node's broker (queue commands).
    pub(crate) remote: Option<RemoteConsumer>,
    /// Its `x-priority` and `exclusive` flag: what it attaches with again when a replicated
    /// queue's owner changes.
    pub(crate) priority: i32,
    pub(crate) exclusive: bool,
}

/// What a channel knows of its consumer of a queue owned by another node's broker.
#[derive(Clone, Debug)]
pub(crate) struct RemoteConsumer {
    /// The owner's node; 0 for a consumer of a replicated queue attached nowhere at the
    /// moment (no leader known, or the stream to the leader broke): it attaches again when a
    /// leader is known (`broker/follow.rs`).
    pub(crate) owner: u64,
    /// Its credit is a window refilled as its deliveries go out to the client (a no-ack
    /// consumer, or one without any prefetch), not as they are settled.
    pub(crate) window: bool,
    /// Credit not yet given back: a window's, because the connection could not take more; a
    /// prefetch's, until a quarter of the prefetch is owed (`Broker::remote_grant`).
    pub(crate) owed: u32,
}

/// A delivery awaiting ack: which queue message it is and which consumer got it (none for
/// `basic.get`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Unacked {
    pub(crate) queue: QueueId,
    pub(crate) seq: u64,
    pub(crate) consumer_tag: Option<ShortStr>,
    /// When it was delivered (this broker's clock), for the consumer timeout.
    pub(crate) delivered_at: Millis,
}

/// An operation deferred by `tx.select` until `tx.commit`.
// A publish is by far the common entry; boxing it would cost an allocation per publish.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub(crate) enum TxOp {
    Publish {
        publish: BasicPublish,
        properties: BasicProperties,
        body: Bytes,
    },
    Ack {
        delivery_tag: u64,
        multiple: bool,
    },
    Nack {
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    },
}

/// The publishing mode of a channel; confirm and tx exclude each other, as in RabbitMQ.
#[derive(Clone, Debug)]
pub(crate) enum Mode {
    Plain,
    /// Publisher confirms: the sequence number the next publish gets (starting at 1).
    Confirm {
        next_publish_seq: u64,
    },
    /// Transactional: the operations since the last commit/rollback.
    Tx {
        pending: Vec<TxOp>,
    },
}

#[derive(Debug)]
pub(crate) struct Channel {
    next_delivery_tag: u64,
    pub(crate) unacked: BTreeMap<u64, Unacked>,
    pub(crate) consumers: HashMap<ShortStr, Consumer>,
    /// `basic.qos` global=false: the limit given to consumers created afterwards.
    pub(crate) prefetch_consumer: u16,
    /// `basic.qos` global=true: a limit shared by all consumers of the channel.
    pub(crate) prefetch_global: u16,
    /// `channel.flow`: when false, nothing is delivered to this channel's consumers.
    pub(crate) flow_active: bool,
    pub(crate) mode: Mode,
    /// The consumer tag of this channel's direct reply-to consumer, if any.
    pub(crate) reply_to_consumer: Option<ShortStr>,
    /// Commands proposed on behalf of this channel and not yet applied (replicated mode).
    pub(crate) in_flight: u32,
    /// Of those, publishes: a publish waits only behind the channel's other commands.
    pub(crate) publishes_in_flight: u32,
    /// Log numbers of publishes in flight whose local part a queue refused
    /// (`reject-publish`): nacked when the replicated part is applied.
    pub(crate) nack_when_applied: std::collections::BTreeSet<u64>,
    /// The channel's publishes in the log and not yet applied: their log number (see
    /// `Connection::log_numbers`) → the client's confirm number.
    pub(crate) logged: BTreeMap<u64, u64>,
    /// Methods that arrived while commands were in flight: they run, in order, once those are
    /// applied, so a client reads its own writes (a passive declare after a publish counts it).
    pub(crate) deferred: std::collections::VecDeque<crate::Input>,
    /// Replies that may only be sent once the channel's commands are applied (tx.commit-ok).
    pub(crate) replies_when_applied: Vec<warren_wire::Method>,
    /// The secret part of this channel's direct reply-to address.
    pub(crate) reply_to_key: Option<ShortStr>,
    /// The last queue declared on this channel: an empty queue name in later methods means it.
    pub(crate) last_queue: Option<ShortStr>,
    /// A non-passive `queue.declare` of a queue homed on another node, waiting for its owner:
    /// created anew if the owner answers that the queue is gone.
    pub(crate) remote_declare: Option<warren_wire::QueueDeclare>,
    /// Consumers whose `basic.consume` (true) or `basic.cancel` (false) waits for the queue
    /// owner's answer, by tag, with the method's nowait and the owner's node.
    pub(crate) awaiting_owner: HashMap<ShortStr, (bool, bool, u64)>,
    /// A method waiting for the answer of a queue's owner on that node (one at most: the
    /// channel's later methods wait for it).
    pub(crate) awaiting_answer: Option<(u64, Awaiting)>,
    /// The queue command whose answer `awaiting_answer` waits for: asked again of a new
    /// owner when a replicated queue's leadership moves (see `follow.rs`).
    pub(crate) asked: Option<crate::QueueCommand>,
    /// Delivery tags of messages whose queue's owner was lost (`Input::PeerLost`): acking,
    /// nacking or rejecting one does nothing (the owner took the message back).
    lost: std::collections::BTreeSet<u64>,
}

/// A channel's method that waits for the answer of a queue's owner on another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Awaiting {
    Get { no_ack: bool, queue: QueueId },
    Purge,
    Delete { nowait: bool },
    Declare { nowait: bool },
}

impl Channel {
    pub(crate) fn new() -> Channel {
        Channel {
            next_delivery_tag: 1,
            unacked: BTreeMap::new(),
            consumers: HashMap::new(),
            prefetch_consumer: 0,
            prefetch_global: 0,
            flow_active: true,
            mode: Mode::Plain,
            reply_to_consumer: None,
            in_flight: 0,
            publishes_in_flight: 0,
            nack_when_applied: Default::default(),
            logged: BTreeMap::new(),
            deferred: std::collections::VecDeque::new(),
            replies_when_applied: Vec::new(),
            reply_to_key: None,
            last_queue: None,
            remote_declare: None,
            awaiting_owner: HashMap::new(),
            awaiting_answer: None,
            asked: None,
            lost: Default::default(),
        }
    }

    /// Allocates the next delivery tag (1, 2, 3, ... per channel, as the spec requires).
    pub(crate) fn next_tag(&mut self) -> u64 {
        let tag = self.next_delivery_tag;
        self.next_delivery_tag += 1;
        tag
    }

    /// The unacked deliveries for which `forget` holds are forgotten: their tags stay known
    /// to the client's acks, which do nothing.
    pub(crate) fn forget_unacked(&mut self, forget: impl Fn(&Unacked) -> bool) {
        let tags: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, u)| forget(u))
            .map(|(&t, _)| t)
            .collect();
        for tag in tags {
            self.unacked.remove(&tag);
            self.lost.insert(tag);
        }
    }

    /// Whether the channel-wide (global) prefetch limit leaves room for one more delivery.
    pub(crate) fn global_credit(&self) -> bool {
        self.prefetch_global == 0 || self.unacked.len() < usize::from(self.prefetch_global)
    }

    /// Removes and returns the unacked deliveries an ack/nack with `delivery_tag`/`multiple`
    /// covers, or `None` if the tag is unknown (a 406 for the caller). Tag 0 with multiple means
    /// "everything outstanding", as the spec says.
    pub(crate) fn take_unacked(
        &mut self,
        delivery_tag: u64,
        multiple: bool,
    ) -> Option<Vec<(u64, Unacked)>> {
        if !multiple && self.lost.remove(&delivery_tag) {
            return Some(Vec::new());
        }
        if multiple {
            if delivery_tag != 0
                && !self.unacked.contains_key(&delivery_tag)
                && !self.lost.contains(&delivery_tag)
            {
                return None;
            }
            let upto = if delivery_tag == 0 {
                u64::MAX
            } else {
                delivery_tag
            };
            self.lost = self.lost.split_off(&upto.saturating_add(1));
            let keep = self.unacked.split_off(&upto.saturating_add(1));
            let taken = std::mem::replace(&mut self.unacked, keep);
            Some(taken.into_iter().collect())
        } else {
            self.unacked
                .remove(&delivery_tag)
                .map(|u| vec![(delivery_tag, u)])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unacked(seq: u64) -> Unacked {
        Unacked {
            queue: 1,
            seq,
            consumer_tag: None,
            delivered_at: 0,
        }
    }

    #[test]
    fn multiple_ack_takes_everything_up_to_the_tag() {
        let mut ch = Channel::new();
        for seq in 1..=5 {
            let tag = ch.next_tag();
            ch.unacked.insert(tag, unacked(seq));
        }
        let taken = ch.take_unacked(3, true).expect("known tag");
        assert_eq!(
            taken.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(ch.unacked.keys().copied().collect::<Vec<_>>(), vec![4, 5]);
        assert!(ch.take_unacked(3, false).is_none());
        assert_eq!(ch.take_unacked(0, true).map(|v| v.len()), Some(2));
    }
}
