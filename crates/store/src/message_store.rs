//! Where the messages of replicated queues rest: in the Raft log itself (RabbitMQ's
//! `rabbit_fifo` design; see docs/architecture.md, "Where a message rests"). A queue keeps the
//! log index of each message's publish; the log below the oldest such index must not be purged,
//! and a node that caught up through a snapshot (its log never held those entries) gets them
//! shipped with the snapshot and keeps them in the `bodies` column family, keyed by
//! (Raft group, log index).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::{ColumnFamily, WriteBatch, WriteOptions, DB};

use crate::db::{CF_BODIES, CF_LOGS};

/// The log entries that hold queued messages, on one node (cheap to clone).
#[derive(Clone)]
pub struct MessageStore {
    db: Arc<DB>,
    /// The log must keep every entry at or above this index (0 until the first snapshot says
    /// which entries its queues name: until then nothing is purged).
    keep_from: Arc<AtomicU64>,
}

impl std::fmt::Debug for MessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStore")
            .field("keep_from", &self.keep_from.load(Ordering::Relaxed))
            .finish()
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn body_key(group: u64, index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&group.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

impl MessageStore {
    /// The message store of the database `db` (see [`crate::open`]).
    pub fn new(db: Arc<DB>) -> MessageStore {
        MessageStore {
            db,
            keep_from: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The database this store reads (the Raft log store opens over the same one).
    pub fn db(&self) -> Arc<DB> {
        Arc::clone(&self.db)
    }

    fn cf(&self, name: &str) -> io::Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| other(format!("column family {name} is missing")))
    }

    /// From now on the log keeps every entry at or above `index` (the oldest message a
    /// snapshot's queues still name), whatever openraft purges.
    pub fn keep_from(&self, index: u64) {
        self.keep_from.store(index, Ordering::SeqCst);
    }

    /// The end (exclusive) of what a purge up to `upto` (inclusive) may delete.
    pub(crate) fn purge_end(&self, upto: u64) -> u64 {
        upto.saturating_add(1)
            .min(self.keep_from.load(Ordering::SeqCst))
    }

    /// The raw (encoded) log entry `index` of `group`: shipped with a snapshot, or still in
    /// this node's log.
    pub fn entry(&self, group: u64, index: u64) -> io::Result<Option<Vec<u8>>> {
        if let Some(shipped) = self
            .db
            .get_cf(self.cf(CF_BODIES)?, body_key(group, index))
            .map_err(other)?
        {
            return Ok(Some(shipped));
        }
        self.db
            .get_cf(self.cf(CF_LOGS)?, index.to_be_bytes())
            .map_err(other)
    }

    /// Keeps `entries` (index, raw log entry) of `group` that came with a snapshot; synced to
    /// disk before this returns.
    pub fn put_shipped<'a>(
        &self,
        group: u64,
        entries: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> io::Result<()> {
        let cf = self.cf(CF_BODIES)?;
        let mut batch = WriteBatch::default();
        for (index, raw) in entries {
            batch.put_cf(cf, body_key(group, index), raw);
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts).map_err(other)
    }

    /// Forgets the shipped entries of `group` below `index` (no queue names them any more).
    pub fn forget_shipped_below(&self, group: u64, index: u64) -> io::Result<()> {
        self.db
            .delete_range_cf(
                self.cf(CF_BODIES)?,
                body_key(group, 0),
                body_key(group, index),
            )
            .map_err(other)
    }
}
