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
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, trace, warn};
use warren_core::{Broker, Command, ConnId, Effect, Input, Message};
use warren_raft::lease::Lease;
use warren_raft::state_machine::BrokerRequest;

use crate::clock::now_ms;
use crate::counters::ClientCounters;
use crate::flow::FlowGate;
use crate::gate::{is_confirm, ConfirmGate, Need};
use crate::proposer::Proposal;
use crate::relay::codec::{Down, Up};
use crate::relay::links::Links;
use crate::settles::Settles;

/// Effects for one connection, in order.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) effects: Vec<Effect>,
}

/// Where a connection's effects go.
pub(crate) type EffectSink = mpsc::UnboundedSender<Batch>;

/// Messages to the broker task.
// Inputs (mostly publishes) dominate; boxing them would add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum ToBroker {
    Register {
        conn: ConnId,
        effects: EffectSink,
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
    /// An operator's question (management API): the broker's read-only view.
    View {
        reply: tokio::sync::oneshot::Sender<warren_core::view::BrokerView>,
    },
    /// The node that leads the Raft group changed, as this node sees it (`None`: no leader
    /// known; this node itself once it serves, after [`ToBroker::Lead`]).
    Leader(Option<u64>),
    /// This node leads (and has applied its whole log): it may decide things on its own
    /// (expiries, queue expiry) from now on, and what it decides reaches clients while `lease`
    /// holds (see [`warren_raft::lease`]).
    Lead {
        lease: Lease,
    },
    /// This node no longer leads: the broker gives up what it decided for the replicated
    /// queues (see `Broker::step_down`); its client connections and local queues stay.
    StepDown,
    /// Node `from` forwarded a message to a local queue homed here (`Up::Forward`): handled as
    /// `Input::Forwarded`; that it was handled (and whether refused) goes back on `acks`.
    ForwardIn {
        from: u64,
        seq: u64,
        queue: u64,
        message: Message,
        acks: mpsc::UnboundedSender<Vec<Down>>,
    },
    /// Home node `home` handled this node's forwards up to `upto`.
    LinkAcked {
        home: u64,
        upto: u64,
    },
    /// Home node `home` refused forward `seq`.
    LinkRefused {
        home: u64,
        seq: u64,
    },
    /// The link to `home` broke: forwards up to `upto` it did not acknowledge are lost.
    LinkLost {
        home: u64,
        upto: u64,
    },
    /// A stream between this node and `node` ended (this node's link, or `node`'s stream
    /// here): what the two brokers shared through queue commands is dropped
    /// (`Input::PeerLost`), and queue messages for `node` not sent yet are not sent
    /// (`Links::peer_lost`). `done` hears when that is done.
    PeerLost {
        node: u64,
        done: Option<tokio::sync::oneshot::Sender<()>>,
    },
}

/// How the broker's shared-state commands are made durable.
pub enum Replication {
    /// Applied at once, in memory (front-end tests).
    Local,
    /// Through a Raft group: sent, in order, to `proposals` (see [`spawn_proposer`]), applied
    /// when they come back committed on `applied`. The broker task must run before the Raft
    /// node starts: a restarting node replays its log into it from `Raft::new` on.
    Raft {
        proposals: mpsc::UnboundedSender<Proposal>,
        applied: mpsc::Receiver<BrokerRequest>,
    },
}

/// The running broker task; connections talk to it through [`BrokerHandle::sender`].
pub struct BrokerHandle {
    pub(crate) tx: mpsc::Sender<ToBroker>,
    pub(crate) applied: watch::Receiver<u64>,
    pub(crate) links: Links,
    /// Where commands to propose go (the relay hands it other nodes' publishes): `None`
    /// without Raft.
    pub(crate) proposals: Option<mpsc::UnboundedSender<Proposal>>,
    /// What the node's clients did: counted by their sessions and, for what only the core
    /// sees, by the broker task (see [`crate::counters`]).
    pub(crate) counters: Arc<ClientCounters>,
    task: tokio::task::JoinHandle<()>,
}

impl BrokerHandle {
    /// The counters of what this node's clients do (see [`crate::counters`]).
    pub fn client_counters(&self) -> Arc<ClientCounters> {
        self.counters.clone()
    }

    /// Starts the broker task. `links` reaches the other nodes' brokers (for the messages
    /// routed to local queues homed there).
    pub fn spawn(broker: Broker, replication: Replication, links: Links) -> BrokerHandle {
        let (tx, rx) = mpsc::channel(INPUT_CAPACITY);
        links.attach_broker(tx.clone());
        let (applied_tx, applied) = watch::channel(0);
        let proposals = match &replication {
            Replication::Raft { proposals, .. } => Some(proposals.clone()),
            Replication::Local => None,
        };
        let counters = Arc::<ClientCounters>::default();
        let task = tokio::spawn(run(
            broker,
            rx,
            replication,
            applied_tx,
            links.clone(),
            counters.clone(),
        ));
        BrokerHandle {
            tx,
            applied,
            links,
            proposals,
            counters,
            task,
        }
    }

    /// Waits (bounded) for the task to finish once every sender is gone.
    pub(crate) async fn stop(self) {
        drop(self.tx);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }

    /// The log index this node's broker has applied, as it moves.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }
}

/// Every this many ticks (seconds) the node's client counts go to its peers again, changed
/// or not (see `warren_core::ClientCounts`).
const COUNTS_REFRESH_TICKS: u64 = 5;

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
    connections: HashMap<ConnId, EffectSink>,
    by_conn: HashMap<ConnId, Vec<Effect>>,
    /// Queue events for other nodes' channels, in order: they leave with the connections'
    /// effects, while this leader holds its lease (a delivery is a decision too).
    to_channels: Vec<(u64, warren_core::QueueEvent)>,
    /// Reaches the other nodes' brokers; forwards are numbered per home by the gate.
    links: Links,
    /// Confirms waiting for forwarded messages to be taken by their homes.
    gate: ConfirmGate,
    /// Credit flow of the publishing connections (see `crate::flow`).
    flow: FlowGate,
    /// The node's client counters: the core's part is added after each batch.
    counters: Arc<ClientCounters>,
    /// When confirms were last nacked for a home's sake (logged at most every 10 s).
    gate_warned: Option<std::time::Instant>,
    effects: Vec<Effect>,
    proposals: Option<mpsc::UnboundedSender<Proposal>>,
    /// Settle proposals held to share a log entry (see `crate::settles`).
    settles: Settles,
    in_flight: usize,
    /// This node's id: its logged publishes are tracked until applied (see `crate::proposer`).
    node: u64,
    /// Logged publishes that were also forwarded to other nodes' local queues: their confirm,
    /// made when they are applied, waits for those forwards (see `crate::gate`).
    awaiting: HashMap<(ConnId, warren_core::ChannelId, u64), Vec<Need>>,
    /// The log index applied so far, published for the connections that wait for it.
    applied_index: u64,
    applied_tx: watch::Sender<u64>,
    /// The leader's lease; `None` where no Raft group is involved (front-end tests) and on
    /// a node that does not lead.
    lease: Option<Lease>,
    /// Nodes a queue command or event could not be sent to (see `send_to_peer`).
    unreachable: Vec<u64>,
    /// Effects in `by_conn` wait for the lease: this node still believes it leads, but no
    /// quorum has acknowledged it lately, so another leader may exist (see `flush`).
    held_since: Option<std::time::Instant>,
}

impl Task {
    fn handle(&mut self, now: u64, input: Input) {
        let mut pending = vec![input];
        while let Some(input) = pending.pop() {
            // Forwards made by a client's publish count against its credit.
            let publisher = match &input {
                Input::Publish { conn, .. } => Some(*conn),
                _ => None,
            };
            // The forwards this input made: its confirms wait for them. A logged publish's
            // confirm leaves when it is applied: it waits for the forwards its publish made.
            let mut needs: Vec<Need> = match &input {
                Input::Applied { command, .. } if !self.awaiting.is_empty() => command
                    .logged_publish()
                    .and_then(|key| self.awaiting.remove(&key))
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            self.broker.handle(now, input, &mut self.effects);
            for effect in std::mem::take(&mut self.effects) {
                match effect {
                    Effect::Propose { command } => {
                        if !needs.is_empty() {
                            if let Some(key) = command.logged_publish() {
                                self.awaiting.insert(key, std::mem::take(&mut needs));
                            }
                        }
                        // Local: committed as soon as proposed (no log entry: messages stay
                        // in memory).
                        if let Some(command) = self.propose(command) {
                            pending.push(Input::Applied { command, index: 0 });
                        }
                    }
                    Effect::Forward {
                        home,
                        queue,
                        message,
                    } => {
                        let (seq, need) = self.gate.queued(home);
                        needs.push(need);
                        if let Some(flow) =
                            publisher.and_then(|c| self.flow.forwarded(c, home, seq))
                        {
                            self.by_conn
                                .entry(effect_conn(&flow))
                                .or_default()
                                .push(flow);
                        }
                        if !self.links.forward(home, seq, queue, &message) {
                            self.lost(home, seq);
                        }
                    }
                    Effect::ForwardRefused { .. } => {
                        debug!("a refusal outside a forwarded message's handling");
                    }
                    Effect::Flow { conn, paused } => self.core_flow(conn, paused),
                    Effect::ToOwner { node, command } => {
                        self.send_to_peer(node, Up::QueueCommand(command))
                    }
                    Effect::ToChannel { node, event } => self.to_channels.push((node, event)),
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
            ToBroker::Register { conn, effects } => {
                self.connections.insert(conn, effects);
            }
            ToBroker::Unregister { conn } => {
                self.connections.remove(&conn);
                self.flow.forget(conn);
                self.awaiting.retain(|key, _| key.0 != conn);
            }
            ToBroker::CheckSecurity { op, reply } => {
                let _ = reply.send(self.broker.check_security_change(&op));
            }
            ToBroker::View { reply } => {
                let mut view = self.broker.view();
                // Paused for forwards too, not only for the log (the core's part).
                for conn in self.flow.paused() {
                    if !view.in_flow.contains(&conn) {
                        view.in_flow.push(conn);
                    }
                }
                let _ = reply.send(view);
            }
            ToBroker::Input(input) => self.handle(now, input),
            ToBroker::Lead { lease } => {
                self.lease = Some(lease);
                // This node's consumers of replicated queues attach here, and what other
                // nodes' channels sent while this broker waited to lead is handled.
                self.broker.lead(&mut self.effects);
                self.file_effects();
            }
            ToBroker::Leader(node) => self.handle(now, Input::Leader { node }),
            ToBroker::ForwardIn {
                from,
                seq,
                queue,
                message,
                acks,
            } => {
                let mut out = Vec::new();
                self.broker.handle(
                    now,
                    Input::Forwarded {
                        from,
                        seq,
                        queue,
                        message,
                    },
                    &mut out,
                );
                let mut downs = Vec::new();
                for e in out {
                    match e {
                        Effect::ForwardRefused { to, seq } => downs.push(Down::Refused { to, seq }),
                        other => self.effects.push(other),
                    }
                }
                downs.push(Down::Forwarded { upto: seq });
                let _ = acks.send(downs);
                // What the enqueue caused: deliveries to consumers here, proposals.
                self.file_effects();
            }
            ToBroker::LinkAcked { home, upto } => {
                self.gate.acked(home, upto);
                self.settled(home, upto);
            }
            ToBroker::LinkRefused { home, seq } => self.gate.refused(home, seq),
            ToBroker::LinkLost { home, upto } => self.lost(home, upto),
            ToBroker::PeerLost { node, done } => {
                self.peer_lost(now, node);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            ToBroker::StepDown => {
                self.lease = None;
                // What waited for a lease that never came back is dropped: the deliveries a
                // deposed leader decided are the next leader's to make again.
                if !self.by_conn.is_empty() {
                    warn!(
                        connections = self.by_conn.len(),
                        "stepping down: effects not sent are dropped"
                    );
                }
                self.by_conn.clear();
                // What the replicated queues' owner told other nodes' channels and did not
                // send goes too (their channels attach to the next leader); a transient
                // queue's events still go (this node still owns it).
                let broker = &self.broker;
                self.to_channels
                    .retain(|(_, e)| !broker.follows_leader(e.queue()));
                self.held_since = None;
                self.broker.step_down();
            }
        }
    }

    /// Files effects made outside `handle` (no proposals or forwards expected, but handled).
    fn file_effects(&mut self) {
        for effect in std::mem::take(&mut self.effects) {
            match effect {
                Effect::Propose { command } => {
                    // Without Raft (front-end tests) nothing proposes outside `handle`.
                    let _ = self.propose(command);
                }
                Effect::Forward {
                    home,
                    queue,
                    message,
                } => {
                    let (seq, _) = self.gate.queued(home);
                    if !self.links.forward(home, seq, queue, &message) {
                        self.lost(home, seq);
                    }
                }
                Effect::ForwardRefused { .. } => {}
                Effect::Flow { conn, paused } => self.core_flow(conn, paused),
                Effect::ToOwner { node, command } => {
                    self.send_to_peer(node, Up::QueueCommand(command))
                }
                Effect::ToChannel { node, event } => self.to_channels.push((node, event)),
                other => self
                    .by_conn
                    .entry(effect_conn(&other))
                    .or_default()
                    .push(other),
            }
        }
    }

    /// A queue command or event for node `node`'s broker, on this node's link there. With no
    /// way there, what the two brokers share is dropped once this batch is done.
    fn send_to_peer(&mut self, node: u64, up: Up) {
        if !self.links.queue(node, up) && !self.unreachable.contains(&node) {
            self.unreachable.push(node);
        }
    }

    /// What this broker shares with `node` through queue commands is gone (`Input::PeerLost`):
    /// the link's epoch first, so that what was made before is not sent.
    fn peer_lost(&mut self, now: u64, node: u64) {
        debug!(
            node,
            "dropping what this broker shares with the node's broker"
        );
        self.links.peer_lost(node);
        self.to_channels.retain(|(n, _)| *n != node);
        self.handle(now, Input::PeerLost { node });
    }

    /// Nodes that queue commands or events could not reach in the last batch: dropped as lost.
    fn unreachable_peers(&mut self, now: u64) {
        for node in std::mem::take(&mut self.unreachable) {
            self.peer_lost(now, node);
        }
    }

    /// The core paused or resumed `conn` for the log: what the connection hears is that combined
    /// with its forwards (see `crate::flow`).
    fn core_flow(&mut self, conn: ConnId, paused: bool) {
        if let Some(flow) = self.flow.core_flow(conn, paused) {
            self.by_conn.entry(conn).or_default().push(flow);
        }
    }

    /// `home` took every forward up to `upto`: connections they held back may be read again.
    fn settled(&mut self, home: u64, upto: u64) {
        let mut resumed = Vec::new();
        self.flow.settled(home, upto, &mut resumed);
        for e in resumed {
            self.by_conn.entry(effect_conn(&e)).or_default().push(e);
        }
    }

    /// The link to `home` broke: the forwards up to `upto` it had not acknowledged are lost.
    fn lost(&mut self, home: u64, upto: u64) {
        self.gate.lost(home, upto);
        self.settled(home, upto);
    }

    /// Hands a command to the proposer; without Raft, gives it back (to be applied at once).
    /// A settle may wait a few milliseconds to share its entry with others; any other command
    /// first sends the settles held (see `crate::settles`).
    fn propose(&mut self, command: Command) -> Option<Command> {
        if self.proposals.is_none() {
            return Some(command);
        }
        let now = std::time::Instant::now();
        match self.settles.hold(command, now) {
            None if self.settles.ready(now) => self.send_settles(),
            None => {}
            Some(command) => {
                self.send_settles();
                self.send_proposal(command);
            }
        }
        None
    }

    /// Proposes the settles held, if any.
    fn send_settles(&mut self) {
        for command in self.settles.take() {
            self.send_proposal(command);
        }
    }

    fn send_proposal(&mut self, command: Command) {
        let Some(p) = &self.proposals else {
            return;
        };
        self.in_flight += 1;
        trace!(target: "warren_latency", "proposal sent to the proposer");
        if p.send(Proposal::Own(command)).is_err() {
            error!("the Raft proposer has stopped; a command is lost");
        }
    }

    /// A logged publish or topology command of this node's broker is in the log: the
    /// proposer need not send it again.
    fn note_applied(&self, command: &Command) {
        if let (Some(p), Some((conn, channel, number))) = (&self.proposals, command.logged_number())
        {
            if warren_core::node_of(conn) == self.node {
                let _ = p.send(Proposal::Applied {
                    conn,
                    channel,
                    number,
                });
            }
        }
    }

    fn state_machine_request(&mut self, request: BrokerRequest) {
        match request {
            BrokerRequest::Apply(batch) => {
                trace!(target: "warren_latency", index = batch.index, "broker applies");
                let now = now_ms();
                for (index, command) in batch.commands {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    self.note_applied(&command);
                    self.handle(now, Input::Applied { command, index });
                }
                self.applied_index = self.applied_index.max(batch.index);
                self.publish_applied();
                self.flush();
                trace!(target: "warren_latency", index = batch.index, "broker applied and flushed");
                let _ = batch.done.send(());
            }
            BrokerRequest::TakeSnapshot { reply } => {
                let _ = reply.send(self.broker.snapshot());
            }
            BrokerRequest::Backlog { reply } => {
                let _ = reply.send(self.broker.replicated_backlog());
            }
            BrokerRequest::Restore {
                snapshot,
                index,
                reply,
            } => {
                let result = self.broker.restore(*snapshot, &mut self.effects);
                self.file_effects();
                if result.is_ok() {
                    self.applied_index = index;
                    self.publish_applied();
                }
                self.flush();
                let _ = reply.send(result);
            }
        }
    }

    /// Tells the connections how far this node's replica has applied the log.
    fn publish_applied(&mut self) {
        self.applied_tx.send_replace(self.applied_index);
    }

    /// Hands each connection its effects, unless this node leads without its lease: then they
    /// wait (see [`warren_raft::lease`]) until a quorum acknowledges this leader again (a slow
    /// link, a stalled disk) or it steps down (it was paused or cut off and another leader was
    /// elected; `StepDown` drops them).
    fn flush(&mut self) {
        // What the queues this broker owns tell other nodes' channels (deliveries above all)
        // waits for the lease too.
        if !self.to_channels.is_empty() && self.lease.as_ref().is_none_or(|l| l.holds()) {
            for (node, event) in std::mem::take(&mut self.to_channels) {
                self.send_to_peer(node, Up::QueueEvent(event));
            }
        }
        if !self.unreachable.is_empty() {
            self.unreachable_peers(now_ms());
        }
        let churn = self.broker.take_churn();
        if !churn.is_empty() {
            self.counters.add_churn(churn);
        }
        if let Some(counts) = self.broker.take_changed_counts() {
            self.links.share_counts(counts);
        }
        if self.by_conn.is_empty() && self.gate.is_empty() && self.to_channels.is_empty() {
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
        for (conn, effects) in self.by_conn.drain() {
            match self.connections.get(&conn) {
                Some(tx) => {
                    if tx.send(Batch { effects }).is_err() {
                        self.connections.remove(&conn);
                    }
                }
                // Replies to commands replayed after a restart, or for a connection gone.
                None => debug!(conn, "effects for a connection that is gone"),
            }
        }
        if self.gate.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let (released, failed) = self.gate.release(now);
        if failed > 0
            && self
                .gate_warned
                .is_none_or(|t| now.duration_since(t).as_secs() >= 10)
        {
            warn!(
                confirms = failed,
                "a home node refused, lost or did not take forwarded messages in time: their publishes are nacked"
            );
            self.gate_warned = Some(now);
        }
        for (conn, effects) in released {
            if let Some(tx) = self.connections.get(&conn) {
                if tx.send(Batch { effects }).is_err() {
                    self.connections.remove(&conn);
                }
            }
        }
    }
}

async fn run(
    broker: Broker,
    mut rx: mpsc::Receiver<ToBroker>,
    replication: Replication,
    applied_tx: watch::Sender<u64>,
    links: Links,
    counters: Arc<ClientCounters>,
) {
    let (proposals, mut applied) = match replication {
        Replication::Local => (None, None),
        Replication::Raft { proposals, applied } => (Some(proposals), Some(applied)),
    };
    let node = broker.node();
    let flow = FlowGate::new(broker.publish_credit());
    let mut task = Task {
        broker,
        node,
        awaiting: HashMap::new(),
        connections: HashMap::new(),
        by_conn: HashMap::new(),
        to_channels: Vec::new(),
        links,
        gate: ConfirmGate::default(),
        flow,
        counters,
        gate_warned: None,
        effects: Vec::new(),
        proposals,
        settles: Settles::default(),
        in_flight: 0,
        applied_index: 0,
        applied_tx,
        lease: None,
        held_since: None,
        unreachable: Vec::new(),
    };
    task.publish_applied();
    let mut batch = Vec::with_capacity(BATCH);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
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
            _ = ticker.tick() => {
                batch.push(ToBroker::Input(Input::Tick));
                ticks += 1;
                if ticks.is_multiple_of(COUNTS_REFRESH_TICKS) {
                    // The peers' view of this node's counts, refreshed (a member added since,
                    // a stream that broke and was not needed again).
                    task.links.share_counts(task.broker.client_counts());
                }
            }
            // Effects held for the lease: look again soon.
            // ... and confirms waiting for forwarded messages (their time-out).
            _ = tokio::time::sleep(LEASE_RECHECK), if task.held_since.is_some() || !task.gate.is_empty() => {}
            // Settles held to share a log entry are due.
            _ = sleep_until_due(task.settles.due()), if task.settles.due().is_some() => {
                task.send_settles();
            }
        }
        let now = now_ms();
        trace!(target: "warren_latency", messages = batch.len(), "broker input");
        for msg in batch.drain(..) {
            task.message(now, msg);
        }
        // Without Raft, nothing else publishes the applied index.
        if applied.is_none() {
            task.publish_applied();
        }
        task.flush();
    }
}

/// Sleeps until `due` (at once without one).
async fn sleep_until_due(due: Option<std::time::Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due.into()).await;
    }
}

/// The client connection an effect is for (0 for what is not a connection's).
pub(crate) fn effect_conn(e: &Effect) -> ConnId {
    match e {
        Effect::Send { conn, .. }
        | Effect::SendContent { conn, .. }
        | Effect::Authenticated { conn, .. }
        | Effect::CloseChannel { conn, .. }
        | Effect::CloseConnection { conn, .. }
        | Effect::AwaitWritable { conn }
        | Effect::Flow { conn, .. }
        | Effect::Synced { conn, .. } => *conn,
        Effect::Propose { .. }
        | Effect::Forward { .. }
        | Effect::ForwardRefused { .. }
        | Effect::ToOwner { .. }
        | Effect::ToChannel { .. } => 0,
    }
}
