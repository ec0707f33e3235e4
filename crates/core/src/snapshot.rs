//! The replicated state of a broker as plain data, for Raft snapshots: everything the log's
//! commands build (exchanges, bindings, queues, their messages with sequence numbers, the next
//! queue id), and nothing that is local to one node (connections, channels, consumers).
//!
//! [`crate::Broker::snapshot`] takes one (cheap: message bodies are shared `Bytes`);
//! [`crate::Broker::restore`] replaces a broker's replicated state with one. Encoding it to bytes
//! is the Raft layer's business. A message routed to several queues appears once in
//! [`Snapshot::messages`] and is referenced by index, so its body is written once.

use bytes::Bytes;
use warren_wire::{BasicProperties, FieldTable, ShortStr};

use crate::command::Destination;
use crate::Millis;

/// The replicated state at one point of the log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// [`crate::STATE_MACHINE_VERSION`] of the broker that took it.
    pub version: u32,
    pub next_queue_id: u64,
    pub vhosts: Vec<SnapshotVhost>,
    pub messages: Vec<SnapshotMessage>,
    pub queues: Vec<SnapshotQueue>,
    /// Per publishing channel, the last confirm number applied (see [`crate::Op::Publish`]),
    /// sorted by connection and channel.
    pub publishers: Vec<SnapshotPublisher>,
    /// Users, permissions, topic permissions and limits (vhosts are in [`Snapshot::vhosts`]).
    /// `None` in snapshots written before they were replicated: a restore then keeps the
    /// broker's own.
    pub security: Option<SnapshotSecurity>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnapshotSecurity {
    /// Sorted by name.
    pub users: Vec<SnapshotUser>,
    /// Sorted by user, then vhost.
    pub permissions: Vec<SnapshotPermission>,
    /// Sorted by user, vhost, exchange. Format 7 on (empty before).
    pub topic_permissions: Vec<SnapshotTopicPermission>,
    /// The vhosts that have limits, sorted by vhost. Format 7 on.
    pub vhost_limits: Vec<SnapshotLimits>,
    /// The users that have limits, sorted by user. Format 7 on.
    pub user_limits: Vec<SnapshotLimits>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotTopicPermission {
    pub user: String,
    pub vhost: ShortStr,
    pub exchange: ShortStr,
    pub write: String,
    pub read: String,
}

/// The limits of one vhost or user (`owner`), sorted by name.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotLimits {
    pub owner: String,
    pub limits: Vec<(String, i64)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotUser {
    pub name: String,
    pub password_hash: String,
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotPermission {
    pub user: String,
    pub vhost: ShortStr,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotPublisher {
    pub conn: u64,
    pub channel: u16,
    pub seq: u64,
    pub at: Millis,
    /// Confirm numbers below `seq` never applied (state machine version 3).
    pub missing: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotVhost {
    pub name: ShortStr,
    pub exchanges: Vec<SnapshotExchange>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotExchange {
    pub name: ShortStr,
    /// `direct`, `fanout`, `topic` or `headers`.
    pub kind: ShortStr,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    pub bindings: Vec<SnapshotBinding>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotBinding {
    pub destination: Destination,
    pub routing_key: ShortStr,
    pub arguments: FieldTable,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotMessage {
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    pub properties: BasicProperties,
    pub body: Bytes,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotQueue {
    pub id: u64,
    pub vhost: ShortStr,
    pub name: ShortStr,
    pub durable: bool,
    pub exclusive_owner: Option<u64>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    pub next_seq: u64,
    pub had_consumer: bool,
    pub last_used: Millis,
    /// A local queue's home node, whose broker decides it; 0 for none. Format 5 on.
    pub home: u64,
    /// The connection whose declare created the queue; 0 if unknown. Format 6 on.
    pub declared_by: u64,
    /// Every message still in the queue (ready or checked out), in sequence order.
    pub entries: Vec<SnapshotEntry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub seq: u64,
    /// Index into [`Snapshot::messages`] (unused when `stored` is set).
    pub message: u32,
    /// The message rests in this log entry (format 8 on): the snapshot names it instead of
    /// holding it.
    pub stored: Option<crate::StoredRef>,
    pub redelivered: bool,
    pub expires_at: Option<Millis>,
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad snapshot: {0}")]
pub struct SnapshotError(pub String);
