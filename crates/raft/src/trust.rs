//! Which peers of the gRPC port this node trusts, on top of the TLS handshake (a certificate of
//! the cluster's CA): node-to-node traffic only from a certificate that names a member, and only
//! in that member's own name. The guard itself is `warren_tls::grpc`; this is what it asks of
//! the Raft membership.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;
use openraft::Raft;
use tonic::Status;
use tracing::{info, warn};
use warren_store::MessageStore;
use warren_tls::grpc::{Caller, Membership};
use warren_tls::PeerIdentity;

use crate::{NodeId, TypeConfig};

/// The members of one Raft group, read from its current membership at every call, and the
/// nodes this node has seen leave it (kept beside the log: see `warren_store::retired_nodes`).
pub struct MemberCheck<SM: RaftStateMachine<TypeConfig>> {
    raft: Raft<TypeConfig, SM>,
    retired: Arc<RwLock<BTreeSet<NodeId>>>,
}

impl<SM: RaftStateMachine<TypeConfig>> MemberCheck<SM> {
    /// Reads the retired node ids recorded in `store`'s database and keeps recording the nodes
    /// that leave `raft`'s membership there, for as long as Raft runs.
    pub fn new(
        raft: Raft<TypeConfig, SM>,
        store: &MessageStore,
    ) -> std::io::Result<MemberCheck<SM>> {
        let retired = Arc::new(RwLock::new(warren_store::retired_nodes(&store.db())?));
        spawn_retirement_recorder(raft.clone(), Arc::clone(&retired), store.clone());
        Ok(MemberCheck { raft, retired })
    }

    fn is_retired(&self, id: NodeId) -> bool {
        self.retired.read().map_or(true, |r| r.contains(&id))
    }
}

impl<SM: RaftStateMachine<TypeConfig>> Membership for MemberCheck<SM> {
    /// A node certificate names the member of its node id. One without a Warren node id (made
    /// by another CA tool) names the member whose recorded gRPC host it lists. A node that is
    /// in no cluster yet (started with `--join`, waiting to be added) takes every node
    /// certificate of its CA as a member's: the leader that adds it is not known to it yet.
    fn member(&self, peer: &PeerIdentity) -> Option<NodeId> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        if membership.nodes().next().is_none() {
            return peer.node;
        }
        match peer.node {
            Some(id) => membership.get_node(&id).is_some().then_some(id),
            None => membership
                .nodes()
                .find(|(_, n)| {
                    !n.grpc_addr.is_empty() && peer.names_host(crate::dial::host_of(&n.grpc_addr))
                })
                .map(|(id, _)| *id),
        }
    }

    /// A member, or a node certificate whose id this node has not seen leave the membership:
    /// a learner that installed a snapshot taken before today's leader joined must take that
    /// leader's entries to learn that it is a member (found by the chaos suite: node 5 refused
    /// every append of node 4 and never caught up).
    fn raft_peer(&self, peer: &PeerIdentity) -> Option<NodeId> {
        if let Some(id) = self.member(peer) {
            return Some(id);
        }
        peer.node.filter(|id| !self.is_retired(*id))
    }
}

/// The node ids of a membership (voters and learners, of every configuration of a joint one).
fn node_ids<SM: RaftStateMachine<TypeConfig>>(
    raft: &Raft<TypeConfig, SM>,
) -> (Option<u64>, BTreeSet<NodeId>) {
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    let config = &m.membership_config;
    (
        config.log_id().map(|l| l.index),
        config.membership().nodes().map(|(id, _)| *id).collect(),
    )
}

/// Watches the membership: a node that leaves it is retired (recorded with a synced write
/// before it is refused), a retired id that comes back (a removal that was not committed and
/// was cut from the log) is not any more.
fn spawn_retirement_recorder<SM: RaftStateMachine<TypeConfig>>(
    raft: Raft<TypeConfig, SM>,
    retired: Arc<RwLock<BTreeSet<NodeId>>>,
    store: MessageStore,
) {
    tokio::spawn(async move {
        // Membership changes show in the server metrics (sent only when they change).
        let mut metrics = raft.server_metrics();
        let (mut seen_at, mut seen) = node_ids(&raft);
        loop {
            if metrics.changed().await.is_err() {
                return;
            }
            let (at, now) = node_ids(&raft);
            if at == seen_at || now.is_empty() {
                continue;
            }
            let left: Vec<NodeId> = seen.difference(&now).copied().collect();
            let updated = retired.read().ok().and_then(|r| {
                let mut next = r.clone();
                next.extend(&left);
                next.retain(|id| !now.contains(id));
                (next != *r).then_some(next)
            });
            if let Some(next) = updated {
                let (store, to_save) = (store.clone(), next.clone());
                let saved = tokio::task::spawn_blocking(move || {
                    warren_store::save_retired_nodes(&store.db(), &to_save)
                })
                .await;
                if let Err(e) = saved.map_err(std::io::Error::other).and_then(|r| r) {
                    warn!(error = %e, "could not record the nodes that left the membership");
                }
                if !left.is_empty() {
                    info!(nodes = ?left, "nodes left the membership: their certificates are refused from now on");
                }
                if let Ok(mut r) = retired.write() {
                    *r = next;
                }
            }
            (seen_at, seen) = (at, now);
        }
    });
}

/// Refuses a node-to-node request that claims to come from `claimed` when the caller's
/// certificate is another member's. `None`: the port is insecure (no certificates).
#[allow(clippy::result_large_err)]
pub fn check_sender(caller: Option<&Caller>, claimed: NodeId) -> Result<(), Status> {
    match caller {
        None => Ok(()),
        Some(Caller::Node(id)) if *id == claimed => Ok(()),
        Some(Caller::Node(id)) => Err(Status::permission_denied(format!(
            "the certificate of node {id} cannot speak for node {claimed}"
        ))),
        Some(Caller::Operator(name)) => Err(Status::permission_denied(format!(
            "operator '{name}' cannot speak for node {claimed}"
        ))),
    }
}
