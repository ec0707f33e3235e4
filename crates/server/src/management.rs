//! The management gRPC service (`proto/warren/management.proto`) and its in-process twin: the
//! cluster's read-only view, and closing a client connection.
//!
//! The leader's view has the replicated queues with their numbers (a replica does not know
//! which messages the leader checked out); while no leader is known a node answers from its own
//! broker, whose replicated state (vhosts, exchanges, bindings, queues, users) is complete.
//! Each node's broker holds its own client connections, their channels and consumers, and the
//! numbers of the transient queues homed there (see `docs/architecture.md`), so every node's
//! own view is asked for too and merged in ([`merge_homes`]). A connection is closed by its
//! node (its id names it: `warren_core::node_of`).

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
    /// The leader's (this node's or, over gRPC, another's), with every node's connections.
    Leader { node_id: u64 },
    /// No leader is known: this node's own broker's replicated state, with every node's
    /// connections that answered.
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

    /// Merges into `view` (the leader's) the other nodes' own views: their connections,
    /// channels and consumers, and the transient queues homed on them. A node that does not
    /// answer is missing its connections, and its queues are as the leader sees them.
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

    /// The cluster's view (see the module docs).
    pub async fn view(&self) -> Result<(BrokerView, ViewSource), Status> {
        let route = self.route.borrow().clone();
        let (view, source, leader) = match route {
            Route::Local => (
                self.local_view().await?,
                ViewSource::Leader {
                    node_id: self.node_id,
                },
                self.node_id,
            ),
            Route::Unknown => (self.local_view().await?, ViewSource::Local, self.node_id),
            Route::Remote { grpc_addr, node } => {
                let (view, node_id) = self.remote_view(&grpc_addr, false).await?;
                (view, ViewSource::Leader { node_id }, node)
            }
        };
        Ok((self.with_homes(view, leader).await, source))
    }

    /// Closes a client connection of any node with 320 CONNECTION_FORCED; false if its node
    /// does not know it.
    pub async fn close_connection(&self, conn: u64, reason: &str) -> Result<bool, Status> {
        let node = warren_core::node_of(conn);
        if node == self.node_id {
            return self.close_own(conn, reason).await;
        }
        let addr = self
            .members
            .borrow()
            .get(&node)
            .cloned()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| Status::not_found(format!("no member node {node} holds it")))?;
        Ok(self
            .leader(&addr)
            .await?
            .close_connection(CloseConnectionRequest {
                group_id: METADATA_GROUP,
                conn,
                reason: reason.to_owned(),
            })
            .await?
            .into_inner()
            .closed)
    }

    /// Closes a connection of this node; false if its broker does not know it.
    async fn close_own(&self, conn: u64, reason: &str) -> Result<bool, Status> {
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
        // Only this node's own connections: a caller asks the connection's node.
        let r = request.into_inner();
        let closed = warren_core::node_of(r.conn) == self.node_id
            && self.close_own(r.conn, &r.reason).await?;
        Ok(Response::new(CloseConnectionReply { closed }))
    }
}

/// Whether `q` is a stream (`x-queue-type: stream`).
fn is_stream(q: &warren_core::view::QueueView) -> bool {
    q.arguments.iter().any(|(k, v)| {
        k == "x-queue-type" && matches!(v, warren_core::view::ArgValue::Str(s) if s == "stream")
    })
}

/// Puts into the leader's `view` what the own views of the other nodes (`homes`, by node) say:
/// their client connections, channels and consumers, and the numbers and consumers of the
/// transient queues homed on each.
pub fn merge_homes(view: &mut BrokerView, leader: u64, homes: Vec<(u64, BrokerView)>) {
    for (node, home) in homes {
        if node == leader {
            continue;
        }
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
        view.connections.extend(home.connections);
        view.channels.extend(home.channels);
        view.consumers.extend(home.consumers);
        view.in_flow.extend(home.in_flow);
    }
    // Credit flow pauses a connection on its own node.
    let in_flow: std::collections::HashSet<u64> = view.in_flow.iter().copied().collect();
    for c in &mut view.connections {
        c.flow |= in_flow.contains(&c.conn);
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
    view.connections.sort_by_key(|c| c.conn);
    view.channels.sort_by_key(|c| (c.conn, c.number));
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

    fn connection(conn: u64) -> warren_core::view::ConnectionView {
        warren_core::view::ConnectionView {
            conn,
            name: conn.to_string(),
            user: "guest".into(),
            vhost: Some("/".into()),
            channels: 1,
            connected_at: 0,
            client_properties: Vec::new(),
            flow: false,
            protocol: None,
        }
    }

    fn channel(conn: u64) -> warren_core::view::ChannelView {
        warren_core::view::ChannelView {
            conn,
            number: 1,
            user: "guest".into(),
            vhost: "/".into(),
            consumers: 0,
            messages_unacknowledged: 0,
            prefetch_count: 0,
            global_prefetch_count: 0,
            confirm: false,
            transactional: false,
        }
    }

    #[test]
    fn every_nodes_connections_and_channels_are_listed_with_their_flow() {
        // Each node's broker holds its own clients' connections (issue 19, step 4).
        let mut leader = BrokerView {
            connections: vec![connection(30)],
            channels: vec![channel(30)],
            ..Default::default()
        };
        let two = BrokerView {
            connections: vec![connection(20), connection(21)],
            channels: vec![channel(21), channel(20)],
            in_flow: vec![21],
            ..Default::default()
        };
        merge_homes(&mut leader, 1, vec![(1, BrokerView::default()), (2, two)]);
        let conns: Vec<(u64, bool)> = leader
            .connections
            .iter()
            .map(|c| (c.conn, c.flow))
            .collect();
        assert_eq!(conns, [(20, false), (21, true), (30, false)]);
        let chans: Vec<u64> = leader.channels.iter().map(|c| c.conn).collect();
        assert_eq!(chans, [20, 21, 30]);
    }
}
