//! What the core asks the runtime to do: frames to send, channels and connections to close,
//! commands to replicate. Effects are plain data, applied by the runtime in the order given.

use bytes::Bytes;
use warren_wire::{BasicProperties, Method};

use crate::{AmqpError, ChannelId, Command, ConnId};

/// One effect produced by [`crate::Broker::handle`].
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Send a content-less method frame (replies, confirms, server-sent `basic.cancel`, ...).
    /// Channel 0 carries connection-class methods such as `connection.open-ok`.
    Send {
        conn: ConnId,
        channel: ChannelId,
        method: Method,
    },
    /// Send a method with content: `basic.deliver`, `basic.get-ok` or `basic.return`, followed by
    /// the content header and the body frames (the body is shared, never copied).
    SendContent {
        conn: ConnId,
        channel: ChannelId,
        method: Method,
        properties: BasicProperties,
        body: Bytes,
    },
    /// Login accepted: the runtime continues the handshake with `connection.tune`.
    Authenticated { conn: ConnId, user: String },
    /// The core has already dropped the channel's state (unacked messages requeued, consumers
    /// gone); the runtime sends `channel.close` with this error, discards further frames on the
    /// channel and frees it when the client's `channel.close-ok` arrives.
    CloseChannel {
        conn: ConnId,
        channel: ChannelId,
        error: AmqpError,
    },
    /// The core has already dropped the connection's state; the runtime sends
    /// `connection.close` with this error and closes the socket after `close-ok` (or a timeout).
    CloseConnection { conn: ConnId, error: AmqpError },
    /// The core has used up this connection's delivery credit (see `Input::Writable`) and will
    /// deliver nothing more to it until the runtime answers `Input::Writable { writable: true }`,
    /// which it must do as soon as the connection's outbound buffer is below its low watermark
    /// (at once if it already is).
    AwaitWritable { conn: ConnId },
    /// Credit flow (RabbitMQ's connection state `flow`): with `paused`, the connection has its
    /// credit (`BrokerConfig::publish_credit`) of publishes on their way into the log, and
    /// the runtime must stop reading its socket (TCP back-pressure slows the publisher to the
    /// pace of the log); without, it has fallen back to half of that and is read again. Made
    /// once per change; methods already read still come in and are handled.
    Flow { conn: ConnId, paused: bool },
    /// Replicate this command; feed it back as [`crate::Input::Applied`] once committed.
    /// Only produced when the broker runs in replicated mode.
    Propose { command: Command },
    /// Enqueue `message` into local queue `queue`, which is homed on node `home` (or, with
    /// `queue` 0, deliver it to the direct reply-to address its routing key names there); the
    /// runtime sends it there as [`crate::Input::Forwarded`]. Confirms produced by the same input
    /// must wait until `home` has acknowledged it (and turn into a nack if it refused it or cannot
    /// be reached).
    Forward {
        home: u64,
        queue: u64,
        message: std::sync::Arc<crate::Message>,
    },
    /// Answer to [`crate::Input::Forwarded`]: queue refused the message (`x-overflow`
    /// `reject-publish`), so the sender nacks the publish it came from.
    ForwardRefused { to: u64, seq: u64 },
    /// A queue command for the broker of node `node`, which owns the queue (see
    /// `crate::queue_command`); the runtime sends it there, in order, as
    /// [`crate::Input::QueueCommand`].
    ToOwner {
        node: u64,
        command: crate::QueueCommand,
    },
    /// An owner's answer for a channel on node `node`; the runtime sends it there, in order,
    /// as [`crate::Input::QueueEvent`].
    ToChannel { node: u64, event: crate::QueueEvent },
    /// The answer to [`crate::Input::Sync`].
    Synced { conn: ConnId, token: u64 },
}
