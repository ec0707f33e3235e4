//! A published message as the broker stores it: immutable once routed, shared by every queue it
//! was routed to (an `Arc`), with the body as shared `Bytes` so it is never copied.

use std::sync::Arc;

use bytes::Bytes;
use warren_wire::{BasicProperties, ShortStr};

/// A message as published: where it was published to, its properties and its body.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    pub properties: BasicProperties,
    pub body: Bytes,
}

impl Message {
    /// Bytes counted against `x-max-length-bytes` (the body, as RabbitMQ counts).
    pub(crate) fn body_len(&self) -> u64 {
        self.body.len() as u64
    }

    /// The per-message TTL from the `expiration` property, in milliseconds, if valid.
    pub(crate) fn expiration_ms(&self) -> Option<u64> {
        self.properties
            .expiration
            .as_ref()
            .and_then(|e| e.as_str().parse::<u64>().ok())
    }
}

/// Where a replicated queue's message rests: the log entry it was published in (its index on
/// every replica), with what the queue needs without reading it back (the body's length for
/// `x-max-length-bytes`, persistence for a restart). A queue keeps this instead of the message;
/// the message is read back through [`Records`] when it is delivered or dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StoredRef {
    /// The Raft log index of the `Op::Publish` that carried the message.
    pub index: u64,
    pub len: u32,
    pub persistent: bool,
}

/// A queued message: in memory (local queues, dead-lettered copies, and a broker without a log),
/// or a reference to the log entry that holds it (replicated queues).
#[derive(Clone, Debug)]
pub(crate) enum Payload {
    Loaded(Arc<Message>),
    Stored(StoredRef),
}

impl Payload {
    pub(crate) fn body_len(&self) -> u64 {
        match self {
            Payload::Loaded(m) => m.body_len(),
            Payload::Stored(r) => u64::from(r.len),
        }
    }

    pub(crate) fn persistent(&self) -> bool {
        match self {
            Payload::Loaded(m) => m.properties.delivery_mode == Some(2),
            Payload::Stored(r) => r.persistent,
        }
    }
}

/// The port through which the broker keeps and reads back the messages of replicated queues,
/// by the log index of the publish that carried them. The runtime's implementation keeps recent
/// ones in a bounded cache and reads the rest from the log on disk; every replica holds the
/// same record under the same index (the log is the same), so reading one while applying a
/// command keeps the state machine deterministic.
pub trait Records: Send + std::fmt::Debug {
    /// The message applied from log entry `index` (called once, as it is applied).
    fn keep(&mut self, index: u64, message: &Arc<Message>);
    /// The message of log entry `index`, or `None` if it cannot be read (the implementation
    /// reports why).
    fn get(&mut self, index: u64) -> Option<Arc<Message>>;
    /// Gives back what is held above the records' current bound (which shrinks while the
    /// node's memory alarm is on). Called on every tick; by default nothing is held to give.
    fn shed(&mut self) {}
}

/// Records kept in memory without bound: a broker whose messages all fit (tests).
#[derive(Debug, Default)]
pub struct MemoryRecords {
    kept: std::collections::HashMap<u64, Arc<Message>>,
}

impl Records for MemoryRecords {
    fn keep(&mut self, index: u64, message: &Arc<Message>) {
        self.kept.insert(index, Arc::clone(message));
    }

    fn get(&mut self, index: u64) -> Option<Arc<Message>> {
        self.kept.get(&index).cloned()
    }
}
