//! The receiving side of home streams (`Relay.Attach`): the messages another node's broker
//! forwards to the transient queues homed here ([`Up::Forward`], acknowledged with
//! [`Down::Forwarded`]), its logged commands for this node's Raft while it leads
//! ([`Up::Propose`]), its queue commands and events, handed to the broker in order, and its
//! client counts. Accepted whether or not this node leads. When a stream ends, or when a newer
//! one from the same node says hello (whichever comes first, and before anything of the newer
//! one), the broker drops what it shares with that node ([`ToBroker::PeerLost`]).
//!
//! Also `Relay.Propose`: a follower's broker proposes through the leader.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::Stream;
use openraft::Raft;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};
use warren_core::{node_of, Input};
use warren_proto::raft::relay_server::{Relay, RelayServer};
use warren_proto::raft::{ProposeReply, ProposeRequest, RelayBatch};
use warren_raft::state_machine::BrokerStateMachine;
use warren_raft::{LogCommand, TypeConfig, METADATA_GROUP};

use super::codec::{decode_ups, encode_down, Down, Up};
use crate::broker_task::{BrokerHandle, ToBroker};
use crate::proposer::Proposal;

/// The gRPC relay service of one node.
#[derive(Clone)]
pub struct RelayService {
    broker: mpsc::Sender<ToBroker>,
    raft: Option<Raft<TypeConfig, BrokerStateMachine>>,
    /// This node's proposer: other nodes' logged publishes (`Up::Propose`) go there.
    proposals: Option<mpsc::UnboundedSender<Proposal>>,
    /// Per node, the incarnation of its current home stream here (see [`Up::Hello`]).
    homes: Arc<tokio::sync::Mutex<HashMap<u64, u64>>>,
}

impl RelayService {
    pub fn new(broker: &BrokerHandle) -> RelayService {
        RelayService {
            broker: broker.tx.clone(),
            raft: None,
            proposals: broker.proposals.clone(),
            homes: Arc::default(),
        }
    }

    /// Serves `Relay.Propose` through this Raft node (without it, proposals are refused).
    pub fn with_raft(mut self, raft: Raft<TypeConfig, BrokerStateMachine>) -> RelayService {
        self.raft = Some(raft);
        self
    }

    /// A home stream of `node` says hello: one that replaces an earlier stream first drops
    /// what the brokers shared over it, before anything of the new one reaches the broker
    /// (the lock is held across that). A stream older than the current one is refused.
    async fn home_begins(&self, node: u64, incarnation: u64) -> Result<(), Status> {
        let mut homes = self.homes.lock().await;
        match homes.get(&node).copied() {
            Some(current) if incarnation != 0 && incarnation < current => {
                return Err(Status::aborted("a newer home stream of this node is open"));
            }
            Some(_) => {
                let lost = ToBroker::PeerLost { node, done: None };
                if self.broker.send(lost).await.is_err() {
                    return Err(Status::unavailable("this node is stopping"));
                }
            }
            None => {}
        }
        homes.insert(node, incarnation);
        Ok(())
    }

    /// The tonic service to mount on the node's gRPC server.
    pub fn into_server(self) -> RelayServer<RelayService> {
        RelayServer::new(self)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }
}

type DownStream = Pin<Box<dyn Stream<Item = Result<RelayBatch, Status>> + Send>>;

#[tonic::async_trait]
impl Relay for RelayService {
    type AttachStream = DownStream;

    async fn attach(
        &self,
        request: Request<Streaming<RelayBatch>>,
    ) -> Result<Response<DownStream>, Status> {
        let caller = request
            .extensions()
            .get::<warren_tls::grpc::Caller>()
            .cloned();
        let mut up = request.into_inner();
        // The first message says who sends and what for.
        let first = match up.message().await {
            Ok(Some(b)) => {
                decode_ups(b.batch).map_err(|e| Status::invalid_argument(e.to_string()))?
            }
            Ok(None) => return Err(Status::cancelled("the stream ended before its hello")),
            Err(e) => return Err(e),
        };
        let mut first = first.into_iter();
        let (node, incarnation) = match first.next() {
            Some(Up::Hello { node, incarnation }) => (node, incarnation),
            _ => {
                return Err(Status::invalid_argument(
                    "a relay stream starts with a hello",
                ))
            }
        };
        // Only in the name of the node whose certificate called.
        warren_raft::trust::check_sender(caller.as_ref(), node)?;
        self.home_begins(node, incarnation).await?;
        let (down_tx, down_rx) = mpsc::channel(256);
        let stream = Stream_ {
            broker: self.broker.clone(),
            down: down_tx,
            node,
            acks: None,
            forwards: 0,
            proposals: self.proposals.clone(),
            incarnation,
            homes: self.homes.clone(),
        };
        let rest: Vec<Up> = first.collect();
        tokio::spawn(stream.serve(rest, up));
        Ok(Response::new(Box::pin(ReceiverStream::new(down_rx))))
    }

    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeReply>, Status> {
        let Some(raft) = &self.raft else {
            return Err(Status::failed_precondition("this node takes no proposals"));
        };
        let command = warren_raft::decode_command(request.into_inner().command)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        match raft.client_write(LogCommand(command)).await {
            Ok(r) => Ok(Response::new(ProposeReply {
                index: r.log_id().index,
            })),
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(_),
            )) => Err(Status::failed_precondition(
                "this node does not lead the cluster",
            )),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}

/// One attached stream.
struct Stream_ {
    broker: mpsc::Sender<ToBroker>,
    down: mpsc::Sender<Result<RelayBatch, Status>>,
    node: u64,
    /// Where the broker acknowledges this stream's forwards, and how many came.
    acks: Option<mpsc::UnboundedSender<Vec<Down>>>,
    forwards: u64,
    proposals: Option<mpsc::UnboundedSender<Proposal>>,
    /// The hello's incarnation.
    incarnation: u64,
    homes: Arc<tokio::sync::Mutex<HashMap<u64, u64>>>,
}

impl Stream_ {
    async fn serve(mut self, first: Vec<Up>, mut up: Streaming<RelayBatch>) {
        if !self.handle(first).await {
            return self.end().await;
        }
        while let Ok(Some(b)) = up.message().await {
            match decode_ups(b.batch) {
                Ok(ups) => {
                    if !self.handle(ups).await {
                        break;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "undecodable relay batch; dropping the stream");
                    break;
                }
            }
        }
        self.end().await;
    }

    /// Handles a batch's messages in order; false once the broker is gone.
    async fn handle(&mut self, ups: Vec<Up>) -> bool {
        for u in ups {
            let msg = match u {
                Up::Forward { queue, message } => {
                    self.forwards += 1;
                    ToBroker::ForwardIn {
                        from: self.node,
                        seq: self.forwards,
                        queue,
                        message,
                        acks: self.acks(),
                    }
                }
                Up::Propose(command) => {
                    match &self.proposals {
                        Some(p) => {
                            let _ = p.send(Proposal::Relayed(command));
                        }
                        None => warn!("a proposal from another node, and no Raft here; dropped"),
                    }
                    continue;
                }
                Up::Hello { .. } => continue,
                Up::QueueCommand(command) => {
                    // A node speaks for its own channels only.
                    if command
                        .consumer()
                        .is_some_and(|c| node_of(c.conn) != self.node)
                    {
                        warn!(
                            node = self.node,
                            "a queue command for another node's consumer; dropped"
                        );
                        continue;
                    }
                    ToBroker::Input(Input::QueueCommand {
                        from: self.node,
                        command,
                    })
                }
                Up::QueueEvent(event) => ToBroker::Input(Input::QueueEvent {
                    from: self.node,
                    event,
                }),
                Up::Counts(counts) => ToBroker::Input(Input::PeerCounts {
                    node: self.node,
                    counts,
                }),
            };
            if self.broker.send(msg).await.is_err() {
                return false;
            }
        }
        true
    }

    /// The sink of this stream's acknowledgements (started with the first forward).
    fn acks(&mut self) -> mpsc::UnboundedSender<Vec<Down>> {
        if let Some(a) = &self.acks {
            return a.clone();
        }
        let (atx, arx) = mpsc::unbounded_channel();
        tokio::spawn(forward_downs(arx, self.down.clone()));
        self.acks = Some(atx.clone());
        atx
    }

    async fn end(self) {
        debug!(node = self.node, "home stream ended");
        // Unless a newer stream of the node replaced this one (and did this already).
        let mut homes = self.homes.lock().await;
        if homes.get(&self.node) == Some(&self.incarnation) {
            homes.remove(&self.node);
            let lost = ToBroker::PeerLost {
                node: self.node,
                done: None,
            };
            let _ = self.broker.send(lost).await;
        }
    }
}

/// Streams the acknowledgements of forwarded messages back.
async fn forward_downs(
    mut downs: mpsc::UnboundedReceiver<Vec<Down>>,
    down: mpsc::Sender<Result<RelayBatch, Status>>,
) {
    while let Some(list) = downs.recv().await {
        let mut w = BytesMut::new();
        for d in &list {
            encode_down(&mut w, d);
        }
        // Take what else is waiting: one batch.
        while let Ok(more) = downs.try_recv() {
            for d in &more {
                encode_down(&mut w, d);
            }
        }
        let batch = RelayBatch {
            group_id: METADATA_GROUP,
            batch: w.freeze(),
            applied: 0,
        };
        if down.send(Ok(batch)).await.is_err() {
            return;
        }
    }
}
