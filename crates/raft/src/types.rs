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

/// A member as the replicated membership records it: how to reach it (its gRPC address
/// `host:port` and its AMQP address) and which incarnation of its data directory it is.
///
/// Encoding: the log, snapshots and Raft RPCs write this with postcard, which is not
/// self-describing, so a field added to the struct would not decode from logs written before
/// it (`#[serde(default)]` cannot help). The node is therefore written in the shape it has always
/// had, two strings, and fields added since travel as `key=value` lines after the AMQP address:
/// `"127.0.0.1:5672\nincarnation=3f2a…"`. An old entry decodes with incarnation 0 (unknown), and
/// a reader ignores keys it does not know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WarrenNode {
    pub grpc_addr: String,
    pub amqp_addr: String,
    /// The node's incarnation (`crate::incarnation`); 0 while the cluster has not learned it.
    pub incarnation: u64,
}

impl fmt::Display for WarrenNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "grpc={} amqp={} incarnation={}",
            self.grpc_addr,
            self.amqp_addr,
            crate::incarnation::show(self.incarnation)
        )
    }
}

/// The two strings WarrenNode is written as.
#[derive(Serialize, Deserialize)]
#[serde(rename = "WarrenNode")]
struct NodeOnWire {
    grpc_addr: String,
    amqp_addr: String,
}

impl Serialize for WarrenNode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut amqp_addr = self.amqp_addr.clone();
        if self.incarnation != 0 {
            amqp_addr.push_str(&format!("\nincarnation={:x}", self.incarnation));
        }
        NodeOnWire {
            grpc_addr: self.grpc_addr.clone(),
            amqp_addr,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for WarrenNode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WarrenNode, D::Error> {
        let wire = NodeOnWire::deserialize(d)?;
        let mut lines = wire.amqp_addr.split('\n');
        let amqp_addr = lines.next().unwrap_or_default().to_string();
        let mut incarnation = 0;
        for line in lines {
            if let Some(hex) = line.strip_prefix("incarnation=") {
                incarnation = u64::from_str_radix(hex, 16).map_err(|_| {
                    serde::de::Error::custom(format!("bad node incarnation {hex:?}"))
                })?;
            }
        }
        Ok(WarrenNode {
            grpc_addr: wire.grpc_addr,
            amqp_addr,
            incarnation,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// WarrenNode as it was derived before it had an incarnation.
    #[derive(Serialize)]
    struct OldNode {
        grpc_addr: String,
        amqp_addr: String,
    }

    #[test]
    fn a_node_written_before_incarnations_decodes_with_an_unknown_one() {
        let old = OldNode {
            grpc_addr: "10.0.0.1:7100".into(),
            amqp_addr: "10.0.0.1:5672".into(),
        };
        // Inside a map and followed by more data, as in a membership entry.
        let bytes = postcard::to_stdvec(&(vec![(1u64, old)], 77u32)).unwrap();
        let (nodes, after): (Vec<(u64, WarrenNode)>, u32) = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            nodes,
            vec![(
                1,
                WarrenNode {
                    grpc_addr: "10.0.0.1:7100".into(),
                    amqp_addr: "10.0.0.1:5672".into(),
                    incarnation: 0,
                }
            )]
        );
        assert_eq!(after, 77);
    }

    #[test]
    fn a_node_round_trips_with_its_incarnation_and_ignores_unknown_keys() {
        let node = WarrenNode {
            grpc_addr: "10.0.0.1:7100".into(),
            amqp_addr: "10.0.0.1:5672".into(),
            incarnation: 0xdead_beef_0042,
        };
        let bytes = postcard::to_stdvec(&(node.clone(), 5u8)).unwrap();
        assert_eq!(
            postcard::from_bytes::<(WarrenNode, u8)>(&bytes).unwrap(),
            (node.clone(), 5)
        );
        let newer = OldNode {
            grpc_addr: node.grpc_addr.clone(),
            amqp_addr: "10.0.0.1:5672\nzone=b\nincarnation=deadbeef0042".into(),
        };
        let bytes = postcard::to_stdvec(&newer).unwrap();
        assert_eq!(postcard::from_bytes::<WarrenNode>(&bytes).unwrap(), node);
    }

    #[test]
    fn a_corrupt_incarnation_is_an_error_not_a_guess() {
        let bad = OldNode {
            grpc_addr: String::new(),
            amqp_addr: "a:1\nincarnation=zz".into(),
        };
        let bytes = postcard::to_stdvec(&bad).unwrap();
        assert!(postcard::from_bytes::<WarrenNode>(&bytes).is_err());
    }
}
