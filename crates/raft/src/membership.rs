//! Membership changes at run time, done by the leader: adding a learner and waiting until it has
//! caught up, promoting a learner to voter, removing a member (a leader asked to remove itself
//! first hands its leadership to another voter), and recording in the membership the
//! incarnations the leader learns from its peers' replies. Routing a request to the leader is
//! the admin service's job, not this file's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::storage::RaftStateMachine;
use openraft::{ChangeMembers, Raft, RaftMetrics};
use tracing::{debug, info};
use warren_proto::raft::admin_client::AdminClient;
use warren_proto::raft::StatusRequest;

use crate::incarnation::{show, IncarnationBook};
use crate::{GroupId, NodeId, TypeConfig, WarrenNode};

/// A learner more than this many entries behind the leader is not promoted: as a voter it would
/// hold back commits until it caught up.
pub const PROMOTE_MAX_LAG: u64 = 2_000;

/// How long a membership change waits for another one in progress to finish.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(5);

/// How long a leader asked to remove itself waits for another voter to take over.
const HAND_OVER_WAIT: Duration = Duration::from_secs(5);

/// How long the leader waits for a node it is about to add to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a membership change was not made; the text is one line for an operator.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The request does not fit the current membership (or the node to add).
    #[error("{0}")]
    Refused(String),
    /// The request names the node wrongly.
    #[error("{0}")]
    Invalid(String),
    /// Leadership moved, or a node could not be reached: running it again may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// The change was made but what it waits for did not happen in time.
    #[error("{0}")]
    Timeout(String),
    /// The Raft node stopped.
    #[error("{0}")]
    Fatal(String),
}

impl From<RaftError<TypeConfig, ClientWriteError<TypeConfig>>> for ChangeError {
    fn from(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ChangeError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                ChangeError::Unavailable(match f.leader_id {
                    Some(l) => format!(
                        "leadership moved to node {l} before the change was made; run it again"
                    ),
                    None => {
                        "this node stopped leading before the change was made; run it again".into()
                    }
                })
            }
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => {
                ChangeError::Unavailable(
                    "leadership moved while the change was being made; check `warren status` \
                     and run it again if it is not done"
                        .into(),
                )
            }
            RaftError::APIError(other) => ChangeError::Refused(other.to_string()),
            RaftError::Fatal(f) => ChangeError::Fatal(format!("the Raft node stopped: {f}")),
        }
    }
}

/// The last log index known to be replicated to `id` (leader only).
fn matched(m: &RaftMetrics<TypeConfig>, id: NodeId) -> Option<u64> {
    m.replication.as_ref()?.get(&id)?.as_ref().map(|l| l.index)
}

fn current<SM: RaftStateMachine<TypeConfig>>(
    raft: &Raft<TypeConfig, SM>,
) -> RaftMetrics<TypeConfig> {
    raft.metrics().borrow_watched().clone()
}

fn voter_list(m: &RaftMetrics<TypeConfig>) -> String {
    let voters: Vec<String> = m
        .membership_config
        .membership()
        .voter_ids()
        .map(|v| v.to_string())
        .collect();
    voters.join(", ")
}

/// Proposes `changes`, waiting (up to 5 s) while another membership change is in progress or
/// this node, just elected, is not ready to lead yet.
async fn change<SM: RaftStateMachine<TypeConfig>>(
    raft: &Raft<TypeConfig, SM>,
    changes: ChangeMembers<NodeId, WarrenNode>,
    retain: bool,
) -> Result<(), ChangeError> {
    patiently(raft, || raft.change_membership(changes.clone(), retain))
        .await
        .map(|_| ())
}

/// Runs a membership change `op` until it is taken, waiting (up to 5 s) while another change
/// is in progress (a learner being added, the leader recording incarnations) or this node,
/// just elected, is not ready to lead yet.
async fn patiently<SM, T, F, Fut>(raft: &Raft<TypeConfig, SM>, op: F) -> Result<T, ChangeError>
where
    SM: RaftStateMachine<TypeConfig>,
    F: Fn() -> Fut,
    Fut: std::future::Future<
        Output = Result<T, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>,
    >,
{
    let deadline = Instant::now() + IN_PROGRESS_WAIT;
    loop {
        let retry = match op().await {
            Ok(done) => return Ok(done),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                openraft::error::ChangeMembershipError::InProgress(_),
            ))) => true,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                f.leader_id.is_none() || f.leader_id == Some(current(raft).id)
            }
            Err(e) => return Err(e.into()),
        };
        if !retry || Instant::now() >= deadline {
            // Once more, to report what stands in the way now.
            return op().await.map_err(ChangeError::from);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks the node at `grpc_addr` who it is: its id, incarnation and whether it already has a log.
async fn probe(
    group: GroupId,
    grpc_addr: &str,
) -> Result<warren_proto::raft::StatusReply, ChangeError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        ChangeError::Unavailable(format!(
            "cannot reach the new node at {grpc_addr} ({e}); is it running with this gRPC address?"
        ))
    };
    let endpoint = crate::dial::endpoint(grpc_addr)
        .map_err(|e| ChangeError::Invalid(format!("bad gRPC address {grpc_addr}: {e}")))?
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| unreachable(&crate::dial::describe(&e)))?;
    let reply = AdminClient::new(channel)
        .status(StatusRequest {
            group_id: group,
            digest: false,
        })
        .await
        .map_err(|e| unreachable(&e.message().to_string()))?;
    Ok(reply.into_inner())
}

/// Adds node `id` (reachable at `grpc_addr`, serving AMQP at `amqp_addr`) as a learner and waits
/// up to `catch_up` until it has replicated everything the leader had when it was added (from
/// the log, or a snapshot when the log is purged). Returns what was done.
pub async fn add_learner<SM: RaftStateMachine<TypeConfig>>(
    raft: &Raft<TypeConfig, SM>,
    group: GroupId,
    id: NodeId,
    amqp_addr: &str,
    grpc_addr: &str,
    catch_up: Duration,
) -> Result<String, ChangeError> {
    let started = Instant::now();
    let m = current(raft);
    let me = m.id;
    let membership = m.membership_config.membership();
    let existing = membership.get_node(&id).cloned();
    if membership.voter_ids().any(|v| v == id) {
        return Err(ChangeError::Refused(format!(
            "node {id} is already a voter"
        )));
    }
    if let Some(e) = &existing {
        if e.grpc_addr != grpc_addr || e.amqp_addr != amqp_addr {
            return Err(ChangeError::Refused(format!(
                "node {id} is already a learner at amqp {} grpc {}; remove it first to change \
                 its addresses",
                e.amqp_addr, e.grpc_addr
            )));
        }
    }
    let status = probe(group, grpc_addr).await?;
    if status.node_id != id {
        return Err(ChangeError::Invalid(format!(
            "the node at {grpc_addr} is node {}, not node {id}",
            status.node_id
        )));
    }
    if status.incarnation == 0 {
        return Err(ChangeError::Refused(format!(
            "the node at {grpc_addr} reports no incarnation (an older warren?)"
        )));
    }
    match &existing {
        Some(e) if e.incarnation != 0 && e.incarnation != status.incarnation => {
            return Err(ChangeError::Refused(format!(
                "node {id} is a learner as incarnation {}, but the node at {grpc_addr} is \
                 incarnation {} (its data was wiped): remove node {id} first, or add it under \
                 a new id",
                show(e.incarnation),
                show(status.incarnation)
            )));
        }
        None if status.last_log_index.is_some() || !status.members.is_empty() => {
            return Err(ChangeError::Refused(format!(
                "node {id} at {grpc_addr} already has a Raft log (it belongs to a cluster, or \
                 its data directory is not new): start it with an empty data directory and \
                 --join"
            )));
        }
        _ => {}
    }
    let node = WarrenNode {
        grpc_addr: grpc_addr.to_string(),
        amqp_addr: amqp_addr.to_string(),
        incarnation: status.incarnation,
    };
    let added = patiently(raft, || raft.add_learner(id, node.clone(), false)).await?;
    // Everything the leader had once the learner was in the membership.
    let target = current(raft)
        .last_log_index
        .unwrap_or(0)
        .max(added.log_id.index);
    info!(
        node = id,
        incarnation = %show(status.incarnation),
        target,
        "added a learner; waiting for it to catch up"
    );
    let waited = raft
        .wait(Some(catch_up))
        .metrics(
            |m| m.current_leader != Some(me) || matched(m, id).is_some_and(|i| i >= target),
            "the learner caught up",
        )
        .await;
    let now = current(raft);
    match (waited, matched(&now, id)) {
        (Ok(m), Some(index)) if m.current_leader == Some(me) => {
            info!(
                node = id,
                index,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "the learner caught up"
            );
            Ok(format!(
                "node {id} added as a learner (incarnation {}) and caught up to log index \
                 {index} in {} ms",
                show(status.incarnation),
                started.elapsed().as_millis()
            ))
        }
        (Ok(_), _) => Err(ChangeError::Unavailable(format!(
            "node {id} was added as a learner, but this node stopped leading before it caught \
             up; `warren status` shows its lag"
        ))),
        (Err(_), index) => Err(ChangeError::Timeout(format!(
            "node {id} was added as a learner but has not caught up within {} s (replicated up \
             to {} of {target}); it goes on replicating: `warren status` shows its lag, and \
             `warren member add` again waits again",
            catch_up.as_secs(),
            index.map_or("nothing".to_string(), |i| i.to_string())
        ))),
    }
}

/// Makes learner `id` a voter, if it is no more than [`PROMOTE_MAX_LAG`] entries behind.
pub async fn promote<SM: RaftStateMachine<TypeConfig>>(
    raft: &Raft<TypeConfig, SM>,
    id: NodeId,
) -> Result<String, ChangeError> {
    let m = current(raft);
    let membership = m.membership_config.membership();
    if membership.get_node(&id).is_none() {
        return Err(ChangeError::Refused(format!(
            "node {id} is not a member: add it first (`warren member add`)"
        )));
    }
    // A change cut short by a leader change leaves a joint membership; running it again (on
    // the last configuration, as openraft does) finishes it.
    let joint = membership.get_joint_config().len() > 1;
    let voter = membership.voter_ids().any(|v| v == id);
    if voter && !joint {
        return Ok(format!(
            "node {id} is already a voter; voters: {}",
            voter_list(&m)
        ));
    }
    let last = m.last_log_index.unwrap_or(0);
    match matched(&m, id) {
        _ if voter => {}
        Some(i) if last.saturating_sub(i) <= PROMOTE_MAX_LAG => {}
        Some(i) => {
            return Err(ChangeError::Refused(format!(
                "node {id} is {} entries behind the leader: wait until it has caught up \
                 (`warren status` shows its lag)",
                last.saturating_sub(i)
            )))
        }
        None => {
            return Err(ChangeError::Refused(format!(
                "node {id} has not replicated anything yet: wait until it has caught up \
                 (`warren status` shows its lag)"
            )))
        }
    }
    change(
        raft,
        ChangeMembers::AddVoterIds(BTreeSet::from([id])),
        false,
    )
    .await?;
    let now = current(raft);
    info!(node = id, voters = %voter_list(&now), "promoted a learner to voter");
    Ok(format!(
        "node {id} is a voter; voters: {}",
        voter_list(&now)
    ))
}

/// What [`remove`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    /// The member is gone; what to tell the operator.
    Removed(String),
    /// This node was asked to remove itself while leading: it handed its leadership to this
    /// node, which must now be asked to remove it.
    HandedOver(NodeId),
}

/// Removes member `id` (voter or learner). The leader removing itself first hands its leadership
/// to the most up-to-date other voter, so the cluster is led throughout; only if that does not
/// happen within 5 s does it remove itself as leader (openraft then leads until the change is
/// committed, and the others elect a new leader).
pub async fn remove<SM: RaftStateMachine<TypeConfig>>(
    raft: &Raft<TypeConfig, SM>,
    id: NodeId,
) -> Result<Removal, ChangeError> {
    let m = current(raft);
    let me = m.id;
    let membership = m.membership_config.membership();
    if membership.get_node(&id).is_none() {
        return Err(ChangeError::Refused(format!("node {id} is not a member")));
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    if !voters.contains(&id) {
        change(
            raft,
            ChangeMembers::RemoveNodes(BTreeSet::from([id])),
            false,
        )
        .await?;
        info!(node = id, "removed a learner");
        return Ok(Removal::Removed(format!("learner {id} removed")));
    }
    if voters.len() == 1 {
        return Err(ChangeError::Refused(format!(
            "node {id} is the only voter; a cluster cannot remove its last voter"
        )));
    }
    if id == me {
        let successor = voters
            .iter()
            .filter(|v| **v != me)
            .max_by_key(|v| matched(&m, **v))
            .copied();
        if let Some(to) = successor {
            info!(
                to,
                "asked to remove this node, the leader: handing leadership over first"
            );
            raft.trigger()
                .transfer_leader(to)
                .await
                .map_err(|e| ChangeError::Fatal(e.to_string()))?;
            let handed = raft
                .wait(Some(HAND_OVER_WAIT))
                .metrics(
                    |m| m.current_leader.is_some_and(|l| l != me),
                    "another voter leads",
                )
                .await;
            if let Ok(m) = handed {
                if let Some(l) = m.current_leader {
                    return Ok(Removal::HandedOver(l));
                }
            }
            info!("no other voter took over in time: removing this node while it leads");
        }
    }
    change(
        raft,
        ChangeMembers::RemoveVoters(BTreeSet::from([id])),
        false,
    )
    .await?;
    let now = current(raft);
    info!(node = id, voters = %voter_list(&now), "removed a voter");
    Ok(Removal::Removed(format!(
        "node {id} removed; voters: {}",
        voter_list(&now)
    )))
}

/// Starts the task that, while this node leads, writes into the membership the incarnations of
/// members it does not record yet: this node's own, and those its peers reported in replies
/// (the members a cluster was formed with are only known by id and address at first).
pub fn spawn_incarnation_recorder<SM: RaftStateMachine<TypeConfig>>(
    raft: Raft<TypeConfig, SM>,
    book: Arc<IncarnationBook>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = book.learned_changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            let m = current(&raft);
            if m.running_state.is_err() {
                return;
            }
            if m.current_leader != Some(m.id) {
                continue;
            }
            book.accepted();
            let learned = book.learned();
            let mut missing = BTreeMap::new();
            for (id, node) in m.membership_config.membership().nodes() {
                if node.incarnation != 0 {
                    continue;
                }
                let known = if *id == m.id {
                    Some(book.own())
                } else {
                    learned.get(id).copied()
                };
                if let Some(incarnation) = known {
                    missing.insert(
                        *id,
                        WarrenNode {
                            incarnation,
                            ..node.clone()
                        },
                    );
                }
            }
            if missing.is_empty() {
                continue;
            }
            let ids: Vec<NodeId> = missing.keys().copied().collect();
            match raft
                .change_membership(ChangeMembers::SetNodes(missing), true)
                .await
            {
                Ok(_) => info!(nodes = ?ids, "recorded the incarnations of members"),
                Err(RaftError::Fatal(_)) => return,
                Err(e) => debug!(error = %e, "could not record incarnations yet"),
            }
        }
    });
}
