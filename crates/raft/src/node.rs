//! Starting a node's Raft group on its data directory: open RocksDB, read (or give it) its
//! incarnation, build openraft, and form a cluster the first time (one bootstrap: the member with
//! the lowest id, unless the node was told to join, or another member already has a cluster).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::{Config, Raft, RaftLogReader, SnapshotPolicy};
use tracing::{info, warn};

use crate::incarnation::{self, IncarnationBook};
use crate::membership::spawn_incarnation_recorder;
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
    /// Build a snapshot after this many log entries since the last one, or more with a
    /// backlog (`state_machine::snapshot_due`); the log up to it is then purged (up to the
    /// oldest queued message).
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so a follower that is only a little behind catches up
    /// from the log instead of a whole snapshot.
    pub keep_after_snapshot: u64,
    /// Never form a cluster: this node waits to be added to a running one (`warren member add`).
    pub join: bool,
}

impl Default for NodeOptions {
    fn default() -> NodeOptions {
        NodeOptions {
            snapshot_every: 20_000,
            keep_after_snapshot: 1_000,
            join: false,
        }
    }
}

/// A started Raft group, whether it had a log before (a restart), and the node's incarnation
/// book (shared with the gRPC services).
pub struct StartedNode {
    pub raft: Raft<TypeConfig, BrokerStateMachine>,
    pub restarted: bool,
    pub incarnations: Arc<IncarnationBook>,
}

/// openraft's settings for a Warren node, keeping `keep_after_snapshot` log entries behind each
/// snapshot.
///
/// A restarted leader stands for election like any other node (`enable_leader_restore` off;
/// openraft 0.10 turns it on by default). A leader sends entries to its followers before its own
/// fsync of them (the log store syncs in groups, `warren_store::syncer`), as Raft allows: a
/// leader that loses power loses that unsynced tail while followers keep it. Restored as leader
/// of the same term, it would then write different entries under log ids its followers already
/// hold, and they would keep theirs: replicas applying different commands at one index (found
/// by the chaos suite: a power loss of every node, the leader's last 178 bytes lost, a queue
/// removed on two nodes and not on the third). A new election in a new term makes followers
/// with the longer log win or truncate, as Raft intends.
pub fn raft_config(keep_after_snapshot: u64) -> Result<Config, openraft::ConfigError> {
    Config {
        cluster_name: "warren".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // The state machine says when (`state_machine::snapshot_due`): spaced by the backlog.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: keep_after_snapshot,
        enable_leader_restore: Some(false),
        ..Default::default()
    }
    .validate()
}

/// Starts node `id` of the cluster of `members` (which must include `id`) over the log in the
/// database of `messages` (opened with `warren_store::open` on `data_dir/raft`; the state
/// machine keeps its snapshots beside it).
pub async fn start(
    id: NodeId,
    members: BTreeMap<NodeId, WarrenNode>,
    sm: BrokerStateMachine,
    options: &NodeOptions,
    messages: warren_store::MessageStore,
) -> Result<StartedNode, StartError> {
    let mut store = warren_store::RocksLogStore::<TypeConfig>::new(messages.db())?
        .with_messages(messages.clone());
    let log = store.get_log_state().await?;
    let vote = store.read_vote().await?;
    let restarted = log.last_log_id.is_some() || vote.is_some();
    let own_incarnation = store.incarnation(incarnation::fresh)?;
    let book = Arc::new(IncarnationBook::new(id, own_incarnation));
    info!(
        node = id,
        incarnation = %incarnation::show(own_incarnation),
        "this data directory's incarnation"
    );
    let config =
        raft_config(options.keep_after_snapshot).map_err(|e| StartError::Raft(e.to_string()))?;
    let (sm, snapshot_due) = sm.with_snapshot_schedule(options.snapshot_every);
    let raft = Raft::new(
        id,
        Arc::new(config),
        NetworkFactory::new(METADATA_GROUP, book.clone()).with_messages(messages),
        store,
        sm,
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let trigger = raft.clone();
    let mut metrics = raft.server_metrics();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = snapshot_due.notified() => {
                    if trigger.trigger().snapshot().await.is_err() {
                        return;
                    }
                }
                // Raft has shut down.
                changed = openraft::async_runtime::WatchReceiver::changed(&mut metrics) => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    });
    // One bootstrap: on first start the member with the lowest id forms the cluster of all the
    // configured members; the others wait to be contacted by its leader. A node told to join
    // never forms one, nor does a lowest member that finds another member already in a cluster
    // (its own data was wiped, or it is new): it waits to be added, and a wiped one is refused.
    let lowest = members.keys().next() == Some(&id);
    if !restarted && lowest && !options.join {
        if let Some((other, status)) = member_with_a_cluster(id, &members).await {
            warn!(
                node = id,
                other,
                leader = ?status.leader,
                "not forming a new cluster: node {other} already belongs to one. If this node's \
                 data was wiped it cannot rejoin under id {id}: start it under a new id and add \
                 it with `warren member add`; waiting to be contacted"
            );
        } else {
            info!(node = id, members = members.len(), "forming a new cluster");
            let mut members = members;
            if let Some(me) = members.get_mut(&id) {
                me.incarnation = own_incarnation;
            }
            raft.initialize(members)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
        }
    } else if !restarted {
        info!(
            node = id,
            "first start: waiting to be added by the cluster's leader"
        );
    }
    spawn_incarnation_recorder(raft.clone(), book.clone());
    Ok(StartedNode {
        raft,
        restarted,
        incarnations: book,
    })
}

/// The first other member (with its status) that already has a Raft log or a membership, asked
/// over gRPC with a short timeout; members that do not answer are taken to be new.
async fn member_with_a_cluster(
    id: NodeId,
    members: &BTreeMap<NodeId, WarrenNode>,
) -> Option<(NodeId, warren_proto::raft::StatusReply)> {
    let asks = members
        .iter()
        .filter(|(other, node)| **other != id && !node.grpc_addr.is_empty())
        .map(|(other, node)| async move {
            let status = crate::admin::status_of(&node.grpc_addr, Duration::from_secs(2)).await?;
            let in_a_cluster = status.last_log_index.is_some() || !status.members.is_empty();
            in_a_cluster.then_some((*other, status))
        });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .next()
}

/// Resolves when the Raft node has stopped on a fatal error, with that error: a log or state
/// machine write that failed (disk full, an I/O error) stops openraft for good, and a node
/// whose Raft has stopped can neither confirm nor deliver anything replicated.
pub async fn stopped(raft: &Raft<TypeConfig, BrokerStateMachine>) -> String {
    use openraft::async_runtime::WatchReceiver;
    // Not woken by every change of `metrics()` (openraft sends it on every turn of its loop):
    // looked at when the server metrics change or end, and every 200 ms.
    let metrics = raft.metrics();
    let mut server = raft.server_metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_watched().running_state {
            return fatal.to_string();
        }
        tokio::select! {
            changed = server.changed() => {
                if changed.is_err() {
                    return match &metrics.borrow_watched().running_state {
                        Err(fatal) => fatal.to_string(),
                        Ok(()) => "the Raft node ended".to_owned(),
                    };
                }
            }
            () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
    }
}
