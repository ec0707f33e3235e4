//! The leader's side of the relay: each `Relay.Attach` stream carries the connections of one
//! other node. Their inputs go to this node's broker task; their effects go back on the stream.
//! When the stream ends (that node died, or its route changed), every connection on it that has
//! not been resumed through another stream since is closed in the broker, as if its socket had
//! closed. A node that does not lead refuses streams.

use std::collections::HashMap;
use std::pin::Pin;

use bytes::BytesMut;
use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};
use warren_core::{ConnId, Effect};
use warren_proto::raft::relay_server::{Relay, RelayServer};
use warren_proto::raft::RelayBatch;
use warren_raft::METADATA_GROUP;

use super::codec::{decode_ups, encode_effect, Up};
use super::Route;
use crate::broker_task::{BrokerHandle, ToBroker};

/// The gRPC relay service of one node.
#[derive(Clone)]
pub struct RelayService {
    broker: mpsc::Sender<ToBroker>,
    route: watch::Receiver<Route>,
}

impl RelayService {
    pub fn new(broker: &BrokerHandle, route: watch::Receiver<Route>) -> RelayService {
        RelayService {
            broker: broker.tx.clone(),
            route,
        }
    }

    /// The tonic service to mount on the node's gRPC server.
    pub fn into_server(self) -> RelayServer<RelayService> {
        RelayServer::new(self)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }
}

type Down = Pin<Box<dyn Stream<Item = Result<RelayBatch, Status>> + Send>>;

#[tonic::async_trait]
impl Relay for RelayService {
    type AttachStream = Down;

    async fn attach(
        &self,
        request: Request<Streaming<RelayBatch>>,
    ) -> Result<Response<Down>, Status> {
        if *self.route.borrow() != Route::Local {
            return Err(Status::unavailable("this node does not lead the cluster"));
        }
        let (down_tx, down_rx) = mpsc::channel(256);
        tokio::spawn(serve(
            request.into_inner(),
            self.broker.clone(),
            self.route.clone(),
            down_tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(down_rx))))
    }
}

async fn serve(
    mut up: Streaming<RelayBatch>,
    broker: mpsc::Sender<ToBroker>,
    mut route: watch::Receiver<Route>,
    down: mpsc::Sender<Result<RelayBatch, Status>>,
) {
    let mut conns: HashMap<ConnId, mpsc::UnboundedSender<Vec<Effect>>> = HashMap::new();
    // The node at the other end, once it said who it is (`Up::Home`), and where its home
    // copies' changes go.
    let mut home: Option<(u64, mpsc::UnboundedSender<Vec<Effect>>)> = None;
    loop {
        tokio::select! {
            // Stepping down ends every stream: the other nodes reroute.
            r = route.changed() => {
                if r.is_err() || *route.borrow() != Route::Local {
                    break;
                }
            }
            msg = up.message() => match msg {
                Ok(Some(b)) => {
                    let ups = match decode_ups(b.batch) {
                        Ok(u) => u,
                        Err(e) => {
                            warn!(error = %e, "undecodable relay batch; dropping the stream");
                            break;
                        }
                    };
                    for u in ups {
                        let msg = match u {
                            Up::Register(conn) => {
                                let (etx, erx) = mpsc::unbounded_channel();
                                tokio::spawn(forward_effects(erx, down.clone()));
                                conns.insert(conn, etx.clone());
                                ToBroker::Register { conn, effects: etx, image: None }
                            }
                            Up::Unregister(conn) => {
                                conns.remove(&conn);
                                ToBroker::Unregister { conn }
                            }
                            Up::Input(input) => ToBroker::Input(input),
                            Up::Home { node, copies } => {
                                let (etx, erx) = mpsc::unbounded_channel();
                                tokio::spawn(forward_effects(erx, down.clone()));
                                home = Some((node, etx.clone()));
                                ToBroker::HomeAttach { node, copies, effects: etx }
                            }
                            Up::Mirrored(count) => match &home {
                                Some((node, effects)) => ToBroker::HomeAcked {
                                    node: *node,
                                    effects: effects.clone(),
                                    count,
                                },
                                None => continue,
                            },
                        };
                        if broker.send(msg).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(None) | Err(_) => break,
            },
        }
    }
    debug!(connections = conns.len(), "relay stream ended");
    if let Some((node, effects)) = home {
        let _ = broker.send(ToBroker::HomeDetach { node, effects }).await;
    }
    for (conn, effects) in conns {
        let _ = broker.send(ToBroker::Detach { conn, effects }).await;
    }
}

/// Streams one relayed connection's effects back, a broker flush per batch.
async fn forward_effects(
    mut effects: mpsc::UnboundedReceiver<Vec<Effect>>,
    down: mpsc::Sender<Result<RelayBatch, Status>>,
) {
    while let Some(list) = effects.recv().await {
        let mut w = BytesMut::new();
        for e in &list {
            encode_effect(&mut w, e);
        }
        let batch = RelayBatch {
            group_id: METADATA_GROUP,
            batch: w.freeze(),
        };
        if down.send(Ok(batch)).await.is_err() {
            return;
        }
    }
}
