//! What this node's AMQP clients did, counted where their sockets are, as RabbitMQ's channels and
//! readers count it: the figures of its global counters (`rabbit_global_counters`), connection
//! and channel churn, login attempts and the sizes of published messages (`rabbit_msg_size_metrics`).
//! [`ClientCounters`] holds the node's atomics (one per node, shared by every connection task,
//! relaxed adds, no lock); [`Tally`] is one connection's bookkeeping that tells what a frame counts
//! as (confirm mode, a consumer's ack mode, the delivery tags still to be acked). Not replicated,
//! not persisted: the figures say what this node's clients did since it started.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use warren_core::ChannelId;
use warren_wire::{BasicCancel, BasicCancelOk, Method, ShortStr};

/// Upper bounds of the message size buckets in bytes (Prometheus `le`), RabbitMQ's
/// (`rabbit_msg_size_metrics`); a last bucket is `+Inf`.
pub const MESSAGE_SIZE_BUCKETS: [u64; 8] = [
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
];

/// The node's counters of what its AMQP clients did; see [`ClientCounters::read`].
#[derive(Debug, Default)]
pub struct ClientCounters {
    messages_received: AtomicU64,
    messages_received_confirm: AtomicU64,
    messages_confirmed: AtomicU64,
    messages_unroutable_returned: AtomicU64,
    delivered_consume_manual_ack: AtomicU64,
    delivered_consume_auto_ack: AtomicU64,
    delivered_get_manual_ack: AtomicU64,
    delivered_get_auto_ack: AtomicU64,
    get_empty: AtomicU64,
    acknowledged: AtomicU64,
    connections_opened: AtomicU64,
    connections_closed: AtomicU64,
    channels_opened: AtomicU64,
    channels_closed: AtomicU64,
    auth_succeeded: AtomicU64,
    auth_failed: AtomicU64,
    flow_pauses: AtomicU64,
    queues_declared: AtomicU64,
    queues_created: AtomicU64,
    queues_deleted: AtomicU64,
    messages_unroutable_dropped: AtomicU64,
    /// Per bucket of [`MESSAGE_SIZE_BUCKETS`], then `+Inf` (not cumulative).
    message_sizes: [AtomicU64; MESSAGE_SIZE_BUCKETS.len() + 1],
    message_bytes: AtomicU64,
}

impl ClientFigures {
    /// The counts a node reports in its status (the console's charts per node).
    pub fn totals(&self) -> warren_proto::raft::ClientTotals {
        warren_proto::raft::ClientTotals {
            published: self.messages_received,
            confirmed: self.messages_confirmed,
            delivered: self.delivered_consume_manual_ack
                + self.delivered_consume_auto_ack
                + self.delivered_get_manual_ack
                + self.delivered_get_auto_ack,
            acked: self.acknowledged,
        }
    }
}

/// A reading of [`ClientCounters`], named as RabbitMQ's metrics are (without `rabbitmq_global_`
/// and `_total`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientFigures {
    /// `basic.publish`es received (with their content), confirm mode or not.
    pub messages_received: u64,
    /// Of those, the ones on a channel in confirm or tx mode (RabbitMQ counts both).
    pub messages_received_confirm: u64,
    /// Publishes confirmed with `basic.ack` (one `multiple` ack counts every publish it confirms;
    /// nacks are not counted).
    pub messages_confirmed: u64,
    /// `basic.return`s sent.
    pub messages_unroutable_returned: u64,
    pub delivered_consume_manual_ack: u64,
    pub delivered_consume_auto_ack: u64,
    pub delivered_get_manual_ack: u64,
    pub delivered_get_auto_ack: u64,
    /// `basic.get-empty`s sent.
    pub get_empty: u64,
    /// Deliveries acknowledged with `basic.ack` (in a transaction: when it commits).
    pub acknowledged: u64,
    /// Connections that reached `connection.open-ok`.
    pub connections_opened: u64,
    /// Connections that ended, whether or not they were opened (RabbitMQ's reader counts every
    /// connection it served).
    pub connections_closed: u64,
    pub channels_opened: u64,
    pub channels_closed: u64,
    pub auth_attempts_succeeded: u64,
    pub auth_attempts_failed: u64,
    /// Times a connection was paused by credit flow (`warren_core::Effect::Flow`): Warren's
    /// own figure (RabbitMQ shows the state, not a count).
    pub flow_pauses: u64,
    /// `queue.declare`s (not passive) this node's clients sent.
    pub queues_declared: u64,
    /// Queues created, and removed, that this node's clients declared (the core's count:
    /// `warren_core::Churn`).
    pub queues_created: u64,
    pub queues_deleted: u64,
    /// Publishes, not mandatory, that no queue took (the core's count).
    pub messages_unroutable_dropped: u64,
    pub message_sizes: MessageSizes,
}

/// Sizes of the message bodies received: cumulative counts per bucket of
/// [`MESSAGE_SIZE_BUCKETS`] then `+Inf` (the count of all), and the sum of the sizes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageSizes {
    pub cumulative: [u64; MESSAGE_SIZE_BUCKETS.len() + 1],
    pub sum: u64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl ClientCounters {
    /// The counters as they are now (each read on its own: a scrape during traffic may see one
    /// counter a message ahead of another).
    pub fn read(&self) -> ClientFigures {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut total = 0;
        let cumulative = std::array::from_fn(|i| {
            total += get(&self.message_sizes[i]);
            total
        });
        ClientFigures {
            messages_received: get(&self.messages_received),
            messages_received_confirm: get(&self.messages_received_confirm),
            messages_confirmed: get(&self.messages_confirmed),
            messages_unroutable_returned: get(&self.messages_unroutable_returned),
            delivered_consume_manual_ack: get(&self.delivered_consume_manual_ack),
            delivered_consume_auto_ack: get(&self.delivered_consume_auto_ack),
            delivered_get_manual_ack: get(&self.delivered_get_manual_ack),
            delivered_get_auto_ack: get(&self.delivered_get_auto_ack),
            get_empty: get(&self.get_empty),
            acknowledged: get(&self.acknowledged),
            connections_opened: get(&self.connections_opened),
            connections_closed: get(&self.connections_closed),
            channels_opened: get(&self.channels_opened),
            channels_closed: get(&self.channels_closed),
            auth_attempts_succeeded: get(&self.auth_succeeded),
            auth_attempts_failed: get(&self.auth_failed),
            flow_pauses: get(&self.flow_pauses),
            queues_declared: get(&self.queues_declared),
            queues_created: get(&self.queues_created),
            queues_deleted: get(&self.queues_deleted),
            messages_unroutable_dropped: get(&self.messages_unroutable_dropped),
            message_sizes: MessageSizes {
                cumulative,
                sum: get(&self.message_bytes),
            },
        }
    }

    /// Adds what the core counted (see `warren_core::Churn`).
    pub(crate) fn add_churn(&self, churn: warren_core::Churn) {
        add(&self.queues_created, churn.queues_created);
        add(&self.queues_deleted, churn.queues_deleted);
        add(&self.messages_unroutable_dropped, churn.unroutable_dropped);
    }

    fn message_size(&self, size: u64) {
        let i = MESSAGE_SIZE_BUCKETS
            .iter()
            .position(|&b| size <= b)
            .unwrap_or(MESSAGE_SIZE_BUCKETS.len());
        add(&self.message_sizes[i], 1);
        add(&self.message_bytes, size);
    }
}

/// How a channel's publishes are answered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Mode {
    #[default]
    Plain,
    Confirm,
    Tx,
}

/// An ack (or nack, reject) from the client, held while its transaction is open.
#[derive(Debug, Clone, Copy)]
struct Settle {
    tag: u64,
    multiple: bool,
    ack: bool,
}

/// What a connection's [`Tally`] knows of one of its channels (from `channel.open` received until
/// it closes).
#[derive(Debug, Default)]
struct ChannelTally {
    /// `channel.open-ok` was sent: its end counts as a channel closed.
    opened: bool,
    mode: Mode,
    /// `no_ack` of each consumer, by consumer tag.
    consumers: HashMap<ShortStr, bool>,
    /// `no_ack` of the consumes that asked the server to name them, in order: each
    /// `basic.consume-ok` with a tag not yet known answers the first.
    naming: VecDeque<bool>,
    /// `no_ack` of each `basic.get` not yet answered, in order (a channel's gets are answered in
    /// the order they were asked).
    gets: VecDeque<bool>,
    /// Delivery tags sent to the client that it must still ack, ascending.
    unacked: VecDeque<u64>,
    /// Settlements of the open transaction: they take effect when it commits.
    tx: Vec<Settle>,
}

impl ChannelTally {
    /// Removes what a settlement covers from `unacked`, as the core does (a `multiple` one
    /// with a tag that is not outstanding settles nothing: the channel is closed for it), and
    /// returns how many deliveries it settled.
    fn settle(&mut self, tag: u64, multiple: bool) -> u64 {
        let unacked = &mut self.unacked;
        if multiple {
            if tag != 0 && unacked.binary_search(&tag).is_err() {
                return 0;
            }
            let upto = if tag == 0 { u64::MAX } else { tag };
            let n = unacked.partition_point(|&t| t <= upto);
            unacked.drain(..n);
            return n as u64;
        }
        if unacked.front() == Some(&tag) {
            unacked.pop_front();
            return 1;
        }
        match unacked.binary_search(&tag) {
            Ok(i) => {
                unacked.remove(i);
                1
            }
            Err(_) => 0,
        }
    }

    /// A delivery the client must ack.
    fn await_ack(&mut self, tag: u64) {
        match self.unacked.back() {
            Some(&last) if last >= tag => {
                let i = self.unacked.partition_point(|&t| t < tag);
                if self.unacked.get(i) != Some(&tag) {
                    self.unacked.insert(i, tag);
                }
            }
            _ => self.unacked.push_back(tag),
        }
    }
}

/// One connection's share of the node's [`ClientCounters`]: fed the frames its session reads
/// and writes, it adds to the counters what each one counts as. When it is dropped (the
/// connection's task ended), the connection and its channels still open count as closed.
#[derive(Debug)]
pub(crate) struct Tally {
    counters: Arc<ClientCounters>,
    channels: HashMap<ChannelId, ChannelTally>,
    /// A login was handed to the core and not yet answered.
    login_pending: bool,
}

impl Tally {
    pub(crate) fn new(counters: Arc<ClientCounters>) -> Tally {
        Tally {
            counters,
            channels: HashMap::new(),
            login_pending: false,
        }
    }

    /// Adds to `counters` from now on (before the connection does anything).
    pub(crate) fn set_counters(&mut self, counters: Arc<ClientCounters>) {
        self.counters = counters;
    }

    /// A login went to the core: its answer is an attempt that succeeded or failed.
    pub(crate) fn login_submitted(&mut self) {
        self.login_pending = true;
    }

    /// A login whose SASL response could not be read (a failed attempt, as RabbitMQ counts it).
    pub(crate) fn login_unreadable(&mut self) {
        add(&self.counters.auth_failed, 1);
    }

    /// The core accepted the login.
    pub(crate) fn authenticated(&mut self) {
        if std::mem::take(&mut self.login_pending) {
            add(&self.counters.auth_succeeded, 1);
        }
    }

    /// The core paused the connection for credit flow.
    pub(crate) fn flow_paused(&mut self) {
        add(&self.counters.flow_pauses, 1);
    }

    /// The core closed the connection: a refusal if it was deciding a login.
    pub(crate) fn connection_closed_by_server(&mut self) {
        if std::mem::take(&mut self.login_pending) {
            add(&self.counters.auth_failed, 1);
        }
    }

    /// A `basic.publish` with its content was received on `channel`; `size` is its body's size,
    /// `None` when it was refused as larger than the maximum (RabbitMQ counts it received, not
    /// its size).
    pub(crate) fn published(&mut self, channel: ChannelId, size: Option<u64>) {
        let c = &self.counters;
        add(&c.messages_received, 1);
        if self
            .channels
            .get(&channel)
            .is_some_and(|ch| ch.mode != Mode::Plain)
        {
            add(&c.messages_received_confirm, 1);
        }
        if let Some(size) = size {
            c.message_size(size);
        }
    }

    /// The client sent `channel.open` on `channel`.
    pub(crate) fn channel_opening(&mut self, channel: ChannelId) {
        self.channels.insert(channel, ChannelTally::default());
    }

    /// A method the client sent on an open `channel`, before the core sees it.
    pub(crate) fn received(&mut self, channel: ChannelId, method: &Method) {
        match method {
            Method::BasicAck(m) => return self.settle(channel, m.delivery_tag, m.multiple, true),
            Method::BasicNack(m) => return self.settle(channel, m.delivery_tag, m.multiple, false),
            Method::BasicReject(m) => return self.settle(channel, m.delivery_tag, false, false),
            _ => {}
        }
        if let Method::QueueDeclare(m) = method {
            if !m.passive {
                add(&self.counters.queues_declared, 1);
            }
        }
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        match method {
            Method::ConfirmSelect(_) => ch.mode = Mode::Confirm,
            Method::TxSelect(_) => ch.mode = Mode::Tx,
            Method::BasicConsume(m) => {
                if !m.consumer_tag.is_empty() {
                    ch.consumers.insert(m.consumer_tag.clone(), m.no_ack);
                } else if !m.nowait {
                    ch.naming.push_back(m.no_ack);
                }
            }
            Method::BasicGet(m) => ch.gets.push_back(m.no_ack),
            // Every unacked delivery goes back to its queue (`requeue=false` is refused and closes
            // the channel).
            Method::BasicRecover(_) | Method::BasicRecoverAsync(_) => ch.unacked.clear(),
            _ => {}
        }
    }

    fn settle(&mut self, channel: ChannelId, tag: u64, multiple: bool, ack: bool) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if ch.mode == Mode::Tx {
            ch.tx.push(Settle { tag, multiple, ack });
            return;
        }
        let n = ch.settle(tag, multiple);
        if ack {
            add(&self.counters.acknowledged, n);
        }
    }

    /// A content-less method was sent to the client on `channel`.
    pub(crate) fn sent(&mut self, channel: ChannelId, method: &Method) {
        let c = &self.counters;
        if channel == 0 {
            if let Method::ConnectionOpenOk(_) = method {
                add(&c.connections_opened, 1);
            }
            return;
        }
        if let Method::ChannelCloseOk(_) = method {
            return self.channel_closed(channel);
        }
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        match method {
            Method::ChannelOpenOk(_) => {
                ch.opened = true;
                add(&c.channels_opened, 1);
            }
            // A consume that named its consumer was recorded when it came.
            Method::BasicConsumeOk(m) if !ch.consumers.contains_key(&m.consumer_tag) => {
                let no_ack = ch.naming.pop_front().unwrap_or(false);
                ch.consumers.insert(m.consumer_tag.clone(), no_ack);
            }
            Method::BasicCancelOk(BasicCancelOk { consumer_tag })
            | Method::BasicCancel(BasicCancel { consumer_tag, .. }) => {
                ch.consumers.remove(consumer_tag);
            }
            Method::BasicGetEmpty(_) => {
                ch.gets.pop_front();
                add(&c.get_empty, 1);
            }
            Method::TxCommitOk(_) => {
                let mut acked = 0;
                for s in std::mem::take(&mut ch.tx) {
                    let n = ch.settle(s.tag, s.multiple);
                    if s.ack {
                        acked += n;
                    }
                }
                add(&c.acknowledged, acked);
            }
            Method::TxRollbackOk(_) => ch.tx.clear(),
            _ => {}
        }
    }

    /// A method with content was sent to the client on `channel`.
    pub(crate) fn sent_content(&mut self, channel: ChannelId, method: &Method) {
        let c = &self.counters;
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        match method {
            Method::BasicDeliver(d) => {
                // A consumer the server named without telling (`nowait` and no tag) is taken
                // to ack, the default.
                let no_ack = ch
                    .consumers
                    .get(d.consumer_tag.as_str())
                    .copied()
                    .unwrap_or(false);
                if no_ack {
                    add(&c.delivered_consume_auto_ack, 1);
                } else {
                    add(&c.delivered_consume_manual_ack, 1);
                    ch.await_ack(d.delivery_tag);
                }
            }
            Method::BasicGetOk(g) => {
                if ch.gets.pop_front().unwrap_or(false) {
                    add(&c.delivered_get_auto_ack, 1);
                } else {
                    add(&c.delivered_get_manual_ack, 1);
                    ch.await_ack(g.delivery_tag);
                }
            }
            Method::BasicReturn(_) => add(&c.messages_unroutable_returned, 1),
            _ => {}
        }
    }

    /// `n` publishes were confirmed with `basic.ack`.
    pub(crate) fn confirmed(&mut self, n: u64) {
        if n > 0 {
            add(&self.counters.messages_confirmed, n);
        }
    }

    /// `channel` closed (either side's `close-ok`, or the server closed it on an error): it
    /// counts as closed if it had been opened; its number is free again.
    pub(crate) fn channel_closed(&mut self, channel: ChannelId) {
        if let Some(ch) = self.channels.remove(&channel) {
            if ch.opened {
                add(&self.counters.channels_closed, 1);
            }
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let open = self.channels.values().filter(|ch| ch.opened).count() as u64;
        add(&self.counters.channels_closed, open);
        add(&self.counters.connections_closed, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_land_in_rabbitmqs_buckets() {
        let c = ClientCounters::default();
        for size in [0, 100, 101, 1_000, 99_999_999, 100_000_001] {
            c.message_size(size);
        }
        let sizes = c.read().message_sizes;
        // ≤100: 0 and 100; ≤1000: 101 and 1000; ≤1e8: 99 999 999; +Inf: 100 000 001.
        assert_eq!(sizes.cumulative, [2, 4, 4, 4, 4, 4, 4, 5, 6]);
        assert_eq!(sizes.sum, 100 + 101 + 1_000 + 99_999_999 + 100_000_001);
    }

    #[test]
    fn a_settlement_takes_what_the_core_would() {
        let mut ch = ChannelTally::default();
        for tag in [1, 2, 3, 5, 8] {
            ch.await_ack(tag);
        }
        // Out of order, then one already taken, then a multiple one whose tag is not
        // outstanding (the core refuses it: nothing is settled).
        assert_eq!(ch.settle(3, false), 1);
        assert_eq!(ch.settle(3, false), 0);
        assert_eq!(ch.settle(4, true), 0);
        assert_eq!(ch.settle(5, true), 3);
        assert_eq!(ch.unacked, [8]);
        ch.await_ack(6);
        assert_eq!(ch.unacked, [6, 8]);
        // Multiple with tag 0: everything outstanding.
        assert_eq!(ch.settle(0, true), 2);
        assert!(ch.unacked.is_empty());
    }
}
