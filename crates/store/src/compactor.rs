//! Giving a purged log's disk space back, off the Raft thread: after a purge, flush the memtables
//! (so the WAL files that held the purged entries can be deleted) and compact the purged range
//! (so the range tombstone drops the SST data). At most one such job runs at a time, and the last
//! one is joined when the store is dropped: a process must not exit in the middle of one.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rocksdb::DB;

use crate::db::{CF_BODIES, CF_LOGS, CF_META, CF_STATE};

#[derive(Default)]
pub(crate) struct Compactor {
    running: Mutex<Option<JoinHandle<()>>>,
}

impl Compactor {
    /// Starts reclaiming the log below `end` (a log key), after any job still running.
    pub(crate) fn reclaim(&self, db: Arc<DB>, end: [u8; 8]) {
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        if let Some(previous) = running.take() {
            let _ = previous.join();
        }
        let spawned = std::thread::Builder::new()
            .name("warren-log-compact".into())
            .spawn(move || {
                // A WAL file is deleted only once every column family with data in it is
                // flushed, so the small ones are flushed too.
                for name in [CF_META, CF_STATE, CF_BODIES, CF_LOGS] {
                    if let Some(cf) = db.cf_handle(name) {
                        if let Err(e) = db.flush_cf(cf) {
                            tracing::warn!(error = %e, "flushing {name} after a purge");
                        }
                    }
                }
                if let Some(cf) = db.cf_handle(CF_LOGS) {
                    db.compact_range_cf(cf, None::<&[u8]>, Some(&end[..]));
                }
            });
        match spawned {
            Ok(handle) => *running = Some(handle),
            Err(e) => tracing::warn!(error = %e, "could not start the log compaction thread"),
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock() {
            if let Some(handle) = running.take() {
                let _ = handle.join();
            }
        }
    }
}
