//! The management gRPC service (`proto/warren/management.proto`) and its in-process twin: the
//! cluster's read-only view, and closing a client connection. A node that does not lead asks
//! the leader; while no leader is known it answers from its own broker, whose replicated state
//! (vhosts, exchanges, bindings, queues, users) is complete but which has no connections.
//!
//! The leader's view has the connections, channels and replicated queues; the numbers and
//! consumers of a transient queue are its home node's (see `docs/architecture.md`), so each
//! node's own view is asked for too and merged in ([`merge_homes`]).

use std::collections::BTreeMap;

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
    /// Clients of the other nodes' services by gRPC address, reused across calls.
    clients: std::sync::Arc<std::sync::Mutex<BTreeMap<String, LeaderClient>>>,
    /// The members' gRPC addresses, by node id.
    members: watch::Receiver<BTreeMap<u64, String>>,
}

type LeaderClient = ManagementClient<tonic::transport::Channel>;

impl ManagementService {
    pub fn new(broker: &BrokerHandle, route: watch::Receiver<Route>, node_id: u64) -> Self {
        ManagementService {
            broker: broker.tx.clone(),
            route,
            node_id,
            clients: Default::default(),
            members: broker.links.addresses(),
        }
    }

    /// The tonic service to mount on the node's gRPC server.
    pub fn into_server(self) -> ManagementServer<ManagementService> {
        ManagementServer::new(self)
    }

    /// A client of the service at `grpc_addr` (cached).
    async fn leader(&self, grpc_addr: &str) -> Result<LeaderClient, Status> {
        if let Ok(cached) = self.clients.lock() {
            if let Some(client) = cached.get(grpc_addr) {
                return Ok(client.clone());
            }
        }
        let client = warren_raft::dial::connect(grpc_addr)
            .await
            .map(ManagementClient::new)
            .map_err(|e| Status::unavailable(format!("cannot reach {grpc_addr}: {e}")))?;
        if let Ok(mut cached) = self.clients.lock() {
            cached.insert(grpc_addr.to_owned(), client.clone());
        }
        Ok(client)
    }

    /// The view of the node at `grpc_addr` and its id: the cluster's from the leader, or with
    /// `local` the node's own (its transient queues' numbers and consumers).
    async fn remote_view(&self, grpc_addr: &str, local: bool) -> Result<(BrokerView, u64), Status> {
        let reply = self
            .leader(grpc_addr)
            .await?
            .view(ViewRequest {
                group_id: METADATA_GROUP,
                local,
            })
            .await?
            .into_inner();
        let view = serde_json::from_slice(&reply.view_json)
            .map_err(|e| Status::internal(format!("bad view from {grpc_addr}: {e}")))?;
        Ok((view, reply.node_id))
    }

    /// Merges into `view` (the leader's) the other nodes' views of the transient queues homed
    /// on them; a node that does not answer leaves its queues as the leader sees them.
    async fn with_homes(&self, mut view: BrokerView, leader: u64) -> BrokerView {
        let members = self.members.borrow().clone();
        let mut homes = Vec::new();
        for (&node, addr) in &members {
            if node == leader || addr.is_empty() {
                continue;
            }
            let answer = if node == self.node_id {
                self.local_view().await
            } else {
                self.remote_view(addr, true).await.map(|(v, _)| v)
            };
            match answer {
                Ok(v) => homes.push((node, v)),
                Err(e) => tracing::debug!(node, error = %e, "no view of a home node"),
            }
        }
        merge_homes(&mut view, leader, homes);
        view
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
            Route::Local => {
                let view = self.local_view().await?;
                let view = self.with_homes(view, self.node_id).await;
                Ok((
                    view,
                    ViewSource::Leader {
                        node_id: self.node_id,
                    },
                ))
            }
            Route::Unknown => Ok((self.local_view().await?, ViewSource::Local)),
            Route::Remote { grpc_addr, node } => {
                let (view, node_id) = self.remote_view(&grpc_addr, false).await?;
                let view = self.with_homes(view, node).await;
                Ok((view, ViewSource::Leader { node_id }))
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
    async fn view(&self, request: Request<ViewRequest>) -> Result<Response<ViewReply>, Status> {
        // Only the leader answers for the cluster (a follower's answer would lack connections),
        // unless the node's own view is asked for.
        if !request.into_inner().local && *self.route.borrow() != Route::Local {
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

/// Whether `q` is a stream (`x-queue-type: stream`).
fn is_stream(q: &warren_core::view::QueueView) -> bool {
    q.arguments.iter().any(|(k, v)| {
        k == "x-queue-type" && matches!(v, warren_core::view::ArgValue::Str(s) if s == "stream")
    })
}

/// Puts into the leader's `view` what the views of `homes` (by node) say of the transient queues
/// homed on each: their numbers, their consumers, and the consumers and unacked deliveries of
/// the client channels that use them.
pub fn merge_homes(view: &mut BrokerView, leader: u64, homes: Vec<(u64, BrokerView)>) {
    // Credit flow pauses a connection on its own node (the leader's included).
    let own_flow = std::mem::take(&mut view.in_flow);
    let in_flow: std::collections::HashSet<u64> = homes
        .iter()
        .filter(|(node, _)| *node != leader)
        .flat_map(|(_, home)| home.in_flow.iter().copied())
        .chain(own_flow)
        .collect();
    for c in &mut view.connections {
        c.flow |= in_flow.contains(&c.conn);
    }
    for (node, home) in homes {
        if node == leader {
            continue;
        }
        // Another node's connections are home sessions: their consumers are listed there
        // only (of transient queues homed there or, with queue commands, elsewhere; of
        // replicated queues, with queue commands to the leader's broker; of streams, read
        // from that node's replica).
        for q in &mut view.queues {
            if q.home != Some(node) {
                continue;
            }
            if let Some(h) = home
                .queues
                .iter()
                .find(|h| h.vhost == q.vhost && h.name == q.name)
            {
                *q = h.clone();
            }
        }
        view.consumers.extend(home.consumers.iter().cloned());
        for hc in &home.home_channels {
            if let Some(c) = view
                .channels
                .iter_mut()
                .find(|c| c.conn == hc.conn && c.number == hc.number)
            {
                c.consumers += hc.consumers;
                c.messages_unacknowledged += hc.messages_unacknowledged;
            }
        }
    }
    // The leader's own home sessions count too.
    let own: Vec<_> = std::mem::take(&mut view.home_channels);
    for hc in own {
        if let Some(c) = view
            .channels
            .iter_mut()
            .find(|c| c.conn == hc.conn && c.number == hc.number)
        {
            c.consumers += hc.consumers;
            c.messages_unacknowledged += hc.messages_unacknowledged;
        }
    }
    // A stream's consumers sit on their own nodes (each reads its replica): its count is
    // theirs, not the leader's alone.
    for q in view.queues.iter_mut().filter(|q| is_stream(q)) {
        q.consumers = view
            .consumers
            .iter()
            .filter(|c| c.vhost == q.vhost && c.queue == q.name)
            .count() as u32;
    }
    // Which consumer of a single-active-consumer queue is active, its owner knows (a channel
    // on another node sees only its own).
    for c in &mut view.consumers {
        if let Some(q) = view
            .queues
            .iter()
            .find(|q| q.vhost == c.vhost && q.name == c.queue)
        {
            if let Some(active) = &q.single_active_consumer_tag {
                c.active = *active == c.tag;
            }
        }
    }
    view.consumers
        .sort_by(|a, b| (a.conn, a.channel, &a.tag).cmp(&(b.conn, b.channel, &b.tag)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_core::view::{ConsumerView, QueueView};

    fn queue(name: &str, home: Option<u64>, consumers: u32, active: Option<&str>) -> QueueView {
        QueueView {
            vhost: "/".into(),
            name: name.into(),
            durable: false,
            auto_delete: false,
            exclusive_owner: None,
            arguments: Vec::new(),
            messages_ready: 0,
            messages_unacknowledged: 0,
            message_bytes_ready: 0,
            consumers,
            counters: Default::default(),
            published_from: Vec::new(),
            home,
            single_active_consumer_tag: active.map(str::to_owned),
            policy: None,
            operator_policy: None,
            effective_policy_definition: Vec::new(),
        }
    }

    fn consumer(conn: u64, tag: &str, queue: &str) -> ConsumerView {
        ConsumerView {
            conn,
            channel: 1,
            tag: tag.into(),
            vhost: "/".into(),
            queue: queue.into(),
            ack_required: true,
            prefetch_count: 0,
            exclusive: false,
            active: true,
        }
    }

    #[test]
    fn consumers_are_listed_from_their_channels_node_whoever_owns_the_queue() {
        // Leader 1; queue "t" homed on node 2, single active consumer, consumed by a client of
        // node 3 ("c3", with queue commands) and by one of node 2 ("c2", the active one).
        let mut leader = BrokerView {
            queues: vec![queue("t", Some(2), 0, None), queue("r", None, 1, None)],
            consumers: vec![consumer(10, "cr", "r")],
            ..Default::default()
        };
        let two = BrokerView {
            queues: vec![
                queue("t", Some(2), 2, Some("c2")),
                queue("r", None, 0, None),
            ],
            consumers: vec![consumer(20, "c2", "t")],
            ..Default::default()
        };
        let three = BrokerView {
            queues: vec![queue("t", Some(2), 0, None), queue("r", None, 0, None)],
            consumers: vec![consumer(30, "c3", "t"), consumer(31, "c3r", "r")],
            ..Default::default()
        };
        merge_homes(&mut leader, 1, vec![(2, two), (3, three)]);
        let listed: Vec<(u64, &str, bool)> = leader
            .consumers
            .iter()
            .map(|c| (c.conn, c.tag.as_str(), c.active))
            .collect();
        assert_eq!(
            listed,
            [
                (10, "cr", true),
                (20, "c2", true),
                (30, "c3", false),
                (31, "c3r", true)
            ],
            "node 3's consumer of node 2's queue is listed, waiting its turn as the owner says; \
             so is its consumer of the replicated queue (queue commands to the leader)"
        );
        assert_eq!(leader.queues[0].consumers, 2, "the owner's numbers");
    }

    #[test]
    fn a_streams_consumers_are_counted_on_every_node() {
        let stream = || {
            let mut q = queue("s", None, 0, None);
            q.arguments = vec![(
                "x-queue-type".into(),
                warren_core::view::ArgValue::Str("stream".into()),
            )];
            q
        };
        let mut leader = BrokerView {
            queues: vec![stream()],
            consumers: vec![consumer(10, "a", "s")],
            ..Default::default()
        };
        let two = BrokerView {
            queues: vec![stream()],
            consumers: vec![consumer(20, "b", "s"), consumer(21, "c", "s")],
            ..Default::default()
        };
        merge_homes(&mut leader, 1, vec![(2, two)]);
        assert_eq!(
            leader.queues[0].consumers, 3,
            "each node's readers of its replica"
        );
    }
}
