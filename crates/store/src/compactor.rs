//! Giving a purged log's disk space back, off the Raft thread: after a purge, flush the memtables
//! (so the WAL files that held the purged entries can be deleted; the flush drops what the range
//! tombstone covers), drop the SST files that lie wholly inside the purged range without reading
//! or rewriting them, and compact the purged range only when that frees at least as many bytes
//! as it rewrites ([`worth_compacting`]).
//!
//! A compaction rewrites whole files, so one that straddles the purge point has its live part —
//! the bodies of messages still queued, resting in the log — written again. Compacting at every
//! purge, as before 2026-12-07, did that while a backlog was consumed: with a 50 000-message
//! backlog, a quarter of the bytes a node wrote per message (`tests/python/bytes_on_disk.py`:
//! 1 627–1 686 B per message in all, 1 527–1 548 B without). Once the backlog is mostly
//! consumed the straddling files are mostly dead and the compaction runs, so a drained queue
//! still gives its disk back. At most one job runs at a time, and the last one is joined when
//! the store is dropped: a process must not exit in the middle of one.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rocksdb::DB;

use crate::db::{CF_BODIES, CF_LOGS, CF_META, CF_STATE};

#[derive(Default)]
pub(crate) struct Compactor {
    running: Mutex<Option<JoinHandle<()>>>,
}

impl Compactor {
    /// Starts reclaiming the log up to index `last` (included: the last purged entry), after
    /// any job still running.
    pub(crate) fn reclaim(&self, db: Arc<DB>, last: u64) {
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
                let Some(cf) = db.cf_handle(CF_LOGS) else {
                    return;
                };
                let last_key = last.to_be_bytes();
                // Both ends included: `last` is purged, the key after it may be live.
                if let Err(e) = db.delete_file_in_range_cf(cf, [0u8; 8], last_key) {
                    tracing::warn!(error = %e, "dropping purged log files");
                }
                let files = match db.live_files() {
                    Ok(files) => files,
                    Err(e) => {
                        tracing::warn!(error = %e, "listing the log's files after a purge");
                        return;
                    }
                };
                let spans = files
                    .iter()
                    .filter(|f| f.column_family_name == CF_LOGS)
                    .filter_map(|f| {
                        Some((
                            index_of(f.start_key.as_deref()?)?,
                            index_of(f.end_key.as_deref()?)?,
                            f.size as u64,
                        ))
                    });
                if worth_compacting(spans, last) {
                    db.compact_range_cf(cf, None::<&[u8]>, Some(&last_key[..]));
                }
            });
        match spawned {
            Ok(handle) => *running = Some(handle),
            Err(e) => tracing::warn!(error = %e, "could not start the log compaction thread"),
        }
    }
}

/// A log key's index (keys are big-endian indexes).
fn index_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// Whether compacting the log up to index `last` frees at least as many bytes as it writes
/// again. `files` are the log's SST files as (first index, last index, bytes); a file is taken
/// to hold its entries evenly spread over its index range (log entries of one workload are of
/// about one size). A file wholly at or below `last` is freed; one that straddles it is
/// rewritten, its part above `last` written again and the rest freed.
pub(crate) fn worth_compacting(
    files: impl IntoIterator<Item = (u64, u64, u64)>,
    last: u64,
) -> bool {
    let (mut freed, mut rewritten) = (0u128, 0u128);
    for (first, end, bytes) in files {
        if first > last {
            continue;
        }
        let bytes = u128::from(bytes);
        if end <= last {
            freed += bytes;
            continue;
        }
        let span = u128::from(end - first) + 1;
        let dead = u128::from(last - first) + 1;
        freed += bytes * dead / span;
        rewritten += bytes * (span - dead) / span;
    }
    freed > 0 && freed >= rewritten
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

#[cfg(test)]
mod tests {
    use super::worth_compacting;

    #[test]
    fn a_compaction_runs_when_it_frees_at_least_what_it_rewrites() {
        // Nothing at or below the purge point: nothing to free.
        assert!(!worth_compacting([(101, 200, 1_000)], 100));
        assert!(!worth_compacting([], 100));
        // A dead file left behind: freed without rewriting anything.
        assert!(worth_compacting([(1, 50, 1_000), (101, 200, 1_000)], 100));
        // A file straddling the purge point, mostly live (a backlog beyond it): not worth it.
        assert!(!worth_compacting([(1, 1_000, 1_000)], 100));
        // Mostly dead (the backlog drained): worth it; exactly half and half too.
        assert!(worth_compacting([(1, 1_000, 1_000)], 900));
        assert!(worth_compacting([(1, 1_000, 1_000)], 500));
        assert!(!worth_compacting([(1, 1_000, 1_000)], 499));
        // Summed over the files: a dead file pays for rewriting another's live part.
        assert!(worth_compacting(
            [(1, 100, 3_000), (101, 1_000, 3_000)],
            200
        ));
    }
}
