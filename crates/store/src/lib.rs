//! Warren's durable storage on RocksDB: the Raft log, the vote and the committed log id
//! ([`RocksLogStore`], openraft's v2 `RaftLogStorage`).
//!
//! The rule this crate keeps: nothing is reported durable before it is fsynced. The vote is
//! written with a synced write before `save_vote` returns; appended entries are written at once
//! and their `IOFlushed` callbacks fire only after a WAL fsync, which one background thread does
//! for every append that arrived meanwhile (group commit: one fsync for many appends).

mod commit_latency;
mod compactor;
mod db;
mod fsync_latency;
mod log_store;
mod message_store;
mod recent;
mod retired;
mod syncer;
mod write_failure;

pub use commit_latency::{commit_latency, CommitLatencyReading};
pub use db::{flush_memtables, open, StoreError, CF_BODIES, CF_LOGS, CF_META, CF_STATE};
pub use fsync_latency::{fsync_latency, LatencyHistogram, BUCKETS as LATENCY_BUCKETS};
pub use log_store::RocksLogStore;
pub use message_store::{MessageStore, ShippedWriter};
pub use retired::{retired_nodes, save_retired_nodes};

/// The state machine applied every log entry up to this index (see [`commit_latency`]).
pub use commit_latency::applied as note_applied;
