//! openraft's type configuration for Warren.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::LogCommand;

/// A node's id in the cluster; never reused for a node whose data was wiped.
pub type NodeId = u64;

/// Which Raft group a message belongs to (see `proto/warren/raft.proto`).
pub type GroupId = u64;

/// The group that holds metadata and durable queues until queues are sharded over more groups.
pub const METADATA_GROUP: GroupId = 0;

/// How to reach a node: its gRPC address (`host:port`) and its AMQP address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarrenNode {
    pub grpc_addr: String,
    pub amqp_addr: String,
}

impl fmt::Display for WarrenNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "grpc={} amqp={}", self.grpc_addr, self.amqp_addr)
    }
}

openraft::declare_raft_types!(
    /// Warren's Raft types: log entries carry [`LogCommand`]s; applying one answers `()` (the
    /// command's effects reach clients through the broker, not through the Raft response).
    pub TypeConfig:
        D = LogCommand,
        R = (),
        NodeId = NodeId,
        Node = WarrenNode,
);
