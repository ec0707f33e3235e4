//! Acks share log entries: the broker task holds this node's broker's `Op::Settle` proposals
//! (acks, no-ack deliveries) for up to [`SETTLE_WAIT`] and proposes one `Settle` per queue for
//! all of them.
//!
//! Why: every log entry is appended and fsynced on each node, and an fsync rewrites the WAL's
//! last page (4 KiB) whatever the entry's size. A consumer acking one message at a time made one
//! entry, and about one fsync, per ack on every node: with a 50 000-message backlog drained by a
//! pika consumer, the acks cost each node ~400–500 bytes written per message, about a third of
//! all it wrote (`tests/python/bytes_on_disk.py`, 2026-12-07). Nothing waits for a settle — the
//! consumer's credit is freed when its ack arrives, and no client is told when the entry commits
//! — so holding it a few milliseconds costs no client anything; a node that dies meanwhile loses
//! the acks, and those messages are delivered again, as after any failover (at least once).
//!
//! Order is kept: any other proposal first sends what is held, so a settle is never logged after
//! a command the broker made later (a purge, a queue's removal).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use warren_core::{Command, Op};

/// How long an ack's settle may wait for others.
pub(crate) const SETTLE_WAIT: Duration = Duration::from_millis(5);

/// Held settles beyond this many message numbers are proposed at once.
const MAX_HELD: usize = 4096;

/// Settle proposals held to be merged (sans-io: the caller passes the time).
#[derive(Debug, Default)]
pub(crate) struct Settles {
    /// Per queue, the message numbers held, in the order they came.
    held: BTreeMap<u64, Vec<u64>>,
    /// The state machine version and time of the newest held proposal.
    newest: Option<(u32, u64)>,
    count: usize,
    /// When what is held must go.
    due: Option<Instant>,
}

impl Settles {
    /// Takes `command` if it is a settle that may wait (no origin: a broker's own); gives it
    /// back otherwise.
    pub(crate) fn hold(&mut self, command: Command, now: Instant) -> Option<Command> {
        let Command {
            version,
            origin: None,
            issued_at,
            op: Op::Settle { queue, seqs },
            ..
        } = command
        else {
            return Some(command);
        };
        self.count += seqs.len();
        self.held.entry(queue).or_default().extend(seqs);
        self.newest = Some((version, issued_at));
        self.due.get_or_insert(now + SETTLE_WAIT);
        None
    }

    /// When [`Settles::take`] must be called next (`None`: nothing is held).
    pub(crate) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// What is held is due at `now`, or too large to wait.
    pub(crate) fn ready(&self, now: Instant) -> bool {
        self.count >= MAX_HELD || self.due.is_some_and(|due| now >= due)
    }

    /// Everything held, as one `Settle` per queue (in queue order).
    pub(crate) fn take(&mut self) -> Vec<Command> {
        let Some((version, issued_at)) = self.newest.take() else {
            return Vec::new();
        };
        self.count = 0;
        self.due = None;
        std::mem::take(&mut self.held)
            .into_iter()
            .map(|(queue, seqs)| Command {
                version,
                origin: None,
                number: None,
                issued_at,
                op: Op::Settle { queue, seqs },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_core::Origin;

    fn settle(queue: u64, seqs: &[u64], at: u64) -> Command {
        Command {
            version: 10,
            origin: None,
            number: None,
            issued_at: at,
            op: Op::Settle {
                queue,
                seqs: seqs.to_vec(),
            },
        }
    }

    #[test]
    fn settles_wait_together_and_go_as_one_entry_per_queue() {
        let mut s = Settles::default();
        let t0 = Instant::now();
        assert_eq!(s.due(), None, "nothing held");
        assert_eq!(s.hold(settle(2, &[5], 100), t0), None);
        assert_eq!(
            s.due(),
            Some(t0 + SETTLE_WAIT),
            "due a wait after the first"
        );
        assert_eq!(s.hold(settle(1, &[9], 101), t0 + SETTLE_WAIT / 2), None);
        assert_eq!(s.hold(settle(2, &[6, 7], 102), t0 + SETTLE_WAIT / 2), None);
        assert_eq!(
            s.due(),
            Some(t0 + SETTLE_WAIT),
            "later settles do not push the first one back"
        );
        assert!(!s.ready(t0 + SETTLE_WAIT / 2));
        assert!(s.ready(t0 + SETTLE_WAIT));
        assert_eq!(
            s.take(),
            vec![settle(1, &[9], 102), settle(2, &[5, 6, 7], 102)],
            "one settle per queue, numbers in the order they came, the newest time"
        );
        assert_eq!(s.due(), None);
        assert_eq!(s.take(), vec![], "nothing left");
    }

    #[test]
    fn other_commands_and_settles_with_an_origin_are_given_back() {
        let mut s = Settles::default();
        let now = Instant::now();
        let purge = Command {
            version: 10,
            origin: None,
            number: None,
            issued_at: 1,
            op: Op::RemoveQueue { queue: 3 },
        };
        assert_eq!(s.hold(purge.clone(), now), Some(purge));
        let mut from_channel = settle(1, &[1], 1);
        from_channel.origin = Some(Origin {
            conn: 7,
            channel: 1,
        });
        assert_eq!(s.hold(from_channel.clone(), now), Some(from_channel));
        assert_eq!(s.due(), None, "nothing held");
    }

    #[test]
    fn a_large_batch_is_ready_before_its_time() {
        let mut s = Settles::default();
        let now = Instant::now();
        let seqs: Vec<u64> = (1..=MAX_HELD as u64).collect();
        s.hold(settle(1, &seqs[..MAX_HELD - 1], 1), now);
        assert!(!s.ready(now));
        s.hold(settle(1, &seqs[MAX_HELD - 1..], 1), now);
        assert!(s.ready(now), "{MAX_HELD} numbers held");
        assert_eq!(s.take(), vec![settle(1, &seqs, 1)]);
    }
}
