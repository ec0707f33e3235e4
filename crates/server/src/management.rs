//! The management gRPC service (`proto/warren/management.proto`) and its in-process twin: the
//! deciding broker's read-only view, and closing a client connection. A node that does not lead
//! asks the leader; while no leader is known it answers from its own broker, whose replicated
//! state (vhosts, exchanges, bindings, queues, users) is complete but which has no connections.

use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Request, Response, Status};
use warren_core::view::BrokerView;
use warren_core::Input;
use warren_proto::management::management_client::ManagementClient;
use warren_proto::management::management_server::{Management, ManagementServer};
use warren_proto::management::{
    CloseConnectionReply, CloseConnectionRequest, ViewReply, ViewRequest,
};
use warren_raft::METADATA_GROUP;

use crate::broker_task::{BrokerHandle, ToBroker};
use crate::relay::Route;

/// Which broker answered a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewSource {
    /// The leader's (this node's or, over gRPC, another's): connections of every node included.
    Leader { node_id: u64 },
    /// No leader is known: this node's own broker (no connections).
    Local,
}

/// The management service of one node.
#[derive(Clone)]
pub struct ManagementService {
    broker: mpsc::Sender<ToBroker>,
    route: watch::Receiver<Route>,
    node_id: u64,
    /// The last leader's client (its gRPC address and a channel to it), reused across calls.
    leader: std::sync::Arc<std::sync::Mutex<Option<(String, LeaderClient)>>>,
}

type LeaderClient = ManagementClient<tonic::transport::Channel>;

impl ManagementService {
    pub fn new(broker: &BrokerHandle, route: watch::Receiver<Route>, node_id: u64) -> Self {
        ManagementService {
            broker: broker.tx.clone(),
            route,
            node_id,
            leader: Default::default(),
        }
    }

    /// The tonic service to mount on the node's gRPC server.
    pub fn into_server(self) -> ManagementServer<ManagementService> {
        ManagementServer::new(self)
    }

    /// A client of the leader's service at `grpc_addr`: the cached one if it is for that address.
    async fn leader(&self, grpc_addr: &str) -> Result<LeaderClient, Status> {
        if let Ok(cached) = self.leader.lock() {
            if let Some((addr, client)) = cached.as_ref() {
                if addr == grpc_addr {
                    return Ok(client.clone());
                }
            }
        }
        let client = ManagementClient::connect(format!("http://{grpc_addr}"))
            .await
            .map_err(|e| Status::unavailable(format!("cannot reach the leader: {e}")))?;
        if let Ok(mut cached) = self.leader.lock() {
            *cached = Some((grpc_addr.to_owned(), client.clone()));
        }
        Ok(client)
    }

    async fn local_view(&self) -> Result<BrokerView, Status> {
        let (reply, view) = oneshot::channel();
        self.broker
            .send(ToBroker::View { reply })
            .await
            .map_err(|_| Status::unavailable("the broker has stopped"))?;
        view.await
            .map_err(|_| Status::unavailable("the broker has stopped"))
    }

    /// The deciding broker's view, wherever it runs (see the module docs).
    pub async fn view(&self) -> Result<(BrokerView, ViewSource), Status> {
        let route = self.route.borrow().clone();
        match route {
            Route::Local => Ok((
                self.local_view().await?,
                ViewSource::Leader {
                    node_id: self.node_id,
                },
            )),
            Route::Unknown => Ok((self.local_view().await?, ViewSource::Local)),
            Route::Remote { grpc_addr, .. } => {
                let reply = self
                    .leader(&grpc_addr)
                    .await?
                    .view(ViewRequest {
                        group_id: METADATA_GROUP,
                    })
                    .await?
                    .into_inner();
                let view = serde_json::from_slice(&reply.view_json)
                    .map_err(|e| Status::internal(format!("bad view from the leader: {e}")))?;
                Ok((
                    view,
                    ViewSource::Leader {
                        node_id: reply.node_id,
                    },
                ))
            }
        }
    }

    /// Closes a connection of any node with 320 CONNECTION_FORCED; false if the deciding broker
    /// does not know it.
    pub async fn close_connection(&self, conn: u64, reason: &str) -> Result<bool, Status> {
        let route = self.route.borrow().clone();
        match route {
            Route::Unknown => Err(Status::unavailable(
                "the cluster has no leader right now; try again",
            )),
            Route::Remote { grpc_addr, .. } => Ok(self
                .leader(&grpc_addr)
                .await?
                .close_connection(CloseConnectionRequest {
                    group_id: METADATA_GROUP,
                    conn,
                    reason: reason.to_owned(),
                })
                .await?
                .into_inner()
                .closed),
            Route::Local => {
                let known = self
                    .local_view()
                    .await?
                    .connections
                    .iter()
                    .any(|c| c.conn == conn);
                if known {
                    self.broker
                        .send(ToBroker::Input(Input::CloseConnection {
                            conn,
                            reason: reason.to_owned(),
                        }))
                        .await
                        .map_err(|_| Status::unavailable("the broker has stopped"))?;
                }
                Ok(known)
            }
        }
    }
}

#[tonic::async_trait]
impl Management for ManagementService {
    async fn view(&self, _request: Request<ViewRequest>) -> Result<Response<ViewReply>, Status> {
        // Only the leader answers for the cluster: a follower's answer would lack connections.
        if *self.route.borrow() != Route::Local {
            return Err(Status::failed_precondition("this node does not lead"));
        }
        let view = self.local_view().await?;
        let view_json = serde_json::to_vec(&view)
            .map_err(|e| Status::internal(format!("encoding the view: {e}")))?;
        Ok(Response::new(ViewReply {
            view_json: view_json.into(),
            node_id: self.node_id,
        }))
    }

    async fn close_connection(
        &self,
        request: Request<CloseConnectionRequest>,
    ) -> Result<Response<CloseConnectionReply>, Status> {
        if *self.route.borrow() != Route::Local {
            return Err(Status::failed_precondition("this node does not lead"));
        }
        let r = request.into_inner();
        let closed = ManagementService::close_connection(self, r.conn, &r.reason).await?;
        Ok(Response::new(CloseConnectionReply { closed }))
    }
}
