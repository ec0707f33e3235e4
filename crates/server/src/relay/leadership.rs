//! Where the deciding broker is, from this node's point of view, and the hand-over when this
//! node starts or stops leading.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::Raft;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use warren_core::{Command, Op, STATE_MACHINE_VERSION};
use warren_raft::lease::Lease;
use warren_raft::state_machine::BrokerStateMachine;
use warren_raft::{LogCommand, NodeId, TypeConfig};

use crate::broker_task::{BrokerHandle, ToBroker};
use crate::clock::now_ms;

/// A leader that no quorum has acknowledged for this long (3 x the longest election timeout)
/// is in a minority: it stops serving (no confirms, no deliveries) until a quorum answers again
/// or another leader is elected.
const MINORITY_AFTER: Duration = Duration::from_millis(1800);

/// A member the leader has not heard from for this long is down: the transient queues homed
/// on it are removed (RabbitMQ removes a down node's transient queues too).
const NODE_DOWN_AFTER: Duration = Duration::from_secs(15);

/// The leader's record of members it reported down (each once per absence), and of the
/// members it has seen (one that leaves the membership is down for good).
#[derive(Default)]
struct DownNodes {
    reported: std::collections::BTreeSet<NodeId>,
    members: std::collections::BTreeSet<NodeId>,
    /// When this leadership began to watch (a member never heard from counts from then).
    since: Option<std::time::Instant>,
}

impl DownNodes {
    /// The members newly down (or newly gone from the membership) per the leader's metrics.
    fn newly_down(&mut self, me: NodeId, m: &openraft::RaftMetrics<TypeConfig>) -> Vec<NodeId> {
        let since = *self.since.get_or_insert_with(std::time::Instant::now);
        let members: std::collections::BTreeSet<NodeId> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        let mut down: Vec<NodeId> = self
            .members
            .difference(&members)
            .copied()
            .filter(|n| self.reported.insert(*n))
            .collect();
        self.members.extend(members.iter().copied());
        for node in members.iter().copied().filter(|n| *n != me) {
            let last = m
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(&node).cloned().flatten());
            let silent = match last {
                Some(at) => at.elapsed() > NODE_DOWN_AFTER,
                None => since.elapsed() > NODE_DOWN_AFTER,
            };
            if !silent {
                self.reported.remove(&node);
            } else if self.reported.insert(node) {
                down.push(node);
            }
        }
        down
    }
}

/// Where client input must go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// No leader known yet (an election, or a leader still catching up): input waits.
    Unknown,
    /// This node leads and its broker serves.
    Local,
    /// Another node leads; relay to it.
    Remote { node: NodeId, grpc_addr: String },
}

/// Starts the task that follows Raft's leadership for node `id` and returns the current route.
/// `restarted`: the node had a log when it started; if it is then the first leader it sees, the
/// whole cluster restarted and it commits [`Op::Recover`], otherwise [`Op::TakeOver`].
pub fn spawn_leadership(
    raft: Raft<TypeConfig, BrokerStateMachine>,
    id: NodeId,
    restarted: bool,
    broker: &BrokerHandle,
) -> watch::Receiver<Route> {
    let (tx, rx) = watch::channel(Route::Unknown);
    let to_broker = broker.tx.clone();
    tokio::spawn(run(raft, id, restarted, to_broker, tx));
    rx
}

/// Keeps `addresses` equal to the gRPC addresses of the members of `raft`'s membership, by node
/// id (what [`crate::relay::Links`] dials).
pub fn spawn_member_addresses(
    raft: Raft<TypeConfig, BrokerStateMachine>,
    addresses: watch::Sender<std::collections::BTreeMap<u64, String>>,
) {
    tokio::spawn(async move {
        let mut metrics = raft.server_metrics();
        loop {
            let now: std::collections::BTreeMap<u64, String> = metrics
                .borrow_and_update()
                .membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.grpc_addr.clone()))
                .collect();
            addresses.send_if_modified(|a| {
                if *a != now {
                    *a = now;
                    true
                } else {
                    false
                }
            });
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}

/// The leader this node may count as the first it saw since it started (see [`spawn_leadership`]).
///
/// A node that led when it stopped restarts with its own committed vote, and openraft reports it
/// as the leader of that term until it hears of a newer one. That is no leader of the restarted
/// node's lifetime: counting it made a node that had been killed as the leader and restarted
/// alone commit [`Op::Recover`] the next time it won an election, dropping every exclusive and
/// non-durable queue and every non-persistent message of a cluster that had kept running
/// (found in a chaos run's node logs: `op=Recover` on a single restarted node).
fn leader_seen(
    id: NodeId,
    restarted: bool,
    startup_term: u64,
    term: u64,
    leader: Option<NodeId>,
) -> Option<NodeId> {
    match leader {
        Some(l) if restarted && l == id && term == startup_term => None,
        other => other,
    }
}

/// The term of the last entry of this node's log written before term `term` (the last entry of
/// all with `u64::MAX`); `None` for an empty log.
async fn log_term_before(raft: &Raft<TypeConfig, BrokerStateMachine>, term: u64) -> Option<u64> {
    raft.with_raft_state(move |st| {
        let ids = &st.log_ids;
        let last = ids.last()?.index;
        let purged = ids.purged().map(|p| (p.index, p.leader_id.term));
        let first = purged.map_or(0, |(index, _)| index + 1);
        term_before(first, last, purged.map(|(_, t)| t), term, |i| {
            ids.get(i).map(|l| l.leader_id.term)
        })
    })
    .await
    .ok()
    .flatten()
}

/// The term of the last entry before the first one of term `term` or later, in a log whose
/// entries `first..=last` have the terms `term_at` gives (terms never decrease along a Raft
/// log); before `first`, the log was purged up to an entry of term `purged_term`.
fn term_before(
    first: u64,
    last: u64,
    purged_term: Option<u64>,
    term: u64,
    term_at: impl Fn(u64) -> Option<u64>,
) -> Option<u64> {
    if first > last {
        return purged_term.filter(|t| *t < term);
    }
    if term_at(last).is_some_and(|t| t < term) {
        return term_at(last);
    }
    // The first index whose term is `term` or later: in first..=last.
    let (mut lo, mut hi) = (first, last);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if term_at(mid).is_some_and(|t| t < term) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == first {
        purged_term.filter(|t| *t < term)
    } else {
        term_at(lo - 1)
    }
}

async fn run(
    raft: Raft<TypeConfig, BrokerStateMachine>,
    id: NodeId,
    restarted: bool,
    to_broker: mpsc::Sender<ToBroker>,
    route: watch::Sender<Route>,
) {
    // Read from the whole metrics, woken by the server metrics (leader, vote, membership: sent
    // only when they change; `metrics()` is sent on every turn of openraft's loop, and a task
    // woken by it would run several times per log entry), by the data metrics only while this
    // node leads and waits to have applied its term's first entry, and by a timer (a leader cut
    // off from its quorum sees no event).
    let mut metrics = raft.metrics();
    let mut server = raft.server_metrics();
    let mut data = raft.data_metrics();
    let startup_term = metrics.borrow_watched().current_term;
    let startup_log_term = log_term_before(&raft, u64::MAX).await;
    let mut first_leader: Option<NodeId> = None;
    let mut recovered = false;
    let mut local = false;
    let mut minority_logged = false;
    let mut take_over_refused = false;
    let mut down = DownNodes::default();
    loop {
        let (desired, term, leads) = {
            let m = metrics.borrow_and_update();
            if first_leader.is_none() {
                first_leader = leader_seen(
                    id,
                    restarted,
                    startup_term,
                    m.current_term,
                    m.current_leader,
                );
            }
            let desired = match m.current_leader {
                // Serve only once everything committed before this term is applied: the
                // term's first entry is applied when last_applied is of this term.
                Some(l) if l == id => {
                    let voters = m.membership_config.membership().voter_ids().count();
                    let quorum_age = m.last_quorum_acked.as_ref().map(|at| at.elapsed());
                    let in_minority =
                        voters > 1 && quorum_age.is_some_and(|age| age > MINORITY_AFTER);
                    if in_minority {
                        if !minority_logged {
                            warn!(node = id, term = m.current_term, "in a minority: no quorum has acknowledged this leader; not serving clients");
                            minority_logged = true;
                        }
                        Route::Unknown
                    } else if m.last_applied.as_ref().map(|a| a.leader_id.term)
                        == Some(m.current_term)
                    {
                        minority_logged = false;
                        Route::Local
                    } else {
                        Route::Unknown
                    }
                }
                Some(l) => match m.membership_config.membership().get_node(&l) {
                    Some(node) => Route::Remote {
                        node: l,
                        grpc_addr: node.grpc_addr.clone(),
                    },
                    None => Route::Unknown,
                },
                None => Route::Unknown,
            };
            (desired, m.current_term, m.current_leader == Some(id))
        };
        if local && desired != Route::Local {
            info!(
                node = id,
                term, "stopped leading: the replicated queues are the new leader's to decide"
            );
            local = false;
            if to_broker.send(ToBroker::StepDown).await.is_err() {
                return;
            }
        }
        if !local && desired == Route::Local {
            // Another leader wrote entries after this node's last one at startup: the cluster
            // ran while this node was down, so this is no restart of the whole cluster even if
            // no other leader showed in the metrics this task sampled.
            let others_wrote = log_term_before(&raft, term).await > startup_log_term;
            // The only voter is the whole cluster: its restart is one (openraft may give it its
            // leadership back in the same term, which `leader_seen` does not count).
            let alone = warren_raft::lease::only_voter(&metrics.borrow_watched());
            let op = if restarted
                && !recovered
                && (alone || (first_leader == Some(id) && !others_wrote))
            {
                Op::Recover
            } else {
                Op::TakeOver
            };
            let started = std::time::Instant::now();
            let command = Command {
                version: STATE_MACHINE_VERSION,
                origin: None,
                number: None,
                issued_at: now_ms(),
                op: op.clone(),
            };
            match raft.client_write(LogCommand(command)).await {
                Ok(_) => {
                    recovered = true;
                    local = true;
                    take_over_refused = false;
                    let lead = ToBroker::Lead {
                        lease: Lease::new(&raft),
                    };
                    if to_broker.send(lead).await.is_err() {
                        return;
                    }
                    info!(
                        node = id,
                        term,
                        op = ?op,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "leading: serving clients"
                    );
                }
                Err(e) => {
                    // Once per streak of refusals: the metrics change with every heartbeat, so
                    // a node refused for a while would otherwise log thousands of these.
                    if take_over_refused {
                        debug!(error = %e, "could not take over as leader (again)");
                    } else {
                        warn!(error = %e, "could not take over as leader");
                        take_over_refused = true;
                    }
                    let _ = route.send(Route::Unknown);
                    // Not sooner than 50 ms (metrics events come with every heartbeat and
                    // replication round), and a leader whose lease expired sees no metrics
                    // event when it comes back: look again after a quarter second too.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    tokio::select! {
                        r = server.changed() => if r.is_err() { return },
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                    continue;
                }
            }
        }
        if local {
            let newly_down = down.newly_down(id, &metrics.borrow_watched());
            for node in newly_down {
                warn!(node, "a member has not answered for {NODE_DOWN_AFTER:?}: removing the transient queues homed there");
                let input = ToBroker::Input(warren_core::Input::NodeDown { node });
                if to_broker.send(input).await.is_err() {
                    return;
                }
            }
        } else {
            down = DownNodes::default();
        }
        let now = if local { Route::Local } else { desired };
        let changed = route.send_if_modified(|r| {
            if *r != now {
                info!(node = id, route = ?now, "client route");
                *r = now.clone();
                true
            } else {
                false
            }
        });
        if changed {
            // The broker's consumers of replicated queues attach to the leader's broker.
            let leader = match &now {
                Route::Local => Some(id),
                Route::Remote { node, .. } => Some(*node),
                Route::Unknown => None,
            };
            if to_broker.send(ToBroker::Leader(leader)).await.is_err() {
                return;
            }
        }
        // A leader looks again every 100 ms (a quorum lost, a member down: what heartbeats
        // told before), any other node every quarter second.
        let awaiting_apply = leads && !local;
        let tick = Duration::from_millis(if local { 100 } else { 250 });
        tokio::select! {
            r = server.changed() => if r.is_err() { return },
            r = data.changed(), if awaiting_apply => if r.is_err() { return },
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{leader_seen, term_before};

    #[test]
    fn the_term_before_a_leaders_first_entry_is_found_in_the_log() {
        // Index:         0  1  2  3  4  5  6
        let terms = [1, 1, 2, 2, 2, 5, 5];
        let at = |i: u64| terms.get(i as usize).copied();
        assert_eq!(term_before(0, 6, None, 5, at), Some(2));
        assert_eq!(term_before(0, 6, None, 2, at), Some(1));
        assert_eq!(term_before(0, 6, None, 1, at), None);
        assert_eq!(term_before(0, 6, None, 6, at), Some(5));
        assert_eq!(term_before(0, 6, None, u64::MAX, at), Some(5));
        // Purged up to index 2 (term 2): the log starts at 3.
        assert_eq!(term_before(3, 6, Some(2), 2, at), None);
        assert_eq!(term_before(3, 6, Some(2), 3, at), Some(2));
        assert_eq!(term_before(5, 6, Some(2), 5, at), Some(2));
        // Everything purged, or an empty log.
        assert_eq!(term_before(7, 6, Some(5), u64::MAX, at), Some(5));
        assert_eq!(term_before(0, 0, None, 1, |_| None), None);
    }

    #[test]
    fn a_restarted_node_does_not_count_the_leadership_of_its_own_persisted_vote() {
        // Node 1 was killed as the leader of term 4 and restarted: it reports itself.
        assert_eq!(leader_seen(1, true, 4, 4, Some(1)), None);
        // Then it hears of node 2, elected in term 5: the cluster kept running.
        assert_eq!(leader_seen(1, true, 4, 5, Some(2)), Some(2));
        // It wins term 5 itself (every node restarted, or it was the first to): counted.
        assert_eq!(leader_seen(1, true, 4, 5, Some(1)), Some(1));
        // A restarted follower counts the leader its vote names (it may still lead).
        assert_eq!(leader_seen(3, true, 4, 4, Some(2)), Some(2));
        // A node that did not restart counts whatever it sees.
        assert_eq!(leader_seen(1, false, 0, 1, Some(1)), Some(1));
        assert_eq!(leader_seen(1, true, 4, 4, None), None);
    }
}
