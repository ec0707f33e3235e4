//! Queue commands: what a channel asks of a queue whose owner is another node's broker, and
//! what that owner answers (issue 19, step 2; `docs/architecture.md`, "Next: consumers as queue
//! commands"). RabbitMQ's shape: a channel process on the client's node holds delivery tags,
//! the unacked map and prefetch; a queue (`rabbit_fifo`) is driven by consume / credit /
//! settle / return / discard / cancel, wherever it lives, and answers with deliveries.
//!
//! The owner holds, per consumer, its place in the round-robin order, its priority and its
//! credit ([`crate::consumers`]), and which of its checked-out messages each remote channel
//! holds, so that it can take them back if that channel's node is lost. The channel holds
//! everything the client sees. Credit is granted relative to what the owner has spent, over
//! an ordered stream between the two nodes: a grant is never lost or reordered while the
//! stream lives, and when it breaks both sides drop what they shared
//! ([`crate::Input::PeerLost`]).
//!
//! The commands travel from the channel's broker ([`crate::Effect::ToOwner`]) to the owner's
//! ([`crate::Input::QueueCommand`]); the events back ([`crate::Effect::ToChannel`],
//! [`crate::Input::QueueEvent`]). Every command and event names its queue by id (the same on
//! every replica: queue ids come from the log) and its consumer by [`ConsumerRef`], whose
//! connection id names the channel's node.

use std::sync::Arc;

use crate::queue::ConsumerRef;
use crate::{AmqpError, Message};

/// What a channel asks of a queue's owner.
#[derive(Clone, Debug, PartialEq)]
pub enum QueueCommand {
    /// Attach a consumer with `credit` deliveries (`crate::consumers::UNLIMITED` is not sent:
    /// a consumer without a prefetch gets a window, refilled by [`QueueCommand::Credit`] as
    /// its client's socket takes the deliveries). Answered by [`QueueEvent::Consumed`].
    Consume {
        consumer: ConsumerRef,
        queue: u64,
        credit: u32,
        priority: i32,
        no_ack: bool,
        exclusive: bool,
        /// Messages of the queue the channel holds unacked for this consumer from an earlier
        /// owner (a consumer of a replicated queue attaching again after a leader change or a
        /// broken stream): checked out to it again where still ready, so that its acks of them
        /// count. Empty for a new consumer.
        held: Vec<u64>,
    },
    /// `credit` more deliveries for the consumer.
    Credit {
        consumer: ConsumerRef,
        queue: u64,
        credit: u32,
    },
    /// Acked: the messages leave the queue.
    Settle { queue: u64, seqs: Vec<u64> },
    /// Requeued (`basic.nack`/`basic.reject` with requeue, `basic.recover`, a closed channel):
    /// the messages go back to their places, marked redelivered.
    Return { queue: u64, seqs: Vec<u64> },
    /// Rejected without requeue: the messages leave the queue and are dead-lettered.
    Discard { queue: u64, seqs: Vec<u64> },
    /// Detach the consumer (its delivered messages stay with its channel until settled or
    /// returned). Answered by [`QueueEvent::CancelOk`], after the queue is removed if it was
    /// an auto-delete queue's last consumer.
    Cancel { consumer: ConsumerRef, queue: u64 },
    /// `basic.get` of the channel `consumer` names (its tag is empty). Answered by
    /// [`QueueEvent::Got`] or [`QueueEvent::GotNothing`] once the owner has applied the log
    /// up to `applied`, the index the channel's broker had applied when it sent the get (so
    /// that what the channel's earlier methods logged, a requeue that dead-letters, counts).
    Get {
        consumer: ConsumerRef,
        queue: u64,
        no_ack: bool,
        applied: u64,
    },
    /// `queue.purge` of the channel `consumer` names (its tag is empty): the ready messages
    /// go. Answered by [`QueueEvent::Purged`] if `reply` (not for a `nowait` purge).
    Purge {
        consumer: ConsumerRef,
        queue: u64,
        reply: bool,
    },
    /// `queue.delete` of the channel `consumer` names (its tag is empty), with its conditions:
    /// the owner decides and proposes the removal. Answered by [`QueueEvent::Deleted`].
    Delete {
        consumer: ConsumerRef,
        queue: u64,
        if_unused: bool,
        if_empty: bool,
    },
    /// `queue.declare` (passive, or a redeclare the channel's broker has checked against the
    /// replicated declaration) of the channel `consumer` names (its tag is empty): the queue
    /// is used (`x-expires` starts again). Answered by [`QueueEvent::Declared`] if `reply`
    /// (not for a `nowait` declare).
    Declare {
        consumer: ConsumerRef,
        queue: u64,
        reply: bool,
    },
}

impl QueueCommand {
    /// The queue the command is about.
    pub fn queue(&self) -> u64 {
        match self {
            QueueCommand::Consume { queue, .. }
            | QueueCommand::Credit { queue, .. }
            | QueueCommand::Settle { queue, .. }
            | QueueCommand::Return { queue, .. }
            | QueueCommand::Discard { queue, .. }
            | QueueCommand::Cancel { queue, .. }
            | QueueCommand::Get { queue, .. }
            | QueueCommand::Purge { queue, .. }
            | QueueCommand::Delete { queue, .. }
            | QueueCommand::Declare { queue, .. } => *queue,
        }
    }

    /// The consumer the command is about, where it names one.
    pub fn consumer(&self) -> Option<&ConsumerRef> {
        match self {
            QueueCommand::Consume { consumer, .. }
            | QueueCommand::Credit { consumer, .. }
            | QueueCommand::Cancel { consumer, .. }
            | QueueCommand::Get { consumer, .. }
            | QueueCommand::Purge { consumer, .. }
            | QueueCommand::Delete { consumer, .. }
            | QueueCommand::Declare { consumer, .. } => Some(consumer),
            QueueCommand::Settle { .. }
            | QueueCommand::Return { .. }
            | QueueCommand::Discard { .. } => None,
        }
    }
}

/// A message an owner delivers to a consumer on another node; `seq` names it in later commands.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub consumer: ConsumerRef,
    pub queue: u64,
    pub seq: u64,
    pub redelivered: bool,
    pub delivery_count: u32,
    pub message: Arc<Message>,
}

/// What a queue's owner tells a channel.
#[derive(Clone, Debug, PartialEq)]
pub enum QueueEvent {
    /// The answer to [`QueueCommand::Consume`]: `None`, or the error the channel closes with
    /// (no such queue, in exclusive use).
    Consumed {
        consumer: ConsumerRef,
        queue: u64,
        error: Option<AmqpError>,
    },
    /// A message for the consumer.
    Deliver(Delivery),
    /// The answer to [`QueueCommand::Cancel`]. (A queue deleted under its consumers needs no
    /// event: every broker removes it when the removal is applied, and the channel's broker
    /// cancels its consumers then.)
    CancelOk { consumer: ConsumerRef, queue: u64 },
    /// The answer to [`QueueCommand::Get`] with a message (its consumer's tag is empty), and
    /// how many stay ready.
    Got {
        delivery: Delivery,
        message_count: u32,
    },
    /// The answer to [`QueueCommand::Get`] without one: the queue is empty (`None`), or the
    /// error the channel closes with (the queue went).
    GotNothing {
        consumer: ConsumerRef,
        queue: u64,
        error: Option<AmqpError>,
    },
    /// The answer to [`QueueCommand::Purge`]: how many messages went, or the error the
    /// channel closes with (the queue went).
    Purged {
        consumer: ConsumerRef,
        queue: u64,
        message_count: u32,
        error: Option<AmqpError>,
    },
    /// The answer to [`QueueCommand::Delete`]: the removal is proposed, with the count of
    /// ready messages it takes (the channel answers once its own broker has applied it), or
    /// the error the channel closes with (in use, not empty).
    Deleted {
        consumer: ConsumerRef,
        queue: u64,
        message_count: u32,
        error: Option<AmqpError>,
    },
    /// The answer to [`QueueCommand::Declare`]: the owner's counts of ready messages and
    /// consumers (remote ones included), or the error the channel closes with (the queue went).
    Declared {
        consumer: ConsumerRef,
        queue: u64,
        message_count: u32,
        consumer_count: u32,
        error: Option<AmqpError>,
    },
}

impl QueueEvent {
    /// The queue the event is about.
    pub fn queue(&self) -> u64 {
        match self {
            QueueEvent::Deliver(d) => d.queue,
            QueueEvent::Got { delivery, .. } => delivery.queue,
            QueueEvent::Consumed { queue, .. }
            | QueueEvent::CancelOk { queue, .. }
            | QueueEvent::GotNothing { queue, .. }
            | QueueEvent::Purged { queue, .. }
            | QueueEvent::Deleted { queue, .. }
            | QueueEvent::Declared { queue, .. } => *queue,
        }
    }
}
