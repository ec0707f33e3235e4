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

    /// Raw entries of `group` from `index` on, in index order, up to `max` of them or about
    /// `max_bytes`: the shipped ones if entry `index` was shipped, else this node's log (for
    /// reading ahead of a consumer: one seek instead of one per message).
    pub fn entries_from(
        &self,
        group: u64,
        index: u64,
        max: usize,
        max_bytes: usize,
    ) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let bodies = self.cf(CF_BODIES)?;
        let shipped = self
            .db
            .get_pinned_cf(bodies, body_key(group, index))
            .map_err(other)?
            .is_some();
        let (cf, start) = if shipped {
            (bodies, body_key(group, index).to_vec())
        } else {
            (self.cf(CF_LOGS)?, index.to_be_bytes().to_vec())
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        let iter = self.db.iterator_cf(
            cf,
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(other)?;
            let at = if shipped {
                if key.len() != 16 || key[..8] != group.to_be_bytes() {
                    break;
                }
                u64::from_be_bytes(key[8..].try_into().map_err(other)?)
            } else {
                u64::from_be_bytes(key.as_ref().try_into().map_err(other)?)
            };
            bytes += value.len();
            out.push((at, value.into_vec()));
            if out.len() >= max || bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
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

    /// A writer of entries of `group` that arrive with a snapshot, one by one (see
    /// [`ShippedWriter`]).
    pub fn shipped_writer(&self, group: u64) -> ShippedWriter {
        ShippedWriter {
            store: self.clone(),
            group,
            batch: WriteBatch::default(),
            bytes: 0,
        }
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

/// Writes shipped log entries as they arrive, up to about 4 MiB per (unsynced) write;
/// [`ShippedWriter::finish`] syncs them all.
pub struct ShippedWriter {
    store: MessageStore,
    group: u64,
    batch: WriteBatch,
    bytes: usize,
}

impl ShippedWriter {
    const BATCH_BYTES: usize = 4 << 20;

    pub fn add(&mut self, index: u64, raw: &[u8]) -> io::Result<()> {
        let cf = self.store.cf(CF_BODIES)?;
        self.batch.put_cf(cf, body_key(self.group, index), raw);
        self.bytes += raw.len();
        if self.bytes >= Self::BATCH_BYTES {
            self.write(false)?;
        }
        Ok(())
    }

    /// Every entry added is on disk when this returns.
    pub fn finish(mut self) -> io::Result<()> {
        self.write(true)
    }

    fn write(&mut self, sync: bool) -> io::Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        let batch = std::mem::take(&mut self.batch);
        self.bytes = 0;
        self.store.db.write_opt(batch, &opts).map_err(other)
    }
}
