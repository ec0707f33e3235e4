//! The leader's lease: whether what this node decides as the leader may still reach a client.
//!
//! A leader that was paused (SIGSTOP, a stalled VM) or cut off believes it still leads until it
//! hears otherwise, and meanwhile the others may have elected a new leader that hands out the
//! same messages again. What the old leader decides when it wakes up (an ack frees a consumer's
//! prefetch window, a publish committed just before the pause is applied) must not reach a
//! client: it would hand out, marked as never delivered, a message the new leader may already
//! have given to someone else.
//!
//! openraft's followers refuse to vote for another candidate for `leader_lease` (its
//! `election_timeout_max`) after they last heard from the leader. So while a quorum has
//! acknowledged a message this leader sent less than that long ago, no other leader can exist.
//! [`LEASE`] keeps a margin below it for the time between the check and the socket write.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::type_config::alias::WatchReceiverOf;
use openraft::{Instant as _, Raft, RaftMetrics, ServerState};

use crate::state_machine::BrokerStateMachine;
use crate::TypeConfig;

/// How long after the sending of the last message a quorum acknowledged this leader may act on
/// its own. openraft's leader lease is `election_timeout_max` (600 ms, see `node::start`).
pub const LEASE: Duration = Duration::from_millis(500);

/// A view of this node's Raft metrics that answers [`Lease::holds`].
#[derive(Clone)]
pub struct Lease {
    metrics: WatchReceiverOf<TypeConfig, RaftMetrics<TypeConfig>>,
}

impl Lease {
    pub fn new(raft: &Raft<TypeConfig, BrokerStateMachine>) -> Lease {
        Lease {
            metrics: raft.metrics(),
        }
    }

    /// Whether this node leads and no other leader can have been elected since.
    pub fn holds(&self) -> bool {
        let m = self.metrics.borrow_watched();
        let quorum_age = m.last_quorum_acked.as_ref().map(|at| at.elapsed());
        holds(
            m.state == ServerState::Leader && m.current_leader == Some(m.id),
            only_voter(&m),
            quorum_age,
        )
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("holds", &self.holds())
            .finish()
    }
}

/// Whether this node is the only voter (it needs nobody's acknowledgement).
pub fn only_voter(m: &RaftMetrics<TypeConfig>) -> bool {
    let mut voters = m.membership_config.membership().voter_ids();
    voters.next() == Some(m.id) && voters.next().is_none()
}

/// The lease rule: a leader that is the only voter always holds it; any other leader holds it
/// while a quorum acknowledged it less than [`LEASE`] ago.
fn holds(leads: bool, only_voter: bool, quorum_age: Option<Duration>) -> bool {
    leads && (only_voter || quorum_age.is_some_and(|age| age < LEASE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_holds_the_lease_only_while_a_quorum_acknowledged_it_recently() {
        let recent = Some(Duration::from_millis(120));
        let stale = Some(Duration::from_millis(2200));
        assert!(holds(true, false, recent));
        assert!(!holds(true, false, stale), "paused past the lease");
        assert!(!holds(true, false, None), "never acknowledged");
        assert!(!holds(false, false, recent), "not the leader");
        assert!(holds(true, true, None), "the only voter needs nobody");
        assert!(!holds(false, true, None));
        assert!(!holds(true, false, Some(LEASE)));
    }
}
