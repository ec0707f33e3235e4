//! Replicated commands: every change to shared broker state (topology and queue contents) is a
//! [`Command`]. On a single node it is applied at once; in a cluster it goes through the Raft log
//! and is applied on every replica in the same order.
//!
//! The [`Op`] enum is append-only: never reorder, remove or reuse a variant, because logs and
//! snapshots written by older versions must still decode. Bump [`STATE_MACHINE_VERSION`] when the
//! meaning of an existing variant changes.

use bytes::Bytes;
use warren_wire::{BasicProperties, FieldTable, ShortStr};

use crate::{ChannelId, ConnId, Millis};

/// Version of the state machine's semantics, carried in every command.
///
/// 2: a publish whose origin channel and confirm number are not above the last one applied for
/// that channel is a re-send after a failover (confirmed, not enqueued again); `TakeOver` no
/// longer removes exclusive and auto-delete queues (the new leader does, later, with
/// `RemoveQueue`, for connections that did not resume).
///
/// 3: a publish is a re-send only if its confirm number was applied before: numbers skipped on
/// the way up (publishes whose proposals the leader refused, such as when its lease had expired)
/// are remembered, and a later publish with one of them is new, so a re-send that arrives after
/// a higher-numbered publish of the same channel is enqueued, not taken for a duplicate.
///
/// 4: the messages of local queues (exclusive, auto-delete and non-durable: see
/// `Queue::is_local`) are not replicated: only the deciding broker (the leader's) enqueues into
/// them, publishes that reach only such queues, and their acks, rejects and expiries, are not
/// logged, and snapshots leave their messages out. A publish without an origin is a copy
/// dead-lettered from a local queue into replicated ones; it does not go back into the queue
/// named by its latest `x-death` entry unless that death was a rejection.
///
/// 5: a local queue has a home, the node of the connection that declared it (the top bits of
/// the declaring command's origin connection id); snapshots carry the home (format 5).
///
/// 6: a local queue is decided by its home's broker alone (see `broker/home.rs`): a logged
/// publish never enqueues into a local queue (the broker that routed the client's publish
/// served those), a dead-lettering applied from the log enqueues into the local queues homed
/// on the applying node, and a queue remembers the connection that declared it (snapshot
/// format 6) so that a restarted home removes the transient queues of its earlier life.
///
/// 7: topic permissions and vhost and user limits are replicated state (`SetTopicPermission`,
/// `ClearTopicPermission`, `SetVhostLimits`, `ClearVhostLimits`, `SetUserLimits`,
/// `ClearUserLimits`; snapshot format 7), and a `DeclareQueue` that would create a queue in a
/// vhost whose `max-queues` is reached fails when applied (406), so two declares racing for the
/// last place are decided by the log's order. Deleting a vhost or a user also deletes its limits
/// and the topic permissions in it or of it.
///
/// 8: `Recover` keeps every message of a quorum queue (`x-queue-type: quorum`), persistent or
/// not, as RabbitMQ's quorum queues always persist theirs; other durable queues still drop
/// non-persistent messages, as RabbitMQ's classic queues do.
///
/// 9: a publish into a queue declared with `x-max-priority` is queued at the message's
/// `priority` (capped at the maximum): the highest level is delivered and dropped (`drop-head`)
/// first, FIFO within a level, and snapshots carry each message's level (format 10). Publishes
/// of earlier versions are queued at level 0, in arrival order, as those versions did. A quorum
/// queue's messages given back by a consumer are logged ([`Op::Return`]): each carries a
/// replicated delivery count (`x-delivery-count` on its redeliveries), and one that passes the
/// queue's `x-delivery-limit` (20 unless declared) is dead-lettered with reason `delivery_limit`.
/// Queues may be streams (`x-queue-type: stream`, refused before): an ack settles nothing, and
/// retention (`x-max-length-bytes`, `x-max-length`, `x-max-age` through `Op::Expire`) drops the
/// oldest.
///
/// 10: a client's publish is routed once, by the broker of the client's own node: the logged
/// publish names the replicated queues it routed to ([`Op::Publish`]'s `queues`), and applying
/// it enqueues into those that still exist without routing again (issue 19: a publish is routed
/// once and its permissions are checked once). A publish without `queues` (earlier versions, a
/// copy dead-lettered from a transient queue) is still routed when applied.
///
/// 11: a client channel's topology commands (declares, deletes, purges, bindings) are proposed
/// by the broker of the client's own node, and carry the channel's log number
/// ([`Command::number`], from the same gap-free sequence as its logged publishes): a copy sent
/// again after a leader change whose first copy was applied is skipped (no second reply).
pub const STATE_MACHINE_VERSION: u32 = 11;

/// Who asked for a command: replies (declare-ok, confirms, errors) go back there, and only on the
/// node that owns that connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub conn: ConnId,
    pub channel: ChannelId,
}

/// One replicated command with its origin and the time it was issued (the leader's clock, so
/// every replica computes the same expiries).
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    pub version: u32,
    pub origin: Option<Origin>,
    /// A client channel's topology command: its number in the channel's log sequence (see
    /// `Connection::log_numbers`), which names it wherever it is proposed or applied, so that
    /// the client's node can send it again after a leader change. Only with an origin.
    pub number: Option<u64>,
    pub issued_at: Millis,
    pub op: Op,
}

impl Command {
    /// A client's logged publish: its origin channel and its number there (see
    /// `Connection::log_numbers`), which together name it wherever it is proposed or applied.
    pub fn logged_publish(&self) -> Option<(ConnId, ChannelId, u64)> {
        match (&self.op, self.origin) {
            (
                Op::Publish {
                    confirm: Some(number),
                    ..
                },
                Some(o),
            ) => Some((o.conn, o.channel, *number)),
            _ => None,
        }
    }

    /// A client channel's numbered command, a logged publish or a topology command: its
    /// origin channel and its number there. The client's node keeps it until it is applied
    /// and sends it again to a new leader; the state machine applies it once.
    pub fn logged_number(&self) -> Option<(ConnId, ChannelId, u64)> {
        match (self.number, self.origin) {
            (Some(number), Some(o)) => Some((o.conn, o.channel, number)),
            _ => self.logged_publish(),
        }
    }
}

/// The target of a binding: a queue or (exchange-to-exchange) an exchange, by name in the vhost.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    Queue(ShortStr),
    Exchange(ShortStr),
}

/// The operations of the state machine. Append-only (see the module docs).
// Publish is by far the most frequent command; boxing it would cost an allocation per publish.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    DeclareExchange {
        vhost: ShortStr,
        name: ShortStr,
        kind: ShortStr,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
        nowait: bool,
    },
    DeleteExchange {
        vhost: ShortStr,
        name: ShortStr,
        if_unused: bool,
        nowait: bool,
    },
    DeclareQueue {
        vhost: ShortStr,
        name: ShortStr,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: FieldTable,
        nowait: bool,
    },
    DeleteQueue {
        vhost: ShortStr,
        name: ShortStr,
        if_unused: bool,
        if_empty: bool,
        nowait: bool,
    },
    PurgeQueue {
        vhost: ShortStr,
        name: ShortStr,
        nowait: bool,
    },
    Bind {
        vhost: ShortStr,
        source: ShortStr,
        destination: Destination,
        routing_key: ShortStr,
        arguments: FieldTable,
        nowait: bool,
    },
    Unbind {
        vhost: ShortStr,
        source: ShortStr,
        destination: Destination,
        routing_key: ShortStr,
        arguments: FieldTable,
        nowait: bool,
    },
    /// Route and enqueue a message. `confirm` is the publish's number in its origin channel's
    /// logged publishes (named for its first use: the publisher-confirm sequence number); the
    /// channel confirms it, if it is in confirm mode, once the message is enqueued everywhere
    /// it routes to. From version 2 on, a publish whose number is not above the last one
    /// applied for its origin channel is a re-send of a message already held (a node re-sends
    /// the publishes a leader change left unapplied): it is not enqueued again. Since issue 19
    /// every logged publish of a client carries a number, confirm mode or not.
    Publish {
        vhost: ShortStr,
        exchange: ShortStr,
        routing_key: ShortStr,
        mandatory: bool,
        confirm: Option<u64>,
        properties: BasicProperties,
        body: Bytes,
        /// The replicated queues the broker that took the client's publish routed it to
        /// (version 10): applied, the message goes into those that still exist, without routing
        /// again. `None`: routed when applied (earlier versions; a copy dead-lettered from a
        /// transient queue).
        queues: Option<Vec<u64>>,
    },
    /// Messages of a queue instance were acked, or delivered with no-ack: they leave the queue.
    /// Applying it where they are still ready (a replica, or a log replay after a restart) removes
    /// them there too, so an acked message never comes back.
    Settle { queue: u64, seqs: Vec<u64> },
    /// Messages were rejected or nacked without requeue: they leave the queue and are
    /// dead-lettered if the queue has a dead-letter exchange.
    Reject { queue: u64, seqs: Vec<u64> },
    /// A node restarted and replayed the log: what does not survive a restart (non-durable and
    /// exclusive queues and exchanges, non-persistent messages) is dropped, and every message
    /// left is marked redelivered (it may have been delivered before the restart). Logged, so
    /// that a later replay passes through the same state.
    Recover,
    /// A queue instance goes away without a client asking: auto-delete after its last consumer,
    /// exclusive queue of a closed connection, `x-expires`. Decided on the node that saw it, and
    /// logged so that every replica and every replay removes the same queue.
    RemoveQueue { queue: u64 },
    /// Messages at the head of a queue whose TTL has passed at the command's time are
    /// dead-lettered (or dropped): logged, so expiry enqueues into dead-letter queues in the same
    /// order everywhere.
    Expire { queue: u64 },
    /// A node became leader while the cluster kept running: every message may have been
    /// delivered (unacked) by the old leader, so it is marked redelivered. Version 1 also removed
    /// exclusive queues and used auto-delete queues here; from version 2 on they stay, because
    /// the connections that own them are resumed on the new leader, which removes the ones left
    /// without an owner or consumer after a grace period ([`Op::RemoveQueue`]).
    /// Non-durable queues and non-persistent messages stay (unlike [`Op::Recover`]).
    TakeOver,
    /// `confirm.select` on the origin channel: its confirm numbers start again at 1, so the last
    /// number remembered for it (see [`Op::Publish`]) is forgotten. Applied from older logs
    /// only: since a channel's logged commands carry its own gap-free log number across its
    /// lives (`Command::number`), nothing proposes it.
    ConfirmSelect,
    /// Publishing channels whose last publish was issued before `before` are forgotten.
    ForgetPublishers { before: Millis },
    /// Creates a vhost (with the predeclared exchanges); nothing if it exists.
    PutVhost { name: ShortStr },
    /// Deletes a vhost with everything in it (exchanges, queues and their messages, the
    /// permissions on it); its connections are closed (320).
    DeleteVhost { name: ShortStr },
    /// Creates or replaces a user. `password_hash` is RabbitMQ's format (see
    /// [`crate::hash_password`]): the salt is chosen by whoever proposes, so applying is
    /// deterministic.
    PutUser {
        name: String,
        password_hash: String,
        tags: Vec<String>,
    },
    /// Deletes a user and its permissions; its connections are closed (320).
    DeleteUser { name: String },
    /// Sets a user's permission on a vhost (regexes, validated before proposing; an invalid one
    /// is ignored when applied).
    SetPermission {
        user: String,
        vhost: ShortStr,
        configure: String,
        write: String,
        read: String,
    },
    /// Removes a user's permission on a vhost.
    ClearPermission { user: String, vhost: ShortStr },
    /// Sets a user's topic permission on one exchange of a vhost (RabbitMQ's
    /// `set_topic_permissions`): regexes over routing keys for publishing (`write`) and binding
    /// (`read`), validated before proposing; one that does not compile when applied allows
    /// nothing.
    SetTopicPermission {
        user: String,
        vhost: ShortStr,
        exchange: ShortStr,
        write: String,
        read: String,
    },
    /// Removes a user's topic permission on one exchange of a vhost, or on every exchange of it
    /// (`exchange` is `None`).
    ClearTopicPermission {
        user: String,
        vhost: ShortStr,
        exchange: Option<ShortStr>,
    },
    /// Sets limits of a vhost (`max-connections`, `max-queues`; negative: no limit). With
    /// `replace` its other limits are cleared (`rabbitmqctl set_vhost_limits`); without, they
    /// stay (`PUT /api/vhost-limits/{vhost}/{name}`).
    SetVhostLimits {
        vhost: ShortStr,
        limits: Vec<(String, i64)>,
        replace: bool,
    },
    /// Clears the named limits of a vhost, every limit of it if `names` is empty.
    ClearVhostLimits { vhost: ShortStr, names: Vec<String> },
    /// Sets limits of a user (`max-connections`, `max-channels`), as [`Op::SetVhostLimits`].
    SetUserLimits {
        user: String,
        limits: Vec<(String, i64)>,
        replace: bool,
    },
    /// Clears the named limits of a user, every limit of it if `names` is empty.
    ClearUserLimits { user: String, names: Vec<String> },
    /// Messages of a quorum queue delivered and given back (nacked or rejected with requeue,
    /// unacked when their channel closed, `basic.recover`): each goes back to its place, its
    /// delivery count one higher; one whose count passes the queue's delivery limit is
    /// dead-lettered (reason `delivery_limit`) or dropped instead (version 9).
    Return { queue: u64, seqs: Vec<u64> },
    /// Creates or replaces policy `name` of `vhost` (an operator policy if `operator`): its
    /// `pattern` picks the queues and exchanges it applies to (`apply_to`, RabbitMQ's names),
    /// the highest `priority` among those that match wins, and its `definition` takes effect
    /// on them at once (see `policy`). Version 9.
    SetPolicy {
        vhost: ShortStr,
        name: String,
        operator: bool,
        pattern: String,
        apply_to: String,
        priority: i64,
        definition: FieldTable,
    },
    /// Removes policy `name` of `vhost` (an operator policy if `operator`).
    ClearPolicy {
        vhost: ShortStr,
        name: String,
        operator: bool,
    },
}
