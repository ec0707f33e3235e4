//! Which peers of the gRPC port this node trusts, on top of the TLS handshake (a certificate of
//! the cluster's CA): node-to-node traffic only from a certificate that names a member, and only
//! in that member's own name. The guard itself is `warren_tls::grpc`; this is what it asks of
//! the Raft membership.

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;
use openraft::Raft;
use tonic::Status;
use warren_tls::grpc::{Caller, Membership};
use warren_tls::PeerIdentity;

use crate::{NodeId, TypeConfig};

/// The members of one Raft group, read from its current membership at every call.
pub struct MemberCheck<SM: RaftStateMachine<TypeConfig>> {
    raft: Raft<TypeConfig, SM>,
}

impl<SM: RaftStateMachine<TypeConfig>> MemberCheck<SM> {
    pub fn new(raft: Raft<TypeConfig, SM>) -> MemberCheck<SM> {
        MemberCheck { raft }
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
