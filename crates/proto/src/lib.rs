//! Generated gRPC/prost types for Warren's node-to-node protocol (`proto/warren/*.proto`).
//! Nothing here is hand-written logic; conversions to openraft types live in `warren-raft`.

#![allow(unreachable_pub, clippy::all)]

/// Raft RPCs between nodes (`proto/warren/raft.proto`).
pub mod raft {
    tonic::include_proto!("warren.raft.v1");
}

/// Operator changes to vhosts, users and permissions (`proto/warren/access.proto`).
pub mod access {
    tonic::include_proto!("warren.access");
}

/// The management API's questions to the deciding broker (`proto/warren/management.proto`).
pub mod management {
    tonic::include_proto!("warren.management");
}
