//! openraft's `RaftLogStorage` on RocksDB.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, RaftTypeConfig};
use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::compactor::Compactor;
use crate::db::{CF_LOGS, CF_META};
use crate::message_store::MessageStore;
use crate::recent::{Recent, RECENT_BYTES};
use crate::syncer::Syncer;
use crate::write_failure::WriteFailure;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_INCARNATION: &[u8] = b"incarnation";

/// The Raft log, vote and committed log id of one Raft group in RocksDB.
pub struct RocksLogStore<C: RaftTypeConfig> {
    db: Arc<DB>,
    syncer: Syncer<C>,
    compactor: Arc<Compactor>,
    failure: WriteFailure,
    /// Queued messages rest in the log: purges keep what its queues still name.
    messages: Option<MessageStore>,
    /// Entries below this index are deleted (by this process): a purge that would delete
    /// nothing more (a queued message holds the log back) costs no flush and no compaction.
    deleted_below: Arc<std::sync::atomic::AtomicU64>,
    /// The newest entries, decoded: openraft reads them back right after appending them.
    recent: Arc<Recent<EntryOf<C>>>,
}

impl<C: RaftTypeConfig> Clone for RocksLogStore<C> {
    fn clone(&self) -> Self {
        RocksLogStore {
            db: self.db.clone(),
            syncer: self.syncer.clone(),
            compactor: Arc::clone(&self.compactor),
            failure: self.failure.clone(),
            messages: self.messages.clone(),
            deleted_below: Arc::clone(&self.deleted_below),
            recent: Arc::clone(&self.recent),
        }
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> io::Result<u64> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| invalid("log key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(invalid)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(invalid)
}

impl<C> RocksLogStore<C>
where
    C: RaftTypeConfig,
    EntryOf<C>: Serialize + DeserializeOwned + Clone,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    /// A log store over an open database (see [`crate::open`]); starts the WAL sync thread.
    pub fn new(db: Arc<DB>) -> io::Result<RocksLogStore<C>> {
        for cf in [CF_LOGS, CF_META] {
            if db.cf_handle(cf).is_none() {
                return Err(other(format!("column family {cf} is missing")));
            }
        }
        let failure = WriteFailure::default();
        let syncer = Syncer::start(db.clone(), failure.clone())?;
        Ok(RocksLogStore {
            db,
            syncer,
            compactor: Arc::default(),
            failure,
            messages: None,
            deleted_below: Arc::default(),
            recent: Arc::new(Recent::new(RECENT_BYTES)),
        })
    }

    /// Purges keep the entries `messages` says queued messages rest in.
    pub fn with_messages(mut self, messages: MessageStore) -> RocksLogStore<C> {
        self.messages = Some(messages);
        self
    }

    fn cf(&self, name: &str) -> io::Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| other(format!("column family {name} is missing")))
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.db.get_cf(self.cf(CF_META)?, key).map_err(other)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Writes a metadata record; with `sync`, the WAL is fsynced before this returns.
    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T, sync: bool) -> io::Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, key, encode(value)?);
        self.failure.check()?;
        self.failure
            .guard("metadata write", self.db.write_opt(batch, &opts))
    }

    /// This store's incarnation: the id it was given the first time this was called (`fresh()`,
    /// written with a synced write before it is returned), the same id on every later call. A
    /// store that is wiped loses it with the log and the vote, so the node comes back as a new
    /// incarnation and its peers can tell (see `warren_raft::incarnation`).
    pub fn incarnation(&self, fresh: impl FnOnce() -> u64) -> io::Result<u64> {
        if let Some(known) = self.get_meta::<u64>(KEY_INCARNATION)? {
            return Ok(known);
        }
        let id = fresh();
        self.put_meta(KEY_INCARNATION, &id, true)?;
        Ok(id)
    }

    fn last_entry(&self) -> io::Result<Option<EntryOf<C>>> {
        match self
            .db
            .iterator_cf(self.cf(CF_LOGS)?, IteratorMode::End)
            .next()
        {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(other)?;
                decode(&value).map(Some)
            }
        }
    }
}

impl<C> RaftLogReader<C> for RocksLogStore<C>
where
    C: RaftTypeConfig,
    EntryOf<C>: Serialize + DeserializeOwned + Clone,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if let Some(entries) = self.recent.read(start, end) {
            return Ok(entries);
        }
        let key = index_key(start);
        let mut entries = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_LOGS)?,
            IteratorMode::From(&key, Direction::Forward),
        ) {
            let (key, value) = item.map_err(other)?;
            let index = key_index(&key)?;
            if !range.contains(&index) {
                break;
            }
            let entry: EntryOf<C> = decode(&value)?;
            if entry.index() != index {
                return Err(invalid(format!(
                    "log key {index} holds entry {}",
                    entry.index()
                )));
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl<C> RaftLogStorage<C> for RocksLogStore<C>
where
    C: RaftTypeConfig,
    EntryOf<C>: Serialize + DeserializeOwned + Clone,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_purged_log_id: Option<LogIdOf<C>> = self.get_meta(KEY_LAST_PURGED)?;
        // Entries at or below the purge point that stay for queued messages (see `purge`) are
        // not the log's any more: a node that installed a snapshot and stopped before appending
        // after it has only those, and its log ends at the purge point.
        let last_log_id = match (self.last_entry()?, &last_purged_log_id) {
            (Some(entry), Some(purged)) if entry.index() <= purged.index() => Some(purged.clone()),
            (Some(entry), _) => Some(entry.log_id()),
            (None, purged) => purged.clone(),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    /// The vote is fsynced before this returns: a node must never grant a vote it could forget.
    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let store = self.clone();
        let vote = vote.clone();
        tokio::task::spawn_blocking(move || store.put_meta(KEY_VOTE, &vote, true))
            .await
            .map_err(other)?
    }

    /// Written without fsync: losing it only makes a restart re-apply from the snapshot.
    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        tracing::trace!(target: "warren_latency", "save committed");
        self.put_meta(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self
            .get_meta::<Option<LogIdOf<C>>>(KEY_COMMITTED)?
            .flatten())
    }

    /// All entries go in one WriteBatch, readable when this returns; `callback` fires after the
    /// WAL fsync that covers them (shared with other appends that arrived meanwhile).
    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + OptionalSend,
    {
        let cf = self.cf(CF_LOGS)?;
        let mut batch = WriteBatch::default();
        let mut appended = Vec::new();
        for entry in entries {
            let encoded = encode(&entry)?;
            batch.put_cf(cf, index_key(entry.index()), &encoded);
            appended.push((entry.index(), encoded.len(), entry));
        }
        self.failure.check()?;
        tracing::trace!(target: "warren_latency", first = appended.first().map(|a| a.0), last = appended.last().map(|a| a.0), "log append");
        self.failure.guard("append", self.db.write(batch))?;
        tracing::trace!(target: "warren_latency", "log appended");
        if let (Some(first), Some(last)) = (appended.first(), appended.last()) {
            crate::commit_latency::appended(first.0, last.0);
        }
        // Readable from here too before this returns (see `crate::recent`).
        self.recent.appended(appended);
        self.syncer.after_next_sync(callback)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index() + 1).unwrap_or(0);
        self.recent.truncated(from);
        self.failure.check()?;
        let cf = self.cf(CF_LOGS)?;
        self.failure.guard(
            "truncate",
            self.db
                .delete_range_cf(cf, index_key(from), index_key(u64::MAX)),
        )?;
        // The last index itself is outside delete_range's half-open range.
        self.failure
            .guard("truncate", self.db.delete_cf(cf, index_key(u64::MAX)))
    }

    /// Records the purge point first: entries at or below it are ignored even if the range delete
    /// that follows is lost in a crash.
    ///
    /// A range delete only writes a tombstone; the space comes back when the memtable is flushed
    /// (so old WAL files can go) and the purged range is dropped from the SST files, which a
    /// background thread does after each purge (see `crate::compactor`; purges follow
    /// snapshots, so they are rare).
    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.put_meta(KEY_LAST_PURGED, &log_id, true)?;
        self.recent.purged(log_id.index());
        // Entries below the purge point that queued messages rest in stay (openraft never
        // reads below it; the message store does).
        let end = match &self.messages {
            Some(m) => m.purge_end(log_id.index()),
            None => log_id.index() + 1,
        };
        if end <= self.deleted_below.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        self.deleted_below
            .store(end, std::sync::atomic::Ordering::SeqCst);
        self.failure.guard(
            "purge",
            self.db
                .delete_range_cf(self.cf(CF_LOGS)?, index_key(0), index_key(end)),
        )?;
        // `end` is above `deleted_below`, so at least 1.
        self.compactor
            .reclaim(Arc::clone(&self.db), end.saturating_sub(1));
        Ok(())
    }
}
