//! `basic.*` methods except publish: qos, consume, cancel, get, ack, nack/reject, recover; and
//! detaching consumers (with auto-delete).

use std::collections::{BTreeMap, BTreeSet};

use warren_wire::{
    BasicCancel, BasicCancelOk, BasicConsume, BasicConsumeOk, BasicGet, BasicGetEmpty, BasicGetOk,
    BasicQos, BasicQosOk, Method, ShortStr,
};

use super::queue_class::REPLY_TO_QUEUE;
use super::{Broker, Ctx};
use crate::channel::{Consumer, Mode, TxOp, Unacked};
use crate::command::Op;
use crate::consumers::{Attach, UNLIMITED};
use crate::queue::{ConsumerRef, QueueId};
use crate::user::Access;
use crate::{AmqpError, Effect};

impl Broker {
    pub(super) fn basic_qos(
        &mut self,
        ctx: Ctx,
        m: BasicQos,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        if m.prefetch_size != 0 {
            return Err(AmqpError::not_implemented(format!(
                "prefetch_size!=0 ({})",
                m.prefetch_size
            )));
        }
        if let Some(ch) = self.channel_mut(ctx) {
            // RabbitMQ 3.3+: global=false limits each consumer created afterwards, global=true
            // limits the channel as a whole.
            if m.global {
                ch.prefetch_global = m.prefetch_count;
            } else {
                ch.prefetch_consumer = m.prefetch_count;
            }
        }
        self.reply(ctx, Method::BasicQosOk(BasicQosOk {}), out);
        self.deliver_channel(ctx, out);
        Ok(())
    }

    pub(super) fn basic_consume(
        &mut self,
        ctx: Ctx,
        m: BasicConsume,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let (vhost, _) = self.session(ctx.conn)?;
        if m.queue.as_str() == REPLY_TO_QUEUE {
            return self.consume_reply_to(ctx, m, out);
        }
        let name = self.resolve_queue_name(ctx, m.queue)?;
        self.check_access(ctx.conn, Access::Read, "queue", &name)?;
        let priority = consumer_priority(&m.arguments, &name, &vhost)?;
        let timeout = consumer_timeout(&m.arguments, &name, &vhost)?;
        // A queue this broker decides, or one another node's broker owns (queue commands).
        let id = self.usable_queue(ctx.conn, &vhost, &name)?;
        // A replicated queue consumed from this node while another node leads (or none is
        // known yet): its owner is the leader's broker (`follow.rs`).
        let follower = crate::node_of(ctx.conn) == self.config.node
            && !self.leading
            && self
                .queues
                .get(&id)
                .is_some_and(super::follow::follows_leader);
        let remote_owner = if follower {
            Some(self.leader_elsewhere().unwrap_or(0))
        } else {
            self.owner_elsewhere(ctx.conn, id)
        };
        // A stream's consumers read the replica of their channel's node (every replica has
        // the whole stream; each consumer's offset is its channel's), as RabbitMQ's stream
        // consumers read their local member.
        let local_stream = crate::node_of(ctx.conn) == self.config.node && self.is_stream_queue(id);
        if !self.decides_queue(id) && remote_owner.is_none() && !local_stream {
            return Err(super::queue_class::not_here(&name, &vhost));
        }
        let tag = if m.consumer_tag.is_empty() {
            self.generate_name("amq.ctag-", ctx.conn)
        } else {
            m.consumer_tag
        };
        let prefetch = {
            let ch = self
                .channel_mut(ctx)
                .ok_or_else(|| AmqpError::channel_error("channel closed"))?;
            if ch.consumers.contains_key(&tag) {
                return Err(AmqpError::not_allowed(format!(
                    "attempt to reuse consumer tag '{tag}'"
                )));
            }
            ch.prefetch_consumer
        };
        let global_prefetch = self.channel_mut(ctx).map_or(0, |ch| ch.prefetch_global);
        if let Some(owner) = remote_owner {
            let consume = super::remote::RemoteConsume {
                queue: id,
                owner,
                tag,
                no_ack: m.no_ack,
                exclusive: m.exclusive,
                nowait: m.nowait,
                prefetch,
                global_prefetch,
                priority,
                timeout,
            };
            self.consume_remote(ctx, consume, out);
            return Ok(());
        }
        let now = self.now;
        let queue = self
            .queues
            .get_mut(&id)
            .ok_or_else(|| super::queue_class::no_queue(&name, &vhost))?;
        let stream_next = if queue.is_stream() {
            if m.no_ack {
                return Err(AmqpError::precondition_failed(format!(
                    "consumers of stream queue '{name}' in vhost '{vhost}' must acknowledge \
                     (no_ack=false)"
                )));
            }
            if prefetch == 0 && global_prefetch == 0 {
                return Err(AmqpError::precondition_failed(format!(
                    "consumer prefetch count is not set for stream queue '{name}' in vhost \
                     '{vhost}'"
                )));
            }
            Some(stream_start(queue, &m.arguments, now).map_err(|what| {
                AmqpError::precondition_failed(format!(
                    "invalid arg 'x-stream-offset' for queue '{name}' in vhost '{vhost}': {what}"
                ))
            })?)
        } else {
            None
        };
        if queue.consumers.exclusive().is_some() || (m.exclusive && !queue.consumers.is_empty()) {
            return Err(AmqpError::access_refused(format!(
                "queue '{name}' in vhost '{vhost}' in exclusive use"
            )));
        }
        let cref = ConsumerRef {
            conn: ctx.conn,
            channel: ctx.channel,
            tag: tag.clone(),
        };
        // The channel's grant: its prefetch; the queue's owner spends one per delivery and
        // gets one back for each delivery settled or returned (`grant_credit`).
        let credit = if m.no_ack || prefetch == 0 || stream_next.is_some() {
            UNLIMITED
        } else {
            u32::from(prefetch)
        };
        let attach = Attach {
            priority,
            no_ack: m.no_ack,
            exclusive: m.exclusive,
            remote: false,
        };
        queue.consumers.add(cref, credit, attach);
        queue.had_consumer = true;
        queue.last_used = self.now;
        if let Some(ch) = self.channel_mut(ctx) {
            ch.consumers.insert(
                tag.clone(),
                Consumer {
                    tag: tag.clone(),
                    queue: id,
                    no_ack: m.no_ack,
                    prefetch,
                    unacked: 0,
                    timeout,
                    stream_next,
                    remote: None,
                    priority,
                    exclusive: m.exclusive,
                },
            );
        }
        if !m.nowait {
            self.reply(
                ctx,
                Method::BasicConsumeOk(BasicConsumeOk { consumer_tag: tag }),
                out,
            );
        }
        self.deliver(id, out);
        Ok(())
    }

    /// Direct reply-to: a no-ack consumer on the pseudo-queue gives the channel a private address
    /// that publishes with `reply_to = amq.rabbitmq.reply-to` carry.
    fn consume_reply_to(
        &mut self,
        ctx: Ctx,
        m: BasicConsume,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        if !m.no_ack {
            return Err(AmqpError::precondition_failed(
                "reply consumer cannot acknowledge",
            ));
        }
        let tag = if m.consumer_tag.is_empty() {
            self.generate_name("amq.ctag-", ctx.conn)
        } else {
            m.consumer_tag
        };
        // `<node>.<secret>`: a reply published on any node finds its way here.
        let secret = self.generate_name("", ctx.conn);
        let key = ShortStr::from(format!("{}.{secret}", self.config.node));
        let ch = self
            .channel_mut(ctx)
            .ok_or_else(|| AmqpError::channel_error("channel closed"))?;
        if ch.reply_to_consumer.is_some() {
            return Err(AmqpError::precondition_failed("reply consumer already set"));
        }
        if ch.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        ch.reply_to_consumer = Some(tag.clone());
        ch.reply_to_key = Some(key.clone());
        self.reply_to.insert(key, (ctx.conn, ctx.channel));
        if !m.nowait {
            self.reply(
                ctx,
                Method::BasicConsumeOk(BasicConsumeOk { consumer_tag: tag }),
                out,
            );
        }
        Ok(())
    }

    pub(super) fn basic_cancel(
        &mut self,
        ctx: Ctx,
        m: BasicCancel,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let Some(ch) = self.channel_mut(ctx) else {
            return Ok(());
        };
        if ch.reply_to_consumer.as_ref() == Some(&m.consumer_tag) {
            ch.reply_to_consumer = None;
            if let Some(key) = ch.reply_to_key.take() {
                self.reply_to.remove(&key);
            }
        } else if let Some(consumer) = ch.consumers.remove(&m.consumer_tag) {
            if consumer.remote.is_some() {
                self.cancel_remote(ctx, m.consumer_tag, &consumer, m.nowait, out);
                return Ok(());
            }
            let cref = ConsumerRef {
                conn: ctx.conn,
                channel: ctx.channel,
                tag: m.consumer_tag.clone(),
            };
            let queue = consumer.queue;
            self.detach_consumer(queue, &cref, out);
            if !m.nowait && self.queues.contains_key(&queue) && self.removing.contains_key(&queue) {
                // The last consumer of an auto-delete queue: the queue goes first (as in
                // RabbitMQ, a declare after cancel-ok finds it gone).
                let ok = BasicCancelOk {
                    consumer_tag: m.consumer_tag,
                };
                self.reply_when_removed(ctx, queue, Method::BasicCancelOk(ok));
                return Ok(());
            }
        }
        // Cancelling an unknown tag is not an error (RabbitMQ answers cancel-ok).
        if !m.nowait {
            let ok = BasicCancelOk {
                consumer_tag: m.consumer_tag,
            };
            self.reply(ctx, Method::BasicCancelOk(ok), out);
        }
        Ok(())
    }

    /// Removes a consumer from its queue; an auto-delete queue that loses its last consumer is
    /// deleted (RabbitMQ's rule: only once it has had one).
    pub(crate) fn detach_consumer(
        &mut self,
        id: QueueId,
        consumer: &ConsumerRef,
        out: &mut Vec<Effect>,
    ) {
        if let Some(node) = self.decider_elsewhere(consumer.conn, id) {
            out.push(Effect::ToOwner {
                node,
                command: crate::QueueCommand::Cancel {
                    consumer: consumer.clone(),
                    queue: id,
                },
            });
            return;
        }
        let Some(q) = self.queues.get_mut(&id) else {
            return;
        };
        q.remove_consumer(consumer);
        q.last_used = self.now;
        if q.auto_delete && q.had_consumer && q.consumers.is_empty() && self.decides_queue(id) {
            self.propose_removal(id, out);
        }
    }

    pub(super) fn basic_get(
        &mut self,
        ctx: Ctx,
        m: BasicGet,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let (vhost, _) = self.session(ctx.conn)?;
        let name = self.resolve_queue_name(ctx, m.queue)?;
        self.check_access(ctx.conn, Access::Read, "queue", &name)?;
        let id = self.usable_queue(ctx.conn, &vhost, &name)?;
        if let Some(owner) = self.decider_elsewhere(ctx.conn, id) {
            // A transient queue homed on another node, or a replicated one while another
            // node leads: its owner checks the message out.
            return self.get_remote(ctx, id, owner, m.no_ack, out);
        }
        if !self.leading && self.follows_leader(id) {
            // A replicated queue while no leader is known: only the next leader knows which
            // messages are ready, so there is none for now (as for a get that a leader change
            // interrupts).
            let empty = BasicGetEmpty {
                cluster_id: ShortStr::default(),
            };
            self.reply(ctx, Method::BasicGetEmpty(empty), out);
            return Ok(());
        }
        if self.is_stream_queue(id) {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{name}' in vhost '{vhost}' is a stream: basic.get is not supported, \
                 consume it with a prefetch"
            )));
        }
        let id = self.deciding_queue(ctx.conn, &vhost, &name)?;
        // An expired head still waiting for its Op::Expire is never handed out.
        let expiring = self.expire_queue(id, out);
        let queue = self
            .queues
            .get_mut(&id)
            .ok_or_else(|| super::queue_class::no_queue(&name, &vhost))?;
        queue.last_used = self.now;
        let checked_out = if expiring {
            None
        } else {
            queue.checkout(m.no_ack)
        };
        let Some((seq, entry)) = checked_out else {
            let empty = BasicGetEmpty {
                cluster_id: ShortStr::default(),
            };
            self.reply(ctx, Method::BasicGetEmpty(empty), out);
            return Ok(());
        };
        let message_count = queue.ready_count();
        let ch = self
            .channel_mut(ctx)
            .ok_or_else(|| AmqpError::channel_error("channel closed"))?;
        let delivery_tag = ch.next_tag();
        if m.no_ack {
            self.submit_for_queue(
                id,
                Op::Settle {
                    queue: id,
                    seqs: vec![seq],
                },
                out,
            );
        } else {
            let now = self.now;
            let Some(ch) = self.channel_mut(ctx) else {
                return Err(AmqpError::channel_error("channel closed"));
            };
            ch.unacked.insert(
                delivery_tag,
                Unacked {
                    queue: id,
                    seq,
                    consumer_tag: None,
                    delivered_at: now,
                },
            );
        }
        let message = self.load_or_lost(&entry.message);
        out.push(Effect::SendContent {
            conn: ctx.conn,
            channel: ctx.channel,
            method: Method::BasicGetOk(BasicGetOk {
                delivery_tag,
                redelivered: entry.redelivered,
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
                message_count,
            }),
            properties: super::delivery::with_delivery_count(&message, entry.delivery_count),
            body: message.body.clone(),
        });
        Ok(())
    }

    pub(crate) fn basic_ack(
        &mut self,
        ctx: Ctx,
        delivery_tag: u64,
        multiple: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        if let Some(pending) = self.tx_pending(ctx) {
            pending.push(TxOp::Ack {
                delivery_tag,
                multiple,
            });
            return Ok(());
        }
        let settled = self.take_unacked(ctx, delivery_tag, multiple, out)?;
        let mut by_queue: BTreeMap<QueueId, Vec<u64>> = BTreeMap::new();
        for u in settled {
            by_queue.entry(u.queue).or_default().push(u.seq);
        }
        let touched: BTreeSet<QueueId> = by_queue.keys().copied().collect();
        for (queue, seqs) in by_queue {
            // A stream keeps what its consumers read: their acks only free the window.
            if self.is_stream_queue(queue) {
                continue;
            }
            self.submit_for_queue(queue, Op::Settle { queue, seqs }, out);
        }
        self.after_settle(ctx, touched, out);
        Ok(())
    }

    pub(super) fn is_stream_queue(&self, id: QueueId) -> bool {
        self.queues.get(&id).is_some_and(|q| q.is_stream())
    }

    pub(crate) fn basic_nack(
        &mut self,
        ctx: Ctx,
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        if let Some(pending) = self.tx_pending(ctx) {
            pending.push(TxOp::Nack {
                delivery_tag,
                multiple,
                requeue,
            });
            return Ok(());
        }
        let taken = self.take_unacked(ctx, delivery_tag, multiple, out)?;
        let mut touched = BTreeSet::new();
        let mut rejected: BTreeMap<QueueId, Vec<u64>> = BTreeMap::new();
        let mut given_back = Vec::new();
        for u in taken {
            touched.insert(u.queue);
            // A stream's messages stay where they are whatever the consumer says.
            if self.is_stream_queue(u.queue) {
                continue;
            }
            if requeue {
                given_back.push((u.queue, u.seq));
            } else {
                rejected.entry(u.queue).or_default().push(u.seq);
            }
        }
        self.give_back(Some(ctx), given_back, out);
        for (queue, seqs) in rejected {
            self.submit_for_queue(queue, Op::Reject { queue, seqs }, out);
        }
        self.after_settle(ctx, touched, out);
        Ok(())
    }

    /// Delivered messages go back to their queues: a quorum queue's through the log (its
    /// delivery count is replicated: [`Op::Return`]), any other's here at once, to its place
    /// (its replicas still have it ready). Returns the queues that took one back here.
    ///
    /// `from` is the channel that gave them back, if it is still open: its next commands wait
    /// for the return to be applied (a `basic.get` after a `basic.nack` finds the message).
    pub(super) fn give_back(
        &mut self,
        from: Option<Ctx>,
        unacked: impl IntoIterator<Item = (QueueId, u64)>,
        out: &mut Vec<Effect>,
    ) -> BTreeSet<QueueId> {
        let mut touched = BTreeSet::new();
        let mut logged: BTreeMap<QueueId, Vec<u64>> = BTreeMap::new();
        let mut remote: BTreeMap<QueueId, Vec<u64>> = BTreeMap::new();
        for (queue, seq) in unacked {
            // A replicated queue that counts deliveries logs its returns from here (its
            // owner's checked-out copy goes back when applied, and this channel's later
            // methods wait for that); other queues' owners take them back themselves.
            let counted = !self.is_local_queue(queue)
                && self
                    .queues
                    .get(&queue)
                    .is_some_and(|q| q.args.delivery_limit.is_some());
            if self.queue_owner_elsewhere(queue).is_some() && !counted {
                remote.entry(queue).or_default().push(seq);
                continue;
            }
            let Some(q) = self.queues.get_mut(&queue) else {
                continue;
            };
            if q.is_stream() {
                continue;
            }
            if q.args.delivery_limit.is_some() {
                logged.entry(queue).or_default().push(seq);
            } else if q.requeue(seq) {
                touched.insert(queue);
            }
        }
        for (queue, seqs) in remote {
            self.submit_for_queue(queue, Op::Return { queue, seqs }, out);
        }
        for (queue, seqs) in logged {
            if self.decides_queue(queue) {
                // Gets of other nodes' channels wait until these are applied (`owner.rs`).
                *self.returns_in_flight.entry(queue).or_default() += seqs.len();
            }
            let op = Op::Return { queue, seqs };
            match from {
                Some(ctx) if !self.is_local_queue(queue) => {
                    let origin = crate::command::Origin {
                        conn: ctx.conn,
                        channel: ctx.channel,
                    };
                    self.submit(Some(origin), op, out);
                }
                _ => self.submit_for_queue(queue, op, out),
            }
        }
        touched
    }

    /// `basic.recover`: every unacked delivery of the channel goes back to its queue.
    pub(super) fn basic_recover(
        &mut self,
        ctx: Ctx,
        requeue: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::not_implemented("requeue=false"));
        }
        let Some(ch) = self.channel_mut(ctx) else {
            return Ok(());
        };
        let unacked = std::mem::take(&mut ch.unacked);
        let mut grants = Vec::new();
        for c in ch.consumers.values_mut() {
            grants.push((c.queue, c.tag.clone(), std::mem::take(&mut c.unacked)));
        }
        self.grant_credit(ctx, grants, out);
        let unacked: Vec<(QueueId, u64)> =
            unacked.into_values().map(|u| (u.queue, u.seq)).collect();
        self.give_back(Some(ctx), unacked, out);
        Ok(())
    }

    /// The channel gives its consumers credit on their queues for deliveries they no longer
    /// hold: (queue, consumer tag, how many).
    fn grant_credit(
        &mut self,
        ctx: Ctx,
        grants: Vec<(QueueId, ShortStr, u32)>,
        out: &mut Vec<Effect>,
    ) {
        for (queue, tag, n) in grants {
            if n == 0 {
                continue;
            }
            if let Some(grant) = self.remote_grant(ctx, queue, &tag, n) {
                out.extend(grant);
                continue;
            }
            if let Some(q) = self.queues.get_mut(&queue) {
                let cref = ConsumerRef {
                    conn: ctx.conn,
                    channel: ctx.channel,
                    tag,
                };
                q.consumers.grant(&cref, n);
            }
        }
    }

    /// Removes the deliveries an ack/nack covers and returns their credit to their consumers.
    fn take_unacked(
        &mut self,
        ctx: Ctx,
        delivery_tag: u64,
        multiple: bool,
        out: &mut Vec<Effect>,
    ) -> Result<Vec<Unacked>, AmqpError> {
        let ch = self
            .channel_mut(ctx)
            .ok_or_else(|| AmqpError::channel_error("channel closed"))?;
        let taken = ch.take_unacked(delivery_tag, multiple).ok_or_else(|| {
            AmqpError::precondition_failed(format!("unknown delivery tag {delivery_tag}"))
        })?;
        let mut grants = Vec::new();
        for (_, u) in &taken {
            if let Some(c) = u
                .consumer_tag
                .as_ref()
                .and_then(|t| ch.consumers.get_mut(t))
            {
                c.unacked = c.unacked.saturating_sub(1);
                grants.push((c.queue, c.tag.clone(), 1));
            }
        }
        self.grant_credit(ctx, grants, out);
        Ok(taken.into_iter().map(|(_, u)| u).collect())
    }

    /// Applies a committed [`Op::Settle`]: the messages leave the queue (see `Queue::settle`).
    pub(super) fn apply_settle(&mut self, queue: QueueId, seqs: &[u64]) {
        if let Some(q) = self.queues.get_mut(&queue) {
            for seq in seqs {
                q.settle(*seq);
                q.consumers.forget_held(*seq);
            }
        }
    }

    /// Applies a committed [`Op::Reject`]: the messages leave the queue and are dead-lettered.
    pub(super) fn apply_reject(&mut self, queue: QueueId, seqs: &[u64], out: &mut Vec<Effect>) {
        for seq in seqs {
            if let Some(q) = self.queues.get_mut(&queue) {
                q.consumers.forget_held(*seq);
            }
            if let Some(entry) = self.queues.get_mut(&queue).and_then(|q| q.settle(*seq)) {
                self.dead_letter(queue, entry, "rejected", out);
            }
        }
    }

    /// Applies a committed [`Op::Return`]: each message goes back to its place with its
    /// delivery count one higher, or, past the queue's delivery limit, is dead-lettered.
    pub(super) fn apply_return(&mut self, queue: QueueId, seqs: &[u64], out: &mut Vec<Effect>) {
        let gets = self.returned(queue, seqs.len());
        for seq in seqs {
            if let Some(q) = self.queues.get_mut(&queue) {
                q.consumers.forget_held(*seq);
            }
            if let Some(entry) = self.queues.get_mut(&queue).and_then(|q| q.give_back(*seq)) {
                self.dead_letter(queue, entry, "delivery_limit", out);
            }
        }
        self.deliver(queue, out);
        for (from, get) in gets {
            self.queue_command(from, get, out);
        }
    }

    /// After acks or nacks: queues that got messages back and this channel's consumers (whose
    /// credit grew) get a chance to deliver.
    fn after_settle(&mut self, ctx: Ctx, touched: BTreeSet<QueueId>, out: &mut Vec<Effect>) {
        for q in touched {
            self.deliver(q, out);
        }
        self.deliver_channel(ctx, out);
    }

    /// The pending operations of a channel in tx mode, or `None` outside a transaction.
    pub(super) fn tx_pending(&mut self, ctx: Ctx) -> Option<&mut Vec<TxOp>> {
        match &mut self.channel_mut(ctx)?.mode {
            Mode::Tx { pending } => Some(pending),
            _ => None,
        }
    }
}

/// A consumer's `x-priority` (0 if none), checked as RabbitMQ checks it: an integer that fits
/// in 32 bits, or 406 naming the queue.
fn consumer_priority(
    arguments: &warren_wire::FieldTable,
    queue: &str,
    vhost: &str,
) -> Result<i32, AmqpError> {
    let Some(v) = arguments.get("x-priority") else {
        return Ok(0);
    };
    let refused = |what: String| {
        AmqpError::precondition_failed(format!(
            "invalid arg 'x-priority' for queue '{queue}' in vhost '{vhost}': {what}"
        ))
    };
    match v.as_i64() {
        Some(n) => i32::try_from(n).map_err(|_| refused(format!("{{value_too_large,{n}}}"))),
        None => Err(refused(format!(
            "{{unacceptable_type,{}}}",
            crate::queue::type_name(v)
        ))),
    }
}

/// A consumer's `x-consumer-timeout` in ms (`None` if it gave none): a positive integer, or
/// RabbitMQ's 406 naming the queue.
fn consumer_timeout(
    arguments: &warren_wire::FieldTable,
    queue: &str,
    vhost: &str,
) -> Result<Option<crate::Millis>, AmqpError> {
    let Some(v) = arguments.get("x-consumer-timeout") else {
        return Ok(None);
    };
    let refused = |what: String| {
        AmqpError::precondition_failed(format!(
            "invalid arg 'x-consumer-timeout' for queue '{queue}' in vhost '{vhost}': {what}"
        ))
    };
    match v.as_i64() {
        Some(n) if n > 0 => Ok(Some(n as u64)),
        Some(n) => Err(refused(format!("{{value_not_positive,{n}}}"))),
        None => Err(refused(format!(
            "{{unacceptable_type,{}}}",
            crate::queue::type_name(v)
        ))),
    }
}

/// Where a stream consumer starts (a sequence number: its offset plus one), from its
/// `x-stream-offset`: `first`, `last`, `next` (the default), an offset, a timestamp, or an
/// interval back from now ("30m", "2h", "7D").
fn stream_start(
    q: &crate::queue::Queue,
    arguments: &warren_wire::FieldTable,
    now: crate::Millis,
) -> Result<u64, String> {
    use warren_wire::FieldValue;
    let (first, next) = (q.first_seq(), q.next_seq());
    let Some(v) = arguments.get("x-stream-offset") else {
        return Ok(next);
    };
    match v {
        FieldValue::Timestamp(secs) => Ok(q.stream_seq_at(secs.saturating_mul(1000))),
        FieldValue::LongStr(_) => match v.as_str() {
            Some("first") => Ok(first),
            Some("last") => Ok(next.saturating_sub(1).max(first)),
            Some("next") => Ok(next),
            Some(s) => crate::queue::parse_max_age(s)
                .map(|back| q.stream_seq_at(now.saturating_sub(back)))
                .ok_or_else(|| format!("{{invalid_value,\"{s}\"}}")),
            None => Err("{invalid_value,binary}".into()),
        },
        other => match other.as_i64() {
            Some(n) if n >= 0 => Ok((n as u64).saturating_add(1).clamp(first, next)),
            Some(n) => Err(format!("{{value_negative,{n}}}")),
            None => Err(format!(
                "{{unacceptable_type,{}}}",
                crate::queue::type_name(other)
            )),
        },
    }
}
