//! Warren's broker core: the whole AMQP model (vhosts, users and their access controls, exchanges,
//! routing, queues, consumers, credit, confirms, transactions) as one deterministic state machine.
//!
//! The only entry point is [`Broker::handle`]: inputs in, [`Effect`]s out. The core never does I/O,
//! never reads the clock (time comes in as `now`), never spawns and never blocks; the runtime that
//! drives it (the `warren-server` crate) owns sockets and timers.

pub mod routing;

mod broker;
mod channel;
mod command;
pub(crate) mod connection;
mod consumers;
mod effect;
mod error;
mod exchange;
mod input;
pub mod limits;
mod message;
pub mod policy;
mod queue;
mod queue_command;
pub mod snapshot;
mod topic_permission;
mod user;
mod vhost;
pub mod view;

pub use broker::{
    Broker, BrokerConfig, Churn, CONNECTION_NAME_PROPERTY, CONNECTION_PROTOCOL_PROPERTY,
    DEFAULT_CONSUMER_TIMEOUT,
};
pub use command::{Command, Destination, Op, Origin, STATE_MACHINE_VERSION};
pub use connection::{DEFAULT_PUBLISH_CREDIT, DELIVERY_CREDIT_BYTES};
pub use effect::Effect;
pub use error::{AmqpError, ErrorScope};
pub use input::Input;
pub use limits::{ClientCounts, Limits};
pub use message::{MemoryRecords, Message, Records, StoredRef};
pub use queue::ConsumerRef;
pub use queue_command::{Delivery, QueueCommand, QueueEvent};
pub use snapshot::{PackedEntries, Snapshot, SnapshotError};
pub use topic_permission::TopicPermission;
pub use user::{hash_password, Permission, User};

/// Identifies one client connection; chosen by the runtime, unique for the life of the process.
pub type ConnId = u64;
/// An AMQP channel number within a connection (1..=channel-max).
pub type ChannelId = u16;
/// Milliseconds since the Unix epoch, as given by the runtime (or by the leader's log entry).
pub type Millis = u64;

/// The node a connection was accepted on: connection ids carry it in their top 11 bits (see
/// `warren_server::Server::bind_to`); 0 for ids without one (tests, a single node's defaults).
pub fn node_of(conn: ConnId) -> u64 {
    conn >> 52
}
