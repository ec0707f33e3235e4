//! Starting a node's Raft group on its data directory: open RocksDB, build openraft, and form a
//! cluster the first time (one bootstrap: the member with the lowest id).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::RaftLogStorage;
use openraft::{Config, Raft, RaftLogReader, SnapshotPolicy};
use tracing::info;

use crate::network::NetworkFactory;
use crate::state_machine::BrokerStateMachine;
use crate::{NodeId, TypeConfig, WarrenNode, METADATA_GROUP};

/// Why a node could not start its Raft group.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] warren_store::StoreError),
    #[error("reading the raft log: {0}")]
    Log(#[from] std::io::Error),
    #[error("raft: {0}")]
    Raft(String),
}

/// Tunables of a node's Raft group.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Build a snapshot after this many log entries since the last one; the log up to it is
    /// then purged.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so a follower that is only a little behind catches up
    /// from the log instead of a whole snapshot.
    pub keep_after_snapshot: u64,
}

impl Default for NodeOptions {
    fn default() -> NodeOptions {
        NodeOptions {
            snapshot_every: 20_000,
            keep_after_snapshot: 1_000,
        }
    }
}

/// A started Raft group and whether it had a log before (a restart).
pub struct StartedNode {
    pub raft: Raft<TypeConfig, BrokerStateMachine>,
    pub restarted: bool,
}

/// Opens `data_dir/raft` (the log; the state machine keeps its snapshots beside it) and starts
/// node `id` of the cluster of `members` (which must include `id`).
pub async fn start(
    data_dir: &Path,
    id: NodeId,
    members: BTreeMap<NodeId, WarrenNode>,
    sm: BrokerStateMachine,
    options: &NodeOptions,
) -> Result<StartedNode, StartError> {
    let db = warren_store::open(&data_dir.join("raft"))?;
    let mut store = warren_store::RocksLogStore::<TypeConfig>::new(db)?;
    let log = store.get_log_state().await?;
    let vote = store.read_vote().await?;
    let restarted = log.last_log_id.is_some() || vote.is_some();
    let config = Config {
        cluster_name: "warren".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_every.max(1)),
        max_in_snapshot_log_to_keep: options.keep_after_snapshot,
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let raft = Raft::new(
        id,
        Arc::new(config),
        NetworkFactory::new(METADATA_GROUP),
        store,
        sm,
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))?;
    // One bootstrap: on first start the member with the lowest id forms the cluster of all the
    // configured members; the others wait to be contacted by its leader.
    let bootstrap = members.keys().next() == Some(&id);
    if !restarted && bootstrap {
        info!(node = id, members = members.len(), "forming a new cluster");
        raft.initialize(members)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
    } else if !restarted {
        info!(
            node = id,
            "first start: waiting to be contacted by the cluster's leader"
        );
    }
    Ok(StartedNode { raft, restarted })
}
