//! What the runtime feeds into the core: decoded client methods, assembled messages, connection
//! life-cycle events, applied replicated commands and clock ticks.

use bytes::Bytes;
use warren_wire::{BasicProperties, BasicPublish, FieldTable, Method};

use crate::{ChannelId, Command, ConnId};

/// One input to [`crate::Broker::handle`].
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The client answered `connection.start` and the runtime decoded its SASL response.
    /// Answered by [`crate::Effect::Authenticated`] or a `connection.close` 403.
    Login {
        conn: ConnId,
        /// "PLAIN" or "AMQPLAIN", used in the refusal text.
        mechanism: String,
        username: String,
        password: String,
        /// The peer connects from a loopback address (guest is accepted only from loopback).
        peer_loopback: bool,
        client_properties: FieldTable,
    },
    /// `connection.open`: answered by `connection.open-ok` or a `connection.close` 530.
    OpenVhost { conn: ConnId, vhost: String },
    /// Any method the client sent on a channel other than 0, including `channel.open`,
    /// `channel.close`, `channel.close-ok` and `channel.flow`, but not `basic.publish`.
    Method {
        conn: ConnId,
        channel: ChannelId,
        method: Method,
    },
    /// A complete `basic.publish`: the method, its content header's properties and the whole body.
    Publish {
        conn: ConnId,
        channel: ChannelId,
        publish: BasicPublish,
        properties: BasicProperties,
        body: Bytes,
    },
    /// The connection's outbound buffer went above its high watermark (`false`), or is below its
    /// low watermark again (`true`, also the answer to `Effect::AwaitWritable`). While not
    /// writable nothing is delivered to the connection's consumers; `true` also grants a fresh
    /// delivery credit of `DELIVERY_CREDIT_BYTES`, so the bytes the core can put in flight to a
    /// connection are bounded even within one `handle` call.
    Writable { conn: ConnId, writable: bool },
    /// The connection is gone (socket closed, `connection.close` done, or heartbeat missed):
    /// its unacked messages are requeued, its consumers cancelled, its exclusive queues deleted.
    ConnectionClosed { conn: ConnId },
    /// A replicated command came back committed, from log entry `index` (0 when there is no
    /// log entry to read it back from: the messages it enqueues are then kept in memory).
    Applied { command: Command, index: u64 },
    /// The runtime found a channel-level protocol error the core cannot see (e.g. a message larger
    /// than the configured maximum): the core drops the channel's state as for any channel error
    /// and answers with [`crate::Effect::CloseChannel`] (or `CloseConnection` for a hard error).
    ChannelError {
        conn: ConnId,
        channel: ChannelId,
        error: crate::AmqpError,
    },
    /// An operator closes the connection (management API): it gets `connection.close` 320
    /// CONNECTION_FORCED with `reason`, and its state is dropped as for a closed connection.
    CloseConnection { conn: ConnId, reason: String },
    /// Periodic tick: message TTLs and queue expiry are evaluated against `now`.
    Tick,
    /// A message another node's broker routed to a local queue homed here (or, with `queue` 0, to
    /// a direct reply-to address of this node): see [`crate::Effect::Forward`]. `from` and `seq`
    /// name it for the sender, which is told if the queue refused it
    /// ([`crate::Effect::ForwardRefused`]).
    Forwarded {
        from: u64,
        seq: u64,
        queue: u64,
        message: crate::Message,
    },
    /// Answered with [`crate::Effect::Synced`] once every input of `conn` before it has been
    /// handled (their effects come first). A closing client connection uses it to let the
    /// publishes its broker routed reach the leader before its `connection.close-ok` goes.
    Sync { conn: ConnId, token: u64 },
    /// Node `node`'s counts of its client connections and channels, for the limits (see
    /// [`crate::ClientCounts`]); empty counts forget the node.
    PeerCounts {
        node: u64,
        counts: crate::ClientCounts,
    },
    /// A queue command from a channel on node `from` for a queue this broker owns
    /// ([`crate::Effect::ToOwner`] there).
    QueueCommand {
        from: u64,
        command: crate::QueueCommand,
    },
    /// An owner's answer for one of this broker's channels ([`crate::Effect::ToChannel`] on
    /// node `from`).
    QueueEvent { from: u64, event: crate::QueueEvent },
    /// The ordered stream of queue commands and events with node `node` broke (or the node
    /// died): as owner, this broker detaches that node's consumers and takes back the
    /// messages its channels held; as channel, it drops its consumers of queues owned there
    /// (a server-side `basic.cancel` to clients that understand it) and forgets their unacked
    /// deliveries, as when a classic queue's node goes down in RabbitMQ.
    PeerLost { node: u64 },
    /// The runtime's view of which node leads the Raft group changed (`None`: no leader
    /// known): this broker's consumers of replicated queues attach to that node's broker
    /// with queue commands (with what they hold unacked), and queue commands for replicated
    /// queues this broker holds, waiting to lead, are dropped if another node leads.
    /// The leader's own broker is told with [`crate::Broker::lead`] instead.
    Leader { node: Option<u64> },
    /// On the leader's broker: cluster node `node` has not answered for a while (or left the
    /// cluster). The local queues homed there are removed, as RabbitMQ removes a down node's
    /// transient queues, so that their names can be declared again elsewhere.
    NodeDown { node: u64 },
}
