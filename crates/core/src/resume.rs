//! What a node knows of one of its client connections, so that a new leader can take the
//! connection over after a failover without the client noticing: who logged in, the vhost, and
//! each open channel's prefetch, flow, confirm numbering, next delivery tag and consumers.
//!
//! The node that holds the client's socket builds it from the traffic it relays (the leader that
//! knew the connection is gone); [`crate::Input::Resume`] re-creates the connection from it.

use warren_wire::{FieldTable, ShortStr};

use crate::ChannelId;

/// A connection to re-create on a new leader.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumeSession {
    pub user: String,
    pub vhost: String,
    /// The client's `client-properties` (its capabilities matter).
    pub client_properties: FieldTable,
    pub channels: Vec<ResumeChannel>,
}

/// One open channel of a resumed connection.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumeChannel {
    pub id: ChannelId,
    /// The first delivery tag the new leader may use. Tags below it belong to the old leader: an
    /// ack, nack or reject of one is ignored (the message was requeued as redelivered).
    pub next_delivery_tag: u64,
    pub prefetch_consumer: u16,
    pub prefetch_global: u16,
    pub flow_active: bool,
    /// Confirm mode and the sequence number of the next publish (the first one not confirmed).
    pub next_publish_seq: Option<u64>,
    pub consumers: Vec<ResumeConsumer>,
}

/// A consumer of a resumed channel, as its `basic.consume` created it.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumeConsumer {
    pub tag: ShortStr,
    pub queue: ShortStr,
    pub no_ack: bool,
    pub exclusive: bool,
    pub arguments: FieldTable,
    /// The per-consumer prefetch in force when it was created.
    pub prefetch: u16,
}
