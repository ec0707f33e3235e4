//! `basic.publish`: access (topic authorisation included) and property checks on the channel, then the replicated
//! [`Op::Publish`] that routes (default exchange, bindings, exchange-to-exchange, alternate
//! exchanges), enqueues with overflow rules, returns unroutable mandatory messages and confirms.
//! Also dead-lettering, which republishes through a queue's dead-letter exchange.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use warren_wire::{
    BasicAck, BasicNack, BasicProperties, BasicPublish, BasicReturn, FieldTable, FieldValue,
    LongStr, Method, ShortStr,
};

use super::exchange_class::no_exchange;
use super::queue_class::REPLY_TO_QUEUE;
use super::{Broker, Ctx};
use crate::channel::{Mode, TxOp};
use crate::command::{Destination, Op, Origin};
use crate::message::{Message, Payload, StoredRef};
use crate::queue::{Entry, Overflow, QueueId};
use crate::routing::ExchangeKind;
use crate::user::Access;
use crate::{AmqpError, Effect, Millis};

/// Prefix of a direct reply-to address.
const REPLY_TO_PREFIX: &str = "amq.rabbitmq.reply-to.";

impl Broker {
    pub(super) fn publish(
        &mut self,
        ctx: Ctx,
        publish: BasicPublish,
        mut properties: BasicProperties,
        body: Bytes,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let (vhost, user) = self.session(ctx.conn)?;
        if publish.immediate {
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        // The default exchange is "amq.default" for permission checks, as in RabbitMQ.
        let resource = if publish.exchange.is_empty() {
            "amq.default"
        } else {
            publish.exchange.as_str()
        };
        self.check_access(ctx.conn, Access::Write, "exchange", resource)?;
        if let Some(claimed) = &properties.user_id {
            if claimed.as_str() != user {
                return Err(AmqpError::precondition_failed(format!(
                    "user_id property set to '{claimed}' but authenticated user was '{user}'"
                )));
            }
        }
        // The exchange must exist before the command is proposed (also in a
        // transaction), so that an error closes the
        // channel before later publishes on it are accepted.
        let exchange = self
            .vhosts
            .get(&vhost)
            .and_then(|v| v.exchanges.get(&publish.exchange))
            .ok_or_else(|| no_exchange(&publish.exchange, &vhost))?;
        if exchange.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{}' in vhost '{vhost}'",
                publish.exchange
            )));
        }
        if exchange.kind == ExchangeKind::Topic {
            self.check_topic_access(
                &user,
                &vhost,
                &publish.exchange,
                Access::Write,
                &publish.routing_key,
            )?;
        }
        let ch = self
            .channel_mut(ctx)
            .ok_or_else(|| AmqpError::channel_error("channel closed"))?;
        if properties
            .reply_to
            .as_ref()
            .is_some_and(|r| r.as_str() == REPLY_TO_QUEUE)
        {
            let key = ch.reply_to_key.clone().ok_or_else(|| {
                AmqpError::precondition_failed("fast reply consumer does not exist")
            })?;
            properties.reply_to = Some(ShortStr::from(format!("{REPLY_TO_PREFIX}{key}")));
        }
        let confirm = match &mut ch.mode {
            Mode::Tx { pending } => {
                pending.push(TxOp::Publish {
                    publish,
                    properties,
                    body,
                });
                return Ok(());
            }
            Mode::Confirm { next_publish_seq } => {
                let seq = *next_publish_seq;
                *next_publish_seq += 1;
                Some(seq)
            }
            Mode::Plain => None,
        };
        let message = Arc::new(Message {
            exchange: publish.exchange,
            routing_key: publish.routing_key,
            properties,
            body,
        });
        self.route_publish(ctx, &vhost, message, publish.mandatory, confirm, out);
        Ok(())
    }

    /// Routes a client's publish where this broker is (the client's own node): local queues it
    /// decides get the message at once, local queues homed elsewhere get it forwarded, and the
    /// replicated queues through the log (`Op::Publish`, proposed from here, through the leader
    /// when this node does not lead). The confirm leaves once every part is done (for a
    /// replicated part, when this node applies it); a mandatory message that reaches nothing
    /// is returned.
    #[allow(clippy::too_many_arguments)]
    fn route_publish(
        &mut self,
        ctx: Ctx,
        vhost: &ShortStr,
        message: Arc<Message>,
        mandatory: bool,
        confirm: Option<u64>,
        out: &mut Vec<Effect>,
    ) {
        let now = self.now;
        let (routed, rejected, replicated) =
            if message.exchange.is_empty() && message.routing_key.starts_with(REPLY_TO_PREFIX) {
                let routed = self.route_reply(&message, out);
                (routed, false, Vec::new())
            } else {
                let queues = self.route(
                    vhost,
                    &message.exchange,
                    &message.routing_key,
                    message.properties.headers.as_ref(),
                );
                let (local, replicated): (Vec<QueueId>, Vec<QueueId>) =
                    queues.into_iter().partition(|id| self.is_local_queue(*id));
                let mut rejected = false;
                // A publish with a replicated part is counted in when that part is applied.
                self.count_publish(vhost, &message.exchange, replicated.is_empty(), local.len());
                for id in &local {
                    rejected |= !self.enqueue_local(*id, Arc::clone(&message), now, out);
                }
                (!local.is_empty(), rejected, replicated)
            };
        if !replicated.is_empty() {
            // Every logged publish carries the channel's own gap-free number (see
            // `Connection::log_numbers`), so a copy sent again after a leader change is known
            // whether or not the channel confirms; a confirm leaves when this node applies it.
            let confirm = self.number_for_log(ctx, confirm);
            if rejected {
                if let (Some(seq), Some(ch)) = (confirm, self.channel_mut(ctx)) {
                    ch.nack_when_applied.insert(seq);
                }
            }
            self.submit(
                Some(ctx.origin()),
                Op::Publish {
                    vhost: vhost.clone(),
                    exchange: message.exchange.clone(),
                    routing_key: message.routing_key.clone(),
                    mandatory: mandatory && !routed,
                    confirm,
                    properties: message.properties.clone(),
                    body: message.body.clone(),
                    queues: Some(replicated),
                },
                out,
            );
            return;
        } else if mandatory && !routed {
            self.send_return(ctx.origin(), &message, out);
        } else if !routed {
            self.churn.unroutable_dropped += 1;
        }
        if let Some(delivery_tag) = confirm {
            Self::send_confirm(ctx.origin(), delivery_tag, rejected, out);
        }
    }

    /// Counts a publish on its exchange (for operators).
    fn count_publish(&mut self, vhost: &ShortStr, exchange: &ShortStr, new: bool, queues: usize) {
        if let Some(x) = self
            .vhosts
            .get_mut(vhost)
            .and_then(|v| v.exchanges.get_mut(exchange))
        {
            x.publish_in += u64::from(new);
            x.publish_out += queues as u64;
        }
    }

    /// `basic.return` of an unroutable mandatory message.
    fn send_return(&self, origin: Origin, message: &Message, out: &mut Vec<Effect>) {
        out.push(Effect::SendContent {
            conn: origin.conn,
            channel: origin.channel,
            method: Method::BasicReturn(BasicReturn {
                reply_code: warren_wire::constants::NO_ROUTE,
                reply_text: ShortStr::from("NO_ROUTE"),
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
            }),
            properties: message.properties.clone(),
            body: message.body.clone(),
        });
    }

    /// A publisher confirm: `basic.ack`, or `basic.nack` if a queue refused the message.
    fn send_confirm(origin: Origin, delivery_tag: u64, refused: bool, out: &mut Vec<Effect>) {
        let method = if refused {
            Method::BasicNack(BasicNack {
                delivery_tag,
                multiple: false,
                requeue: false,
            })
        } else {
            Method::BasicAck(BasicAck {
                delivery_tag,
                multiple: false,
            })
        };
        Self::reply_origin(Some(origin), method, out);
    }

    /// Applies a logged [`Op::Publish`]: the message goes into the replicated queues the
    /// client's node routed it to (`queues`: those still there), or, for a publish that names
    /// none (earlier versions, a dead-lettered copy), those it routes to now (local queues
    /// never get messages from the log: the broker that routed the publish served them); then
    /// the origin gets its return and confirm.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_publish(
        &mut self,
        origin: Option<Origin>,
        vhost: &ShortStr,
        message: Message,
        queues: Option<Vec<QueueId>>,
        mandatory: bool,
        confirm: Option<u64>,
        now: Millis,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let message = Arc::new(message);
        let queues: Vec<QueueId> = match queues {
            // Routed once, where the client published (a queue deleted since is skipped, as a
            // message routed to a queue that dies on its way).
            Some(queues) => queues
                .into_iter()
                .filter(|id| self.queues.get(id).is_some_and(|q| !q.is_local()))
                .collect(),
            None => {
                if !self
                    .vhosts
                    .get(vhost)
                    .is_some_and(|v| v.exchanges.contains_key(&message.exchange))
                {
                    return Err(no_exchange(&message.exchange, vhost));
                }
                self.route(
                    vhost,
                    &message.exchange,
                    &message.routing_key,
                    message.properties.headers.as_ref(),
                )
                .into_iter()
                .filter(|id| !self.is_local_queue(*id))
                .collect()
            }
        };
        let routed = !queues.is_empty();
        self.count_publish(vhost, &message.exchange, true, queues.len());
        // Read back from its log entry when it is delivered (see `Records`); without a log
        // entry to read it from, it stays in memory.
        let stored = (self.applying_index != 0 && routed).then(|| {
            self.records.keep(self.applying_index, &message);
            StoredRef {
                index: self.applying_index,
                len: u32::try_from(message.body.len()).unwrap_or(u32::MAX),
                persistent: message.properties.delivery_mode == Some(2),
            }
        });
        // A dead-lettered copy (no origin: the broker published it) does not go back into the
        // queue it left unless it was rejected, as in `dead_letter`.
        let left = origin
            .is_none()
            .then(|| last_death(&message.properties))
            .flatten();
        let mut rejected = false;
        for id in queues {
            if let (Some((from, reason)), Some(q)) = (&left, self.queues.get(&id)) {
                if q.name == *from && reason != "rejected" {
                    continue;
                }
            }
            rejected |= !self.enqueue_stored(id, Arc::clone(&message), stored, now, out);
        }
        let Some(origin) = origin else {
            return Ok(());
        };
        if !routed && mandatory {
            self.send_return(origin, &message, out);
        }
        if let Some(logged) = confirm {
            self.confirm_logged(origin, logged, rejected, out);
        }
        Ok(())
    }

    /// Numbers a publish of `ctx` for the log (see `Connection::log_numbers`) and remembers
    /// the client's confirm number `client` for it, if the channel confirms; `None` without
    /// the channel.
    pub(super) fn number_for_log(&mut self, ctx: Ctx, client: Option<u64>) -> Option<u64> {
        let c = self.connections.get_mut(&ctx.conn)?;
        let ch = c.channels.get_mut(&ctx.channel)?;
        let n = c.log_numbers.entry(ctx.channel).or_insert(0);
        *n += 1;
        if let Some(client) = client {
            ch.logged.insert(*n, client);
        }
        Some(*n)
    }

    /// The confirm of a logged publish, applied: sent with the client's number if the
    /// channel that published it is here and still the same (an earlier life of the channel,
    /// or another node's, gets nothing); a nack if a queue refused it.
    pub(super) fn confirm_logged(
        &mut self,
        origin: Origin,
        logged: u64,
        refused: bool,
        out: &mut Vec<Effect>,
    ) {
        let Some(ch) = self.channel_mut(Ctx {
            conn: origin.conn,
            channel: origin.channel,
        }) else {
            return;
        };
        let Some(client) = ch.logged.remove(&logged) else {
            return;
        };
        let refused_here = ch.nack_when_applied.remove(&logged);
        Self::send_confirm(origin, client, refused || refused_here, out);
    }

    /// Appends a message to a queue, applying `x-max-length`/`x-overflow`, then delivers. Returns
    /// false if the queue refused it (`reject-publish`), which nacks a confirm.
    pub(crate) fn enqueue(
        &mut self,
        id: QueueId,
        message: Arc<Message>,
        now: Millis,
        out: &mut Vec<Effect>,
    ) -> bool {
        self.enqueue_stored(id, message, None, now, out)
    }

    /// [`Broker::enqueue`] of a message that rests in log entry `stored`, if any: a replicated
    /// queue keeps the reference instead of the message.
    pub(crate) fn enqueue_stored(
        &mut self,
        id: QueueId,
        message: Arc<Message>,
        stored: Option<StoredRef>,
        now: Millis,
        out: &mut Vec<Effect>,
    ) -> bool {
        if self
            .queues
            .get(&id)
            .is_some_and(|q| q.is_local() && !self.decides(q))
        {
            // Only its home's broker holds a local queue's messages.
            return true;
        }
        let Some(q) = self.queues.get_mut(&id) else {
            return true;
        };
        *q.published_from
            .entry(message.exchange.clone())
            .or_default() += 1;
        if q.is_stream() {
            // Appended; retention (x-max-length-bytes, x-max-length) drops the oldest, and a
            // stream never refuses, dead-letters or expires one message.
            let payload = match stored {
                Some(r) if !q.is_local() => Payload::Stored(r),
                _ => Payload::Loaded(message),
            };
            q.push(payload, None, 0, now);
            q.apply_retention();
            self.deliver(id, out);
            return true;
        }
        let len = message.body_len();
        let mut dropped = Vec::new();
        if q.would_overflow(len) {
            match q.args.overflow.unwrap_or(Overflow::DropHead) {
                Overflow::DropHead => {
                    while q.would_overflow(len) {
                        match q.drop_head() {
                            Some(e) => dropped.push(e),
                            None => break,
                        }
                    }
                    if q.would_overflow(len) {
                        // A message bigger than x-max-length-bytes on its own: RabbitMQ drops it.
                        for e in dropped {
                            self.dead_letter(id, e, "maxlen", out);
                        }
                        return true;
                    }
                }
                Overflow::RejectPublish => return false,
                Overflow::RejectPublishDlx => {
                    let entry = Entry::new(Payload::Loaded(message), false, None);
                    self.dead_letter(id, entry, "maxlen", out);
                    return false;
                }
            }
        }
        let expiration = message.expiration_ms();
        // Priority levels from version 9 on: a log written before replays in arrival order.
        let priority = if self.applying_version >= 9 {
            message.properties.priority.unwrap_or(0)
        } else {
            0
        };
        let payload = match stored {
            Some(r) if !q.is_local() => Payload::Stored(r),
            _ => Payload::Loaded(message),
        };
        q.push(payload, expiration, priority, now);
        for e in dropped {
            self.dead_letter(id, e, "maxlen", out);
        }
        self.deliver(id, out);
        true
    }

    /// The queues a message published to `exchange` with `routing_key` reaches: the default
    /// exchange by queue name, otherwise bindings followed through exchange-to-exchange bindings,
    /// using an exchange's alternate exchange when its own bindings match nothing. Each queue once.
    pub(crate) fn route(
        &self,
        vhost: &ShortStr,
        exchange: &ShortStr,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> Vec<QueueId> {
        let Some(v) = self.vhosts.get(vhost) else {
            return Vec::new();
        };
        if exchange.is_empty() {
            return v.queues.get(routing_key).copied().into_iter().collect();
        }
        let mut queues = BTreeSet::new();
        let mut visited = HashSet::new();
        let mut pending = vec![exchange.clone()];
        let mut matched = Vec::new();
        while let Some(name) = pending.pop() {
            if !visited.insert(name.clone()) {
                continue;
            }
            let Some(x) = v.exchanges.get(&name) else {
                continue;
            };
            matched.clear();
            x.bindings.route(routing_key, headers, &mut matched);
            if matched.is_empty() {
                if let Some(ae) = x.alternate_exchange() {
                    pending.push(ShortStr::from(ae));
                }
            }
            for d in matched.drain(..) {
                match d {
                    Destination::Queue(q) => {
                        if let Some(id) = v.queues.get(&q) {
                            queues.insert(*id);
                        }
                    }
                    Destination::Exchange(e) => pending.push(e),
                }
            }
        }
        queues.into_iter().collect()
    }

    /// A reply published to a direct reply-to address: delivered here if the address is this
    /// node's, forwarded to its node otherwise. Returns whether it went anywhere.
    fn route_reply(&mut self, message: &Arc<Message>, out: &mut Vec<Effect>) -> bool {
        let key = &message.routing_key[REPLY_TO_PREFIX.len()..];
        match reply_key_node(key) {
            Some(node) if node != self.config.node => {
                out.push(Effect::Forward {
                    home: node,
                    queue: 0,
                    message: Arc::clone(message),
                });
                true
            }
            _ => self.deliver_reply(message, out),
        }
    }

    /// Delivers a reply published to a direct reply-to address straight to the waiting consumer.
    /// Returns false if the address is unknown (its channel is gone): the reply is dropped.
    pub(super) fn deliver_reply(&mut self, message: &Arc<Message>, out: &mut Vec<Effect>) -> bool {
        let Some(key) = message.routing_key.strip_prefix(REPLY_TO_PREFIX) else {
            return false;
        };
        let Some(&(conn, channel)) = self.reply_to.get(key) else {
            return false;
        };
        let ctx = Ctx { conn, channel };
        let Some(ch) = self.channel_mut(ctx) else {
            return false;
        };
        let Some(tag) = ch.reply_to_consumer.clone() else {
            return false;
        };
        let delivery_tag = ch.next_tag();
        let entry = Entry::new(Payload::Loaded(Arc::clone(message)), false, None);
        self.send_delivery(ctx, tag, delivery_tag, entry, out);
        true
    }

    /// Republishes a message that left queue `id` (rejected, expired, over max length) through the
    /// queue's dead-letter exchange, recording the death in `x-death` as RabbitMQ does. Without a
    /// dead-letter exchange the message is dropped.
    pub(crate) fn dead_letter(
        &mut self,
        id: QueueId,
        entry: Entry,
        reason: &str,
        out: &mut Vec<Effect>,
    ) {
        let Some(q) = self.queues.get(&id) else {
            return;
        };
        let Some(dlx) = q.args.dead_letter_exchange.clone() else {
            return;
        };
        let vhost = q.vhost.clone();
        let queue_name = q.name.clone();
        let Some(original) = self.load(&entry.message) else {
            return;
        };
        let Some(q) = self.queues.get(&id) else {
            return;
        };
        let routing_key = q
            .args
            .dead_letter_routing_key
            .clone()
            .unwrap_or_else(|| original.routing_key.clone());
        let mut properties = original.properties.clone();
        let mut headers = properties.headers.take().unwrap_or_default();
        record_death(&mut headers, &queue_name, reason, &original, self.now);
        properties.headers = Some(headers);
        // RabbitMQ removes the per-message TTL so the dead-lettered copy does not expire again.
        properties.expiration = None;
        let message = Arc::new(Message {
            exchange: dlx.clone(),
            routing_key,
            properties,
            body: original.body.clone(),
        });
        let targets = self.route(
            &vhost,
            &dlx,
            &message.routing_key,
            message.properties.headers.as_ref(),
        );
        let now = self.now;
        // From a local queue (decided here, outside the log): local targets now, replicated ones
        // through the log. From a replicated queue (every replica applies the same command):
        // replicated targets by every replica, local ones by their home's broker alone.
        let from_local = self.is_local_queue(id);
        let mut replicated = false;
        for target in targets {
            // A message expiring or overflowing back into the queue it left would cycle forever;
            // RabbitMQ drops it in that case.
            if target == id && reason != "rejected" {
                continue;
            }
            match (self.is_local_queue(target), from_local) {
                (true, true) => {
                    self.enqueue_local(target, Arc::clone(&message), now, out);
                }
                (true, false) => {
                    self.enqueue(target, Arc::clone(&message), now, out);
                }
                (false, true) => replicated = true,
                (false, false) => {
                    self.enqueue(target, Arc::clone(&message), now, out);
                }
            }
        }
        if replicated {
            self.submit(
                None,
                Op::Publish {
                    vhost,
                    exchange: dlx,
                    routing_key: message.routing_key.clone(),
                    mandatory: false,
                    confirm: None,
                    properties: message.properties.clone(),
                    body: message.body.clone(),
                    queues: None,
                },
                out,
            );
        }
    }
}

/// The node a direct reply-to key belongs to (keys are `<node>.<secret>`).
pub(crate) fn reply_key_node(key: &str) -> Option<u64> {
    key.split_once('.')?.0.parse().ok()
}

/// The queue and reason of a message's latest death (the first `x-death` entry), if any.
fn last_death(properties: &BasicProperties) -> Option<(ShortStr, String)> {
    let Some(FieldValue::Array(deaths)) = properties.headers.as_ref()?.get("x-death") else {
        return None;
    };
    let Some(FieldValue::Table(death)) = deaths.first() else {
        return None;
    };
    let queue = death.get("queue").and_then(FieldValue::as_str)?;
    let reason = death.get("reason").and_then(FieldValue::as_str)?;
    Some((ShortStr::from(queue), reason.to_owned()))
}

/// Updates the `x-death` header (one entry per queue and reason, newest first, with a count) and
/// the `x-first-death-*` headers.
fn record_death(
    headers: &mut FieldTable,
    queue: &ShortStr,
    reason: &str,
    message: &Message,
    now: Millis,
) {
    let mut deaths = match headers.remove("x-death") {
        Some(FieldValue::Array(a)) => a,
        _ => Vec::new(),
    };
    let same = |v: &FieldValue| match v {
        FieldValue::Table(t) => {
            t.get("queue").and_then(FieldValue::as_str) == Some(queue.as_str())
                && t.get("reason").and_then(FieldValue::as_str) == Some(reason)
        }
        _ => false,
    };
    let mut count = 1;
    if let Some(pos) = deaths.iter().position(same) {
        if let FieldValue::Table(t) = deaths.remove(pos) {
            count += t.get("count").and_then(FieldValue::as_i64).unwrap_or(0);
        }
    }
    let mut death = FieldTable::default();
    death.insert("count", FieldValue::I64(count));
    death.insert("reason", FieldValue::LongStr(LongStr::from(reason)));
    death.insert("queue", FieldValue::LongStr(LongStr::from(queue.as_str())));
    death.insert("time", FieldValue::Timestamp(now / 1000));
    death.insert(
        "exchange",
        FieldValue::LongStr(LongStr::from(message.exchange.as_str())),
    );
    death.insert(
        "routing-keys",
        FieldValue::Array(vec![FieldValue::LongStr(LongStr::from(
            message.routing_key.as_str(),
        ))]),
    );
    deaths.insert(0, FieldValue::Table(death));
    headers.insert("x-death", FieldValue::Array(deaths));
    if headers.get("x-first-death-reason").is_none() {
        headers.insert(
            "x-first-death-reason",
            FieldValue::LongStr(LongStr::from(reason)),
        );
        headers.insert(
            "x-first-death-queue",
            FieldValue::LongStr(LongStr::from(queue.as_str())),
        );
        headers.insert(
            "x-first-death-exchange",
            FieldValue::LongStr(LongStr::from(message.exchange.as_str())),
        );
    }
}
