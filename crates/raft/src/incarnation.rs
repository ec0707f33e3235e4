//! Incarnations: which life of a node's data directory a peer is talking to. A node's store gets
//! a random id the first time it opens (`RocksLogStore::incarnation`); the membership records
//! each member's ([`crate::WarrenNode::incarnation`]); every Raft RPC carries the incarnation the
//! sender expects of the target and its own, and [`check`] decides whether the receiver takes it.
//!
//! Why: a node whose data was wiped has forgotten its votes and its log. Under its old id it
//! could vote twice in one term or count towards a quorum for entries it no longer has. Refused,
//! it stays out until an operator removes the old id and adds the node under a new one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tracing::warn;

use crate::NodeId;

/// The gRPC metadata key of a refusal's status; its value is [`Refusal::kind`].
pub const REFUSED_KEY: &str = "warren-refused";

/// How often one kind of refusal about one node is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A new incarnation id: random and never 0 (0 means "not known").
pub fn fresh() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// An incarnation as operators see it: 16 hex digits, or `unknown` for 0.
pub fn show(incarnation: u64) -> String {
    if incarnation == 0 {
        "unknown".into()
    } else {
        format!("{incarnation:016x}")
    }
}

/// What a Raft request says about who sent it and whom it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub from: NodeId,
    /// The sender's incarnation; 0 from a sender that does not send one (not checked).
    pub from_incarnation: u64,
    /// The incarnation the sender expects of the receiver; 0 when it does not know it yet.
    pub to_incarnation: u64,
    /// A vote request (a candidate asking for this node's vote).
    pub vote: bool,
}

/// What the receiver's membership says about the sender of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderRecord {
    /// The receiver has no membership yet (a node waiting to be contacted).
    pub membership_empty: bool,
    /// The sender's recorded incarnation; `None` if the sender is not a member.
    pub incarnation: Option<u64>,
    /// The sender is a voter of the (possibly joint) membership.
    pub voter: bool,
}

/// Why a receiver refuses a Raft request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request is for another incarnation of the receiver: the receiver's data was wiped.
    ReceiverWiped { expected: u64, actual: u64 },
    /// The sender is not the incarnation the membership records: the sender's data was wiped.
    SenderWiped { recorded: u64, actual: u64 },
    /// A vote request from a candidate that is not a voter of the receiver's membership (a
    /// removed node that did not hear of its removal).
    NotAVoter,
}

impl Refusal {
    /// The value of the [`REFUSED_KEY`] metadata.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::ReceiverWiped { .. } => "receiver-wiped",
            Refusal::SenderWiped { .. } => "sender-wiped",
            Refusal::NotAVoter => "not-a-voter",
        }
    }
}

/// Decides whether node `own_id` (incarnation `own`) takes `request`. A refusal never depends on
/// the request's payload: a refused request is not handed to openraft at all, so a wiped node's
/// vote requests cannot raise anyone's term.
pub fn check(own: u64, request: &Incoming, sender: &SenderRecord) -> Result<(), Refusal> {
    if request.to_incarnation != 0 && request.to_incarnation != own {
        return Err(Refusal::ReceiverWiped {
            expected: request.to_incarnation,
            actual: own,
        });
    }
    // A sender that predates incarnations (0): nothing to compare.
    if let Some(recorded) = sender.incarnation.filter(|_| request.from_incarnation != 0) {
        if recorded != 0 && recorded != request.from_incarnation {
            return Err(Refusal::SenderWiped {
                recorded,
                actual: request.from_incarnation,
            });
        }
    }
    if request.vote && !sender.membership_empty && !sender.voter {
        return Err(Refusal::NotAVoter);
    }
    Ok(())
}

/// One node's incarnation and what it has learned of its peers': shared by the network (which
/// sends and learns), the Raft service (which checks) and the admin service (which reports).
pub struct IncarnationBook {
    node: NodeId,
    own: u64,
    /// Incarnations peers reported in their replies that the membership does not record yet.
    learned: Mutex<BTreeMap<NodeId, u64>>,
    /// Wakes the task that records learned incarnations in the membership.
    learned_signal: Notify,
    /// Why the cluster refuses this node, while it does.
    refused: Mutex<Option<String>>,
    /// Whether `refused` is set (read on every append, without the lock).
    is_refused: AtomicBool,
    /// When each kind of refusal about each node was last logged.
    logged: Mutex<HashMap<(&'static str, NodeId), Instant>>,
}

impl IncarnationBook {
    pub fn new(node: NodeId, own: u64) -> IncarnationBook {
        IncarnationBook {
            node,
            own,
            learned: Mutex::default(),
            learned_signal: Notify::new(),
            refused: Mutex::default(),
            is_refused: AtomicBool::new(false),
            logged: Mutex::default(),
        }
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// This node's incarnation.
    pub fn own(&self) -> u64 {
        self.own
    }

    /// The incarnation to expect of `target`: the one the membership records, else one learned
    /// from its replies, else 0 (not checked).
    pub fn expected_of(&self, target: NodeId, recorded: u64) -> u64 {
        if recorded != 0 {
            return recorded;
        }
        self.learned
            .lock()
            .ok()
            .and_then(|l| l.get(&target).copied())
            .unwrap_or(0)
    }

    /// `target` replied as `incarnation`, which its membership entry does not record yet.
    pub fn learn(&self, target: NodeId, incarnation: u64) {
        if incarnation == 0 {
            return;
        }
        let Ok(mut learned) = self.learned.lock() else {
            return;
        };
        if learned.insert(target, incarnation) != Some(incarnation) {
            self.learned_signal.notify_one();
        }
    }

    /// The incarnations learned from replies so far.
    pub fn learned(&self) -> BTreeMap<NodeId, u64> {
        self.learned.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Completes when a new incarnation was learned.
    pub async fn learned_changed(&self) {
        self.learned_signal.notified().await
    }

    /// Why the cluster refuses this node, if it does.
    pub fn refused(&self) -> Option<String> {
        self.refused.lock().ok().and_then(|r| r.clone())
    }

    /// This node works as a member again (it took a leader's entries, or it leads): whatever
    /// refusal was seen before (e.g. a vote refused by a voter whose membership was behind) is
    /// over.
    pub fn accepted(&self) {
        if !self.is_refused.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut r) = self.refused.lock() {
            *r = None;
            self.is_refused.store(false, Ordering::Relaxed);
        }
    }

    /// Records that the cluster refuses this node, and logs it (at most every 10 s per kind).
    pub fn refuse_self(&self, kind: &'static str, by: NodeId, reason: &str) {
        if let Ok(mut r) = self.refused.lock() {
            *r = Some(reason.to_string());
            self.is_refused.store(true, Ordering::Relaxed);
        }
        if self.should_log(kind, by) {
            warn!(
                node = self.node,
                by, "the cluster refuses this node: {reason}"
            );
        }
    }

    /// Whether a message about `kind` and `node` is due (the first, then one every 10 s).
    pub fn should_log(&self, kind: &'static str, node: NodeId) -> bool {
        let Ok(mut logged) = self.logged.lock() else {
            return true;
        };
        let now = Instant::now();
        match logged.get(&(kind, node)) {
            Some(at) if now.duration_since(*at) < LOG_EVERY => false,
            _ => {
                logged.insert((kind, node), now);
                true
            }
        }
    }

    /// Checks an incoming request (see [`check`]); a refusal is logged here, noted if it is this
    /// node that was wiped, and returned as the status to answer with.
    pub fn admit(&self, request: &Incoming, sender: &SenderRecord) -> Result<(), Status> {
        let refusal = match check(self.own, request, sender) {
            Ok(()) => return Ok(()),
            Err(r) => r,
        };
        let me = self.node;
        let from = request.from;
        let message = match refusal {
            Refusal::ReceiverWiped { expected, actual } => {
                let reason = format!(
                    "this node's data was wiped: the cluster knows node {me} as incarnation {}, \
                     this data directory is incarnation {} (node {from} asked). A wiped node \
                     cannot rejoin under its old id: stop it, remove id {me} (`warren member \
                     remove {me}`) and join it under a new id (`warren member add`)",
                    show(expected),
                    show(actual)
                );
                self.refuse_self(refusal.kind(), from, &reason);
                format!(
                    "node {me} refuses Raft traffic: its data was wiped (it is incarnation {}, \
                     the membership records {}); remove id {me} and add the node under a new id",
                    show(actual),
                    show(expected)
                )
            }
            Refusal::SenderWiped { recorded, actual } => {
                if self.should_log(refusal.kind(), from) {
                    warn!(
                        node = me,
                        from,
                        recorded = %show(recorded),
                        actual = %show(actual),
                        "refusing Raft traffic from node {from}: its data was wiped; it must \
                         join under a new id (`warren member remove {from}`, then `warren member \
                         add` with a new id)"
                    );
                }
                format!(
                    "node {me} refuses node {from}: node {from}'s data was wiped (it is \
                     incarnation {}, the membership records {}). It cannot rejoin under id \
                     {from}: stop it, remove id {from} (`warren member remove {from}`) and join \
                     it under a new id (`warren member add`)",
                    show(actual),
                    show(recorded)
                )
            }
            Refusal::NotAVoter => {
                if self.should_log(refusal.kind(), from) {
                    warn!(
                        node = me,
                        from,
                        "refusing a vote request from node {from}: it is not a voter of this \
                         node's membership (removed from the cluster?)"
                    );
                }
                format!(
                    "node {me} refuses to vote for node {from}: node {from} is not a voter of \
                     the cluster (it was removed, or is not promoted yet)"
                )
            }
        };
        let mut metadata = MetadataMap::new();
        metadata.insert(
            REFUSED_KEY,
            refusal
                .kind()
                .parse()
                .map_err(|_| Status::internal("bad refusal metadata"))?,
        );
        Err(Status::with_metadata(
            Code::FailedPrecondition,
            message,
            metadata,
        ))
    }
}

/// The refusal kind a status carries, if it is a refusal.
pub fn refusal_kind(status: &Status) -> Option<&str> {
    if status.code() != Code::FailedPrecondition {
        return None;
    }
    status.metadata().get(REFUSED_KEY)?.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: u64 = 0xaaaa;

    fn member(incarnation: u64, voter: bool) -> SenderRecord {
        SenderRecord {
            membership_empty: false,
            incarnation: Some(incarnation),
            voter,
        }
    }

    fn request(from_incarnation: u64, to_incarnation: u64, vote: bool) -> Incoming {
        Incoming {
            from: 2,
            from_incarnation,
            to_incarnation,
            vote,
        }
    }

    #[test]
    fn a_request_for_this_incarnation_from_the_recorded_sender_is_taken() {
        assert_eq!(check(OWN, &request(7, OWN, true), &member(7, true)), Ok(()));
        assert_eq!(
            check(OWN, &request(7, OWN, false), &member(7, false)),
            Ok(())
        );
    }

    #[test]
    fn unknown_incarnations_are_not_checked() {
        // The sender does not know this node's incarnation yet; the membership does not record
        // the sender's yet; an old sender sends none.
        assert_eq!(check(OWN, &request(7, 0, false), &member(0, true)), Ok(()));
        assert_eq!(check(OWN, &request(0, 0, true), &member(9, true)), Ok(()));
        // ... but a vote is still only for a voter.
        assert_eq!(
            check(OWN, &request(0, 0, true), &member(9, false)),
            Err(Refusal::NotAVoter)
        );
    }

    #[test]
    fn a_request_for_an_earlier_incarnation_of_this_node_is_refused() {
        assert_eq!(
            check(OWN, &request(7, 0xbbbb, false), &member(7, true)),
            Err(Refusal::ReceiverWiped {
                expected: 0xbbbb,
                actual: OWN
            })
        );
    }

    #[test]
    fn a_wiped_sender_is_refused_even_as_a_candidate_with_a_higher_term() {
        assert_eq!(
            check(OWN, &request(8, OWN, true), &member(7, true)),
            Err(Refusal::SenderWiped {
                recorded: 7,
                actual: 8
            })
        );
    }

    #[test]
    fn only_voters_get_votes_once_this_node_has_a_membership() {
        assert_eq!(
            check(OWN, &request(7, OWN, true), &member(7, false)),
            Err(Refusal::NotAVoter)
        );
        let removed = SenderRecord {
            membership_empty: false,
            incarnation: None,
            voter: false,
        };
        assert_eq!(
            check(OWN, &request(7, 0, true), &removed),
            Err(Refusal::NotAVoter)
        );
        // A node waiting to be contacted knows no membership: the first leader needs its vote.
        let waiting = SenderRecord {
            membership_empty: true,
            incarnation: None,
            voter: false,
        };
        assert_eq!(check(OWN, &request(7, 0, true), &waiting), Ok(()));
    }

    #[test]
    fn a_refusal_is_a_failed_precondition_naming_its_kind() {
        let book = IncarnationBook::new(3, OWN);
        let status = book
            .admit(&request(7, 0xbbbb, false), &member(7, true))
            .unwrap_err();
        assert_eq!(refusal_kind(&status), Some("receiver-wiped"));
        assert!(status.message().contains("wiped"), "{}", status.message());
        assert!(book.refused().is_some_and(|r| r.contains("new id")));
        book.accepted();
        assert_eq!(book.refused(), None);
    }

    #[test]
    fn learned_incarnations_fill_in_what_the_membership_does_not_record() {
        let book = IncarnationBook::new(1, OWN);
        assert_eq!(book.expected_of(2, 0), 0);
        book.learn(2, 0x22);
        assert_eq!(book.expected_of(2, 0), 0x22);
        assert_eq!(book.expected_of(2, 0x23), 0x23, "the membership wins");
    }
}
