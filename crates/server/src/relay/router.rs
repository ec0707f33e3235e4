//! The router between a node's connections and the deciding broker: the local broker task when
//! this node leads, a relay stream to the leader when another node does. Input waits while no
//! leader is known (the connections' sends block: TCP back-pressure), so a publish that arrives
//! during an election waits for the new leader instead of failing.

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

use super::codec::{decode_effects, encode_up, Up};
use super::Route;
use crate::broker_task::ToBroker;

const BATCH: usize = 256;

struct Conn {
    effects: mpsc::UnboundedSender<Vec<Effect>>,
    /// The route generation the connection was registered under.
    generation: u64,
}

struct Link {
    up: mpsc::Sender<RelayBatch>,
    down: tonic::Streaming<RelayBatch>,
}

/// Starts the router; connections send to the returned sender.
pub(crate) fn spawn(
    local: mpsc::Sender<ToBroker>,
    route: watch::Receiver<Route>,
) -> mpsc::Sender<ToBroker> {
    let (tx, rx) = mpsc::channel(crate::broker_task::INPUT_CAPACITY);
    tokio::spawn(run(rx, local, route));
    tx
}

async fn run(
    mut rx: mpsc::Receiver<ToBroker>,
    local: mpsc::Sender<ToBroker>,
    mut route: watch::Receiver<Route>,
) {
    let mut conns: HashMap<ConnId, Conn> = HashMap::new();
    let mut generation = 0u64;
    let mut current = route.borrow_and_update().clone();
    let mut link: Option<Link> = None;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if let Route::Remote { grpc_addr, .. } = &current {
            if link.is_none() {
                link = connect(grpc_addr).await;
                if link.is_none() {
                    // Retry soon, unless the route changes first.
                    tokio::select! {
                        r = route.changed() => if r.is_err() { return },
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                    current = switch(&route, &mut generation, &mut conns, &mut link);
                    continue;
                }
            }
        }
        let ready = match current {
            Route::Unknown => false,
            Route::Local => true,
            Route::Remote { .. } => link.is_some(),
        };
        tokio::select! {
            r = route.changed() => {
                if r.is_err() {
                    return;
                }
                current = switch(&route, &mut generation, &mut conns, &mut link);
            }
            n = rx.recv_many(&mut batch, BATCH), if ready => {
                if n == 0 {
                    return;
                }
                let msgs: Vec<ToBroker> = std::mem::take(&mut batch);
                let sent = match &current {
                    Route::Local => forward_local(&local, msgs, &mut conns, generation).await,
                    _ => match &link {
                        Some(l) => forward_remote(l, msgs, &mut conns, generation).await,
                        None => true,
                    },
                };
                if !sent {
                    warn!("lost the way to the leader's broker; closing its connections");
                    generation += 1;
                    close_stale(&mut conns, generation, "lost contact with the cluster leader; reconnect");
                    link = None;
                }
            }
            down = async {
                match link.as_mut() {
                    Some(l) => l.down.message().await,
                    None => std::future::pending().await,
                }
            }, if link.is_some() => match down {
                Ok(Some(b)) => match decode_effects(b.batch) {
                    Ok(effects) => deliver(&mut conns, effects),
                    Err(e) => warn!(error = %e, "undecodable effects from the leader"),
                },
                Ok(None) | Err(_) => {
                    info!("relay stream to the leader ended; closing its connections");
                    generation += 1;
                    close_stale(&mut conns, generation, "the cluster leader went away; reconnect");
                    link = None;
                }
            },
        }
    }
}

/// A new route: connections registered under the old one are closed (320).
fn switch(
    route: &watch::Receiver<Route>,
    generation: &mut u64,
    conns: &mut HashMap<ConnId, Conn>,
    link: &mut Option<Link>,
) -> Route {
    let now = route.borrow().clone();
    *generation += 1;
    close_stale(conns, *generation, "the cluster leader changed; reconnect");
    *link = None;
    now
}

fn close_stale(conns: &mut HashMap<ConnId, Conn>, generation: u64, reason: &str) {
    for (conn, c) in conns.iter() {
        if c.generation < generation {
            let _ = c.effects.send(vec![Effect::CloseConnection {
                conn: *conn,
                error: AmqpError::new(320, reason),
            }]);
        }
    }
}

async fn connect(grpc_addr: &str) -> Option<Link> {
    let mut client = match RelayClient::connect(format!("http://{grpc_addr}")).await {
        Ok(c) => c
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20),
        Err(e) => {
            debug!(error = %e, grpc_addr, "relay connect failed");
            return None;
        }
    };
    let (up, up_rx) = mpsc::channel(64);
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
        | Input::ChannelError { conn, .. } => Some(*conn),
        Input::Applied { .. } | Input::Tick => None,
    }
}

/// Whether `msg` belongs to the current route (and bookkeeping for registers/unregisters).
fn admit(msg: &ToBroker, conns: &mut HashMap<ConnId, Conn>, generation: u64) -> bool {
    match msg {
        ToBroker::Register { conn, effects } => {
            conns.insert(
                *conn,
                Conn {
                    effects: effects.clone(),
                    generation,
                },
            );
            true
        }
        ToBroker::Unregister { conn } => conns
            .remove(conn)
            .is_some_and(|c| c.generation == generation),
        ToBroker::Input(input) => match conn_of(input) {
            Some(conn) => conns.get(&conn).is_some_and(|c| c.generation == generation),
            None => false,
        },
        ToBroker::Lead | ToBroker::StepDown => false,
    }
}

async fn forward_local(
    local: &mpsc::Sender<ToBroker>,
    msgs: Vec<ToBroker>,
    conns: &mut HashMap<ConnId, Conn>,
    generation: u64,
) -> bool {
    for msg in msgs {
        if admit(&msg, conns, generation) && local.send(msg).await.is_err() {
            return false;
        }
    }
    true
}

async fn forward_remote(
    link: &Link,
    msgs: Vec<ToBroker>,
    conns: &mut HashMap<ConnId, Conn>,
    generation: u64,
) -> bool {
    let mut w = BytesMut::new();
    for msg in msgs {
        if !admit(&msg, conns, generation) {
            continue;
        }
        let up = match msg {
            ToBroker::Register { conn, .. } => Up::Register(conn),
            ToBroker::Unregister { conn } => Up::Unregister(conn),
            ToBroker::Input(input) => Up::Input(input),
            ToBroker::Lead | ToBroker::StepDown => continue,
        };
        encode_up(&mut w, &up);
    }
    if w.is_empty() {
        return true;
    }
    link.up
        .send(RelayBatch {
            group_id: METADATA_GROUP,
            batch: w.freeze(),
        })
        .await
        .is_ok()
}

fn deliver(conns: &mut HashMap<ConnId, Conn>, effects: Vec<Effect>) {
    let mut by_conn: HashMap<ConnId, Vec<Effect>> = HashMap::new();
    for e in effects {
        by_conn.entry(effect_conn(&e)).or_default().push(e);
    }
    for (conn, list) in by_conn {
        if let Some(c) = conns.get(&conn) {
            let _ = c.effects.send(list);
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
        | Effect::AwaitWritable { conn } => *conn,
        Effect::Propose { .. } => 0,
    }
}
