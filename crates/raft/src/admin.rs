//! The `Admin` gRPC service: a node's view of its Raft group (state, term, leader, log indexes,
//! members with their incarnations and, on the leader, how far each member has replicated;
//! whether the cluster refuses this node) and membership changes. A node that does not lead
//! forwards a change to the leader once; the leader makes it (`crate::membership`). Also this
//! node's resources and alarms, and its memory high watermark.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;
use openraft::Instant as _;
use openraft::Raft;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use warren_proto::raft::admin_client::AdminClient;
use warren_proto::raft::admin_server::{Admin, AdminServer};
use warren_proto::raft::memory_high_watermark::Limit;
use warren_proto::raft::{
    AddLearnerRequest, MemberStatus, MembershipReply, MemoryHighWatermark,
    MemoryHighWatermarkReply, PromoteRequest, RemoveRequest, StatusReply, StatusRequest,
};

use crate::incarnation::IncarnationBook;
use crate::membership::{self, ChangeError, Removal};
use crate::resources::{MemoryLimit, NodeResources, ResourceLimits};
use crate::state_machine::BrokerStateMachine;
use crate::{NodeId, TypeConfig};

/// How long a learner may take to catch up when the request does not say.
const DEFAULT_CATCH_UP: Duration = Duration::from_secs(300);

/// Where a membership change is made.
enum Route {
    /// This node leads.
    Here,
    /// Forward to the leader's Admin service.
    Leader { id: NodeId, grpc_addr: String },
}

/// Answers status requests from one node's Raft metrics, and membership changes.
pub struct AdminService<SM: RaftStateMachine<TypeConfig>> {
    raft: Raft<TypeConfig, SM>,
    book: Arc<IncarnationBook>,
    /// Where a state digest is asked for (`StatusRequest::digest`); none: digests are empty.
    state: Option<BrokerStateMachine>,
    /// This node's resources as last measured, and its limits (none: not measured).
    resources: Option<(
        watch::Receiver<NodeResources>,
        watch::Sender<ResourceLimits>,
    )>,
    /// What this node's clients did (none: not reported).
    clients: Option<ClientTotalsReader>,
}

/// Reads the counts of what a node's clients did (the server's counters, which this crate does
/// not know).
pub type ClientTotalsReader = Arc<dyn Fn() -> warren_proto::raft::ClientTotals + Send + Sync>;

impl From<ChangeError> for Status {
    fn from(e: ChangeError) -> Status {
        match e {
            ChangeError::Refused(m) => Status::failed_precondition(m),
            ChangeError::Invalid(m) => Status::invalid_argument(m),
            ChangeError::Unavailable(m) => Status::unavailable(m),
            ChangeError::Timeout(m) => Status::deadline_exceeded(m),
            ChangeError::Fatal(m) => Status::internal(m),
        }
    }
}

impl<SM: RaftStateMachine<TypeConfig>> AdminService<SM> {
    pub fn new(raft: Raft<TypeConfig, SM>, book: Arc<IncarnationBook>) -> AdminService<SM> {
        AdminService {
            raft,
            book,
            state: None,
            resources: None,
            clients: None,
        }
    }

    /// Reports what this node's clients did, as `read` counts it.
    pub fn with_client_totals(self, read: ClientTotalsReader) -> AdminService<SM> {
        AdminService {
            clients: Some(read),
            ..self
        }
    }

    /// Reports the node's resources from `readings` and changes its memory watermark in
    /// `limits` (the resource monitor reacts at once).
    pub fn with_resources(
        self,
        readings: watch::Receiver<NodeResources>,
        limits: watch::Sender<ResourceLimits>,
    ) -> AdminService<SM> {
        AdminService {
            resources: Some((readings, limits)),
            ..self
        }
    }

    /// Answers `StatusRequest::digest` from this state machine's broker.
    pub fn with_state_digest(self, state: BrokerStateMachine) -> AdminService<SM> {
        AdminService {
            state: Some(state),
            ..self
        }
    }

    pub fn into_server(self) -> AdminServer<Self> {
        AdminServer::new(self)
    }

    /// The status as the reply carries it.
    pub fn status(&self) -> StatusReply {
        let m = self.raft.metrics().borrow_watched().clone();
        let resources = self
            .resources
            .as_ref()
            .map(|(r, _)| *r.borrow())
            .unwrap_or_default();
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
                incarnation: node.incarnation,
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
            incarnation: self.book.own(),
            insecure: crate::dial::insecure(),
            mem_used: resources.mem_used,
            mem_limit: resources.mem_limit,
            disk_free: resources.disk_free,
            disk_free_limit: resources.disk_free_limit,
            mem_alarm: resources.mem_alarm,
            disk_free_alarm: resources.disk_free_alarm,
            fd_used: crate::resources::open_fds(),
            fd_total: crate::resources::max_fds(),
            clients: self.clients.as_ref().map(|read| read()),
            // A node that leads is not refused, whatever it was told while campaigning.
            refused: if m.current_leader == Some(m.id) {
                String::new()
            } else {
                self.book.refused().unwrap_or_default()
            },
            joint: membership.get_joint_config().len() > 1,
            state_digest: String::new(),
            digest_applied_index: None,
        }
    }

    /// Where a membership change asked of this node is made. `forwarded`: the request already
    /// came from a node that took this one for the leader (it is not forwarded twice).
    fn route(&self, forwarded: bool) -> Result<Route, Status> {
        let me = self.book.node();
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(me) {
            if let Some(reason) = self.book.refused() {
                return Err(Status::failed_precondition(format!(
                    "node {me} is refused by the cluster: {reason}"
                )));
            }
        }
        match m.current_leader {
            Some(l) if l == me => Ok(Route::Here),
            Some(l) if forwarded => Err(Status::unavailable(format!(
                "node {me} was taken for the leader, but node {l} leads now; run it again"
            ))),
            Some(l) => match m.membership_config.membership().get_node(&l) {
                Some(node) => Ok(Route::Leader {
                    id: l,
                    grpc_addr: node.grpc_addr.clone(),
                }),
                None => Err(Status::unavailable(format!(
                    "node {me} does not know node {l}'s address (it leads); ask another node"
                ))),
            },
            None => Err(Status::unavailable(format!(
                "node {me} knows no leader (an election is under way, or it is not a member \
                 of a cluster); run it again or ask another node"
            ))),
        }
    }
}

/// A client of the Admin service of node `id` at `grpc_addr`.
async fn admin_client(
    id: NodeId,
    grpc_addr: &str,
) -> Result<AdminClient<tonic::transport::Channel>, Status> {
    let endpoint = crate::dial::endpoint(grpc_addr)
        .map_err(|e| Status::internal(format!("bad gRPC address of node {id}: {e}")))?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| {
        Status::unavailable(format!(
            "cannot reach the leader, node {id} at {grpc_addr}: {}",
            crate::dial::describe(&e)
        ))
    })?;
    Ok(AdminClient::new(channel))
}

/// The status of the node at `grpc_addr` (its own view, no digest), or `None` if it does not
/// answer within `within` (connecting included).
pub async fn status_of(grpc_addr: &str, within: Duration) -> Option<StatusReply> {
    let endpoint = crate::dial::endpoint(grpc_addr)
        .ok()?
        .connect_timeout(within)
        .timeout(within);
    let ask = async {
        AdminClient::new(endpoint.connect().await.ok()?)
            .status(StatusRequest {
                group_id: crate::METADATA_GROUP,
                digest: false,
            })
            .await
            .ok()
            .map(|r| r.into_inner())
    };
    tokio::time::timeout(within, ask).await.ok().flatten()
}

fn reply(leader: NodeId, message: String) -> Response<MembershipReply> {
    Response::new(MembershipReply { leader, message })
}

#[tonic::async_trait]
impl<SM: RaftStateMachine<TypeConfig>> Admin for AdminService<SM> {
    async fn set_memory_high_watermark(
        &self,
        request: Request<MemoryHighWatermark>,
    ) -> Result<Response<MemoryHighWatermarkReply>, Status> {
        let Some((readings, limits)) = &self.resources else {
            return Err(Status::unimplemented(
                "this node does not measure its memory",
            ));
        };
        let limit = match request.into_inner().limit {
            Some(Limit::Fraction(f)) if f.is_finite() && f > 0.0 => MemoryLimit::Fraction(f),
            Some(Limit::Absolute(text)) => match crate::resources::parse_bytes(&text) {
                Ok(b) if b > 0 => MemoryLimit::Absolute(b),
                Ok(_) => return Err(Status::invalid_argument("the watermark must be above 0")),
                Err(e) => return Err(Status::invalid_argument(e)),
            },
            _ => {
                return Err(Status::invalid_argument(
                    "the watermark is a fraction above 0 (0.6 is 60 %) or `absolute SIZE`",
                ))
            }
        };
        let mut readings = readings.clone();
        readings.borrow_and_update();
        limits.send_modify(|l| l.memory = limit);
        // The monitor measures again at once; answer with the limit it computed.
        let _ = tokio::time::timeout(Duration::from_secs(2), readings.changed()).await;
        let mem_limit = readings.borrow().mem_limit;
        Ok(Response::new(MemoryHighWatermarkReply { mem_limit }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let mut reply = AdminService::status(self);
        if let (true, Some(state)) = (request.get_ref().digest, &self.state) {
            let (index, digest) = state
                .state_digest()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            reply.state_digest = digest;
            reply.digest_applied_index = index;
        }
        Ok(Response::new(reply))
    }

    async fn add_learner(
        &self,
        request: Request<AddLearnerRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let r = request.into_inner();
        match self.route(r.forwarded)? {
            Route::Leader { id, grpc_addr } => {
                let forwarded = AddLearnerRequest {
                    forwarded: true,
                    ..r
                };
                admin_client(id, &grpc_addr)
                    .await?
                    .add_learner(forwarded)
                    .await
            }
            Route::Here => {
                let catch_up = match r.catch_up_timeout_ms {
                    0 => DEFAULT_CATCH_UP,
                    ms => Duration::from_millis(ms),
                };
                let done = membership::add_learner(
                    &self.raft,
                    r.group_id,
                    r.id,
                    &r.amqp_addr,
                    &r.grpc_addr,
                    catch_up,
                )
                .await?;
                Ok(reply(self.book.node(), done))
            }
        }
    }

    async fn promote(
        &self,
        request: Request<PromoteRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let r = request.into_inner();
        match self.route(r.forwarded)? {
            Route::Leader { id, grpc_addr } => {
                let forwarded = PromoteRequest {
                    forwarded: true,
                    ..r
                };
                admin_client(id, &grpc_addr).await?.promote(forwarded).await
            }
            Route::Here => {
                let done = membership::promote(&self.raft, r.id).await?;
                Ok(reply(self.book.node(), done))
            }
        }
    }

    async fn remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let r = request.into_inner();
        match self.route(r.forwarded)? {
            Route::Leader { id, grpc_addr } => {
                let forwarded = RemoveRequest {
                    forwarded: true,
                    ..r
                };
                admin_client(id, &grpc_addr).await?.remove(forwarded).await
            }
            Route::Here => match membership::remove(&self.raft, r.id).await? {
                Removal::Removed(done) => Ok(reply(self.book.node(), done)),
                Removal::HandedOver(to) => {
                    // The new leader removes this node; it is asked once, directly.
                    let m = self.raft.metrics().borrow_watched().clone();
                    let grpc_addr = m
                        .membership_config
                        .membership()
                        .get_node(&to)
                        .map(|n| n.grpc_addr.clone())
                        .ok_or_else(|| {
                            Status::unavailable(format!(
                                "node {to} took over but its address is unknown; run it again"
                            ))
                        })?;
                    let forwarded = RemoveRequest {
                        forwarded: true,
                        ..r
                    };
                    // The new leader may need a moment before it takes membership changes.
                    let deadline = std::time::Instant::now() + Duration::from_secs(5);
                    loop {
                        let result = admin_client(to, &grpc_addr).await?.remove(forwarded).await;
                        match result {
                            Err(s)
                                if s.code() == tonic::Code::Unavailable
                                    && std::time::Instant::now() < deadline =>
                            {
                                tokio::time::sleep(Duration::from_millis(200)).await
                            }
                            other => return other,
                        }
                    }
                }
            },
        }
    }
}
