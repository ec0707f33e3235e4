//! Warren's Raft layer, the adapters around openraft: the type configuration, how a
//! [`warren_core::Command`] is written into the log ([`LogCommand`]), the gRPC network that carries
//! Raft RPCs between nodes ([`network::Network`]) and the gRPC service that receives them
//! ([`service::RaftService`]). Storage is `warren-store`; the broker model is `warren-core`.

pub mod admin;
mod command_codec;
pub mod dial;
pub mod incarnation;
pub mod lease;
pub mod membership;
pub mod network;
pub mod node;
pub mod records;
pub mod resources;
pub mod service;
pub mod shipping;
mod snapshot_codec;
pub mod state_machine;
pub mod trust;
mod types;

pub use command_codec::{decode_command, encode_command, CodecError, LogCommand};
pub use snapshot_codec::{decode_snapshot, encode_snapshot};

pub use types::{GroupId, NodeId, TypeConfig, WarrenNode, METADATA_GROUP};
