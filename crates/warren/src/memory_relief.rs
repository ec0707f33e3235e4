//! What a node gives back while its own memory alarm is on: the body cache is cut to a small
//! share (`warren_raft::records::LogRecords::with_pressure`, done at the broker's next tick) and
//! RocksDB's memtables are flushed, at once and again every 30 s while the alarm stays on.
//! Without this, what a node holds besides its queues' index — the cache, the memtables — does
//! not shrink as a queue drains, and a watermark set below it never clears (found by
//! `benches/overload`, docs/benchmarks.md). Deliveries go on meanwhile, read back from the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};
use warren_raft::resources::NodeResources;
use warren_store::MessageStore;

/// How often the memtables are flushed again while the alarm stays on.
const FLUSH_EVERY: Duration = Duration::from_secs(30);

/// Follows this node's alarm in `resources`: sets `pressure` while the memory alarm is on, and
/// flushes the memtables of `messages`' database.
pub(crate) fn spawn(
    mut resources: watch::Receiver<NodeResources>,
    pressure: Arc<AtomicBool>,
    messages: MessageStore,
) {
    tokio::spawn(async move {
        let mut flushed: Option<Instant> = None;
        loop {
            let on = resources.borrow_and_update().mem_alarm;
            let was = pressure.swap(on, Ordering::Relaxed);
            if on && !was {
                info!("memory alarm: the body cache is cut to a sixteenth and the memtables flushed until it clears");
            }
            if !on {
                flushed = None;
            } else if flushed.is_none_or(|at| at.elapsed() >= FLUSH_EVERY) {
                flushed = Some(Instant::now());
                let store = messages.clone();
                let done =
                    tokio::task::spawn_blocking(move || warren_store::flush_memtables(&store.db()))
                        .await;
                if let Err(e) = done
                    .map_err(std::io::Error::other)
                    .and_then(|r| r.map_err(std::io::Error::other))
                {
                    warn!(error = %e, "memory alarm: flushing the memtables");
                }
            }
            if resources.changed().await.is_err() {
                return;
            }
        }
    });
}
