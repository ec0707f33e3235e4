//! The broker's [`Records`] port on a node: the messages of replicated queues rest in the Raft
//! log (see `warren_store::MessageStore`); the most recently applied ones stay in memory in a
//! cache bounded in bytes (`--body-cache`), so a message consumed soon after it was published is
//! never read back from disk. Older ones are read back from the log entry that carried them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::alias::EntryOf;
use openraft::entry::EntryPayload;
use tracing::error;
use warren_core::{Message, Op, Records};
use warren_store::MessageStore;

use crate::{LogCommand, TypeConfig, METADATA_GROUP};

/// What a cached message costs besides its body: its struct (about 460 bytes: the properties
/// are inline), the `Arc`'s counts, and its map and order slots.
const OVERHEAD_BYTES: usize = std::mem::size_of::<Message>() + 16 + 48;
/// A message read back from disk brings the log entries after it (a queue is consumed in log
/// order): at most this many ...
const READ_AHEAD: usize = 256;
/// ... or about this many bytes of them.
const READ_AHEAD_BYTES: usize = 1 << 20;
/// Messages read ahead and not yet asked for are kept up to this many (older ones go).
const AHEAD_KEPT: usize = 4 * READ_AHEAD;

/// A node that does not lead keeps this share of the cache (1/16): it delivers nothing, and
/// reads a message back only to dead-letter it. Once it leads the cache fills again. A node
/// whose memory alarm is on keeps the same share: deliveries are read back from the log (with
/// read-ahead) until the alarm clears.
const SMALL_SHARE: usize = 16;

/// Recently applied messages in memory, the rest read back from the log.
#[derive(Debug)]
pub struct LogRecords {
    store: MessageStore,
    limit: usize,
    /// Whether this node leads (see [`track_leadership`]); without it the whole cache is used.
    leading: Option<Arc<AtomicBool>>,
    /// Whether this node's memory alarm is on (the cache is cut to a small share meanwhile).
    pressure: Option<Arc<AtomicBool>>,
    used: usize,
    cached: HashMap<u64, Arc<Message>>,
    /// Cached indices, oldest first (an index read back is not cached again).
    order: VecDeque<u64>,
    /// Messages read ahead from disk, each taken out when asked for.
    ahead: HashMap<u64, Arc<Message>>,
    ahead_order: VecDeque<u64>,
}

impl LogRecords {
    /// Records over `store`, keeping up to `cache_bytes` of recent messages in memory.
    pub fn new(store: MessageStore, cache_bytes: usize) -> LogRecords {
        LogRecords {
            store,
            limit: cache_bytes,
            leading: None,
            pressure: None,
            used: 0,
            cached: HashMap::new(),
            order: VecDeque::new(),
            ahead: HashMap::new(),
            ahead_order: VecDeque::new(),
        }
    }

    /// Uses the whole cache only while `leading` is set (see [`track_leadership`]).
    pub fn with_leading(mut self, leading: Arc<AtomicBool>) -> LogRecords {
        self.leading = Some(leading);
        self
    }

    /// Cuts the cache to a small share while `pressure` is set (the node's memory alarm).
    pub fn with_pressure(mut self, pressure: Arc<AtomicBool>) -> LogRecords {
        self.pressure = Some(pressure);
        self
    }

    fn limit(&self) -> usize {
        let set = |flag: &Option<Arc<AtomicBool>>| flag.as_ref().map(|f| f.load(Ordering::Relaxed));
        let follower = set(&self.leading) == Some(false);
        let pressed = set(&self.pressure) == Some(true);
        if follower || pressed {
            self.limit / SMALL_SHARE
        } else {
            self.limit
        }
    }

    /// Drops the oldest cached messages until the cache is within its current limit.
    fn evict(&mut self) {
        let limit = self.limit();
        while self.used > limit {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(m) = self.cached.remove(&oldest) {
                self.used -= Self::cost(&m);
            }
        }
    }

    /// Reads entry `index` and the ones after it from disk; returns the message of `index`
    /// and keeps the others' for the next asks.
    fn read_ahead(&mut self, index: u64) -> Result<Message, String> {
        let entries = self
            .store
            .entries_from(METADATA_GROUP, index, READ_AHEAD, READ_AHEAD_BYTES)
            .map_err(|e| e.to_string())?;
        let mut wanted = None;
        for (at, raw) in entries {
            if at == index {
                wanted = Some(message_of_entry(&raw)?);
                continue;
            }
            // Other entries may be acks, declares...: only publishes are kept.
            let Ok(m) = message_of_entry(&raw) else {
                continue;
            };
            if self.cached.contains_key(&at) || self.ahead.contains_key(&at) {
                continue;
            }
            self.ahead.insert(at, Arc::new(m));
            self.ahead_order.push_back(at);
        }
        while self.ahead_order.len() > AHEAD_KEPT {
            if let Some(old) = self.ahead_order.pop_front() {
                self.ahead.remove(&old);
            }
        }
        wanted.ok_or_else(|| "no such log entry on this node".to_owned())
    }

    fn cost(message: &Message) -> usize {
        message.body.len() + OVERHEAD_BYTES
    }
}

/// Keeps `leading` set while `raft`'s node `id` leads, until Raft shuts down.
pub fn track_leadership(
    raft: openraft::Raft<TypeConfig, crate::state_machine::BrokerStateMachine>,
    id: crate::NodeId,
    leading: Arc<AtomicBool>,
) {
    use openraft::async_runtime::WatchReceiver;
    let mut metrics = raft.server_metrics();
    tokio::spawn(async move {
        loop {
            let leads = metrics.borrow_watched().current_leader == Some(id);
            leading.store(leads, Ordering::Relaxed);
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}

/// The message an encoded log entry published.
pub fn message_of_entry(raw: &[u8]) -> Result<Message, String> {
    let entry: EntryOf<TypeConfig> = postcard::from_bytes(raw).map_err(|e| e.to_string())?;
    match entry.payload {
        EntryPayload::Normal(LogCommand(command)) => match command.op {
            Op::Publish {
                exchange,
                routing_key,
                properties,
                body,
                ..
            } => Ok(Message {
                exchange,
                routing_key,
                properties,
                body,
            }),
            _ => Err("the log entry is not a publish".into()),
        },
        _ => Err("the log entry holds no command".into()),
    }
}

impl Records for LogRecords {
    fn keep(&mut self, index: u64, message: &Arc<Message>) {
        if self.cached.insert(index, Arc::clone(message)).is_none() {
            self.used += Self::cost(message);
            self.order.push_back(index);
        }
        self.evict();
    }

    fn shed(&mut self) {
        if self.used > self.limit() {
            self.evict();
            // The map and the queue keep their capacity otherwise.
            if self.cached.len() * 4 < self.cached.capacity() {
                self.cached.shrink_to_fit();
                self.order.shrink_to_fit();
            }
        }
    }

    fn get(&mut self, index: u64) -> Option<Arc<Message>> {
        if let Some(m) = self.cached.get(&index) {
            return Some(Arc::clone(m));
        }
        if let Some(m) = self.ahead.remove(&index) {
            return Some(m);
        }
        match self.read_ahead(index) {
            Ok(m) => Some(Arc::new(m)),
            Err(e) => {
                error!(index, error = %e, "a queued message could not be read back from the log; it is lost");
                None
            }
        }
    }
}

/// Log entries as the log store writes them, for tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use bytes::Bytes;
    use openraft::entry::RaftEntry;
    use warren_core::{Command, STATE_MACHINE_VERSION};
    use warren_wire::BasicProperties;

    fn publish(body: &str) -> Command {
        Command {
            version: STATE_MACHINE_VERSION,
            origin: None,
            number: None,
            issued_at: 1,
            op: Op::Publish {
                vhost: "/".into(),
                exchange: "".into(),
                routing_key: "work".into(),
                mandatory: false,
                confirm: None,
                properties: BasicProperties {
                    delivery_mode: Some(2),
                    ..Default::default()
                },
                body: Bytes::from(body.to_owned()),
                queues: None,
            },
        }
    }

    /// Log entry `index`: a publish of `body`, encoded.
    pub(crate) fn entry(index: u64, body: &str) -> Vec<u8> {
        let entry = EntryOf::<TypeConfig>::new_normal(
            openraft::testing::log_id::<TypeConfig>(1, 1, index),
            LogCommand(publish(body)),
        );
        postcard::to_stdvec(&entry).expect("encode")
    }

    /// Writes log entry `index` (a publish of `body`) into the log of `store`.
    pub(crate) fn put_entry(store: &MessageStore, index: u64, body: &str) {
        let db = store.db();
        let cf = db.cf_handle(warren_store::CF_LOGS).expect("logs");
        db.put_cf(cf, index.to_be_bytes(), entry(index, body))
            .expect("put");
    }
}

#[cfg(test)]
mod tests {
    use super::testing::put_entry;
    use super::*;

    /// Writes log entry `index` (a publish of `body`) and keeps its message, as an apply does.
    fn keep_published(store: &MessageStore, records: &mut LogRecords, index: u64, body: &str) {
        put_entry(store, index, body);
        let raw = store.entry(METADATA_GROUP, index).unwrap().unwrap();
        records.keep(index, &Arc::new(message_of_entry(&raw).unwrap()));
    }

    #[test]
    fn evicted_messages_are_read_back_from_the_log_and_shipped_ones_from_the_bodies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = warren_store::open(dir.path()).expect("open");
        let store = MessageStore::new(db.clone());
        // A cache of about two messages: the rest are read back from the log.
        let mut records = LogRecords::new(store.clone(), 2 * (OVERHEAD_BYTES + 8));
        for i in 1..=10u64 {
            let body = format!("body-{i:03}");
            keep_published(&store, &mut records, i, &body);
        }
        assert!(records.cached.len() <= 2, "{}", records.cached.len());
        // The first read back brings the entries after it (one seek, then from memory).
        let first = records.get(1).expect("read back");
        assert_eq!(first.body.as_ref(), b"body-001");
        assert!(
            records.ahead.contains_key(&5),
            "read ahead: {:?}",
            records.ahead_order
        );
        for i in 1..=10u64 {
            let m = records.get(i).expect("read back");
            assert_eq!(m.body.as_ref(), format!("body-{i:03}").as_bytes());
            assert_eq!(m.routing_key.as_str(), "work");
        }
        assert!(records.get(11).is_none(), "no such entry");

        // Shipped to a node whose log never held them: kept in the bodies column family.
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other = MessageStore::new(warren_store::open(other_dir.path()).expect("open"));
        let raw: Vec<(u64, Vec<u8>)> = [3u64, 7]
            .iter()
            .map(|i| (*i, store.entry(METADATA_GROUP, *i).unwrap().unwrap()))
            .collect();
        other
            .put_shipped(METADATA_GROUP, raw.iter().map(|(i, r)| (*i, r.as_slice())))
            .expect("keep");
        let mut there = LogRecords::new(other.clone(), 0);
        assert_eq!(there.get(7).expect("shipped").body.as_ref(), b"body-007");
        other
            .forget_shipped_below(METADATA_GROUP, 5)
            .expect("forget");
        assert!(there.get(3).is_none(), "forgotten");
        assert!(there.get(7).is_some(), "still named");
    }

    #[test]
    fn under_memory_pressure_the_cache_is_cut_at_the_next_tick_and_messages_still_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MessageStore::new(warren_store::open(dir.path()).expect("open"));
        let cost = OVERHEAD_BYTES + 8;
        let pressure = Arc::new(AtomicBool::new(false));
        let mut records =
            LogRecords::new(store.clone(), 32 * cost).with_pressure(Arc::clone(&pressure));
        for i in 1..=32u64 {
            let body = format!("body-{i:03}");
            keep_published(&store, &mut records, i, &body);
        }
        assert_eq!(records.cached.len(), 32);
        records.shed();
        assert_eq!(
            records.cached.len(),
            32,
            "within its bound: nothing to shed"
        );

        pressure.store(true, Ordering::Relaxed);
        records.shed();
        // A sixteenth of the bound: the two newest stay.
        assert_eq!(records.used, 2 * cost);
        assert!(records.cached.contains_key(&31) && records.cached.contains_key(&32));
        assert!(
            records.cached.capacity() < 32,
            "{}",
            records.cached.capacity()
        );
        for i in 1..=32u64 {
            let m = records.get(i).expect("read back");
            assert_eq!(m.body.as_ref(), format!("body-{i:03}").as_bytes());
        }

        // The alarm cleared: the cache fills to its whole bound again.
        pressure.store(false, Ordering::Relaxed);
        for i in 33..=40u64 {
            keep_published(&store, &mut records, i, "body-new");
        }
        assert_eq!(records.cached.len(), 10);
    }
}
