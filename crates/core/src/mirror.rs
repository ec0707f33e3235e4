//! Home copies of transient queues (see `docs/architecture.md`, "Transient queues: a home copy
//! on the node of their connection").
//!
//! A local queue (`Queue::is_local`: exclusive, auto-delete or non-durable) keeps its messages
//! out of the Raft log. The deciding broker (the leader's) holds them and decides deliveries; the
//! queue's *home*, the node of the connection that declared it, holds a copy, kept current by
//! the [`MirrorChange`]s the deciding broker sends it ([`crate::Effect::Mirror`], applied there
//! as [`crate::Input::Mirror`]). When the leader goes, the new leader takes each home's copy
//! ([`crate::Input::HomeAttached`]), so a transient queue loses its messages only with its home
//! (or with the leader and its home together), as a RabbitMQ classic queue does with its node.

use std::sync::Arc;

use crate::{ConnId, Message, Millis};

/// One message of a home copy: its place in the queue, the message and its expiry.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorEntry {
    pub seq: u64,
    pub message: Arc<Message>,
    pub expires_at: Option<Millis>,
}

/// A queue's whole home copy, by queue id.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorQueue {
    pub queue: u64,
    pub entries: Vec<MirrorEntry>,
}

/// A change to the home copies of one node, in the order the deciding broker made them.
#[derive(Clone, Debug, PartialEq)]
pub enum MirrorChange {
    /// A message entered the queue.
    Store { queue: u64, entry: MirrorEntry },
    /// Messages left the queue (acked, rejected, expired, dropped, purged, taken without ack).
    Drop { queue: u64, seqs: Vec<u64> },
    /// The node's copies are exactly these (every other local queue homed there is empty): sent
    /// when the node's relay stream attaches, so a copy that missed changes while the stream was
    /// down is made whole.
    Reset { queues: Vec<MirrorQueue> },
}

/// The node a connection was accepted on: connection ids carry it in their top 11 bits (see
/// `warren_server::Server::bind_to`); 0 for ids without one (tests, a single node's defaults).
pub fn node_of(conn: ConnId) -> u64 {
    conn >> 52
}
