//! Warren's AMQP 0-9-1 front end on tokio (and STOMP's, translated into AMQP): the listeners, one
//! task per connection, and the task that owns the broker core. Protocol logic lives in the sans-io [`Session`] and in `warren-core`;
//! this crate only moves bytes, inputs and effects between them.

pub mod access;
pub mod alarm;
mod broker_task;
mod clock;
mod config;
mod confirms;
mod connection;
mod connection_log;
pub mod counters;
pub mod direct;
mod flow;
mod gate;
pub mod listener;
pub mod management;
mod mqtt;
mod proposer;
pub mod relay;
mod server;
mod session;
mod settles;
mod stomp;
mod translated;
mod websocket;

pub use broker_task::{BrokerHandle, Replication};
pub use clock::now_ms;
pub use config::ServerConfig;
pub use proposer::{spawn_proposer, Proposal};
pub use server::{first_conn_id, Server};
pub use session::Session;
