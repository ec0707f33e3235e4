//! The router between a node's connections and the deciding broker: the local broker task when
//! this node leads, a relay stream to the leader when another node does. Input waits while no
//! leader is known (the connections' sends block: TCP back-pressure), so a publish that arrives
//! during an election waits for the new leader instead of failing.
//!
//! When the decider changes (or the stream to it breaks), every connection is resumed on the
//! next one from its [`SessionImage`](super::image::SessionImage) before any more of its input
//! is forwarded: the client keeps its connection, channels, consumers and confirm numbering.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};
use warren_core::{AmqpError, ConnId, Effect, Input};
use warren_proto::raft::relay_client::RelayClient;
use warren_proto::raft::RelayBatch;
use warren_raft::METADATA_GROUP;

use super::codec::{decode_downs, encode_up, Down, Up};
use super::image::SharedImage;
use super::Route;
use crate::broker_task::{wait_applied, Batch, EffectSink, ToBroker};

const BATCH: usize = 256;

struct Conn {
    effects: EffectSink,
    image: SharedImage,
}

struct Link {
    up: mpsc::Sender<RelayBatch>,
    down: tonic::Streaming<RelayBatch>,
}

impl Link {
    /// Sends one batch of encoded [`Up`] messages (nothing if empty); false if the stream is gone.
    async fn send(&self, w: BytesMut) -> bool {
        if w.is_empty() {
            return true;
        }
        self.up
            .send(RelayBatch {
                group_id: METADATA_GROUP,
                batch: w.freeze(),
                applied: 0,
            })
            .await
            .is_ok()
    }
}

/// Starts the router; connections send to the returned sender.
pub(crate) fn spawn(
    local: mpsc::Sender<ToBroker>,
    route: watch::Receiver<Route>,
    node: u64,
    applied: watch::Receiver<u64>,
) -> mpsc::Sender<ToBroker> {
    let (tx, rx) = mpsc::channel(crate::broker_task::INPUT_CAPACITY);
    tokio::spawn(run(rx, local, route, node, applied));
    tx
}

async fn run(
    mut rx: mpsc::Receiver<ToBroker>,
    local: mpsc::Sender<ToBroker>,
    mut route: watch::Receiver<Route>,
    node: u64,
    mut applied: watch::Receiver<u64>,
) {
    let mut conns: HashMap<ConnId, Conn> = HashMap::new();
    let mut current = route.borrow_and_update().clone();
    let mut link: Option<Link> = None;
    // The decider changed (or the way to it broke): every connection must be re-created on the
    // next one before anything else of theirs is forwarded.
    let mut must_resume = false;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if let Route::Remote { grpc_addr, .. } = &current {
            if link.is_none() {
                link = connect(grpc_addr, node).await;
                if link.is_none() {
                    // Retry soon, unless the route changes first.
                    tokio::select! {
                        r = route.changed() => if r.is_err() { return },
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                    let now = route.borrow_and_update().clone();
                    if now != current {
                        current = now;
                        must_resume = true;
                    }
                    continue;
                }
            }
        }
        let ready = match current {
            Route::Unknown => false,
            Route::Local => true,
            Route::Remote { .. } => link.is_some(),
        };
        if ready && must_resume {
            let sent = match &current {
                Route::Local => resume_local(&local, &mut conns).await,
                _ => match &link {
                    Some(l) => resume_remote(l, &mut conns).await,
                    None => false,
                },
            };
            if sent {
                must_resume = false;
            } else {
                link = None;
                continue;
            }
        }
        tokio::select! {
            r = route.changed() => {
                if r.is_err() {
                    return;
                }
                let now = route.borrow_and_update().clone();
                if now != current {
                    info!(route = ?now, connections = conns.len(), "the cluster's decider moved; connections will resume there");
                    current = now;
                    link = None;
                    must_resume = true;
                }
            }
            n = rx.recv_many(&mut batch, BATCH), if ready => {
                if n == 0 {
                    return;
                }
                let msgs: Vec<ToBroker> = std::mem::take(&mut batch);
                let sent = match &current {
                    Route::Local => forward_local(&local, msgs, &mut conns, &mut applied).await,
                    _ => match &link {
                        Some(l) => forward_remote(l, msgs, &mut conns).await,
                        None => true,
                    },
                };
                if !sent {
                    warn!("lost the way to the leader's broker; connections will resume");
                    link = None;
                    must_resume = true;
                }
            }
            down = async {
                match link.as_mut() {
                    Some(l) => l.down.message().await,
                    None => std::future::pending().await,
                }
            }, if link.is_some() => match down {
                Ok(Some(b)) => match decode_downs(b.batch) {
                    Ok(downs) => {
                        let effects = downs
                            .into_iter()
                            .filter_map(|d| match d {
                                Down::Effect(e) => Some(e),
                                Down::Forwarded { .. } => None,
                            })
                            .collect();
                        deliver(&mut conns, b.applied, effects);
                    }
                    Err(e) => warn!(error = %e, "undecodable effects from the leader"),
                },
                Ok(None) | Err(_) => {
                    info!("relay stream to the leader ended; connections will resume");
                    link = None;
                    must_resume = true;
                }
            },
        }
    }
}

/// The inputs that re-create every connection on a new decider; connections that cannot be
/// resumed are closed (320) and forgotten.
fn resume_all(conns: &mut HashMap<ConnId, Conn>) -> Vec<(ConnId, Vec<Input>)> {
    let mut out = Vec::with_capacity(conns.len());
    let mut closed = Vec::new();
    for (&conn, c) in conns.iter() {
        let result = c.image.lock().resume(conn);
        match result {
            Ok(inputs) => out.push((conn, inputs)),
            Err(why) => {
                debug!(conn, why, "connection cannot be resumed; closing it");
                let _ = c.effects.send(Batch {
                    index: 0,
                    effects: vec![Effect::CloseConnection {
                        conn,
                        error: AmqpError::new(
                            320,
                            format!("the cluster leader changed and {why}; reconnect"),
                        ),
                    }],
                });
                closed.push(conn);
            }
        }
    }
    for conn in closed {
        conns.remove(&conn);
    }
    out
}

async fn resume_local(local: &mpsc::Sender<ToBroker>, conns: &mut HashMap<ConnId, Conn>) -> bool {
    for (conn, inputs) in resume_all(conns) {
        let Some(c) = conns.get(&conn) else { continue };
        let register = ToBroker::Register {
            conn,
            effects: c.effects.clone(),
            image: None,
        };
        if local.send(register).await.is_err() {
            return false;
        }
        for input in inputs {
            if local.send(ToBroker::Input(input)).await.is_err() {
                return false;
            }
        }
    }
    true
}

async fn resume_remote(link: &Link, conns: &mut HashMap<ConnId, Conn>) -> bool {
    let mut w = BytesMut::new();
    for (conn, inputs) in resume_all(conns) {
        encode_up(&mut w, &Up::Register(conn));
        for input in inputs {
            encode_up(&mut w, &Up::Input(input));
        }
    }
    link.send(w).await
}

/// Opens the relay stream to the leader and says hello.
async fn connect(grpc_addr: &str, node: u64) -> Option<Link> {
    let mut client = match warren_raft::dial::connect(grpc_addr).await {
        Ok(c) => RelayClient::new(c)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20),
        Err(e) => {
            debug!(error = %e, grpc_addr, "relay connect failed");
            return None;
        }
    };
    let (up, up_rx) = mpsc::channel(64);
    let mut hello = BytesMut::new();
    encode_up(
        &mut hello,
        &Up::Hello {
            node,
            home: false,
            incarnation: 0,
        },
    );
    let hello = RelayBatch {
        group_id: METADATA_GROUP,
        batch: hello.freeze(),
        applied: 0,
    };
    if up.send(hello).await.is_err() {
        return None;
    }
    match client.attach(ReceiverStream::new(up_rx)).await {
        Ok(resp) => {
            info!(grpc_addr, "relaying client traffic to the leader");
            Some(Link {
                up,
                down: resp.into_inner(),
            })
        }
        Err(e) => {
            debug!(error = %e, grpc_addr, "the leader refused the relay");
            None
        }
    }
}

fn conn_of(input: &Input) -> Option<ConnId> {
    match input {
        Input::Login { conn, .. }
        | Input::OpenVhost { conn, .. }
        | Input::Method { conn, .. }
        | Input::Publish { conn, .. }
        | Input::Writable { conn, .. }
        | Input::ConnectionClosed { conn }
        | Input::ChannelError { conn, .. }
        | Input::Resume { conn, .. }
        | Input::OpenHome { conn, .. }
        | Input::Sync { conn, .. }
        | Input::CloseConnection { conn, .. } => Some(*conn),
        Input::Applied { .. }
        | Input::Tick
        | Input::Forwarded { .. }
        | Input::NodeDown { .. }
        | Input::QueueCommand { .. }
        | Input::QueueEvent { .. }
        | Input::PeerLost { .. }
        | Input::Leader { .. } => None,
    }
}

/// Whether `msg` is to be forwarded, with the bookkeeping of registers, unregisters and the
/// connections' images.
fn admit(msg: &ToBroker, conns: &mut HashMap<ConnId, Conn>) -> bool {
    match msg {
        ToBroker::Register {
            conn,
            effects,
            image,
        } => {
            conns.insert(
                *conn,
                Conn {
                    effects: effects.clone(),
                    image: image.clone().unwrap_or_default(),
                },
            );
            true
        }
        ToBroker::Unregister { conn } => conns.remove(conn).is_some(),
        ToBroker::Input(input) => match conn_of(input).and_then(|conn| conns.get(&conn)) {
            Some(c) => {
                c.image.lock().forwarded(input);
                true
            }
            // A connection closed because it could not be resumed.
            None => false,
        },
        ToBroker::Barrier(_) => true,
        ToBroker::Detach { .. }
        | ToBroker::CheckSecurity { .. }
        | ToBroker::View { .. }
        | ToBroker::Lead { .. }
        | ToBroker::Leader(_)
        | ToBroker::StepDown
        | ToBroker::ForwardIn { .. }
        | ToBroker::LinkAcked { .. }
        | ToBroker::LinkRefused { .. }
        | ToBroker::PeerLost { .. }
        | ToBroker::LinkLost { .. } => false,
    }
}

async fn forward_local(
    local: &mpsc::Sender<ToBroker>,
    msgs: Vec<ToBroker>,
    conns: &mut HashMap<ConnId, Conn>,
    applied: &mut watch::Receiver<u64>,
) -> bool {
    for msg in msgs {
        if !admit(&msg, conns) {
            continue;
        }
        if let ToBroker::Barrier(index) = msg {
            // This node leads: it applies what it commits, at once or nearly.
            if !wait_applied(applied, index, || {
                "a barrier to the leader session".to_owned()
            })
            .await
            {
                return false;
            }
            continue;
        }
        if local.send(msg).await.is_err() {
            return false;
        }
    }
    true
}

async fn forward_remote(
    link: &Link,
    msgs: Vec<ToBroker>,
    conns: &mut HashMap<ConnId, Conn>,
) -> bool {
    let mut w = BytesMut::new();
    for msg in msgs {
        if !admit(&msg, conns) {
            continue;
        }
        let up = match msg {
            ToBroker::Register { conn, .. } => Up::Register(conn),
            ToBroker::Unregister { conn } => Up::Unregister(conn),
            ToBroker::Input(input) => Up::Input(input),
            ToBroker::Barrier(index) => Up::Barrier(index),
            _ => continue,
        };
        encode_up(&mut w, &up);
    }
    link.send(w).await
}

fn deliver(conns: &mut HashMap<ConnId, Conn>, index: u64, effects: Vec<Effect>) {
    let mut by_conn: HashMap<ConnId, Vec<Effect>> = HashMap::new();
    for e in effects {
        by_conn.entry(effect_conn(&e)).or_default().push(e);
    }
    for (conn, effects) in by_conn {
        if let Some(c) = conns.get(&conn) {
            let _ = c.effects.send(Batch { index, effects });
        }
    }
}

pub(crate) fn effect_conn(e: &Effect) -> ConnId {
    match e {
        Effect::Send { conn, .. }
        | Effect::SendContent { conn, .. }
        | Effect::Authenticated { conn, .. }
        | Effect::CloseChannel { conn, .. }
        | Effect::CloseConnection { conn, .. }
        | Effect::AwaitWritable { conn }
        | Effect::Flow { conn, .. }
        | Effect::Synced { conn, .. }
        | Effect::Redirect { conn, .. } => *conn,
        Effect::Propose { .. }
        | Effect::Forward { .. }
        | Effect::ForwardRefused { .. }
        | Effect::ToOwner { .. }
        | Effect::ToChannel { .. } => 0,
    }
}
