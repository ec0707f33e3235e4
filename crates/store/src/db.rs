//! Opening the RocksDB database and its column families.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

/// Raft log entries, keyed by big-endian log index.
pub const CF_LOGS: &str = "logs";
/// Small records: vote, committed log id, last purged log id.
pub const CF_META: &str = "meta";
/// The state machine's own data (applied state, last-applied log id).
pub const CF_STATE: &str = "state";
/// Log entries holding queued messages that came with a snapshot, keyed by big-endian
/// (Raft group, log index) (see `message_store`).
pub const CF_BODIES: &str = "bodies";

/// What the memtables of all column families may hold together.
const MEMTABLES_BYTES: usize = 64 << 20;

/// A storage failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct StoreError {
    what: &'static str,
    #[source]
    source: rocksdb::Error,
}

/// Opens (creating if needed) the database under `path` with Warren's column families.
pub fn open(path: &Path) -> Result<Arc<DB>, StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Durability comes from WAL fsyncs; never skip the WAL.
    opts.set_manual_wal_flush(false);
    // RocksDB's own info LOG (in the data directory) records only fatal errors. On a full disk
    // RocksDB logs the failed write there, and Debian's librocksdb, built with assertions,
    // aborts the process when that LOG write fails too: the node would die without a word.
    // With nothing but fatal errors logged, the failed write comes back to Warren, which says
    // so and exits (see `write_failure`). Warren's own log covers what matters to operators.
    opts.set_log_level(rocksdb::LogLevel::Fatal);
    // Memtables of every column family together stay under 64 MiB (the defaults allow 64 MiB
    // per memtable, two per column family): queued messages rest in the log, and a backlog
    // must not sit in RocksDB's memory instead of Warren's.
    opts.set_db_write_buffer_size(MEMTABLES_BYTES);
    let cfs = [CF_LOGS, CF_META, CF_STATE, CF_BODIES]
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    DB::open_cf_descriptors(&opts, path, cfs)
        .map(Arc::new)
        .map_err(|source| StoreError {
            what: "opening the RocksDB store",
            source,
        })
}

/// Flushes the memtables of every column family into SST files, giving their memory back
/// (asked while the node's memory alarm is on). Nothing becomes more or less durable: the
/// synced WAL already holds what they held.
pub fn flush_memtables(db: &DB) -> Result<(), StoreError> {
    for name in [CF_LOGS, CF_META, CF_STATE, CF_BODIES] {
        if let Some(cf) = db.cf_handle(name) {
            db.flush_cf(cf).map_err(|source| StoreError {
                what: "flushing the memtables",
                source,
            })?;
        }
    }
    Ok(())
}
