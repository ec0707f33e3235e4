//! Group commit: one thread fsyncs the WAL for every append that arrived since its last fsync,
//! then completes all their callbacks.

use std::io;
use std::sync::mpsc;
use std::sync::Arc;

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
                }
            })?;
        Ok(Syncer {
            inner: Arc::new(Inner {
                tx: Some(tx),
                thread: Some(thread),
            }),
        })
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
