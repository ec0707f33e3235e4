//! The task that owns the [`Broker`]: it takes inputs from every connection in arrival order,
//! runs them through the core and hands each connection the effects addressed to it.
//!
//! Inputs arrive over one bounded channel (publishers wait when the broker is busy). Effects go
//! back over unbounded per-connection channels so the broker never waits on a slow client; what
//! can pile up there is bounded by the core's delivery credit and by the client's own requests.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, warn};
use warren_core::{Broker, ConnId, Effect, Input};

use crate::clock::now_ms;

/// Messages to the broker task.
// Inputs (mostly publishes) dominate; boxing them would add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum ToBroker {
    Register {
        conn: ConnId,
        effects: mpsc::UnboundedSender<Vec<Effect>>,
    },
    Input(Input),
    Unregister {
        conn: ConnId,
    },
}

/// How many queued inputs the broker task takes per wake-up.
const BATCH: usize = 256;
/// Capacity of the input channel shared by all connections.
pub(crate) const INPUT_CAPACITY: usize = 4096;

pub(crate) async fn run(mut broker: Broker, mut rx: mpsc::Receiver<ToBroker>) {
    let mut connections: HashMap<ConnId, mpsc::UnboundedSender<Vec<Effect>>> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    let mut effects = Vec::new();
    let mut by_conn: HashMap<ConnId, Vec<Effect>> = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    debug!("all connections and the server are gone; broker task ends");
                    return;
                }
            }
            _ = ticker.tick() => batch.push(ToBroker::Input(Input::Tick)),
        }
        let now = now_ms();
        for msg in batch.drain(..) {
            match msg {
                ToBroker::Register { conn, effects } => {
                    connections.insert(conn, effects);
                }
                ToBroker::Unregister { conn } => {
                    connections.remove(&conn);
                }
                ToBroker::Input(input) => {
                    let mut pending = vec![input];
                    while let Some(input) = pending.pop() {
                        broker.handle(now, input, &mut effects);
                        for effect in effects.drain(..) {
                            match effect {
                                // Single node: a proposed command is committed as soon as proposed.
                                Effect::Propose { command } => {
                                    pending.push(Input::Applied { command })
                                }
                                other => {
                                    by_conn.entry(effect_conn(&other)).or_default().push(other)
                                }
                            }
                        }
                    }
                }
            }
        }
        for (conn, list) in by_conn.drain() {
            match connections.get(&conn) {
                Some(tx) => {
                    if tx.send(list).is_err() {
                        connections.remove(&conn);
                    }
                }
                None => warn!(conn, "effects for a connection that is gone"),
            }
        }
    }
}

fn effect_conn(e: &Effect) -> ConnId {
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
