//! Getting this node's broker's commands into the log, whichever node leads.
//!
//! The broker on the node that holds a client's socket routes the client's publishes and
//! proposes their replicated part itself (`Op::Publish`, origin: the client's session there);
//! it confirms the publish when it applies that entry. So a proposal must reach the log from
//! any node, in order, and a confirmed publish must never be one that no log holds:
//!
//! * This node leads: the command goes to its own Raft (`client_write_ff`, many in flight, the
//!   log batches them). openraft refuses, without appending, a write to a leader whose lease
//!   expired (no quorum acknowledged it lately); such a command is proposed again 50 ms later,
//!   as long as the node leads.
//! * Another node leads: a logged publish travels on this node's home stream to the leader
//!   (`Up::Propose`, one ordered stream per node pair), whose proposer writes it to its Raft as
//!   above; so do its channels' settlements (acks, rejects and counted requeues of replicated
//!   queues), which are not sent again if lost. Other commands (the removal of a transient
//!   queue homed here, a dead-lettered copy) are handed over one by one (`Relay.Propose`,
//!   [`forward_to_leader`]).
//! * A logged publish is kept until this node applies it. When the leader changes, every
//!   publish not applied yet is sent again, in order, to the new leader; one not applied five
//!   seconds after it was last sent (its stream broke, the leader refused it) is sent again
//!   too. The state machine recognises a publish it already holds by its origin and number
//!   (`Connection::log_numbers` in the core: a channel's logged publishes are numbered without
//!   gaps, across its lives) and confirms it without enqueueing it twice. A channel's topology
//!   commands (declares, deletes, purges, bindings: `Command::number`) take numbers from the
//!   same sequence and travel the same way; a copy whose first was applied is skipped.
//!
//! A leader that is sent another node's publish when it no longer leads drops it: that node
//! sends it again to the leader it sees.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::Raft;
use tokio::sync::mpsc;
use tracing::{debug, trace, warn};
use warren_core::{node_of, ChannelId, Command, ConnId, Op};
use warren_raft::state_machine::BrokerStateMachine;
use warren_raft::{LogCommand, TypeConfig};

use crate::relay::codec::Up;
use crate::relay::links::Links;

/// What the proposer is told.
#[derive(Debug)]
pub enum Proposal {
    /// A command of this node's broker, in the order the broker made them.
    Own(Command),
    /// A command another node's broker sent here to be proposed (it believes this node leads).
    Relayed(Command),
    /// This node applied the logged publish `number` of channel (`conn`, `channel`).
    Applied {
        conn: ConnId,
        channel: ChannelId,
        number: u64,
    },
}

/// A logged publish not applied here after this long is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(5);

/// A publish or a topology command of this node's broker (numbered by its channel) that must
/// reach the log: its client may wait for its confirm or reply, and its channel's later
/// methods wait until it is applied.
fn tracked(node: u64, c: &Command) -> Option<(ConnId, ChannelId, u64)> {
    c.logged_number()
        .filter(|(conn, _, _)| node_of(*conn) == node)
}

/// A settlement of delivered messages (`Op::Settle`, `Op::Reject`, `Op::Return`).
fn settles(c: &Command) -> bool {
    matches!(
        c.op,
        Op::Settle { .. } | Op::Reject { .. } | Op::Return { .. }
    )
}

type Outcome = tokio::sync::oneshot::Receiver<openraft::raft::ClientWriteResult<TypeConfig>>;

/// Starts the proposer of node `node` (see the module doc); `proposals` comes from its broker
/// task and from the relay streams of the other nodes.
pub fn spawn_proposer(
    raft: Raft<TypeConfig, BrokerStateMachine>,
    node: u64,
    links: Links,
    proposals: mpsc::UnboundedReceiver<Proposal>,
) {
    // Unbounded, each bounded by what is in flight: `pending` holds one entry per command
    // written to this node's Raft and not yet committed or refused; `retries` a subset of
    // those. `proposals` (made by the caller) is bounded by the brokers' limits on proposals
    // in flight (`MAX_IN_FLIGHT` per node, for its own and for what it relays here).
    let (pending_tx, pending) = mpsc::unbounded_channel::<(Command, bool, Outcome)>();
    let (retry_tx, retries) = mpsc::unbounded_channel::<(Command, bool)>();
    tokio::spawn(watch_outcomes(raft.clone(), node, pending, retry_tx));
    let proposer = Proposer {
        raft,
        node,
        links,
        unapplied: VecDeque::new(),
        leader: None,
        pending: pending_tx,
    };
    tokio::spawn(proposer.run(proposals, retries));
}

struct Proposer {
    raft: Raft<TypeConfig, BrokerStateMachine>,
    node: u64,
    links: Links,
    /// This node's logged publishes not applied here yet, in the order they were made, with
    /// when each was last sent.
    unapplied: VecDeque<(Command, Instant)>,
    /// The leader as this node last saw it.
    leader: Option<u64>,
    /// Commands written to this node's Raft, for [`watch_outcomes`]: with whether they are
    /// this node's own.
    pending: mpsc::UnboundedSender<(Command, bool, Outcome)>,
}

impl Proposer {
    async fn run(
        mut self,
        mut proposals: mpsc::UnboundedReceiver<Proposal>,
        mut retries: mpsc::UnboundedReceiver<(Command, bool)>,
    ) {
        // The server metrics change with the leader, the vote and the membership only (the
        // whole `metrics()` is sent again on every turn of openraft's loop).
        let mut metrics = self.raft.server_metrics();
        self.leader = metrics.borrow_watched().current_leader;
        let mut resend = tokio::time::interval(Duration::from_secs(1));
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Not `biased`: under load proposals are always ready, and a leader change (a
            // metrics change) must still be seen at once.
            tokio::select! {
                Some((command, own)) = retries.recv() => {
                    if self.leader == Some(self.node) && !self.write_local(command, own).await {
                        return;
                    }
                }
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let leader = metrics.borrow_watched().current_leader;
                    if leader != self.leader {
                        self.leader = leader;
                        if leader.is_some() && !self.resend(Duration::ZERO).await {
                            return;
                        }
                    }
                }
                proposal = proposals.recv() => {
                    let sent = match proposal {
                        None => return,
                        Some(Proposal::Own(command)) => {
                            if tracked(self.node, &command).is_some() {
                                self.unapplied.push_back((command.clone(), Instant::now()));
                            }
                            self.send(command, true).await
                        }
                        Some(Proposal::Relayed(command)) => self.send(command, false).await,
                        Some(Proposal::Applied { conn, channel, number }) => {
                            self.applied(conn, channel, number);
                            true
                        }
                    };
                    if !sent {
                        return;
                    }
                }
                _ = resend.tick() => {
                    if !self.resend(RESEND_AFTER).await {
                        return;
                    }
                }
            }
        }
    }

    /// Forgets an applied publish (usually the oldest).
    fn applied(&mut self, conn: ConnId, channel: ChannelId, number: u64) {
        let node = self.node;
        if let Some(at) = self
            .unapplied
            .iter()
            .position(|(c, _)| tracked(node, c) == Some((conn, channel, number)))
        {
            self.unapplied.remove(at);
        }
    }

    /// Sends again, in order, every publish not applied that was last sent at least `age` ago.
    /// False once Raft has stopped.
    async fn resend(&mut self, age: Duration) -> bool {
        if self.leader.is_none() || self.unapplied.is_empty() {
            return true;
        }
        let now = Instant::now();
        let due: Vec<Command> = self
            .unapplied
            .iter_mut()
            .filter(|(_, at)| now.duration_since(*at) >= age)
            .map(|(c, at)| {
                *at = now;
                c.clone()
            })
            .collect();
        if !due.is_empty() {
            debug!(
                count = due.len(),
                leader = ?self.leader,
                "sending publishes not applied yet to the leader again"
            );
        }
        for command in due {
            if !self.send(command, true).await {
                return false;
            }
        }
        true
    }

    /// Hands a command to the leader as this node sees it. False once Raft has stopped.
    async fn send(&mut self, command: Command, own: bool) -> bool {
        match self.leader {
            Some(leader) if leader == self.node => self.write_local(command, own).await,
            Some(leader) if own => {
                if tracked(self.node, &command).is_some() {
                    // A broken stream loses it: it is sent again (see `resend`).
                    let _ = self.links.send(leader, Up::Propose(command));
                } else if settles(&command) {
                    // A channel's acks, rejects and counted requeues of a replicated queue
                    // (issue 19, step 3): many, so on the stream, not a call each (a call
                    // dials the leader anew: S4 of `benches/compare` spent a fifth of every
                    // node's CPU in TLS handshakes). A broken stream loses them: those
                    // messages are delivered again, as after any failover.
                    let _ = self.links.send(leader, Up::Propose(command));
                } else {
                    tokio::spawn(forward_to_leader(self.raft.clone(), command));
                }
                true
            }
            // Another node's command, and this node does not lead: its node sends it again.
            Some(_) => true,
            // No leader: a logged publish waits for one (`resend` at the change); another
            // command of this node waits in `forward_to_leader`.
            None => {
                if own && tracked(self.node, &command).is_none() {
                    tokio::spawn(forward_to_leader(self.raft.clone(), command));
                }
                true
            }
        }
    }

    /// Writes a command to this node's Raft without waiting for it to commit; its outcome is
    /// watched by [`watch_outcomes`]. False once Raft has stopped.
    async fn write_local(&mut self, command: Command, own: bool) -> bool {
        // Only the outcome (once applied, or refused) is needed. `complete_only`: a commit
        // notification nobody receives makes openraft log a warning per proposal.
        let (responder, outcome) = openraft::impls::ProgressResponder::complete_only();
        trace!(target: "warren_latency", "client_write_ff");
        if let Err(e) = self
            .raft
            .client_write_ff(LogCommand(command.clone()), Some(responder))
            .await
        {
            warn!(error = %e, "Raft stopped; proposals are no longer accepted");
            return false;
        }
        self.pending.send((command, own, outcome)).is_ok()
    }
}

/// Watches, in log order, what became of the commands written to this node's Raft. One
/// refused before it was appended (`ForwardToLeader`) while this node still leads (its lease
/// expired) is proposed again after 50 ms, until accepted. Once another node leads: a logged
/// publish of this node waits to be sent again by the proposer (it is still unapplied), another
/// command of this node is handed to the leader ([`forward_to_leader`]), another node's is
/// dropped (its node sends it again). A command appended and then discarded at a leader change
/// (it may still commit elsewhere) is not proposed again here: a logged publish is sent again
/// by the proposer, the state machine recognising it if it did commit.
async fn watch_outcomes(
    raft: Raft<TypeConfig, BrokerStateMachine>,
    node: u64,
    mut pending: mpsc::UnboundedReceiver<(Command, bool, Outcome)>,
    retry: mpsc::UnboundedSender<(Command, bool)>,
) {
    let mut refused_logged = false;
    while let Some((command, own, outcome)) = pending.recv().await {
        let refused = match outcome.await {
            Ok(Ok(_)) => {
                refused_logged = false;
                continue;
            }
            // Refused before it was appended: proposing it again cannot duplicate it.
            Ok(Err(openraft::error::ClientWriteError::ForwardToLeader(f))) => f.to_string(),
            Ok(Err(e)) => {
                debug!(error = %e, "a proposal's fate is unknown after a leader change");
                continue;
            }
            Err(_) => continue,
        };
        let leads = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            m.current_leader == Some(m.id)
        };
        if !leads {
            if own && tracked(node, &command).is_none() {
                tokio::spawn(forward_to_leader(raft.clone(), command));
            }
            continue;
        }
        if !refused_logged {
            warn!(reason = %refused, "Raft refused proposals of this leader (lease expired?); proposing them again");
            refused_logged = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if retry.send((command, own)).is_err() {
            return;
        }
    }
}

/// How long a node keeps trying to hand one of its broker's commands to a leader.
const FORWARD_FOR: Duration = Duration::from_secs(30);

/// Hands a command of this node's broker (not a logged publish) to the leader
/// (`Relay.Propose`), trying again while no leader answers. A command whose fate is unknown
/// (the call broke after it was sent) is sent again only if applying it twice does no harm
/// (`RemoveQueue`); any other is dropped with a warning (a dead-lettered copy is lost, as a
/// classic queue's dead-lettering is at most once).
pub(crate) async fn forward_to_leader(
    raft: Raft<TypeConfig, BrokerStateMachine>,
    command: Command,
) {
    use warren_proto::raft::relay_client::RelayClient;
    use warren_proto::raft::ProposeRequest;
    let idempotent = matches!(command.op, Op::RemoveQueue { .. });
    let encoded = warren_raft::encode_command(&command);
    let deadline = tokio::time::Instant::now() + FORWARD_FOR;
    loop {
        let leader = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            m.current_leader.and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| (l == m.id, n.grpc_addr.clone()))
            })
        };
        let outcome = match leader {
            // This node leads now: its own Raft takes it.
            Some((true, _)) => match raft.client_write(LogCommand(command.clone())).await {
                Ok(_) => return,
                Err(e) => Err::<(), _>((false, e.to_string())),
            },
            Some((false, addr)) if !addr.is_empty() => {
                match warren_raft::dial::connect(&addr).await {
                    Ok(channel) => {
                        let mut client = RelayClient::new(channel);
                        let request = ProposeRequest {
                            group_id: warren_raft::METADATA_GROUP,
                            command: encoded.clone(),
                        };
                        match client.propose(request).await {
                            Ok(_) => return,
                            // Refused before anything was appended: safe to send again.
                            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                                Err((false, s.message().to_owned()))
                            }
                            Err(s) => Err((true, s.message().to_owned())),
                        }
                    }
                    Err(e) => Err((false, e.to_string())),
                }
            }
            _ => Err((false, "no leader known".to_owned())),
        };
        if let Err((unknown, reason)) = outcome {
            if unknown && !idempotent {
                warn!(%reason, "a command forwarded to the leader may or may not have been committed; it is not sent again");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                warn!(%reason, "no leader took a command of this node's broker in time; it is dropped");
                return;
            }
            debug!(%reason, "forwarding a proposal to the leader; trying again");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
