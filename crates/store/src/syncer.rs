//! Group commit: one thread fsyncs the WAL for every append that arrived since its last fsync,
//! then completes all their callbacks. It also writes the committed log id openraft saves: the
//! latest one is left here and written (unsynced, as before) after the thread's next fsync and
//! its callbacks, and when the store closes, so neither the core's step from a commit to the
//! apply nor the appends waiting for an fsync wait for that RocksDB write.

use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use openraft::storage::IOFlushed;
use openraft::RaftTypeConfig;
use rocksdb::DB;
use tracing::error;

use crate::write_failure::WriteFailure;

/// Hands flush callbacks to the sync thread. When the last handle is dropped the thread finishes
/// the syncs it was given and is joined, so the database can be reopened at once.
pub(crate) struct Syncer<C: RaftTypeConfig> {
    inner: Arc<Inner<C>>,
}

struct Inner<C: RaftTypeConfig> {
    tx: Option<mpsc::Sender<IOFlushed<C>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The latest committed log id to write, encoded (see the module doc).
    committed: Arc<Mutex<Option<Vec<u8>>>>,
}

impl<C: RaftTypeConfig> Drop for Inner<C> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<C: RaftTypeConfig> Clone for Syncer<C> {
    fn clone(&self) -> Self {
        Syncer {
            inner: self.inner.clone(),
        }
    }
}

impl<C: RaftTypeConfig> Syncer<C> {
    pub(crate) fn start(db: Arc<DB>, failure: WriteFailure) -> io::Result<Syncer<C>> {
        let (tx, rx) = mpsc::channel::<IOFlushed<C>>();
        let committed: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let to_write = Arc::clone(&committed);
        let thread = std::thread::Builder::new()
            .name("warren-wal-sync".into())
            .spawn(move || {
                let mut waiting = Vec::new();
                while let Ok(first) = rx.recv() {
                    waiting.push(first);
                    waiting.extend(rx.try_iter());
                    // Never fsync after a failed write (see `WriteFailure`).
                    let result = failure.check().and_then(|()| {
                        let started = std::time::Instant::now();
                        tracing::trace!(target: "warren_latency", appends = waiting.len(), "fsync");
                        let synced = failure.guard("WAL fsync", db.flush_wal(true));
                        crate::fsync_latency::record(started.elapsed());
                        tracing::trace!(target: "warren_latency", "fsynced");
                        synced
                    });
                    if let Err(e) = &result {
                        error!(error = %e, "WAL fsync failed; the appends waiting on it fail");
                    }
                    for callback in waiting.drain(..) {
                        let r = match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(io::Error::other(e.to_string())),
                        };
                        callback.io_completed(r);
                    }
                    // After the callbacks, off the path of the appends that waited (the next
                    // fsync makes it durable).
                    write_latest_committed(&db, &failure, &to_write);
                }
                // The store is closed: the last committed log id left goes to disk with it.
                write_latest_committed(&db, &failure, &to_write);
            })?;
        Ok(Syncer {
            inner: Arc::new(Inner {
                tx: Some(tx),
                thread: Some(thread),
                committed,
            }),
        })
    }

    /// Leaves the encoded committed log id to be written before the next fsync (a later one
    /// replaces it). Until then a restart reads an older one, which openraft allows: it only
    /// re-applies less before it hears from a leader.
    pub(crate) fn save_committed(&self, encoded: Vec<u8>) {
        if let Ok(mut c) = self.inner.committed.lock() {
            *c = Some(encoded);
        }
    }

    /// Completes `callback` after the next WAL fsync.
    pub(crate) fn after_next_sync(&self, callback: IOFlushed<C>) -> io::Result<()> {
        self.inner
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("the WAL sync thread has stopped"))?
            .send(callback)
            .map_err(|_| io::Error::other("the WAL sync thread has stopped"))
    }
}

/// Writes the committed log id left in `latest`, if any (unsynced: the next fsync covers it).
fn write_latest_committed(db: &DB, failure: &WriteFailure, latest: &Mutex<Option<Vec<u8>>>) {
    let Some(encoded) = latest.lock().ok().and_then(|mut c| c.take()) else {
        return;
    };
    let written = failure.check().and_then(|()| {
        let cf = db
            .cf_handle(crate::db::CF_META)
            .ok_or_else(|| io::Error::other("column family meta is missing"))?;
        failure.guard(
            "metadata write",
            db.put_cf(cf, crate::log_store::KEY_COMMITTED, encoded),
        )
    });
    if let Err(e) = written {
        error!(error = %e, "the committed log id was not written");
    }
}
