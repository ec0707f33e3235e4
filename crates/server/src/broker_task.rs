//! The task that owns the [`Broker`]: it takes inputs from every connection in arrival order,
//! runs them through the core and hands each connection the effects addressed to it.
//!
//! Inputs arrive over one bounded channel (publishers wait when the broker is busy). Effects go
//! back over unbounded per-connection channels so the broker never waits on a slow client; what
//! can pile up there is bounded by the core's delivery credit and by the client's own requests.
//!
//! With [`Replication::Raft`], commands the core proposes are handed, in order, to Raft; the
//! committed ones come back from the Raft state machine and are applied here. Committed commands
//! are always served before new client input, and client input waits while too many proposals
//! are in flight, so a slow disk slows publishers down instead of filling memory.

use std::collections::HashMap;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::Raft;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use warren_core::{Broker, Command, ConnId, Effect, Input};
use warren_raft::lease::Lease;
use warren_raft::state_machine::{BrokerRequest, BrokerStateMachine};
use warren_raft::{LogCommand, TypeConfig};

use crate::clock::now_ms;
use crate::gate::{is_confirm, ConfirmGate};
use crate::relay::image::SharedImage;
use crate::relay::router::effect_conn;

/// Messages to the broker task.
// Inputs (mostly publishes) dominate; boxing them would add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum ToBroker {
    Register {
        conn: ConnId,
        effects: mpsc::UnboundedSender<Vec<Effect>>,
        /// The connection's session image, kept by the router (see `relay::image`); `None`
        /// where no router is involved. The broker task ignores it.
        image: Option<SharedImage>,
    },
    Input(Input),
    Unregister {
        conn: ConnId,
    },
    /// An operator's vhost/user/permission change, checked against the broker's state before it
    /// is proposed (see `access`).
    CheckSecurity {
        op: warren_core::Op,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// A relay stream that carried the connection ended: the connection is closed, unless it
    /// was registered again since (resumed through another stream) with other effects.
    Detach {
        conn: ConnId,
        effects: mpsc::UnboundedSender<Vec<Effect>>,
    },
    /// An operator's question (management API): the broker's read-only view.
    View {
        reply: tokio::sync::oneshot::Sender<warren_core::view::BrokerView>,
    },
    /// This node leads (and has applied its whole log): it may decide things on its own
    /// (expiries, queue expiry) from now on, and what it decides reaches clients while `lease`
    /// holds (see [`warren_raft::lease`]).
    Lead {
        lease: Lease,
        /// The Raft term of the leadership (see `Broker::set_leading`).
        term: u64,
    },
    /// A node's relay stream attached to this leader: its copies of the transient queues it is
    /// the home of, and where the changes to them go from now on (see
    /// `warren_core::MirrorChange`).
    HomeAttach {
        node: u64,
        copies: Vec<warren_core::MirrorQueue>,
        effects: mpsc::UnboundedSender<Vec<Effect>>,
    },
    /// That stream ended: changes for the node are dropped until it attaches again (and gets a
    /// whole copy).
    HomeDetach {
        node: u64,
        effects: mpsc::UnboundedSender<Vec<Effect>>,
    },
    /// The node acknowledged the first `count` changes sent on that stream (confirms waiting
    /// for them may leave: see `crate::gate`).
    HomeAcked {
        node: u64,
        effects: mpsc::UnboundedSender<Vec<Effect>>,
        count: u64,
    },
    /// This node's copies of the transient queues it is the home of (offered to the leader
    /// when the relay stream attaches).
    HomeCopies {
        reply: tokio::sync::oneshot::Sender<Vec<warren_core::MirrorQueue>>,
    },
    /// This node no longer leads: the broker drops every connection without a word to the
    /// clients (their nodes resume them on the new leader) and goes back to the log's view (see
    /// `Broker::reset_to_log_state`); it only applies committed commands.
    StepDown,
}

/// How the broker's shared-state commands are made durable.
pub enum Replication {
    /// Applied at once, in memory (front-end tests).
    Local,
    /// Through a Raft group: sent, in order, to `proposals` (see [`spawn_proposer`]), applied
    /// when they come back committed on `applied`. The broker task must run before the Raft
    /// node starts: a restarting node replays its log into it from `Raft::new` on.
    Raft {
        proposals: mpsc::UnboundedSender<Command>,
        applied: mpsc::Receiver<BrokerRequest>,
    },
}

/// The running broker task; connections talk to it through [`BrokerHandle::sender`].
pub struct BrokerHandle {
    pub(crate) tx: mpsc::Sender<ToBroker>,
    task: tokio::task::JoinHandle<()>,
}

impl BrokerHandle {
    /// Starts the broker task.
    pub fn spawn(broker: Broker, replication: Replication) -> BrokerHandle {
        let (tx, rx) = mpsc::channel(INPUT_CAPACITY);
        let task = tokio::spawn(run(broker, rx, replication));
        BrokerHandle { tx, task }
    }

    /// Waits (bounded) for the task to finish once every sender is gone.
    pub(crate) async fn stop(self) {
        drop(self.tx);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// How many queued inputs the broker task takes per wake-up.
const BATCH: usize = 256;
/// Capacity of the input channel shared by all connections.
pub(crate) const INPUT_CAPACITY: usize = 4096;
/// Proposals in flight above which client input waits for commits.
const MAX_IN_FLIGHT: usize = 8192;
/// How often held effects look at the lease again (a heartbeat is every 100 ms).
const LEASE_RECHECK: Duration = Duration::from_millis(10);

struct Task {
    broker: Broker,
    connections: HashMap<ConnId, mpsc::UnboundedSender<Vec<Effect>>>,
    by_conn: HashMap<ConnId, Vec<Effect>>,
    /// Where the changes to each home node's copies go (its relay stream), and those waiting.
    homes: HashMap<u64, mpsc::UnboundedSender<Vec<Effect>>>,
    by_home: HashMap<u64, Vec<Effect>>,
    /// Confirms waiting for home copies to be acknowledged.
    gate: ConfirmGate,
    /// When confirms last left without their homes' acknowledgement (logged at most every 10 s).
    gate_warned: Option<std::time::Instant>,
    effects: Vec<Effect>,
    proposals: Option<mpsc::UnboundedSender<Command>>,
    in_flight: usize,
    /// Only a leader acts on ticks (they may propose commands).
    leading: bool,
    /// The leader's lease; `None` where no Raft group is involved (front-end tests).
    lease: Option<Lease>,
    /// Effects in `by_conn` wait for the lease: this node still believes it leads, but no
    /// quorum has acknowledged it lately, so another leader may exist (see `flush`).
    held_since: Option<std::time::Instant>,
}

impl Task {
    fn handle(&mut self, now: u64, input: Input) {
        let mut pending = vec![input];
        while let Some(input) = pending.pop() {
            self.broker.handle(now, input, &mut self.effects);
            // The home copies this input changed: its confirms wait for them.
            let mut needs = Vec::new();
            for effect in self.effects.drain(..) {
                match effect {
                    Effect::Propose { command } => match &self.proposals {
                        Some(p) => {
                            self.in_flight += 1;
                            if p.send(command).is_err() {
                                error!("the Raft proposer has stopped; a command is lost");
                            }
                        }
                        // Local: committed as soon as proposed.
                        None => pending.push(Input::Applied { command }),
                    },
                    Effect::Mirror { home, .. } => {
                        needs.extend(self.gate.queued(home));
                        self.by_home.entry(home).or_default().push(effect)
                    }
                    other => {
                        let conn = effect_conn(&other);
                        if is_confirm(&other) && (!needs.is_empty() || self.gate.has_waiting(conn))
                        {
                            let at = std::time::Instant::now();
                            self.gate.hold(conn, needs.clone(), other, at);
                        } else {
                            self.by_conn.entry(conn).or_default().push(other);
                        }
                    }
                }
            }
        }
    }

    fn message(&mut self, now: u64, msg: ToBroker) {
        match msg {
            ToBroker::Register { conn, effects, .. } => {
                self.connections.insert(conn, effects);
            }
            ToBroker::Unregister { conn } => {
                self.connections.remove(&conn);
            }
            ToBroker::CheckSecurity { op, reply } => {
                let _ = reply.send(self.broker.check_security_change(&op));
            }
            ToBroker::Detach { conn, effects } => {
                if self
                    .connections
                    .get(&conn)
                    .is_some_and(|e| e.same_channel(&effects))
                {
                    self.handle(now, Input::ConnectionClosed { conn });
                    self.connections.remove(&conn);
                }
            }
            ToBroker::View { reply } => {
                let _ = reply.send(self.broker.view());
            }
            ToBroker::Input(Input::Tick) if !self.leading => {}
            ToBroker::Input(input) => self.handle(now, input),
            ToBroker::Lead { lease, term } => {
                self.leading = true;
                self.broker.set_leading(true, term);
                self.lease = Some(lease);
            }
            ToBroker::HomeAttach {
                node,
                copies,
                effects,
            } => {
                self.homes.insert(node, effects);
                self.gate.attach(node);
                self.handle(now, Input::HomeAttached { node, copies });
            }
            ToBroker::HomeDetach { node, effects } => {
                if self
                    .homes
                    .get(&node)
                    .is_some_and(|e| e.same_channel(&effects))
                {
                    self.homes.remove(&node);
                    self.gate.detach(node);
                }
            }
            ToBroker::HomeAcked {
                node,
                effects,
                count,
            } => {
                if self
                    .homes
                    .get(&node)
                    .is_some_and(|e| e.same_channel(&effects))
                {
                    self.gate.acked(node, count);
                }
            }
            ToBroker::HomeCopies { reply } => {
                let _ = reply.send(self.broker.home_copies());
            }
            ToBroker::StepDown => {
                self.leading = false;
                self.lease = None;
                // What waited for a lease that never came back is dropped: the connections are
                // resumed on the new leader, which answers what got no reply and redelivers.
                if !self.by_conn.is_empty() {
                    warn!(
                        connections = self.by_conn.len(),
                        "stepping down: effects not sent are dropped; the connections resume on the new leader"
                    );
                }
                self.by_conn.clear();
                self.by_home.clear();
                self.homes.clear();
                self.gate.clear();
                self.held_since = None;
                // The messages of local queues (not in the log) go with the reset, but for
                // those of queues this node is the home of, which it keeps as its copies.
                self.broker.set_leading(false, 0);
                self.broker.reset_to_log_state(
                    "this node stopped leading the cluster; reconnect",
                    &mut self.effects,
                );
                // Only connection closes: the connections are resumed elsewhere instead.
                self.effects.clear();
            }
        }
    }

    /// Files the effects of a reset or restore (no proposals among them) by connection.
    fn collect_effects(&mut self) {
        for effect in self.effects.drain(..) {
            self.by_conn
                .entry(effect_conn(&effect))
                .or_default()
                .push(effect);
        }
    }

    fn state_machine_request(&mut self, request: BrokerRequest) {
        match request {
            BrokerRequest::Apply(batch) => {
                let now = now_ms();
                for command in batch.commands {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    self.handle(now, Input::Applied { command });
                }
                self.flush();
                let _ = batch.done.send(());
            }
            BrokerRequest::TakeSnapshot { reply } => {
                let _ = reply.send(self.broker.snapshot());
            }
            BrokerRequest::Restore { snapshot, reply } => {
                let result = self.broker.restore(snapshot, &mut self.effects);
                self.collect_effects();
                self.flush();
                let _ = reply.send(result);
            }
        }
    }

    /// Hands each connection its effects, unless this node leads without its lease: then they
    /// wait (see [`warren_raft::lease`]) until a quorum acknowledges this leader again (a slow
    /// link, a stalled disk) or it steps down (it was paused or cut off and another leader was
    /// elected; `StepDown` drops them).
    fn flush(&mut self) {
        if self.by_conn.is_empty() && self.by_home.is_empty() && self.gate.is_empty() {
            return;
        }
        // Only a Raft leader has a lease (`Lead` gives it, `StepDown` takes it back).
        if self.lease.as_ref().is_some_and(|l| !l.holds()) {
            if self.held_since.is_none() {
                warn!("this leader's lease expired (no quorum acknowledged it lately): holding deliveries and replies until it is renewed or another leader takes over");
                self.held_since = Some(std::time::Instant::now());
            }
            return;
        }
        if let Some(since) = self.held_since.take() {
            info!(
                held_ms = since.elapsed().as_millis() as u64,
                "lease renewed: sending what was held"
            );
        }
        // The homes first: a confirm of a transient message leaves after its copy does. A home
        // without a stream gets a whole copy when its stream attaches again; effects for a
        // connection that is gone are replies to commands replayed after a restart.
        hand_over(&mut self.by_home, &mut self.homes, "home node");
        hand_over(&mut self.by_conn, &mut self.connections, "connection");
        if self.gate.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let (released, late) = self.gate.release(now);
        if late > 0
            && self
                .gate_warned
                .is_none_or(|t| now.duration_since(t).as_secs() >= 10)
        {
            warn!(
                confirms = late,
                "a home node did not acknowledge its copy of transient messages in time; confirming them anyway (they are in this leader's broker)"
            );
            self.gate_warned = Some(now);
        }
        for (conn, list) in released {
            if let Some(tx) = self.connections.get(&conn) {
                if tx.send(list).is_err() {
                    self.connections.remove(&conn);
                }
            }
        }
    }
}

/// Sends each waiting list of effects to its sink, forgetting sinks whose receiver is gone.
fn hand_over(
    waiting: &mut HashMap<u64, Vec<Effect>>,
    sinks: &mut HashMap<u64, mpsc::UnboundedSender<Vec<Effect>>>,
    what: &'static str,
) {
    for (to, list) in waiting.drain() {
        match sinks.get(&to) {
            Some(tx) => {
                if tx.send(list).is_err() {
                    sinks.remove(&to);
                }
            }
            None => debug!(to, what, "effects for a destination that is gone"),
        }
    }
}

async fn run(broker: Broker, mut rx: mpsc::Receiver<ToBroker>, replication: Replication) {
    let (proposals, mut applied) = match replication {
        Replication::Local => (None, None),
        Replication::Raft { proposals, applied } => (Some(proposals), Some(applied)),
    };
    let mut task = Task {
        broker,
        connections: HashMap::new(),
        by_conn: HashMap::new(),
        homes: HashMap::new(),
        by_home: HashMap::new(),
        gate: ConfirmGate::default(),
        gate_warned: None,
        effects: Vec::new(),
        leading: proposals.is_none(),
        proposals,
        in_flight: 0,
        lease: None,
        held_since: None,
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accept_input = task.in_flight < MAX_IN_FLIGHT;
        tokio::select! {
            biased;
            Some(request) = async { match applied.as_mut() { Some(a) => a.recv().await, None => None } }, if applied.is_some() => {
                task.state_machine_request(request);
                continue;
            }
            n = rx.recv_many(&mut batch, BATCH), if accept_input => {
                if n == 0 {
                    debug!("all connections and the server are gone; broker task ends");
                    return;
                }
            }
            _ = ticker.tick() => batch.push(ToBroker::Input(Input::Tick)),
            // Effects held for the lease: look again soon.
            // ... and confirms waiting for home copies (their time-out).
            _ = tokio::time::sleep(LEASE_RECHECK), if task.held_since.is_some() || !task.gate.is_empty() => {}
        }
        let now = now_ms();
        for msg in batch.drain(..) {
            task.message(now, msg);
        }
        task.flush();
    }
}

/// Starts the task that hands the broker's proposals to Raft in order, without waiting for each
/// to commit (so many are in flight and the log batches them).
///
/// openraft refuses a write, without appending it, when this node no longer leads, and also
/// when it still leads but its lease has expired (no quorum acknowledged it within the election
/// timeout: a slow link, a paused follower, a stalled disk). A refused command must not vanish:
/// the broker waits for its outcome (a confirm, a declare-ok). So each proposal's outcome is
/// watched, in log order, and a command refused before it was appended (`ForwardToLeader`)
/// while this node still leads is proposed again (after 50 ms, until accepted). One refused
/// once another node leads, or appended and then discarded at a leader change (it may still
/// commit), is not: this node steps down and its clients resume on the new leader, re-sending
/// what got no reply. A
/// re-proposed command may land after commands proposed later; that is safe because confirms
/// are never `multiple`, a channel has at most one non-publish command in flight, and the
/// state machine recognises re-sent publishes by their exact confirm number (version 3).
pub fn spawn_proposer(
    raft: Raft<TypeConfig, BrokerStateMachine>,
    mut proposals: mpsc::UnboundedReceiver<Command>,
) {
    type Outcome = tokio::sync::oneshot::Receiver<openraft::raft::ClientWriteResult<TypeConfig>>;
    let (pending_tx, mut pending) = mpsc::unbounded_channel::<(Command, Outcome)>();
    let (retry_tx, mut retries) = mpsc::unbounded_channel::<Command>();
    let watcher_raft = raft.clone();
    tokio::spawn(async move {
        let mut refused_logged = false;
        while let Some((command, outcome)) = pending.recv().await {
            let refused = match outcome.await {
                Ok(Ok(_)) => {
                    refused_logged = false;
                    continue;
                }
                // Refused before it was appended: proposing it again cannot duplicate it.
                Ok(Err(openraft::error::ClientWriteError::ForwardToLeader(f))) => f.to_string(),
                // Appended, then discarded at a leader change (it may still commit elsewhere),
                // or anything else: not proposed again; the connections resume on the new
                // leader and re-send what got no reply.
                Ok(Err(e)) => {
                    debug!(error = %e, "a proposal's fate is unknown after a leader change");
                    continue;
                }
                Err(_) => continue,
            };
            let leads = {
                let metrics = watcher_raft.metrics();
                let m = metrics.borrow_watched();
                m.current_leader == Some(m.id)
            };
            if !leads {
                debug!(reason = %refused, "a proposal refused after this node stopped leading is dropped");
                continue;
            }
            if !refused_logged {
                warn!(reason = %refused, "Raft refused proposals of this leader (lease expired?); proposing them again");
                refused_logged = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if retry_tx.send(command).is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let command = tokio::select! {
                biased;
                Some(c) = retries.recv() => c,
                c = proposals.recv() => match c {
                    Some(c) => c,
                    None => return,
                },
            };
            // Only the outcome (once applied, or refused) is needed. `complete_only`: a commit
            // notification nobody receives makes openraft log a warning per proposal.
            let (responder, outcome) = openraft::impls::ProgressResponder::complete_only();
            if let Err(e) = raft
                .client_write_ff(LogCommand(command.clone()), Some(responder))
                .await
            {
                warn!(error = %e, "Raft stopped; proposals are no longer accepted");
                return;
            }
            if pending_tx.send((command, outcome)).is_err() {
                return;
            }
        }
    });
}
