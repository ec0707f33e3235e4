//! A queue: its declaration, its messages (ready, in the order they must be delivered, and
//! checked out to consumers until settled) and its consumers in round-robin order.
//!
//! Every message gets a sequence number when enqueued; ready messages are kept ordered by it, so a
//! requeued message goes back to its original place, as RabbitMQ's classic queues do.
//!
//! A backlog costs memory for its index only: a replicated queue's ready message is 40 bytes
//! (its sequence number and an [`Entry`] naming the log entry that holds it) in one ring buffer
//! ordered by sequence number. Messages leave from the head and requeued ones go back near it,
//! so the ring's inserts and removals by binary search move few slots.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;

use warren_wire::{FieldTable, FieldValue, ShortStr};

use crate::message::Payload;
use crate::{ChannelId, ConnId, Millis};

/// A globally unique id for one incarnation of a queue (a queue deleted and declared again gets a
/// new id, so stale references to the old one never touch the new one).
pub(crate) type QueueId = u64;

/// A message in a queue, with its per-queue delivery state: 32 bytes (see the module's note).
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) message: Payload,
    pub(crate) redelivered: bool,
    /// Absolute expiry plus one (so that `None` costs no space), if any.
    expiry: Option<NonZeroU64>,
}

impl Entry {
    pub(crate) fn new(message: Payload, redelivered: bool, expires_at: Option<Millis>) -> Entry {
        Entry {
            message,
            redelivered,
            expiry: expires_at.and_then(|at| NonZeroU64::new(at.saturating_add(1))),
        }
    }

    /// Absolute expiry (from `x-message-ttl` or the `expiration` property), if any.
    pub(crate) fn expires_at(&self) -> Option<Millis> {
        self.expiry.map(|e| e.get() - 1)
    }
}

/// Identifies a consumer: the channel it lives on and its tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConsumerRef {
    pub(crate) conn: ConnId,
    pub(crate) channel: ChannelId,
    pub(crate) tag: ShortStr,
}

/// What to do when `x-max-length`/`x-max-length-bytes` is reached (`x-overflow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Overflow {
    DropHead,
    RejectPublish,
    RejectPublishDlx,
}

/// The queue arguments Warren interprets, parsed and validated from `queue.declare`'s table.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct QueueArgs {
    pub(crate) message_ttl: Option<u64>,
    pub(crate) expires: Option<u64>,
    pub(crate) max_length: Option<u64>,
    pub(crate) max_length_bytes: Option<u64>,
    pub(crate) overflow: Option<Overflow>,
    pub(crate) dead_letter_exchange: Option<ShortStr>,
    pub(crate) dead_letter_routing_key: Option<ShortStr>,
}

/// The argument keys compared on redeclare (RabbitMQ compares only the arguments it knows).
pub(crate) const EQUIVALENCE_ARGS: &[&str] = &[
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-queue-type",
    "x-queue-mode",
];

impl QueueArgs {
    /// Parses and validates the arguments; the error is RabbitMQ's 406 text.
    pub(crate) fn parse(args: &FieldTable) -> Result<QueueArgs, String> {
        let mut parsed = QueueArgs::default();
        let non_negative = |key: &str| -> Result<Option<u64>, String> {
            match args.get(key) {
                None => Ok(None),
                Some(v) => match v.as_i64() {
                    Some(n) if n >= 0 => Ok(Some(n as u64)),
                    Some(n) => Err(format!(
                        "invalid arg '{key}' for queue: {{value_negative,{n}}}"
                    )),
                    None => Err(format!(
                        "invalid arg '{key}' for queue: {{unacceptable_type,{}}}",
                        type_name(v)
                    )),
                },
            }
        };
        parsed.message_ttl = non_negative("x-message-ttl")?;
        parsed.expires = non_negative("x-expires")?;
        if parsed.expires == Some(0) {
            return Err("invalid arg 'x-expires' for queue: {value_zero,0}".into());
        }
        parsed.max_length = non_negative("x-max-length")?;
        parsed.max_length_bytes = non_negative("x-max-length-bytes")?;
        if let Some(v) = args.get("x-overflow") {
            parsed.overflow = Some(match v.as_str() {
                Some("drop-head") => Overflow::DropHead,
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => {
                    return Err(format!(
                        "invalid arg 'x-overflow' for queue: {{invalid_value,{v:?}}}"
                    ))
                }
            });
        }
        if let Some(v) = args.get("x-dead-letter-exchange") {
            match v.as_str() {
                Some(s) => parsed.dead_letter_exchange = Some(ShortStr::from(s)),
                None => {
                    return Err(format!(
                        "invalid arg 'x-dead-letter-exchange' for queue: {{unacceptable_type,{}}}",
                        type_name(v)
                    ))
                }
            }
        }
        if let Some(v) = args.get("x-dead-letter-routing-key") {
            match v.as_str() {
                Some(s) => parsed.dead_letter_routing_key = Some(ShortStr::from(s)),
                None => {
                    return Err(format!(
                    "invalid arg 'x-dead-letter-routing-key' for queue: {{unacceptable_type,{}}}",
                    type_name(v)
                ))
                }
            }
            if parsed.dead_letter_exchange.is_none() {
                return Err("invalid arg 'x-dead-letter-routing-key' for queue: {routing_key_but_no_dlx_defined}".into());
            }
        }
        if let Some(v) = args.get("x-queue-type") {
            match v.as_str() {
                Some("classic") | Some("quorum") => {}
                Some(other) => {
                    return Err(format!(
                    "invalid arg 'x-queue-type' for queue: {{unsupported_queue_type,'{other}'}}"
                ))
                }
                None => {
                    return Err(format!(
                        "invalid arg 'x-queue-type' for queue: {{unacceptable_type,{}}}",
                        type_name(v)
                    ))
                }
            }
        }
        Ok(parsed)
    }
}

/// RabbitMQ's name for a field type in error texts.
pub(crate) fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Bool(_) => "bool",
        FieldValue::I8(_) | FieldValue::U8(_) => "byte",
        FieldValue::I16(_) | FieldValue::U16(_) => "short",
        FieldValue::I32(_) | FieldValue::U32(_) => "signedint",
        FieldValue::I64(_) => "long",
        FieldValue::F32(_) => "float",
        FieldValue::F64(_) => "double",
        FieldValue::Decimal { .. } => "decimal",
        FieldValue::LongStr(_) => "longstr",
        FieldValue::ByteArray(_) => "binary",
        FieldValue::Array(_) => "array",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::Table(_) => "table",
        FieldValue::Void => "void",
    }
}

/// One queue.
#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) id: QueueId,
    pub(crate) name: ShortStr,
    pub(crate) vhost: ShortStr,
    pub(crate) durable: bool,
    pub(crate) exclusive_owner: Option<ConnId>,
    pub(crate) auto_delete: bool,
    pub(crate) arguments: FieldTable,
    pub(crate) args: QueueArgs,
    /// Ready messages by sequence number, ascending.
    ready: VecDeque<(u64, Entry)>,
    ready_bytes: u64,
    checked_out: HashMap<u64, Entry>,
    next_seq: u64,
    /// Consumers in round-robin order: the front is offered the next message.
    pub(crate) consumers: VecDeque<ConsumerRef>,
    /// The consumer that holds this queue exclusively (`basic.consume` exclusive=true).
    pub(crate) exclusive_consumer: Option<ConsumerRef>,
    /// Set once a consumer has attached: auto-delete applies only after that.
    pub(crate) had_consumer: bool,
    /// When the queue was last used (declared, consumed from, got from), for `x-expires`.
    pub(crate) last_used: Millis,
    /// What this broker saw the queue do (for operators; not replicated).
    pub(crate) counters: crate::view::QueueCounters,
    /// Messages enqueued per exchange they were published to (for operators; not replicated).
    pub(crate) published_from: HashMap<ShortStr, u64>,
    /// A local queue's home: the node of the connection that declared it, whose broker alone
    /// holds the queue's messages and consumers and decides its deliveries; 0 for a replicated
    /// queue. Replicated.
    pub(crate) home: u64,
    /// The connection whose `queue.declare` created it (0 if none). Replicated.
    pub(crate) declared_by: ConnId,
    /// A local queue whose removal its home proposed: clients no longer see it (not
    /// replicated; see `Broker::home_redirect`).
    pub(crate) dying: bool,
}

impl Queue {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: QueueId,
        vhost: ShortStr,
        name: ShortStr,
        durable: bool,
        exclusive_owner: Option<ConnId>,
        auto_delete: bool,
        arguments: FieldTable,
        args: QueueArgs,
        now: Millis,
    ) -> Queue {
        Queue {
            id,
            name,
            vhost,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            args,
            ready: VecDeque::new(),
            ready_bytes: 0,
            checked_out: HashMap::new(),
            next_seq: 1,
            consumers: VecDeque::new(),
            exclusive_consumer: None,
            had_consumer: false,
            last_used: now,
            counters: Default::default(),
            published_from: HashMap::new(),
            home: 0,
            declared_by: 0,
            dying: false,
        }
    }

    /// Whether the queue's contents stay out of the replicated log: exclusive, auto-delete and
    /// non-durable queues. Their declaration, bindings and removal are logged like any queue's,
    /// but their messages and consumers live in memory only, in the broker of their home node.
    pub(crate) fn is_local(&self) -> bool {
        !self.durable || self.exclusive_owner.is_some() || self.auto_delete
    }

    /// Messages ready for delivery (what `queue.declare-ok` reports).
    pub(crate) fn ready_count(&self) -> u32 {
        u32::try_from(self.ready.len()).unwrap_or(u32::MAX)
    }

    /// Messages delivered and not yet settled.
    pub(crate) fn unacked_count(&self) -> u64 {
        self.checked_out.len() as u64
    }

    /// Bytes of the ready messages' bodies.
    pub(crate) fn ready_bytes(&self) -> u64 {
        self.ready_bytes
    }

    pub(crate) fn consumer_count(&self) -> u32 {
        u32::try_from(self.consumers.len()).unwrap_or(u32::MAX)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// Whether one more message of `len` bytes would exceed `x-max-length`/`x-max-length-bytes`.
    pub(crate) fn would_overflow(&self, len: u64) -> bool {
        self.args
            .max_length
            .is_some_and(|max| self.ready.len() as u64 >= max)
            || self
                .args
                .max_length_bytes
                .is_some_and(|max| self.ready_bytes + len > max)
    }

    /// Appends a message at the tail; returns its sequence number.
    pub(crate) fn push(
        &mut self,
        message: Payload,
        expiration_ms: Option<u64>,
        now: Millis,
    ) -> u64 {
        let ttl = match (self.args.message_ttl, expiration_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.counters.published += 1;
        self.ready_bytes += message.body_len();
        let entry = Entry::new(message, false, ttl.map(|t| now.saturating_add(t)));
        self.ready.push_back((seq, entry));
        seq
    }

    /// Puts a message back in the ready queue at its sequence number's place.
    fn insert_ready(&mut self, seq: u64, entry: Entry) {
        self.ready_bytes += entry.message.body_len();
        match self.ready.binary_search_by_key(&seq, |(s, _)| *s) {
            Ok(i) => {
                let (_, old) = std::mem::replace(&mut self.ready[i], (seq, entry));
                self.ready_bytes -= old.message.body_len();
            }
            Err(i) => self.ready.insert(i, (seq, entry)),
        }
    }

    /// Removes the oldest ready message (for drop-head overflow and expiry).
    pub(crate) fn drop_head(&mut self) -> Option<Entry> {
        let (_, entry) = self.ready.pop_front()?;
        self.ready_bytes -= entry.message.body_len();
        self.give_back_memory();
        Some(entry)
    }

    /// A queue that drained to a quarter of its ring's capacity halves it (amortized O(1) per
    /// message), so a backlog's index memory goes back as it is consumed and a memory alarm it
    /// raised can clear.
    fn give_back_memory(&mut self) {
        let capacity = self.ready.capacity();
        if capacity > 4096 && self.ready.len() < capacity / 4 {
            self.ready.shrink_to(capacity / 2);
        }
    }

    /// Peeks at the oldest ready message.
    pub(crate) fn head(&self) -> Option<&Entry> {
        self.ready.front().map(|(_, e)| e)
    }

    /// Takes the head message for delivery. If `settle` is false it is kept as checked out until
    /// [`Queue::settle`] or [`Queue::requeue`]; returns its sequence number and entry.
    pub(crate) fn checkout(&mut self, settle: bool) -> Option<(u64, Entry)> {
        let (seq, entry) = self.ready.pop_front()?;
        self.ready_bytes -= entry.message.body_len();
        self.give_back_memory();
        self.counters.delivered += 1;
        if entry.redelivered {
            self.counters.redelivered += 1;
        }
        if !settle {
            self.checked_out.insert(seq, entry.clone());
        }
        Some((seq, entry))
    }

    /// A message was acked (or rejected without requeue): it leaves the queue, whether this
    /// replica had it checked out or (replaying the log, or on a replica) still ready.
    pub(crate) fn settle(&mut self, seq: u64) -> Option<Entry> {
        if let Some(entry) = self.checked_out.remove(&seq) {
            self.counters.acked += 1;
            return Some(entry);
        }
        let i = self.ready.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        let (_, entry) = self.ready.remove(i)?;
        self.ready_bytes -= entry.message.body_len();
        self.give_back_memory();
        self.counters.acked += 1;
        Some(entry)
    }

    /// A checked-out message goes back to its original place, marked redelivered.
    pub(crate) fn requeue(&mut self, seq: u64) -> bool {
        match self.checked_out.remove(&seq) {
            Some(mut entry) => {
                entry.redelivered = true;
                self.insert_ready(seq, entry);
                true
            }
            None => false,
        }
    }

    /// Declared with `x-queue-type: quorum`.
    pub(crate) fn is_quorum(&self) -> bool {
        self.arguments
            .get("x-queue-type")
            .and_then(|v| v.as_str())
            .is_some_and(|t| t == "quorum")
    }

    /// After a restart: non-persistent messages are gone unless `keep_all` (a quorum queue),
    /// and every message left may have been delivered before, so it is marked redelivered
    /// (checked-out messages are ready again).
    pub(crate) fn keep_after_restart(&mut self, keep_all: bool) {
        self.release_checked_out();
        if !keep_all {
            self.ready.retain(|(_, e)| e.message.persistent());
        }
        for (_, e) in self.ready.iter_mut() {
            e.redelivered = true;
        }
        self.ready_bytes = self.ready.iter().map(|(_, e)| e.message.body_len()).sum();
    }

    /// Every checked-out message is ready again, in its place (its consumer is gone: a leader
    /// that stepped down).
    pub(crate) fn release_checked_out(&mut self) {
        let mut released: Vec<(u64, Entry)> =
            std::mem::take(&mut self.checked_out).into_iter().collect();
        released.sort_unstable_by_key(|(seq, _)| *seq);
        for (seq, entry) in released {
            self.insert_ready(seq, entry);
        }
    }

    /// Every message, ready or checked out, is marked redelivered (a leader change).
    pub(crate) fn mark_all_redelivered(&mut self) {
        let ready = self.ready.iter_mut().map(|(_, e)| e);
        for e in ready.chain(self.checked_out.values_mut()) {
            e.redelivered = true;
        }
    }

    /// Drops every ready message; returns how many (checked-out messages stay, as in RabbitMQ).
    pub(crate) fn purge(&mut self) -> u32 {
        let n = self.ready_count();
        self.ready.clear();
        self.ready_bytes = 0;
        n
    }

    /// Removes and returns the ready messages whose TTL has passed at `now`. Like RabbitMQ, only
    /// messages at the head are expired eagerly; a later one expires when it reaches the head.
    /// Whether the message at the head has expired at `now`.
    pub(crate) fn head_expired(&self, now: Millis) -> bool {
        self.head()
            .is_some_and(|e| e.expires_at().is_some_and(|at| at <= now))
    }

    pub(crate) fn expire(&mut self, now: Millis) -> Vec<Entry> {
        let mut expired = Vec::new();
        while let Some(entry) = self.head() {
            match entry.expires_at() {
                Some(at) if at <= now => {
                    if let Some(e) = self.drop_head() {
                        expired.push(e);
                    }
                }
                _ => break,
            }
        }
        expired
    }

    /// Every message still in the queue, ready or checked out, in sequence order (snapshots),
    /// without copying the ready ones.
    pub(crate) fn all_entries(&self) -> impl Iterator<Item = (u64, &Entry)> {
        let mut out: Vec<(u64, &Entry)> = self.checked_out.iter().map(|(s, e)| (*s, e)).collect();
        out.sort_unstable_by_key(|(s, _)| *s);
        MergeBySeq {
            ready: self.ready.iter().map(|(s, e)| (*s, e)).peekable(),
            out: out.into_iter().peekable(),
        }
    }

    /// The next sequence number this queue will give a message.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Replaces the queue's messages with `entries` (all ready), restoring from a snapshot.
    pub(crate) fn restore(&mut self, next_seq: u64, entries: Vec<(u64, Entry)>) {
        self.checked_out.clear();
        // Takes the vector's buffer as it is (no copy of a backlog's index).
        self.ready = VecDeque::from(entries);
        if !self
            .ready
            .iter()
            .zip(self.ready.iter().skip(1))
            .all(|(a, b)| a.0 < b.0)
        {
            self.ready
                .make_contiguous()
                .sort_unstable_by_key(|(s, _)| *s);
        }
        self.ready.shrink_to_fit();
        self.ready_bytes = self.ready.iter().map(|(_, e)| e.message.body_len()).sum();
        self.next_seq = next_seq;
    }

    pub(crate) fn remove_consumer(&mut self, consumer: &ConsumerRef) {
        self.consumers.retain(|c| c != consumer);
        if self.exclusive_consumer.as_ref() == Some(consumer) {
            self.exclusive_consumer = None;
        }
    }
}

/// Two iterators in ascending sequence order merged into one.
struct MergeBySeq<A: Iterator, B: Iterator> {
    ready: std::iter::Peekable<A>,
    out: std::iter::Peekable<B>,
}

impl<'a, A, B> Iterator for MergeBySeq<A, B>
where
    A: Iterator<Item = (u64, &'a Entry)>,
    B: Iterator<Item = (u64, &'a Entry)>,
{
    type Item = (u64, &'a Entry);

    fn next(&mut self) -> Option<Self::Item> {
        match (self.ready.peek(), self.out.peek()) {
            (Some(a), Some(b)) if b.0 < a.0 => self.out.next(),
            (Some(_), _) => self.ready.next(),
            (None, _) => self.out.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use bytes::Bytes;
    use std::sync::Arc;
    use warren_wire::BasicProperties;

    fn msg(body: &'static str) -> Payload {
        Payload::Loaded(Arc::new(Message {
            exchange: ShortStr::from(""),
            routing_key: ShortStr::from("q"),
            properties: BasicProperties::default(),
            body: Bytes::from_static(body.as_bytes()),
        }))
    }

    fn queue() -> Queue {
        let args = QueueArgs::default();
        Queue::new(
            1,
            "/".into(),
            "q".into(),
            false,
            None,
            false,
            FieldTable::default(),
            args,
            0,
        )
    }

    #[test]
    fn requeued_message_returns_to_its_original_place() {
        let mut q = queue();
        for b in ["1", "2", "3"] {
            q.push(msg(b), None, 0);
        }
        let (s1, _) = q.checkout(false).expect("1");
        let (s2, _) = q.checkout(false).expect("2");
        assert!(q.requeue(s2));
        assert!(q.requeue(s1));
        let order: Vec<_> = std::iter::from_fn(|| q.checkout(true))
            .map(|(_, e)| match e.message {
                Payload::Loaded(m) => (m.body.clone(), e.redelivered),
                Payload::Stored(_) => unreachable!("the test queues messages in memory"),
            })
            .collect();
        assert_eq!(
            order,
            vec![
                (Bytes::from_static(b"1"), true),
                (Bytes::from_static(b"2"), true),
                (Bytes::from_static(b"3"), false)
            ]
        );
    }

    #[test]
    fn settles_requeues_and_snapshots_keep_sequence_order() {
        let mut q = queue();
        for b in ["1", "2", "3", "4", "5", "6"] {
            q.push(msg(b), None, 0);
        }
        let (s1, _) = q.checkout(false).expect("1");
        let (s2, _) = q.checkout(false).expect("2");
        let (s3, _) = q.checkout(false).expect("3");
        // A replica settles a message it still has ready, in the middle of the queue.
        assert!(q.settle(5).is_some());
        assert!(q.settle(5).is_none(), "once");
        assert!(q.settle(s2).is_some());
        let seqs = |q: &Queue| q.all_entries().map(|(s, _)| s).collect::<Vec<_>>();
        assert_eq!(
            seqs(&q),
            vec![s1, s3, 4, 6],
            "checked out and ready, merged"
        );
        q.release_checked_out();
        assert_eq!(q.ready_count(), 4);
        assert_eq!(q.ready_bytes(), 4);
        let order: Vec<u64> = std::iter::from_fn(|| q.checkout(true).map(|(s, _)| s)).collect();
        assert_eq!(order, vec![s1, s3, 4, 6]);
        assert_eq!(q.ready_bytes(), 0);
    }

    #[test]
    fn a_drained_queue_gives_its_index_memory_back() {
        let mut q = queue();
        for _ in 0..100_000 {
            q.push(msg("x"), None, 0);
        }
        let full = q.ready.capacity();
        while q.ready_count() > 10 {
            q.checkout(true);
        }
        assert!(
            q.ready.capacity() <= 8192,
            "{} slots left of {full}",
            q.ready.capacity()
        );
        let order: Vec<u64> = std::iter::from_fn(|| q.checkout(true).map(|(s, _)| s)).collect();
        assert_eq!(order, (99_991..=100_000).collect::<Vec<u64>>(), "in order");
    }

    #[test]
    fn expiry_round_trips_including_time_zero() {
        for at in [None, Some(0), Some(1), Some(u64::MAX - 1)] {
            assert_eq!(Entry::new(msg("x"), false, at).expires_at(), at);
        }
        assert_eq!(
            std::mem::size_of::<Entry>(),
            32,
            "an index entry stays small"
        );
    }

    #[test]
    fn ttl_expires_only_from_the_head() {
        let mut q = queue();
        q.args.message_ttl = Some(10);
        q.push(msg("a"), None, 0);
        q.push(msg("b"), None, 5);
        assert_eq!(q.expire(9).len(), 0);
        assert_eq!(q.expire(10).len(), 1);
        assert_eq!(q.ready_count(), 1);
        assert_eq!(q.expire(15).len(), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn argument_validation_uses_rabbitmq_wording() {
        let mut t = FieldTable::default();
        t.insert("x-message-ttl", FieldValue::I32(-1));
        assert_eq!(
            QueueArgs::parse(&t),
            Err("invalid arg 'x-message-ttl' for queue: {value_negative,-1}".to_string())
        );
    }
}
