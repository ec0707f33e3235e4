//! The Raft state machine of a Warren node. The broker itself lives in the task that owns the
//! broker core; this adapter hands it committed commands in log order and in batches (`apply`
//! returns only once the broker has applied them), asks it for a [`Snapshot`] of its replicated
//! state when openraft wants one, and gives it a snapshot to restore from (at start-up, or when a
//! lagging follower is sent one by the leader).
//!
//! Snapshots are files: `<dir>/current` holds the last one (openraft's meta, then the encoded
//! broker state), written to a temporary file, fsynced and renamed, so a crash leaves either the
//! old or the new one whole. Once a snapshot is written openraft may purge the log up to it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{info, warn};
use warren_core::{Command, Snapshot, SnapshotError};
use warren_store::MessageStore;

use crate::{decode_snapshot, encode_snapshot, shipping, LogCommand, TypeConfig, METADATA_GROUP};

/// Committed commands for the broker, and how to say they were applied.
#[derive(Debug)]
pub struct AppliedBatch {
    /// The commands with the log index of the entry each came in.
    pub commands: Vec<(u64, Command)>,
    /// The log index of the batch's last entry (commands or not): once the batch is applied,
    /// the broker has applied the log up to here.
    pub index: u64,
    pub done: oneshot::Sender<()>,
}

/// What the state machine asks of the task that owns the broker.
#[derive(Debug)]
pub enum BrokerRequest {
    /// Apply these committed commands, in order.
    Apply(AppliedBatch),
    /// Answer with the replicated state as it is now (after everything applied so far).
    TakeSnapshot { reply: oneshot::Sender<Snapshot> },
    /// Answer with how many messages the replicated queues hold (snapshots are spaced by it).
    Backlog { reply: oneshot::Sender<u64> },
    /// Replace the replicated state with this one (boxed: a snapshot is much larger than the
    /// other requests).
    Restore {
        snapshot: Box<Snapshot>,
        /// The log index the snapshot covers.
        index: u64,
        reply: oneshot::Sender<Result<(), SnapshotError>>,
    },
}

#[derive(Default)]
struct Applied {
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    /// The log index of the last snapshot built or installed.
    snapshot_at: u64,
    /// The log index at which the schedule last asked the broker for its backlog.
    checked_at: u64,
    /// A snapshot was asked for at this log index and has not been built yet (asked again
    /// after another spacing, should openraft have dropped the request).
    requested: Option<u64>,
    /// The replicated backlog when the schedule last asked for a snapshot: the messages whose
    /// log entries that snapshot keeps from being purged (see [`drained_since`]).
    backlog_at_snapshot: u64,
}

/// Log entries between two snapshots at most, whatever the backlog: a restart replays up to
/// this many entries after the last snapshot.
const MOST_BETWEEN_SNAPSHOTS: u64 = 1_000_000;

/// Whether a snapshot is due `since` log entries after the last one, with `backlog` messages
/// queued in replicated queues and `every` the configured spacing. A snapshot writes an index
/// entry per queued message (about 5 bytes), so with a backlog they are spaced in proportion to
/// it (every 16 queued messages, one more entry between snapshots): writing snapshots costs a
/// bounded share of the fill however deep the backlog grows, instead of growing with its
/// square. Capped at [`MOST_BETWEEN_SNAPSHOTS`] so that a restart replays a bounded log.
pub fn snapshot_due(since: u64, backlog: u64, every: u64) -> bool {
    since >= every.max((backlog / 16).min(MOST_BETWEEN_SNAPSHOTS))
}

/// Whether a snapshot is due early, `since` log entries after the last one, because the
/// backlog that one kept in the log (`at_snapshot` messages) has drained to `backlog`: the
/// log entries of the messages consumed since can then be purged. Without this a drained queue
/// held its log on disk until `every` more entries came, and its consumers' acks, which share
/// log entries (`warren_server`'s settles), make few. Asked for once a sixteenth of the spacing
/// has passed, when the last snapshot kept at least a quarter of the spacing in messages and
/// three quarters of them are gone: a cheap snapshot (it names what is left) that gives most of
/// the log back. A backlog that stays below a quarter of the spacing (a queue with consumers
/// keeping up) never asks for one: snapshots every few thousand entries cost more than the log
/// they free.
pub fn drained_since(since: u64, backlog: u64, at_snapshot: u64, every: u64) -> bool {
    since >= (every / 16).max(1)
        && at_snapshot >= drain_floor(every)
        && backlog.saturating_mul(4) <= at_snapshot
}

/// The backlog a snapshot must have kept for its drain to be watched ([`drained_since`]).
fn drain_floor(every: u64) -> u64 {
    (every / 4).max(1)
}

/// Forwards committed commands to the broker task and keeps its snapshots.
#[derive(Clone)]
pub struct BrokerStateMachine {
    to_broker: mpsc::Sender<BrokerRequest>,
    applied: Arc<Mutex<Applied>>,
    snapshots: Arc<SnapshotFiles>,
    /// Where queued messages rest (the log); `None` keeps every message in the snapshots.
    messages: Option<MessageStore>,
    /// Spacing of snapshots ([`snapshot_due`]), and where to say one is due; without it
    /// openraft's own policy decides.
    schedule: Option<(u64, Arc<Notify>)>,
}

impl BrokerStateMachine {
    /// Queued messages rest in the log of `messages`: snapshots keep the entries they name from
    /// being purged, and a snapshot installed from another node brings those entries with it.
    pub fn with_messages(mut self, messages: MessageStore) -> BrokerStateMachine {
        self.messages = Some(messages);
        self
    }

    /// A state machine that hands committed commands to `to_broker` and keeps its snapshots in
    /// `snapshot_dir` (created if missing).
    pub fn new(
        to_broker: mpsc::Sender<BrokerRequest>,
        snapshot_dir: &Path,
    ) -> io::Result<BrokerStateMachine> {
        std::fs::create_dir_all(snapshot_dir)?;
        Ok(BrokerStateMachine {
            to_broker,
            applied: Arc::default(),
            snapshots: Arc::new(SnapshotFiles {
                dir: snapshot_dir.to_owned(),
            }),
            messages: None,
            schedule: None,
        })
    }

    /// The state machine says when a snapshot is due ([`snapshot_due`], at least `every` log
    /// entries apart); the caller builds one when the returned notification fires (openraft's
    /// policy must then be `Never`).
    pub fn with_snapshot_schedule(mut self, every: u64) -> (BrokerStateMachine, Arc<Notify>) {
        let due = Arc::new(Notify::new());
        self.schedule = Some((every.max(1), Arc::clone(&due)));
        (self, due)
    }

    /// After applying up to `index`: asks for a snapshot if one is due. The broker is asked for
    /// its backlog only every quarter of the spacing.
    async fn schedule_snapshot(&self, index: u64) -> io::Result<()> {
        let Some((every, due)) = &self.schedule else {
            return Ok(());
        };
        let step = (every / 16).max(1);
        let (since, at_snapshot) = {
            let mut a = self.lock()?;
            let since = index.saturating_sub(a.snapshot_at);
            let waiting = a
                .requested
                .is_some_and(|at| index.saturating_sub(at) < *every);
            // Spaced: a full spacing since the last snapshot, checked every quarter of it; or
            // a drain of what the last one kept, checked every 256th of it (a drain makes few
            // entries: its acks share them).
            let spaced = since >= *every && index.saturating_sub(a.checked_at) >= every / 4;
            let drain = a.backlog_at_snapshot >= drain_floor(*every)
                && since >= step
                && index.saturating_sub(a.checked_at) >= (step / 16).max(1);
            if waiting || !(spaced || drain) {
                return Ok(());
            }
            a.checked_at = index;
            (since, a.backlog_at_snapshot)
        };
        let backlog = self.ask(|reply| BrokerRequest::Backlog { reply }).await?;
        if snapshot_due(since, backlog, *every)
            || drained_since(since, backlog, at_snapshot, *every)
        {
            let mut a = self.lock()?;
            a.requested = Some(index);
            a.backlog_at_snapshot = backlog;
            due.notify_one();
        }
        Ok(())
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, Applied>> {
        self.applied
            .lock()
            .map_err(|_| io::Error::other("state machine lock poisoned"))
    }

    /// A digest of the replicated state applied so far, with the index applied when it was
    /// taken: FNV-1a (64 bits) of the encoded snapshot, leaving out what only the leader's
    /// broker tracks (redelivered flags, whether a queue had consumers, when it was last used).
    /// Two nodes that applied the same log to the same index give the same digest. Meant for
    /// checkers once traffic has stopped: an apply racing the request may make the index stale.
    pub async fn state_digest(&self) -> io::Result<(Option<u64>, String)> {
        let index = self.lock()?.last_applied.as_ref().map(|l| l.index);
        let mut snapshot = self
            .ask(|reply| BrokerRequest::TakeSnapshot { reply })
            .await?;
        for q in &mut snapshot.queues {
            q.had_consumer = false;
            q.last_used = 0;
            let entries = q.entries.iter().flatten().map(|mut e| {
                e.redelivered = false;
                e
            });
            q.entries = warren_core::PackedEntries::from_entries(entries.collect::<Vec<_>>());
        }
        let bytes = encode_snapshot(&snapshot);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Ok((index, format!("{hash:016x}")))
    }

    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> BrokerRequest,
    ) -> io::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.to_broker
            .send(request(tx))
            .await
            .map_err(|_| io::Error::other("the broker task has stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the broker task stopped before answering"))
    }
}

/// A consistent view of the broker taken between two applies, turned into a snapshot file.
pub struct SnapshotBuilder {
    view: io::Result<(
        Snapshot,
        Option<LogIdOf<TypeConfig>>,
        StoredMembershipOf<TypeConfig>,
    )>,
    snapshots: Arc<SnapshotFiles>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        // Taken, not cloned: a builder builds once, and with a backlog the view holds an entry
        // per queued message.
        let taken = std::mem::replace(
            &mut self.view,
            Err(io::Error::other("this snapshot was already built")),
        );
        let (snapshot, last_log_id, last_membership) = taken?;
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id,
            last_membership,
        };
        let files = Arc::clone(&self.snapshots);
        let meta2 = meta.clone();
        let data = tokio::task::spawn_blocking(move || {
            let data = encode_snapshot(&snapshot);
            files.save(&meta2, &data)?;
            Ok::<_, io::Error>(data)
        })
        .await
        .map_err(io::Error::other)??;
        info!(
            last_log_id = ?meta.last_log_id,
            bytes = data.len(),
            "snapshot written"
        );
        Ok(SnapshotOf::<TypeConfig, Vec<u8>> {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for BrokerStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    /// The broker lives in memory: after a restart nothing is applied yet; openraft restores the
    /// last snapshot (`install_snapshot`) and replays the log after it.
    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let a = self.lock()?;
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        tracing::trace!(target: "warren_latency", "state machine apply");
        let mut commands = Vec::new();
        let mut responders = Vec::new();
        let mut last = None;
        let mut membership = None;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            last = Some(log_id);
            match entry.payload {
                EntryPayload::Normal(LogCommand(command)) => commands.push((log_id.index, command)),
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembershipOf::<TypeConfig>::new(Some(log_id), m))
                }
                EntryPayload::Blank => {}
            }
            if let Some(r) = responder {
                responders.push(r);
            }
        }
        if let Some(index) = last.map(|l| l.index) {
            // Also without commands (membership, blank entries): the broker keeps count of the
            // log index it has applied (clients wait for it: see `docs/architecture.md`).
            let (done, applied) = oneshot::channel();
            self.to_broker
                .send(BrokerRequest::Apply(AppliedBatch {
                    commands,
                    index,
                    done,
                }))
                .await
                .map_err(|_| io::Error::other("the broker task has stopped"))?;
            applied
                .await
                .map_err(|_| io::Error::other("the broker task stopped while applying"))?;
            warren_store::note_applied(index);
        }
        {
            let mut a = self.lock()?;
            if last.is_some() {
                a.last_applied = last;
            }
            if let Some(m) = membership {
                a.membership = m;
            }
        }
        for r in responders {
            r.send(());
        }
        if let Some(index) = last.map(|l| l.index) {
            self.schedule_snapshot(index).await?;
        }
        Ok(())
    }

    /// Runs between two applies: the broker's snapshot is taken now, encoded and written later.
    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let position = self.lock().map(|mut a| {
            a.snapshot_at = a.last_applied.map_or(0, |l| l.index);
            a.requested = None;
            (a.last_applied, a.membership.clone())
        });
        let view = match position {
            Ok((last, membership)) => self
                .ask(|reply| BrokerRequest::TakeSnapshot { reply })
                .await
                .map(|s| (s, last, membership)),
            Err(e) => Err(e),
        };
        // The log keeps the entries this snapshot's queues name (the oldest on): openraft
        // purges up to the snapshot once it is built. Entries shipped to this node with an
        // earlier snapshot that no queue names any more go.
        if let (Some(store), Ok((snapshot, last, _))) = (&self.messages, &view) {
            let keep_from = shipping::oldest_named_entry(snapshot)
                .unwrap_or_else(|| last.as_ref().map_or(0, |l| l.index) + 1);
            store.keep_from(keep_from);
            if let Err(e) = store.forget_shipped_below(METADATA_GROUP, keep_from) {
                warn!(error = %e, "could not forget shipped log entries");
            }
        }
        SnapshotBuilder {
            view,
            snapshots: Arc::clone(&self.snapshots),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        data: Vec<u8>,
    ) -> Result<(), io::Error> {
        // The decoded bodies share this buffer; the file is written from it too (no copy).
        // From another node, the log entries its queues name come with it: kept (synced)
        // before the state refers to them.
        let (data, shipped) = shipping::unship(Bytes::from(data))?;
        if !shipped.is_empty() {
            let store = self.messages.clone().ok_or_else(|| {
                io::Error::other("a snapshot with log entries, and no message store to keep them")
            })?;
            let count = shipped.len();
            tokio::task::spawn_blocking(move || {
                store.put_shipped(
                    METADATA_GROUP,
                    shipped.iter().map(|(i, raw)| (*i, raw.as_ref())),
                )
            })
            .await
            .map_err(io::Error::other)??;
            info!(entries = count, "kept the log entries the snapshot names");
        }
        let snapshot = decode_snapshot(data.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        self.ask(|reply| BrokerRequest::Restore {
            snapshot: Box::new(snapshot),
            index,
            reply,
        })
        .await?
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let files = Arc::clone(&self.snapshots);
        let meta2 = meta.clone();
        tokio::task::spawn_blocking(move || match files.load()? {
            Some((saved, _)) if saved == meta2 => Ok(()),
            _ => files.save(&meta2, &data),
        })
        .await
        .map_err(io::Error::other)??;
        let mut a = self.lock()?;
        a.last_applied = meta.last_log_id;
        a.snapshot_at = index;
        a.membership = meta.last_membership.clone();
        info!(last_log_id = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        let files = Arc::clone(&self.snapshots);
        let loaded = tokio::task::spawn_blocking(move || files.load())
            .await
            .map_err(io::Error::other)??;
        Ok(loaded.map(|(meta, snapshot)| SnapshotOf::<TypeConfig, Vec<u8>> { meta, snapshot }))
    }
}

/// The snapshot file of one node.
struct SnapshotFiles {
    dir: PathBuf,
}

const FILE_MAGIC: &[u8; 4] = b"WRSF";

impl SnapshotFiles {
    fn current(&self) -> PathBuf {
        self.dir.join("current")
    }

    /// Writes `meta` and `data` as the current snapshot: temporary file, fsync, rename, fsync of
    /// the directory.
    fn save(&self, meta: &SnapshotMetaOf<TypeConfig>, data: &[u8]) -> io::Result<()> {
        let meta_bytes = postcard::to_allocvec(meta).map_err(io::Error::other)?;
        let tmp = self.dir.join("current.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(FILE_MAGIC)?;
            f.write_all(&(meta_bytes.len() as u32).to_be_bytes())?;
            f.write_all(&meta_bytes)?;
            f.write_all(data)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.current())?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    fn load(&self) -> io::Result<Option<(SnapshotMetaOf<TypeConfig>, Vec<u8>)>> {
        let bytes = match std::fs::read(self.current()) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |what: &str| {
            io::Error::new(io::ErrorKind::InvalidData, format!("snapshot file: {what}"))
        };
        if bytes.len() < 8 || &bytes[..4] != FILE_MAGIC {
            return Err(bad("not a Warren snapshot file"));
        }
        let n = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        let meta_end = 8usize
            .checked_add(n)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| bad("truncated meta"))?;
        let meta = postcard::from_bytes(&bytes[8..meta_end]).map_err(|_| bad("bad meta"))?;
        Ok(Some((meta, bytes[meta_end..].to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_spaced_by_the_backlog_within_bounds() {
        // No backlog: every `every` entries.
        assert!(!snapshot_due(19_999, 0, 20_000));
        assert!(snapshot_due(20_000, 0, 20_000));
        // A million queued: every 62 500 entries.
        assert!(!snapshot_due(62_499, 1_000_000, 20_000));
        assert!(snapshot_due(62_500, 1_000_000, 20_000));
        // Ten million: capped, so that a restart replays a bounded log.
        assert!(!snapshot_due(
            MOST_BETWEEN_SNAPSHOTS - 1,
            100_000_000,
            20_000
        ));
        assert!(snapshot_due(MOST_BETWEEN_SNAPSHOTS, 100_000_000, 20_000));
        // Early, once three quarters of what the last snapshot kept are consumed ...
        assert!(drained_since(1_250, 10_000, 40_000, 20_000));
        assert!(drained_since(1_250, 0, 40_000, 20_000));
        assert!(drained_since(1_250, 1_250, 5_000, 20_000));
        assert!(!drained_since(1_250, 10_001, 40_000, 20_000));
        // ... after a sixteenth of the spacing, and not for a last snapshot that kept less
        // than a quarter of the spacing (consumers keeping up with a small backlog).
        assert!(!drained_since(1_249, 0, 40_000, 20_000));
        assert!(!drained_since(10_000, 0, 4_999, 20_000));
        // A configured spacing above the cap wins.
        assert!(!snapshot_due(2_000_000, 100_000_000, 3_000_000));
    }
}
