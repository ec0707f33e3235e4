//! The `Admin` gRPC service: a node's view of its Raft group (state, term, leader, log indexes,
//! members and, on the leader, how far each member has replicated).

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;
use openraft::Instant as _;
use openraft::Raft;
use tonic::{Request, Response, Status};
use warren_proto::raft::admin_server::{Admin, AdminServer};
use warren_proto::raft::{MemberStatus, StatusReply, StatusRequest};

use crate::TypeConfig;

/// Answers status requests from one node's Raft metrics.
pub struct AdminService<SM: RaftStateMachine<TypeConfig>> {
    raft: Raft<TypeConfig, SM>,
}

impl<SM: RaftStateMachine<TypeConfig>> AdminService<SM> {
    pub fn new(raft: Raft<TypeConfig, SM>) -> AdminService<SM> {
        AdminService { raft }
    }

    pub fn into_server(self) -> AdminServer<Self> {
        AdminServer::new(self)
    }

    /// The status as the reply carries it.
    pub fn status(&self) -> StatusReply {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                id: *id,
                amqp_addr: node.amqp_addr.clone(),
                grpc_addr: node.grpc_addr.clone(),
                voter: voters.contains(id),
                matched_index: m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id))
                    .and_then(|l| l.as_ref())
                    .map(|l| l.index),
            })
            .collect();
        StatusReply {
            node_id: m.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            committed_index: m.cluster_committed.as_ref().map(|l| l.index),
            applied_index: m.last_applied.as_ref().map(|l| l.index),
            members,
            millis_since_quorum_ack: m
                .last_quorum_acked
                .as_ref()
                .map(|at| at.elapsed().as_millis() as u64),
        }
    }
}

#[tonic::async_trait]
impl<SM: RaftStateMachine<TypeConfig>> Admin for AdminService<SM> {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        Ok(Response::new(AdminService::status(self)))
    }
}
