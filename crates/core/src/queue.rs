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
//!
//! A priority queue (`x-max-priority`) keeps one such ring per priority level: the highest
//! non-empty level delivers first, FIFO within a level, and a requeued message goes back to its
//! place in its own level, as RabbitMQ's classic priority queues do.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;

use warren_wire::{FieldTable, FieldValue, ShortStr};

use crate::consumers::QueueConsumers;

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
    /// The priority level it is queued at (0 unless the queue has `x-max-priority`); replicated.
    pub(crate) priority: u8,
    /// How many times a consumer gave it back (a quorum queue's `x-delivery-count`); replicated.
    pub(crate) delivery_count: u32,
    /// Absolute expiry plus one (so that `None` costs no space), if any.
    expiry: Option<NonZeroU64>,
}

impl Entry {
    pub(crate) fn new(message: Payload, redelivered: bool, expires_at: Option<Millis>) -> Entry {
        Entry {
            message,
            redelivered,
            priority: 0,
            delivery_count: 0,
            expiry: expires_at.and_then(|at| NonZeroU64::new(at.saturating_add(1))),
        }
    }

    /// The same entry at priority level `priority`.
    pub(crate) fn at_priority(mut self, priority: u8) -> Entry {
        self.priority = priority;
        self
    }

    /// Absolute expiry (from `x-message-ttl` or the `expiration` property), if any.
    pub(crate) fn expires_at(&self) -> Option<Millis> {
        self.expiry.map(|e| e.get() - 1)
    }

    /// When a stream's message was appended (a stream's entries keep it in the expiry slot).
    pub(crate) fn appended_at(&self) -> Option<Millis> {
        self.expires_at()
    }
}

/// Identifies a consumer anywhere in the cluster: the channel it lives on (a connection id
/// names its node: [`crate::node_of`]) and its tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConsumerRef {
    pub conn: ConnId,
    pub channel: ChannelId,
    pub tag: ShortStr,
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
    /// `x-max-priority`: the highest priority level (0..=255); `None` for a queue without.
    pub(crate) max_priority: Option<u8>,
    /// A quorum queue's `x-delivery-limit` (20 unless declared, as RabbitMQ 4.0); `None` for
    /// other queues, which do not count deliveries (as RabbitMQ's classic queues).
    pub(crate) delivery_limit: Option<u64>,
    /// `x-single-active-consumer`: only the first consumer (in the order they came) receives;
    /// the others wait until it goes.
    pub(crate) single_active_consumer: bool,
    /// `x-consumer-timeout` (ms): how long a delivery of this queue may stay unacked.
    pub(crate) consumer_timeout: Option<u64>,
    /// `x-queue-type: stream`: an append-only log that consumers read without removing.
    pub(crate) stream: bool,
    /// A stream's `x-max-age` (ms): messages appended longer ago go.
    pub(crate) max_age: Option<u64>,
}

/// RabbitMQ's `x-max-age` ("7D", "12h", "30m", "10s", "1Y", "2M") in ms.
pub(crate) fn parse_max_age(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let unit_ms: u64 = match unit {
        "Y" => 365 * 24 * 3_600_000,
        "M" => 30 * 24 * 3_600_000,
        "D" => 24 * 3_600_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// A quorum queue's delivery limit when its declaration names none (RabbitMQ 4.0's).
const DEFAULT_DELIVERY_LIMIT: u64 = 20;

/// The highest `x-max-priority` RabbitMQ accepts.
const MAX_SUPPORTED_PRIORITY: u64 = 255;

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
    "x-single-active-consumer",
    "x-delivery-limit",
];

impl QueueArgs {
    /// Parses and validates the arguments; the error is RabbitMQ's 406 text.
    pub(crate) fn parse(args: &FieldTable) -> Result<QueueArgs, String> {
        QueueArgs::parse_with(args, true)
    }

    /// [`QueueArgs::parse`] of a queue that exists already (a declaration applied from the log,
    /// a snapshot): versions before 9 took any `x-max-priority` and `x-delivery-limit` and
    /// ignored them, so one out of range gives a queue without priorities (or with the default
    /// delivery limit) instead of an error (a replayed log and a restored snapshot must give the
    /// queue they gave then).
    pub(crate) fn parse_existing(args: &FieldTable) -> Result<QueueArgs, String> {
        QueueArgs::parse_with(args, false)
    }

    fn parse_with(args: &FieldTable, strict_priority: bool) -> Result<QueueArgs, String> {
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
        let max_priority = non_negative("x-max-priority").and_then(|max| match max {
            None => Ok(None),
            Some(max) => match u8::try_from(max) {
                Ok(max) if u64::from(max) <= MAX_SUPPORTED_PRIORITY => Ok(Some(max)),
                _ => Err(format!(
                    "invalid arg 'x-max-priority' for queue: {{max_value_exceeded,{max}}}"
                )),
            },
        });
        parsed.max_priority = match max_priority {
            Ok(max) => max,
            Err(e) if strict_priority => return Err(e),
            Err(_) => None,
        };
        let delivery_limit = match non_negative("x-delivery-limit") {
            Ok(limit) => limit,
            Err(e) if strict_priority => return Err(e),
            Err(_) => None,
        };
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
        parsed.consumer_timeout = non_negative("x-consumer-timeout")?;
        if let Some(v) = args.get("x-single-active-consumer") {
            match v {
                FieldValue::Bool(b) => parsed.single_active_consumer = *b,
                other => {
                    return Err(format!(
                    "invalid arg 'x-single-active-consumer' for queue: {{unacceptable_type,{}}}",
                    type_name(other)
                ))
                }
            }
        }
        if let Some(v) = args.get("x-queue-type") {
            match v.as_str() {
                Some("classic") => {}
                Some("quorum") => {
                    parsed.delivery_limit = Some(delivery_limit.unwrap_or(DEFAULT_DELIVERY_LIMIT))
                }
                Some("stream") => {
                    parsed.stream = true;
                    if parsed.single_active_consumer {
                        return Err(
                            "invalid arg 'x-single-active-consumer' for queue: {unsupported,stream}"
                                .into(),
                        );
                    }
                    if let Some(v) = args.get("x-max-age") {
                        parsed.max_age =
                            Some(v.as_str().and_then(parse_max_age).ok_or_else(|| {
                                format!(
                                    "invalid arg 'x-max-age' for queue: {{invalid_max_age,{v:?}}}"
                                )
                            })?);
                    }
                }
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

/// A queue's ready messages: one ring per priority level (one for a queue without
/// `x-max-priority`), each ordered by sequence number.
#[derive(Debug)]
struct Ready {
    levels: Vec<VecDeque<(u64, Entry)>>,
    len: usize,
}

impl Ready {
    fn new(max_priority: Option<u8>) -> Ready {
        let count = max_priority.map_or(1, |m| usize::from(m) + 1);
        Ready {
            levels: (0..count).map(|_| VecDeque::new()).collect(),
            len: 0,
        }
    }

    /// The ring of `priority` (levels above the queue's maximum are its maximum).
    fn level(&self, priority: u8) -> usize {
        usize::from(priority).min(self.levels.len() - 1)
    }

    /// The highest non-empty level.
    fn top(&self) -> Option<usize> {
        self.levels.iter().rposition(|l| !l.is_empty())
    }

    fn push_back(&mut self, seq: u64, entry: Entry) {
        let level = self.level(entry.priority);
        self.levels[level].push_back((seq, entry));
        self.len += 1;
    }

    /// Puts `entry` at its sequence number's place in its level; returns the entry it
    /// replaced, if that number was there already.
    fn insert(&mut self, seq: u64, entry: Entry) -> Option<Entry> {
        let level = self.level(entry.priority);
        let ring = &mut self.levels[level];
        match ring.binary_search_by_key(&seq, |(s, _)| *s) {
            Ok(i) => Some(std::mem::replace(&mut ring[i], (seq, entry)).1),
            Err(i) => {
                ring.insert(i, (seq, entry));
                self.len += 1;
                None
            }
        }
    }

    fn pop_front(&mut self) -> Option<(u64, Entry)> {
        let top = self.top()?;
        let popped = self.levels[top].pop_front()?;
        self.len -= 1;
        self.give_back_memory(top);
        Some(popped)
    }

    /// Message `seq`, wherever it waits.
    fn get_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        let level = (0..self.levels.len()).rev().find(|&l| {
            self.levels[l]
                .binary_search_by_key(&seq, |(s, _)| *s)
                .is_ok()
        })?;
        let ring = &mut self.levels[level];
        let i = ring.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        ring.get_mut(i).map(|(_, e)| e)
    }

    /// Removes message `seq` wherever it waits.
    fn remove(&mut self, seq: u64) -> Option<Entry> {
        for level in (0..self.levels.len()).rev() {
            let ring = &mut self.levels[level];
            if let Ok(i) = ring.binary_search_by_key(&seq, |(s, _)| *s) {
                let (_, entry) = ring.remove(i)?;
                self.len -= 1;
                self.give_back_memory(level);
                return Some(entry);
            }
        }
        None
    }

    /// A level that drained to a quarter of its ring's capacity halves it (amortized O(1) per
    /// message), so a backlog's index memory goes back as it is consumed and a memory alarm it
    /// raised can clear.
    fn give_back_memory(&mut self, level: usize) {
        let ring = &mut self.levels[level];
        let capacity = ring.capacity();
        if capacity > 4096 && ring.len() < capacity / 4 {
            ring.shrink_to(capacity / 2);
        }
    }

    /// The heads of the non-empty levels, highest level first.
    fn heads(&self) -> impl Iterator<Item = &(u64, Entry)> {
        self.levels.iter().rev().filter_map(|l| l.front())
    }

    /// Removes the head of the highest level whose head `f` picks.
    fn pop_head_where(&mut self, f: impl Fn(&Entry) -> bool) -> Option<(u64, Entry)> {
        let level = (0..self.levels.len())
            .rev()
            .find(|&l| self.levels[l].front().is_some_and(|(_, e)| f(e)))?;
        let popped = self.levels[level].pop_front()?;
        self.len -= 1;
        self.give_back_memory(level);
        Some(popped)
    }

    fn clear(&mut self) {
        for l in &mut self.levels {
            l.clear();
        }
        self.len = 0;
    }

    fn retain(&mut self, f: impl Fn(&Entry) -> bool) {
        for l in &mut self.levels {
            l.retain(|(_, e)| f(e));
        }
        self.len = self.levels.iter().map(VecDeque::len).sum();
    }

    fn entries_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.levels
            .iter_mut()
            .flat_map(|l| l.iter_mut().map(|(_, e)| e))
    }

    fn bytes(&self) -> u64 {
        self.levels
            .iter()
            .flat_map(|l| l.iter())
            .map(|(_, e)| e.message.body_len())
            .sum()
    }

    /// Every ready message in ascending sequence order (a priority queue's levels merged).
    fn by_seq(&self) -> Box<dyn Iterator<Item = (u64, &Entry)> + '_> {
        match self.levels.as_slice() {
            [only] => Box::new(only.iter().map(|(s, e)| (*s, e))),
            levels => {
                let mut all: Vec<(u64, &Entry)> = levels
                    .iter()
                    .flat_map(|l| l.iter().map(|(s, e)| (*s, e)))
                    .collect();
                all.sort_unstable_by_key(|(s, _)| *s);
                Box::new(all.into_iter())
            }
        }
    }

    /// Replaces every message with `entries` (any order).
    fn restore(&mut self, entries: Vec<(u64, Entry)>) {
        let sorted =
            |v: &VecDeque<(u64, Entry)>| v.iter().zip(v.iter().skip(1)).all(|(a, b)| a.0 < b.0);
        if self.levels.len() == 1 {
            // Takes the vector's buffer as it is (no copy of a backlog's index).
            self.levels[0] = VecDeque::from(entries);
        } else {
            self.clear();
            for (seq, entry) in entries {
                let level = self.level(entry.priority);
                self.levels[level].push_back((seq, entry));
            }
        }
        for ring in &mut self.levels {
            if !sorted(ring) {
                ring.make_contiguous().sort_unstable_by_key(|(s, _)| *s);
            }
            ring.shrink_to_fit();
        }
        self.len = self.levels.iter().map(VecDeque::len).sum();
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
    /// Ready messages by priority level and sequence number.
    ready: Ready,
    ready_bytes: u64,
    checked_out: HashMap<u64, Entry>,
    next_seq: u64,
    /// Its consumers, their order, priorities and credit (see [`QueueConsumers`]).
    pub(crate) consumers: QueueConsumers,
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
    /// The policy and operator policy it follows, and the definition they give it together
    /// (computed from the replicated policies: see `crate::policy`).
    pub(crate) policy: Option<String>,
    pub(crate) operator_policy: Option<String>,
    pub(crate) effective_policy: FieldTable,
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
            ready: Ready::new(args.max_priority),
            args,
            ready_bytes: 0,
            checked_out: HashMap::new(),
            next_seq: 1,
            consumers: QueueConsumers::default(),
            had_consumer: false,
            last_used: now,
            counters: Default::default(),
            published_from: HashMap::new(),
            home: 0,
            declared_by: 0,
            dying: false,
            policy: None,
            operator_policy: None,
            effective_policy: FieldTable::default(),
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
        u32::try_from(self.ready.len).unwrap_or(u32::MAX)
    }

    /// Messages delivered and not yet settled.
    pub(crate) fn unacked_count(&self) -> u64 {
        self.checked_out.len() as u64
    }

    /// Bytes of the ready messages' bodies.
    pub(crate) fn ready_bytes(&self) -> u64 {
        self.ready_bytes
    }

    /// The consumer that receives from a single-active-consumer queue (the first that came).
    pub(crate) fn single_active_consumer(&self) -> Option<&ConsumerRef> {
        self.args
            .single_active_consumer
            .then(|| self.consumers.front())
            .flatten()
    }

    pub(crate) fn consumer_count(&self) -> u32 {
        u32::try_from(self.consumers.len()).unwrap_or(u32::MAX)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ready.len == 0
    }

    /// Whether the ready messages exceed `x-max-length` or `x-max-length-bytes` (a limit lowered
    /// by a policy).
    pub(crate) fn over_length_limit(&self) -> bool {
        self.args
            .max_length
            .is_some_and(|max| self.ready.len as u64 > max)
            || self
                .args
                .max_length_bytes
                .is_some_and(|max| self.ready_bytes > max)
    }

    /// Whether one more message of `len` bytes would exceed `x-max-length`/`x-max-length-bytes`.
    pub(crate) fn would_overflow(&self, len: u64) -> bool {
        self.args
            .max_length
            .is_some_and(|max| self.ready.len as u64 >= max)
            || self
                .args
                .max_length_bytes
                .is_some_and(|max| self.ready_bytes + len > max)
    }

    /// Appends a message at the tail of priority level `priority` (capped at the queue's
    /// `x-max-priority`; 0 for a queue without); returns its sequence number.
    pub(crate) fn push(
        &mut self,
        message: Payload,
        expiration_ms: Option<u64>,
        priority: u8,
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
        let level = self.args.max_priority.map_or(0, |max| priority.min(max));
        // A stream's messages never expire one by one: the slot keeps when each was appended
        // (for `x-max-age` and timestamp offsets).
        let expiry = if self.args.stream {
            Some(now)
        } else {
            ttl.map(|t| now.saturating_add(t))
        };
        let entry = Entry::new(message, false, expiry).at_priority(level);
        self.ready.push_back(seq, entry);
        seq
    }

    /// Puts a message back in the ready queue at its sequence number's place.
    fn insert_ready(&mut self, seq: u64, entry: Entry) {
        self.ready_bytes += entry.message.body_len();
        if let Some(old) = self.ready.insert(seq, entry) {
            self.ready_bytes -= old.message.body_len();
        }
    }

    /// Removes the next message to be delivered (for drop-head overflow).
    pub(crate) fn drop_head(&mut self) -> Option<Entry> {
        let (_, entry) = self.ready.pop_front()?;
        self.ready_bytes -= entry.message.body_len();
        Some(entry)
    }

    /// Takes the head message for delivery. If `settle` is false it is kept as checked out until
    /// [`Queue::settle`] or [`Queue::requeue`]; returns its sequence number and entry.
    pub(crate) fn checkout(&mut self, settle: bool) -> Option<(u64, Entry)> {
        let (seq, entry) = self.ready.pop_front()?;
        self.ready_bytes -= entry.message.body_len();
        self.counters.delivered += 1;
        if entry.redelivered {
            self.counters.redelivered += 1;
        }
        if !settle {
            self.checked_out.insert(seq, entry.clone());
        }
        Some((seq, entry))
    }

    /// Checks out message `seq` if it is ready (a consumer attaching again with the deliveries
    /// it holds from an earlier owner: see `QueueCommand::Consume`); false if it is not.
    pub(crate) fn checkout_seq(&mut self, seq: u64) -> bool {
        let Some(entry) = self.ready.remove(seq) else {
            return false;
        };
        self.ready_bytes -= entry.message.body_len();
        self.checked_out.insert(seq, entry);
        true
    }

    /// A message was acked (or rejected without requeue): it leaves the queue, whether this
    /// replica had it checked out or (replaying the log, or on a replica) still ready.
    pub(crate) fn settle(&mut self, seq: u64) -> Option<Entry> {
        if let Some(entry) = self.checked_out.remove(&seq) {
            self.counters.acked += 1;
            return Some(entry);
        }
        let entry = self.ready.remove(seq)?;
        self.ready_bytes -= entry.message.body_len();
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

    /// A delivered message came back from its consumer ([`crate::Op::Return`]): its delivery
    /// count goes up by one, wherever it is on this replica (checked out on the broker that
    /// delivered it, which puts it back at its place; still ready on the others). Past the
    /// delivery limit it leaves the queue instead and is returned, to be dead-lettered.
    pub(crate) fn give_back(&mut self, seq: u64) -> Option<Entry> {
        let limit = self.args.delivery_limit;
        let over = |e: &Entry| limit.is_some_and(|l| u64::from(e.delivery_count) > l);
        if let Some(mut entry) = self.checked_out.remove(&seq) {
            entry.delivery_count = entry.delivery_count.saturating_add(1);
            entry.redelivered = true;
            if over(&entry) {
                return Some(entry);
            }
            self.insert_ready(seq, entry);
            return None;
        }
        let entry = self.ready.get_mut(seq)?;
        entry.delivery_count = entry.delivery_count.saturating_add(1);
        entry.redelivered = true;
        if over(entry) {
            let entry = self.ready.remove(seq)?;
            self.ready_bytes -= entry.message.body_len();
            return Some(entry);
        }
        None
    }

    /// Declared with `x-queue-type: stream`.
    pub(crate) fn is_stream(&self) -> bool {
        self.args.stream
    }

    /// A stream's oldest retained sequence number (`next_seq` when it holds none).
    pub(crate) fn first_seq(&self) -> u64 {
        self.ready.levels[0]
            .front()
            .map_or(self.next_seq, |(s, _)| *s)
    }

    /// A stream's message `seq`, if it is still retained.
    pub(crate) fn stream_entry(&self, seq: u64) -> Option<&Entry> {
        let ring = &self.ready.levels[0];
        let i = ring.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        ring.get(i).map(|(_, e)| e)
    }

    /// A stream's first sequence number appended at or after `at` (`next_seq` if none).
    pub(crate) fn stream_seq_at(&self, at: Millis) -> u64 {
        self.ready.levels[0]
            .iter()
            .find(|(_, e)| e.appended_at().is_some_and(|t| t >= at))
            .map_or(self.next_seq, |(s, _)| *s)
    }

    /// A stream drops what its retention (`x-max-length-bytes`, `x-max-length`) no longer
    /// keeps, oldest first.
    pub(crate) fn apply_retention(&mut self) {
        while self.over_length_limit() {
            if self.drop_head().is_none() {
                break;
            }
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
            self.ready.retain(|e| e.message.persistent());
        }
        for e in self.ready.entries_mut() {
            e.redelivered = true;
        }
        self.ready_bytes = self.ready.bytes();
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
        let ready = self.ready.entries_mut();
        for e in ready.chain(self.checked_out.values_mut()) {
            e.redelivered = true;
        }
    }

    /// Drops every ready message; returns how many (checked-out messages stay, as in RabbitMQ).
    /// The sequence numbers of the ready messages, in order.
    pub(crate) fn ready_seqs(&self) -> Vec<u64> {
        let mut seqs: Vec<u64> = self.ready.by_seq().map(|(seq, _)| seq).collect();
        seqs.sort_unstable();
        seqs
    }

    pub(crate) fn purge(&mut self) -> u32 {
        let n = self.ready_count();
        self.ready.clear();
        self.ready_bytes = 0;
        n
    }

    /// Whether the message at a head (of a priority level) has expired at `now`.
    pub(crate) fn head_expired(&self, now: Millis) -> bool {
        if self.args.stream {
            return self.stream_head_too_old(now);
        }
        self.ready
            .heads()
            .any(|(_, e)| e.expires_at().is_some_and(|at| at <= now))
    }

    /// A stream's oldest message is older than its `x-max-age` at `now`.
    fn stream_head_too_old(&self, now: Millis) -> bool {
        let Some(age) = self.args.max_age else {
            return false;
        };
        self.ready.levels[0].front().is_some_and(|(_, e)| {
            e.appended_at()
                .is_some_and(|at| at.saturating_add(age) <= now)
        })
    }

    /// Removes and returns the ready messages whose TTL has passed at `now`. Like RabbitMQ, only
    /// messages at the head (of each priority level) are expired eagerly; a later one expires
    /// when it reaches the head.
    pub(crate) fn expire(&mut self, now: Millis) -> Vec<Entry> {
        let mut expired = Vec::new();
        if self.args.stream {
            // Retention, not expiry: what is older than x-max-age goes, without dead-lettering.
            while self.stream_head_too_old(now) {
                self.drop_head();
            }
            return expired;
        }
        while let Some((_, e)) = self
            .ready
            .pop_head_where(|e| e.expires_at().is_some_and(|at| at <= now))
        {
            self.ready_bytes -= e.message.body_len();
            expired.push(e);
        }
        expired
    }

    /// Every message still in the queue, ready or checked out, in sequence order (snapshots),
    /// without copying the ready ones.
    pub(crate) fn all_entries(&self) -> impl Iterator<Item = (u64, &Entry)> {
        let mut out: Vec<(u64, &Entry)> = self.checked_out.iter().map(|(s, e)| (*s, e)).collect();
        out.sort_unstable_by_key(|(s, _)| *s);
        MergeBySeq {
            ready: self.ready.by_seq().peekable(),
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
        self.ready.restore(entries);
        self.ready_bytes = self.ready.bytes();
        self.next_seq = next_seq;
    }

    pub(crate) fn remove_consumer(&mut self, consumer: &ConsumerRef) {
        self.consumers.remove(consumer);
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
            q.push(msg(b), None, 0, 0);
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
            q.push(msg(b), None, 0, 0);
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
            q.push(msg("x"), None, 0, 0);
        }
        let full = q.ready.levels[0].capacity();
        while q.ready_count() > 10 {
            q.checkout(true);
        }
        assert!(
            q.ready.levels[0].capacity() <= 8192,
            "{} slots left of {full}",
            q.ready.levels[0].capacity()
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
        q.push(msg("a"), None, 0, 0);
        q.push(msg("b"), None, 0, 5);
        assert_eq!(q.expire(9).len(), 0);
        assert_eq!(q.expire(10).len(), 1);
        assert_eq!(q.ready_count(), 1);
        assert_eq!(q.expire(15).len(), 1);
        assert!(q.is_empty());
    }

    fn priority_queue(max: u8) -> Queue {
        let mut q = queue();
        q.args.max_priority = Some(max);
        q.ready = Ready::new(Some(max));
        q
    }

    fn bodies(q: &mut Queue) -> Vec<String> {
        std::iter::from_fn(|| q.checkout(true))
            .map(|(_, e)| match e.message {
                Payload::Loaded(m) => String::from_utf8_lossy(&m.body).into_owned(),
                Payload::Stored(_) => unreachable!("the test queues messages in memory"),
            })
            .collect()
    }

    #[test]
    fn higher_priorities_first_fifo_within_one_and_above_the_maximum_counts_as_it() {
        let mut q = priority_queue(5);
        for (body, priority) in [
            ("a1", 1),
            ("b0", 0),
            ("c9", 9),
            ("d1", 1),
            ("e5", 5),
            ("f0", 0),
        ] {
            q.push(msg(body), None, priority, 0);
        }
        assert_eq!(q.ready_count(), 6);
        assert_eq!(q.ready_bytes(), 12);
        assert_eq!(bodies(&mut q), ["c9", "e5", "a1", "d1", "b0", "f0"]);
        assert_eq!(q.ready_bytes(), 0);
    }

    #[test]
    fn a_queue_without_max_priority_ignores_priorities() {
        let mut q = queue();
        for (body, priority) in [("a", 1), ("b", 9), ("c", 0)] {
            q.push(msg(body), None, priority, 0);
        }
        assert_eq!(bodies(&mut q), ["a", "b", "c"]);
    }

    #[test]
    fn a_requeued_message_goes_back_to_its_place_within_its_priority() {
        let mut q = priority_queue(2);
        for (body, priority) in [("h1", 2), ("l1", 0), ("h2", 2), ("l2", 0)] {
            q.push(msg(body), None, priority, 0);
        }
        let (h1, _) = q.checkout(false).expect("h1");
        let (h2, _) = q.checkout(false).expect("h2");
        let (l1, _) = q.checkout(false).expect("l1");
        assert!(q.requeue(l1));
        assert!(q.requeue(h2));
        assert!(q.requeue(h1));
        assert_eq!(bodies(&mut q), ["h1", "h2", "l1", "l2"]);
    }

    #[test]
    fn a_priority_queue_settles_snapshots_and_restores_by_sequence_number() {
        let mut q = priority_queue(3);
        for (body, priority) in [("a", 0), ("b", 3), ("c", 1), ("d", 3), ("e", 0)] {
            q.push(msg(body), None, priority, 0);
        }
        // A replica settles a ready message of a middle level.
        assert!(q.settle(3).is_some(), "c");
        let (s, _) = q.checkout(false).expect("b");
        assert_eq!(s, 2);
        let all: Vec<(u64, u8)> = q.all_entries().map(|(s, e)| (s, e.priority)).collect();
        assert_eq!(
            all,
            [(1, 0), (2, 3), (4, 3), (5, 0)],
            "merged in sequence order"
        );
        let entries: Vec<(u64, Entry)> = q.all_entries().map(|(s, e)| (s, e.clone())).collect();
        let mut restored = priority_queue(3);
        restored.restore(6, entries);
        assert_eq!(restored.ready_count(), 4);
        assert_eq!(bodies(&mut restored), ["b", "d", "a", "e"]);
    }

    #[test]
    fn ttl_expires_the_head_of_every_priority_level() {
        let mut q = priority_queue(1);
        q.args.message_ttl = Some(10);
        q.push(msg("low"), None, 0, 0);
        q.push(msg("high"), None, 1, 20);
        assert!(q.head_expired(10));
        let expired = q.expire(10);
        assert_eq!(
            expired.len(),
            1,
            "the low level's head, under a live high one"
        );
        assert_eq!(q.ready_count(), 1);
        assert_eq!(q.ready_bytes(), 4);
        assert_eq!(bodies(&mut q), ["high"]);
    }

    #[test]
    fn max_priority_is_checked_as_rabbitmq_checks_it() {
        let parse = |v: FieldValue| {
            let mut t = FieldTable::default();
            t.insert("x-max-priority", v);
            QueueArgs::parse(&t).map(|a| a.max_priority)
        };
        assert_eq!(parse(FieldValue::I32(10)), Ok(Some(10)));
        assert_eq!(parse(FieldValue::U8(255)), Ok(Some(255)));
        // RabbitMQ takes 0 (a queue with one level).
        assert_eq!(parse(FieldValue::I64(0)), Ok(Some(0)));
        assert_eq!(
            parse(FieldValue::I32(300)),
            Err("invalid arg 'x-max-priority' for queue: {max_value_exceeded,300}".to_string())
        );
        assert_eq!(
            parse(FieldValue::I32(-1)),
            Err("invalid arg 'x-max-priority' for queue: {value_negative,-1}".to_string())
        );
        assert_eq!(
            parse(FieldValue::LongStr("10".into())),
            Err("invalid arg 'x-max-priority' for queue: {unacceptable_type,longstr}".to_string())
        );
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
